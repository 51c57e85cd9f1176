// RAdam: closed forms of its two phases, weight decay styles, maximize, validation, and the shared checks (Lookahead, checkpoints, groups, float).
#include <doctest/doctest.h>

#include <nestla/radam.hpp>

#include <cmath>
#include <vector>

#include "optimizer_checks.hpp"
#include "reference_optim.hpp"

using doctest::Approx;

static_assert(nestla::UpdateRule<nestla::radam_rule>);

TEST_CASE("RAdam with a constant gradient: lr g per step while rho_t <= 5, then the rectified Adam step") {
  // m_t / (1 - beta1^t) = g and v_t = (1 - beta2^t) g^2 exactly in real
  // arithmetic; with beta2 = 0.999, rho_t crosses 5 at step 6.
  const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-3, g = 0.5;
  nestla::RAdam<double> opt({.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps});
  std::vector<double> w{1.0};
  double x = 1.0;
  for (int t = 1; t <= 12; ++t) {
    opt.step(w, std::vector<double>{g});
    const double rho_inf = 2 / (1 - b2) - 1;
    const double rho = rho_inf - 2 * t * std::pow(b2, t) / (1 - std::pow(b2, t));
    CHECK((rho > 5) == (t >= 6));
    if (rho > 5) {
      const double r = std::sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho));
      const double s = std::sqrt(1 - std::pow(b2, t));
      x -= lr * r * s * g / (g * s + eps);
    } else {
      x -= lr * g;
    }
    CHECK(w[0] == Approx(x).epsilon(1e-13));
  }
}

TEST_CASE("RAdam weight decay: L2 in the gradient, or decoupled as AdamW") {
  const double lr = 0.1, wd = 0.5, g = 2.0, p0 = 3.0;
  std::vector<double> a{p0}, b{p0};
  nestla::RAdam<double> l2({.lr = lr, .weight_decay = wd});
  nestla::RAdam<double> dec({.lr = lr, .weight_decay = wd, .decoupled_weight_decay = true});
  l2.step(a, std::vector<double>{g});
  dec.step(b, std::vector<double>{g});
  CHECK(a[0] == Approx(p0 - lr * (g + wd * p0)).epsilon(1e-15));  // first step: theta - lr g'
  CHECK(b[0] == Approx(p0 * (1 - lr * wd) - lr * g).epsilon(1e-15));
}

TEST_CASE("RAdam maximize is the minimizing step on -g, bit for bit") {
  nestla::RAdam<double> up({.lr = 0.05, .weight_decay = 0.1, .maximize = true}), down({.lr = 0.05, .weight_decay = 0.1});
  std::vector<double> a{1.0, -2.0}, b = a;
  for (int s = 0; s < 10; ++s) {  // both phases
    up.step(a, std::vector<double>{0.5, -0.25 * s});
    down.step(b, std::vector<double>{-0.5, 0.25 * s});
  }
  CHECK(a == b);
}

TEST_CASE("RAdam options are validated with their names") {
  CHECK_THROWS_WITH_AS(nestla::RAdam<float>({.beta2 = 1.0}), "nestla: RAdam: beta2 = 1 is invalid (must be in [0, 1))",
                       nestla::invalid_option);
  CHECK_THROWS_WITH_AS(nestla::RAdam<float>({.beta1 = -0.5}),
                       "nestla: RAdam: beta1 = -0.5 is invalid (must be in [0, 1))", nestla::invalid_option);
  CHECK_THROWS_WITH_AS(nestla::RAdam<float>({.lr = -1}), "nestla: RAdam: lr = -1 is invalid (must be finite and >= 0)",
                       nestla::invalid_option);
  CHECK_THROWS_WITH_AS(nestla::RAdam<float>({.eps = -1e-8}),
                       "nestla: RAdam: eps = -1e-08 is invalid (must be finite and >= 0)", nestla::invalid_option);
  CHECK_THROWS_WITH_AS(nestla::RAdam<float>({.weight_decay = NAN}),
                       "nestla: RAdam: weight_decay = nan is invalid (must be finite and >= 0)", nestla::invalid_option);
  nestla::RAdam<float> ok;
  CHECK_THROWS_AS(ok.set_options({.beta2 = 2}), nestla::invalid_option);
  CHECK(ok.options().beta2 == 0.999);
  CHECK(nestla::RAdamOptions{}.lr == 1e-3);  // torch's defaults
  CHECK(nestla::RAdamOptions{}.eps == 1e-8);
}

TEST_CASE_TEMPLATE("RAdam equals the reference loop alone, under Lookahead and nested, at every policy", T, float,
                   double) {
  for (const nestla::RAdamOptions o : {nestla::RAdamOptions{.lr = 0.01},
                                       nestla::RAdamOptions{.lr = 0.01, .beta1 = 0.3, .beta2 = 0.9, .weight_decay = 0.1},
                                       nestla::RAdamOptions{.lr = 0.01, .weight_decay = 0.1,
                                                            .decoupled_weight_decay = true, .maximize = true}}) {
    auto step = [o](ref::base_state<T>& s, std::vector<T>& p, const std::vector<T>& g) { ref::radam_step(o, s, p, g); };
    checks::matches_reference_at_every_policy(nestla::RAdam<T>(o), step);
  }
}

TEST_CASE("RAdam: checkpoints mid-run, groups, float against double") {
  checks::checkpoint_resumes_bit_for_bit(nestla::RAdam<float>({.lr = 0.01, .weight_decay = 0.1}),
                                         nestla::RAdam<float>({.lr = 0.5, .beta2 = 0.9}));
  checks::group_moves_as_separate_optimizer<nestla::RAdam>(
      nestla::RAdamOptions{.lr = 0.01, .weight_decay = 0.1, .decoupled_weight_decay = true}, 0.03, 0.0);
  checks::float_follows_double<nestla::RAdam>(nestla::RAdamOptions{.lr = 0.01, .weight_decay = 0.01}, 40, 1e-5);
}
