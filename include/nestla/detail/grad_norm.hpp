// clip_grad_norm_'s gradient norm in one fixed order for every backend (the host, the CUDA kernels and their emulation).
//
// The order, which makes the norm the same bits for any number of host
// threads and on the CUDA backend as on the host:
//
//   The flat layout of the set (Layout::of: tensor i at offset_i, padded to 64
//   bytes) is cut into chunks of norm_chunk elements. A piece is one tensor's
//   share of one chunk: [a, b) in the tensor's own indices.
//   In a piece, element a + j goes to lane j % norm_lanes. Each lane
//   accumulates its elements in order, in T: x^2 (norm_type 2), |x| (1),
//   |x|^p (other p), or the largest |x| (inf; a NaN is kept).
//   The lanes combine in a halving tree (lane l with lane l + s for
//   s = 128, 64, ..., 1): lane 0 is the piece's partial, stored at index
//   chunk + tensor (distinct for every piece, see partial_count).
//   A tensor's norm: its partials in chunk order, summed in double (max for
//   inf), then sqrt, or ^(1/p), rounded to T: torch's per-tensor norms are T.
//   The total: those norms squared (|.|^p) and summed in double in tensor
//   order, then sqrt (^(1/p)), rounded to T (max for inf): torch's norm of
//   the per-tensor norms.
//   The coefficient, in T as torch computes it (Tensor.__rtruediv__ is
//   reciprocal() * other): c = min((1 / (total + 1e-6)) * max_norm, 1), NaN
//   kept. Clipped gradients are g * c.
//
// The arithmetic goes through a policy A (add, mul, div, sqrt, pow): plain
// operators on the host, CUDA's separately rounded intrinsics in kernels, so
// that no multiply-add is fused on one side only.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "nestla/detail/host_device.hpp"
#include "nestla/ops.hpp"

namespace nestla::detail {

// Elements per chunk, and lanes per piece (the CUDA backend's block size).
inline constexpr std::size_t norm_chunk = 4096;
inline constexpr std::size_t norm_lanes = 256;

enum class norm_kind : std::uint8_t { two, one, inf, p };

// A norm_type as the reduction sees it.
struct norm_spec {
  norm_kind kind = norm_kind::two;
  double p = 2, inv_p = 0.5;
  // The gradients are sums over this many workers (distributed gradient
  // averaging, whose division happens in the update pass): the norm of the
  // mean is the sums' norm divided by it (exact when it is a power of two).
  double divisor = 1;

  static norm_spec of(double norm_type) {
    if (norm_type == 2) return {norm_kind::two, 2, 0.5};
    if (norm_type == 1) return {norm_kind::one, 1, 1};
    if (std::isinf(norm_type)) return {norm_kind::inf, norm_type, 0};
    return {norm_kind::p, norm_type, 1 / norm_type};
  }
};

// Host arithmetic: the operators as written.
struct plain_arith {
  template <class X>
  NESTLA_HOST_DEVICE static X add(X a, X b) {
    return a + b;
  }
  template <class X>
  NESTLA_HOST_DEVICE static X mul(X a, X b) {
    return a * b;
  }
  template <class X>
  NESTLA_HOST_DEVICE static X div(X a, X b) {
    return a / b;
  }
  NESTLA_HOST_DEVICE static double sqrt(double x) { return std::sqrt(x); }
  template <class X>
  NESTLA_HOST_DEVICE static X pow(X a, X b) {
    return std::pow(a, b);
  }
};

// The larger of a and b where a NaN on either side wins (a's first). X is a
// scalar or a vector type with nestla::ops.
template <class X>
NESTLA_HOST_DEVICE inline X max_nan(X a, X b) {
  return ops::select(a != a, a, ops::select(b <= a, a, b));
}

// One element into a lane's accumulator.
template <norm_kind K, class A, class T>
NESTLA_HOST_DEVICE inline T norm_step(T acc, T x, T p) {
  if constexpr (K == norm_kind::two) return A::add(acc, A::mul(x, x));
  else if constexpr (K == norm_kind::one) return A::add(acc, ops::abs(x));
  else if constexpr (K == norm_kind::inf) return max_nan(acc, ops::abs(x));
  else return A::add(acc, A::pow(ops::abs(x), p));
}

template <class A, class X>
NESTLA_HOST_DEVICE inline X norm_combine(X a, X b, norm_kind k) {
  return k == norm_kind::inf ? max_nan(a, b) : A::add(a, b);
}
template <norm_kind K, class A, class X>
NESTLA_HOST_DEVICE inline X norm_combine(X a, X b) {
  if constexpr (K == norm_kind::inf) return max_nan(a, b);
  else return A::add(a, b);
}

// Lane `lane` of the piece g[0, n): its elements lane, lane + norm_lanes, ...
template <norm_kind K, class A, class T>
NESTLA_HOST_DEVICE inline T lane_value(const T* g, std::size_t n, std::size_t lane, T p) {
  T acc(0);
  for (std::size_t j = lane; j < n; j += norm_lanes) acc = norm_step<K, A>(acc, g[j], p);
  return acc;
}
template <class A, class T>
NESTLA_HOST_DEVICE inline T lane_value(const T* g, std::size_t n, std::size_t lane, const norm_spec& s) {
  switch (s.kind) {
    case norm_kind::two: return lane_value<norm_kind::two, A>(g, n, lane, T(2));
    case norm_kind::one: return lane_value<norm_kind::one, A>(g, n, lane, T(1));
    case norm_kind::inf: return lane_value<norm_kind::inf, A>(g, n, lane, T(0));
    default: return lane_value<norm_kind::p, A>(g, n, lane, T(s.p));
  }
}

// One level of the halving tree: lanes[l] with lanes[l + s], for l < s.
template <class A, class T>
NESTLA_HOST_DEVICE inline void tree_level(T* lanes, std::size_t l, std::size_t s, norm_kind k) {
  if (l < s) lanes[l] = norm_combine<A>(lanes[l], lanes[l + s], k);
}

// Partials one reduction writes: at most one per chunk plus one per tensor
// (pieces ordered by chunk and tensor at once, so chunk + tensor never repeats).
inline std::size_t partial_count(std::size_t flat_total, std::size_t ntensors) {
  return (flat_total + norm_chunk - 1) / norm_chunk + ntensors;
}

// Tensor i's norm from its partials.
template <class A, class T>
NESTLA_HOST_DEVICE inline T tensor_norm(const double* partials, std::size_t i, std::size_t offset, std::size_t size,
                                        const norm_spec& s) {
  if (size == 0) return T(0);
  double acc = 0;
  for (std::size_t c = offset / norm_chunk; c <= (offset + size - 1) / norm_chunk; ++c)
    acc = norm_combine<A>(acc, partials[c + i], s.kind);
  switch (s.kind) {
    case norm_kind::two: return T(A::sqrt(acc));
    case norm_kind::p: return T(A::pow(acc, s.inv_p));
    default: return T(acc);
  }
}

// The norm of the n per-tensor norms (each a value of T, held in a double).
template <class A, class T>
NESTLA_HOST_DEVICE inline T total_norm(const double* norms, std::size_t n, const norm_spec& s) {
  double acc = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = norms[i];
    switch (s.kind) {
      case norm_kind::two: acc = A::add(acc, A::mul(x, x)); break;
      case norm_kind::one: acc = A::add(acc, x); break;
      case norm_kind::inf: acc = max_nan(acc, x); break;
      default: acc = A::add(acc, A::pow(x, s.p));
    }
  }
  T total;
  switch (s.kind) {
    case norm_kind::two: total = T(A::sqrt(acc)); break;
    case norm_kind::p: total = T(A::pow(acc, s.inv_p)); break;
    default: total = T(acc);
  }
  return s.divisor == 1 ? total : A::div(total, T(s.divisor));
}

// torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to at most 1.
template <class A, class T>
NESTLA_HOST_DEVICE inline T clip_coefficient(T total, T max_norm) {
  const T c = A::mul(A::div(T(1), A::add(total, T(1e-6))), max_norm);
  return c > T(1) ? T(1) : c;
}

// What a backend's grad_norm gives back. Host backends know the values;
// device backends leave them in device memory (at[0] the total norm, at[1]
// the coefficient) for the update kernel, and copy them to the host (a wait
// for the GPU) only when asked.
template <class T>
struct grad_norm_result {
  bool on_host = true;
  T norm = T(0), coef = T(1);
  const T* at = nullptr;
};

}  // namespace nestla::detail
