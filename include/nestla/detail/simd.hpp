// The host backend's SIMD vector for update rules: an xsimd batch with IEEE semantics for every operation nestla::ops names.
//
// Update functors see this type, never xsimd::batch itself. xsimd's own
// operations are not the same on every instruction set in every release
// (xsimd 8.1: on AVX, a != b is false where either is NaN; on AVX-512, -x is
// 0 - x, which gives +0 for +0), and a functor that called xsimd directly
// would not compile for the AVX-512 dispatch body or the CUDA kernels. Every
// operation here forwards to one xsimd call that rounds exactly as the scalar
// operation does, so results keep their bits whatever the vector width.
#pragma once

#include <cstddef>

#include <xsimd/xsimd.hpp>

#include "nestla/ops.hpp"

namespace nestla::detail {

template <class T>
struct simd {
  using batch = xsimd::batch<T>;
  static constexpr std::size_t size = batch::size;
  batch v;

  simd() = default;
  explicit simd(T x) : v(x) {}
  explicit simd(const batch& b) : v(b) {}
  static simd load_unaligned(const T* p) { return simd(batch::load_unaligned(p)); }
  void store_unaligned(T* p) const { v.store_unaligned(p); }
};

// A comparison's result, for ops::select.
template <class T>
struct simd_mask {
  xsimd::batch_bool<T> m;
};

#define NESTLA_SIMD_BINARY(OP)                                                                                \
  template <class T>                                                                                          \
  inline simd<T> operator OP(const simd<T>& a, const simd<T>& b) {                                            \
    return simd<T>(a.v OP b.v);                                                                               \
  }                                                                                                           \
  template <class T>                                                                                          \
  inline simd<T> operator OP(const simd<T>& a, std::type_identity_t<T> b) {                                   \
    return simd<T>(a.v OP typename simd<T>::batch(b));                                                        \
  }                                                                                                           \
  template <class T>                                                                                          \
  inline simd<T> operator OP(std::type_identity_t<T> a, const simd<T>& b) {                                   \
    return simd<T>(typename simd<T>::batch(a) OP b.v);                                                        \
  }
NESTLA_SIMD_BINARY(+)
NESTLA_SIMD_BINARY(-)
NESTLA_SIMD_BINARY(*)
NESTLA_SIMD_BINARY(/)
#undef NESTLA_SIMD_BINARY

// Flips the sign bit, as scalar negation does (also for +-0 and NaN).
template <class T>
inline simd<T> operator-(const simd<T>& a) {
  return simd<T>(a.v ^ typename simd<T>::batch(T(-0.0)));
}

// xsimd's < <= > >= == are IEEE's ordered comparisons (false where either
// side is NaN) on every instruction set; != is their negation.
#define NESTLA_SIMD_COMPARE(OP)                                        \
  template <class T>                                                   \
  inline simd_mask<T> operator OP(const simd<T>& a, const simd<T>& b) { \
    return {a.v OP b.v};                                               \
  }
NESTLA_SIMD_COMPARE(<)
NESTLA_SIMD_COMPARE(<=)
NESTLA_SIMD_COMPARE(>)
NESTLA_SIMD_COMPARE(>=)
NESTLA_SIMD_COMPARE(==)
#undef NESTLA_SIMD_COMPARE
template <class T>
inline simd_mask<T> operator!=(const simd<T>& a, const simd<T>& b) {
  return {~(a.v == b.v)};
}

}  // namespace nestla::detail

namespace nestla {

template <class T>
struct vector_ops<detail::simd<T>> {
  using V = detail::simd<T>;
  using scalar = T;
  static V sqrt(const V& x) { return V(xsimd::sqrt(x.v)); }
  static V abs(const V& x) { return V(xsimd::abs(x.v)); }
  static V select(const detail::simd_mask<T>& m, const V& a, const V& b) { return V(xsimd::select(m.m, a.v, b.v)); }
};

}  // namespace nestla
