// The oneDNN convolution path against the Eigen reference, layer by layer and for the whole model (float).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <omp.h>

#include "conv_onednn.hpp"
#include "gradcheck.hpp"
#include "resnet.hpp"

using namespace resnet18;
using namespace resnet18::testing;

namespace {

std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }

double rel(const std::vector<float>& a, const std::vector<float>& b) {
  return relative_error(std::vector<double>(a.begin(), a.end()), std::vector<double>(b.begin(), b.end()));
}

struct Geometry {
  Shape in;
  int cout, k, s, p;
};

void compare(const Geometry& g) {
  CAPTURE(g.in.n);
  CAPTURE(g.in.c);
  CAPTURE(g.k);
  CAPTURE(g.s);
  Conv2d<float> ref(g.in.c, g.cout, g.k, g.s, g.p);
  OneDnnConv fast(g.in.c, g.cout, g.k, g.s, g.p);
  const Shape out = ref.output_shape(g.in);
  REQUIRE(fast.output_shape(g.in) == out);
  const auto x = to_float(random_vector(g.in.size(), 80));
  const auto w = to_float(random_vector(ref.weight_size(), 81, 0.2));
  const auto dy = to_float(random_vector(out.size(), 82));
  Buffer<float> ws_ref(ref.workspace_size(g.in, omp_get_max_threads()) + 16), ws(fast.workspace_size(g.in));
  std::vector<float> y_ref(out.size()), y(out.size()), dw_ref(w.size()), dw(w.size()), dx_ref(x.size()), dx(x.size());
  ref.forward(w.data(), x.data(), g.in, y_ref.data(), ws_ref.data());
  fast.forward(w.data(), x.data(), g.in, y.data(), ws.data());
  CHECK(rel(y, y_ref) < 1e-5);
  ref.backward(w.data(), x.data(), g.in, dy.data(), dw_ref.data(), dx_ref.data(), false, ws_ref.data());
  fast.backward(w.data(), x.data(), g.in, dy.data(), dw.data(), dx.data(), false, ws.data());
  CHECK(rel(dw, dw_ref) < 1e-5);
  CHECK(rel(dx, dx_ref) < 1e-5);
  // Accumulation into an existing gradient, and no input gradient at all.
  std::vector<float> acc(x.size(), 0.25f), acc_ref(x.size(), 0.25f), dw2(w.size());
  ref.backward(w.data(), x.data(), g.in, dy.data(), dw_ref.data(), acc_ref.data(), true, ws_ref.data());
  fast.backward(w.data(), x.data(), g.in, dy.data(), dw2.data(), acc.data(), true, ws.data());
  CHECK(rel(acc, acc_ref) < 1e-5);
  fast.backward(w.data(), x.data(), g.in, dy.data(), dw2.data(), nullptr, false, ws.data());
  CHECK(rel(dw2, dw_ref) < 1e-5);
}

}  // namespace

TEST_CASE("oneDNN convolution equals the Eigen reference") {
  if (!onednn_available()) {
    MESSAGE("built without oneDNN: skipped");
    return;
  }
  compare({{4, 8, 8, 16}, 16, 3, 1, 1});
  compare({{3, 9, 9, 16}, 32, 3, 2, 1});   // odd size, stride 2
  compare({{3, 8, 8, 16}, 32, 1, 2, 0});   // projection shortcut
  compare({{2, 16, 16, 3}, 16, 7, 2, 3});  // ImageNet stem
  compare({{2, 8, 8, 3}, 16, 3, 1, 1});    // CIFAR stem, 3 input channels
  compare({{5, 8, 8, 16}, 16, 3, 1, 1});   // a second batch size for the same geometry
}

TEST_CASE("oneDNN and Eigen backends train the same model") {
  if (!onednn_available()) {
    MESSAGE("built without oneDNN: skipped");
    return;
  }
  ModelConfig c;
  c.width = 8;
  c.image_size = 16;
  c.conv_backend = ConvBackend::eigen;
  ResNet18<float> ref(c);
  c.conv_backend = ConvBackend::onednn;
  ResNet18<float> fast(c);
  CHECK(std::string(ref.conv_backend_name()) == "eigen");
  CHECK(std::string(fast.conv_backend_name()) == "onednn");
  const auto d = random_vector(4 * 3 * 256, 83);
  const std::vector<float> images(d.begin(), d.end());
  const std::vector<std::int32_t> labels = {1, 5, 9, 2};
  // Training amplifies float rounding chaotically, so both models take the same update
  // (the reference's) and each step's gradients are compared from identical weights.
  for (int step = 0; step < 3; ++step) {
    CAPTURE(step);
    const BatchResult a = ref.train_step(images.data(), labels.data(), 4);
    const BatchResult b = fast.train_step(images.data(), labels.data(), 4);
    CHECK(a.loss == doctest::Approx(b.loss).epsilon(1e-5));
    auto ga = ref.gradients(), gb = fast.gradients();
    for (std::size_t t = 0; t < ga.size(); ++t) {
      CAPTURE(ref.parameter_info()[t].name);
      CHECK((ga[t] - gb[t]).norm() <= 1e-4 * (ga[t].norm() + 1e-6f));
    }
    auto pa = ref.parameters(), pb = fast.parameters();
    for (std::size_t t = 0; t < pa.size(); ++t) {
      pa[t] -= 0.1f * ga[t];
      pb[t] = pa[t];
    }
  }
  const Eigen::MatrixXf la = ref.forward(images.data(), 4, false);
  const Eigen::MatrixXf lb = fast.forward(images.data(), 4, false);
  CHECK((la - lb).norm() <= 1e-4 * la.norm());

  c.conv_backend = ConvBackend::onednn;
  CHECK_THROWS_AS(ResNet18<double>{c}, std::invalid_argument);  // oneDNN path is float only
}

TEST_CASE("changing the thread count between steps is safe (plans and scratch follow it)") {
  ModelConfig c;
  c.width = 8;
  c.image_size = 16;
  ResNet18<float> model(c);  // oneDNN when built with it, else Eigen: both must cope
  const auto d = random_vector(4 * 3 * 256, 84);
  const std::vector<float> images(d.begin(), d.end());
  const std::vector<std::int32_t> labels = {0, 3, 6, 9};
  const int saved = omp_get_max_threads();
  std::vector<Eigen::VectorXf> grads;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    model.train_step(images.data(), labels.data(), 4);
    grads.emplace_back(model.flat_gradients());
  }
  omp_set_num_threads(saved);
  CHECK((grads[1] - grads[0]).norm() <= 1e-5 * grads[0].norm());
  CHECK((grads[2] - grads[0]).norm() <= 1e-5 * grads[0].norm());
}
