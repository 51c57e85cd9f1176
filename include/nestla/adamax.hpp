// Adamax (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.1), as torch.optim.Adamax.
//
//   g <- -g (maximize)
//   g <- g + lambda theta
//   m <- m + (1 - beta1)(g - m)           (torch 2's lerp; = beta1 m + (1 - beta1) g)
//   u <- max(beta2 u, |g| + eps)
//   theta <- theta - lr / (1 - beta1^t) * m / u
#pragma once

#include <array>
#include <cmath>

#include "nestla/backend/host.hpp"
#include "nestla/detail/adam_options.hpp"
#include "nestla/detail/lerp.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct AdamaxOptions {
  double lr = 2e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  bool maximize = false;
};

namespace detail {

template <class T>
struct adamax_update {
  lerp_weight<T> m_weight;
  T beta2, eps, neg_step_size, weight_decay;
  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    if (weight_decay != T(0)) g = g + V(weight_decay) * p;
    V& m = s[0];
    V& u = s[1];
    m = m_weight(m, g);
    u = ops::max(u * V(beta2), ops::abs(g) + V(eps));
    p = p + (V(neg_step_size) * m) / u;
  }
};

}  // namespace detail

struct adamax_rule {
  using options = AdamaxOptions;
  static constexpr const char* name = "Adamax";
  static constexpr std::array<const char*, 2> states{"exp_avg", "exp_inf"};
  static constexpr int first_moment = 0;

  static void validate(const options& o, const option_check& check) {
    detail::check_adam_options(o, check);
  }
  static void fields(auto& o, auto&& f) {
    detail::adam_option_fields(o, f);
    f("maximize", o.maximize);
  }

  template <class T>
  static detail::adamax_update<T> prepare(const options& o, const step_context& c) {
    const double bias_correction = 1 - std::pow(o.beta1, static_cast<double>(c.t));
    return {detail::lerp_weight<T>::make(1 - o.beta1), T(o.beta2), T(o.eps), T(-(c.lr / bias_correction)),
            T(c.weight_decay)};
  }
};

template <class T = float, class Backend = host>
using Adamax = BaseOptimizer<adamax_rule, T, Backend>;

}  // namespace nestla
