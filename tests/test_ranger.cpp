// The Ranger preset: its type and defaults, and that it is Lookahead over RAdam step for step.
#include <doctest/doctest.h>

#include <nestla/ranger.hpp>

#include <type_traits>
#include <vector>

#include "reference.hpp"

TEST_CASE("ranger() is Lookahead over RAdam with lessw2020's defaults") {
  auto opt = nestla::ranger();
  static_assert(std::is_same_v<decltype(opt), nestla::Lookahead<nestla::RAdam<float>>>);
  static_assert(std::is_same_v<nestla::Ranger<double>, nestla::Lookahead<nestla::RAdam<double>>>);
  const auto& r = opt.base().options();
  CHECK(r.lr == 1e-3);
  CHECK(r.beta1 == 0.95);
  CHECK(r.beta2 == 0.999);
  CHECK(r.eps == 1e-5);
  CHECK(r.weight_decay == 0);
  CHECK(r.decoupled_weight_decay);
  CHECK_FALSE(r.maximize);
  CHECK(opt.options().k == 6);
  CHECK(opt.options().alpha == 0.5);
  CHECK(opt.options().momentum == nestla::Momentum::keep);
  CHECK(nestla::Ranger<>::type_name() == "Lookahead<RAdam>");
}

TEST_CASE("ranger(options) steps as the Lookahead over RAdam it names, syncing every k steps") {
  auto opt = nestla::ranger<double>({.lr = 0.01, .weight_decay = 0.1, .k = 4, .alpha = 0.6,
                                     .momentum = nestla::Momentum::pullback});
  nestla::Lookahead same(nestla::RAdam<double>({.lr = 0.01, .beta1 = 0.95, .beta2 = 0.999, .eps = 1e-5,
                                                .weight_decay = 0.1, .decoupled_weight_decay = true}),
                         {.k = 4, .alpha = 0.6, .momentum = nestla::Momentum::pullback});
  std::vector<double> a(19, 0.25), b = a, g;
  ref::grad_source src;
  for (int s = 1; s <= 20; ++s) {
    src.fill(a, g);
    CHECK(opt.step(a, g) == (s % 4 == 0));
    same.step(b, g);
    REQUIRE(a == b);
  }
  CHECK(opt.syncs() == 5);
}

TEST_CASE("ranger's options are validated by the part they belong to") {
  CHECK_THROWS_WITH_AS(nestla::ranger({.k = 0}), "nestla: Lookahead: k = 0 is invalid (must be >= 1)",
                       nestla::invalid_option);
  CHECK_THROWS_WITH_AS(nestla::ranger({.beta1 = 1}), "nestla: RAdam: beta1 = 1 is invalid (must be in [0, 1))",
                       nestla::invalid_option);
}
