// Eigen Matrix, Array, Map, Ref and contiguous blocks give results bit-identical to std::vector.
#include <doctest/doctest.h>

#include <nestla/eigen.hpp>

#include <Eigen/Core>
#include <tuple>
#include <vector>

#include "container_check.hpp"

TEST_CASE_TEMPLATE("Eigen containers and a tuple mixing them with std::vector match std::vector", T, float, double) {
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const auto tr = check::make<T>({37, 12, 1, 64, 5});
  auto from = [](const std::vector<T>& v) { return Eigen::Map<const Vec>(v.data(), static_cast<Eigen::Index>(v.size())); };

  Vec p0 = from(tr.init[0]);
  Mat p1 = from(tr.init[1]).reshaped(3, 4);
  Arr p2 = from(tr.init[2]).array();
  std::vector<T> raw3 = tr.init[3];
  Eigen::Map<RowMat> p3(raw3.data(), 8, 8);
  Mat big(5, 3);  // the middle column of a column-major matrix is contiguous
  big.setZero();
  big.col(1) = from(tr.init[4]);
  Eigen::Ref<Vec> p4 = big.col(1);
  auto params = std::tie(p0, p1, p2, p3, p4);

  Vec g0(37), g1v(12), g4(5);
  Mat g1(3, 4);
  Arr g2(1);
  RowMat g3(8, 8);
  auto grads = std::tie(g0, g1, g2, g3, g4);
  check::same_as_vector(
      tr, params, grads,
      [&](std::size_t s) {
        const auto& g = tr.grads[s];
        g0 = from(g[0]);
        g1 = from(g[1]).reshaped(3, 4);
        g2 = from(g[2]).array();
        g3 = Eigen::Map<const RowMat>(g[3].data(), 8, 8);
        g4 = from(g[4]);
      },
      [&] {
        auto to = [](const auto& e) { return std::vector<T>(e.data(), e.data() + e.size()); };
        return check::tensors<T>{to(p0), to(p1), to(p2), raw3, to(big.col(1).eval())};
      });
  CHECK(big.col(0).isZero());
  CHECK(big.col(2).isZero());
}

TEST_CASE("a block of whole columns is a contiguous tensor, a strided Ref is rejected at run time") {
  Eigen::MatrixXd m = Eigen::MatrixXd::Ones(4, 6), g = Eigen::MatrixXd::Ones(4, 6);
  nestla::SGD<double> sgd({.lr = 0.5});
  sgd.step(m.middleCols(2, 2), g.middleCols(2, 2));
  CHECK(m.col(2).isConstant(0.5));
  CHECK(m.col(3).isConstant(0.5));
  CHECK(m.col(1).isOnes());
  CHECK(m.col(4).isOnes());

  nestla::SGD<double> other({.lr = 0.5});
  Eigen::Ref<Eigen::MatrixXd> strided = m.topRows(2);  // outer stride 4 over 2 rows
  Eigen::MatrixXd gs = Eigen::MatrixXd::Ones(2, 6);
  CHECK_THROWS_AS(other.step(strided, gs), nestla::layout_error);
  CHECK(other.step_count() == 0);
}

static_assert(nestla::Tensor<Eigen::MatrixXf>);
static_assert(nestla::Tensor<Eigen::ArrayXXd>);
static_assert(nestla::Tensor<Eigen::Map<Eigen::VectorXf>>);
static_assert(nestla::Tensor<Eigen::Ref<Eigen::VectorXf>>);
static_assert(nestla::Tensor<Eigen::Matrix4f>);
