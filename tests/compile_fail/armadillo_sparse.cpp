// Must not compile: nestla updates dense storage only.
#include <nestla/armadillo.hpp>

void step_on_sparse(arma::sp_mat& m, const arma::sp_mat& g) {
  nestla::SGD<double> sgd;
  sgd.step(m, g);
}
