// Must not compile: ensmallen's separable-function API needs Shuffle(), which this function lacks.
#include <nestla/ensmallen.hpp>

struct NoShuffle {
  std::size_t NumFunctions() const { return 4; }
  double EvaluateWithGradient(const arma::mat& x, std::size_t, arma::mat& g, std::size_t) const {
    g = x;
    return 0;
  }
};

double optimize_without_shuffle(arma::mat& x) {
  NoShuffle f;
  nestla::EnsmallenOptimizer opt{nestla::SGD<double>{}};
  return opt.Optimize(f, x);
}
