// PyTorch's lerp with a scalar weight, in ATen's order of operations: the first moment of torch 2's RAdam, NAdam and Adamax.
//
// torch 2 updates their first moment as exp_avg.lerp_(grad, 1 - beta1); ATen's
// CPU and CUDA kernels compute lerp(a, b, w) as a + w (b - a) when |w| < 0.5 and
// as b + (w - 1)(b - a) otherwise (fewer rounding errors near either end). The
// rules do the same, so that the moments follow torch's to the last bit
// where the rest of the arithmetic does.
#pragma once

#include <cmath>

#include "nestla/detail/host_device.hpp"

namespace nestla::detail {

template <class T>
struct lerp_weight {
  T w;            // the weight
  T w_minus_one;  // w - 1, rounded in T as ATen's vector kernel does
  bool small;     // |w| < 0.5

  static lerp_weight make(double weight) {
    const T w(weight);
    return {w, T(w - T(1)), std::abs(w) < T(0.5)};
  }

  template <class V>
  NESTLA_HOST_DEVICE V operator()(const V& a, const V& b) const {
    const V d = b - a;
    return small ? a + V(w) * d : b + V(w_minus_one) * d;
  }
};

}  // namespace nestla::detail
