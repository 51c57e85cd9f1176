// Adamax: closed forms (a constant gradient, the infinity norm's decay), torch's lerp on both sides of 0.5, validation, and the shared checks.
#include <doctest/doctest.h>

#include <nestla/adamax.hpp>

#include <cmath>
#include <vector>

#include "optimizer_checks.hpp"
#include "reference_optim.hpp"

using doctest::Approx;

static_assert(nestla::UpdateRule<nestla::adamax_rule>);

TEST_CASE("Adamax with a constant gradient moves lr g / (|g| + eps) per step") {
  // m_t / (1 - beta1^t) = g, and u stays |g| + eps (beta2 u < u).
  const double lr = 0.02, eps = 1e-3;
  nestla::Adamax<double> opt({.lr = lr, .eps = eps});
  std::vector<double> w{1.0, 1.0};
  for (int t = 1; t <= 20; ++t) {
    opt.step(w, std::vector<double>{0.5, -2.0});
    CHECK(w[0] == Approx(1.0 - t * lr * 0.5 / (0.5 + eps)).epsilon(1e-13));
    CHECK(w[1] == Approx(1.0 + t * lr * 2.0 / (2.0 + eps)).epsilon(1e-13));
  }
  CHECK(opt.state("exp_inf").data()[0] == 0.5 + eps);
}

TEST_CASE("Adamax keeps the decayed maximum when the gradient shrinks") {
  const double lr = 0.1, b1 = 0.9, b2 = 0.5;
  nestla::Adamax<double> opt({.lr = lr, .beta1 = b1, .beta2 = b2, .eps = 0});
  std::vector<double> w{0.0};
  opt.step(w, std::vector<double>{4.0});  // u = 4, m = 0.4
  opt.step(w, std::vector<double>{1.0});  // u = max(2, 1) = 2, m = 0.36 + 0.1
  const double x1 = -lr / (1 - b1) * 0.4 / 4.0;
  CHECK(w[0] == Approx(x1 - lr / (1 - b1 * b1) * (b1 * 0.4 + 0.1) / 2.0).epsilon(1e-15));
  CHECK(opt.state(1).data()[0] == 2.0);
}

TEST_CASE("Adamax's first moment is torch's lerp, on either side of weight 0.5") {
  // beta1 = 0.3: weight 0.7, computed as g + (w - 1)(g - m).
  for (double b1 : {0.9, 0.3}) {
    nestla::Adamax<double> opt({.lr = 0.01, .beta1 = b1});
    std::vector<double> w{1.0};
    double m = 0;
    for (double g : {0.3, -0.7, 0.11}) {
      opt.step(w, std::vector<double>{g});
      m = ref::lerp(m, g, 1 - b1);
      CHECK(opt.state("exp_avg").data()[0] == m);
    }
  }
}

TEST_CASE("Adamax maximize and weight decay") {
  nestla::Adamax<double> up({.lr = 0.05, .weight_decay = 0.1, .maximize = true}), down({.lr = 0.05, .weight_decay = 0.1});
  std::vector<double> a{1.0, -2.0}, b = a;
  for (int s = 0; s < 6; ++s) {
    up.step(a, std::vector<double>{0.5, -0.25 * s});
    down.step(b, std::vector<double>{-0.5, 0.25 * s});
  }
  CHECK(a == b);
  nestla::Adamax<double> l2({.lr = 0.1, .weight_decay = 0.5}), plain({.lr = 0.1});
  std::vector<double> c{3.0}, d{3.0};
  l2.step(c, std::vector<double>{2.0});
  plain.step(d, std::vector<double>{2.0 + 0.5 * 3.0});
  CHECK(c == d);
}

TEST_CASE("Adamax options are validated with their names") {
  CHECK_THROWS_WITH_AS(nestla::Adamax<float>({.beta2 = 1.5}), "nestla: Adamax: beta2 = 1.5 is invalid (must be in [0, 1))",
                       nestla::invalid_option);
  CHECK_THROWS_WITH_AS(nestla::Adamax<float>({.weight_decay = -1}),
                       "nestla: Adamax: weight_decay = -1 is invalid (must be finite and >= 0)", nestla::invalid_option);
  CHECK(nestla::AdamaxOptions{}.lr == 2e-3);  // torch's default
}

TEST_CASE_TEMPLATE("Adamax equals the reference loop alone, under Lookahead and nested, at every policy", T, float,
                   double) {
  for (const nestla::AdamaxOptions o : {nestla::AdamaxOptions{.lr = 0.01},
                                        nestla::AdamaxOptions{.lr = 0.01, .beta1 = 0.3, .weight_decay = 0.1,
                                                              .maximize = true}}) {
    auto step = [o](ref::base_state<T>& s, std::vector<T>& p, const std::vector<T>& g) { ref::adamax_step(o, s, p, g); };
    checks::matches_reference_at_every_policy(nestla::Adamax<T>(o), step);
  }
}

TEST_CASE("Adamax: checkpoints mid-run, groups, float against double") {
  checks::checkpoint_resumes_bit_for_bit(nestla::Adamax<float>({.lr = 0.01, .weight_decay = 0.1}),
                                         nestla::Adamax<float>({.lr = 0.5}));
  checks::group_moves_as_separate_optimizer<nestla::Adamax>(nestla::AdamaxOptions{.lr = 0.01, .weight_decay = 0.1},
                                                            0.03, 0.0);
  checks::float_follows_double<nestla::Adamax>(nestla::AdamaxOptions{.lr = 0.01}, 40, 1e-5);
}
