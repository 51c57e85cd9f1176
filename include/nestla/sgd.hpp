// SGD with momentum, dampening, weight decay and Nesterov momentum, as torch.optim.SGD.
//
//   g <- -g (maximize)
//   g <- g + lambda theta
//   if mu != 0:  b <- g on the first step, else b <- mu b + (1 - tau) g
//                g <- g + mu b (nesterov) or g <- b
//   theta <- theta - lr g
#pragma once

#include <array>
#include <cmath>
#include <variant>

#include "nestla/backend/host.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
  bool maximize = false;
};

namespace detail {

// Mode: 0 no momentum, 1 first momentum step (b <- g), 2 momentum step.
template <class T, int Mode, bool Nesterov>
struct sgd_update {
  static constexpr unsigned uses = Mode == 0 ? 0u : 1u;
  T neg_lr, wd, mu, one_minus_tau;
  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    if (wd != T(0)) g = g + V(wd) * p;
    if constexpr (Mode != 0) {
      V& b = s[0];
      if constexpr (Mode == 1) b = g;
      else b = b * V(mu) + V(one_minus_tau) * g;
      if constexpr (Nesterov) g = g + V(mu) * b;
      else g = b;
    }
    p = p + V(neg_lr) * g;
  }
};

}  // namespace detail

struct sgd_rule {
  using options = SGDOptions;
  static constexpr const char* name = "SGD";
  static constexpr std::array<const char*, 1> states{"momentum_buffer"};
  static constexpr int first_moment = 0;

  static void validate(const options& o, const option_check& check) {
    check(o.lr >= 0 && std::isfinite(o.lr), "lr", o.lr, "must be finite and >= 0");
    check(o.momentum >= 0 && std::isfinite(o.momentum), "momentum", o.momentum, "must be finite and >= 0");
    check(std::isfinite(o.dampening), "dampening", o.dampening, "must be finite");
    check(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "weight_decay", o.weight_decay,
          "must be finite and >= 0");
    if (o.nesterov) {
      check(o.momentum > 0, "momentum", o.momentum, "nesterov needs momentum > 0");
      check(o.dampening == 0, "dampening", o.dampening, "nesterov needs dampening = 0");
    }
  }
  static void fields(auto& o, auto&& f) {
    f("lr", o.lr);
    f("momentum", o.momentum);
    f("dampening", o.dampening);
    f("weight_decay", o.weight_decay);
    f("nesterov", o.nesterov);
    f("maximize", o.maximize);
  }

  template <class T>
  using update = std::variant<detail::sgd_update<T, 0, false>, detail::sgd_update<T, 1, false>,
                              detail::sgd_update<T, 2, false>, detail::sgd_update<T, 1, true>,
                              detail::sgd_update<T, 2, true>>;

  // The momentum buffer starts as the gradient when it is new (torch: the
  // state has no 'momentum_buffer' yet), also when momentum is switched on later.
  template <class T>
  static update<T> prepare(const options& o, const step_context& c) {
    const T lr(-c.lr), wd(c.weight_decay), mu(o.momentum), damp(1 - o.dampening);
    if (o.momentum == 0) return detail::sgd_update<T, 0, false>{lr, wd, mu, damp};
    const bool first = c.is_fresh(0);
    if (o.nesterov) {
      if (first) return detail::sgd_update<T, 1, true>{lr, wd, mu, damp};
      return detail::sgd_update<T, 2, true>{lr, wd, mu, damp};
    }
    if (first) return detail::sgd_update<T, 1, false>{lr, wd, mu, damp};
    return detail::sgd_update<T, 2, false>{lr, wd, mu, damp};
  }
};

template <class T = float, class Backend = host>
using SGD = BaseOptimizer<sgd_rule, T, Backend>;

}  // namespace nestla
