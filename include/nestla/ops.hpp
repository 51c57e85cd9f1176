// The element operations an update rule may use, with the same results on every backend and compiler.
//
// An update rule's functor is one template over the vector type V it runs on:
// a scalar (the host's tails, reference loops), an xsimd batch (the host's SIMD
// body), the host's AVX-512 dispatch vector (GCC builds below AVX-512), or a
// CUDA kernel's lanes. Every V has + - * / (also with a scalar on either side),
// unary minus, V(x) from a scalar, and the comparisons < <= > >= == !=, which
// give a mask for ops::select. Everything else is here, called qualified
// (`nestla::ops::sign(x)`): unqualified names would reach a vector library's
// own functions through argument-dependent lookup, which other backends lack
// and which may round or treat NaN differently.
//
//   ops::sqrt(x)          correctly rounded square root
//   ops::abs(x)           |x|, sign bit cleared
//   ops::select(m, a, b)  a where the mask m is set, else b
//   ops::max(a, b)        a > b ? a : b   (x86 maxps: b when either is NaN)
//   ops::min(a, b)        a < b ? a : b   (x86 minps: b when either is NaN)
//   ops::clamp(x, lo, hi) min(max(x, lo), hi)
//   ops::sign(x)          1 for x > 0, -1 for x < 0, x itself for +-0 and NaN (as torch.sign)
//   ops::reciprocal(x)    1 / x, a correctly rounded division (not an approximate rcp)
//
// A new vector type joins by specializing nestla::vector_ops (scalar, sqrt, abs,
// select; optionally max and min with the semantics above).
#pragma once

#include <cmath>
#include <type_traits>

#include "nestla/detail/host_device.hpp"

namespace nestla {

// What a vector type provides beyond its operators: its scalar type, sqrt, abs
// and select. The primary template is deliberately empty: a type without a
// specialization cannot run a rule.
template <class V, class Enable = void>
struct vector_ops {};

template <class T>
struct vector_ops<T, std::enable_if_t<std::is_floating_point_v<T>>> {
  using scalar = T;
  NESTLA_HOST_DEVICE static T sqrt(T x) {
#if defined(__CUDA_ARCH__)
    return ::sqrt(x);  // CUDA's device overloads for float and double
#else
    return std::sqrt(x);
#endif
  }
  NESTLA_HOST_DEVICE static T abs(T x) {
#if defined(__CUDA_ARCH__)
    return ::fabs(x);
#else
    return std::fabs(x);
#endif
  }
  NESTLA_HOST_DEVICE static T select(bool m, T a, T b) { return m ? a : b; }
};

namespace ops {

template <class V>
NESTLA_HOST_DEVICE inline V sqrt(const V& x) {
  return vector_ops<V>::sqrt(x);
}
template <class V>
NESTLA_HOST_DEVICE inline V abs(const V& x) {
  return vector_ops<V>::abs(x);
}
template <class M, class V>
NESTLA_HOST_DEVICE inline V select(const M& mask, const V& a, const V& b) {
  return vector_ops<V>::select(mask, a, b);
}
// A vector type may have max and min instructions with these semantics.
template <class V>
NESTLA_HOST_DEVICE inline V max(const V& a, const V& b) {
  if constexpr (requires { vector_ops<V>::max(a, b); }) return vector_ops<V>::max(a, b);
  else return vector_ops<V>::select(a > b, a, b);
}
template <class V>
NESTLA_HOST_DEVICE inline V min(const V& a, const V& b) {
  if constexpr (requires { vector_ops<V>::min(a, b); }) return vector_ops<V>::min(a, b);
  else return vector_ops<V>::select(a < b, a, b);
}
template <class V>
NESTLA_HOST_DEVICE inline V clamp(const V& x, const V& lo, const V& hi) {
  return ops::min(ops::max(x, lo), hi);
}
template <class V>
NESTLA_HOST_DEVICE inline V sign(const V& x) {
  using S = typename vector_ops<V>::scalar;
  const V zero(S(0)), one(S(1)), minus_one(S(-1));
  return vector_ops<V>::select(x > zero, one, vector_ops<V>::select(x < zero, minus_one, x));
}
template <class V>
NESTLA_HOST_DEVICE inline V reciprocal(const V& x) {
  using S = typename vector_ops<V>::scalar;
  return V(S(1)) / x;
}

}  // namespace ops
}  // namespace nestla
