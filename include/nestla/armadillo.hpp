// Armadillo dense objects as nestla tensors: Mat, Col, Row, Cube, their fixed-size forms and contiguous subviews.
#pragma once

#include <cstddef>
#include <type_traits>

#include <armadillo>

#include "nestla/error.hpp"
#include "nestla/nestla.hpp"

namespace nestla {
namespace detail {

// Whether C derives from Base<C::elem_type> (Col and Row from Mat, subview_col
// from subview, ...), false for types without elem_type.
template <template <class> class Base, class C, class = void>
struct arma_derives : std::false_type {};
template <template <class> class Base, class C>
struct arma_derives<Base, C, std::void_t<typename C::elem_type>>
    : std::bool_constant<std::is_base_of_v<Base<typename C::elem_type>, C>> {};

template <class C>
inline constexpr bool arma_is_row_view = false;
template <class eT>
inline constexpr bool arma_is_row_view<arma::subview_row<eT>> = true;

}  // namespace detail

// Mat, Col, Row and their fixed-size forms derive from arma::Mat<eT>; Cube and
// Cube::fixed from arma::Cube<eT>. All own (or alias) contiguous storage.
template <class C>
struct tensor_traits<C, std::enable_if_t<detail::arma_derives<arma::Mat, C>::value ||
                                         detail::arma_derives<arma::Cube, C>::value>> {
  using value_type = typename C::elem_type;
  static value_type* data(C& c) { return c.n_elem == 0 ? nullptr : c.memptr(); }
  static const value_type* data(const C& c) { return c.n_elem == 0 ? nullptr : c.memptr(); }
  static std::size_t size(const C& c) { return static_cast<std::size_t>(c.n_elem); }
};

// Views of a matrix, all derived from arma::subview<eT>. m.col(j) and
// m.cols(a, b) (subview_col, subview_cols) are contiguous by their type;
// m.row(i) is strided whatever the sizes and is refused at compile time; a
// general subview (m.submat(...), m.rows(a, b)) is contiguous only when it
// spans whole columns or is one column, which only its sizes tell.
template <class C>
struct tensor_traits<C, std::enable_if_t<detail::arma_derives<arma::subview, C>::value>> {
  static_assert(!detail::arma_is_row_view<C>,
                "nestla: an Armadillo row (m.row(i)) is not contiguous in column-major storage: use a column "
                "(m.col(j)), whole columns (m.cols(a, b)), or copy it into an arma::Row");
  using value_type = typename C::elem_type;
  // A view of a const matrix is itself const, and so read-only (a gradient);
  // a view of a writable matrix writes through, as Armadillo's own accessors
  // do by casting away the const of the parent reference.
  static value_type* data(C& s) { return const_cast<value_type*>(start(s)); }
  static const value_type* data(const C& s) { return start(s); }
  static std::size_t size(const C& s) { return static_cast<std::size_t>(s.n_elem); }

 private:
  static const value_type* start(const C& s) {
    if (s.n_elem == 0) return nullptr;
    if (s.n_cols > 1 && s.n_rows != s.m.n_rows)
      detail::fail<layout_error>("nestla: an Armadillo subview of ", s.n_rows, " of the ", s.m.n_rows, " rows over ",
                                 s.n_cols, " columns is not contiguous: take whole columns (m.cols(a, b)) or a "
                                 "single column (m.col(j)), or copy it into a Mat");
    return s.colptr(0);
  }
};

// cube.slices(a, b), cube.subcube(...): contiguous when it spans whole slices,
// or whole columns (or one column) of a single slice.
template <class eT>
struct tensor_traits<arma::subview_cube<eT>> {
  using value_type = eT;
  static eT* data(arma::subview_cube<eT>& s) { return const_cast<eT*>(start(s)); }
  static const eT* data(const arma::subview_cube<eT>& s) { return start(s); }
  static std::size_t size(const arma::subview_cube<eT>& s) { return static_cast<std::size_t>(s.n_elem); }

 private:
  static const eT* start(const arma::subview_cube<eT>& s) {
    if (s.n_elem == 0) return nullptr;
    const bool whole_cols = s.n_rows == s.m.n_rows;
    const bool contiguous = s.n_slices == 1 ? (s.n_cols == 1 || whole_cols) : (whole_cols && s.n_cols == s.m.n_cols);
    if (!contiguous)
      detail::fail<layout_error>("nestla: an Armadillo subcube of ", s.n_rows, "x", s.n_cols, "x", s.n_slices,
                                 " in a cube of ", s.m.n_rows, "x", s.m.n_cols, "x", s.m.n_slices,
                                 " is not contiguous: take whole slices (c.slices(a, b)) or one slice (c.slice(i)), "
                                 "or copy it into a Cube");
    return s.slice_colptr(0, 0);
  }
};

template <class C>
struct tensor_traits<C, std::enable_if_t<detail::arma_derives<arma::SpMat, C>::value>> {
  static_assert(sizeof(C) == 0,
                "nestla: Armadillo sparse matrices are not supported: nestla updates every element of dense storage");
};

}  // namespace nestla
