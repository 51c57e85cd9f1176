// xtensor containers as nestla tensors: xt::xarray, xt::xtensor, xt::xtensor_fixed and xt::adapt results.
#pragma once

#include <type_traits>

#include <xtensor/xcontainer.hpp>

#include "nestla/error.hpp"
#include "nestla/nestla.hpp"

namespace nestla {

// Every xtensor container and adaptor owns (or wraps) contiguous storage in
// its layout order; views (xt::view, xt::strided_view) are expressions
// without a specialization here and are rejected at compile time.
template <class D>
struct tensor_traits<D, std::enable_if_t<std::is_base_of_v<xt::xcontainer<D>, D>>> {
  using value_type = std::remove_const_t<typename D::value_type>;
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
  // An adaptor built with explicit strides may leave gaps: then its storage
  // holds more elements than its shape covers.
  static void check(const D& d) {
    if (static_cast<std::size_t>(d.storage().size()) != static_cast<std::size_t>(d.size()))
      detail::fail<layout_error>("nestla: an xtensor container whose storage (", d.storage().size(),
                                 " elements) is not exactly its shape (", d.size(), " elements) is not contiguous");
  }
};

}  // namespace nestla
