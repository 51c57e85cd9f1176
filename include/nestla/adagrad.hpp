// Adagrad (Duchi, Hazan & Singer, JMLR 2011), as torch.optim.Adagrad.
//
//   g <- -g (maximize)
//   g <- g + lambda theta
//   s <- s0 on the first step (initial_accumulator_value), then s <- s + g^2
//   theta <- theta - lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)
//
// No first moment: Lookahead's momentum policies have nothing to act on.
#pragma once

#include <array>
#include <cmath>

#include "nestla/backend/host.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct AdagradOptions {
  double lr = 1e-2;
  double lr_decay = 0;
  double weight_decay = 0;
  double initial_accumulator_value = 0;
  double eps = 1e-10;
  bool maximize = false;
};

namespace detail {

template <class T>
struct adagrad_update {
  T neg_clr, wd, initial, eps;
  bool fresh = false;  // the sum was just created: it starts at initial_accumulator_value

  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    if (wd != T(0)) g = g + V(wd) * p;
    V& sum = s[0];
    if (fresh) sum = V(initial);
    sum = sum + g * g;
    const V std = ops::sqrt(sum) + V(eps);
    p = p + (V(neg_clr) * g) / std;
  }
};

}  // namespace detail

struct adagrad_rule {
  using options = AdagradOptions;
  static constexpr const char* name = "Adagrad";
  static constexpr std::array<const char*, 1> states{"sum"};
  static constexpr int first_moment = -1;

  static void validate(const options& o, const option_check& check) {
    check(o.lr >= 0 && std::isfinite(o.lr), "lr", o.lr, "must be finite and >= 0");
    check(o.lr_decay >= 0 && std::isfinite(o.lr_decay), "lr_decay", o.lr_decay, "must be finite and >= 0");
    check(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "weight_decay", o.weight_decay,
          "must be finite and >= 0");
    check(o.initial_accumulator_value >= 0 && std::isfinite(o.initial_accumulator_value), "initial_accumulator_value",
          o.initial_accumulator_value, "must be finite and >= 0");
    check(o.eps >= 0 && std::isfinite(o.eps), "eps", o.eps, "must be finite and >= 0");
  }
  static void fields(auto& o, auto&& f) {
    f("lr", o.lr);
    f("lr_decay", o.lr_decay);
    f("weight_decay", o.weight_decay);
    f("initial_accumulator_value", o.initial_accumulator_value);
    f("eps", o.eps);
    f("maximize", o.maximize);
  }

  template <class T>
  using update = detail::adagrad_update<T>;

  // torch computes the decayed lr in double from its float32 step counter,
  // which holds every step count below 2^24 exactly.
  template <class T>
  static update<T> prepare(const options& o, const step_context& c) {
    const double clr = c.lr / (1 + static_cast<double>(c.t - 1) * o.lr_decay);
    return {T(-clr), T(c.weight_decay), T(o.initial_accumulator_value), T(o.eps), c.is_fresh(0)};
  }
};

template <class T = float, class Backend = host>
using Adagrad = BaseOptimizer<adagrad_rule, T, Backend>;

}  // namespace nestla
