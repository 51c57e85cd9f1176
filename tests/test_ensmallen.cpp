// nestla::EnsmallenOptimizer follows ens::SGD's loop call for call, and mlpack's trait checks select it.
#include <doctest/doctest.h>

#include <nestla/ensmallen.hpp>

#include <armadillo>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "logistic_regression.hpp"
#include "plain_loop.hpp"  // the reference loop, written by hand around nestla

namespace {

using log_t = std::vector<std::string>;

// A log line, numbers with 17 digits.
template <class... A>
std::string entry(const A&... parts) {
  return nestla::detail::concat(parts...);
}

// A separable function that records every call. Each evaluation returns the
// next value of `objectives` (1, 2, 3, ... by default), independent of the
// iterate, so the sums the loop forms are known; every point's gradient is 1.
struct Recorder {
  log_t* log;
  std::size_t n = 10;
  std::vector<double> objectives{};
  std::size_t calls = 0;

  std::size_t NumFunctions() const { return n; }
  void Shuffle() { log->push_back("Shuffle"); }
  double EvaluateWithGradient(const arma::mat& x, std::size_t begin, arma::mat& g, std::size_t batch) {
    log->push_back(entry("EWG(", begin, ",", batch, ")"));
    g.set_size(x.n_rows, x.n_cols);
    g.fill(static_cast<double>(batch));
    return next();
  }
  double Evaluate(const arma::mat&, std::size_t begin, std::size_t batch) {
    log->push_back(entry("Evaluate(", begin, ",", batch, ")"));
    return next();
  }
  double next() {
    ++calls;
    return calls <= objectives.size() ? objectives[calls - 1] : static_cast<double>(calls);
  }
};

// The same without EvaluateWithGradient: the loop must call Evaluate, then Gradient.
struct SplitRecorder {
  log_t* log;
  std::size_t NumFunctions() const { return 6; }
  void Shuffle() { log->push_back("Shuffle"); }
  double Evaluate(const arma::mat&, std::size_t begin, std::size_t batch) const {
    log->push_back(entry("Evaluate(", begin, ",", batch, ")"));
    return 1;
  }
  void Gradient(const arma::mat& x, std::size_t begin, arma::mat& g, std::size_t batch) const {
    log->push_back(entry("Gradient(", begin, ",", batch, ")"));
    g.ones(x.n_rows, x.n_cols);
  }
};

// Every hook ensmallen's callbacks may have, as its callbacks declare them.
struct HookRecorder {
  log_t* log;
  std::size_t stop_at_step = 0;  // StepTaken returns true on this step (1-based; 0: never)
  std::size_t steps = 0;
  template <class O, class F, class M>
  void BeginOptimization(O&, F&, M&) { log->push_back("BeginOptimization"); }
  template <class O, class F, class M>
  bool BeginEpoch(O&, F&, const M&, std::size_t epoch, double objective) {
    log->push_back(entry("BeginEpoch(", epoch, ",", objective, ")"));
    return false;
  }
  template <class O, class F, class M>
  bool Evaluate(O&, F&, const M&, double objective) {
    log->push_back(entry("Evaluate hook(", objective, ")"));
    return false;
  }
  template <class O, class F, class M, class G>
  bool Gradient(O&, F&, const M&, G&) {
    log->push_back("Gradient hook");
    return false;
  }
  template <class O, class F, class M>
  bool StepTaken(O&, F&, M&) {
    log->push_back("StepTaken");
    return ++steps == stop_at_step;
  }
  template <class O, class F, class M>
  bool EndEpoch(O&, F&, const M&, std::size_t epoch, double objective) {
    log->push_back(entry("EndEpoch(", epoch, ",", objective, ")"));
    return false;
  }
  template <class O, class F, class M>
  void EndOptimization(O&, F&, M&) { log->push_back("EndOptimization"); }
};

struct StopOnEvaluate {
  template <class O, class F, class M>
  bool Evaluate(O&, F&, const M&, double) {
    return true;
  }
};
struct NoHooks {};
struct OnlyEnd {
  int* ends;
  template <class O, class F, class M>
  void EndOptimization(O&, F&, M&) {
    ++*ends;
  }
};
struct ClipToOne {
  template <class O, class F, class M, class G>
  void Gradient(O&, F&, const M&, G& g) {
    g.clamp(-1.0, 1.0);  // a batch sum of 4 becomes 1, its mean 0.25
  }
};

log_t step(const std::string& ewg, double objective) {
  return {ewg, entry("Evaluate hook(", objective, ")"), "Gradient hook", "StepTaken"};
}
log_t join(std::initializer_list<log_t> parts) {
  log_t all;
  for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

}  // namespace

// Written from ensmallen 3.11's sgd_impl.hpp: batches stop at the epoch end
// and at MaxIterations (counted in points); EndEpoch gets the mean objective,
// BeginEpoch the epoch's sum; Shuffle follows BeginEpoch; the return value is
// the sum over the last (here partial) epoch.
TEST_CASE("the call sequence is ens::SGD's: batches, epochs, shuffles, hooks and the return value") {
  log_t log;
  Recorder f{&log};
  HookRecorder hooks{&log};
  arma::mat x(2, 1, arma::fill::zeros);
  nestla::EnsmallenOptimizer opt{nestla::SGD<double>({.lr = 0.1}),
                                 {.batch_size = 4, .max_iterations = 25, .tolerance = 0, .shuffle = true}};
  const double result = opt.Optimize(f, x, hooks);

  const log_t expected = join({{"BeginOptimization", "BeginEpoch(1,0)"},
                                 step("EWG(0,4)", 1), step("EWG(4,4)", 2), step("EWG(8,2)", 3),
                                 {"EndEpoch(1,0.59999999999999998)", "BeginEpoch(2,6)", "Shuffle"},
                                 step("EWG(0,4)", 4), step("EWG(4,4)", 5), step("EWG(8,2)", 6),
                                 {"EndEpoch(2,1.5)", "BeginEpoch(3,15)", "Shuffle"},
                                 step("EWG(0,4)", 7), step("EWG(4,1)", 8),  // 25 points in all
                                 {"EndOptimization"}});
  CHECK(log == expected);
  CHECK(result == 15.0);  // 7 + 8
  // Eight steps, each with the mean gradient 1.
  CHECK(opt.optimizer().step_count() == 8);
  CHECK(x(0) == doctest::Approx(-0.8).epsilon(1e-15));
}

TEST_CASE("the loop ends within tolerance at an epoch's end, without a new epoch or shuffle") {
  log_t log;
  Recorder f{&log, 10, std::vector<double>(100, 1.0)};  // every epoch sums to 3
  HookRecorder hooks{&log};
  arma::mat x(1, 1, arma::fill::zeros);
  nestla::EnsmallenOptimizer opt{nestla::SGD<double>({.lr = 0.1}), {.batch_size = 4, .max_iterations = 0}};
  CHECK(opt.Optimize(f, x, hooks) == 3.0);
  const log_t expected = join({{"BeginOptimization", "BeginEpoch(1,0)"},
                                 step("EWG(0,4)", 1), step("EWG(4,4)", 1), step("EWG(8,2)", 1),
                                 {"EndEpoch(1,0.29999999999999999)", "BeginEpoch(2,3)", "Shuffle"},
                                 step("EWG(0,4)", 1), step("EWG(4,4)", 1), step("EWG(8,2)", 1),
                                 {"EndEpoch(2,0.29999999999999999)", "EndOptimization"}});
  CHECK(log == expected);
}

TEST_CASE("a non-finite epoch objective ends the loop and is returned") {
  log_t log;
  Recorder f{&log, 10, {1.0, std::numeric_limits<double>::infinity(), 2.0}};
  arma::mat x(1, 1, arma::fill::zeros);
  nestla::EnsmallenOptimizer opt{nestla::SGD<double>({.lr = 0.1}), {.batch_size = 4}};
  CHECK(std::isinf(opt.Optimize(f, x)));
  CHECK(log == log_t{"EWG(0,4)", "EWG(4,4)", "EWG(8,2)"});
}

TEST_CASE("a hook that returns true stops after the current step, Gradient hooks after a stopping Evaluate are skipped") {
  SUBCASE("StepTaken") {
    log_t log;
    Recorder f{&log};
    HookRecorder hooks{&log, 2};
    arma::mat x(1, 1, arma::fill::zeros);
    nestla::EnsmallenOptimizer opt{nestla::SGD<double>({.lr = 0.1}), {.batch_size = 4}};
    CHECK(opt.Optimize(f, x, hooks) == 3.0);  // the partial epoch's sum
    CHECK(log == join({{"BeginOptimization", "BeginEpoch(1,0)"}, step("EWG(0,4)", 1), step("EWG(4,4)", 2),
                         {"EndOptimization"}}));
  }
  SUBCASE("Evaluate, in the first of two callbacks") {
    log_t log;
    Recorder f{&log};
    HookRecorder hooks{&log};
    arma::mat x(1, 1, arma::fill::zeros);
    nestla::EnsmallenOptimizer opt{nestla::SGD<double>({.lr = 0.1}), {.batch_size = 4}};
    opt.Optimize(f, x, StopOnEvaluate{}, hooks);
    // The step is still taken, as ensmallen does; the later callback's Evaluate
    // and every Gradient hook are not called.
    CHECK(log == log_t{"BeginOptimization", "BeginEpoch(1,0)", "EWG(0,4)", "StepTaken", "EndOptimization"});
    CHECK(x(0) == doctest::Approx(-0.1));
  }
}

TEST_CASE("without EvaluateWithGradient the loop calls Evaluate then Gradient, ExactObjective re-evaluates at the end") {
  log_t log;
  SplitRecorder f{&log};
  arma::mat x(1, 1, arma::fill::zeros);
  nestla::EnsmallenOptimizer opt{nestla::SGD<double>({.lr = 0.1}),
                                 {.batch_size = 4, .max_iterations = 6, .shuffle = false, .exact_objective = true}};
  CHECK(opt.Optimize(f, x) == 2.0);  // two exact evaluations of 1
  CHECK(log == log_t{"Evaluate(0,4)", "Gradient(0,4)", "Evaluate(4,2)", "Gradient(4,2)", "Evaluate(0,4)",
                     "Evaluate(4,2)"});
}

TEST_CASE("a callback passed as const, one without hooks and one with only some are all handled") {
  log_t log;
  Recorder f{&log};
  const HookRecorder hooks{&log};
  int ends = 0;
  arma::mat x(1, 1, arma::fill::zeros);
  nestla::EnsmallenOptimizer opt{nestla::SGD<double>({.lr = 0.1}), {.batch_size = 10, .max_iterations = 10}};
  opt.Optimize(f, x, NoHooks{}, hooks, OnlyEnd{&ends});
  CHECK(ends == 1);
  CHECK(log.front() == "BeginOptimization");
  CHECK(log.back() == "EndOptimization");
}

TEST_CASE("a Gradient hook may change the summed gradient before it is averaged and stepped") {
  log_t log;
  Recorder f{&log, 4};
  arma::mat x(1, 1, arma::fill::zeros);
  nestla::EnsmallenOptimizer opt{nestla::SGD<double>({.lr = 1.0}), {.batch_size = 4, .max_iterations = 4}};
  opt.Optimize(f, x, ClipToOne{});
  CHECK(x(0) == -0.25);
}

// --- numerics ---------------------------------------------------------------

namespace {

// f(x) = sum_i |x - c_i|^2 over the columns c_i: minimum at their mean.
template <class eT>
struct Sphere {
  arma::Mat<eT> centers;
  std::size_t NumFunctions() const { return centers.n_cols; }
  void Shuffle() {}
  eT EvaluateWithGradient(const arma::Mat<eT>& x, std::size_t begin, arma::Mat<eT>& g, std::size_t batch) const {
    g.zeros(x.n_rows, x.n_cols);
    eT objective = 0;
    for (std::size_t i = begin; i < begin + batch; ++i) {
      const arma::Mat<eT> d = arma::vectorise(x) - centers.col(i);
      objective += arma::accu(d % d);
      g += eT(2) * arma::reshape(d, x.n_rows, x.n_cols);
    }
    return objective;
  }
};

}  // namespace

// Full batches make every step plain gradient descent on the mean: the
// iterate follows x_t = m + (1 - 2 lr)^t (x_0 - m) exactly.
TEST_CASE_TEMPLATE("full-batch SGD on a sphere follows the closed form for Mat, Row and Col iterates in float and double",
                   M, arma::mat, arma::fmat, arma::rowvec, arma::frowvec, arma::vec, arma::fvec) {
  using eT = typename M::elem_type;
  const std::size_t d = 3, n = 8, steps = 20;
  const double lr = 0.1;
  arma::Mat<eT> centers(d, n);
  for (arma::uword i = 0; i < centers.n_elem; ++i) centers(i) = eT(std::sin(1.0 + 3.0 * i));
  Sphere<eT> f{centers};
  M x = arma::conv_to<M>::from(arma::Col<eT>(d, arma::fill::value(eT(2))));
  nestla::EnsmallenOptimizer opt{nestla::SGD<eT>({.lr = lr}),
                                 {.batch_size = n, .max_iterations = steps * n, .tolerance = -1}};
  opt.Optimize(f, x);
  const arma::Col<double> mean = arma::conv_to<arma::Col<double>>::from(arma::mean(centers, 1));
  const double shrink = std::pow(1 - 2 * lr, static_cast<double>(steps));
  const double tol = std::is_same_v<eT, float> ? 1e-5 : 1e-14;
  for (std::size_t i = 0; i < d; ++i) CHECK(double(x(i)) == doctest::Approx(mean(i) + shrink * (2 - mean(i))).epsilon(tol));
  CHECK(opt.optimizer().step_count() == steps);
}

namespace {

// The generalized Rosenbrock function, one separable term per i:
//   f_i(x) = 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2, minimum at x = 1.
// Only Evaluate and Gradient (no EvaluateWithGradient), visited in shuffled order.
struct Rosenbrock {
  std::vector<arma::uword> order;
  std::mt19937 rng{3};
  std::size_t NumFunctions() const { return order.size(); }
  void Shuffle() { std::shuffle(order.begin(), order.end(), rng); }
  double Evaluate(const arma::mat& x, std::size_t begin, std::size_t batch) const {
    double objective = 0;
    for (std::size_t k = begin; k < begin + batch; ++k) {
      const arma::uword i = order[k];
      objective += 100 * std::pow(x(i + 1) - x(i) * x(i), 2) + std::pow(1 - x(i), 2);
    }
    return objective;
  }
  void Gradient(const arma::mat& x, std::size_t begin, arma::mat& g, std::size_t batch) const {
    g.zeros(x.n_rows, x.n_cols);
    for (std::size_t k = begin; k < begin + batch; ++k) {
      const arma::uword i = order[k];
      const double r = x(i + 1) - x(i) * x(i);
      g(i) += -400 * x(i) * r - 2 * (1 - x(i));
      g(i + 1) += 200 * r;
    }
  }
};

}  // namespace

TEST_CASE("Nested Lookahead over Adam finds the minimum of a separable Rosenbrock function, stopping on tolerance") {
  Rosenbrock f{{0, 1, 2, 3, 4}};
  arma::vec x{-1.2, 1, -1.2, 1, -1.2, 1};
  // Batches of all five terms (visited in a new order every epoch): each epoch
  // is one step, and the loop stops when an epoch's objective settles.
  nestla::EnsmallenOptimizer opt{nestla::nested<2>(nestla::Adam<double>({.lr = 0.001}), {{.k = 5}, {.k = 5}}),
                                 {.batch_size = 5, .max_iterations = 2000000, .tolerance = 1e-14}};
  const double objective = opt.Optimize(f, x);
  CHECK(opt.optimizer().base().step_count() < 400000);  // stopped before MaxIterations
  CHECK(objective < 1e-9);
  for (double v : x) CHECK(v == doctest::Approx(1.0).epsilon(1e-5));
}

namespace {

using LR = example::LogisticRegressionFunction<double>;

auto make_nested() {
  return nestla::nested<2>(nestla::Adam<double>({.lr = 0.02, .weight_decay = 1e-4}),
                           {{.k = 3, .alpha = 0.5, .momentum = nestla::Momentum::pullback}, {.k = 2, .alpha = 0.8}});
}

}  // namespace

TEST_CASE("an mlpack-shaped logistic regression trains bit-identically to a plain loop, Lookahead cycles continue "
          "across Optimize calls") {
  const auto data = example::make_data<double>(100, 10, 5, 11);  // 100 points: batches of 32, 32, 32, 4
  LR f(data.train_x, data.train_y, 1e-3), f_ref = f;
  arma::rowvec w(6, arma::fill::zeros), w_ref = w;
  nestla::EnsmallenOptimizer opt{make_nested(), {.batch_size = 32, .max_iterations = 100, .tolerance = -1}};
  opt.Optimize(f, w);  // one epoch: 4 steps
  CHECK(opt.optimizer().inner().syncs() == 1);
  CHECK(opt.optimizer().inner().cycles_since_sync() == 1);
  opt.Optimize(f, w);  // 4 more: the inner level's cycle goes on from step 4
  CHECK(opt.optimizer().base().step_count() == 8);
  CHECK(opt.optimizer().inner().syncs() == 2);
  CHECK(opt.optimizer().inner().cycles_since_sync() == 2);
  CHECK(opt.optimizer().syncs() == 1);

  auto ref = make_nested();
  example::train_plain(ref, f_ref, w_ref, 32, 200);
  CHECK(arma::approx_equal(w, w_ref, "absdiff", 0.0));  // bit for bit
  CHECK(f.MeanObjective(w) < f.MeanObjective(arma::rowvec(6, arma::fill::zeros)));
}

TEST_CASE("ResetPolicy() = true restarts every Optimize from the optimizer as wrapped, keeping its options") {
  const auto data = example::make_data<double>(100, 10, 5, 12);
  LR f(data.train_x, data.train_y, 1e-3);
  arma::rowvec w(6, arma::fill::zeros);
  nestla::EnsmallenOptimizer opt{make_nested(), {.batch_size = 32, .max_iterations = 100, .shuffle = false}};
  opt.ResetPolicy() = true;
  opt.Optimize(f, w);
  opt.optimizer().base().set_lr(0.01);
  const arma::rowvec start = w;
  opt.Optimize(f, w);
  CHECK(opt.optimizer().base().step_count() == 4);
  CHECK(opt.optimizer().inner().syncs() == 1);
  CHECK(opt.StepSize() == 0.01);

  auto fresh = make_nested();
  fresh.base().set_lr(0.01);
  LR f_ref(data.train_x, data.train_y, 1e-3);
  arma::rowvec w_ref = start;
  nestla::EnsmallenOptimizer ref{fresh, {.batch_size = 32, .max_iterations = 100, .shuffle = false}};
  ref.Optimize(f_ref, w_ref);
  CHECK(arma::approx_equal(w, w_ref, "absdiff", 0.0));
}

TEST_CASE("the iterate is updated in place and the gradient's memory is read afresh after every call") {
  // As mlpack's layers do, this function reads the parameters through its own
  // alias of their memory rather than through its argument, and it hands back
  // the gradient in newly allocated memory every time.
  struct Aliasing {
    const double* params;
    std::set<const double*>* gradient_buffers;
    std::size_t NumFunctions() const { return 5; }
    void Shuffle() {}
    double EvaluateWithGradient(const arma::mat& x, std::size_t begin, arma::mat& g, std::size_t batch) const {
      const arma::mat seen(const_cast<double*>(params), x.n_rows, x.n_cols, false, true);
      arma::mat fresh(x.n_rows, x.n_cols);
      for (arma::uword i = 0; i < fresh.n_elem; ++i) fresh(i) = double(batch) * (seen(i) - double(begin + i % 3));
      g = std::move(fresh);
      gradient_buffers->insert(g.memptr());
      return 0;
    }
  };
  std::set<const double*> buffers;
  arma::mat x(4, 5, arma::fill::ones);  // 20 elements: Armadillo allocates (no local storage)
  const double* memory = x.memptr();
  Aliasing f{memory, &buffers};
  nestla::EnsmallenOptimizer opt{nestla::Adam<double>({.lr = 0.1}),
                                 {.batch_size = 2, .max_iterations = 25, .tolerance = -1}};
  opt.Optimize(f, x);
  CHECK(x.memptr() == memory);
  CHECK(buffers.size() > 1);

  // The same updates from a loop that passes the parameters explicitly.
  arma::mat y(4, 5, arma::fill::ones), g;
  nestla::Adam<double> ref({.lr = 0.1});
  std::set<const double*> unused;
  Aliasing fy{y.memptr(), &unused};
  for (std::size_t i = 0, current = 0; i < 25;) {
    const std::size_t b = std::min<std::size_t>({2, 25 - i, 5 - current});
    fy.EvaluateWithGradient(y, current, g, b);
    if (b != 1) g /= double(b);
    ref.step(y, g);
    i += b;
    current = (current + b) % 5;
  }
  CHECK(arma::approx_equal(x, y, "absdiff", 0.0));
}

// --- contract ---------------------------------------------------------------

namespace {

// A minimal optimizer that is none of nestla's: gradient descent with a fixed
// step, no options. The adaptor needs only step() and base().
template <class A>
concept has_step_size = requires(A& a) { a.StepSize(); };

struct PlainDescent {
  double step_size = 0.5;
  std::size_t steps = 0;
  template <class P, class G>
  bool step(P& p, const G& g) {
    p -= step_size * g;
    ++steps;
    return true;
  }
  PlainDescent& base() { return *this; }
};

}  // namespace

TEST_CASE("any type with step() and base() works, StepSize() exists only where the base has options().lr") {
  arma::mat centers(1, 2);
  centers(0) = 1;  // one coordinate, centers 1 and 3
  centers(1) = 3;
  Sphere<double> f{centers};
  arma::mat x(1, 1, arma::fill::zeros);
  nestla::EnsmallenOptimizer opt{PlainDescent{0.25}, {.batch_size = 2, .max_iterations = 2}};
  opt.Optimize(f, x);
  CHECK(x(0) == 1.0);  // mean gradient 2 (0 - 2) = -4, step 0.25
  CHECK(opt.optimizer().steps == 1);
  static_assert(!has_step_size<decltype(opt)>);
  static_assert(has_step_size<nestla::EnsmallenOptimizer<nestla::Lookahead<nestla::SGD<double>>>>);
}

TEST_CASE("bad settings and a state of another size throw before any callback runs or anything changes") {
  log_t log;
  Recorder f{&log};
  HookRecorder hooks{&log};
  arma::mat x(3, 1, arma::fill::ones);
  nestla::EnsmallenOptimizer opt{nestla::Adam<double>{}, {.batch_size = 0}};
  CHECK_THROWS_WITH_AS(opt.Optimize(f, x, hooks), doctest::Contains("BatchSize() = 0"), nestla::invalid_option);
  opt.BatchSize() = 4;
  Recorder empty{&log, 0};
  CHECK_THROWS_WITH_AS(opt.Optimize(empty, x, hooks), doctest::Contains("NumFunctions() = 0"), nestla::invalid_option);
  CHECK(log.empty());

  opt.MaxIterations() = 4;
  opt.Optimize(f, x);
  log.clear();
  arma::mat bigger(4, 1, arma::fill::ones);
  CHECK_THROWS_WITH_AS(opt.Optimize(f, bigger, hooks), doctest::Contains("created for 3"), nestla::layout_error);
  CHECK(log.empty());
  CHECK(arma::all(arma::vectorise(bigger) == 1.0));
  opt.ResetPolicy() = true;  // starts afresh, so another size is fine
  opt.Optimize(f, bigger);
  CHECK(opt.optimizer().step_count() == 1);
}

// --- mlpack -------------------------------------------------------------------
//
// mlpack's models accept an optimizer only when its trait finds an Optimize of
// exactly this shape (mlpack/core/util/ens_traits.hpp and sfinae_utility.hpp):
// &T::Optimize converted to  M::elem_type (T::*)(F&, M&)  or  void (T::*)(F&, M&),
// with F the model's function type and M its parameters' type. Otherwise the
// optimizer is taken for a callback and the default optimizer (L-BFGS) trains
// the model without a word. Written out here as mlpack writes it.
namespace mlpack_shaped {

template <class U, U>
struct SigCheck : std::true_type {};
template <class T, class Sig, class = std::true_type>
struct HasOptimize : std::false_type {};
template <class T, class Sig>
struct HasOptimize<T, Sig, std::integral_constant<bool, SigCheck<Sig, &T::Optimize>::value>> : std::true_type {};

template <class Optimizer, class F, class M, bool = std::is_class_v<std::remove_cvref_t<Optimizer>>>
struct IsEnsOptimizer : std::false_type {};
template <class Optimizer, class F, class M>
struct IsEnsOptimizer<Optimizer, F, M, true> {
  using O = std::remove_cvref_t<Optimizer>;
  static constexpr bool value = HasOptimize<O, typename M::elem_type (O::*)(F&, M&)>::value ||
                                HasOptimize<O, void (O::*)(F&, M&)>::value;
};

template <class... C>
inline constexpr bool IsEnsCallbackTypes = (std::is_class_v<std::remove_cvref_t<C>> && ...);

// Stands in for ens::L_BFGS, the default optimizer: counts its runs.
struct DefaultOptimizer {
  static inline int runs = 0;
  template <class F, class M, class... C>
  typename M::elem_type Optimize(F&, M&, C&&...) {
    ++runs;
    return 0;
  }
};

// LogisticRegression's Train overloads, reduced to their selection logic.
template <class MatType = arma::mat>
class LogisticRegression {
 public:
  using ElemType = typename MatType::elem_type;
  using RowType = arma::Row<ElemType>;
  using FunctionType = example::LogisticRegressionFunction<ElemType>;

  template <class OptimizerType = DefaultOptimizer, class... CallbackTypes,
            class = std::enable_if_t<IsEnsCallbackTypes<CallbackTypes...>>>
  ElemType Train(const MatType& predictors, const arma::Row<std::size_t>& responses, CallbackTypes&&... callbacks) {
    OptimizerType optimizer;
    return Train(predictors, responses, optimizer, std::forward<CallbackTypes>(callbacks)...);
  }

  template <class OptimizerType, class... CallbackTypes,
            class = std::enable_if_t<IsEnsOptimizer<OptimizerType, FunctionType, RowType>::value>,
            class = std::enable_if_t<IsEnsCallbackTypes<CallbackTypes...>>>
  ElemType Train(const MatType& predictors, const arma::Row<std::size_t>& responses, OptimizerType& optimizer,
                 CallbackTypes&&... callbacks) {
    FunctionType function(predictors, arma::conv_to<RowType>::from(responses), lambda);
    if (parameters.n_elem != predictors.n_rows + 1) parameters.zeros(predictors.n_rows + 1);
    return optimizer.Optimize(function, parameters, callbacks...);
  }

  RowType parameters;
  double lambda = 1e-3;
};

// Optimizers the trait refuses, each off by one detail.
struct ConstOptimize {
  template <class F, class M, class... C>
  typename M::elem_type Optimize(F&, M&, C&&...) const {
    return 0;
  }
};
struct OtherReturnType {
  template <class F, class M, class... C>
  bool Optimize(F&, M&, C&&...) {
    return true;
  }
};
struct NonTemplateParameter {
  double Optimize(example::LogisticRegressionFunction<double>&, arma::mat&) { return 0; }
};

}  // namespace mlpack_shaped

TEST_CASE_TEMPLATE("mlpack's optimizer trait accepts the adaptor over every optimizer kind", Opt, nestla::SGD<double>,
                   nestla::Adam<double>, nestla::AdamW<double>, nestla::Lookahead<nestla::Adam<double>>,
                   nestla::nested_t<2, nestla::Adam<double>>, nestla::nested_t<3, nestla::SGD<double>>) {
  using Model = mlpack_shaped::LogisticRegression<arma::mat>;
  static_assert(
      mlpack_shaped::IsEnsOptimizer<nestla::EnsmallenOptimizer<Opt>, Model::FunctionType, Model::RowType>::value);
  static_assert(mlpack_shaped::IsEnsOptimizer<nestla::EnsmallenOptimizer<Opt>&, Model::FunctionType,
                                              Model::RowType>::value);
  // ensmallen's own MatType (a Mat) and any other function type are accepted the same way.
  static_assert(mlpack_shaped::IsEnsOptimizer<nestla::EnsmallenOptimizer<Opt>, Sphere<double>, arma::mat>::value);
}

TEST_CASE("model.Train(X, y, adaptor) trains with the adaptor, where a near-miss falls back to the default optimizer") {
  using namespace mlpack_shaped;
  using Model = LogisticRegression<arma::mat>;
  static_assert(IsEnsOptimizer<DefaultOptimizer, Model::FunctionType, Model::RowType>::value);
  static_assert(!IsEnsOptimizer<ConstOptimize, Model::FunctionType, Model::RowType>::value);
  static_assert(!IsEnsOptimizer<OtherReturnType, Model::FunctionType, Model::RowType>::value);
  static_assert(!IsEnsOptimizer<NonTemplateParameter, Model::FunctionType, Model::RowType>::value);

  const auto data = example::make_data<double>(2000, 1000, 8, 21);
  const arma::Row<std::size_t> labels = arma::conv_to<arma::Row<std::size_t>>::from(data.train_y);

  // The trap, shown: the near-miss is silently passed on as a callback.
  Model fooled;
  ConstOptimize near_miss;
  DefaultOptimizer::runs = 0;
  fooled.Train(data.train_x, labels, near_miss);
  CHECK(DefaultOptimizer::runs == 1);

  Model model;
  nestla::EnsmallenOptimizer opt{nestla::nested<2>(nestla::Adam<double>({.lr = 0.01}), {{.k = 5}, {.k = 5}}),
                                 {.batch_size = 32, .max_iterations = 10 * 2000, .tolerance = -1}};
  const double objective = model.Train(data.train_x, labels, opt);
  CHECK(DefaultOptimizer::runs == 1);                    // not called again
  CHECK(opt.optimizer().base().step_count() == 630);     // 10 epochs of 63 batches
  CHECK(model.parameters.n_cols == 9);
  CHECK(std::isfinite(objective));
  CHECK(example::accuracy(arma::mat(model.parameters), data.test_x, data.test_y) > 0.7);

  // A second Train continues the same optimizer state (ResetPolicy() is false).
  model.Train(data.train_x, labels, opt);
  CHECK(opt.optimizer().base().step_count() == 1260);
}

TEST_CASE("a float model trains through the adaptor over float optimizers") {
  using Model = mlpack_shaped::LogisticRegression<arma::fmat>;
  const auto data = example::make_data<float>(1000, 500, 4, 5);
  const arma::Row<std::size_t> labels = arma::conv_to<arma::Row<std::size_t>>::from(data.train_y);
  Model model;
  nestla::EnsmallenOptimizer opt{nestla::Lookahead{nestla::AdamW<float>({.lr = 0.01f}), {.k = 5}},
                                 {.batch_size = 16, .max_iterations = 5 * 1000, .tolerance = -1}};
  static_assert(std::is_same_v<decltype(model.Train(data.train_x, labels, opt)), float>);
  model.Train(data.train_x, labels, opt);
  CHECK(opt.optimizer().base().step_count() == 5 * 63);
  CHECK(example::accuracy(arma::fmat(model.parameters), data.test_x, data.test_y) > 0.7);
}
