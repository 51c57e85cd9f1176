// A test backend that runs the CUDA backend's kernel bodies on the host, block by block and thread by thread, over host memory.
//
// It packs metadata, picks tiers, splits chunks and calls step_body and
// finite_body exactly as the GPU launches do, so every index and alignment
// path of the kernels is checked against the host backend without a GPU.
#pragma once

#include <nestla/cuda.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace nestla_test {

namespace cd = nestla::cuda::detail;

struct emulated_device {
  template <class T>
  using buffer = nestla::detail::host_buffer<T>;

  struct context {
    std::vector<unsigned char> scratch;
    // Few blocks, small chunks: each block strides over many chunks.
    std::size_t max_blocks = 3;
    unsigned vectors_per_thread = 1;
    std::size_t threads = cd::block_threads;
    std::optional<cd::tier> force_tier;
    cd::tier last_tier = cd::tier::small_params;
    std::vector<double> norm_memory;  // the gradient norm's "device" memory
    const void* norm_result = nullptr;
  };

  static constexpr const char* name = "emulated cuda";

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

  template <class T>
  static bool all_finite(context& ctx, std::span<const nestla::TensorRef<T>> tensors) {
    std::size_t flat_total = 0;
    for (const auto& t : tensors) flat_total = std::max(flat_total, t.offset + t.size);
    auto make = [](std::size_t) { return cd::no_op{}; };
    const auto pk = cd::pack<T>(ctx.scratch, tensors, make);
    const cd::finite_header h{flat_total, cd::chunk_elements<T>(ctx.vectors_per_thread),
                              static_cast<std::uint32_t>(tensors.size()), pk.ops_at, nullptr};
    bool finite = true;
    each_thread(ctx, flat_total, h.chunk,
                [&](const cd::thread_ix& ix) { finite = cd::finite_body<T>(h, ctx.scratch.data(), ix) && finite; });
    return finite;
  }

  // The norm kernels' bodies, block by block, each block's threads one after
  // another between the barriers; the results stay in "device" memory for
  // step_body to read, as on the GPU.
  template <class T>
  static nestla::detail::grad_norm_result<T> grad_norm(context& ctx, std::span<const nestla::TensorRef<T>> tensors,
                                                       const nestla::detail::norm_spec& spec, T max_norm, bool to_host) {
    nestla::detail::grad_norm_result<T> res;
    std::size_t flat_total = 0;
    for (const auto& t : tensors) flat_total = std::max(flat_total, t.offset + t.size);
    if (flat_total == 0) return res;
    const std::size_t n = tensors.size(), np = nestla::detail::partial_count(flat_total, n);
    ctx.norm_memory.assign(np + n + 2, std::numeric_limits<double>::quiet_NaN());  // poisoned: every slot read must be written
    double* mem = ctx.norm_memory.data();
    auto make = [](std::size_t) { return cd::no_op{}; };
    const auto pk = cd::pack<T>(ctx.scratch, tensors, make);
    const cd::norm_header<T> h{flat_total, static_cast<std::uint32_t>(n), pk.ops_at, spec, max_norm,
                               mem, mem + np, reinterpret_cast<T*>(mem + np + n)};
    const std::size_t blocks = cd::grid_blocks(flat_total, nestla::detail::norm_chunk, ctx.max_blocks);
    T lanes[nestla::detail::norm_lanes];
    for (std::size_t b = 0; b < blocks; ++b) cd::norm_partials_body<T>(h, ctx.scratch.data(), b, blocks, lanes, serial_block{});
    cd::norm_finalize_body<T>(h, ctx.scratch.data(), serial_block{});
    ctx.norm_result = h.out;
    res.on_host = to_host;
    res.at = h.out;
    if (to_host) {
      res.norm = h.out[0];
      res.coef = h.out[1];
    }
    return res;
  }
  template <class T>
  static T read_grad_norm(const context& ctx) {
    return ctx.norm_result ? *static_cast<const T*>(ctx.norm_result) : std::numeric_limits<T>::quiet_NaN();
  }

  template <class T, std::size_t S, class MakeOp>
  static void fused_step(context& ctx, std::span<const nestla::TensorRef<T>> tensors, std::size_t flat_total,
                         const std::array<T*, S>& state, int m_index, const nestla::StepPlan<T>& plan, MakeOp&& make_op) {
    using Op = std::remove_cvref_t<decltype(make_op(std::size_t{}))>;
    if (tensors.empty() || flat_total == 0) return;
    const auto pk = cd::pack<T>(ctx.scratch, tensors, make_op);
    cd::step_header<T, S> h{};
    h.plan = plan;
    if constexpr (S > 0) std::copy(state.begin(), state.end(), h.state);
    h.flat_total = flat_total;
    h.chunk = cd::chunk_elements<T>(ctx.vectors_per_thread);
    h.ntensors = static_cast<std::uint32_t>(tensors.size());
    h.ops_at = pk.ops_at;
    h.m_index = m_index;
    using H = cd::step_header<T, S>;
    cd::tier t = cd::choose_tier<H>(pk.bytes, true);
    if (ctx.force_tier && *ctx.force_tier > t) t = *ctx.force_tier;
    ctx.last_tier = t;
    // The blob as the kernel would find it: inside the argument struct, or in a separate buffer.
    auto small = std::make_unique<cd::inline_args<H, cd::small_param_limit>>();
    auto large = std::make_unique<cd::inline_args<H, cd::large_param_limit>>();
    std::vector<unsigned char> global;
    const unsigned char* blob;
    if (t == cd::tier::small_params) {
      std::memcpy(small->blob, ctx.scratch.data(), pk.bytes);
      blob = small->blob;
    } else if (t == cd::tier::large_params) {
      std::memcpy(large->blob, ctx.scratch.data(), pk.bytes);
      blob = large->blob;
    } else {
      global.assign(ctx.scratch.begin(), ctx.scratch.begin() + static_cast<std::ptrdiff_t>(pk.bytes));
      blob = global.data();
    }
    const bool plain = plan.plain();
    each_thread(ctx, flat_total, h.chunk, [&](const cd::thread_ix& ix) {
      if (plain) cd::step_body<T, S, Op, false>(h, blob, ix);
      else cd::step_body<T, S, Op, true>(h, blob, ix);
    });
  }

  template <class T>
  static void sync_pass(context& ctx, std::span<const nestla::TensorRef<T>> tensors, std::size_t flat_total, T* m,
                        const nestla::StepPlan<T>& plan) {
    if (tensors.empty() || flat_total == 0) return;
    auto make = [](std::size_t) { return cd::no_op{}; };
    const auto pk = cd::pack<T>(ctx.scratch, tensors, make);
    const cd::sync_header<T> h{plan, m, flat_total, cd::chunk_elements<T>(ctx.vectors_per_thread),
                               static_cast<std::uint32_t>(tensors.size()), pk.ops_at};
    each_thread(ctx, flat_total, h.chunk, [&](const cd::thread_ix& ix) { cd::sync_body<T>(h, ctx.scratch.data(), ix); });
  }

  template <class T>
  static void gather_grads(context&, std::span<const nestla::TensorRef<T>> tensors, T* flat) {
    for (const auto& t : tensors)
      if (t.size) std::memcpy(flat + t.offset, t.grad, t.size * sizeof(T));
  }

 private:
  struct serial_block {
    template <class F>
    NESTLA_HOST_DEVICE void each(F&& f) const {
#if !defined(__CUDA_ARCH__)
      for (std::size_t l = 0; l < cd::block_threads; ++l) f(l);
#else
      (void)f;
#endif
    }
  };

  template <class F>
  static void each_thread(const context& ctx, std::size_t flat_total, std::size_t chunk, F&& f) {
    const std::size_t blocks = cd::grid_blocks(flat_total, chunk, ctx.max_blocks);
    for (std::size_t b = 0; b < blocks; ++b)
      for (std::size_t t = 0; t < ctx.threads; ++t) f(cd::thread_ix{b, blocks, t, ctx.threads});
  }
};

}  // namespace nestla_test
