// The CUDA backend: optimizer state in device memory, one fused kernel launch per step on the user's stream.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include <cuda_runtime.h>

#include "nestla/cuda/device_buffer.hpp"
#include "nestla/cuda/error.hpp"
#include "nestla/cuda/kernels.hpp"
#include "nestla/cuda/launch.hpp"
#include "nestla/error.hpp"
#include "nestla/step_plan.hpp"

// Kernel parameters of up to 32764 bytes need CUDA 12.1 (and Volta or newer,
// which is all CUDA 13 supports).
#if defined(CUDART_VERSION) && CUDART_VERSION >= 12010
#define NESTLA_CUDA_LARGE_PARAMS 1
#else
#define NESTLA_CUDA_LARGE_PARAMS 0
#endif

namespace nestla::cuda {
namespace detail {

// A staging slot for metadata that does not fit in kernel parameters: pinned
// host bytes, their device copy, and an event recorded after the kernel that
// read them, which says when the slot may be filled again.
struct blob_slot {
  void* pinned = nullptr;
  void* device = nullptr;
  std::size_t bytes = 0;
  cudaEvent_t done = nullptr;
  bool used = false;
};

// What a context allocates for its launches. Everything grows on the first
// step (or when the parameter set grows) and is reused after.
class launch_resources {
 public:
  // Slots the ring may grow to while the host runs ahead of the GPU; past it,
  // acquiring a slot waits for the oldest one's kernel.
  static constexpr std::size_t max_slots = 8;

  launch_resources() = default;
  launch_resources(const launch_resources&) = delete;
  launch_resources& operator=(const launch_resources&) = delete;
  // Errors here (a driver already shut down at exit) cannot be reported.
  ~launch_resources() {
    for (auto& s : slots_) release(s);
    if (flag_device_) cudaFree(flag_device_);
    if (flag_host_) cudaFreeHost(flag_host_);
    if (norm_device_) cudaFree(norm_device_);
    if (norm_host_) cudaFreeHost(norm_host_);
  }

  std::vector<unsigned char> scratch;   // the packed blob, host side
  std::vector<const void*> checked;     // per tensor: parameter and gradient pointers already verified

  // A slot of at least bytes whose previous kernel has finished.
  blob_slot& acquire(std::size_t bytes) {
    if (slots_.empty()) {
      slots_.emplace_back();
      next_ = 0;
    } else if (slots_[next_].used) {
      const cudaError_t q = cudaEventQuery(slots_[next_].done);
      if (q == cudaErrorNotReady) {
        if (slots_.size() < max_slots) slots_.insert(slots_.begin() + static_cast<std::ptrdiff_t>(next_), blob_slot{});
        else NESTLA_CUDA_CHECK(cudaEventSynchronize(slots_[next_].done));
      } else {
        check(q, "cudaEventQuery(metadata slot)");
      }
    }
    blob_slot& s = slots_[next_];
    next_ = (next_ + 1) % slots_.size();
    if (s.bytes < bytes) {
      release(s);
      // Powers of two: a parameter set that grows a little does not reallocate each time.
      std::size_t n = 4096;
      while (n < bytes) n *= 2;
      NESTLA_CUDA_CHECK(cudaMallocHost(&s.pinned, n));
      NESTLA_CUDA_CHECK(cudaMalloc(&s.device, n));
      NESTLA_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
      s.bytes = n;
    }
    s.used = true;
    return s;
  }
  std::size_t slot_count() const noexcept { return slots_.size(); }

  int* flag_device() {
    if (!flag_device_) NESTLA_CUDA_CHECK(cudaMalloc(&flag_device_, sizeof(int)));
    return flag_device_;
  }
  int* flag_host() {
    if (!flag_host_) NESTLA_CUDA_CHECK(cudaMallocHost(&flag_host_, sizeof(int)));
    return flag_host_;
  }

  // The gradient norm's device memory (partials, per-tensor norms, result),
  // grown when the set grows (cudaFree waits for the kernels using it), and
  // pinned room for copying the result back.
  void* norm_device(std::size_t bytes) {
    if (norm_bytes_ < bytes) {
      if (norm_device_) NESTLA_CUDA_CHECK(cudaFree(norm_device_));
      norm_device_ = nullptr;
      norm_bytes_ = 0;
      NESTLA_CUDA_CHECK(cudaMalloc(&norm_device_, bytes));
      norm_bytes_ = bytes;
    }
    return norm_device_;
  }
  void* norm_host() {
    if (!norm_host_) NESTLA_CUDA_CHECK(cudaMallocHost(&norm_host_, 2 * sizeof(double)));
    return norm_host_;
  }
  // Where the last norm launch leaves the total norm (null before any).
  const void* norm_result = nullptr;

  // Properties of the current device, queried again when it changes.
  struct device_info {
    int id = -1;
    int sms = 1;
    bool pageable_access = false;  // the GPU reads ordinary host memory (HMM, ATS)
  };
  const device_info& current_device() {
    int id = 0;
    NESTLA_CUDA_CHECK(cudaGetDevice(&id));
    if (id != info_.id) {
      device_info d;
      d.id = id;
      NESTLA_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, id));
      int pageable = 0;
      NESTLA_CUDA_CHECK(cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess, id));
      d.pageable_access = pageable != 0;
      info_ = d;
    }
    return info_;
  }

 private:
  static void release(blob_slot& s) {
    if (s.pinned) cudaFreeHost(s.pinned);
    if (s.device) cudaFree(s.device);
    if (s.done) cudaEventDestroy(s.done);
    s = blob_slot{};
  }

  std::vector<blob_slot> slots_;  // in order of use, slots_[next_] the least recent
  std::size_t next_ = 0;
  int* flag_device_ = nullptr;
  int* flag_host_ = nullptr;
  void* norm_device_ = nullptr;
  std::size_t norm_bytes_ = 0;
  void* norm_host_ = nullptr;
  device_info info_;
};

// Blocks of kernel K that one SM holds at once (asked once per kernel).
template <auto K>
int resident_blocks() {
  static const int n = [] {
    int b = 0;
    NESTLA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, K, int(block_threads), 0));
    return std::max(b, 1);
  }();
  return n;
}

// An update functor for launches that need none (a byte, so that it has no
// indeterminate padding to copy).
struct no_op {
  unsigned char unused = 0;
};

}  // namespace detail

// Backend tag for parameters, gradients and state in CUDA device memory:
//   nestla::Adam<float, nestla::cuda::device>, Lookahead<...> around it, etc.
struct device {
  template <class T>
  using buffer = device_buffer<T>;

  // What one launch did, for tests and benchmarks.
  struct launch_info {
    detail::tier tier = detail::tier::small_params;
    unsigned blocks = 0;
    std::size_t blob_bytes = 0;
    std::uint32_t functors = 0;
  };

  // Per-optimizer execution state: opt.base().context().
  class context {
   public:
    // The stream steps run on. nullptr is the default stream (the legacy one,
    // or the per-thread one under nvcc --default-stream per-thread);
    // cudaStreamPerThread and any stream the caller created work too. A step
    // is ordered after the work already queued there (the backward pass that
    // produced the gradients) and does not wait for the GPU.
    cudaStream_t stream = nullptr;

    // Tuning, for benchmarks: 16-byte vectors each thread moves per chunk,
    // and resident blocks per SM (0: as many as fit).
    unsigned vectors_per_thread = 2;
    unsigned blocks_per_sm = 0;
    // Tests: take this tier, or the next larger one when the metadata does not fit.
    std::optional<detail::tier> force_tier;

    context() = default;
    // A copy (an optimizer copied, or staged by load) shares the stream and
    // settings; it allocates its own launch resources on its first step.
    context(const context& o)
        : stream(o.stream), vectors_per_thread(o.vectors_per_thread), blocks_per_sm(o.blocks_per_sm), force_tier(o.force_tier) {}
    context& operator=(const context& o) {
      stream = o.stream;
      vectors_per_thread = o.vectors_per_thread;
      blocks_per_sm = o.blocks_per_sm;
      force_tier = o.force_tier;
      return *this;
    }
    context(context&&) noexcept = default;
    context& operator=(context&&) noexcept = default;

    const launch_info& last_launch() const noexcept { return last_; }
    detail::launch_resources& resources() {
      if (!res_) res_ = std::make_unique<detail::launch_resources>();
      return *res_;
    }
    const detail::launch_resources* resources_if_any() const noexcept { return res_.get(); }

   private:
    friend struct device;
    std::unique_ptr<detail::launch_resources> res_;
    launch_info last_;
  };

  static constexpr const char* name = "cuda";

  // Checkpoints, slow-weight swaps and copies: given no stream, these wait for
  // all device work first and for their own copy after (see device_buffer.hpp).
  template <class T>
  static void download(void* dst, const T* src, std::size_t n) {
    if (n == 0) return;
    detail::device_synchronous([&](cudaStream_t s) {
      NESTLA_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost, s));
    });
  }
  template <class T>
  static void upload(T* dst, const void* src, std::size_t n) {
    if (n == 0) return;
    detail::device_synchronous([&](cudaStream_t s) {
      NESTLA_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyHostToDevice, s));
    });
  }
  template <class T>
  static void copy(T* dst, const T* src, std::size_t n) {
    if (n == 0 || dst == src) return;
    detail::device_synchronous([&](cudaStream_t s) {
      NESTLA_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, s));
    });
  }
  template <class T>
  static void swap(T* a, T* b, std::size_t n) {
    if (n == 0 || a == b) return;
    detail::device_synchronous([&](cudaStream_t s) {
      const unsigned blocks = static_cast<unsigned>(std::min<std::size_t>((n + 255) / 256, 4096));
      detail::swap_kernel<T><<<blocks, 256, 0, s>>>(a, b, n);
      detail::check_launch("nestla swap kernel launch");
    });
  }
  template <class T>
  static void fill_zero(T* dst, std::size_t n) {
    if (n == 0) return;
    detail::device_synchronous([&](cudaStream_t s) { NESTLA_CUDA_CHECK(cudaMemsetAsync(dst, 0, n * sizeof(T), s)); });
  }

  // Called when a parameter set is bound, before anything is modified: every
  // pointer must be one the GPU can read (device, managed or pinned host
  // memory; any host memory on systems where the GPU reads pageable memory).
  // A pointer seen at the same position last step is not asked about again.
  template <class T>
  static void check_tensors(context& ctx, std::span<const TensorRef<T>> tensors, const char* who) {
    auto& r = ctx.resources();
    if (r.checked.size() < 2 * tensors.size()) r.checked.resize(2 * tensors.size(), nullptr);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      if (tensors[i].size == 0) continue;
      check_pointer(r, r.checked[2 * i], tensors[i].param, who, "parameter", i);
      if (tensors[i].grad) check_pointer(r, r.checked[2 * i + 1], tensors[i].grad, who, "gradient", i);
    }
  }

  // True when no gradient holds a NaN or an infinity. The answer has to reach
  // the host, so this waits for the context's stream: it runs only when the
  // optimizer's non-finite guard is on.
  template <class T>
  static bool all_finite(context& ctx, std::span<const TensorRef<T>> tensors) {
    std::size_t flat_total = 0;
    for (const auto& t : tensors) flat_total = std::max(flat_total, t.offset + t.size);
    if (flat_total == 0) return true;
    auto& r = ctx.resources();
    auto make = [](std::size_t) { return detail::no_op{}; };
    const detail::packed pk = detail::pack<T>(r.scratch, tensors, make);
    int* flag = r.flag_device();
    NESTLA_CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(int), ctx.stream));
    const detail::finite_header h{flat_total, detail::chunk_elements<T>(ctx.vectors_per_thread),
                                  static_cast<std::uint32_t>(tensors.size()), pk.ops_at, flag};
    with_args(ctx, h, pk, [&](const auto& args) {
      using A = std::remove_cvref_t<decltype(args)>;
      constexpr auto kernel = &detail::finite_kernel<T, A>;
      const unsigned blocks = grid_for<kernel>(ctx, flat_total, h.chunk);
      kernel<<<blocks, detail::block_threads, 0, ctx.stream>>>(args);
      detail::check_launch("nestla all_finite kernel launch");
    });
    int* host = r.flag_host();
    NESTLA_CUDA_CHECK(cudaMemcpyAsync(host, flag, sizeof(int), cudaMemcpyDeviceToHost, ctx.stream));
    NESTLA_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    return *host == 0;
  }

  // clip_grad_norm_'s total norm of the gradients and its clipping
  // coefficient for max_norm (order: nestla/detail/grad_norm.hpp): a launch
  // with a block per chunk for the partials, then one block for the rest, on
  // ctx.stream. Both values stay in device memory, where the step's kernel
  // reads the coefficient, so nothing waits for the GPU; with to_host (the
  // non-finite guard, error_if_nonfinite) they are also copied back, which
  // waits for the stream.
  template <class T>
  static nestla::detail::grad_norm_result<T> grad_norm(context& ctx, std::span<const TensorRef<T>> tensors,
                                                       const nestla::detail::norm_spec& spec, T max_norm, bool to_host) {
    nestla::detail::grad_norm_result<T> res;
    std::size_t flat_total = 0;
    for (const auto& t : tensors) flat_total = std::max(flat_total, t.offset + t.size);
    if (flat_total == 0) return res;  // norm 0, coefficient 1, known here
    auto& r = ctx.resources();
    const std::size_t n = tensors.size(), np = nestla::detail::partial_count(flat_total, n);
    auto* mem = static_cast<double*>(r.norm_device((np + n) * sizeof(double) + 2 * sizeof(T)));
    auto make = [](std::size_t) { return detail::no_op{}; };
    const detail::packed pk = detail::pack<T>(r.scratch, tensors, make);
    const detail::norm_header<T> h{flat_total, static_cast<std::uint32_t>(n), pk.ops_at, spec, max_norm,
                                   mem, mem + np, reinterpret_cast<T*>(mem + np + n)};
    with_args(ctx, h, pk, [&](const auto& args) {
      using A = std::remove_cvref_t<decltype(args)>;
      constexpr auto partials = &detail::norm_kernel<T, A>;
      partials<<<grid_for<partials>(ctx, flat_total, nestla::detail::norm_chunk), detail::block_threads, 0,
                  ctx.stream>>>(args);
      detail::check_launch("nestla gradient norm kernel launch");
      detail::norm_finalize_kernel<T, A><<<1, detail::block_threads, 0, ctx.stream>>>(args);
      detail::check_launch("nestla gradient norm kernel launch");
    });
    r.norm_result = h.out;
    res.on_host = false;
    res.at = h.out;
    if (to_host) {
      T* host = static_cast<T*>(r.norm_host());
      NESTLA_CUDA_CHECK(cudaMemcpyAsync(host, h.out, 2 * sizeof(T), cudaMemcpyDeviceToHost, ctx.stream));
      NESTLA_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
      res.on_host = true;
      res.norm = host[0];
      res.coef = host[1];
    }
    return res;
  }
  // The total norm the context's last grad_norm left on the device (waits for it).
  template <class T>
  static T read_grad_norm(const context& ctx) {
    const auto* r = ctx.resources_if_any();
    T v = std::numeric_limits<T>::quiet_NaN();
    if (r && r->norm_result) download(&v, static_cast<const T*>(r->norm_result), 1);
    return v;
  }

  // One launch for every tensor: the base update (make_op(i) is tensor i's
  // functor) and the plan's syncs, on ctx.stream, without waiting for the GPU.
  template <class T, std::size_t S, class MakeOp>
  static void fused_step(context& ctx, std::span<const TensorRef<T>> tensors, std::size_t flat_total,
                         const std::array<T*, S>& state, int m_index, const StepPlan<T>& plan, MakeOp&& make_op) {
    using Op = std::remove_cvref_t<decltype(make_op(std::size_t{}))>;
    if (tensors.empty() || flat_total == 0) return;
    auto& r = ctx.resources();
    const detail::packed pk = detail::pack<T>(r.scratch, tensors, make_op);
    detail::step_header<T, S> h{};
    h.plan = plan;
    if constexpr (S > 0) std::copy(state.begin(), state.end(), h.state);
    h.flat_total = flat_total;
    h.chunk = detail::chunk_elements<T>(ctx.vectors_per_thread);
    h.ntensors = static_cast<std::uint32_t>(tensors.size());
    h.ops_at = pk.ops_at;
    h.m_index = m_index;
    const bool plain = plan.plain();
    with_args(ctx, h, pk, [&](const auto& args) {
      using A = std::remove_cvref_t<decltype(args)>;
      if (plain) launch_step<detail::step_kernel<T, S, Op, false, A>>(ctx, args, flat_total, h.chunk);
      else launch_step<detail::step_kernel<T, S, Op, true, A>>(ctx, args, flat_total, h.chunk);
    });
    ctx.last_.functors = pk.nops;
  }

  // A pass without the base update (a distributed step's apply pass): the
  // plan's syncs and pack over every tensor, on ctx.stream. m is the
  // first-moment buffer (null: none).
  template <class T>
  static void sync_pass(context& ctx, std::span<const TensorRef<T>> tensors, std::size_t flat_total, T* m,
                        const StepPlan<T>& plan) {
    if (tensors.empty() || flat_total == 0) return;
    auto& r = ctx.resources();
    auto make = [](std::size_t) { return detail::no_op{}; };
    const detail::packed pk = detail::pack<T>(r.scratch, tensors, make);
    const detail::sync_header<T> h{plan, m, flat_total, detail::chunk_elements<T>(ctx.vectors_per_thread),
                                   static_cast<std::uint32_t>(tensors.size()), pk.ops_at};
    with_args(ctx, h, pk, [&](const auto& args) {
      using A = std::remove_cvref_t<decltype(args)>;
      launch_step<detail::sync_kernel<T, A>>(ctx, args, flat_total, h.chunk);
    });
  }

  // Copies every tensor's gradient to flat at its offset, on ctx.stream.
  template <class T>
  static void gather_grads(context& ctx, std::span<const TensorRef<T>> tensors, T* flat) {
    for (const auto& t : tensors)
      if (t.size)
        NESTLA_CUDA_CHECK(cudaMemcpyAsync(flat + t.offset, t.grad, t.size * sizeof(T), cudaMemcpyDeviceToDevice, ctx.stream));
  }

 private:
  static void check_pointer(detail::launch_resources& r, const void*& seen, const void* p, const char* who,
                            const char* what, std::size_t i) {
    if (p == seen) return;
    cudaPointerAttributes a{};
    NESTLA_CUDA_CHECK(cudaPointerGetAttributes(&a, p));
    const bool readable = a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged ||
                          a.type == cudaMemoryTypeHost ||
                          (a.type == cudaMemoryTypeUnregistered && r.current_device().pageable_access);
    if (!readable)
      nestla::detail::fail<layout_error>("nestla: ", who, ": ", what, " tensor ", i, " at ", p,
                                         " is host memory the GPU cannot read: a CUDA optimizer takes device memory "
                                         "(nestla::cuda::device_span over cudaMalloc'ed memory, or device_buffer)");
    seen = p;
  }

  template <auto K>
  static unsigned grid_for(context& ctx, std::size_t flat_total, std::size_t chunk) {
    const auto& d = ctx.resources().current_device();
    const std::size_t per_sm = ctx.blocks_per_sm ? ctx.blocks_per_sm : std::size_t(detail::resident_blocks<K>());
    return detail::grid_blocks(flat_total, chunk, per_sm * std::size_t(d.sms));
  }

  template <auto K, class A>
  static void launch_step(context& ctx, const A& args, std::size_t flat_total, std::size_t chunk) {
    const unsigned blocks = grid_for<K>(ctx, flat_total, chunk);
    K<<<blocks, detail::block_threads, 0, ctx.stream>>>(args);
    detail::check_launch("nestla step kernel launch");
    ctx.last_.blocks = blocks;
  }

  // Calls launch(args) with the header and the packed blob in the argument
  // type of the tier that fits: inline in the kernel parameters, or in device
  // memory copied from a pinned slot on the same stream just before.
  template <class Header, class Launch>
  static void with_args(context& ctx, const Header& h, const detail::packed& pk, Launch&& launch) {
    auto& r = ctx.resources();
    detail::tier t = detail::choose_tier<Header>(pk.bytes, NESTLA_CUDA_LARGE_PARAMS);
    if (ctx.force_tier && *ctx.force_tier > t) t = *ctx.force_tier;
    if (!NESTLA_CUDA_LARGE_PARAMS && t == detail::tier::large_params) t = detail::tier::device_blob;
    ctx.last_.tier = t;
    ctx.last_.blob_bytes = pk.bytes;
    if (t == detail::tier::small_params) {
      detail::inline_args<Header, detail::small_param_limit> a;
      a.h = h;
      std::memcpy(a.blob, r.scratch.data(), pk.bytes);
      launch(a);
      return;
    }
#if NESTLA_CUDA_LARGE_PARAMS
    if (t == detail::tier::large_params) {
      detail::inline_args<Header, detail::large_param_limit> a;
      a.h = h;
      std::memcpy(a.blob, r.scratch.data(), pk.bytes);
      launch(a);
      return;
    }
#endif
    detail::blob_slot& s = r.acquire(pk.bytes);
    std::memcpy(s.pinned, r.scratch.data(), pk.bytes);
    NESTLA_CUDA_CHECK(cudaMemcpyAsync(s.device, s.pinned, pk.bytes, cudaMemcpyHostToDevice, ctx.stream));
    launch(detail::global_args<Header>{h, static_cast<const unsigned char*>(s.device)});
    NESTLA_CUDA_CHECK(cudaEventRecord(s.done, ctx.stream));
  }
};

}  // namespace nestla::cuda
