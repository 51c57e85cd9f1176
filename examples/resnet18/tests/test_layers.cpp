// Layer tests: forward against naive references and every backward against central finite differences (double).
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>
#include <cstdint>
#include <limits>
#include <vector>

#include <omp.h>

#include "gradcheck.hpp"
#include "layers.hpp"

using namespace resnet18;
using namespace resnet18::testing;

namespace {

// Direct convolution from the definition (cross-correlation, zero padding), NHWC, OHWI.
std::vector<double> naive_conv(const std::vector<double>& w, const std::vector<double>& x, Shape in, int cout, int k,
                               int s, int p) {
  const int ho = (in.h + 2 * p - k) / s + 1, wo = (in.w + 2 * p - k) / s + 1;
  std::vector<double> y(std::size_t(in.n) * ho * wo * cout, 0.0);
  for (int n = 0; n < in.n; ++n)
    for (int oy = 0; oy < ho; ++oy)
      for (int ox = 0; ox < wo; ++ox)
        for (int o = 0; o < cout; ++o) {
          double acc = 0;
          for (int ky = 0; ky < k; ++ky)
            for (int kx = 0; kx < k; ++kx)
              for (int c = 0; c < in.c; ++c) {
                const int iy = oy * s - p + ky, ix = ox * s - p + kx;
                if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                acc += w[((std::size_t(o) * k + ky) * k + kx) * in.c + c] *
                       x[((std::size_t(n) * in.h + iy) * in.w + ix) * in.c + c];
              }
          y[((std::size_t(n) * ho + oy) * wo + ox) * cout + o] = acc;
        }
  return y;
}

struct ConvCase {
  Shape in;
  int cout, k, s, p;
};

void check_conv(const ConvCase& cc) {
  CAPTURE(cc.in.h);
  CAPTURE(cc.in.w);
  CAPTURE(cc.k);
  CAPTURE(cc.s);
  CAPTURE(cc.p);
  Conv2d<double> conv(cc.in.c, cc.cout, cc.k, cc.s, cc.p);
  const Shape out = conv.output_shape(cc.in);
  auto x = random_vector(cc.in.size(), 1);
  auto w = random_vector(conv.weight_size(), 2, 0.3);
  const auto r = random_vector(out.size(), 3);
  std::vector<double> ws(conv.workspace_size(cc.in, omp_get_max_threads()) + 1);
  std::vector<double> y(out.size());

  conv.forward(w.data(), x.data(), cc.in, y.data(), ws.data());
  CHECK(relative_error(y, naive_conv(w, x, cc.in, cc.cout, cc.k, cc.s, cc.p)) < 1e-14);

  std::vector<double> dw(w.size()), dx(x.size());
  conv.backward(w.data(), x.data(), cc.in, r.data(), dw.data(), dx.data(), false, ws.data());
  auto f = [&] {
    conv.forward(w.data(), x.data(), cc.in, y.data(), ws.data());
    return dot(r, y.data());
  };
  const auto ndx = numeric_gradient(f, x.data(), x.size());
  const auto ndw = numeric_gradient(f, w.data(), w.size());
  CHECK(relative_error(dx, ndx) < kGradTolerance);
  CHECK(max_deviation(dx, ndx) < kGradTolerance);
  CHECK(relative_error(dw, ndw) < kGradTolerance);
  CHECK(max_deviation(dw, ndw) < kGradTolerance);

  // accumulate_dx adds to what is there; a null dx still yields the weight gradient.
  std::vector<double> acc(x.size(), 1.5), dw2(w.size());
  conv.backward(w.data(), x.data(), cc.in, r.data(), dw2.data(), acc.data(), true, ws.data());
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(acc[i] == doctest::Approx(1.5 + dx[i]).epsilon(1e-12));
  conv.backward(w.data(), x.data(), cc.in, r.data(), dw2.data(), nullptr, false, ws.data());
  CHECK(relative_error(dw2, dw) < 1e-14);
}

}  // namespace

TEST_CASE("conv2d: forward matches the definition, gradients match finite differences") {
  SUBCASE("3x3 stride 1 pad 1") { check_conv({{2, 5, 6, 3}, 4, 3, 1, 1}); }
  SUBCASE("3x3 stride 2 pad 1, odd sizes") { check_conv({{2, 7, 5, 3}, 4, 3, 2, 1}); }
  SUBCASE("1x1 stride 2 (projection shortcut)") { check_conv({{2, 6, 5, 4}, 3, 1, 2, 0}); }
  SUBCASE("7x7 stride 2 pad 3 (ImageNet stem)") { check_conv({{2, 9, 8, 2}, 3, 7, 2, 3}); }
  SUBCASE("1x1 stride 1 (pointwise GEMM path)") { check_conv({{2, 3, 4, 5}, 3, 1, 1, 0}); }
  SUBCASE("3x3 stride 1 pad 0") { check_conv({{1, 5, 5, 2}, 2, 3, 1, 0}); }
}

TEST_CASE("conv2d: the threaded, chunked path gives the single-threaded result") {
  const std::size_t saved_chunk = conv_chunk_elements();
  const int saved_threads = omp_get_max_threads();
  const Shape in{5, 16, 16, 32};
  Conv2d<double> conv(32, 8, 3, 1, 1);
  const Shape out = conv.output_shape(in);
  auto x = random_vector(in.size(), 4);
  auto w = random_vector(conv.weight_size(), 5, 0.1);
  const auto dy = random_vector(out.size(), 6);
  auto run = [&](int threads, std::size_t chunk) {
    omp_set_num_threads(threads);
    set_conv_chunk_elements(chunk);
    std::vector<double> ws(conv.workspace_size(in, threads));
    std::vector<double> y(out.size()), dw(w.size()), dx(x.size());
    conv.forward(w.data(), x.data(), in, y.data(), ws.data());
    conv.backward(w.data(), x.data(), in, dy.data(), dw.data(), dx.data(), false, ws.data());
    y.insert(y.end(), dw.begin(), dw.end());
    y.insert(y.end(), dx.begin(), dx.end());
    return y;
  };
  const auto ref = run(1, std::size_t(1) << 24);
  CHECK(relative_error(std::vector<double>(ref.begin(), ref.begin() + std::ptrdiff_t(out.size())),
                       naive_conv(w, x, in, 8, 3, 1, 1)) < 1e-14);
  for (int threads : {2, 3}) {
    for (std::size_t chunk : {std::size_t(1), std::size_t(3 * 256 * 288), std::size_t(1) << 24}) {
      CAPTURE(threads);
      CAPTURE(chunk);
      CHECK(relative_error(run(threads, chunk), ref) < 1e-14);
    }
  }
  set_conv_chunk_elements(saved_chunk);
  omp_set_num_threads(saved_threads);
}

TEST_CASE("relu and add: gradients") {
  const std::size_t n = 40;
  auto x = random_vector(n, 7);
  for (double& v : x) v += v > 0 ? 0.1 : -0.1;  // keep away from the kink
  const auto r = random_vector(n, 8);
  std::vector<double> y(n), dx(n);
  relu_forward(x.data(), n, y.data());
  for (std::size_t i = 0; i < n; ++i) CHECK(y[i] == std::max(x[i], 0.0));
  relu_backward(y.data(), r.data(), n, dx.data());
  auto f = [&] {
    relu_forward(x.data(), n, y.data());
    return dot(r, y.data());
  };
  CHECK(relative_error(dx, numeric_gradient(f, x.data(), n)) < kGradTolerance);
  double zero = 0, out = 0, g = 1, dz = 5;
  relu_forward(&zero, 1, &out);
  relu_backward(&out, &g, 1, &dz);
  CHECK(dz == 0.0);  // PyTorch: no gradient at exactly 0

  auto a = random_vector(n, 9), b = random_vector(n, 10);
  std::vector<double> da(n, 2.0), db(n, 0.0);
  add_backward(r.data(), n, da.data(), db.data(), true);
  auto fa = [&] {
    add_forward(a.data(), b.data(), n, y.data());
    return dot(r, y.data());
  };
  const auto nda = numeric_gradient(fa, a.data(), n);
  const auto ndb = numeric_gradient(fa, b.data(), n);
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(da[i] - 2.0 == doctest::Approx(nda[i]).epsilon(1e-8));
    CHECK(db[i] == doctest::Approx(ndb[i]).epsilon(1e-8));
  }
}

TEST_CASE("global average pool: values and gradient") {
  const Shape in{3, 3, 2, 4};
  auto x = random_vector(in.size(), 11);
  const auto r = random_vector(std::size_t(in.n) * in.c, 12);
  std::vector<double> y(std::size_t(in.n) * in.c), dx(in.size());
  global_avg_pool_forward(x.data(), in, y.data());
  double m = 0;
  for (int p = 0; p < 6; ++p) m += x[std::size_t(p) * 4 + 2 + 4 * 6];  // image 1, channel 2
  CHECK(y[4 + 2] == doctest::Approx(m / 6));
  global_avg_pool_backward(r.data(), in, dx.data());
  auto f = [&] {
    global_avg_pool_forward(x.data(), in, y.data());
    return dot(r, y.data());
  };
  CHECK(relative_error(dx, numeric_gradient(f, x.data(), x.size())) < kGradTolerance);
}

TEST_CASE("max pool 3x3 stride 2 pad 1: padding never wins, gradient") {
  MaxPool2d<double> pool(3, 2, 1);
  const Shape in{2, 7, 6, 3};
  const Shape out = pool.output_shape(in);
  CHECK(out == Shape{2, 4, 3, 3});
  CHECK(pool.output_shape({1, 112, 112, 64}) == Shape{1, 56, 56, 64});
  // Distinct values spaced far wider than the finite-difference step: no ties, no kinks.
  std::vector<double> x(in.size());
  {
    Rng rng(13);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = -5.0 + 0.01 * double(i);
    rng.shuffle(x.data(), x.size());
  }
  std::vector<double> y(out.size());
  std::vector<std::int32_t> arg(out.size());
  pool.forward(x.data(), in, y.data(), arg.data());
  // Reference: max over the in-bounds cells of each window.
  for (int n = 0; n < in.n; ++n)
    for (int oy = 0; oy < out.h; ++oy)
      for (int ox = 0; ox < out.w; ++ox)
        for (int c = 0; c < in.c; ++c) {
          double best = -std::numeric_limits<double>::infinity();
          for (int iy = std::max(0, 2 * oy - 1); iy <= std::min(in.h - 1, 2 * oy + 1); ++iy)
            for (int ix = std::max(0, 2 * ox - 1); ix <= std::min(in.w - 1, 2 * ox + 1); ++ix)
              best = std::max(best, x[((std::size_t(n) * in.h + iy) * in.w + ix) * in.c + c]);
          REQUIRE(y[((std::size_t(n) * out.h + oy) * out.w + ox) * in.c + c] == best);
        }
  const auto r = random_vector(out.size(), 14);
  std::vector<double> dx(in.size(), 3.0);  // backward overwrites
  pool.backward(r.data(), in, arg.data(), dx.data());
  auto f = [&] {
    pool.forward(x.data(), in, y.data(), arg.data());
    return dot(r, y.data());
  };
  const auto ndx = numeric_gradient(f, x.data(), x.size());
  CHECK(relative_error(dx, ndx) < kGradTolerance);
  CHECK(max_deviation(dx, ndx) < kGradTolerance);
}

TEST_CASE("linear: gradients of input, weight and bias") {
  const int in = 5, out = 3, batch = 4;
  auto w = random_vector(std::size_t(in) * out, 15);
  auto b = random_vector(std::size_t(out), 16);
  auto x = random_vector(std::size_t(in) * batch, 17);
  const auto r = random_vector(std::size_t(out) * batch, 18);
  std::vector<double> y(std::size_t(out) * batch), dw(w.size()), db(b.size()), dx(x.size());
  linear_forward(w.data(), b.data(), x.data(), in, out, batch, y.data());
  // Sample 2, output 1: W row 1 . x column 2 + b[1]; W is row-major out x in.
  double ref = b[1];
  for (int i = 0; i < in; ++i) ref += w[std::size_t(1) * in + i] * x[std::size_t(2) * in + i];
  CHECK(y[std::size_t(2) * out + 1] == doctest::Approx(ref));
  linear_backward(w.data(), x.data(), r.data(), in, out, batch, dw.data(), db.data(), dx.data());
  auto f = [&] {
    linear_forward(w.data(), b.data(), x.data(), in, out, batch, y.data());
    return dot(r, y.data());
  };
  CHECK(relative_error(dx, numeric_gradient(f, x.data(), x.size())) < kGradTolerance);
  CHECK(relative_error(dw, numeric_gradient(f, w.data(), w.size())) < kGradTolerance);
  CHECK(relative_error(db, numeric_gradient(f, b.data(), b.size())) < kGradTolerance);
}

TEST_CASE("softmax cross-entropy: value, accuracy and gradient") {
  const int classes = 4, batch = 3;
  std::vector<double> z(std::size_t(classes) * batch, 0.0);
  const std::int32_t labels[] = {2, 0, 3};
  LossResult r = softmax_cross_entropy<double>(z.data(), labels, classes, batch, nullptr);
  CHECK(r.loss == doctest::Approx(std::log(4.0)));
  z = random_vector(z.size(), 19, 2.0);
  z[2] = 10;                  // sample 0 predicts its label 2
  z[std::size_t(4) + 1] = 9;  // sample 1 predicts 1, label 0
  z[std::size_t(8) + 3] = 8;  // sample 2 predicts its label 3
  std::vector<double> dz(z.size());
  r = softmax_cross_entropy<double>(z.data(), labels, classes, batch, dz.data());
  CHECK(r.correct == 2);
  double ref = 0;
  for (int n = 0; n < batch; ++n) {
    double s = 0;
    for (int k = 0; k < classes; ++k) s += std::exp(z[std::size_t(n) * classes + k]);
    ref += std::log(s) - z[std::size_t(n) * classes + labels[n]];
  }
  CHECK(r.loss == doctest::Approx(ref / batch).epsilon(1e-12));
  auto f = [&] { return softmax_cross_entropy<double>(z.data(), labels, classes, batch, nullptr).loss; };
  CHECK(relative_error(dz, numeric_gradient(f, z.data(), z.size())) < kGradTolerance);
  const std::int32_t bad[] = {0, 4, 1};
  CHECK_THROWS_AS(softmax_cross_entropy<double>(z.data(), bad, classes, batch, nullptr), std::out_of_range);
}

TEST_CASE("float instantiation agrees with double") {
  const Shape in{2, 6, 6, 4};
  Conv2d<float> cf(4, 5, 3, 2, 1);
  Conv2d<double> cd(4, 5, 3, 2, 1);
  const auto x = random_vector(in.size(), 20);
  const auto w = random_vector(cd.weight_size(), 21, 0.3);
  std::vector<float> xf(x.begin(), x.end()), wf(w.begin(), w.end()), yf(cf.output_shape(in).size());
  std::vector<float> wsf(cf.workspace_size(in, omp_get_max_threads()) + 1);
  std::vector<double> ws(cd.workspace_size(in, omp_get_max_threads()) + 1), y(yf.size());
  cf.forward(wf.data(), xf.data(), in, yf.data(), wsf.data());
  cd.forward(w.data(), x.data(), in, y.data(), ws.data());
  CHECK(relative_error(std::vector<double>(yf.begin(), yf.end()), y) < 1e-6);
}
