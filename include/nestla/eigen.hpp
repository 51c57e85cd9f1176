// Eigen dense objects as nestla tensors: Matrix, Array, Map, Ref and contiguous blocks.
#pragma once

#include <type_traits>

#include <Eigen/Core>

#include "nestla/error.hpp"
#include "nestla/nestla.hpp"

namespace nestla {
namespace detail {

template <class D>
struct eigen_generic_block : std::false_type {};
template <class X, int R, int C, bool InnerPanel>
struct eigen_generic_block<Eigen::Block<X, R, C, InnerPanel>> : std::bool_constant<!InnerPanel> {};

template <class D>
struct eigen_any_block : std::false_type {};
template <class X, int R, int C, bool InnerPanel>
struct eigen_any_block<Eigen::Block<X, R, C, InnerPanel>> : std::true_type {};

template <class D>
constexpr bool eigen_is_vector = D::IsVectorAtCompileTime || D::SizeAtCompileTime == 1;

}  // namespace detail

template <class D>
struct tensor_traits<D, std::enable_if_t<std::is_base_of_v<Eigen::DenseBase<D>, D>>> {
  static_assert(bool(Eigen::internal::traits<D>::Flags & Eigen::DirectAccessBit),
                "nestla: this Eigen expression has no storage of its own (a sum, product or other lazy expression): "
                "pass a Matrix, Array, Map, Ref or a contiguous block");
  // Blocks of plain objects know their strides at compile time; a dynamic inner
  // stride there means a strided view. Map and Ref are checked at run time.
  static_assert(D::InnerStrideAtCompileTime == 1 ||
                    (D::InnerStrideAtCompileTime == Eigen::Dynamic && !detail::eigen_any_block<D>::value),
                "nestla: this Eigen expression is not contiguous (its inner stride is not 1, e.g. a row of a "
                "column-major matrix): copy it into a Matrix or pass a contiguous view");
  static_assert(!(detail::eigen_generic_block<D>::value && !detail::eigen_is_vector<D>),
                "nestla: a general Eigen block (m.block(...), m.topLeftCorner(...)) is not contiguous: use whole "
                "columns of a column-major matrix (m.col(j), m.middleCols(j, n)), whole rows of a row-major one, "
                "or a Map over contiguous memory");

  using value_type = std::remove_const_t<typename D::Scalar>;

  static auto* data(D& d) {
    check(d);
    return d.data();
  }
  static auto* data(const D& d) {
    check(d);
    return d.data();
  }
  static std::size_t size(const D& d) { return static_cast<std::size_t>(d.size()); }

 private:
  // Map and Ref may carry strides known only at run time.
  static void check(const D& d) {
    if (d.size() <= 1) return;
    if (d.innerStride() != 1 && d.innerSize() > 1)
      detail::fail<layout_error>("nestla: an Eigen object with inner stride ", d.innerStride(), " is not contiguous");
    if (d.outerSize() > 1 && d.outerStride() != d.innerSize())
      detail::fail<layout_error>("nestla: an Eigen object with outer stride ", d.outerStride(), " over inner size ",
                         d.innerSize(), " is not contiguous");
  }
};

}  // namespace nestla
