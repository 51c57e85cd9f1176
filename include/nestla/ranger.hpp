// Ranger (Wright, 2019): Lookahead over RAdam with the defaults of lessw2020's Ranger, as a type and a factory.
//
//   RAdam (radam.hpp): lr 1e-3, beta1 0.95, beta2 0.999, eps 1e-5, decoupled weight decay (default 0)
//   Lookahead (lookahead.hpp): every k = 6 steps  phi <- phi + alpha (theta - phi);  theta <- phi   (alpha 0.5)
//
// lessw2020/Ranger-Deep-Learning-Optimizer (ranger/ranger.py, version 20.4.11)
// computes the same update with use_gc=False, to rounding (tested against it);
// the README ("Presets") lists what it reproduces and what it does not
// (gradient centralization, Ranger 2020's weight decay, fastai's ranger).
#pragma once

#include "nestla/backend/host.hpp"
#include "nestla/lookahead.hpp"
#include "nestla/radam.hpp"

namespace nestla {

struct RangerOptions {
  double lr = 1e-3;
  double beta1 = 0.95;
  double beta2 = 0.999;
  double eps = 1e-5;
  double weight_decay = 0;
  bool decoupled_weight_decay = true;  // lessw2020's decay: theta <- theta - lr lambda theta
  bool maximize = false;
  int k = 6;
  double alpha = 0.5;
  Momentum momentum = Momentum::keep;
};

template <class T = float, class Backend = host>
using Ranger = Lookahead<RAdam<T, Backend>>;

// nestla::ranger() is Ranger<>(RAdam<>({Ranger's RAdam options}), {.k = 6, .alpha = 0.5}).
template <class T = float, class Backend = host>
Ranger<T, Backend> ranger(const RangerOptions& o = {}) {
  return Ranger<T, Backend>(RAdam<T, Backend>({.lr = o.lr,
                                               .beta1 = o.beta1,
                                               .beta2 = o.beta2,
                                               .eps = o.eps,
                                               .weight_decay = o.weight_decay,
                                               .decoupled_weight_decay = o.decoupled_weight_decay,
                                               .maximize = o.maximize}),
                            {.k = o.k, .alpha = o.alpha, .momentum = o.momentum});
}

}  // namespace nestla
