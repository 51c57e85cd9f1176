// The host backend: fused update passes over CPU memory, explicit SIMD (xsimd), optional worker threads.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "nestla/detail/grad_norm.hpp"
#include "nestla/detail/host_buffer.hpp"
#include "nestla/detail/simd.hpp"
#include "nestla/detail/thread_pool.hpp"
#include "nestla/ops.hpp"
#include "nestla/detail/xsimd_compat.hpp"
#include "nestla/step_plan.hpp"

// Adam's update does a sqrt and two divisions per element. With the 16-byte
// vectors a build without -mavx512f gets (plain -O2: SSE2), those alone take
// longer than moving the step's 28 bytes per element on current x86 cores
// (benchmarks/RESULTS.md has the counts). So GCC builds for x86-64 below
// AVX-512 also compile the update's SIMD body for AVX-512 and pick it at run
// time when the CPU has it. sqrt, division, multiplication and addition round
// the same in every vector width, so results keep every bit.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX512F__)
#define NESTLA_HOST_AVX512_DISPATCH 1
#include <immintrin.h>
#endif

namespace nestla {

#if defined(NESTLA_HOST_AVX512_DISPATCH)
namespace detail::wide {

// 64 bytes of T. Storage is a plain array, so that passing one by value has
// the same ABI in every target (memory), inlined or not, at any -O level.
// Arithmetic goes through GCC vector types; the operators are AVX-512
// functions, inlined into the AVX-512 update body by its flatten attribute.
template <class T>
struct vec512 {
  static constexpr std::size_t size = 64 / sizeof(T);
  typedef T raw __attribute__((vector_size(64)));
  T r[size];

  vec512() = default;
  explicit vec512(T x) {
    for (std::size_t i = 0; i < size; ++i) r[i] = x;
  }
  static vec512 load_unaligned(const T* p) {
    vec512 v;
    std::memcpy(v.r, p, 64);
    return v;
  }
  void store_unaligned(T* p) const { std::memcpy(p, r, 64); }

  // Vector values only ever live inside one function: passing them by value
  // between functions of different targets would differ in ABI.
  void get(raw& v) const { std::memcpy(&v, r, 64); }
  void set(const raw& v) { std::memcpy(r, &v, 64); }
};

// The empty asm hides the product from GCC's FMA contraction (AVX-512
// implies FMA): a fused a*b+c rounds once and would change the results.
#define NESTLA_WIDE_BINARY(OP, EXTRA)                                                                   \
  template <class T>                                                                                    \
  [[gnu::target("avx512f")]] inline vec512<T> operator OP(const vec512<T>& a, const vec512<T>& b) {     \
    typename vec512<T>::raw x, y;                                                                       \
    a.get(x);                                                                                           \
    b.get(y);                                                                                           \
    x = x OP y;                                                                                         \
    EXTRA;                                                                                              \
    vec512<T> out;                                                                                      \
    out.set(x);                                                                                         \
    return out;                                                                                         \
  }                                                                                                     \
  template <class T>                                                                                    \
  [[gnu::target("avx512f")]] inline vec512<T> operator OP(const vec512<T>& a, std::type_identity_t<T> b) { \
    return a OP vec512<T>(b);                                                                           \
  }                                                                                                     \
  template <class T>                                                                                    \
  [[gnu::target("avx512f")]] inline vec512<T> operator OP(std::type_identity_t<T> a, const vec512<T>& b) { \
    return vec512<T>(a) OP b;                                                                           \
  }
NESTLA_WIDE_BINARY(*, asm("" : "+v"(x)))
NESTLA_WIDE_BINARY(+, (void)0)
NESTLA_WIDE_BINARY(-, (void)0)
NESTLA_WIDE_BINARY(/, (void)0)
#undef NESTLA_WIDE_BINARY

template <class T>
[[gnu::target("avx512f")]] inline vec512<T> operator-(const vec512<T>& a) {
  typename vec512<T>::raw x;
  a.get(x);
  x = -x;
  vec512<T> out;
  out.set(x);
  return out;
}

// A comparison's result: all bits set in the lanes where it holds (GCC's
// vector comparisons), for ops::select.
template <class T>
struct mask512 {
  using bits = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
  typedef bits raw __attribute__((vector_size(64)));
  bits r[64 / sizeof(T)];
  void get(raw& v) const { std::memcpy(&v, r, 64); }
  void set(const raw& v) { std::memcpy(r, &v, 64); }
};

#define NESTLA_WIDE_COMPARE(OP)                                                                     \
  template <class T>                                                                                \
  [[gnu::target("avx512f")]] inline mask512<T> operator OP(const vec512<T>& a, const vec512<T>& b) { \
    typename vec512<T>::raw x, y;                                                                   \
    a.get(x);                                                                                       \
    b.get(y);                                                                                       \
    mask512<T> out;                                                                                 \
    out.set(x OP y);                                                                                \
    return out;                                                                                     \
  }
NESTLA_WIDE_COMPARE(<)
NESTLA_WIDE_COMPARE(<=)
NESTLA_WIDE_COMPARE(>)
NESTLA_WIDE_COMPARE(>=)
NESTLA_WIDE_COMPARE(==)
NESTLA_WIDE_COMPARE(!=)
#undef NESTLA_WIDE_COMPARE

inline bool avx512_usable() {
  // libgcc's check covers the OS saving the AVX-512 registers too.
  static const bool usable = __builtin_cpu_supports("avx512f");
  return usable;
}

}  // namespace detail::wide

// The AVX-512 dispatch vector for nestla::ops. sqrt uses the masked form to
// avoid GCC 12's uninitialized _mm512_undefined_ps.
template <class T>
struct vector_ops<detail::wide::vec512<T>> {
  using V = detail::wide::vec512<T>;
  using scalar = T;
  [[gnu::target("avx512f")]] static V sqrt(const V& a) {
    typename V::raw x;
    a.get(x);
    if constexpr (sizeof(T) == 4) x = (typename V::raw)_mm512_mask_sqrt_ps((__m512)x, (__mmask16)-1, (__m512)x);
    else x = (typename V::raw)_mm512_mask_sqrt_pd((__m512d)x, (__mmask8)-1, (__m512d)x);
    V out;
    out.set(x);
    return out;
  }
  [[gnu::target("avx512f")]] static V abs(const V& a) {
    using M = detail::wide::mask512<T>;
    typename V::raw x;
    a.get(x);
    typename M::raw bits;
    std::memcpy(&bits, &x, 64);
    bits &= ~(typename M::raw{} + (typename M::bits(1) << (8 * sizeof(T) - 1)));
    std::memcpy(&x, &bits, 64);
    V out;
    out.set(x);
    return out;
  }
  [[gnu::target("avx512f")]] static V max(const V& a, const V& b) {
    typename V::raw x, y;
    a.get(x);
    b.get(y);
    if constexpr (sizeof(T) == 4) x = (typename V::raw)_mm512_mask_max_ps((__m512)x, (__mmask16)-1, (__m512)x, (__m512)y);
    else x = (typename V::raw)_mm512_mask_max_pd((__m512d)x, (__mmask8)-1, (__m512d)x, (__m512d)y);
    V out;
    out.set(x);
    return out;
  }
  [[gnu::target("avx512f")]] static V min(const V& a, const V& b) {
    typename V::raw x, y;
    a.get(x);
    b.get(y);
    if constexpr (sizeof(T) == 4) x = (typename V::raw)_mm512_mask_min_ps((__m512)x, (__mmask16)-1, (__m512)x, (__m512)y);
    else x = (typename V::raw)_mm512_mask_min_pd((__m512d)x, (__mmask8)-1, (__m512d)x, (__m512d)y);
    V out;
    out.set(x);
    return out;
  }
  [[gnu::target("avx512f")]] static V select(const detail::wide::mask512<T>& m, const V& a, const V& b) {
    typename detail::wide::mask512<T>::raw c;
    typename V::raw x, y;
    m.get(c);
    a.get(x);
    b.get(y);
    x = c ? x : y;
    V out;
    out.set(x);
    return out;
  }
};
#endif


// Backend tag for parameters, gradients and state in host memory.
struct host {
  template <class T>
  using buffer = detail::host_buffer<T>;

  // Per-optimizer execution state: the worker threads, and the gradient
  // norm's partials (gradient clipping), kept between steps.
  struct context {
    detail::pool_handle pool;
    std::vector<double> norm_scratch;
  };

  static constexpr const char* name = "host";

  // Steps over fewer elements than this run on the calling thread alone:
  // waking workers costs more than it saves.
  static constexpr std::size_t min_parallel = std::size_t(1) << 16;
  // Elements per block when a step also syncs: the block's parameters,
  // gradients, state and slow copies stay in L1 between the update and the sync.
  static constexpr std::size_t sync_block = 512;

  template <class T>
  static void download(void* dst, const T* src, std::size_t n) {
    if (n) std::memcpy(dst, src, n * sizeof(T));
  }
  template <class T>
  static void upload(T* dst, const void* src, std::size_t n) {
    if (n) std::memcpy(dst, src, n * sizeof(T));
  }
  template <class T>
  static void copy(T* dst, const T* src, std::size_t n) {
    if (n) std::memmove(dst, src, n * sizeof(T));
  }
  template <class T>
  static void swap(T* a, T* b, std::size_t n) {
    std::swap_ranges(a, a + n, b);
  }
  template <class T>
  static void fill_zero(T* dst, std::size_t n) {
    if (n) std::memset(dst, 0, n * sizeof(T));
  }

  // True when no gradient holds a NaN or an infinity.
  template <class T>
  static bool all_finite(context&, std::span<const TensorRef<T>> tensors) {
    using B = xsimd::batch<T>;
    constexpr std::size_t W = B::size;
    for (const auto& t : tensors) {
      // x * 0 is 0 for finite x and NaN for NaN or +-inf.
      B acc(T(0));
      std::size_t i = 0;
      for (; i + W <= t.size; i += W) acc = acc + B::load_unaligned(t.grad + i) * B(T(0));
      T tail = 0;
      for (; i < t.size; ++i) tail += t.grad[i] * T(0);
      if (!(detail::reduce_add(acc) == T(0)) || !(tail == T(0))) return false;
    }
    return true;
  }

  // clip_grad_norm_'s total norm of the gradients and its clipping
  // coefficient for max_norm, in the order detail/grad_norm.hpp fixes: the
  // chunks are split over the worker threads, each piece's partial has its
  // own slot, and the calling thread combines them. The result is known here
  // (to_host is for device backends).
  template <class T>
  static detail::grad_norm_result<T> grad_norm(context& ctx, std::span<const TensorRef<T>> tensors,
                                               const detail::norm_spec& spec, T max_norm, bool /*to_host*/ = true) {
    constexpr std::size_t C = detail::norm_chunk;
    std::size_t flat_total = 0;
    for (const auto& t : tensors) flat_total = std::max(flat_total, t.offset + t.size);
    const std::size_t chunks = (flat_total + C - 1) / C;
    const std::size_t npartials = detail::partial_count(flat_total, tensors.size());
    // Grows with the set only: steps after the first allocate nothing.
    if (ctx.norm_scratch.size() < npartials + tensors.size()) ctx.norm_scratch.resize(npartials + tensors.size());
    double* const partials = ctx.norm_scratch.data();
    double* const norms = partials + npartials;
    auto part = [&](unsigned k, unsigned parts) {
      const std::size_t c0 = chunks * k / parts, c1 = chunks * (k + 1) / parts;
      for (std::size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        if (t.size == 0) continue;
        const std::size_t first = std::max(c0, t.offset / C), end = std::min(c1, (t.offset + t.size - 1) / C + 1);
        for (std::size_t c = first; c < end; ++c) {
          const std::size_t a = std::max(c * C, t.offset) - t.offset;
          const std::size_t b = std::min((c + 1) * C, t.offset + t.size) - t.offset;
          partials[c + i] = norm_piece(t.grad + a, b - a, spec);
        }
      }
    };
    if (ctx.pool.threads() <= 1 || flat_total < min_parallel) part(0, 1);
    else ctx.pool.run(part);
    for (std::size_t i = 0; i < tensors.size(); ++i)
      norms[i] = detail::tensor_norm<detail::plain_arith, T>(partials, i, tensors[i].offset, tensors[i].size, spec);
    const T total = detail::total_norm<detail::plain_arith, T>(norms, tensors.size(), spec);
    return {true, total, detail::clip_coefficient<detail::plain_arith>(total, max_norm), nullptr};
  }

  // One pass over every tensor: the base optimizer's update (op), then the
  // plan's syncs. state[k] are the starts of the flat state buffers; m_index is
  // which of them holds the first moment (-1: none). make_op(i) gives tensor
  // i's update functor (its hyperparameters may differ per tensor).
  template <class T, std::size_t S, class MakeOp>
  static void fused_step(context& ctx, std::span<const TensorRef<T>> tensors, std::size_t flat_total,
                         const std::array<T*, S>& state, int m_index, const StepPlan<T>& plan, MakeOp&& make_op) {
    for_each_part<T>(ctx, tensors, flat_total, [&](std::size_t i, const TensorRef<T>& t, std::size_t from, std::size_t n) {
      run_piece<T, S>(make_op(i), t, from, n, state, m_index, plan);
    });
  }

  // A pass without the base update (plan.update is false): the plan's syncs
  // and pack over every element. m is the first-moment buffer (null: none).
  template <class T>
  static void sync_pass(context& ctx, std::span<const TensorRef<T>> tensors, std::size_t flat_total, T* m,
                        const StepPlan<T>& plan) {
    for_each_part<T>(ctx, tensors, flat_total, [&](std::size_t, const TensorRef<T>& t, std::size_t from, std::size_t n) {
      sync_piece(t.param + from, m, plan, t.offset + from, n);
    });
  }

  // Copies every tensor's gradient to flat at its offset (the send buffer of
  // gradient averaging).
  template <class T>
  static void gather_grads(context&, std::span<const TensorRef<T>> tensors, T* flat) {
    for (const auto& t : tensors)
      if (t.size) std::memcpy(flat + t.offset, t.grad, t.size * sizeof(T));
  }

 private:
  // Splits the flat (padded) range over the worker threads on cache-line
  // boundaries and calls f(i, tensor i, from, n) for each piece.
  template <class T, class F>
  static void for_each_part(context& ctx, std::span<const TensorRef<T>> tensors, std::size_t flat_total, F&& f) {
    constexpr std::size_t pad = 64 / sizeof(T);
    auto part = [&](unsigned k, unsigned parts) {
      const std::size_t chunk = (flat_total + parts - 1) / parts;
      const std::size_t lo = std::min(flat_total, (chunk * k + pad - 1) / pad * pad);
      const std::size_t hi = k + 1 == parts ? flat_total : std::min(flat_total, (chunk * (k + 1) + pad - 1) / pad * pad);
      for (std::size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        const std::size_t a = std::max(lo, t.offset), b = std::min(hi, t.offset + t.size);
        if (a >= b) continue;
        f(i, t, a - t.offset, b - a);
      }
    };
    if (ctx.pool.threads() <= 1 || flat_total < min_parallel) {
      part(0, 1);
    } else {
      ctx.pool.run(part);
    }
  }

  // The syncs and pack of a pass without update, over n elements at flat
  // offset off: the vector body (returns how far it got), then the tail,
  // which stays out of the AVX-512 body as in update.
  template <class T>
  static void sync_piece(T* p, T* m, const StepPlan<T>& plan, std::size_t off, std::size_t n) {
    std::size_t i;
#if defined(NESTLA_HOST_AVX512_DISPATCH)
    if (detail::wide::avx512_usable())
      i = sync_body_avx512(p, m, plan, off, n);
    else
#endif
      i = sync_body<detail::simd<T>>(p, m, plan, off, 0, n);
    sync_body<T>(p, m, plan, off, i, n);
  }

  // In a pass that applies a mean first, theta is only written, not read.
  template <class V, class T>
  static std::size_t sync_body(T* p, T* m, const StepPlan<T>& plan, std::size_t off, std::size_t i, std::size_t n) {
    constexpr std::size_t W = sizeof(V) / sizeof(T);
    const bool read_p = plan.mean_level != plan.first_sync;
    for (; i + W <= n; i += W) {
      const std::size_t at = off + i;
      auto load = [at](const T* base) { return ld<V>(base + at); };
      auto store = [at](T* base, const V& v) { st(base + at, v); };
      V pv = read_p ? ld<V>(p + i) : V(T(0));
      V mv = m ? ld<V>(m + at) : V(T(0));
      apply_syncs<V>(plan, pv, m ? &mv : nullptr, load, store);
      st(p + i, pv);
      if (m) st(m + at, mv);
    }
    return i;
  }

#if defined(NESTLA_HOST_AVX512_DISPATCH)
  template <class T>
  [[gnu::target("avx512f"), gnu::flatten]] static std::size_t sync_body_avx512(T* p, T* m, const StepPlan<T>& plan,
                                                                               std::size_t off, std::size_t n) {
    return sync_body<detail::wide::vec512<T>>(p, m, plan, off, 0, n);
  }
#endif

  // Loads and stores for scalars, xsimd batches and the AVX-512 vectors alike.
  template <class V, class T>
  static V ld(const T* at) {
    if constexpr (std::is_same_v<V, T>) return *at;
    else return V::load_unaligned(at);
  }
  template <class V, class T>
  static void st(T* at, const V& v) {
    if constexpr (std::is_same_v<V, T>) *at = v;
    else v.store_unaligned(at);
  }

 private:
  // One piece's partial of the gradient norm, with the lanes
  // detail/grad_norm.hpp assigns.
  template <class T>
  static double norm_piece(const T* g, std::size_t n, const detail::norm_spec& s) {
#if defined(__CUDA_ARCH__)
    // nvcc's device pass compiles every host-device instantiation it meets;
    // one over host SIMD vectors has no device form (as skip_in_device_pass).
    (void)g, (void)n, (void)s;
    return 0;
#else
    switch (s.kind) {
      case detail::norm_kind::two: return norm_piece_simd<detail::norm_kind::two>(g, n);
      case detail::norm_kind::one: return norm_piece_simd<detail::norm_kind::one>(g, n);
      case detail::norm_kind::inf: return norm_piece_simd<detail::norm_kind::inf>(g, n);
      default: {  // |x|^p: no vector pow rounds as std::pow does
        constexpr std::size_t L = detail::norm_lanes;
        T lanes[L]{};
        for (std::size_t l = 0; l < L && l < n; ++l)
          lanes[l] = detail::lane_value<detail::norm_kind::p, detail::plain_arith>(g, n, l, T(s.p));
        for (std::size_t w = L / 2; w > 0; w /= 2)
          for (std::size_t l = 0; l < w; ++l) detail::tree_level<detail::plain_arith>(lanes, l, w, s.kind);
        return lanes[0];
      }
    }
#endif
  }

  // The same in SIMD vectors: each lane still accumulates its own elements in
  // order (a row of L elements at a time), and the tree's levels combine
  // whole vectors while they are at least one vector wide.
  template <detail::norm_kind K, class T>
  static double norm_piece_simd(const T* g, std::size_t n) {
    using B = detail::simd<T>;
    using A = detail::plain_arith;
    constexpr std::size_t L = detail::norm_lanes, W = B::size;
    static_assert(L % W == 0, "nestla: a row of lanes must be whole vectors");
    alignas(64) T lanes[L]{};
    const B zero(T(0));
    std::size_t j = 0;
    for (; j + L <= n; j += L)
      for (std::size_t v = 0; v < L; v += W)
        detail::norm_step<K, A>(B::load_unaligned(lanes + v), B::load_unaligned(g + j + v), zero).store_unaligned(lanes + v);
    std::size_t v = 0;  // the last, partial row
    for (; j + v + W <= n; v += W)
      detail::norm_step<K, A>(B::load_unaligned(lanes + v), B::load_unaligned(g + j + v), zero).store_unaligned(lanes + v);
    for (; j + v < n; ++v) lanes[v] = detail::norm_step<K, A>(lanes[v], g[j + v], T(0));
    std::size_t w = L / 2;
    for (; w >= W; w /= 2)
      for (std::size_t l = 0; l < w; l += W)
        detail::norm_combine<K, A>(B::load_unaligned(lanes + l), B::load_unaligned(lanes + l + w)).store_unaligned(lanes + l);
    for (; w > 0; w /= 2)
      for (std::size_t l = 0; l < w; ++l) lanes[l] = detail::norm_combine<K, A>(lanes[l], lanes[l + w]);
    return lanes[0];
  }

  template <class T, std::size_t S, class Op>
  static void run_piece(const Op& op, const TensorRef<T>& t, std::size_t from, std::size_t n,
                        const std::array<T*, S>& state, int m_index, const StepPlan<T>& plan) {
    T* p = t.param + from;
    const T* g = t.grad + from;
    const std::size_t off = t.offset + from;
    std::array<T*, S> s;
    for (std::size_t k = 0; k < S; ++k) s[k] = state[k] + off;
    if (plan.plain()) {
      update(op, p, g, s, n);
      return;
    }
    for (std::size_t b = 0; b < n; b += sync_block) {
      const std::size_t len = std::min(sync_block, n - b);
      for (int i = 0; i < plan.ninit; ++i) std::memcpy(plan.init[i] + off + b, p + b, len * sizeof(T));
      std::array<T*, S> sb;
      for (std::size_t k = 0; k < S; ++k) sb[k] = s[k] + b;
      update_sync(op, p + b, g + b, sb, m_index, plan, off + b, len);
    }
  }

  // The base update over n contiguous elements, SIMD body and scalar tail.
  template <class T, std::size_t S, class Op>
  static void update(const Op& op, T* p, const T* g, const std::array<T*, S>& s, std::size_t n) {
    std::size_t i;
#if defined(NESTLA_HOST_AVX512_DISPATCH)
    if (detail::wide::avx512_usable())
      i = update_body_avx512(op, p, g, s, n);
    else
#endif
      i = update_body<detail::simd<T>>(op, p, g, s, n);
    // The tail stays out of the AVX-512 body: there GCC would contract
    // scalar a*b+c into an FMA.
    for (; i < n; ++i) {
      T pv = p[i];
      T sv[S > 0 ? S : 1];
      for (std::size_t k = 0; k < S; ++k) sv[k] = s[k][i];
      op(pv, g[i], sv);
      p[i] = pv;
      for (std::size_t k = 0; k < S; ++k) s[k][i] = sv[k];
    }
  }

  // The SIMD part of update with batch type B; returns how far it got.
  // op and s are copied into locals: through the references, every store to
  // p or the state might have changed them (same type), so GCC reloaded and
  // re-broadcast the hyperparameters in every iteration (AdamW on the
  // ResNet-18 set: 87% of the roofline before, 92% after; RESULTS.md).
  template <class B, class T, std::size_t S, class Op>
  static std::size_t update_body(const Op& op_ref, T* p, const T* g, const std::array<T*, S>& s_ref,
                                 std::size_t n) {
    const Op op = op_ref;
    const std::array<T*, S> s = s_ref;
    constexpr std::size_t W = B::size;
    std::size_t i = 0;
    for (; i + W <= n; i += W) {
      B pv = B::load_unaligned(p + i);
      const B gv = B::load_unaligned(g + i);
      B sv[S > 0 ? S : 1];
      for (std::size_t k = 0; k < S; ++k) sv[k] = B::load_unaligned(s[k] + i);
      op(pv, gv, sv);
      pv.store_unaligned(p + i);
      for (std::size_t k = 0; k < S; ++k) sv[k].store_unaligned(s[k] + i);
    }
    return i;
  }

#if defined(NESTLA_HOST_AVX512_DISPATCH)
  // flatten inlines the functor and the vector operators, so that all of
  // them compile for AVX-512 here (they are not target functions themselves).
  template <class T, std::size_t S, class Op>
  [[gnu::target("avx512f"), gnu::flatten]] static std::size_t update_body_avx512(const Op& op, T* p, const T* g,
                                                                                 const std::array<T*, S>& s,
                                                                                 std::size_t n) {
    return update_body<detail::wide::vec512<T>>(op, p, g, s, n);
  }
#endif

  // The update and then the plan's syncs, vector by vector: the parameters
  // and the first moment go from the update to the syncs in registers, in the
  // same pass. Elements are independent, so this is the update of the whole
  // range followed by the syncs of the whole range, bit for bit; as two passes
  // it left the syncs' arithmetic (a loop over levels per vector) unoverlapped
  // with memory traffic. off is the flat offset of p[0] in the slow buffers.
  template <class T, std::size_t S, class Op>
  static void update_sync(const Op& op, T* p, const T* g, const std::array<T*, S>& s, int m_index,
                          const StepPlan<T>& plan, std::size_t off, std::size_t n) {
    std::size_t i;
#if defined(NESTLA_HOST_AVX512_DISPATCH)
    if (detail::wide::avx512_usable())
      i = update_sync_body_avx512(op, p, g, s, m_index, plan, off, n);
    else
#endif
      i = update_sync_body<detail::simd<T>>(op, p, g, s, m_index, plan, off, n);
    for (; i < n; ++i) {
      const std::size_t at = off + i;
      auto load = [at](const T* base) { return base[at]; };
      auto store = [at](T* base, T v) { base[at] = v; };
      T pv = p[i];
      T sv[S > 0 ? S : 1];
      for (std::size_t k = 0; k < S; ++k) sv[k] = s[k][i];
      op(pv, plan.grad_group != T(0) ? g[i] / plan.grad_group : g[i], sv);
      apply_syncs<T>(plan, pv, S > 0 && m_index >= 0 ? &sv[m_index] : nullptr, load, store);
      p[i] = pv;
      for (std::size_t k = 0; k < S; ++k) s[k][i] = sv[k];
    }
  }

  template <class B, class T, std::size_t S, class Op>
  static std::size_t update_sync_body(const Op& op_ref, T* p, const T* g, const std::array<T*, S>& s_ref,
                                      int m_index, const StepPlan<T>& plan, std::size_t off, std::size_t n) {
    const Op op = op_ref;  // as in update_body
    const std::array<T*, S> s = s_ref;
    constexpr std::size_t W = B::size;
    // Two loops: Lookahead's plain syncs keep the loop they had before outer
    // momentum and distributed passes existed (callgrind, nested Adam, SSE2:
    // the general loop ran 26% more instructions in syncing steps).
    auto loop = [&](auto extended) {
      constexpr bool E = decltype(extended)::value;
      std::size_t i = 0;
      for (; i + W <= n; i += W) {
        const std::size_t at = off + i;
        auto load = [at](const T* base) { return B::load_unaligned(base + at); };
        auto store = [at](T* base, const B& v) { v.store_unaligned(base + at); };
        B pv = B::load_unaligned(p + i);
        B gv = B::load_unaligned(g + i);
        if constexpr (E)
          if (plan.grad_group != T(0)) gv = gv / B(plan.grad_group);
        B sv[S > 0 ? S : 1];
        if constexpr (S > 0)
          for (std::size_t k = 0; k < S; ++k) sv[k] = B::load_unaligned(s[k] + i);
        op(pv, gv, sv);
        apply_syncs<B, E>(plan, pv, S > 0 && m_index >= 0 ? &sv[m_index] : nullptr, load, store);
        pv.store_unaligned(p + i);
        if constexpr (S > 0)
          for (std::size_t k = 0; k < S; ++k) sv[k].store_unaligned(s[k] + i);
      }
      return i;
    };
    return plan.extended() ? loop(std::true_type{}) : loop(std::false_type{});
  }

#if defined(NESTLA_HOST_AVX512_DISPATCH)
  template <class T, std::size_t S, class Op>
  [[gnu::target("avx512f"), gnu::flatten]] static std::size_t update_sync_body_avx512(
      const Op& op, T* p, const T* g, const std::array<T*, S>& s, int m_index, const StepPlan<T>& plan,
      std::size_t off, std::size_t n) {
    return update_sync_body<detail::wide::vec512<T>>(op, p, g, s, m_index, plan, off, n);
  }
#endif
};

}  // namespace nestla
