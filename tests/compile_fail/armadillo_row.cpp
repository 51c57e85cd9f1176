// Must not compile: a row of a column-major matrix is strided.
#include <nestla/armadillo.hpp>

void step_on_a_row(arma::mat& m, const arma::mat& g) {
  nestla::SGD<double> sgd;
  sgd.step(m.row(1), g.row(1));
}
