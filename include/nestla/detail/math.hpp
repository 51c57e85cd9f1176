// sqrt and max for the update functors, on scalars (host or device) and on SIMD batches (found by ADL).
#pragma once

#include <cmath>
#include <type_traits>

#include "nestla/step_plan.hpp"

namespace nestla::detail {

template <class V>
NESTLA_HOST_DEVICE inline V op_sqrt(const V& x) {
  if constexpr (std::is_floating_point_v<V>) {
    using std::sqrt;
    return sqrt(x);
  } else {
    return sqrt(x);  // a SIMD batch: its library's sqrt, by argument-dependent lookup
  }
}

template <class V>
NESTLA_HOST_DEVICE inline V op_max(const V& a, const V& b) {
  if constexpr (std::is_floating_point_v<V>) {
    return a < b ? b : a;
  } else {
    return max(a, b);
  }
}

}  // namespace nestla::detail
