// Adadelta (Zeiler 2012), as torch.optim.Adadelta.
//
//   g <- -g (maximize)
//   g <- g + lambda theta
//   v <- rho v + (1 - rho) g^2
//   delta <- sqrt(u + eps) / sqrt(v + eps) * g
//   u <- rho u + (1 - rho) delta^2
//   theta <- theta - lr delta
//
// Zeiler, "ADADELTA: An Adaptive Learning Rate Method" (arXiv:1212.5701),
// Algorithm 1, with PyTorch's lr factor on the step. No first moment: Lookahead's
// momentum policies have nothing to act on.
#pragma once

#include <array>
#include <cmath>

#include "nestla/backend/host.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct AdadeltaOptions {
  double lr = 1.0;
  double rho = 0.9;
  double eps = 1e-6;
  double weight_decay = 0;
  bool maximize = false;
};

namespace detail {

// States: 0 square_avg (v), 1 acc_delta (u).
template <class T>
struct adadelta_update {
  T rho, one_minus_rho, eps, wd, neg_lr;

  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    if (wd != T(0)) g = g + V(wd) * p;
    V& v = s[0];
    V& u = s[1];
    v = v * V(rho) + V(one_minus_rho) * g * g;
    const V std = ops::sqrt(v + V(eps));
    const V delta = ops::sqrt(u + V(eps)) / std * g;
    u = u * V(rho) + V(one_minus_rho) * delta * delta;
    p = p + V(neg_lr) * delta;
  }
};

}  // namespace detail

struct adadelta_rule {
  using options = AdadeltaOptions;
  static constexpr const char* name = "Adadelta";
  static constexpr std::array<const char*, 2> states{"square_avg", "acc_delta"};
  static constexpr int first_moment = -1;

  static void validate(const options& o, const option_check& check) {
    check(o.lr >= 0 && std::isfinite(o.lr), "lr", o.lr, "must be finite and >= 0");
    check(o.rho >= 0 && o.rho <= 1, "rho", o.rho, "must be in [0, 1]");
    check(o.eps >= 0 && std::isfinite(o.eps), "eps", o.eps, "must be finite and >= 0");
    check(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "weight_decay", o.weight_decay,
          "must be finite and >= 0");
  }
  static void fields(auto& o, auto&& f) {
    f("lr", o.lr);
    f("rho", o.rho);
    f("eps", o.eps);
    f("weight_decay", o.weight_decay);
    f("maximize", o.maximize);
  }

  template <class T>
  using update = detail::adadelta_update<T>;

  template <class T>
  static update<T> prepare(const options& o, const step_context& c) {
    return {T(o.rho), T(1 - o.rho), T(o.eps), T(c.weight_decay), T(-c.lr)};
  }
};

template <class T = float, class Backend = host>
using Adadelta = BaseOptimizer<adadelta_rule, T, Backend>;

}  // namespace nestla
