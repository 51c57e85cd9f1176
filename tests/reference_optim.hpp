// Plain reference loops of RAdam, NAdam, Adamax and Lion (one loop per step, element by element), for bit-exact comparison.
//
// Each is a base step for ref::nested (reference.hpp): s.m is the first
// moment the Lookahead policies act on, s.v the second state (Adamax: the
// infinity norm u). Hyperparameters are cast to T as nestla casts them.
#pragma once

#include <nestla/nestla.hpp>

#include <cmath>
#include <vector>

#include "reference.hpp"

namespace ref {

// torch's lerp(a, b, w): a + w (b - a) for |w| < 0.5, else b + (w - 1)(b - a).
template <class T>
T lerp(T a, T b, double weight) {
  const T w(weight);
  return std::abs(w) < T(0.5) ? a + w * (b - a) : b + T(w - T(1)) * (b - a);
}

template <class T>
void start(base_state<T>& s, std::size_t n) {
  if (s.m.empty()) s.m.assign(n, T(0)), s.v.assign(n, T(0));
  ++s.t;
}

// The gradient after maximize and coupled weight decay; decoupled decay applied to p.
template <class T>
T decayed(T& p, T g, double lr, double wd, bool decoupled, bool maximize) {
  if (maximize) g = -g;
  if (wd != 0) {
    if (decoupled) p = p * T(1 - lr * wd);
    else g = g + T(wd) * p;
  }
  return g;
}

template <class T>
void radam_step(const nestla::RAdamOptions& o, base_state<T>& s, std::vector<T>& p, const std::vector<T>& g) {
  start(s, p.size());
  const double t = static_cast<double>(s.t);
  const double bc1 = 1 - std::pow(o.beta1, t), bc2 = 1 - std::pow(o.beta2, t);
  const double rho_inf = 2 / (1 - o.beta2) - 1;
  const double rho_t = rho_inf - 2 * t * std::pow(o.beta2, t) / bc2;
  const bool rectified = rho_t > 5;
  const T r(std::pow((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.5));
  for (std::size_t i = 0; i < p.size(); ++i) {
    const T d = decayed(p[i], g[i], o.lr, o.weight_decay, o.decoupled_weight_decay, o.maximize);
    s.m[i] = lerp(s.m[i], d, 1 - o.beta1);
    s.v[i] = s.v[i] * T(o.beta2) + T(1 - o.beta2) * d * d;
    const T step = (s.m[i] / T(bc1)) * T(o.lr);
    if (rectified) p[i] = p[i] - (step * ((T(1) / (std::sqrt(s.v[i]) + T(o.eps))) * T(std::pow(bc2, 0.5)))) * r;
    else p[i] = p[i] - step;
  }
}

// NAdam's running product of momentum coefficients lives with the caller.
template <class T>
void nadam_step(const nestla::NAdamOptions& o, double& mu_product, base_state<T>& s, std::vector<T>& p,
                const std::vector<T>& g) {
  start(s, p.size());
  const double t = static_cast<double>(s.t);
  const double mu = o.beta1 * (1.0 - 0.5 * std::pow(0.96, t * o.momentum_decay));
  const double mu_next = o.beta1 * (1.0 - 0.5 * std::pow(0.96, (t + 1) * o.momentum_decay));
  mu_product *= mu;
  const T c_g(-o.lr * (1.0 - mu) / (1.0 - mu_product)), c_m((-o.lr * mu_next) / (1.0 - mu_product * mu_next));
  const T bc2(1 - std::pow(o.beta2, t));
  for (std::size_t i = 0; i < p.size(); ++i) {
    const T d = decayed(p[i], g[i], o.lr, o.weight_decay, o.decoupled_weight_decay, o.maximize);
    s.m[i] = lerp(s.m[i], d, 1 - o.beta1);
    s.v[i] = s.v[i] * T(o.beta2) + T(1 - o.beta2) * d * d;
    const T denom = std::sqrt(s.v[i] / bc2) + T(o.eps);
    p[i] = p[i] + (c_g * d) / denom;
    p[i] = p[i] + (c_m * s.m[i]) / denom;
  }
}

template <class T>
void adamax_step(const nestla::AdamaxOptions& o, base_state<T>& s, std::vector<T>& p, const std::vector<T>& g) {
  start(s, p.size());
  const T step(-(o.lr / (1 - std::pow(o.beta1, static_cast<double>(s.t)))));
  for (std::size_t i = 0; i < p.size(); ++i) {
    const T d = decayed(p[i], g[i], o.lr, o.weight_decay, false, o.maximize);
    s.m[i] = lerp(s.m[i], d, 1 - o.beta1);
    const T a = s.v[i] * T(o.beta2), b = std::abs(d) + T(o.eps);
    s.v[i] = a > b ? a : b;
    p[i] = p[i] + (step * s.m[i]) / s.v[i];
  }
}

template <class T>
void lion_step(const nestla::LionOptions& o, base_state<T>& s, std::vector<T>& p, const std::vector<T>& g) {
  start(s, p.size());
  for (std::size_t i = 0; i < p.size(); ++i) {
    const T c = s.m[i] * T(o.beta1) + T(1 - o.beta1) * g[i];
    T u = c > T(0) ? T(1) : c < T(0) ? T(-1) : c;
    if (o.weight_decay != 0) u = u + T(o.weight_decay) * p[i];
    p[i] = p[i] + T(-o.lr) * u;
    s.m[i] = s.m[i] * T(o.beta2) + T(1 - o.beta2) * g[i];
  }
}

}  // namespace ref
