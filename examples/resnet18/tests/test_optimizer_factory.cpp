// The optimizer factory: every (base, depth) builds the matching nestla type, steps, syncs and checkpoints through the interface.
#include <doctest/doctest.h>

#include <sstream>
#include <string>
#include <typeinfo>
#include <vector>

#include "optimizer_factory.hpp"

using namespace resnet18;

namespace {

// A small parameter set laid out as the model exposes its own: maps over one flat buffer.
struct Params {
  std::vector<float> p, g;
  EigenParams params, grads;
  explicit Params(std::vector<int> sizes) {
    int total = 0;
    for (int n : sizes) total += n;
    p.assign(std::size_t(total), 0.5f);
    g.assign(std::size_t(total), 0.0f);
    int at = 0;
    for (int n : sizes) {
      params.emplace_back(p.data() + at, n);
      grads.emplace_back(g.data() + at, n);
      at += n;
    }
  }
  // Gradient of 0.5 |p - target|^2 with a step-dependent target, so the steps differ.
  void fill_grads(int step) {
    for (std::size_t i = 0; i < p.size(); ++i) g[i] = p[i] - 0.1f * float((i + std::size_t(step)) % 7);
  }
};

OptimizerSpec spec_for(BaseKind base, int depth) {
  OptimizerSpec s;
  s.base = base;
  s.lr = 0.01;
  for (int i = 0; i < depth; ++i) s.levels.push_back({i == 0 ? 2 : 3, 0.5, nestla::Momentum::keep});
  return s;
}

template <class Base, int D>
void check_type(BaseKind kind, const char* base_name) {
  CAPTURE(base_name);
  CAPTURE(D);
  auto opt = make_optimizer<EigenParams>(spec_for(kind, D));
  using Want = nestla::nested_t<D, Base>;
  CHECK(opt->type() == typeid(Want));
  CHECK(opt->type_name() == Want::type_name());
  CHECK(opt->depth() == D);
  const std::string d = opt->describe();
  std::size_t levels = 0;
  for (std::size_t at = d.find("Lookahead(k="); at != std::string::npos; at = d.find("Lookahead(k=", at + 1)) ++levels;
  CHECK(levels == std::size_t(D));
  CHECK(d.find(std::string(base_name) + "(lr=0.01") != std::string::npos);
  CHECK(d.find("[nestla " + Want::type_name() + "]") != std::string::npos);
}

template <class Base>
void check_all_depths(BaseKind kind, const char* name) {
  check_type<Base, 0>(kind, name);
  check_type<Base, 1>(kind, name);
  check_type<Base, 2>(kind, name);
  check_type<Base, 3>(kind, name);
}

}  // namespace

TEST_CASE("factory: every base and depth 0..3 builds nestla::nested_t<D, Base<float>>") {
  check_all_depths<nestla::SGD<float>>(BaseKind::sgd, "SGD");
  check_all_depths<nestla::Adam<float>>(BaseKind::adam, "Adam");
  check_all_depths<nestla::AdamW<float>>(BaseKind::adamw, "AdamW");
}

TEST_CASE("factory: options reach every level and the base") {
  OptimizerSpec s;
  s.base = BaseKind::sgd;
  s.lr = 0.05;
  s.momentum = 0.8;
  s.nesterov = true;
  s.weight_decay = 5e-4;
  s.levels = {{5, 0.5, nestla::Momentum::pullback}, {4, 0.25, nestla::Momentum::reset}, {2, 0.75, nestla::Momentum::keep}};
  s.no_decay_tensors = {1, 2};
  auto opt = make_optimizer<EigenParams>(s);
  CHECK(opt->describe() ==
        "Lookahead(k=2, alpha=0.75, momentum=keep) o Lookahead(k=4, alpha=0.25, momentum=reset) o "
        "Lookahead(k=5, alpha=0.5, momentum=pullback) o SGD(lr=0.05, momentum=0.8, nesterov, weight_decay=0.0005, "
        "2 tensors without weight decay)  [nestla Lookahead<Lookahead<Lookahead<SGD>>>]");
  CHECK(opt->lr() == 0.05);
  opt->set_lr(0.02);
  CHECK(opt->lr() == 0.02);
}

TEST_CASE("factory: steps go through, each level counts its syncs") {
  Params ps({3, 5, 8});
  auto opt = make_optimizer<EigenParams>(spec_for(BaseKind::adam, 2));  // k = 2, s = 3
  CHECK_FALSE(opt->has_slow_weights());
  int outer = 0;
  for (int t = 0; t < 12; ++t) {
    ps.fill_grads(t);
    outer += opt->step(ps.params, ps.grads) ? 1 : 0;
  }
  CHECK(opt->steps() == 12);
  CHECK(opt->syncs() == std::vector<std::uint64_t>{6, 2});
  CHECK(outer == 2);
  CHECK(opt->has_slow_weights());
  // After an outer sync (step 12), fast and slow weights agree; a swap is then a no-op pair.
  const std::vector<float> before = ps.p;
  opt->swap_slow(ps.params);
  CHECK(ps.p == before);
  opt->swap_slow(ps.params);
  ps.fill_grads(12);
  opt->step(ps.params, ps.grads);
  const std::vector<float> fast = ps.p;
  opt->swap_slow(ps.params);
  CHECK(ps.p == before);  // the outermost slow weights: the state at the last outer sync
  opt->swap_slow(ps.params);
  CHECK(ps.p == fast);
}

TEST_CASE("factory: a base optimizer has no slow weights to swap") {
  Params ps({4});
  auto opt = make_optimizer<EigenParams>(spec_for(BaseKind::sgd, 0));
  ps.fill_grads(0);
  CHECK(opt->step(ps.params, ps.grads));
  CHECK_FALSE(opt->has_slow_weights());
  CHECK(opt->syncs().empty());
  CHECK_THROWS_AS(opt->swap_slow(ps.params), std::logic_error);
}

TEST_CASE("factory: save, load into a fresh optimizer, continue bit-identically, and other types are refused") {
  Params a({3, 6}), b({3, 6});
  auto oa = make_optimizer<EigenParams>(spec_for(BaseKind::adamw, 3));
  for (int t = 0; t < 7; ++t) {
    a.fill_grads(t);
    oa->step(a.params, a.grads);
  }
  std::stringstream saved;
  oa->save(saved);
  b.p = a.p;
  auto ob = make_optimizer<EigenParams>(spec_for(BaseKind::adamw, 3));
  ob->load(saved);
  CHECK(ob->steps() == 7);
  for (int t = 7; t < 40; ++t) {
    a.fill_grads(t);
    b.fill_grads(t);
    oa->step(a.params, a.grads);
    ob->step(b.params, b.grads);
  }
  CHECK(a.p == b.p);
  CHECK(oa->syncs() == ob->syncs());

  std::stringstream again;
  oa->save(again);
  auto other_depth = make_optimizer<EigenParams>(spec_for(BaseKind::adamw, 2));
  CHECK_THROWS_AS(other_depth->load(again), nestla::checkpoint_error);
  again.clear();
  again.seekg(0);
  auto other_base = make_optimizer<EigenParams>(spec_for(BaseKind::adam, 3));
  CHECK_THROWS_AS(other_base->load(again), nestla::checkpoint_error);
}

TEST_CASE("factory: bad values are nestla's errors, naming the option") {
  OptimizerSpec s = spec_for(BaseKind::adam, 1);
  s.levels[0].k = 0;
  CHECK_THROWS_WITH_AS(make_optimizer<EigenParams>(s), doctest::Contains("k = 0"), nestla::invalid_option);
  s = spec_for(BaseKind::sgd, 0);
  s.lr = -1;
  CHECK_THROWS_WITH_AS(make_optimizer<EigenParams>(s), doctest::Contains("lr"), nestla::invalid_option);
  s = spec_for(BaseKind::adam, 4);
  CHECK_THROWS_WITH_AS(make_optimizer<EigenParams>(s), doctest::Contains("depth 4"), std::invalid_argument);
}

TEST_CASE("factory: groups per level, one per level or none") {
  OptimizerSpec s;
  s.levels = {{5, 0.5, nestla::Momentum::keep}, {2, 0.5, nestla::Momentum::keep, 0.9, true}};
  auto opt = make_optimizer<EigenParams>(s);
  CHECK(opt->describe().find("outer_momentum=0.9 nesterov") != std::string::npos);
  CHECK_THROWS_AS(opt->set_groups({nullptr, nullptr}), std::invalid_argument);  // 2 for 3 levels
  opt->set_groups({nullptr, nullptr, nullptr});
  opt->set_groups({});
  CHECK(opt->comm_stats().collectives == 0);
}
