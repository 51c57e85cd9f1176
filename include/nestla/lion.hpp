// Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023, Algorithm 2): the sign of an interpolated momentum.
//
//   c <- beta1 m + (1 - beta1) g
//   theta <- theta - lr (sign(c) + lambda theta)
//   m <- beta2 m + (1 - beta2) g
//
// torch.optim has no Lion; the defaults are the paper's and lion-pytorch's
// (lr 1e-4, betas 0.9 and 0.99, no weight decay; the paper suggests an lr 3-10x
// smaller and a weight decay 3-10x larger than AdamW's). The weight decay is
// decoupled by construction: it is scaled by lr, as the paper's.
#pragma once

#include <array>
#include <cmath>

#include "nestla/backend/host.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct LionOptions {
  double lr = 1e-4;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double weight_decay = 0;
};

namespace detail {

template <class T>
struct lion_update {
  T beta1, one_minus_beta1, beta2, one_minus_beta2, neg_lr, weight_decay;

  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    V& m = s[0];
    const V c = m * V(beta1) + V(one_minus_beta1) * g;
    V u = ops::sign(c);
    if (weight_decay != T(0)) u = u + V(weight_decay) * p;
    p = p + V(neg_lr) * u;
    m = m * V(beta2) + V(one_minus_beta2) * g;
  }
};

}  // namespace detail

struct lion_rule {
  using options = LionOptions;
  static constexpr const char* name = "Lion";
  static constexpr std::array<const char*, 1> states{"exp_avg"};
  static constexpr int first_moment = 0;

  static void validate(const options& o, const option_check& check) {
    check(o.lr >= 0 && std::isfinite(o.lr), "lr", o.lr, "must be finite and >= 0");
    check(o.beta1 >= 0 && o.beta1 <= 1, "beta1", o.beta1, "must be in [0, 1]");
    check(o.beta2 >= 0 && o.beta2 <= 1, "beta2", o.beta2, "must be in [0, 1]");
    check(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "weight_decay", o.weight_decay,
          "must be finite and >= 0");
  }
  static void fields(auto& o, auto&& f) {
    f("lr", o.lr);
    f("beta1", o.beta1);
    f("beta2", o.beta2);
    f("weight_decay", o.weight_decay);
  }

  template <class T>
  static detail::lion_update<T> prepare(const options& o, const step_context& c) {
    return {T(o.beta1), T(1 - o.beta1), T(o.beta2), T(1 - o.beta2), T(-c.lr), T(c.weight_decay)};
  }
};

template <class T = float, class Backend = host>
using Lion = BaseOptimizer<lion_rule, T, Backend>;

}  // namespace nestla
