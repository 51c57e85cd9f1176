// A logistic regression written to ensmallen's separable-function API, in mlpack's shape, and data to train it on.
//
// Parameters are a 1 x (d + 1) row, intercept first, as mlpack's
// LogisticRegression keeps them; predictors are d x N (one point per column),
// labels 0 or 1. The objective of points [begin, begin + n) is
//   sum_i softplus(z_i) - y_i z_i  +  lambda n / (2 N) |w|^2,   z_i = b + w . x_i
// so the epoch sums to the L2-regularized negative log-likelihood.
#pragma once

#include <armadillo>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

namespace example {

template <class eT = double>
class LogisticRegressionFunction {
 public:
  LogisticRegressionFunction(arma::Mat<eT> predictors, arma::Row<eT> labels, double lambda, std::uint64_t seed = 7)
      : x_(std::move(predictors)), y_(std::move(labels)), lambda_(lambda), rng_(seed) {}

  // --- ensmallen's separable-function API ----------------------------------
  std::size_t NumFunctions() const { return x_.n_cols; }

  // A new visiting order for the next epoch (deterministic, from the seed).
  void Shuffle() {
    std::vector<arma::uword> order(x_.n_cols);
    std::iota(order.begin(), order.end(), arma::uword(0));
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng_() % i]);
    const arma::uvec index(order);
    x_ = arma::Mat<eT>(x_.cols(index));
    y_ = arma::Row<eT>(y_.cols(index));
  }

  eT Evaluate(const arma::Mat<eT>& w, std::size_t begin, std::size_t n) const {
    const arma::Row<eT> z = scores(w, begin, n);
    return loss(z, begin, n) + penalty(w, n);
  }

  eT EvaluateWithGradient(const arma::Mat<eT>& w, std::size_t begin, arma::Mat<eT>& g, std::size_t n) const {
    const arma::Row<eT> z = scores(w, begin, n);
    const arma::Row<eT> residual = eT(1) / (eT(1) + arma::exp(-z)) - y_.cols(begin, begin + n - 1);
    g.set_size(1, w.n_elem);
    g(0) = arma::accu(residual);
    g.tail_cols(w.n_elem - 1) =
        residual * x_.cols(begin, begin + n - 1).t() + eT(lambda_ * n / x_.n_cols) * w.tail_cols(w.n_elem - 1);
    return loss(z, begin, n) + penalty(w, n);
  }

  // --- for reporting ----------------------------------------------------------
  // Mean objective per point over all data.
  eT MeanObjective(const arma::Mat<eT>& w) const { return Evaluate(w, 0, x_.n_cols) / eT(x_.n_cols); }

 private:
  arma::Row<eT> scores(const arma::Mat<eT>& w, std::size_t begin, std::size_t n) const {
    return w(0) + w.tail_cols(w.n_elem - 1) * x_.cols(begin, begin + n - 1);
  }
  // softplus(z) - y z, computed without overflow for large |z|.
  eT loss(const arma::Row<eT>& z, std::size_t begin, std::size_t n) const {
    const arma::Row<eT> y = y_.cols(begin, begin + n - 1);
    return arma::accu(arma::clamp(z, eT(0), arma::Datum<eT>::inf) + arma::log1p(arma::exp(-arma::abs(z))) - y % z);
  }
  eT penalty(const arma::Mat<eT>& w, std::size_t n) const {
    const auto tail = w.tail_cols(w.n_elem - 1);
    return eT(lambda_ * n / (2.0 * x_.n_cols)) * arma::accu(tail % tail);
  }

  arma::Mat<eT> x_;
  arma::Row<eT> y_;
  double lambda_;
  std::mt19937_64 rng_;
};

// Fraction of points whose label the parameters predict (probability >= 0.5).
template <class eT>
double accuracy(const arma::Mat<eT>& w, const arma::Mat<eT>& x, const arma::Row<eT>& y) {
  const arma::Row<eT> z = w(0) + w.tail_cols(w.n_elem - 1) * x;
  std::size_t right = 0;
  for (arma::uword i = 0; i < x.n_cols; ++i) right += (z(i) >= 0) == (y(i) > eT(0.5));
  return static_cast<double>(right) / static_cast<double>(x.n_cols);
}

// Points x ~ N(0, I) in d dimensions with labels drawn from a logistic model
// whose weights are N(0, 4 / d), intercept 0.5: even that model predicts only
// about 78% of the labels. Deterministic from the seed.
template <class eT = double>
struct Data {
  arma::Mat<eT> train_x, test_x;
  arma::Row<eT> train_y, test_y;
};

template <class eT = double>
Data<eT> make_data(std::size_t train, std::size_t test, std::size_t d, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&] { return (static_cast<double>(rng() >> 11) + 0.5) / 9007199254740992.0; };
  auto normal = [&] { return std::sqrt(-2 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()); };
  std::vector<double> truth(d);
  for (auto& t : truth) t = normal() * 2 / std::sqrt(static_cast<double>(d));
  auto draw = [&](std::size_t n, arma::Mat<eT>& x, arma::Row<eT>& y) {
    x.set_size(d, n);
    y.set_size(n);
    for (std::size_t i = 0; i < n; ++i) {
      double z = 0.5;
      for (std::size_t j = 0; j < d; ++j) {
        const double v = normal();
        x(j, i) = static_cast<eT>(v);
        z += truth[j] * v;
      }
      y(i) = uniform() < 1 / (1 + std::exp(-z)) ? eT(1) : eT(0);
    }
  };
  Data<eT> data;
  draw(train, data.train_x, data.train_y);
  draw(test, data.test_x, data.test_y);
  return data;
}

}  // namespace example
