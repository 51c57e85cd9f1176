// Learning-rate (or Lookahead alpha) schedules: PyTorch's lr_scheduler as functions of the step count.
//
// Each schedule is a small value type: built from an options aggregate with
// PyTorch's names (validated, a bad value throws nestla::invalid_option), then
// s(t) is the value PyTorch's scheduler holds after t calls of its step(), i.e.
// the value to use for step t + 1 (t = 0 before the first step). Nothing is
// stateful, so s(t) may be evaluated for any t, in any order, after a resume:
//
//   opt.base().set_lr(s(opt.base().step_count()));  opt.step(params, grads);
//
// PyTorch computes most schedules recursively (lr_t from lr_{t-1}); these are
// the closed forms it documents (_get_closed_form_lr), evaluated with the same
// expressions. They agree with the recursive values to rounding (tests: 1e-12
// relative, tests/data/schedule_golden.json), except CosineAnnealingLR past
// T_max, where PyTorch's recursion drifts from its own closed form (3.4e-12 at
// T_max = 1000 after 2 T_max) and this returns the closed form.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <utility>
#include <vector>

#include "nestla/error.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

namespace detail {

inline constexpr double unset_value = std::numeric_limits<double>::quiet_NaN();

inline void check_step(std::int64_t step, const char* who) {
  if (step < 0) fail<std::out_of_range>("nestla: ", who, ": step ", step, " is invalid (must be >= 0)");
}
inline void check_value(double v, const char* who, const char* name) {
  check_option(std::isfinite(v) && v >= 0, who, name, v, "must be set, finite and >= 0");
}
inline void check_count(std::int64_t v, const char* who, const char* name, std::int64_t min) {
  if (v < min) fail<invalid_option>("nestla: ", who, ": ", name, " = ", v, " is invalid (must be >= ", min, ")");
}

}  // namespace detail

// The constructors take their options by const reference: GCC 12.2 at -O2
// with AVX-512 (-march=x86-64-v4 or native on such a CPU) builds some option
// aggregates passed by value on the stack wrong (it broadcast the first double
// into the next three: SGDOptions{.lr = 0.5, .momentum = 0.5} arrived with
// dampening = 0.5).

// --- StepLR: base_lr * gamma^floor(t / step_size) ----------------------------

struct StepLROptions {
  double base_lr = detail::unset_value;  // the value at t = 0 (PyTorch: the optimizer's lr)
  std::int64_t step_size = 0;            // decay every step_size steps
  double gamma = 0.1;
};

class StepLR {
 public:
  explicit StepLR(const StepLROptions& o) : o_(o) {
    detail::check_value(o.base_lr, "StepLR", "base_lr");
    detail::check_count(o.step_size, "StepLR", "step_size", 1);
    detail::check_value(o.gamma, "StepLR", "gamma");
  }
  double operator()(std::int64_t t) const {
    detail::check_step(t, "StepLR");
    return o_.base_lr * std::pow(o_.gamma, static_cast<double>(t / o_.step_size));
  }
  const StepLROptions& options() const noexcept { return o_; }

 private:
  StepLROptions o_;
};

// --- MultiStepLR: base_lr * gamma^(number of milestones <= t) -----------------

struct MultiStepLROptions {
  double base_lr = detail::unset_value;
  std::vector<std::int64_t> milestones;  // non-decreasing; a repeated milestone decays twice, as in PyTorch
  double gamma = 0.1;
};

class MultiStepLR {
 public:
  explicit MultiStepLR(MultiStepLROptions o) : o_(std::move(o)) {
    detail::check_value(o_.base_lr, "MultiStepLR", "base_lr");
    detail::check_value(o_.gamma, "MultiStepLR", "gamma");
    for (std::size_t i = 0; i < o_.milestones.size(); ++i) {
      if (o_.milestones[i] < 0)
        detail::fail<invalid_option>("nestla: MultiStepLR: milestones[", i, "] = ", o_.milestones[i],
                                     " is invalid (must be >= 0)");
      if (i > 0 && o_.milestones[i] < o_.milestones[i - 1])
        detail::fail<invalid_option>("nestla: MultiStepLR: milestones[", i, "] = ", o_.milestones[i],
                                     " is invalid (milestones must be non-decreasing; milestones[", i - 1,
                                     "] = ", o_.milestones[i - 1], ")");
    }
  }
  double operator()(std::int64_t t) const {
    detail::check_step(t, "MultiStepLR");
    const auto passed = std::upper_bound(o_.milestones.begin(), o_.milestones.end(), t) - o_.milestones.begin();
    return o_.base_lr * std::pow(o_.gamma, static_cast<double>(passed));
  }
  const MultiStepLROptions& options() const noexcept { return o_; }

 private:
  MultiStepLROptions o_;
};

// --- ExponentialLR: base_lr * gamma^t -----------------------------------------

struct ExponentialLROptions {
  double base_lr = detail::unset_value;
  double gamma = detail::unset_value;  // required, as in PyTorch
};

class ExponentialLR {
 public:
  explicit ExponentialLR(const ExponentialLROptions& o) : o_(o) {
    detail::check_value(o.base_lr, "ExponentialLR", "base_lr");
    detail::check_value(o.gamma, "ExponentialLR", "gamma");
  }
  double operator()(std::int64_t t) const {
    detail::check_step(t, "ExponentialLR");
    return o_.base_lr * std::pow(o_.gamma, static_cast<double>(t));
  }
  const ExponentialLROptions& options() const noexcept { return o_; }

 private:
  ExponentialLROptions o_;
};

// --- CosineAnnealingLR: eta_min + (base_lr - eta_min)(1 + cos(pi t / T_max)) / 2 ---
// Past T_max the cosine goes on (back up to base_lr at 2 T_max), as PyTorch's.

struct CosineAnnealingLROptions {
  double base_lr = detail::unset_value;
  std::int64_t T_max = 0;  // steps from base_lr down to eta_min
  double eta_min = 0;
};

class CosineAnnealingLR {
 public:
  explicit CosineAnnealingLR(const CosineAnnealingLROptions& o) : o_(o) {
    detail::check_value(o.base_lr, "CosineAnnealingLR", "base_lr");
    detail::check_count(o.T_max, "CosineAnnealingLR", "T_max", 1);
    detail::check_value(o.eta_min, "CosineAnnealingLR", "eta_min");
  }
  double operator()(std::int64_t t) const {
    detail::check_step(t, "CosineAnnealingLR");
    return o_.eta_min + (o_.base_lr - o_.eta_min) *
                            (1 + std::cos(std::numbers::pi * static_cast<double>(t) / static_cast<double>(o_.T_max))) / 2;
  }
  const CosineAnnealingLROptions& options() const noexcept { return o_; }

 private:
  CosineAnnealingLROptions o_;
};

// --- CosineAnnealingWarmRestarts (SGDR): the cosine over periods T_0, T_0 T_mult, T_0 T_mult^2, ... ---

struct CosineAnnealingWarmRestartsOptions {
  double base_lr = detail::unset_value;
  std::int64_t T_0 = 0;     // the first period
  std::int64_t T_mult = 1;  // each period is T_mult times the previous one
  double eta_min = 0;
};

class CosineAnnealingWarmRestarts {
 public:
  explicit CosineAnnealingWarmRestarts(const CosineAnnealingWarmRestartsOptions& o) : o_(o) {
    detail::check_value(o.base_lr, "CosineAnnealingWarmRestarts", "base_lr");
    detail::check_count(o.T_0, "CosineAnnealingWarmRestarts", "T_0", 1);
    detail::check_count(o.T_mult, "CosineAnnealingWarmRestarts", "T_mult", 1);
    detail::check_value(o.eta_min, "CosineAnnealingWarmRestarts", "eta_min");
  }
  double operator()(std::int64_t t) const {
    detail::check_step(t, "CosineAnnealingWarmRestarts");
    // T_cur and T_i in integers, as PyTorch's step() counts them (its
    // step(epoch) form goes through a floating-point log instead).
    std::int64_t cur = t, period = o_.T_0;
    double period_d = static_cast<double>(period);
    if (o_.T_mult == 1) {
      cur = t % period;
    } else {
      while (cur >= period) {
        cur -= period;
        if (period > std::numeric_limits<std::int64_t>::max() / o_.T_mult) {
          // The next period exceeds any int64 step: this one is the last.
          period_d = static_cast<double>(period) * static_cast<double>(o_.T_mult);
          period = std::numeric_limits<std::int64_t>::max();
          break;
        }
        period *= o_.T_mult;
        period_d = static_cast<double>(period);
      }
    }
    return o_.eta_min +
           (o_.base_lr - o_.eta_min) * (1 + std::cos(std::numbers::pi * static_cast<double>(cur) / period_d)) / 2;
  }
  const CosineAnnealingWarmRestartsOptions& options() const noexcept { return o_; }

 private:
  CosineAnnealingWarmRestartsOptions o_;
};

// --- LinearLR: base_lr * (start_factor + (end_factor - start_factor) min(t, total_iters) / total_iters) ---
// Linear warmup: start_factor < 1, end_factor = 1.

struct LinearLROptions {
  double base_lr = detail::unset_value;
  double start_factor = 1.0 / 3;  // in (0, 1]
  double end_factor = 1.0;        // in [0, 1]
  std::int64_t total_iters = 5;
};

class LinearLR {
 public:
  explicit LinearLR(const LinearLROptions& o) : o_(o) {
    detail::check_value(o.base_lr, "LinearLR", "base_lr");
    detail::check_option(o.start_factor > 0 && o.start_factor <= 1, "LinearLR", "start_factor", o.start_factor,
                         "must be in (0, 1]");
    detail::check_option(o.end_factor >= 0 && o.end_factor <= 1, "LinearLR", "end_factor", o.end_factor,
                         "must be in [0, 1]");
    detail::check_count(o.total_iters, "LinearLR", "total_iters", 1);
  }
  double operator()(std::int64_t t) const {
    detail::check_step(t, "LinearLR");
    return o_.base_lr * (o_.start_factor + (o_.end_factor - o_.start_factor) *
                                               static_cast<double>(std::min(o_.total_iters, t)) /
                                               static_cast<double>(o_.total_iters));
  }
  const LinearLROptions& options() const noexcept { return o_; }

 private:
  LinearLROptions o_;
};

// --- ConstantLR: base_lr * factor before total_iters, base_lr from then on ---

struct ConstantLROptions {
  double base_lr = detail::unset_value;
  double factor = 1.0 / 3;  // in [0, 1]
  std::int64_t total_iters = 5;
};

class ConstantLR {
 public:
  explicit ConstantLR(const ConstantLROptions& o) : o_(o) {
    detail::check_value(o.base_lr, "ConstantLR", "base_lr");
    detail::check_option(o.factor >= 0 && o.factor <= 1, "ConstantLR", "factor", o.factor, "must be in [0, 1]");
    detail::check_count(o.total_iters, "ConstantLR", "total_iters", 1);
  }
  double operator()(std::int64_t t) const {
    detail::check_step(t, "ConstantLR");
    return o_.base_lr * (o_.factor + (t >= o_.total_iters ? 1 - o_.factor : 0.0));
  }
  const ConstantLROptions& options() const noexcept { return o_; }

 private:
  ConstantLROptions o_;
};

// --- PolynomialLR: base_lr * (1 - min(t, total_iters) / total_iters)^power ---

struct PolynomialLROptions {
  double base_lr = detail::unset_value;
  std::int64_t total_iters = 5;
  double power = 1.0;
};

class PolynomialLR {
 public:
  explicit PolynomialLR(const PolynomialLROptions& o) : o_(o) {
    detail::check_value(o.base_lr, "PolynomialLR", "base_lr");
    detail::check_count(o.total_iters, "PolynomialLR", "total_iters", 1);
    detail::check_value(o.power, "PolynomialLR", "power");
  }
  double operator()(std::int64_t t) const {
    detail::check_step(t, "PolynomialLR");
    return o_.base_lr * std::pow(1.0 - static_cast<double>(std::min(o_.total_iters, t)) /
                                           static_cast<double>(o_.total_iters),
                                 o_.power);
  }
  const PolynomialLROptions& options() const noexcept { return o_; }

 private:
  PolynomialLROptions o_;
};

// --- OneCycleLR (Smith and Topin 2017): up from max_lr / div_factor to max_lr, then down to
// max_lr / (div_factor final_div_factor); the momentum (SGD's momentum or Adam's beta1) cycles inversely.

enum class Anneal { cos, linear };

struct OneCycleLROptions {
  double max_lr = detail::unset_value;
  std::int64_t total_steps = 0;  // s(t) is defined for t = 0 ... total_steps, as in PyTorch
  double pct_start = 0.3;        // fraction of the steps spent increasing the lr
  Anneal anneal_strategy = Anneal::cos;
  double base_momentum = 0.85;   // the momentum at max_lr
  double max_momentum = 0.95;    // the momentum at the ends
  double div_factor = 25;        // initial lr = max_lr / div_factor
  double final_div_factor = 1e4; // final lr = initial lr / final_div_factor
  bool three_phase = false;      // up, down to the initial lr, then down to the final lr (the paper's form)
};

class OneCycleLR {
 public:
  explicit OneCycleLR(const OneCycleLROptions& o) : o_(o) {
    const char* who = "OneCycleLR";
    detail::check_value(o.max_lr, who, "max_lr");
    detail::check_count(o.total_steps, who, "total_steps", 1);
    detail::check_option(o.pct_start >= 0 && o.pct_start <= 1, who, "pct_start", o.pct_start, "must be in [0, 1]");
    const auto a = static_cast<unsigned>(o.anneal_strategy);
    detail::check_option(a <= 1, who, "anneal_strategy", a, "must be cos or linear");
    detail::check_option(std::isfinite(o.base_momentum), who, "base_momentum", o.base_momentum, "must be finite");
    detail::check_option(std::isfinite(o.max_momentum), who, "max_momentum", o.max_momentum, "must be finite");
    detail::check_option(std::isfinite(o.div_factor) && o.div_factor > 0, who, "div_factor", o.div_factor,
                         "must be finite and > 0");
    detail::check_option(std::isfinite(o.final_div_factor) && o.final_div_factor > 0, who, "final_div_factor",
                         o.final_div_factor, "must be finite and > 0");
    const double initial = o.max_lr / o.div_factor, final_lr = initial / o.final_div_factor;
    const double steps = static_cast<double>(o.total_steps);
    // Phase ends as PyTorch computes them (float pct_start * total_steps - 1, ...).
    if (o.three_phase) {
      phases_ = {Phase{o.pct_start * steps - 1, initial, o.max_lr, o.max_momentum, o.base_momentum},
                 Phase{2 * o.pct_start * steps - 2, o.max_lr, initial, o.base_momentum, o.max_momentum},
                 Phase{steps - 1, initial, final_lr, o.max_momentum, o.max_momentum}};
      nphases_ = 3;
    } else {
      phases_ = {Phase{o.pct_start * steps - 1, initial, o.max_lr, o.max_momentum, o.base_momentum},
                 Phase{steps - 1, o.max_lr, final_lr, o.base_momentum, o.max_momentum}, Phase{}};
      nphases_ = 2;
    }
    // Step 0 in a warmup phase of zero length would divide by zero (PyTorch's
    // constructor raises ZeroDivisionError): refuse it here.
    if (phases_[0].end == 0)
      detail::fail<invalid_option>("nestla: OneCycleLR: pct_start = ", o.pct_start, " with total_steps = ",
                                   o.total_steps, " is invalid (the warmup phase would end at step 0: need "
                                   "pct_start * total_steps != 1)");
  }
  // The lr at step t.
  double operator()(std::int64_t t) const { return at(t, false); }
  // The momentum (SGD's momentum or Adam's beta1) at step t.
  double momentum(std::int64_t t) const { return at(t, true); }
  const OneCycleLROptions& options() const noexcept { return o_; }

 private:
  struct Phase {
    double end = 0, start_lr = 0, end_lr = 0, start_momentum = 0, end_momentum = 0;
  };
  double anneal(double start, double end, double pct) const {
    if (o_.anneal_strategy == Anneal::cos) {
      const double cos_out = std::cos(std::numbers::pi * pct) + 1;
      return end + (start - end) / 2.0 * cos_out;
    }
    return (end - start) * pct + start;
  }
  double at(std::int64_t t, bool momentum) const {
    detail::check_step(t, "OneCycleLR");
    if (t > o_.total_steps)
      detail::fail<std::out_of_range>("nestla: OneCycleLR: step ", t, " is past total_steps = ", o_.total_steps);
    const double step = static_cast<double>(t);
    double start = 0;
    for (int i = 0; i < nphases_; ++i) {
      const Phase& p = phases_[static_cast<std::size_t>(i)];
      if (step <= p.end || i == nphases_ - 1) {
        // Only step total_steps can reach a last phase of zero length (pct_start = 1,
        // or (total_steps + 1) / (2 total_steps) with three_phase); PyTorch divides by zero there.
        if (p.end == start)
          detail::fail<std::out_of_range>("nestla: OneCycleLR: step ", t, " falls in a phase of zero length (pct_start = ",
                                          o_.pct_start, ", total_steps = ", o_.total_steps, ")");
        const double pct = (step - start) / (p.end - start);
        return momentum ? anneal(p.start_momentum, p.end_momentum, pct) : anneal(p.start_lr, p.end_lr, pct);
      }
      start = p.end;
    }
    return 0;  // not reached: the last phase takes every step
  }

  OneCycleLROptions o_;
  std::array<Phase, 3> phases_{};
  int nphases_ = 2;
};

// --- SequentialLR: schedule i from milestone i on, restarted at its own step 0 ---
//   SequentialLR({LinearLR({...}), CosineAnnealingLR({...})}, {5})
// is a 5-step linear warmup followed by cosine annealing from step 5 (at t,
// the cosine's value at t - 5), as torch.optim.lr_scheduler.SequentialLR.
// Any callable double(std::int64_t) is a schedule, a lambda included.

class SequentialLR {
 public:
  using schedule = std::function<double(std::int64_t)>;

  SequentialLR(std::vector<schedule> schedules, std::vector<std::int64_t> milestones)
      : schedules_(std::move(schedules)), milestones_(std::move(milestones)) {
    if (schedules_.empty()) detail::fail<invalid_option>("nestla: SequentialLR: no schedules given (need at least one)");
    for (std::size_t i = 0; i < schedules_.size(); ++i)
      if (!schedules_[i]) detail::fail<invalid_option>("nestla: SequentialLR: schedule ", i, " is empty");
    if (milestones_.size() != schedules_.size() - 1)
      detail::fail<invalid_option>("nestla: SequentialLR: ", milestones_.size(), " milestones for ", schedules_.size(),
                                   " schedules (need one fewer milestone than schedules)");
    for (std::size_t i = 0; i < milestones_.size(); ++i) {
      if (milestones_[i] < 0)
        detail::fail<invalid_option>("nestla: SequentialLR: milestones[", i, "] = ", milestones_[i],
                                     " is invalid (must be >= 0)");
      if (i > 0 && milestones_[i] <= milestones_[i - 1])
        detail::fail<invalid_option>("nestla: SequentialLR: milestones[", i, "] = ", milestones_[i],
                                     " is invalid (milestones must be increasing; milestones[", i - 1,
                                     "] = ", milestones_[i - 1], ")");
    }
  }
  double operator()(std::int64_t t) const {
    detail::check_step(t, "SequentialLR");
    const auto i = static_cast<std::size_t>(std::upper_bound(milestones_.begin(), milestones_.end(), t) -
                                            milestones_.begin());
    return schedules_[i](i == 0 ? t : t - milestones_[i - 1]);
  }
  const std::vector<std::int64_t>& milestones() const noexcept { return milestones_; }

 private:
  std::vector<schedule> schedules_;
  std::vector<std::int64_t> milestones_;
};

}  // namespace nestla
