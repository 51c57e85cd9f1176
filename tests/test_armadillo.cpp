// Armadillo Mat, Col, Row, Cube, fixed-size forms and contiguous subviews give results bit-identical to std::vector.
#include <doctest/doctest.h>

#include <nestla/armadillo.hpp>

#include <armadillo>
#include <tuple>
#include <vector>

#include "container_check.hpp"

namespace {
template <class A>
std::vector<typename A::elem_type> flat(const A& a) {
  return {a.memptr(), a.memptr() + a.n_elem};
}
template <class A, class T>
void fill(A& a, const std::vector<T>& v) {
  REQUIRE(a.n_elem == v.size());
  std::copy(v.begin(), v.end(), a.memptr());
}
}  // namespace

TEST_CASE_TEMPLATE("Armadillo containers and a tuple mixing them with std::vector match std::vector", T, float, double) {
  // Sizes 37 (Col), 12 (Mat 3x4), 1 (Row), 64 (Cube 4x4x4), 5 (a std::vector).
  const auto tr = check::make<T>();
  arma::Col<T> p0(37);
  arma::Mat<T> p1(3, 4);
  arma::Row<T> p2(1);
  arma::Cube<T> p3(4, 4, 4);
  std::vector<T> p4 = tr.init[4];
  fill(p0, tr.init[0]);
  fill(p1, tr.init[1]);
  fill(p2, tr.init[2]);
  fill(p3, tr.init[3]);
  auto params = std::tie(p0, p1, p2, p3, p4);

  arma::Col<T> g0(37);
  arma::Mat<T> g1(3, 4);
  arma::Row<T> g2(1);
  arma::Cube<T> g3(4, 4, 4);
  std::vector<T> g4;
  auto grads = std::tie(g0, g1, g2, g3, g4);
  check::same_as_vector(
      tr, params, grads,
      [&](std::size_t s) {
        const auto& g = tr.grads[s];
        fill(g0, g[0]);
        fill(g1, g[1]);
        fill(g2, g[2]);
        fill(g3, g[3]);
        g4 = g[4];
      },
      [&] { return check::tensors<T>{flat(p0), flat(p1), flat(p2), flat(p3), p4}; });
}

TEST_CASE_TEMPLATE("fixed-size Armadillo objects match std::vector", T, float, double) {
  const auto tr = check::make<T>({9, 4, 8});
  typename arma::Mat<T>::template fixed<3, 3> p0;
  typename arma::Col<T>::template fixed<4> p1;
  typename arma::Cube<T>::template fixed<2, 2, 2> p2;
  fill(p0, tr.init[0]);
  fill(p1, tr.init[1]);
  fill(p2, tr.init[2]);
  typename arma::Mat<T>::template fixed<3, 3> g0;
  typename arma::Row<T>::template fixed<4> g1;  // gradients may be another container kind
  std::vector<T> g2;
  check::same_as_vector(
      tr, std::tie(p0, p1, p2), std::tie(g0, g1, g2),
      [&](std::size_t s) {
        fill(g0, tr.grads[s][0]);
        fill(g1, tr.grads[s][1]);
        g2 = tr.grads[s][2];
      },
      [&] { return check::tensors<T>{flat(p0), flat(p1), flat(p2)}; });
}

TEST_CASE_TEMPLATE("contiguous subviews (a column, whole columns, a slice, whole slices) match std::vector", T, float,
                   double) {
  // Each view sits inside a larger object whose other elements must not change.
  const auto tr = check::make<T>({5, 12, 6, 16});
  arma::Mat<T> m(5, 7, arma::fill::value(T(9)));
  arma::Mat<T> wide(4, 6, arma::fill::value(T(9)));
  arma::Cube<T> c(2, 3, 4, arma::fill::value(T(9)));
  arma::Cube<T> d(2, 4, 5, arma::fill::value(T(9)));
  std::copy(tr.init[0].begin(), tr.init[0].end(), m.colptr(2));
  std::copy(tr.init[1].begin(), tr.init[1].end(), wide.colptr(1));
  std::copy(tr.init[2].begin(), tr.init[2].end(), c.slice_memptr(1));
  std::copy(tr.init[3].begin(), tr.init[3].end(), d.slice_memptr(2));

  arma::Mat<T> gm(5, 7), gw(4, 6);
  arma::Cube<T> gc(2, 3, 4), gd(2, 4, 5);
  auto opt = check::make_optimizer<T>();
  for (const auto& g : tr.grads) {
    std::copy(g[0].begin(), g[0].end(), gm.colptr(2));
    std::copy(g[1].begin(), g[1].end(), gw.colptr(1));
    std::copy(g[2].begin(), g[2].end(), gc.slice_memptr(1));
    std::copy(g[3].begin(), g[3].end(), gd.slice_memptr(2));
    // A slice is a Mat&: passed by reference, not copied.
    opt.step(std::forward_as_tuple(m.col(2), wide.cols(1, 3), c.slice(1), d.slices(2, 3)),
             std::forward_as_tuple(gm.col(2), gw.cols(1, 3), gc.slice(1), gd.slices(2, 3)));
  }
  const auto expected = check::run_vector(tr);
  CHECK(std::vector<T>(m.colptr(2), m.colptr(2) + 5) == expected[0]);
  CHECK(std::vector<T>(wide.colptr(1), wide.colptr(1) + 12) == expected[1]);
  CHECK(std::vector<T>(c.slice_memptr(1), c.slice_memptr(1) + 6) == expected[2]);
  CHECK(std::vector<T>(d.slice_memptr(2), d.slice_memptr(2) + 16) == expected[3]);
  // Nothing outside the views moved.
  for (arma::uword j : {0u, 1u, 3u, 4u, 5u, 6u}) CHECK(arma::all(m.col(j) == T(9)));
  for (arma::uword j : {0u, 4u, 5u}) CHECK(arma::all(wide.col(j) == T(9)));
  for (arma::uword s : {0u, 2u, 3u}) CHECK(arma::all(arma::vectorise(c.slice(s)) == T(9)));
  for (arma::uword s : {0u, 1u, 4u}) CHECK(arma::all(arma::vectorise(d.slice(s)) == T(9)));
}

TEST_CASE("a subview or subcube that is contiguous only by its sizes is accepted, a strided one throws layout_error") {
  arma::mat m(4, 6, arma::fill::ones), g(4, 6, arma::fill::ones);
  nestla::SGD<double> sgd({.lr = 0.5}), sgd2({.lr = 0.5});
  sgd.step(m.submat(0, 2, 3, 3), g.submat(0, 2, 3, 3));   // all rows of columns 2..3
  sgd2.step(m.submat(1, 5, 2, 5), g.submat(1, 5, 2, 5));  // part of one column
  CHECK(arma::all(arma::vectorise(m.cols(2, 3)) == 0.5));
  CHECK(m(0, 5) == 1.0);
  CHECK(m(1, 5) == 0.5);
  CHECK(m(2, 5) == 0.5);
  CHECK(m(3, 5) == 1.0);
  CHECK(arma::all(arma::vectorise(m.cols(0, 1)) == 1.0));

  // Views of a const matrix are read-only: gradients.
  const arma::mat const_g(4, 6, arma::fill::ones);
  arma::mat q(4, 6, arma::fill::ones);
  nestla::SGD<double> from_const({.lr = 0.5});
  from_const.step(q.cols(1, 2), const_g.cols(1, 2));
  CHECK(arma::all(arma::vectorise(q.cols(1, 2)) == 0.5));

  nestla::SGD<double> other({.lr = 0.5});
  const arma::mat before = m;
  CHECK_THROWS_AS(other.step(m.submat(0, 0, 1, 1), g.submat(0, 0, 1, 1)), nestla::layout_error);
  CHECK_THROWS_WITH_AS(other.step(m.rows(1, 2), g.rows(1, 2)), doctest::Contains("not contiguous"), nestla::layout_error);
  // The gradient's layout is checked as strictly: nothing moved in either case.
  CHECK_THROWS_AS(other.step(m.col(0), g.submat(0, 0, 1, 1)), nestla::layout_error);
  CHECK(other.step_count() == 0);
  CHECK(arma::approx_equal(m, before, "absdiff", 0.0));

  arma::cube c(2, 3, 4, arma::fill::ones), gc(2, 3, 4, arma::fill::ones);
  nestla::SGD<double> cube_sgd({.lr = 0.5}), cube_other;
  cube_sgd.step(c.subcube(0, 1, 2, 1, 2, 2), gc.subcube(0, 1, 2, 1, 2, 2));  // columns 1..2 of slice 2
  CHECK(c(0, 1, 2) == 0.5);
  CHECK(c(1, 2, 2) == 0.5);
  CHECK(c(0, 0, 2) == 1.0);
  CHECK_THROWS_WITH_AS(cube_other.step(c.subcube(0, 0, 0, 1, 1, 1), gc.subcube(0, 0, 0, 1, 1, 1)),
                       doctest::Contains("subcube of 2x2x2"), nestla::layout_error);
  CHECK_THROWS_WITH_AS(cube_other.step(c.subcube(0, 0, 0, 0, 2, 0), gc.subcube(0, 0, 0, 0, 2, 0)),
                       doctest::Contains("subcube of 1x3x1"), nestla::layout_error);
  CHECK(cube_other.step_count() == 0);
}

TEST_CASE("an Armadillo alias of external memory is updated in place") {
  std::vector<float> memory{1, 2, 3, 4, 5, 6};
  arma::fmat alias(memory.data(), 2, 3, /*copy_aux_mem=*/false, /*strict=*/true);
  const arma::fmat g(2, 3, arma::fill::ones);
  nestla::SGD<float> sgd({.lr = 0.5});
  sgd.step(alias, g);
  CHECK(alias.memptr() == memory.data());
  CHECK(memory == std::vector<float>{0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f});
}

static_assert(nestla::Tensor<arma::mat>);
static_assert(nestla::Tensor<arma::fcolvec>);
static_assert(nestla::Tensor<arma::rowvec>);
static_assert(nestla::Tensor<arma::fcube>);
static_assert(nestla::Tensor<arma::mat::fixed<3, 3>>);
static_assert(nestla::Tensor<arma::fvec::fixed<4>>);
static_assert(nestla::Tensor<arma::subview_col<float>>);
static_assert(nestla::Tensor<arma::subview_cols<double>>);
static_assert(std::is_same_v<nestla::tensor_value_t<arma::fmat>, float>);
static_assert(std::is_same_v<decltype(nestla::tensor_traits<arma::subview_col<double>>::data(
                                 std::declval<const arma::subview_col<double>&>())),
                             const double*>);  // m.col(j) of a const m cannot be written to
static_assert(!nestla::Tensor<arma::imat>);     // integers are not parameters
static_assert(!nestla::Tensor<arma::cx_mat>);   // nor complex numbers
static_assert(!nestla::Tensor<std::vector<int>>);
