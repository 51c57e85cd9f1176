// Bad input: every invalid option and mismatched parameter set is an error that names it, and nothing changes.
#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace {

template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

template <class F>
void names(F&& f, const std::string& param, const std::string& value) {
  const auto m = message_of(f);
  CAPTURE(m);
  CHECK(m.find(param) != std::string::npos);
  CHECK(m.find(value) != std::string::npos);
}

std::string bytes(const auto& opt) {
  std::ostringstream os;
  opt.save(os);
  return os.str();
}

}  // namespace

TEST_CASE("invalid hyperparameters name the parameter and the value") {
  using nestla::Adam;
  using nestla::AdamW;
  using nestla::SGD;
  names([] { SGD<>({.lr = -0.1}); }, "lr", "-0.1");
  names([] { SGD<>({.momentum = -1}); }, "momentum", "-1");
  names([] { SGD<>({.weight_decay = -2}); }, "weight_decay", "-2");
  names([] { SGD<>({.lr = 0.1, .momentum = 0, .nesterov = true}); }, "momentum", "nesterov");
  names([] { SGD<>({.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}); }, "dampening", "0.1");
  names([] { Adam<>({.beta1 = 1.0}); }, "beta1", "1");
  names([] { Adam<>({.beta2 = -0.5}); }, "beta2", "-0.5");
  names([] { Adam<>({.eps = -1e-8}); }, "eps", "-1e-08");
  names([] { AdamW<>({.weight_decay = -0.5}); }, "weight_decay", "-0.5");
  names([] { Adam<>({.lr = std::numeric_limits<double>::quiet_NaN()}); }, "lr", "nan");
  names([] { nestla::Lookahead(Adam<>(), {.k = 0}); }, "k", "0");
  names([] { nestla::Lookahead(Adam<>(), {.alpha = 1.5}); }, "alpha", "1.5");
  names([] { nestla::Lookahead(Adam<>(), {.momentum = static_cast<nestla::Momentum>(7)}); }, "momentum", "7");
  names([] { nestla::Lookahead(Adam<>(), {.outer_momentum = -0.5}); }, "outer_momentum", "-0.5");
  names([] { nestla::Lookahead(Adam<>(), {.outer_momentum = std::numeric_limits<double>::infinity()}); },
        "outer_momentum", "inf");
  names([] { nestla::Lookahead(Adam<>(), {.outer_nesterov = true}); }, "outer_momentum", "outer_nesterov");
  names([] { Adam<> a; a.add_param_group({0}, {.lr = -1.0}); }, "group lr", "-1");
  names(
      [] {
        Adam<> a;
        a.add_param_group({0, 1}, {});
        a.add_param_group({1}, {});
      },
      "tensor 1", "group 0");
  names([] { Adam<> a; a.set_param_group(3, {}); }, "group 3", "0 groups");
  names([] { (void)nestla::nested<2>(Adam<>(), std::vector<nestla::LookaheadOptions>(3)); }, "3 level options", "2");
}

TEST_CASE("setting an invalid option leaves the old one") {
  nestla::Adam<double> adam({.lr = 0.1});
  CHECK_THROWS_AS(adam.set_lr(-1), nestla::invalid_option);
  CHECK(adam.options().lr == 0.1);
  nestla::Lookahead la(nestla::SGD<double>({.lr = 0.1}), {.k = 3});
  CHECK_THROWS_AS(la.set_options({.k = -2}), std::invalid_argument);
  CHECK(la.options().k == 3);
  CHECK_THROWS_AS(la.set_options({.k = 3, .outer_momentum = std::nan("")}), std::invalid_argument);
  CHECK(la.options().outer_momentum == 0);
}

TEST_CASE("a parameter set that changes shape, or gradients that do not match, are rejected before any change") {
  auto opt = nestla::nested<2>(nestla::Adam<float>({.lr = 0.1}), {{.k = 2}, {.k = 2}});
  std::vector<std::vector<float>> p{std::vector<float>(10, 1.0f), std::vector<float>(3, 1.0f)};
  std::vector<std::vector<float>> g{std::vector<float>(10, 0.5f), std::vector<float>(3, 0.5f)};
  opt.step(p, g);
  const auto state = bytes(opt);
  const auto params = p;

  auto rejected = [&](auto&& pp, auto&& gg, const std::string& needle) {
    std::string m;
    try {
      opt.step(pp, gg);
    } catch (const nestla::layout_error& e) {
      m = e.what();
    }
    CAPTURE(m);
    CHECK(m.find(needle) != std::string::npos);
    CHECK(bytes(opt) == state);
    CHECK(p == params);
  };
  auto p_more = p;
  p_more.push_back({1.0f});
  auto g_more = g;
  g_more.push_back({1.0f});
  rejected(p_more, g_more, "the parameter set has 3 tensors, the optimizer's state was created for 2");
  auto p_size = p;
  p_size[1].push_back(2.0f);
  auto g_size = g;
  g_size[1].push_back(2.0f);
  rejected(p_size, g_size, "parameter tensor 1 has 4 elements, the optimizer's state was created for 3");
  auto g_short = g;
  g_short[0].pop_back();
  rejected(p, g_short, "gradient tensor 0 has 9 elements, parameter tensor 0 has 10");
  auto g_fewer = g;
  g_fewer.pop_back();
  rejected(p, g_fewer, "1 gradient tensors for 2 parameter tensors");

  // A first step with mismatched gradients creates no state either.
  nestla::Adam<float> fresh;
  std::vector<float> w(4, 1.0f), gw(5, 1.0f);
  CHECK_THROWS_AS(fresh.step(w, gw), nestla::layout_error);
  CHECK(!fresh.initialized());
  CHECK(w == std::vector<float>(4, 1.0f));
  // A group naming a tensor that does not exist fails at the first step, before any change.
  nestla::Adam<float> grouped;
  grouped.add_param_group({4}, {.lr = 0.1});
  std::vector<float> gw4(4, 1.0f);
  CHECK_THROWS_AS(grouped.step(w, gw4), nestla::layout_error);
  CHECK(!grouped.initialized());
  CHECK(w == std::vector<float>(4, 1.0f));
}

TEST_CASE("the non-finite guard skips a step without touching anything, and says so") {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    auto opt = nestla::nested<2>(nestla::Adam<float>({.lr = 0.1}), {{.k = 2}, {.k = 2}});
    opt.base().set_skip_nonfinite(true);
    std::vector<float> w(40, 1.0f), g(40, 0.5f);
    opt.step(w, g);
    const auto state = bytes(opt);
    const auto before = w;
    auto gb = g;
    gb[37] = bad;  // in the scalar tail of a SIMD batch
    CHECK_FALSE(opt.step(w, gb));
    CHECK(opt.base().last_step_skipped());
    CHECK(opt.base().skipped_steps() == 1);
    CHECK(w == before);
    CHECK(opt.base().step_count() == 1);
    CHECK(opt.inner().cycles_since_sync() == 1);
    gb[37] = 0.5f;
    gb[3] = bad;  // in the SIMD body
    CHECK_FALSE(opt.step(w, gb));
    CHECK(opt.base().skipped_steps() == 2);
    CHECK(w == before);
    // The checkpoint differs only in the skipped-steps counter: compare with a
    // twin that never saw the bad gradients.
    opt.step(w, g);
    CHECK_FALSE(opt.base().last_step_skipped());
    CHECK(opt.base().step_count() == 2);
    CHECK(opt.inner().syncs() == 1);
    (void)state;
  }
  // Without the guard a NaN goes through, as in PyTorch.
  nestla::SGD<float> sgd({.lr = 0.1});
  std::vector<float> w{1.0f}, g{std::numeric_limits<float>::quiet_NaN()};
  sgd.step(w, g);
  CHECK(std::isnan(w[0]));
}
