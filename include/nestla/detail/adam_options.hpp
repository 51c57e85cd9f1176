// What the options of the Adam family (Adam, AdamW, RAdam, NAdam, Adamax) share: their checks and checkpoint fields.
#pragma once

#include <cmath>

#include "nestla/rule.hpp"

namespace nestla::detail {

// lr, beta1, beta2, eps and weight_decay, as torch.optim checks them (and finite).
template <class O>
void check_adam_options(const O& o, const option_check& check) {
  check(o.lr >= 0 && std::isfinite(o.lr), "lr", o.lr, "must be finite and >= 0");
  check(o.beta1 >= 0 && o.beta1 < 1, "beta1", o.beta1, "must be in [0, 1)");
  check(o.beta2 >= 0 && o.beta2 < 1, "beta2", o.beta2, "must be in [0, 1)");
  check(o.eps >= 0 && std::isfinite(o.eps), "eps", o.eps, "must be finite and >= 0");
  check(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "weight_decay", o.weight_decay,
        "must be finite and >= 0");
}

// The same five as checkpoint fields, in this order.
template <class O, class F>
void adam_option_fields(O& o, F&& f) {
  f("lr", o.lr);
  f("beta1", o.beta1);
  f("beta2", o.beta2);
  f("eps", o.eps);
  f("weight_decay", o.weight_decay);
}

}  // namespace nestla::detail
