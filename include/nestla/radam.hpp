// RAdam (Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020), as torch.optim.RAdam.
//
//   g <- -g (maximize)
//   g <- g + lambda theta                 (default)  |  theta <- theta (1 - lr lambda)   (decoupled_weight_decay)
//   m <- m + (1 - beta1)(g - m)           (torch 2's lerp; = beta1 m + (1 - beta1) g)
//   v <- beta2 v + (1 - beta2) g^2
//   rho_inf = 2 / (1 - beta2) - 1,  rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
//   rho_t > 5:  r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
//               theta <- theta - lr r sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)
//   otherwise:  theta <- theta - lr / (1 - beta1^t) * m      (v is still updated)
//
// Element by element in the order of torch's single-tensor code (two
// divisions; the cost hides behind the memory traffic), so float64 results
// are torch's to the bit wherever torch's own sqrt is correctly rounded.
#pragma once

#include <array>
#include <cmath>
#include <variant>

#include "nestla/backend/host.hpp"
#include "nestla/detail/adam_options.hpp"
#include "nestla/detail/lerp.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct RAdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  bool decoupled_weight_decay = false;  // AdamW-style decay instead of L2 in the gradient
  bool maximize = false;
};

namespace detail {

// Rectified: the adaptive step; otherwise the bias-corrected momentum step
// (the variance estimate is not yet trusted, rho_t <= 5).
template <class T, bool Rectified>
struct radam_update {
  lerp_weight<T> m_weight;
  T beta2, one_minus_beta2, bias_correction1, lr, bc2_sqrt, rect, eps, weight_decay, decay;
  bool decoupled = false;

  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    if (weight_decay != T(0)) {
      if (decoupled) p = p * V(decay);
      else g = g + V(weight_decay) * p;
    }
    V& m = s[0];
    V& v = s[1];
    m = m_weight(m, g);
    v = v * V(beta2) + V(one_minus_beta2) * g * g;
    // torch's order: ((m / bc1) lr) (1 / (sqrt(v) + eps) sqrt(bc2)) r, its float / tensor being a reciprocal
    const V step = (m / V(bias_correction1)) * V(lr);
    if constexpr (Rectified) p = p - (step * (ops::reciprocal(ops::sqrt(v) + V(eps)) * V(bc2_sqrt))) * V(rect);
    else p = p - step;
  }
};

}  // namespace detail

struct radam_rule {
  using options = RAdamOptions;
  static constexpr const char* name = "RAdam";
  static constexpr std::array<const char*, 2> states{"exp_avg", "exp_avg_sq"};
  static constexpr int first_moment = 0;

  static void validate(const options& o, const option_check& check) {
    detail::check_adam_options(o, check);
  }
  static void fields(auto& o, auto&& f) {
    detail::adam_option_fields(o, f);
    f("decoupled_weight_decay", o.decoupled_weight_decay);
    f("maximize", o.maximize);
  }

  template <class T>
  using update = std::variant<detail::radam_update<T, true>, detail::radam_update<T, false>>;

  // The length of the approximated simple moving average, rho_t, and the
  // rectification term, computed as torch computes them (in double, in its
  // order), so that the switch at rho_t = 5 happens at the same step.
  template <class T>
  static update<T> prepare(const options& o, const step_context& c) {
    const double t = static_cast<double>(c.t);
    const double bc1 = 1 - std::pow(o.beta1, t);
    const double bc2 = 1 - std::pow(o.beta2, t);
    const double rho_inf = 2 / (1 - o.beta2) - 1;
    const double rho_t = rho_inf - 2 * t * std::pow(o.beta2, t) / bc2;
    const auto m_weight = detail::lerp_weight<T>::make(1 - o.beta1);
    const T b2(o.beta2), omb2(1 - o.beta2), b1c(bc1), lr(c.lr), bc2_sqrt(std::pow(bc2, 0.5)), eps(o.eps),
        wd(c.weight_decay), decay(1 - c.lr * c.weight_decay);
    if (rho_t > 5) {
      const T rect(std::pow((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.5));
      return detail::radam_update<T, true>{m_weight, b2, omb2, b1c, lr, bc2_sqrt, rect, eps, wd, decay,
                                           o.decoupled_weight_decay};
    }
    return detail::radam_update<T, false>{m_weight, b2, omb2, b1c, lr, bc2_sqrt, T(1), eps, wd, decay,
                                          o.decoupled_weight_decay};
  }
};

template <class T = float, class Backend = host>
using RAdam = BaseOptimizer<radam_rule, T, Backend>;

}  // namespace nestla
