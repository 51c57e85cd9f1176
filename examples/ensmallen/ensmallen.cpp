// From ensmallen / mlpack: Nested Lookahead over Adam trains a logistic regression through ensmallen's Optimize().
#include <nestla/ensmallen.hpp>

#include <cstdio>

#include "logistic_regression.hpp"  // a separable function for ensmallen, in mlpack's shape

// An ensmallen-style callback: the adaptor calls the hooks it has.
struct PrintLoss {
  template <class Optimizer, class Function, class Mat>
  void EndEpoch(Optimizer&, Function&, const Mat&, std::size_t epoch, double objective) {
    if (epoch % 5 == 0) std::printf("epoch %2zu: mean objective %.4f\n", epoch, objective);
  }
};

int main() {
  const auto data = example::make_data<double>(4000, 1000, 20, /*seed=*/1);
  example::LogisticRegressionFunction<double> f(data.train_x, data.train_y, /*lambda=*/1e-3);
  arma::rowvec w(21, arma::fill::zeros);  // intercept, then one weight per feature

  // The one line: a nestla optimizer where ensmallen's go. Here k counts
  // optimizer steps, i.e. batches of 32 points.
  nestla::EnsmallenOptimizer opt{nestla::nested<2>(nestla::Adam<double>({.lr = 0.01}), {{.k = 5}, {.k = 5}}),
                                 {.batch_size = 32, .max_iterations = 20 * 4000}};

  opt.Optimize(f, w, PrintLoss{});  // in mlpack: model.Train(X, y, opt);
  const double acc = example::accuracy(arma::mat(w), data.test_x, data.test_y);
  std::printf("%llu Adam steps, %llu outer syncs; test accuracy %.3f\n",
              static_cast<unsigned long long>(opt.optimizer().base().step_count()),
              static_cast<unsigned long long>(opt.optimizer().syncs()), acc);
  return acc > 0.75 ? 0 : 1;  // the labels' own model scores about 0.78
}
