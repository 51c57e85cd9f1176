// nestla optimizers through nestla::EnsmallenOptimizer on one logistic regression: quality per points seen, time per point.
//
// For Adam, AdamW, Lookahead<Adam> and Lookahead<Lookahead<Adam>> (lr 0.01,
// k = 5 and alpha = 0.5 at every level), after the same numbers of points:
// the mean training objective and the test accuracy. Then the time per point
// of Optimize() against examples/ensmallen/plain_loop.hpp (the same function
// calls and steps, no adaptor), measured in alternation and compared run by
// run; the two must end at bit-identical parameters.
#include <nestla/ensmallen.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <ctime>
#include <cstdio>
#include <string>
#include <vector>

#include "logistic_regression.hpp"
#include "plain_loop.hpp"

namespace {

struct Settings {
  std::size_t train = 20000, test = 5000, dim = 50, batch = 32, reps = 15, timed_epochs = 25;
  double lambda = 1e-4;
  std::vector<double> epochs{0.1, 1, 10};
};

using Function = example::LogisticRegressionFunction<double>;

template <class Make>
void quality_row(const char* name, Make make, const example::Data<double>& data, const Settings& s) {
  std::printf("| %s |", name);
  for (double e : s.epochs) {
    const auto points = static_cast<std::size_t>(e * static_cast<double>(s.train));
    Function f(data.train_x, data.train_y, s.lambda);
    arma::rowvec w(s.dim + 1, arma::fill::zeros);
    nestla::EnsmallenOptimizer opt{make(), {.batch_size = s.batch, .max_iterations = points, .tolerance = -1}};
    opt.Optimize(f, w);
    std::printf(" %.4f / %.4f |", f.MeanObjective(w), example::accuracy(arma::mat(w), data.test_x, data.test_y));
  }
  std::printf("\n");
}

// A separable function that does no work: times the loop around the steps.
struct Idle {
  std::size_t n;
  std::size_t NumFunctions() const { return n; }
  void Shuffle() {}
  double EvaluateWithGradient(const arma::mat&, std::size_t, arma::mat& g, std::size_t batch) const {
    g.fill(static_cast<double>(batch));
    return 0;
  }
};

// CPU time of this process, in nanoseconds.
double cpu_ns() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e9 + static_cast<double>(t.tv_nsec);
}

// The minimum of the whole training objective by Newton's method (the
// objective is strictly convex for lambda > 0): the floor for the table.
arma::rowvec newton_optimum(const example::Data<double>& data, double lambda) {
  const arma::uword d = data.train_x.n_rows, n = data.train_x.n_cols;
  const arma::mat x = arma::join_cols(arma::ones<arma::rowvec>(n), data.train_x);  // (d + 1) x n, intercept first
  arma::vec w(d + 1, arma::fill::zeros);
  arma::vec ridge(d + 1, arma::fill::value(lambda));
  ridge(0) = 0;
  for (int it = 0; it < 50; ++it) {
    const arma::rowvec p = 1 / (1 + arma::exp(-(w.t() * x)));
    const arma::vec grad = x * (p - data.train_y).t() + ridge % w;
    const arma::mat hess = x * arma::diagmat(p % (1 - p)) * x.t() + arma::diagmat(ridge);
    const arma::vec delta = arma::solve(hess, grad);
    w -= delta;
    if (arma::norm(delta) < 1e-13 * (1 + arma::norm(w))) break;
  }
  return w.t();
}

template <class Make, class F>
void timing_row(const char* name, Make make, const F& function, const Settings& s, double per = 1) {
  const std::size_t points = s.timed_epochs * s.train;
  std::vector<double> adaptor_ns, plain_ns, ratios;
  bool identical = true;
  for (std::size_t r = 0; r < s.reps; ++r) {
    F f1 = function, f2 = function;
    arma::rowvec w1(s.dim + 1, arma::fill::zeros), w2 = w1;
    nestla::EnsmallenOptimizer opt{make(), {.batch_size = s.batch, .max_iterations = points, .tolerance = -1}};
    auto plain = make();
    // Alternate which goes first, so that drift in the machine's speed falls on both.
    double t_adaptor = 0, t_plain = 0;
    auto run_adaptor = [&] {
      const double t0 = cpu_ns();
      opt.Optimize(f1, w1);
      t_adaptor = cpu_ns() - t0;
    };
    auto run_plain = [&] {
      const double t0 = cpu_ns();
      example::train_plain(plain, f2, w2, s.batch, points);
      t_plain = cpu_ns() - t0;
    };
    if (r % 2 == 0) run_adaptor(), run_plain();
    else run_plain(), run_adaptor();
    identical = identical && arma::approx_equal(w1, w2, "absdiff", 0.0);
    adaptor_ns.push_back(t_adaptor * per / static_cast<double>(points));
    plain_ns.push_back(t_plain * per / static_cast<double>(points));
    ratios.push_back(t_adaptor / t_plain);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("| %s | %.1f | %.1f | %.3f (%.3f-%.3f) | %s |\n", name, median(adaptor_ns), median(plain_ns), median(ratios),
              *std::min_element(ratios.begin(), ratios.end()), *std::max_element(ratios.begin(), ratios.end()),
              identical ? "yes" : "NO");
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  CLI::App app{"nestla optimizers through nestla::EnsmallenOptimizer on a logistic regression"};
  app.add_option("--train", s.train, "training points");
  app.add_option("--test", s.test, "test points");
  app.add_option("--dim", s.dim, "features (parameters: dim + 1)");
  app.add_option("--batch", s.batch, "batch size");
  app.add_option("--lambda", s.lambda, "L2 regularization");
  app.add_option("--epochs", s.epochs, "budgets for the quality table, in epochs");
  app.add_option("--timed-epochs", s.timed_epochs, "epochs per timed run");
  app.add_option("--reps", s.reps, "timed runs per optimizer and side");
  CLI11_PARSE(app, argc, argv);

  const auto data = example::make_data<double>(s.train, s.test, s.dim, 1);
  auto adam = [] { return nestla::Adam<double>({.lr = 0.01}); };
  auto adamw = [] { return nestla::AdamW<double>({.lr = 0.01}); };
  auto lookahead = [&] { return nestla::Lookahead{adam(), {.k = 5, .alpha = 0.5}}; };
  auto nested = [&] { return nestla::nested<2>(adam(), {{.k = 5, .alpha = 0.5}, {.k = 5, .alpha = 0.5}}); };

  std::printf("Logistic regression: %zu training points, %zu test points, %zu features, lambda %g; batch %zu; "
              "lr 0.01 (AdamW: weight_decay 0.01), k = 5 and alpha = 0.5 at every Lookahead level.\n\n",
              s.train, s.test, s.dim, s.lambda, s.batch);
  std::printf("Mean training objective / test accuracy after\n\n| optimizer |");
  for (double e : s.epochs)
    std::printf(" %g epochs (%zu points, %zu steps) |", e, static_cast<std::size_t>(e * static_cast<double>(s.train)),
                (static_cast<std::size_t>(e * static_cast<double>(s.train)) + s.batch - 1) / s.batch);
  std::printf("\n|---|");
  for (std::size_t i = 0; i < s.epochs.size(); ++i) std::printf("---|");
  std::printf("\n");
  quality_row("Adam", adam, data, s);
  quality_row("AdamW", adamw, data, s);
  quality_row("Lookahead<Adam>", lookahead, data, s);
  quality_row("Lookahead<Lookahead<Adam>>", nested, data, s);
  {
    const arma::rowvec best = newton_optimum(data, s.lambda);
    const Function f(data.train_x, data.train_y, s.lambda);
    std::printf("| optimum (Newton's method) |");
    for (std::size_t i = 0; i < s.epochs.size(); ++i)
      std::printf(" %.4f / %.4f |", f.MeanObjective(best), example::accuracy(arma::mat(best), data.test_x, data.test_y));
    std::printf("\n");
  }

  std::printf("\nCPU time per point over %zu epochs (ns; medians of %zu runs per side, alternating), Optimize() against "
              "the plain loop\n\n| optimizer | Optimize() | plain loop | ratio (min-max) | same parameters |\n"
              "|---|---|---|---|---|\n",
              s.timed_epochs, s.reps);
  const Function f(data.train_x, data.train_y, s.lambda);
  timing_row("Adam", adam, f, s);
  timing_row("AdamW", adamw, f, s);
  timing_row("Lookahead<Adam>", lookahead, f, s);
  timing_row("Lookahead<Lookahead<Adam>>", nested, f, s);

  std::printf("\nThe same with a function that does no work: CPU time per step (ns), i.e. the loop and the step alone\n\n"
              "| optimizer | Optimize() | plain loop | ratio (min-max) | same parameters |\n|---|---|---|---|---|\n");
  const Idle idle{s.train};
  const double batch = static_cast<double>(s.batch);
  timing_row("Adam", adam, idle, s, batch);
  timing_row("AdamW", adamw, idle, s, batch);
  timing_row("Lookahead<Adam>", lookahead, idle, s, batch);
  timing_row("Lookahead<Lookahead<Adam>>", nested, idle, s, batch);
}
