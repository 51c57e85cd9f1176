// Any nestla optimizer behind ensmallen's optimizer contract, so mlpack models and ensmallen code train with it unchanged.
//
// nestla::EnsmallenOptimizer runs ensmallen's separable-function SGD loop (as
// ens::SGD in ensmallen 3.10+) and hands every batch's mean gradient to the
// wrapped optimizer's step(): one nestla step per batch. Neither ensmallen nor
// mlpack is needed to compile it; callbacks are found by the hooks they have.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <limits>
#include <type_traits>
#include <utility>

#include "nestla/armadillo.hpp"
#include "nestla/error.hpp"

namespace nestla {

// The loop's settings, named and defaulted as ens::SGD's, except reset_policy:
// nestla's optimizer state (moments, Lookahead cycles) carries over from one
// Optimize call to the next unless asked otherwise.
struct EnsmallenOptions {
  std::size_t batch_size = 32;         // data points per batch, i.e. per optimizer step
  std::size_t max_iterations = 100000; // data points to process in all (0: no limit)
  double tolerance = 1e-5;             // stop when an epoch's objective changes by less
  bool shuffle = true;                 // call f.Shuffle() at the end of every epoch
  bool reset_policy = false;           // true: every Optimize starts from the optimizer as it was wrapped
  bool exact_objective = false;        // true: return the objective over all data at the end
};

namespace detail {

// ensmallen hands its functions and callbacks Mat, not Row or Col.
template <class M>
struct ens_base_mat {
  using type = M;
};
template <class eT>
struct ens_base_mat<arma::Row<eT>> {
  using type = arma::Mat<eT>;
};
template <class eT>
struct ens_base_mat<arma::Col<eT>> {
  using type = arma::Mat<eT>;
};
template <class M>
using ens_base_mat_t = typename ens_base_mat<M>::type;

template <class F, class M, class G>
concept ens_evaluate_with_gradient = requires(F& f, const M& x, G& g, std::size_t i) {
  { f.EvaluateWithGradient(x, i, g, i) } -> std::convertible_to<double>;
};
template <class F, class M>
concept ens_evaluate = requires(F& f, const M& x, std::size_t i) {
  { f.Evaluate(x, i, i) } -> std::convertible_to<double>;
};
template <class F, class M, class G>
concept ens_gradient = requires(F& f, const M& x, G& g, std::size_t i) { f.Gradient(x, i, g, i); };

template <class Opt>
concept ens_has_lr = requires(const Opt& o) {
  { o.base().options().lr } -> std::convertible_to<double>;
};

// Calls hook(callback) when the callback has that hook; true when it asks to
// stop. A callback passed as const is called all the same, as ensmallen does.
template <class Hook, class Callback>
bool ens_call_hook(Hook& hook, Callback& callback) {
  using C = std::remove_const_t<Callback>;
  auto& c = const_cast<C&>(callback);
  if constexpr (std::is_invocable_v<Hook&, C&>) {
    if constexpr (std::is_void_v<std::invoke_result_t<Hook&, C&>>) {
      hook(c);
      return false;
    } else {
      return static_cast<bool>(hook(c));
    }
  } else {
    return false;
  }
}

// As ensmallen's Callback dispatchers: the callbacks in order, none after the
// first one that asks to stop.
template <class Hook, class... Callbacks>
bool ens_any_hook(Hook hook, Callbacks&... callbacks) {
  (void)hook;  // unused without callbacks
  bool stop = false;
  ((stop = stop || ens_call_hook(hook, callbacks)), ...);
  return stop;
}

// Begin/EndOptimization: every callback, whatever it returns.
template <class Hook, class... Callbacks>
void ens_every_hook(Hook hook, Callbacks&... callbacks) {
  (void)hook;
  (ens_call_hook(hook, callbacks), ...);
}

}  // namespace detail

// Opt: any nestla optimizer (SGD, Adam, AdamW, Lookahead<...>, nested<D>(...)),
// or any type with bool step(params, grads) and base().
template <class Opt>
class EnsmallenOptimizer {
  static_assert(requires(Opt& o) { o.base(); },
                "nestla: EnsmallenOptimizer wraps a nestla optimizer (a type with step(params, grads) and base())");

 public:
  using optimizer_type = Opt;

  explicit EnsmallenOptimizer(Opt optimizer, EnsmallenOptions options = {})
      : opt_(std::move(optimizer)), fresh_(opt_), o_(options) {}

  // The ensmallen entry point, exactly the shape mlpack's IsEnsOptimizer trait
  // looks for (a non-const template returning M::elem_type): a model's
  // Train(X, y, optimizer) falls back to L-BFGS without a word when it differs.
  template <class F, class M, class... Callbacks>
  typename M::elem_type Optimize(F& function, M& iterate, Callbacks&&... callbacks) {
    return run<F, M, M>(function, iterate, callbacks...);
  }

  // The same with the gradient held in another matrix type, as ens::SGD's.
  template <class F, class M, class G, class... Callbacks>
    requires requires { typename G::elem_type; }
  typename M::elem_type Optimize(F& function, M& iterate, Callbacks&&... callbacks) {
    return run<F, M, G>(function, iterate, callbacks...);
  }

  // --- ensmallen's accessors (read by mlpack and ensmallen's callbacks) ------
  std::size_t BatchSize() const { return o_.batch_size; }
  std::size_t& BatchSize() { return o_.batch_size; }
  std::size_t MaxIterations() const { return o_.max_iterations; }
  std::size_t& MaxIterations() { return o_.max_iterations; }
  double Tolerance() const { return o_.tolerance; }
  double& Tolerance() { return o_.tolerance; }
  bool Shuffle() const { return o_.shuffle; }
  bool& Shuffle() { return o_.shuffle; }
  bool ResetPolicy() const { return o_.reset_policy; }
  bool& ResetPolicy() { return o_.reset_policy; }
  bool ExactObjective() const { return o_.exact_objective; }
  bool& ExactObjective() { return o_.exact_objective; }
  // The step size is the base optimizer's lr (set it with
  // optimizer().base().set_lr(...), also from a callback, for a schedule).
  double StepSize() const
    requires detail::ens_has_lr<Opt>
  {
    return static_cast<double>(opt_.base().options().lr);
  }

  const EnsmallenOptions& options() const noexcept { return o_; }
  Opt& optimizer() noexcept { return opt_; }
  const Opt& optimizer() const noexcept { return opt_; }

 private:
  template <class F, class M, class G, class... Callbacks>
  typename M::elem_type run(F& f, M& iterate_in, Callbacks&... callbacks);

  template <class BaseM>
  void prepare(const BaseM& iterate, std::size_t num_functions);

  Opt opt_;
  // As wrapped: what reset_policy restarts from. An optimizer wrapped before
  // its first step has no state yet, so this copy is small.
  Opt fresh_;
  EnsmallenOptions o_;
};

template <class Opt>
template <class BaseM>
void EnsmallenOptimizer<Opt>::prepare(const BaseM& iterate, std::size_t num_functions) {
  if (o_.batch_size == 0) detail::fail<invalid_option>("nestla: EnsmallenOptimizer: BatchSize() = 0 is invalid (must be >= 1)");
  if (std::isnan(o_.tolerance)) detail::fail<invalid_option>("nestla: EnsmallenOptimizer: Tolerance() is NaN");
  if (num_functions == 0)
    detail::fail<invalid_option>("nestla: EnsmallenOptimizer: Optimize: the function has NumFunctions() = 0 "
                                 "(no data points to iterate over)");
  if (o_.reset_policy) {
    // Keeps what was set on the base optimizer since (lr, weight decay, ...).
    if constexpr (requires { fresh_.base().set_options(opt_.base().options()); }) {
      auto options = opt_.base().options();
      opt_ = fresh_;
      opt_.base().set_options(options);
    } else {
      opt_ = fresh_;
    }
  }
  // A state created for another size would throw at the first step, after the
  // callbacks had begun: refuse before anything happens.
  if constexpr (requires { opt_.base().initialized(); opt_.base().layout().sizes; }) {
    const auto& b = opt_.base();
    const std::size_t n = tensor_traits<BaseM>::size(iterate);
    if (b.initialized() && (b.layout().count() != 1 || b.layout().sizes[0] != n))
      detail::fail<layout_error>("nestla: EnsmallenOptimizer: Optimize: the iterate has ", n,
                                 " elements, the optimizer's state was created for ",
                                 b.layout().count() == 1 ? b.layout().sizes[0] : b.layout().total,
                                 " (set ResetPolicy() = true to start afresh in every Optimize call)");
  }
}

template <class Opt>
template <class F, class M, class G, class... Callbacks>
typename M::elem_type EnsmallenOptimizer<Opt>::run(F& f, M& iterate_in, Callbacks&... callbacks) {
  using E = typename M::elem_type;
  using BaseM = detail::ens_base_mat_t<M>;
  using BaseG = detail::ens_base_mat_t<G>;
  static_assert(std::is_same_v<E, typename G::elem_type>,
                "nestla: EnsmallenOptimizer: the iterate and the gradient have different element types");
  static_assert(Tensor<BaseM> && Tensor<BaseG>,
                "nestla: EnsmallenOptimizer: the iterate and the gradient must be dense Armadillo matrices "
                "(arma::mat, arma::fmat, arma::rowvec, arma::vec, ...)");
  if constexpr (requires { typename Opt::scalar_type; })
    static_assert(std::is_same_v<E, typename Opt::scalar_type>,
                  "nestla: EnsmallenOptimizer: the iterate's elem_type differs from the optimizer's scalar type "
                  "(e.g. arma::fmat needs nestla::Adam<float>, arma::mat nestla::Adam<double>)");
  static_assert(requires(F& fn) {
    { fn.NumFunctions() } -> std::convertible_to<std::size_t>;
  }, "nestla: EnsmallenOptimizer: the function has no NumFunctions() (ensmallen's separable-function API)");
  static_assert(requires(F& fn) { fn.Shuffle(); },
                "nestla: EnsmallenOptimizer: the function has no Shuffle() (ensmallen's separable-function API)");
  static_assert(detail::ens_evaluate_with_gradient<F, BaseM, BaseG> ||
                    (detail::ens_evaluate<F, BaseM> && detail::ens_gradient<F, BaseM, BaseG>),
                "nestla: EnsmallenOptimizer: the function has neither EvaluateWithGradient(x, begin, g, batchSize) "
                "nor both Evaluate(x, begin, batchSize) and Gradient(x, begin, g, batchSize)");

  BaseM& iterate = static_cast<BaseM&>(iterate_in);
  const std::size_t num_functions = f.NumFunctions();
  prepare(iterate, num_functions);

  // One evaluation, as ensmallen's Function wrapper does without EvaluateWithGradient.
  auto evaluate_with_gradient = [&](std::size_t begin, BaseG& gradient, std::size_t batch) -> E {
    if constexpr (detail::ens_evaluate_with_gradient<F, BaseM, BaseG>) {
      return static_cast<E>(f.EvaluateWithGradient(std::as_const(iterate), begin, gradient, batch));
    } else {
      const E objective = static_cast<E>(f.Evaluate(std::as_const(iterate), begin, batch));
      f.Gradient(std::as_const(iterate), begin, gradient, batch);
      return objective;
    }
  };

  // The hooks, with ensmallen's arguments; a callback that lacks one is skipped.
  auto& self = *this;
  auto begin_optimization = [&](auto& c) -> decltype(c.BeginOptimization(self, f, iterate)) {
    return c.BeginOptimization(self, f, iterate);
  };
  auto end_optimization = [&](auto& c) -> decltype(c.EndOptimization(self, f, iterate)) {
    return c.EndOptimization(self, f, iterate);
  };
  auto begin_epoch = [&](std::size_t epoch, double objective) {
    return [&, epoch, objective](auto& c) -> decltype(c.BeginEpoch(self, f, std::as_const(iterate), epoch, objective)) {
      return c.BeginEpoch(self, f, std::as_const(iterate), epoch, objective);
    };
  };
  auto end_epoch = [&](std::size_t epoch, double objective) {
    return [&, epoch, objective](auto& c) -> decltype(c.EndEpoch(self, f, std::as_const(iterate), epoch, objective)) {
      return c.EndEpoch(self, f, std::as_const(iterate), epoch, objective);
    };
  };
  auto evaluate = [&](double objective) {
    return [&, objective](auto& c) -> decltype(c.Evaluate(self, f, std::as_const(iterate), objective)) {
      return c.Evaluate(self, f, std::as_const(iterate), objective);
    };
  };
  auto gradient_hook = [&](BaseG& g) {
    return [&](auto& c) -> decltype(c.Gradient(self, f, std::as_const(iterate), g)) {
      return c.Gradient(self, f, std::as_const(iterate), g);
    };
  };
  auto step_taken = [&](auto& c) -> decltype(c.StepTaken(self, f, iterate)) { return c.StepTaken(self, f, iterate); };

  BaseG gradient = [&] {
    if constexpr (std::is_constructible_v<BaseG, arma::uword, arma::uword>) return BaseG(iterate.n_rows, iterate.n_cols);
    else return BaseG();  // a fixed-size matrix has its size already
  }();
  std::size_t current = 0;
  std::size_t epoch = 1;
  E overall = 0;
  // ensmallen starts from DBL_MAX converted to the element type (infinity for float).
  E last = std::is_same_v<E, double> ? E(DBL_MAX) : std::numeric_limits<E>::infinity();
  bool terminate = false;
  const std::size_t max_points = o_.max_iterations == 0 ? std::numeric_limits<std::size_t>::max() : o_.max_iterations;

  detail::ens_every_hook(begin_optimization, callbacks...);
  terminate |= detail::ens_any_hook(begin_epoch(epoch, overall), callbacks...);
  for (std::size_t i = 0; i < max_points && !terminate;) {
    const std::size_t batch = std::min(std::min(o_.batch_size, max_points - i), num_functions - current);
    const E objective = evaluate_with_gradient(current, gradient, batch);
    overall += objective;
    {
      // Evaluate hooks, then Gradient hooks (which may modify the summed gradient).
      bool stop = detail::ens_any_hook(evaluate(objective), callbacks...);
      stop = stop || detail::ens_any_hook(gradient_hook(gradient), callbacks...);
      terminate |= stop;
    }
    // ensmallen 3.10+ scales the step by 1 / batch; here the gradient becomes
    // the batch mean, so lr is the step size of every optimizer. The pointer is
    // read afresh: the function may have reallocated the gradient.
    if (batch != 1) {
      using GT = tensor_traits<BaseG>;
      auto* g = GT::data(gradient);
      const std::size_t n = GT::size(gradient);
      for (std::size_t k = 0; k < n; ++k) g[k] /= static_cast<E>(batch);
    }
    opt_.step(iterate, gradient);
    terminate |= detail::ens_any_hook(step_taken, callbacks...);

    i += batch;
    current += batch;
    if (current % num_functions == 0) {
      terminate |= detail::ens_any_hook(end_epoch(epoch++, overall / static_cast<E>(num_functions)), callbacks...);
      if (!std::isfinite(overall) || std::abs(last - overall) < o_.tolerance) {
        detail::ens_every_hook(end_optimization, callbacks...);
        return overall;
      }
      terminate |= detail::ens_any_hook(begin_epoch(epoch, overall), callbacks...);
      if (i != max_points) {
        last = overall;
        overall = 0;
        current = 0;
      }
      if (o_.shuffle) f.Shuffle();
    }
  }

  if (o_.exact_objective) {
    overall = 0;
    BaseG scratch;
    for (std::size_t i = 0; i < num_functions; i += o_.batch_size) {
      const std::size_t batch = std::min(o_.batch_size, num_functions - i);
      E objective;
      if constexpr (detail::ens_evaluate<F, BaseM>) {
        objective = static_cast<E>(f.Evaluate(std::as_const(iterate), i, batch));
      } else {
        scratch.set_size(iterate.n_rows, iterate.n_cols);
        objective = static_cast<E>(f.EvaluateWithGradient(std::as_const(iterate), i, scratch, batch));
      }
      overall += objective;
      (void)detail::ens_any_hook(evaluate(objective), callbacks...);
    }
  }
  detail::ens_every_hook(end_optimization, callbacks...);
  return overall;
}

}  // namespace nestla
