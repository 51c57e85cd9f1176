// Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019), with AMSGrad, as torch.optim.Adam/AdamW.
//
//   g <- -g (maximize)
//   g <- g + lambda theta                 (Adam)   |  theta <- theta (1 - lr lambda)   (AdamW)
//   m <- beta1 m + (1 - beta1) g
//   v <- beta2 v + (1 - beta2) g^2
//   vh <- max(vh, v) (amsgrad) or v
//   theta <- theta - lr / (1 - beta1^t) * m / (sqrt(vh) / sqrt(1 - beta2^t) + eps)
#pragma once

#include <array>
#include <cmath>
#include <type_traits>
#include <variant>

#include "nestla/backend/host.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  bool amsgrad = false;
  bool maximize = false;
};

// AdamW's options: Adam's, with PyTorch's default decoupled weight decay.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
  bool maximize = false;
};

namespace detail {

template <class T, bool Decoupled, bool Amsgrad>
struct adam_update {
  static constexpr unsigned uses = Amsgrad ? 0b111u : 0b011u;
  T beta1, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bc2_sqrt, eps, weight_decay, decay;
  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    if constexpr (Decoupled) p = p * V(decay);
    else if (weight_decay != T(0)) g = g + V(weight_decay) * p;
    V& m = s[0];
    V& v = s[1];
    m = m * V(beta1) + V(one_minus_beta1) * g;
    v = v * V(beta2) + V(one_minus_beta2) * g * g;
    V vh = v;
    if constexpr (Amsgrad) {
      s[2] = ops::max(s[2], v);
      vh = s[2];
    }
    const V denom = ops::sqrt(vh) / V(bc2_sqrt) + V(eps);
    p = p + (V(neg_step_size) * m) / denom;
  }
};

}  // namespace detail

// Adam (Decoupled = false) and AdamW (Decoupled = true): one rule, the weight
// decay style is the policy.
template <bool Decoupled>
struct adam_rule {
  using options = std::conditional_t<Decoupled, AdamWOptions, AdamOptions>;
  static constexpr const char* name = Decoupled ? "AdamW" : "Adam";
  static constexpr std::array<const char*, 3> states{"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  static constexpr int first_moment = 0;

  static void validate(const options& o, const option_check& check) {
    check(o.lr >= 0 && std::isfinite(o.lr), "lr", o.lr, "must be finite and >= 0");
    check(o.beta1 >= 0 && o.beta1 < 1, "beta1", o.beta1, "must be in [0, 1)");
    check(o.beta2 >= 0 && o.beta2 < 1, "beta2", o.beta2, "must be in [0, 1)");
    check(o.eps >= 0 && std::isfinite(o.eps), "eps", o.eps, "must be finite and >= 0");
    check(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "weight_decay", o.weight_decay,
          "must be finite and >= 0");
  }
  static void fields(auto& o, auto&& f) {
    f("lr", o.lr);
    f("beta1", o.beta1);
    f("beta2", o.beta2);
    f("eps", o.eps);
    f("weight_decay", o.weight_decay);
    f("amsgrad", o.amsgrad);
    f("maximize", o.maximize);
  }

  template <class T>
  using update = std::variant<detail::adam_update<T, Decoupled, false>, detail::adam_update<T, Decoupled, true>>;

  template <class T>
  static update<T> prepare(const options& o, const step_context& c) {
    const double t = static_cast<double>(c.t);
    const double bc1 = 1 - std::pow(o.beta1, t);
    const double bc2_sqrt = std::sqrt(1 - std::pow(o.beta2, t));
    const T b1(o.beta1), omb1(1 - o.beta1), b2(o.beta2), omb2(1 - o.beta2), step(-(c.lr / bc1)), bc2(bc2_sqrt),
        eps(o.eps), wd(c.weight_decay), decay(1 - c.lr * c.weight_decay);
    if (o.amsgrad) return detail::adam_update<T, Decoupled, true>{b1, omb1, b2, omb2, step, bc2, eps, wd, decay};
    return detail::adam_update<T, Decoupled, false>{b1, omb1, b2, omb2, step, bc2, eps, wd, decay};
  }
};

template <class T = float, class Backend = host>
using Adam = BaseOptimizer<adam_rule<false>, T, Backend>;
template <class T = float, class Backend = host>
using AdamW = BaseOptimizer<adam_rule<true>, T, Backend>;

}  // namespace nestla
