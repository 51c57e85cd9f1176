// NAdam: its first steps by hand, the running product of momentum coefficients (skipped steps, checkpoints), validation, and the shared checks.
#include <doctest/doctest.h>

#include <nestla/nadam.hpp>

#include <cmath>
#include <vector>

#include "optimizer_checks.hpp"
#include "reference_optim.hpp"

using doctest::Approx;

static_assert(nestla::UpdateRule<nestla::nadam_rule>);

TEST_CASE("NAdam's first steps by hand, with momentum decay") {
  const double lr = 0.01, b1 = 0.9, b2 = 0.99, eps = 1e-8, psi = 0.05;
  nestla::NAdam<double> opt({.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps, .momentum_decay = psi});
  std::vector<double> w{1.0};
  auto mu = [&](int t) { return b1 * (1 - 0.5 * std::pow(0.96, t * psi)); };
  const double g1 = 0.5;
  opt.step(w, std::vector<double>{g1});
  // t = 1: P_1 = mu_1, m = (1 - b1) g, sqrt(v / (1 - b2)) = |g|.
  const double x1 = 1.0 - lr * (g1 + mu(2) / (1 - mu(1) * mu(2)) * (1 - b1) * g1) / (std::abs(g1) + eps);
  CHECK(w[0] == Approx(x1).epsilon(1e-14));
  const double g2 = -1.5;
  opt.step(w, std::vector<double>{g2});
  const double m = b1 * (1 - b1) * g1 + (1 - b1) * g2, v = b2 * (1 - b2) * g1 * g1 + (1 - b2) * g2 * g2;
  const double p2 = mu(1) * mu(2), p3 = p2 * mu(3);
  const double x2 = x1 - lr * ((1 - mu(2)) / (1 - p2) * g2 + mu(3) / (1 - p3) * m) / (std::sqrt(v / (1 - b2 * b2)) + eps);
  CHECK(w[0] == Approx(x2).epsilon(1e-14));
  CHECK(w[0] != Approx(x1));
}

TEST_CASE("NAdam: a skipped step leaves the momentum product alone; it is checkpointed") {
  const nestla::NAdamOptions o{.lr = 0.01, .momentum_decay = 0.1};
  nestla::NAdam<double> guarded(o), plain(o);
  guarded.set_skip_nonfinite(true);
  std::vector<double> a{1.0, 2.0}, b = a;
  for (int s = 0; s < 6; ++s) {
    const std::vector<double> g{0.1 * s - 0.2, 0.3};
    if (s == 2) CHECK_FALSE(guarded.step(a, std::vector<double>{NAN, 0.3}));
    guarded.step(a, g);
    plain.step(b, g);
  }
  CHECK(a == b);
  CHECK(guarded.skipped_steps() == 1);
  CHECK(checks::bytes(guarded) != checks::bytes(plain));  // the skip counter differs, nothing else
  std::stringstream ss;
  plain.save(ss);
  nestla::NAdam<double> back({.lr = 0.5});
  back.load(ss);
  std::vector<double> c = b;
  plain.step(b, std::vector<double>{0.2, -0.1});
  back.step(c, std::vector<double>{0.2, -0.1});
  CHECK(b == c);
}

TEST_CASE("NAdam weight decay styles and maximize") {
  const double lr = 0.1, wd = 0.5;
  std::vector<double> a{3.0}, b{3.0}, c{3.0}, d{3.0};
  nestla::NAdam<double> l2({.lr = lr, .weight_decay = wd}), dec({.lr = lr, .weight_decay = wd, .decoupled_weight_decay = true});
  nestla::NAdam<double> plain({.lr = lr}), up({.lr = lr, .weight_decay = wd, .maximize = true});
  l2.step(a, std::vector<double>{2.0});
  plain.step(b, std::vector<double>{2.0 + wd * 3.0});  // L2: the gradient g + wd theta
  CHECK(a == b);
  dec.step(c, std::vector<double>{2.0});
  std::vector<double> e{3.0 * (1 - lr * wd)};
  nestla::NAdam<double>({.lr = lr}).step(e, std::vector<double>{2.0});  // decoupled: decay, then the plain step
  CHECK(c[0] == Approx(e[0]).epsilon(1e-15));
  up.step(d, std::vector<double>{-2.0});
  std::vector<double> f{3.0};
  nestla::NAdam<double>({.lr = lr, .weight_decay = wd}).step(f, std::vector<double>{2.0});
  CHECK(d == f);
}

TEST_CASE("NAdam options are validated with their names") {
  CHECK_THROWS_WITH_AS(nestla::NAdam<float>({.momentum_decay = -1}),
                       "nestla: NAdam: momentum_decay = -1 is invalid (must be finite and >= 0)", nestla::invalid_option);
  CHECK_THROWS_WITH_AS(nestla::NAdam<float>({.beta1 = 1}), "nestla: NAdam: beta1 = 1 is invalid (must be in [0, 1))",
                       nestla::invalid_option);
  CHECK_THROWS_WITH_AS(nestla::NAdam<float>({.eps = INFINITY}),
                       "nestla: NAdam: eps = inf is invalid (must be finite and >= 0)", nestla::invalid_option);
  CHECK(nestla::NAdamOptions{}.lr == 2e-3);  // torch's defaults
  CHECK(nestla::NAdamOptions{}.momentum_decay == 4e-3);
}

TEST_CASE_TEMPLATE("NAdam equals the reference loop alone, under Lookahead and nested, at every policy", T, float,
                   double) {
  for (const nestla::NAdamOptions o :
       {nestla::NAdamOptions{.lr = 0.01}, nestla::NAdamOptions{.lr = 0.01, .beta1 = 0.3, .weight_decay = 0.1},
        nestla::NAdamOptions{.lr = 0.01, .weight_decay = 0.1, .momentum_decay = 0.05, .decoupled_weight_decay = true,
                             .maximize = true}}) {
    auto step = [o, mu_product = 1.0](ref::base_state<T>& s, std::vector<T>& p, const std::vector<T>& g) mutable {
      ref::nadam_step(o, mu_product, s, p, g);
    };
    checks::matches_reference_at_every_policy(nestla::NAdam<T>(o), step);
  }
}

TEST_CASE("NAdam: checkpoints mid-run, groups, float against double") {
  checks::checkpoint_resumes_bit_for_bit(nestla::NAdam<float>({.lr = 0.01, .weight_decay = 0.1}),
                                         nestla::NAdam<float>({.lr = 0.5, .momentum_decay = 0.5}));
  checks::group_moves_as_separate_optimizer<nestla::NAdam>(nestla::NAdamOptions{.lr = 0.01, .weight_decay = 0.1}, 0.03,
                                                           0.0);
  checks::float_follows_double<nestla::NAdam>(nestla::NAdamOptions{.lr = 0.01}, 40, 1e-5);
}
