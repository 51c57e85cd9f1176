// Rprop (Riedmiller & Braun 1993) without weight-backtracking, as torch.optim.Rprop.
//
//   g <- -g (maximize)
//   eta <- eta_plus if g g_prev > 0, eta_minus if g g_prev < 0, else 1
//   delta <- clamp(delta eta, step_size_min, step_size_max)      (delta starts at lr)
//   g <- 0 where g g_prev < 0
//   theta <- theta - sign(g) delta
//   g_prev <- g
//
// Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation
// Learning: The RPROP Algorithm" (ICNN 1993); this is the variant Igel &
// Hüsken call iRprop- ("Improving the Rprop Learning Algorithm", 2000). lr is
// only the initial step size: changing it after the first step has no effect,
// as in torch. No first moment: Lookahead's momentum policies have nothing to
// act on.
#pragma once

#include <array>
#include <cmath>

#include "nestla/backend/host.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct RpropOptions {
  double lr = 1e-2;
  double etaminus = 0.5;  // torch's etas = (etaminus, etaplus)
  double etaplus = 1.2;
  double step_size_min = 1e-6;  // torch's step_sizes = (step_size_min, step_size_max)
  double step_size_max = 50;
  bool maximize = false;
};

namespace detail {

// States: 0 prev (the previous, masked gradient), 1 step_size.
template <class T>
struct rprop_update {
  T lr, etaminus, etaplus, step_min, step_max;
  bool fresh = false;  // the step sizes were just created: they start at lr

  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    V& prev = s[0];
    V& step = s[1];
    if (fresh) step = V(lr);
    const V zero(T(0));
    const V prod = g * prev;
    const V eta = ops::select(prod > zero, V(etaplus), ops::select(prod < zero, V(etaminus), V(T(1))));
    step = ops::clamp(step * eta, V(step_min), V(step_max));
    g = ops::select(prod < zero, zero, g);
    // ops::sign is torch.sign: 0 for NaN, so a NaN gradient element leaves
    // its parameter and step size as they are, as in torch.
    p = p - ops::sign(g) * step;
    prev = g;
  }
};

}  // namespace detail

struct rprop_rule {
  using options = RpropOptions;
  static constexpr const char* name = "Rprop";
  static constexpr std::array<const char*, 2> states{"prev", "step_size"};
  static constexpr int first_moment = -1;

  static void validate(const options& o, const option_check& check) {
    check(o.lr >= 0 && std::isfinite(o.lr), "lr", o.lr, "must be finite and >= 0");
    check(o.etaminus > 0 && o.etaminus < 1, "etaminus", o.etaminus, "must be in (0, 1)");
    check(o.etaplus > 1 && std::isfinite(o.etaplus), "etaplus", o.etaplus, "must be finite and > 1");
    check(o.step_size_min >= 0 && std::isfinite(o.step_size_min), "step_size_min", o.step_size_min,
          "must be finite and >= 0");
    check(o.step_size_max >= o.step_size_min, "step_size_max", o.step_size_max, "must be >= step_size_min");
  }
  static void fields(auto& o, auto&& f) {
    f("lr", o.lr);
    f("etaminus", o.etaminus);
    f("etaplus", o.etaplus);
    f("step_size_min", o.step_size_min);
    f("step_size_max", o.step_size_max);
    f("maximize", o.maximize);
  }

  template <class T>
  using update = detail::rprop_update<T>;

  // The group's lr seeds the step sizes when they are created, as torch's
  // state initialization does.
  template <class T>
  static update<T> prepare(const options& o, const step_context& c) {
    return {T(c.lr), T(o.etaminus), T(o.etaplus), T(o.step_size_min), T(o.step_size_max), c.is_fresh(1)};
  }
};

template <class T = float, class Backend = host>
using Rprop = BaseOptimizer<rprop_rule, T, Backend>;

}  // namespace nestla
