// NAdam (Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop), with momentum decay, as torch.optim.NAdam.
//
//   g <- -g (maximize)
//   g <- g + lambda theta                 (default)  |  theta <- theta (1 - lr lambda)   (decoupled_weight_decay)
//   mu_t = beta1 (1 - 0.5 * 0.96^(t psi)),  mu_{t+1} likewise,  P_t = mu_1 mu_2 ... mu_t   (psi: momentum_decay)
//   m <- m + (1 - beta1)(g - m)           (torch 2's lerp; = beta1 m + (1 - beta1) g)
//   v <- beta2 v + (1 - beta2) g^2
//   theta <- theta - lr ((1 - mu_t) / (1 - P_t) g + mu_{t+1} / (1 - P_t mu_{t+1}) m) / (sqrt(v / (1 - beta2^t)) + eps)
//
// The running product P_t is a host scalar of the rule (checkpointed with it),
// kept in double whatever the parameters' type. Element by element in the
// order of torch's single-tensor code (its two addcdiv_), so float64 results
// are torch's to the bit wherever torch's own sqrt is correctly rounded.
#pragma once

#include <array>
#include <cmath>

#include "nestla/backend/host.hpp"
#include "nestla/detail/adam_options.hpp"
#include "nestla/detail/lerp.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct NAdamOptions {
  double lr = 2e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  double momentum_decay = 4e-3;         // psi
  bool decoupled_weight_decay = false;  // AdamW-style decay instead of L2 in the gradient
  bool maximize = false;
};

namespace detail {

template <class T>
struct nadam_update {
  lerp_weight<T> m_weight;
  T beta2, one_minus_beta2, bias_correction2, eps, grad_coef, exp_avg_coef, weight_decay, decay;
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
    const V denom = ops::sqrt(v / V(bias_correction2)) + V(eps);
    p = p + (V(grad_coef) * g) / denom;  // torch's two addcdiv_
    p = p + (V(exp_avg_coef) * m) / denom;
  }
};

// mu_t, as torch computes it.
inline double nadam_mu(double beta1, double momentum_decay, double t) {
  return beta1 * (1.0 - 0.5 * std::pow(0.96, t * momentum_decay));
}

}  // namespace detail

struct nadam_rule {
  using options = NAdamOptions;
  static constexpr const char* name = "NAdam";
  static constexpr std::array<const char*, 2> states{"exp_avg", "exp_avg_sq"};
  static constexpr int first_moment = 0;

  struct scalars {
    double mu_product = 1;  // P_t, after the last step taken
  };

  static void validate(const options& o, const option_check& check) {
    detail::check_adam_options(o, check);
    check(o.momentum_decay >= 0 && std::isfinite(o.momentum_decay), "momentum_decay", o.momentum_decay,
          "must be finite and >= 0");
  }
  static void fields(auto& o, auto&& f) {
    detail::adam_option_fields(o, f);
    f("momentum_decay", o.momentum_decay);
    f("decoupled_weight_decay", o.decoupled_weight_decay);
    f("maximize", o.maximize);
  }
  static void scalar_fields(auto& s, auto&& f) { f("mu_product", s.mu_product); }

  static void advance(const options& o, scalars& s, const step_context& c) {
    s.mu_product *= detail::nadam_mu(o.beta1, o.momentum_decay, static_cast<double>(c.t));
  }

  // s.mu_product is P_t already (advance ran for this step).
  template <class T>
  static detail::nadam_update<T> prepare(const options& o, const step_context& c, const scalars& s) {
    const double t = static_cast<double>(c.t);
    const double mu = detail::nadam_mu(o.beta1, o.momentum_decay, t);
    const double mu_next = detail::nadam_mu(o.beta1, o.momentum_decay, t + 1);
    const double mu_product_next = s.mu_product * mu_next;
    return {detail::lerp_weight<T>::make(1 - o.beta1),
            T(o.beta2),
            T(1 - o.beta2),
            T(1 - std::pow(o.beta2, t)),
            T(o.eps),
            T(-c.lr * (1.0 - mu) / (1.0 - s.mu_product)),
            T((-c.lr * mu_next) / (1.0 - mu_product_next)),
            T(c.weight_decay),
            T(1 - c.lr * c.weight_decay),
            o.decoupled_weight_decay};
  }
};

template <class T = float, class Backend = host>
using NAdam = BaseOptimizer<nadam_rule, T, Backend>;

}  // namespace nestla
