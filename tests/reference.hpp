// Plain, unfused reference implementations of the semantics (one loop per rule), for bit-exact comparison.
#pragma once

#include <nestla/nestla.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace ref {

// Initial parameters in [-0.3, 0.67), deterministic.
template <class T>
std::vector<T> initial(std::size_t n) {
  std::vector<T> p(n);
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<T>(0.01 * static_cast<double>(i % 97) - 0.3);
  return p;
}

// Deterministic pseudo-random gradients that also depend on the parameters.
struct grad_source {
  std::uint64_t state = 0x9E3779B97F4A7C15ull;
  double next() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(state >> 11) / 9007199254740992.0 - 0.5;
  }
  template <class T>
  void fill(const std::vector<T>& p, std::vector<T>& g) {
    g.resize(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) g[i] = static_cast<T>(0.2 * static_cast<double>(p[i]) + next());
  }
};

template <class T>
struct base_state {
  std::vector<T> m, v;
  std::uint64_t t = 0;
  bool started = false;
};

// torch.optim.SGD / Adam, element by element, with nestla's casts of the
// hyperparameters to T.
template <class T>
void sgd_step(const nestla::SGDOptions& o, base_state<T>& s, std::vector<T>& p, const std::vector<T>& g) {
  if (s.m.empty()) s.m.assign(p.size(), T(0));
  for (std::size_t i = 0; i < p.size(); ++i) {
    T d = g[i];
    if (o.weight_decay != 0) d = d + T(o.weight_decay) * p[i];
    if (o.momentum != 0) {
      if (!s.started) s.m[i] = d;
      else s.m[i] = s.m[i] * T(o.momentum) + T(1 - o.dampening) * d;
      d = o.nesterov ? d + T(o.momentum) * s.m[i] : s.m[i];
    }
    p[i] = p[i] + T(-o.lr) * d;
  }
  if (o.momentum != 0) s.started = true;
  ++s.t;
}

template <class T>
void adam_step(const nestla::AdamOptions& o, base_state<T>& s, std::vector<T>& p, const std::vector<T>& g) {
  if (s.m.empty()) s.m.assign(p.size(), T(0)), s.v.assign(p.size(), T(0));
  ++s.t;
  const double t = static_cast<double>(s.t);
  const T neg_step = T(-(o.lr / (1 - std::pow(o.beta1, t))));
  const T bc2 = T(std::sqrt(1 - std::pow(o.beta2, t)));
  for (std::size_t i = 0; i < p.size(); ++i) {
    T d = g[i];
    if (o.weight_decay != 0) d = d + T(o.weight_decay) * p[i];
    s.m[i] = s.m[i] * T(o.beta1) + T(1 - o.beta1) * d;
    s.v[i] = s.v[i] * T(o.beta2) + T(1 - o.beta2) * d * d;
    p[i] = p[i] + (neg_step * s.m[i]) / (std::sqrt(s.v[i]) / bc2 + T(o.eps));
  }
}

// Lookahead levels applied one after the other, exactly as semantics.md reads.
template <class T>
struct level {
  nestla::LookaheadOptions o;
  std::vector<T> slow, slow_m;
  int cycles = 0;
  std::vector<T> u{};  // outer momentum, created by the first sync that uses it (torch.optim.SGD's buffer)
};

template <class T, class BaseStep>
struct nested {
  BaseStep base_step;
  base_state<T> base;
  std::vector<level<T>> levels;  // innermost first
  bool first = true;
  bool has_moment = true;

  // Returns whether the outermost level synced (or true for depth 0).
  bool step(std::vector<T>& p, const std::vector<T>& g) {
    if (first) {
      for (auto& L : levels) L.slow = p, L.slow_m.assign(p.size(), T(0));
      first = false;
    }
    base_step(base, p, g);
    bool cycle = true;
    for (std::size_t i = 0; i < levels.size() && cycle; ++i) {
      auto& L = levels[i];
      if (++L.cycles < L.o.k) {
        cycle = false;
        break;
      }
      L.cycles = 0;
      const T a = T(L.o.alpha);
      if (L.o.outer_momentum == 0) {
        for (std::size_t e = 0; e < p.size(); ++e) L.slow[e] = L.slow[e] + a * (p[e] - L.slow[e]);
      } else {
        // torch.optim.SGD(lr = alpha, momentum = mu, nesterov) on phi, gradient Delta = phi - theta.
        const T mu = T(L.o.outer_momentum);
        const bool first = L.u.empty();
        if (first) L.u.assign(p.size(), T(0));
        for (std::size_t e = 0; e < p.size(); ++e) {
          const T delta = L.slow[e] - p[e];
          L.u[e] = first ? delta : L.u[e] * mu + delta;
          const T d = L.o.outer_nesterov ? delta + mu * L.u[e] : L.u[e];
          L.slow[e] = L.slow[e] + T(-L.o.alpha) * d;
        }
      }
      for (std::size_t e = 0; e < p.size(); ++e) p[e] = L.slow[e];
      for (std::size_t l = 0; l < i; ++l) levels[l].slow = L.slow;
      if (!has_moment || L.o.momentum == nestla::Momentum::keep) continue;
      auto& m = base.m;
      if (L.o.momentum == nestla::Momentum::reset) {
        for (auto& x : m) x = T(0);
      } else {
        for (std::size_t e = 0; e < m.size(); ++e) {
          L.slow_m[e] = L.slow_m[e] + a * (m[e] - L.slow_m[e]);
          m[e] = L.slow_m[e];
        }
      }
      for (std::size_t l = 0; l < i; ++l)
        if (levels[l].o.momentum == nestla::Momentum::pullback) levels[l].slow_m = m;
    }
    return cycle;
  }
};

}  // namespace ref
