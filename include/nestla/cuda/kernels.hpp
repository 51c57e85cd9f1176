// The CUDA kernels: one pass over every tensor doing the base update and the plan's Lookahead syncs, a pass of syncs alone (distributed steps), the gradient finiteness check, the gradient norm, and a swap.
//
// Per element x of tensor i, with F = make_op(i) and the step's plan:
//   phi_l[x] <- theta[x] for every level l            (first step only, before the update)
//   F(theta[x], g[x], state[k][x] for k < S)          (SGD's or Adam's update)
//   apply_syncs(plan, theta[x], m[x])                 (the levels that sync at this step)
// so a step that syncs still reads and writes every element once.
#pragma once

#if !defined(__CUDACC__)
#error "nestla/cuda/kernels.hpp holds CUDA kernels: compile it with nvcc"
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <cuda_runtime.h>

#include "nestla/cuda/launch.hpp"
#include "nestla/ops.hpp"
#include "nestla/step_plan.hpp"

namespace nestla::cuda::detail {

// Separately rounded IEEE operations: the _rn intrinsics are never contracted
// into FMAs. The host backend does not fuse either, so the device produces the
// host's bits, and tests can compare the two exactly.
NESTLA_HOST_DEVICE inline float rn_add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
NESTLA_HOST_DEVICE inline float rn_sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
NESTLA_HOST_DEVICE inline float rn_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
NESTLA_HOST_DEVICE inline float rn_div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
NESTLA_HOST_DEVICE inline float rn_sqrt(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
NESTLA_HOST_DEVICE inline double rn_add(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
NESTLA_HOST_DEVICE inline double rn_sub(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
NESTLA_HOST_DEVICE inline double rn_mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
NESTLA_HOST_DEVICE inline double rn_div(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
NESTLA_HOST_DEVICE inline double rn_sqrt(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

// W lanes of T: what the update functors and apply_syncs compute on in the
// kernels, as xsimd batches are on the host (nestla::ops through vector_ops below).
template <class T, int W>
struct lanes {
  T v[W];

  lanes() = default;
  NESTLA_HOST_DEVICE explicit lanes(T x) {
    for (int i = 0; i < W; ++i) v[i] = x;
  }
};

// A comparison's result, lane by lane, for ops::select.
template <int W>
struct lanes_mask {
  bool v[W];
};

#define NESTLA_LANES_OP(op, fn)                                                                             \
  template <class T, int W>                                                                                 \
  NESTLA_HOST_DEVICE inline lanes<T, W> operator op(const lanes<T, W>& a, const lanes<T, W>& b) {           \
    lanes<T, W> r;                                                                                          \
    for (int i = 0; i < W; ++i) r.v[i] = fn(a.v[i], b.v[i]);                                                \
    return r;                                                                                               \
  }                                                                                                         \
  template <class T, int W>                                                                                 \
  NESTLA_HOST_DEVICE inline lanes<T, W> operator op(const lanes<T, W>& a, std::type_identity_t<T> b) {      \
    return a op lanes<T, W>(b);                                                                             \
  }                                                                                                         \
  template <class T, int W>                                                                                 \
  NESTLA_HOST_DEVICE inline lanes<T, W> operator op(std::type_identity_t<T> a, const lanes<T, W>& b) {      \
    return lanes<T, W>(a) op b;                                                                             \
  }
NESTLA_LANES_OP(+, rn_add)
NESTLA_LANES_OP(-, rn_sub)
NESTLA_LANES_OP(*, rn_mul)
NESTLA_LANES_OP(/, rn_div)
#undef NESTLA_LANES_OP

template <class T, int W>
NESTLA_HOST_DEVICE inline lanes<T, W> operator-(const lanes<T, W>& a) {
  lanes<T, W> r;
  for (int i = 0; i < W; ++i) r.v[i] = -a.v[i];
  return r;
}

#define NESTLA_LANES_COMPARE(op)                                                              \
  template <class T, int W>                                                                   \
  NESTLA_HOST_DEVICE inline lanes_mask<W> operator op(const lanes<T, W>& a, const lanes<T, W>& b) { \
    lanes_mask<W> r;                                                                          \
    for (int i = 0; i < W; ++i) r.v[i] = a.v[i] op b.v[i];                                    \
    return r;                                                                                 \
  }
NESTLA_LANES_COMPARE(<)
NESTLA_LANES_COMPARE(<=)
NESTLA_LANES_COMPARE(>)
NESTLA_LANES_COMPARE(>=)
NESTLA_LANES_COMPARE(==)
NESTLA_LANES_COMPARE(!=)
#undef NESTLA_LANES_COMPARE

}  // namespace nestla::cuda::detail

namespace nestla {
template <class T, int W>
struct vector_ops<cuda::detail::lanes<T, W>> {
  using V = cuda::detail::lanes<T, W>;
  using scalar = T;
  NESTLA_HOST_DEVICE static V sqrt(const V& a) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = cuda::detail::rn_sqrt(a.v[i]);
    return r;
  }
  NESTLA_HOST_DEVICE static V abs(const V& a) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = vector_ops<T>::abs(a.v[i]);
    return r;
  }
  NESTLA_HOST_DEVICE static V select(const cuda::detail::lanes_mask<W>& m, const V& a, const V& b) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = m.v[i] ? a.v[i] : b.v[i];
    return r;
  }
};
}  // namespace nestla

namespace nestla::cuda::detail {

#if defined(__CUDA_ARCH__)
#define NESTLA_UNROLL _Pragma("unroll")
#else
#define NESTLA_UNROLL
#endif

// A thread's place in a launch. The bodies below take it as an argument, not
// from blockIdx and threadIdx, so that tests can run them on the host, thread
// by thread (each element belongs to one thread, so the order does not matter).
struct thread_ix {
  std::size_t block, blocks, thread, threads;
};

// W consecutive elements at p; a whole 16-byte vector needs p 16-byte aligned.
template <int W, class T>
NESTLA_HOST_DEVICE __forceinline__ lanes<T, W> load(const T* p) {
  lanes<T, W> r;
#if defined(__CUDA_ARCH__)
  if constexpr (W * sizeof(T) == vector_bytes && std::is_same_v<T, float>) {
    const float4 x = *reinterpret_cast<const float4*>(p);
    r.v[0] = x.x, r.v[1] = x.y, r.v[2] = x.z, r.v[3] = x.w;
  } else if constexpr (W * sizeof(T) == vector_bytes && std::is_same_v<T, double>) {
    const double2 x = *reinterpret_cast<const double2*>(p);
    r.v[0] = x.x, r.v[1] = x.y;
  } else {
    NESTLA_UNROLL
    for (int i = 0; i < W; ++i) r.v[i] = p[i];
  }
#else
  for (int i = 0; i < W; ++i) r.v[i] = p[i];
#endif
  return r;
}

template <int W, class T>
NESTLA_HOST_DEVICE __forceinline__ void store(T* p, const lanes<T, W>& r) {
#if defined(__CUDA_ARCH__)
  if constexpr (W * sizeof(T) == vector_bytes && std::is_same_v<T, float>) {
    *reinterpret_cast<float4*>(p) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
  } else if constexpr (W * sizeof(T) == vector_bytes && std::is_same_v<T, double>) {
    *reinterpret_cast<double2*>(p) = make_double2(r.v[0], r.v[1]);
  } else {
    NESTLA_UNROLL
    for (int i = 0; i < W; ++i) p[i] = r.v[i];
  }
#else
  for (int i = 0; i < W; ++i) p[i] = r.v[i];
#endif
}

// U groups of W elements each: j + u * stride for u < U, those before end.
// All loads come first so that each thread has U groups in flight; the
// groups are distinct elements, so the order of their stores does not matter.
template <int W, int U, bool Sync, class T, std::size_t S, class Op>
NESTLA_HOST_DEVICE __forceinline__ void step_groups(const Op& op, const step_header<T, S>& h, const tensor_meta<T>& t,
                                                    std::size_t j, std::size_t end, std::size_t stride) {
  using V = lanes<T, W>;
  constexpr std::size_t SS = S > 0 ? S : 1;
  bool live[U];
  V p[U]{}, g[U]{}, s[U][SS]{};
  NESTLA_UNROLL
  for (int u = 0; u < U; ++u) {
    const std::size_t e = j + u * stride;
    live[u] = e < end;
    if (!live[u]) continue;
    p[u] = load<W>(t.param + e);
    g[u] = load<W>(t.grad + e);
    if constexpr (S > 0) {
      NESTLA_UNROLL
      for (std::size_t k = 0; k < S; ++k) s[u][k] = load<W>(h.state[k] + t.offset + e);
    }
  }
  NESTLA_UNROLL
  for (int u = 0; u < U; ++u) {
    if (!live[u]) continue;
    const std::size_t e = j + u * stride;
    const std::size_t at = t.offset + e;
    if constexpr (Sync) {
      for (int l = 0; l < h.plan.ninit; ++l) store<W>(h.plan.init[l] + at, p[u]);
      if (h.plan.grad_group != T(0)) g[u] = g[u] / V(h.plan.grad_group);
    }
    op(p[u], g[u], s[u]);
    if constexpr (Sync) {
      auto ld = [at](const T* base) { return load<W>(base + at); };
      auto st = [at](T* base, const V& x) { store<W>(base + at, x); };
      if constexpr (S == 0) {
        apply_syncs<V>(h.plan, p[u], static_cast<V*>(nullptr), ld, st);
      } else if (h.m_index < 0) {
        apply_syncs<V>(h.plan, p[u], static_cast<V*>(nullptr), ld, st);
      } else if (h.m_index == 0) {
        apply_syncs<V>(h.plan, p[u], &s[u][0], ld, st);
      } else {
        // Selected by value, not through a runtime index, so s stays in registers.
        V m = s[u][0];
        NESTLA_UNROLL
        for (std::size_t k = 1; k < S; ++k)
          if (int(k) == h.m_index) m = s[u][k];
        apply_syncs<V>(h.plan, p[u], &m, ld, st);
        NESTLA_UNROLL
        for (std::size_t k = 1; k < S; ++k)
          if (int(k) == h.m_index) s[u][k] = m;
      }
    }
    store<W>(t.param + e, p[u]);
    if constexpr (S > 0) {
      NESTLA_UNROLL
      for (std::size_t k = 0; k < S; ++k) store<W>(h.state[k] + at, s[u][k]);
    }
  }
}

// Vectors in flight per thread in the step's main loop.
inline constexpr int step_unroll = 2;

// Elements [a, b) of tensor t, by the whole block: whole vectors where the
// tensor's pointers allow, single elements for the tail and for misaligned tensors.
template <bool Sync, class T, std::size_t S, class Op>
NESTLA_HOST_DEVICE __forceinline__ void step_piece(const Op& op, const step_header<T, S>& h, const tensor_meta<T>& t,
                                                   std::size_t a, std::size_t b, const thread_ix& ix) {
  constexpr int W = int(vector_bytes / sizeof(T));
  constexpr int U = step_unroll;
  std::size_t rest = a;
  if (t.vector) {
    // a is a multiple of W here: chunk edges and offsets are multiples of 64 bytes.
    const std::size_t vend = a + (b - a) / W * W;
    const std::size_t stride = ix.threads * W;
    for (std::size_t j = a + ix.thread * W; j < vend; j += U * stride) step_groups<W, U, Sync>(op, h, t, j, vend, stride);
    rest = vend;
  }
  for (std::size_t j = rest + ix.thread; j < b; j += ix.threads) step_groups<1, 1, Sync>(op, h, t, j, b, 0);
}

// Calls f(t, a, b) for the piece [a, b) of every tensor t that overlaps each
// chunk this thread's block takes: chunks blockIdx, blockIdx + gridDim, ...
template <class T, class F>
NESTLA_HOST_DEVICE __forceinline__ void for_each_piece(const tensor_meta<T>* meta, std::uint32_t ntensors,
                                                       std::size_t flat_total, std::size_t chunk, const thread_ix& ix,
                                                       F&& f) {
  for (std::size_t lo = ix.block * chunk; lo < flat_total; lo += ix.blocks * chunk) {
    const std::size_t hi = lo + chunk < flat_total ? lo + chunk : flat_total;
    for (std::uint32_t i = first_tensor(meta, ntensors, lo); i < ntensors; ++i) {
      const tensor_meta<T> t = meta[i];
      if (t.offset >= hi) break;
      const std::size_t a = lo > t.offset ? lo - t.offset : 0;
      const std::size_t b = hi - t.offset < t.size ? hi - t.offset : t.size;
      if (a < b) f(t, a, b);
    }
  }
}

// One thread's share of a step. Sync is false for a plain step (no syncs, no
// first-step copies), which keeps that kernel lean. A functor with scalars in
// device memory (gradient clipping's coefficient) reads them once per piece.
template <class T, std::size_t S, class Op, bool Sync>
NESTLA_HOST_DEVICE __forceinline__ void step_body(const step_header<T, S>& h, const unsigned char* blob,
                                                  const thread_ix& ix) {
  const auto* meta = reinterpret_cast<const tensor_meta<T>*>(blob);
  const Op* ops = reinterpret_cast<const Op*>(blob + h.ops_at);
  for_each_piece(meta, h.ntensors, h.flat_total, h.chunk, ix, [&](const tensor_meta<T>& t, std::size_t a, std::size_t b) {
    Op op = ops[t.op];
    if constexpr (requires { op.resolve(); }) op.resolve();
    step_piece<Sync>(op, h, t, a, b, ix);
  });
}

// A pass without the base update (plan.update false): the plan's syncs and
// pack, U groups of W elements as in step_groups. In a pass that applies a
// mean first, theta is only written.
template <int W, int U, class T>
NESTLA_HOST_DEVICE __forceinline__ void sync_groups(const sync_header<T>& h, const tensor_meta<T>& t, std::size_t j,
                                                    std::size_t end, std::size_t stride) {
  using V = lanes<T, W>;
  const bool read_p = h.plan.mean_level != h.plan.first_sync;
  bool live[U];
  V p[U]{}, m[U]{};
  NESTLA_UNROLL
  for (int u = 0; u < U; ++u) {
    const std::size_t e = j + u * stride;
    live[u] = e < end;
    if (!live[u]) continue;
    if (read_p) p[u] = load<W>(t.param + e);
    if (h.m) m[u] = load<W>(h.m + t.offset + e);
  }
  NESTLA_UNROLL
  for (int u = 0; u < U; ++u) {
    if (!live[u]) continue;
    const std::size_t e = j + u * stride;
    const std::size_t at = t.offset + e;
    auto ld = [at](const T* base) { return load<W>(base + at); };
    auto st = [at](T* base, const V& x) { store<W>(base + at, x); };
    apply_syncs<V>(h.plan, p[u], h.m ? &m[u] : static_cast<V*>(nullptr), ld, st);
    store<W>(t.param + e, p[u]);
    if (h.m) store<W>(h.m + at, m[u]);
  }
}

template <class T>
NESTLA_HOST_DEVICE __forceinline__ void sync_body(const sync_header<T>& h, const unsigned char* blob,
                                                  const thread_ix& ix) {
  const auto* meta = reinterpret_cast<const tensor_meta<T>*>(blob);
  constexpr int W = int(vector_bytes / sizeof(T));
  constexpr int U = step_unroll;
  for_each_piece(meta, h.ntensors, h.flat_total, h.chunk, ix, [&](const tensor_meta<T>& t, std::size_t a, std::size_t b) {
    std::size_t rest = a;
    if (t.vector) {
      const std::size_t vend = a + (b - a) / W * W;
      const std::size_t stride = ix.threads * W;
      for (std::size_t j = a + ix.thread * W; j < vend; j += U * stride) sync_groups<W, U>(h, t, j, vend, stride);
      rest = vend;
    }
    for (std::size_t j = rest + ix.thread; j < b; j += ix.threads) sync_groups<1, 1>(h, t, j, b, 0);
  });
}

// One thread's share of the finiteness check: false when a gradient it reads
// holds a NaN or an infinity (x * 0 is 0 for finite x, NaN otherwise, and a
// NaN survives the sum).
template <class T>
NESTLA_HOST_DEVICE __forceinline__ bool finite_body(const finite_header& h, const unsigned char* blob,
                                                    const thread_ix& ix) {
  const auto* meta = reinterpret_cast<const tensor_meta<T>*>(blob);
  constexpr int W = int(vector_bytes / sizeof(T));
  T acc = 0;
  for_each_piece(meta, h.ntensors, h.flat_total, h.chunk, ix, [&](const tensor_meta<T>& t, std::size_t a, std::size_t b) {
    std::size_t rest = a;
    if (t.vector) {
      const std::size_t vend = a + (b - a) / W * W;
      for (std::size_t j = a + ix.thread * W; j < vend; j += ix.threads * W) {
        const lanes<T, W> g = load<W>(t.grad + j);
        NESTLA_UNROLL
        for (int k = 0; k < W; ++k) acc += g.v[k] * T(0);
      }
      rest = vend;
    }
    for (std::size_t j = rest + ix.thread; j < b; j += ix.threads) acc += t.grad[j] * T(0);
  });
  return acc == T(0);
}

// The gradient norm's arithmetic (nestla/detail/grad_norm.hpp's policy):
// separately rounded, as the host's.
struct device_arith {
  template <class X>
  NESTLA_HOST_DEVICE static X add(X a, X b) {
    return rn_add(a, b);
  }
  template <class X>
  NESTLA_HOST_DEVICE static X mul(X a, X b) {
    return rn_mul(a, b);
  }
  template <class X>
  NESTLA_HOST_DEVICE static X div(X a, X b) {
    return rn_div(a, b);
  }
  NESTLA_HOST_DEVICE static double sqrt(double x) { return rn_sqrt(x); }
  // CUDA's pow is not glibc's: other p than 1, 2 and inf may differ from the
  // host in the last bits on a GPU (the emulated kernels run the host's).
  template <class X>
  NESTLA_HOST_DEVICE static X pow(X a, X b) {
#if defined(__CUDA_ARCH__)
    return ::pow(a, b);
#else
    return std::pow(a, b);
#endif
  }
};

static_assert(nestla::detail::norm_lanes == block_threads, "nestla: one lane of the gradient norm per thread");

// The block-wide steps of the norm kernels: each(f) runs f(thread) on every
// thread of the block and then waits for all of them. On the GPU that is one
// call per thread and __syncthreads; tests run the threads one after another.
struct block_barrier {
  template <class F>
  NESTLA_HOST_DEVICE void each(F&& f) const {
#if defined(__CUDA_ARCH__)
    f(std::size_t(threadIdx.x));
    __syncthreads();
#else
    (void)f;
#endif
  }
};

// One block's share of the gradient norm's partials: the chunks block,
// block + blocks, ... of the flat range, each piece (a tensor's share of a
// chunk) reduced by the whole block, lane l by thread l, in lanes (block_threads
// values, shared memory on the GPU).
template <class T, class Exec>
NESTLA_HOST_DEVICE void norm_partials_body(const norm_header<T>& h, const unsigned char* blob, std::size_t block,
                                           std::size_t blocks, T* lanes, const Exec& ex) {
  constexpr std::size_t C = nestla::detail::norm_chunk;
  const auto* meta = reinterpret_cast<const tensor_meta<T>*>(blob);
  for (std::size_t c = block; c * C < h.flat_total; c += blocks) {
    const std::size_t lo = c * C, hi = lo + C < h.flat_total ? lo + C : h.flat_total;
    for (std::uint32_t i = first_tensor(meta, h.ntensors, lo); i < h.ntensors; ++i) {
      const tensor_meta<T> t = meta[i];
      if (t.offset >= hi) break;
      const std::size_t a = lo > t.offset ? lo - t.offset : 0;
      const std::size_t b = hi - t.offset < t.size ? hi - t.offset : t.size;
      if (a >= b) continue;
      const T* g = t.grad + a;
      const std::size_t n = b - a;
      ex.each([&](std::size_t l) { lanes[l] = nestla::detail::lane_value<device_arith>(g, n, l, h.spec); });
      for (std::size_t s = nestla::detail::norm_lanes / 2; s > 0; s /= 2)
        ex.each([&](std::size_t l) { nestla::detail::tree_level<device_arith>(lanes, l, s, h.spec.kind); });
      ex.each([&](std::size_t l) {
        if (l == 0) h.partials[c + i] = lanes[0];
      });
    }
  }
}

// The per-tensor norms (threads over tensors), then the total and the
// coefficient (thread 0), by one block.
template <class T, class Exec>
NESTLA_HOST_DEVICE void norm_finalize_body(const norm_header<T>& h, const unsigned char* blob, const Exec& ex) {
  const auto* meta = reinterpret_cast<const tensor_meta<T>*>(blob);
  ex.each([&](std::size_t l) {
    for (std::size_t i = l; i < h.ntensors; i += block_threads)
      h.norms[i] = nestla::detail::tensor_norm<device_arith, T>(h.partials, i, meta[i].offset, meta[i].size, h.spec);
  });
  ex.each([&](std::size_t l) {
    if (l != 0) return;
    const T total = nestla::detail::total_norm<device_arith, T>(h.norms, h.ntensors, h.spec);
    h.out[0] = total;
    h.out[1] = nestla::detail::clip_coefficient<device_arith>(total, h.max_norm);
  });
}

#if defined(__CUDACC__)
__device__ __forceinline__ thread_ix this_thread() { return {blockIdx.x, gridDim.x, threadIdx.x, blockDim.x}; }
#endif

template <class T, std::size_t S, class Op, bool Sync, class Args>
__global__ void __launch_bounds__(block_threads) step_kernel(const __grid_constant__ Args args) {
  step_body<T, S, Op, Sync>(args.h, args.blob, this_thread());
}

template <class T, class Args>
__global__ void __launch_bounds__(block_threads) sync_kernel(const __grid_constant__ Args args) {
  sync_body<T>(args.h, args.blob, this_thread());
}

template <class T, class Args>
__global__ void __launch_bounds__(block_threads) finite_kernel(const __grid_constant__ Args args) {
  if (!finite_body<T>(args.h, args.blob, this_thread())) *args.h.flag = 1;
}

template <class T, class Args>
__global__ void __launch_bounds__(block_threads) norm_kernel(const __grid_constant__ Args args) {
  __shared__ T lanes[nestla::detail::norm_lanes];
  norm_partials_body<T>(args.h, args.blob, blockIdx.x, gridDim.x, lanes, block_barrier{});
}

template <class T, class Args>
__global__ void __launch_bounds__(block_threads) norm_finalize_kernel(const __grid_constant__ Args args) {
  norm_finalize_body<T>(args.h, args.blob, block_barrier{});
}

template <class T>
__global__ void swap_kernel(T* a, T* b, std::size_t n) {
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    const T x = a[i];
    a[i] = b[i];
    b[i] = x;
  }
}

}  // namespace nestla::cuda::detail
