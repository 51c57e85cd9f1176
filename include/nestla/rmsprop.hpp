// RMSprop (Tieleman & Hinton 2012; centered: Graves 2013), with momentum, as torch.optim.RMSprop.
//
//   g <- -g (maximize)
//   g <- g + lambda theta
//   v <- alpha v + (1 - alpha) g^2
//   centered:  gbar <- gbar + (1 - alpha) (g - gbar);   d <- sqrt(v - gbar^2) + eps
//   otherwise: d <- sqrt(v) + eps
//   momentum > 0: b <- mu b + g / d;  theta <- theta - lr b
//   otherwise:    theta <- theta - lr g / d
//
// Tieleman & Hinton, "Lecture 6.5: rmsprop", Neural Networks for Machine
// Learning (Coursera, 2012); Graves, "Generating Sequences With Recurrent
// Neural Networks" (arXiv:1308.0850, 2013), eq. 38-41. The first moment the
// momentum policies act on is the momentum buffer b (none without momentum).
#pragma once

#include <array>
#include <cmath>
#include <variant>

#include "nestla/backend/host.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct RMSpropOptions {
  double lr = 1e-2;
  double alpha = 0.99;
  double eps = 1e-8;
  double weight_decay = 0;
  double momentum = 0;
  bool centered = false;
  bool maximize = false;
};

namespace detail {

// States: 0 square_avg, 1 momentum_buffer, 2 grad_avg.
template <class T, bool Momentum, bool Centered>
struct rmsprop_update {
  static constexpr unsigned uses = 1u | (Momentum ? 2u : 0u) | (Centered ? 4u : 0u);
  T alpha, one_minus_alpha, eps, wd, mu, neg_lr;
  T w, one_minus_w;   // torch's lerp of grad_avg towards g by w = 1 - alpha
  bool w_small = true;  // |w| < 0.5: lerp's form a + w (b - a), else b - (b - a) (1 - w)

  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    if (wd != T(0)) g = g + V(wd) * p;
    V& v = s[0];
    v = v * V(alpha) + V(one_minus_alpha) * g * g;
    V d;
    if constexpr (Centered) {
      V& gbar = s[2];
      if (w_small) gbar = gbar + V(w) * (g - gbar);
      else gbar = g - (g - gbar) * V(one_minus_w);
      d = ops::sqrt(v - gbar * gbar);
    } else {
      d = ops::sqrt(v);
    }
    d = d + V(eps);
    if constexpr (Momentum) {
      V& b = s[1];
      b = b * V(mu) + g / d;
      p = p + V(neg_lr) * b;
    } else {
      p = p + (V(neg_lr) * g) / d;
    }
  }
};

}  // namespace detail

struct rmsprop_rule {
  using options = RMSpropOptions;
  static constexpr const char* name = "RMSprop";
  static constexpr std::array<const char*, 3> states{"square_avg", "momentum_buffer", "grad_avg"};
  static constexpr int first_moment = 1;

  static void validate(const options& o, const option_check& check) {
    check(o.lr >= 0 && std::isfinite(o.lr), "lr", o.lr, "must be finite and >= 0");
    check(o.alpha >= 0 && o.alpha <= 1, "alpha", o.alpha, "must be in [0, 1]");
    check(o.eps >= 0 && std::isfinite(o.eps), "eps", o.eps, "must be finite and >= 0");
    check(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "weight_decay", o.weight_decay,
          "must be finite and >= 0");
    check(o.momentum >= 0 && std::isfinite(o.momentum), "momentum", o.momentum, "must be finite and >= 0");
  }
  static void fields(auto& o, auto&& f) {
    f("lr", o.lr);
    f("alpha", o.alpha);
    f("eps", o.eps);
    f("weight_decay", o.weight_decay);
    f("momentum", o.momentum);
    f("centered", o.centered);
    f("maximize", o.maximize);
  }

  template <class T>
  using update = std::variant<detail::rmsprop_update<T, false, false>, detail::rmsprop_update<T, true, false>,
                              detail::rmsprop_update<T, false, true>, detail::rmsprop_update<T, true, true>>;

  // A buffer switched on later (momentum, centered) starts at zero, as torch's
  // state does when it is created.
  template <class T>
  static update<T> prepare(const options& o, const step_context& c) {
    // torch rounds lerp's weight to the tensor's type first and computes 1 - w in it.
    const T w(1 - o.alpha);
    const bool small = (w < T(0) ? -w : w) < T(0.5);
    auto make = [&](auto op) {
      op.alpha = T(o.alpha);
      op.one_minus_alpha = T(1 - o.alpha);
      op.eps = T(o.eps);
      op.wd = T(c.weight_decay);
      op.mu = T(o.momentum);
      op.neg_lr = T(-c.lr);
      op.w = w;
      op.one_minus_w = T(1) - w;
      op.w_small = small;
      return update<T>(op);
    };
    const bool m = o.momentum > 0;
    if (o.centered) return m ? make(detail::rmsprop_update<T, true, true>{}) : make(detail::rmsprop_update<T, false, true>{});
    return m ? make(detail::rmsprop_update<T, true, false>{}) : make(detail::rmsprop_update<T, false, false>{});
  }
};

template <class T = float, class Backend = host>
using RMSprop = BaseOptimizer<rmsprop_rule, T, Backend>;

}  // namespace nestla
