// SGD, Adam and AdamW against values computed by hand from their update rules.
#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <cmath>
#include <vector>

using doctest::Approx;

namespace {
Approx exact(double v) { return Approx(v).epsilon(1e-15); }
}  // namespace

TEST_CASE("SGD without momentum: theta <- theta - lr (g + lambda theta)") {
  std::vector<double> w{1.0, -2.0, 0.5};
  const std::vector<double> g{0.5, 0.25, -1.0};
  nestla::SGD<double> sgd({.lr = 0.1, .weight_decay = 0.01});
  CHECK(sgd.step(w, g));
  CHECK(w[0] == exact(1.0 - 0.1 * (0.5 + 0.01 * 1.0)));
  CHECK(w[1] == exact(-2.0 - 0.1 * (0.25 + 0.01 * -2.0)));
  CHECK(w[2] == exact(0.5 - 0.1 * (-1.0 + 0.01 * 0.5)));
  CHECK(sgd.step_count() == 1);
}

TEST_CASE("SGD momentum and dampening: b <- g first, then b <- mu b + (1 - tau) g") {
  std::vector<double> w{1.0};
  nestla::SGD<double> sgd({.lr = 0.1, .momentum = 0.9, .dampening = 0.3});
  sgd.step(w, std::vector<double>{2.0});
  double b = 2.0, x = 1.0 - 0.1 * b;
  CHECK(w[0] == exact(x));
  sgd.step(w, std::vector<double>{-1.0});
  b = 0.9 * b + 0.7 * -1.0;
  x -= 0.1 * b;
  CHECK(w[0] == exact(x));
  sgd.step(w, std::vector<double>{0.5});
  b = 0.9 * b + 0.7 * 0.5;
  x -= 0.1 * b;
  CHECK(w[0] == exact(x));
}

TEST_CASE("SGD Nesterov: theta <- theta - lr (g + mu b)") {
  std::vector<double> w{0.0};
  nestla::SGD<double> sgd({.lr = 0.5, .momentum = 0.5, .nesterov = true});
  sgd.step(w, std::vector<double>{1.0});
  CHECK(w[0] == exact(-0.5 * (1.0 + 0.5 * 1.0)));
  sgd.step(w, std::vector<double>{1.0});
  const double b = 0.5 * 1.0 + 1.0;
  CHECK(w[0] == exact(-0.75 - 0.5 * (1.0 + 0.5 * b)));
}

TEST_CASE("Adam with a constant gradient moves lr * g / (|g| + eps) per step") {
  // With g constant, m_t / (1 - beta1^t) = g and v_t / (1 - beta2^t) = g^2.
  std::vector<double> w{1.0, 1.0};
  const std::vector<double> g{0.5, -2.0};
  const double eps = 1e-3;
  nestla::Adam<double> adam({.lr = 0.01, .eps = eps});
  for (int t = 1; t <= 20; ++t) {
    adam.step(w, g);
    CHECK(w[0] == Approx(1.0 - t * 0.01 * 0.5 / (0.5 + eps)).epsilon(1e-12));
    CHECK(w[1] == Approx(1.0 + t * 0.01 * 2.0 / (2.0 + eps)).epsilon(1e-12));
  }
}

TEST_CASE("Adam first two steps by hand, with weight decay") {
  const double lr = 0.1, b1 = 0.8, b2 = 0.9, eps = 1e-8, wd = 0.1;
  std::vector<double> w{2.0};
  nestla::Adam<double> adam({.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps, .weight_decay = wd});
  double x = 2.0, m = 0, v = 0;
  const double grads[] = {1.0, -3.0};
  for (int t = 1; t <= 2; ++t) {
    adam.step(w, std::vector<double>{grads[t - 1]});
    const double g = grads[t - 1] + wd * x;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    x -= lr / (1 - std::pow(b1, t)) * m / (std::sqrt(v) / std::sqrt(1 - std::pow(b2, t)) + eps);
    CHECK(w[0] == exact(x));
  }
}

TEST_CASE("AMSGrad keeps the largest second moment") {
  const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  std::vector<double> w{0.0};
  nestla::Adam<double> adam({.lr = lr, .amsgrad = true});
  adam.step(w, std::vector<double>{2.0});
  adam.step(w, std::vector<double>{0.0});
  const double m1 = (1 - b1) * 2.0, v1 = (1 - b2) * 4.0;
  const double x1 = -lr / (1 - b1) * m1 / (std::sqrt(v1) / std::sqrt(1 - b2) + eps);
  const double m2 = b1 * m1, v2 = b2 * v1;  // v2 < v1: the maximum stays v1
  CHECK(v2 < v1);
  const double x2 = x1 - lr / (1 - b1 * b1) * m2 / (std::sqrt(v1) / std::sqrt(1 - b2 * b2) + eps);
  CHECK(w[0] == exact(x2));
  // Plain Adam uses v2 instead.
  std::vector<double> u{0.0};
  nestla::Adam<double> plain({.lr = lr});
  plain.step(u, std::vector<double>{2.0});
  plain.step(u, std::vector<double>{0.0});
  CHECK(u[0] == exact(x1 - lr / (1 - b1 * b1) * m2 / (std::sqrt(v2) / std::sqrt(1 - b2 * b2) + eps)));
}

TEST_CASE("AdamW decays the weights before the Adam update") {
  const double lr = 0.1, wd = 0.5;
  std::vector<double> w{2.0};
  nestla::AdamW<double> adamw({.lr = lr, .eps = 0, .weight_decay = wd});
  adamw.step(w, std::vector<double>{3.0});
  CHECK(w[0] == exact(2.0 * (1 - lr * wd) - lr));
  CHECK(nestla::AdamWOptions{}.weight_decay == 1e-2);
  CHECK(nestla::AdamOptions{}.weight_decay == 0);
}

TEST_CASE("float and double follow the same rule") {
  std::vector<float> wf{1.0f, 2.0f};
  std::vector<double> wd{1.0, 2.0};
  nestla::Adam<float> af({.lr = 0.01});
  nestla::Adam<double> ad({.lr = 0.01});
  for (int i = 0; i < 10; ++i) {
    af.step(wf, std::vector<float>{0.3f, -0.1f});
    ad.step(wd, std::vector<double>{0.3, -0.1});
  }
  CHECK(wf[0] == Approx(wd[0]).epsilon(1e-6));
  CHECK(wf[1] == Approx(wd[1]).epsilon(1e-6));
}

TEST_CASE("parameter groups override lr and weight decay per tensor") {
  // Tensor 1 in a group with its own lr and no weight decay must move exactly
  // as a separate optimizer with those options would move it.
  std::vector<std::vector<double>> w{{1.0, 2.0}, {3.0}, {-1.0}};
  const std::vector<std::vector<double>> g{{0.1, 0.2}, {0.3}, {0.4}};
  nestla::Adam<double> adam({.lr = 0.01, .weight_decay = 0.1});
  CHECK(adam.add_param_group({1}, {.lr = 0.5, .weight_decay = 0.0}) == 0);
  adam.add_param_group({2}, {.weight_decay = 0.0});
  std::vector<double> a{1.0, 2.0}, b{3.0}, c{-1.0};
  nestla::Adam<double> ra({.lr = 0.01, .weight_decay = 0.1}), rb({.lr = 0.5}), rc({.lr = 0.01});
  for (int i = 0; i < 5; ++i) {
    adam.step(w, g);
    ra.step(a, g[0]);
    rb.step(b, g[1]);
    rc.step(c, g[2]);
  }
  CHECK(w[0] == a);
  CHECK(w[1] == b);
  CHECK(w[2] == c);
  // A schedule on the default lr leaves an explicit group lr alone.
  adam.set_lr(0.02);
  CHECK(adam.lr_of(0) == 0.02);
  CHECK(adam.lr_of(1) == 0.5);
  CHECK(adam.lr_of(2) == 0.02);
  CHECK(adam.weight_decay_of(2) == 0.0);
}
