// Finite-difference gradient checks and random fills shared by the model tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "rng.hpp"

namespace resnet18::testing {

inline std::vector<double> random_vector(std::size_t n, std::uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<double> v(n);
  for (double& x : v) x = scale * rng.normal();
  return v;
}

// Central differences of f() with respect to every element of x (perturbed in place and
// restored). With double and h = 1e-6 the truncation error is O(h^2) ~ 1e-12 relative, the
// rounding error ~ 1e-16 |f| / h ~ 1e-10 |f|: far below the gap between a right and a
// wrong gradient.
template <class F>
std::vector<double> numeric_gradient(F&& f, double* x, std::size_t n, double h = 1e-6) {
  std::vector<double> g(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double fp = f();
    x[i] = saved - h;
    const double fm = f();
    x[i] = saved;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

// ||a - b|| / (||a|| + ||b||): 0 for equal vectors, about 1 for unrelated ones. A gradient
// with even one wrong entry among a few dozen scores far above 1e-6.
inline double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, na = 0, nb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d += (a[i] - b[i]) * (a[i] - b[i]);
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  const double denom = std::sqrt(na) + std::sqrt(nb);
  return denom == 0 ? 0 : std::sqrt(d) / denom;
}

// The largest entry-wise deviation relative to the largest entry: catches a single
// wrong element that the norm-wise error dilutes in a large tensor.
inline double max_deviation(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, std::abs(a[i] - b[i]));
    m = std::max({m, std::abs(a[i]), std::abs(b[i])});
  }
  return m == 0 ? 0 : d / m;
}

inline double dot(const std::vector<double>& a, const double* b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

constexpr double kGradTolerance = 1e-7;

}  // namespace resnet18::testing
