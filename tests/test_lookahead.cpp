// Lookahead and Nested Lookahead against the unfused reference loops, bit for bit, at depths 1 to 4.
#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <algorithm>
#include <array>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "optimizer_checks.hpp"
#include "reference.hpp"

using nestla::Lookahead;
using nestla::LookaheadOptions;
using nestla::Momentum;

namespace {

constexpr Momentum policies[] = {Momentum::keep, Momentum::reset, Momentum::pullback};

template <class T>
auto reference_for(const nestla::SGDOptions& o) {
  auto step = [o](ref::base_state<T>& s, std::vector<T>& p, const std::vector<T>& g) { ref::sgd_step(o, s, p, g); };
  ref::nested<T, decltype(step)> r{step, {}, {}};
  r.has_moment = o.momentum != 0;
  return r;
}
template <class T>
auto reference_for(const nestla::AdamOptions& o) {
  auto step = [o](ref::base_state<T>& s, std::vector<T>& p, const std::vector<T>& g) { ref::adam_step(o, s, p, g); };
  return ref::nested<T, decltype(step)>{step, {}, {}};
}

// nestla's optimizer against the reference loop, bit for bit (optimizer_checks.hpp).
template <class T, class Opt, class Ref>
void compare(Opt& opt, Ref& r, int steps, std::size_t n = 37) {
  checks::steps_match<T>(opt, r, steps, n);
}

template <int D, class T, class BaseOpts>
void all_policies(const BaseOpts& bo, const std::array<int, D>& ks, const std::array<double, D>& alphas, int steps) {
  int combos = 1;
  for (int i = 0; i < D; ++i) combos *= 3;
  for (int c = 0; c < combos; ++c) {
    LookaheadOptions lv[D];
    auto r = reference_for<T>(bo);
    for (int i = 0, cc = c; i < D; ++i, cc /= 3) {
      lv[i] = {.k = ks[i], .alpha = alphas[i], .momentum = policies[cc % 3]};
      r.levels.push_back({lv[i], {}, {}, 0});
    }
    CAPTURE(c);
    using Base = std::conditional_t<std::is_same_v<BaseOpts, nestla::SGDOptions>, nestla::SGD<T>, nestla::Adam<T>>;
    if (!Base(bo).has_first_moment() && std::any_of(lv, lv + D, [](auto& o) { return o.momentum == Momentum::pullback; })) {
      CHECK_THROWS_AS(nestla::nested<D>(Base(bo), lv), nestla::invalid_option);  // nothing to pull back
      continue;
    }
    auto opt = nestla::nested<D>(Base(bo), lv);
    compare<T>(opt, r, steps);
  }
}

}  // namespace

TEST_CASE_TEMPLATE("Lookahead over SGD and Adam equals the reference at every policy", T, float, double) {
  all_policies<1, T>(nestla::SGDOptions{.lr = 0.05, .momentum = 0.9}, {5}, {0.5}, 23);
  all_policies<1, T>(nestla::AdamOptions{.lr = 0.01}, {5}, {0.5}, 23);
  // No first moment: reset does nothing, pullback is refused.
  all_policies<1, T>(nestla::SGDOptions{.lr = 0.05}, {3}, {0.8}, 10);
}

TEST_CASE_TEMPLATE("Nested Lookahead depth 2 equals the reference at all 9 policy pairs", T, float, double) {
  all_policies<2, T>(nestla::SGDOptions{.lr = 0.05, .momentum = 0.9, .nesterov = true}, {3, 2}, {0.5, 0.8}, 27);
  all_policies<2, T>(nestla::AdamOptions{.lr = 0.01, .weight_decay = 0.01}, {3, 2}, {0.5, 0.8}, 27);
}

TEST_CASE("Nested Lookahead depth 3 equals the reference at all 27 policy triples") {
  all_policies<3, double>(nestla::AdamOptions{.lr = 0.01}, {2, 3, 2}, {0.5, 0.7, 0.9}, 30);
  all_policies<3, float>(nestla::SGDOptions{.lr = 0.05, .momentum = 0.5, .dampening = 0.1}, {2, 3, 2},
                         {0.5, 0.7, 0.9}, 30);
}

TEST_CASE("depth 4 compiles, runs and equals the reference") {
  LookaheadOptions lv[4] = {{2, 0.5, Momentum::pullback}, {2, 0.6, Momentum::reset}, {2, 0.7, Momentum::keep},
                            {2, 0.8, Momentum::pullback}};
  auto opt = nestla::nested<4>(nestla::Adam<double>({.lr = 0.01}), lv);
  static_assert(std::is_same_v<decltype(opt), Lookahead<Lookahead<Lookahead<Lookahead<nestla::Adam<double>>>>>>);
  static_assert(decltype(opt)::depth == 4);
  auto r = reference_for<double>(nestla::AdamOptions{.lr = 0.01});
  for (auto& o : lv) r.levels.push_back({o, {}, {}, 0});
  compare<double>(opt, r, 40);
  CHECK(opt.syncs() == 40 / 16);
  CHECK(opt.inner().inner().inner().syncs() == 20);
}

TEST_CASE_TEMPLATE("outer momentum (heavy ball and Nesterov) equals the reference at depths 1 to 3 and every policy", T,
                   float, double) {
  for (bool nesterov : {false, true}) {
    CAPTURE(nesterov);
    for (Momentum pol : policies) {
      INFO("policy ", nestla::to_string(pol));
      {
        auto r = reference_for<T>(nestla::AdamOptions{.lr = 0.01});
        LookaheadOptions lv{.k = 3, .alpha = 0.7, .momentum = pol, .outer_momentum = 0.9, .outer_nesterov = nesterov};
        r.levels.push_back({lv, {}, {}, 0});
        Lookahead opt(nestla::Adam<T>({.lr = 0.01}), lv);
        compare<T>(opt, r, 31);
      }
      {
        auto r = reference_for<T>(nestla::SGDOptions{.lr = 0.05, .momentum = 0.9});
        LookaheadOptions lv[3] = {
            {.k = 2, .alpha = 0.5, .momentum = Momentum::pullback, .outer_momentum = 0.5, .outer_nesterov = nesterov},
            {.k = 3, .alpha = 0.8, .momentum = pol},
            {.k = 2, .alpha = 1.0, .momentum = pol, .outer_momentum = 0.8, .outer_nesterov = !nesterov}};
        for (auto& o : lv) r.levels.push_back({o, {}, {}, 0});
        auto opt = nestla::nested<3>(nestla::SGD<T>({.lr = 0.05, .momentum = 0.9}), lv);
        compare<T>(opt, r, 40);
      }
    }
  }
}

TEST_CASE("outer momentum switched on after the first step starts from u <- Delta at its next sync") {
  auto r = reference_for<double>(nestla::AdamOptions{.lr = 0.01});
  r.levels.push_back({{.k = 2, .alpha = 0.5}, {}, {}, 0});
  Lookahead opt(nestla::Adam<double>({.lr = 0.01}), {.k = 2, .alpha = 0.5});
  auto p = ref::initial<double>(21), q = p;
  std::vector<double> g;
  ref::grad_source src;
  for (int s = 0; s < 24; ++s) {
    if (s == 5) {
      CHECK(opt.outer_momentum_buffer().empty());
      opt.set_options({.k = 2, .alpha = 0.5, .outer_momentum = 0.9, .outer_nesterov = true});
      r.levels[0].o = opt.options();
      CHECK(opt.outer_momentum_buffer().size() == opt.slow_weights().size());
    }
    src.fill(p, g);
    REQUIRE(opt.step(p, g) == r.step(q, g));
    REQUIRE(p == q);
  }
}

TEST_CASE("Lookahead with k = 1 and alpha = 1 is its inner optimizer, step for step") {
  nestla::Adam<double> plain({.lr = 0.01, .amsgrad = true});
  Lookahead la(nestla::Adam<double>({.lr = 0.01, .amsgrad = true}), {.k = 1, .alpha = 1.0});
  Lookahead la2(Lookahead(nestla::SGD<double>({.lr = 0.1, .momentum = 0.9}), {.k = 1, .alpha = 1.0}),
                {.k = 1, .alpha = 1.0});
  nestla::SGD<double> sgd({.lr = 0.1, .momentum = 0.9});
  auto a = ref::initial<double>(50), b = a, c = a, d = a;
  std::vector<double> g;
  ref::grad_source src;
  for (int s = 0; s < 30; ++s) {
    src.fill(a, g);
    CHECK(plain.step(a, g));
    CHECK(la.step(b, g));
    CHECK(la2.step(c, g));
    sgd.step(d, g);
    REQUIRE(a == b);
    REQUIRE(c == d);
  }
}

TEST_CASE("nested<1> builds the same optimizer as Lookahead") {
  auto n1 = nestla::nested<1>(nestla::SGD<float>({.lr = 0.1, .momentum = 0.9}), {{.k = 4, .alpha = 0.3}});
  Lookahead la(nestla::SGD<float>({.lr = 0.1, .momentum = 0.9}), {.k = 4, .alpha = 0.3});
  static_assert(std::is_same_v<decltype(n1), decltype(la)>);
  auto a = ref::initial<float>(40), b = a;
  std::vector<float> g;
  ref::grad_source src;
  for (int s = 0; s < 17; ++s) {
    src.fill(a, g);
    CHECK(n1.step(a, g) == la.step(b, g));
    REQUIRE(a == b);
  }
}

TEST_CASE("class template argument deduction nests by wrapping") {
  nestla::Lookahead outer{nestla::Lookahead{nestla::Adam<double>{{.lr = 0.1}}, {.k = 5, .alpha = 0.5}},
                          {.k = 2, .alpha = 0.5, .momentum = Momentum::pullback}};
  static_assert(std::is_same_v<decltype(outer), Lookahead<Lookahead<nestla::Adam<double>>>>);
  CHECK(outer.options().k == 2);
  CHECK(outer.inner().options().k == 5);
  CHECK(outer.base().options().lr == 0.1);
  std::vector<int> ks;
  outer.for_each_level([&](auto& level) { ks.push_back(level.options().k); });
  CHECK(ks == std::vector<int>{5, 2});
}

TEST_CASE("the outer level syncs right after every k-th inner sync") {
  auto opt = nestla::nested<2>(nestla::SGD<double>({.lr = 0.1}), {{.k = 3, .alpha = 0.5}, {.k = 2, .alpha = 0.5}});
  std::vector<double> w{1.0}, g{1.0};
  std::vector<int> outer_syncs;
  for (int s = 1; s <= 18; ++s)
    if (opt.step(w, g)) outer_syncs.push_back(s);
  CHECK(outer_syncs == std::vector<int>{6, 12, 18});
  CHECK(opt.inner().syncs() == 6);
  // After an outer sync theta = phi = omega.
  CHECK(w[0] == opt.slow_weights().data()[0]);
  CHECK(w[0] == opt.inner().slow_weights().data()[0]);
}

TEST_CASE("schedules from outside: options are settable and validated") {
  auto opt = nestla::nested<2>(nestla::Adam<double>({.lr = 0.01}), {{.k = 5, .alpha = 0.5}, {.k = 5, .alpha = 0.5}});
  opt.base().set_lr(0.001);
  CHECK(opt.base().options().lr == 0.001);
  opt.inner().set_alpha(0.8);
  CHECK(opt.inner().options().alpha == 0.8);
  CHECK_THROWS_AS(opt.set_alpha(1.5), std::invalid_argument);
  CHECK(opt.options().alpha == 0.5);
  auto o = opt.options();
  o.momentum = Momentum::pullback;
  std::vector<double> w{1.0, 2.0}, g{0.1, 0.1};
  opt.step(w, g);
  opt.set_options(o);  // switched to pullback after the first step: slow momenta start at zero
  CHECK(opt.slow_momentum().size() == opt.slow_weights().size());
  for (int s = 0; s < 30; ++s) opt.step(w, g);
}

TEST_CASE("evaluating at the slow weights: swap in, swap back, finish on them") {
  Lookahead opt(nestla::Adam<double>({.lr = 0.1}), {.k = 4, .alpha = 0.5});
  std::vector<double> w{1.0, -1.0, 0.5}, g{0.3, -0.2, 0.1};
  for (int s = 0; s < 6; ++s) opt.step(w, g);  // mid-cycle: fast and slow differ
  const auto fast = w;
  const std::vector<double> slow(opt.slow_weights().data(), opt.slow_weights().data() + 3);
  CHECK(fast != slow);
  opt.swap_slow_weights(w);
  CHECK(w == slow);
  CHECK(opt.slow_weights_swapped_in());
  CHECK_THROWS_AS(opt.step(w, g), std::logic_error);
  CHECK_THROWS_AS(opt.copy_slow_weights_to(w), std::logic_error);
  opt.swap_slow_weights(w);
  CHECK(w == fast);
  opt.copy_slow_weights_to(w);
  CHECK(w == slow);
  Lookahead fresh(nestla::Adam<double>(), {});
  CHECK_THROWS_AS(fresh.swap_slow_weights(w), std::logic_error);
}

TEST_CASE("pullback over a base without a first moment is an error, wherever it would arise") {
  using nestla::SGD;
  auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const nestla::invalid_option& e) {
      return e.what();
    }
    return "(no exception)";
  };
  // At construction, naming the level (1 = innermost) and the reason.
  CHECK(message([] { Lookahead(SGD<float>({.lr = 0.1}), {.momentum = Momentum::pullback}); }) ==
        "nestla: Lookahead level 1 (1 = innermost), construction: momentum = pullback needs a first moment to pull "
        "back, and the base optimizer SGD has none (SGD has one only with momentum > 0); use keep or reset, or give "
        "the base a first moment");
  CHECK(message([] {
          nestla::nested<2>(SGD<float>({.lr = 0.1}), {{.k = 2}, {.k = 2, .momentum = Momentum::pullback}});
        }).find("Lookahead level 2 (1 = innermost), construction") != std::string::npos);
  CHECK_NOTHROW(Lookahead(SGD<float>({.lr = 0.1, .momentum = 0.9}), {.momentum = Momentum::pullback}));
  CHECK_NOTHROW(Lookahead(SGD<float>({.lr = 0.1}), {.momentum = Momentum::reset}));

  // set_options to pullback: refused, the old options stay.
  Lookahead la(SGD<double>({.lr = 0.1}), {.k = 2, .alpha = 0.5});
  auto o = la.options();
  o.momentum = Momentum::pullback;
  CHECK(message([&] { la.set_options(o); }).find("set_options: momentum = pullback") != std::string::npos);
  CHECK(la.options().momentum == Momentum::keep);

  // The base loses its first moment under a pullback level: the next step
  // (and set_alpha) refuse, before anything changes; restoring the momentum
  // or switching the level to keep or reset goes on.
  Lookahead pb(SGD<double>({.lr = 0.1, .momentum = 0.9}), {.k = 2, .alpha = 0.5, .momentum = Momentum::pullback});
  std::vector<double> w{1.0, -2.0}, g{0.5, 0.25};
  pb.step(w, g);
  pb.base().set_options({.lr = 0.1, .momentum = 0});
  const auto before = w;
  const auto steps = pb.base().step_count();
  CHECK(message([&] { pb.step(w, g); }).find("level 1 (1 = innermost), step: momentum = pullback") != std::string::npos);
  CHECK(w == before);
  CHECK(pb.base().step_count() == steps);
  CHECK(pb.cycles_since_sync() == 1);
  CHECK_THROWS_AS(pb.set_alpha(0.7), nestla::invalid_option);
  pb.base().set_options({.lr = 0.1, .momentum = 0.9});
  CHECK(pb.step(w, g));  // completes the cycle: the sync pulls the momentum back
  pb.base().set_options({.lr = 0.1, .momentum = 0});
  CHECK_THROWS_AS(pb.step(w, g), nestla::invalid_option);
  auto keep = pb.options();
  keep.momentum = Momentum::keep;
  pb.set_options(keep);
  CHECK_NOTHROW(pb.step(w, g));

  // Nor does a checkpoint bring that state back.
  std::stringstream saved;
  CHECK_FALSE(pb.base().has_first_moment());
  CHECK_THROWS_AS(pb.set_options({.k = 2, .alpha = 0.5, .momentum = Momentum::pullback}), nestla::invalid_option);
  CHECK(pb.options().momentum == Momentum::keep);
  pb.base().set_options({.lr = 0.1, .momentum = 0.9});
  pb.set_options({.k = 2, .alpha = 0.5, .momentum = Momentum::pullback});
  pb.base().set_options({.lr = 0.1, .momentum = 0});
  pb.save(saved);
  Lookahead fresh(SGD<double>({.lr = 0.1, .momentum = 0.9}), {.k = 2, .alpha = 0.5, .momentum = Momentum::pullback});
  try {
    fresh.load(saved);
    FAIL("loaded a pullback level over a base without a first moment");
  } catch (const nestla::checkpoint_error& e) {
    CHECK(std::string(e.what()).find("momentum = pullback needs a first moment") != std::string::npos);
  }
  CHECK(fresh.base().options().momentum == 0.9);

  // A nested optimizer checks every level, the inner ones included.
  auto nested = nestla::nested<2>(SGD<double>({.lr = 0.1, .momentum = 0.5}),
                                  {{.k = 2, .momentum = Momentum::pullback}, {.k = 2}});
  nested.base().set_lr(0.05);
  nested.step(w, g);
  nested.base().set_options({.lr = 0.1});
  CHECK(message([&] { nested.step(w, g); }).find("level 1 (1 = innermost), step") != std::string::npos);
  CHECK(nested.base().step_count() == 1);
}
