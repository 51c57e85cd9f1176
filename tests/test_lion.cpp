// Lion: sign steps by hand (interpolation, then the momentum update), weight decay, validation, and the shared checks.
#include <doctest/doctest.h>

#include <nestla/lion.hpp>

#include <cmath>
#include <vector>

#include "optimizer_checks.hpp"
#include "reference_optim.hpp"

using doctest::Approx;

static_assert(nestla::UpdateRule<nestla::lion_rule>);

TEST_CASE("Lion's steps by hand: the sign of beta1 m + (1 - beta1) g, m updated with beta2 afterwards") {
  const double lr = 0.1, b1 = 0.9, b2 = 0.99;
  nestla::Lion<double> opt({.lr = lr, .beta1 = b1, .beta2 = b2});
  std::vector<double> w{1.0, -1.0, 0.5};
  opt.step(w, std::vector<double>{2.0, -0.001, 0.0});  // m = 0: sign(g); sign(0) = 0
  CHECK(w == std::vector<double>{1.0 - lr, -1.0 + lr, 0.5});
  CHECK(opt.state("exp_avg").data()[0] == Approx((1 - b2) * 2.0).epsilon(1e-15));
  // c = b1 (1 - b2) 2 + (1 - b1)(-1) = 0.018 - 0.1 < 0, though m > 0; with
  // beta2 in c instead of beta1 the sign would be +.
  opt.step(w, std::vector<double>{-1.0, 0.0, 0.0});
  CHECK(w[0] == Approx(1.0 - lr + lr).epsilon(1e-15));
  // Element 1: c = b1 (1 - b2)(-0.001) < 0, so it moves up again.
  CHECK(w[1] == Approx(-1.0 + 2 * lr).epsilon(1e-15));
  CHECK(w[2] == 0.5);
}

TEST_CASE("Lion's weight decay is scaled by lr and applied with the sign step") {
  const double lr = 0.1, wd = 0.5;
  nestla::Lion<double> opt({.lr = lr, .weight_decay = wd});
  std::vector<double> w{2.0, -2.0};
  opt.step(w, std::vector<double>{1.0, 0.0});
  CHECK(w[0] == Approx(2.0 - lr * (1.0 + wd * 2.0)).epsilon(1e-15));
  CHECK(w[1] == Approx(-2.0 - lr * (wd * -2.0)).epsilon(1e-15));
}

TEST_CASE("Lion options are validated with their names; defaults are the paper's") {
  CHECK_THROWS_WITH_AS(nestla::Lion<float>({.beta1 = 1.5}), "nestla: Lion: beta1 = 1.5 is invalid (must be in [0, 1])",
                       nestla::invalid_option);
  CHECK_THROWS_WITH_AS(nestla::Lion<float>({.lr = INFINITY}), "nestla: Lion: lr = inf is invalid (must be finite and >= 0)",
                       nestla::invalid_option);
  const nestla::LionOptions d;
  CHECK(d.lr == 1e-4);
  CHECK(d.beta1 == 0.9);
  CHECK(d.beta2 == 0.99);
  CHECK(d.weight_decay == 0);
}

TEST_CASE_TEMPLATE("Lion equals the reference loop alone, under Lookahead and nested, at every policy", T, float,
                   double) {
  for (const nestla::LionOptions o :
       {nestla::LionOptions{.lr = 0.01}, nestla::LionOptions{.lr = 0.01, .beta1 = 0.5, .beta2 = 0.9, .weight_decay = 0.2}}) {
    auto step = [o](ref::base_state<T>& s, std::vector<T>& p, const std::vector<T>& g) { ref::lion_step(o, s, p, g); };
    checks::matches_reference_at_every_policy(nestla::Lion<T>(o), step);
  }
}

TEST_CASE("Lion: checkpoints mid-run, groups, float against double") {
  checks::checkpoint_resumes_bit_for_bit(nestla::Lion<float>({.lr = 0.01, .weight_decay = 0.1}),
                                         nestla::Lion<float>({.lr = 0.5}));
  checks::group_moves_as_separate_optimizer<nestla::Lion>(nestla::LionOptions{.lr = 0.01, .weight_decay = 0.1}, 0.03,
                                                          0.0);
  checks::float_follows_double<nestla::Lion>(nestla::LionOptions{.lr = 1e-3}, 40, 1e-5);
}
