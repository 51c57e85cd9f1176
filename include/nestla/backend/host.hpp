// The host backend: fused update passes over CPU memory, explicit SIMD (xsimd), optional worker threads.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <span>

#include <xsimd/xsimd.hpp>

#include "nestla/detail/host_buffer.hpp"
#include "nestla/detail/thread_pool.hpp"
#include "nestla/step_plan.hpp"

namespace nestla {

// Backend tag for parameters, gradients and state in host memory.
struct host {
  template <class T>
  using buffer = detail::host_buffer<T>;

  // Per-optimizer execution state: the worker threads.
  struct context {
    detail::pool_handle pool;
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
      if (!(xsimd::hadd(acc) == T(0)) || !(tail == T(0))) return false;
    }
    return true;
  }

  // One pass over every tensor: the base optimizer's update (op), then the
  // plan's syncs. state[k] are the starts of the flat state buffers; m_index is
  // which of them holds the first moment (-1: none). make_op(i) gives tensor
  // i's update functor (its hyperparameters may differ per tensor).
  template <class T, std::size_t S, class MakeOp>
  static void fused_step(context& ctx, std::span<const TensorRef<T>> tensors, std::size_t flat_total,
                         const std::array<T*, S>& state, int m_index, const StepPlan<T>& plan, MakeOp&& make_op) {
    constexpr std::size_t pad = 64 / sizeof(T);
    auto part = [&](unsigned k, unsigned parts) {
      // This part's share of the flat (padded) range, on cache-line boundaries.
      const std::size_t chunk = (flat_total + parts - 1) / parts;
      const std::size_t lo = std::min(flat_total, (chunk * k + pad - 1) / pad * pad);
      const std::size_t hi = k + 1 == parts ? flat_total : std::min(flat_total, (chunk * (k + 1) + pad - 1) / pad * pad);
      for (std::size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        const std::size_t a = std::max(lo, t.offset), b = std::min(hi, t.offset + t.size);
        if (a >= b) continue;
        run_piece<T, S>(make_op(i), t, a - t.offset, b - a, state, m_index, plan);
      }
    };
    if (ctx.pool.threads() <= 1 || flat_total < min_parallel) {
      part(0, 1);
    } else {
      ctx.pool.run(part);
    }
  }

 private:
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
      update(op, p + b, g + b, sb, len);
      T* m = nullptr;
      if constexpr (S > 0) m = m_index >= 0 ? sb[m_index] : nullptr;
      sync(plan, p + b, m, off + b, len);
    }
  }

  // The base update over n contiguous elements, SIMD body and scalar tail.
  template <class T, std::size_t S, class Op>
  static void update(const Op& op, T* p, const T* g, const std::array<T*, S>& s, std::size_t n) {
    using B = xsimd::batch<T>;
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
    for (; i < n; ++i) {
      T pv = p[i];
      T sv[S > 0 ? S : 1];
      for (std::size_t k = 0; k < S; ++k) sv[k] = s[k][i];
      op(pv, g[i], sv);
      p[i] = pv;
      for (std::size_t k = 0; k < S; ++k) s[k][i] = sv[k];
    }
  }

  // The syncs of a plan over n elements starting at flat offset off.
  template <class T>
  static void sync(const StepPlan<T>& plan, T* p, T* m, std::size_t off, std::size_t n) {
    using B = xsimd::batch<T>;
    constexpr std::size_t W = B::size;
    std::size_t i = 0;
    for (; i + W <= n; i += W) {
      const std::size_t at = off + i;
      auto load = [at](T* base) { return B::load_unaligned(base + at); };
      auto store = [at](T* base, const B& v) { v.store_unaligned(base + at); };
      B pv = B::load_unaligned(p + i);
      B mv = m ? B::load_unaligned(m + i) : B(T(0));
      apply_syncs<B>(plan, pv, m ? &mv : nullptr, load, store);
      pv.store_unaligned(p + i);
      if (m) mv.store_unaligned(m + i);
    }
    for (; i < n; ++i) {
      const std::size_t at = off + i;
      auto load = [at](T* base) { return base[at]; };
      auto store = [at](T* base, T v) { base[at] = v; };
      T pv = p[i];
      T mv = m ? m[i] : T(0);
      apply_syncs<T>(plan, pv, m ? &mv : nullptr, load, store);
      p[i] = pv;
      if (m) m[i] = mv;
    }
  }
};

}  // namespace nestla
