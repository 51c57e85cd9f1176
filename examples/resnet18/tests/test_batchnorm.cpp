// Batch-norm tests: PyTorch's running-statistics rule on hand-computed numbers, eval mode, and training-mode gradients.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "gradcheck.hpp"
#include "layers.hpp"

using namespace resnet18;
using namespace resnet18::testing;

TEST_CASE("batch norm: running statistics follow PyTorch (momentum 0.1, unbiased running_var)") {
  // Two channels, four pixels each (N=2, H=1, W=2), NHWC: pixel-major, channel-minor.
  //   channel 0: 1, 2, 3, 4   mean 2.5, biased var 1.25, unbiased 5/3
  //   channel 1: -1, 0, 2, 7  mean 2,   biased var 9.5,  unbiased 38/3
  const std::vector<double> x = {1, -1, 2, 0, 3, 2, 4, 7};
  const std::vector<double> gamma = {2.0, 0.5}, beta = {0.5, -1.0};
  std::vector<double> rm = {0, 0}, rv = {1, 1}, y(8);
  BatchNorm2d<double> bn(2);
  BatchNormParams<double> p{gamma.data(), beta.data(), rm.data(), rv.data()};
  bn.forward(p, x.data(), 4, y.data(), true);

  CHECK(rm[0] == doctest::Approx(0.25).epsilon(1e-14));
  CHECK(rm[1] == doctest::Approx(0.2).epsilon(1e-14));
  CHECK(rv[0] == doctest::Approx(0.9 + 0.1 * 5.0 / 3.0).epsilon(1e-14));
  CHECK(rv[1] == doctest::Approx(0.9 + 0.1 * 38.0 / 3.0).epsilon(1e-14));
  // Training output uses the biased variance.
  CHECK(y[0] == doctest::Approx((1 - 2.5) / std::sqrt(1.25 + 1e-5) * 2.0 + 0.5).epsilon(1e-14));
  CHECK(y[7] == doctest::Approx((7 - 2.0) / std::sqrt(9.5 + 1e-5) * 0.5 - 1.0).epsilon(1e-14));

  // A second batch compounds the momentum: r <- 0.9 r + 0.1 stat.
  //   channel 0: 0, 0, 0, 8   mean 2, unbiased var 16
  //   channel 1: 1, 1, 1, 1   mean 1, unbiased var 0
  const std::vector<double> x2 = {0, 1, 0, 1, 0, 1, 8, 1};
  bn.forward(p, x2.data(), 4, y.data(), true);
  const double rm0 = 0.9 * 0.25 + 0.1 * 2, rm1 = 0.9 * 0.2 + 0.1 * 1;
  const double rv0 = 0.9 * (0.9 + 0.1 * 5.0 / 3.0) + 0.1 * 16, rv1 = 0.9 * (0.9 + 0.1 * 38.0 / 3.0);
  CHECK(rm[0] == doctest::Approx(rm0).epsilon(1e-14));
  CHECK(rm[1] == doctest::Approx(rm1).epsilon(1e-14));
  CHECK(rv[0] == doctest::Approx(rv0).epsilon(1e-14));
  CHECK(rv[1] == doctest::Approx(rv1).epsilon(1e-14));
  // A constant channel normalizes to beta.
  CHECK(y[1] == doctest::Approx(-1.0).epsilon(1e-12));

  // Eval mode: running statistics, and they stay unchanged.
  bn.forward(p, x.data(), 4, y.data(), false);
  CHECK(rm[0] == doctest::Approx(rm0).epsilon(1e-14));
  CHECK(rv[1] == doctest::Approx(rv1).epsilon(1e-14));
  for (int i = 0; i < 8; ++i) {
    const int c = i % 2;
    const double m = c == 0 ? rm0 : rm1, v = c == 0 ? rv0 : rv1;
    CHECK(y[std::size_t(i)] ==
          doctest::Approx((x[std::size_t(i)] - m) / std::sqrt(v + 1e-5) * gamma[std::size_t(c)] + beta[std::size_t(c)])
              .epsilon(1e-14));
  }

  // Fused residual + ReLU in eval mode.
  const std::vector<double> res = {1, 1, -10, 1, 0, 0, 0, 0};
  std::vector<double> y2(8);
  bn.forward(p, x.data(), 4, y2.data(), false, res.data(), true);
  for (int i = 0; i < 8; ++i) CHECK(y2[std::size_t(i)] == std::max(y[std::size_t(i)] + res[std::size_t(i)], 0.0));

  // A single value per channel cannot be normalized in training (PyTorch raises too).
  CHECK_THROWS_AS(bn.forward(p, x.data(), 1, y.data(), true), std::invalid_argument);
}

TEST_CASE("batch norm: float statistics over many pixels stay accurate") {
  // Large offset and many pixels: naive float sums would lose digits.
  const std::size_t M = 100000;
  const int C = 3;
  std::vector<float> x(M * C), y(M * C);
  std::vector<double> xd(M * C);
  Rng rng(3);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(xd[i] = 100.0 + rng.normal());
  for (std::size_t i = 0; i < x.size(); ++i) xd[i] = double(x[i]);
  const std::vector<float> gamma(C, 1.0f), beta(C, 0.0f);
  std::vector<float> rm(C, 0.0f), rv(C, 1.0f);
  BatchNorm2d<float> bn(C);
  bn.forward({gamma.data(), beta.data(), rm.data(), rv.data()}, x.data(), M, y.data(), true);
  for (int c = 0; c < C; ++c) {
    double m = 0, v = 0;
    for (std::size_t i = 0; i < M; ++i) m += xd[i * C + std::size_t(c)];
    m /= double(M);
    for (std::size_t i = 0; i < M; ++i) v += (xd[i * C + std::size_t(c)] - m) * (xd[i * C + std::size_t(c)] - m);
    v /= double(M);
    CHECK(double(bn.batch_mean()[std::size_t(c)]) == doctest::Approx(m).epsilon(1e-7));
    CHECK(double(bn.batch_invstd()[std::size_t(c)]) == doctest::Approx(1 / std::sqrt(v + 1e-5)).epsilon(1e-5));
  }
}

namespace {

void check_bn_gradients(bool residual, bool relu) {
  CAPTURE(residual);
  CAPTURE(relu);
  const int C = 3;
  const std::size_t M = 10;  // N*H*W
  auto x = random_vector(M * C, 30, 2.0);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] += double(i % C);  // non-zero means
  auto gamma = random_vector(C, 31);
  auto beta = random_vector(C, 32);
  auto res = random_vector(M * C, 33);
  const auto r = random_vector(M * C, 34);
  std::vector<double> rm(C, 0.0), rv(C, 1.0), y(M * C);
  BatchNorm2d<double> bn(C);
  auto run = [&] {
    bn.forward({gamma.data(), beta.data(), rm.data(), rv.data()}, x.data(), M, y.data(), true,
               residual ? res.data() : nullptr, relu);
    return dot(r, y.data());
  };
  run();
  std::vector<double> dx(x.size()), dg(C), db(C), dres(x.size());
  bn.backward(gamma.data(), x.data(), y.data(), r.data(), M, dg.data(), db.data(), dx.data(),
              residual ? dres.data() : nullptr, relu);
  const auto ndx = numeric_gradient(run, x.data(), x.size());
  CHECK(relative_error(dx, ndx) < kGradTolerance);
  CHECK(max_deviation(dx, ndx) < kGradTolerance);
  CHECK(relative_error(dg, numeric_gradient(run, gamma.data(), C)) < kGradTolerance);
  CHECK(relative_error(db, numeric_gradient(run, beta.data(), C)) < kGradTolerance);
  if (residual) CHECK(relative_error(dres, numeric_gradient(run, res.data(), res.size())) < kGradTolerance);

  // dx may alias dy, dresidual may alias dy: same results.
  run();
  std::vector<double> inplace = r, dg2(C), db2(C);
  bn.backward(gamma.data(), x.data(), y.data(), inplace.data(), M, dg2.data(), db2.data(), inplace.data(), nullptr,
              relu);
  CHECK(relative_error(inplace, dx) < 1e-15);
  if (residual) {
    std::vector<double> shared = r, dx2(x.size());
    bn.backward(gamma.data(), x.data(), y.data(), shared.data(), M, dg2.data(), db2.data(), dx2.data(), shared.data(),
                relu);
    CHECK(relative_error(dx2, dx) < 1e-15);
    CHECK(relative_error(shared, dres) < 1e-15);
  }
}

}  // namespace

TEST_CASE("batch norm (training mode): gradients of input, weight, bias and residual") {
  SUBCASE("plain") { check_bn_gradients(false, false); }
  SUBCASE("with ReLU") { check_bn_gradients(false, true); }
  SUBCASE("with residual add and ReLU") { check_bn_gradients(true, true); }
}
