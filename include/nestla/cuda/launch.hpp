// Multi-tensor launch metadata: how one step's tensors and update functors are packed for a single kernel launch, and how blocks split the work.
//
// The kernel walks the flat state range [0, flat_total) in chunks; tensor i owns
// [offset_i, offset_i + size_i) of it (offsets padded to 64 bytes, Layout::of).
// A block takes chunks blockIdx.x, blockIdx.x + gridDim.x, ...; within a chunk
// it visits the pieces of the tensors that overlap it. The metadata (one
// tensor_meta per tensor, then the distinct update functors) is a byte blob
// that travels in the kernel's parameters when it fits, else in device memory.
// This header is plain C++: its logic is tested without a GPU.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include "nestla/detail/grad_norm.hpp"
#include "nestla/step_plan.hpp"

namespace nestla::cuda::detail {

// Bytes of one vector load or store (float4, double2).
inline constexpr std::size_t vector_bytes = 16;
// Threads per block of the step kernels.
inline constexpr unsigned block_threads = 256;

// Kernel parameter space: 4 KB on every CUDA version; 32764 bytes since CUDA
// 12.1 on Volta and newer (what CUDA 13 supports at all).
inline constexpr std::size_t small_param_limit = 4096;
inline constexpr std::size_t large_param_limit = 32764;

// One tensor as the kernel sees it: 40 bytes whatever T is.
template <class T>
struct tensor_meta {
  T* param;
  const T* grad;
  std::size_t size;
  std::size_t offset;     // into the flat state buffers, a multiple of 64 bytes
  std::uint32_t op;       // index into the blob's functor table
  std::uint32_t vector;   // 1: param and grad are 16-byte aligned, so whole vectors move
};

// What every step kernel needs besides the blob.
template <class T, std::size_t S>
struct step_header {
  StepPlan<T> plan;
  T* state[S > 0 ? S : 1];
  std::size_t flat_total;
  std::size_t chunk;      // elements per chunk, a multiple of 64 bytes
  std::uint32_t ntensors;
  std::uint32_t ops_at;   // byte offset of the functor table in the blob
  int m_index;            // which state buffer is the first moment, -1: none
};

// The sync pass's header: the plan, the first-moment buffer (null: none).
template <class T>
struct sync_header {
  StepPlan<T> plan;
  T* m;
  std::size_t flat_total;
  std::size_t chunk;
  std::uint32_t ntensors;
  std::uint32_t ops_at;
};

// The all_finite kernel's header: no plan, no state, a flag to raise.
struct finite_header {
  std::size_t flat_total;
  std::size_t chunk;
  std::uint32_t ntensors;
  std::uint32_t ops_at;
  int* flag;
};

// The gradient norm kernels' header (their order: nestla/detail/grad_norm.hpp).
template <class T>
struct norm_header {
  std::size_t flat_total;
  std::uint32_t ntensors;
  std::uint32_t ops_at;
  nestla::detail::norm_spec spec;
  T max_norm;
  double* partials;  // partial_count(flat_total, ntensors) of them
  double* norms;     // one per tensor
  T* out;            // [0] the total norm, [1] the clipping coefficient
};

constexpr std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

// Kernel argument carrying the blob in the parameter space, at most Limit bytes in all.
template <class Header, std::size_t Limit>
struct inline_args {
  static constexpr std::size_t capacity = Limit / 16 * 16 - round_up(sizeof(Header), 16);
  Header h;
  alignas(16) unsigned char blob[capacity];
};

// Kernel argument pointing at a blob in device memory.
template <class Header>
struct global_args {
  Header h;
  const unsigned char* blob;
};

// Where a step's metadata travels.
enum class tier : std::uint8_t {
  small_params,  // in a kernel parameter of at most 4 KB
  large_params,  // in a kernel parameter of at most 32764 bytes (CUDA 12.1+)
  device_blob,   // copied to device memory ahead of the kernel, on the same stream
};

template <class Header>
constexpr tier choose_tier(std::size_t blob_bytes, bool large_params_supported) {
  if (blob_bytes <= inline_args<Header, small_param_limit>::capacity) return tier::small_params;
  if (large_params_supported && blob_bytes <= inline_args<Header, large_param_limit>::capacity)
    return tier::large_params;
  return tier::device_blob;
}

inline const char* to_string(tier t) {
  switch (t) {
    case tier::small_params: return "small_params";
    case tier::large_params: return "large_params";
    case tier::device_blob: return "device_blob";
  }
  return "?";
}

struct packed {
  std::size_t bytes = 0;     // blob length
  std::uint32_t nops = 0;    // distinct functors
  std::uint32_t ops_at = 0;  // where the functor table starts
};

// Packs the tensors and their functors into out, which grows but never
// shrinks, so steps after the first allocate nothing. A functor equal byte for
// byte to the previous tensor's is shared: all tensors of a parameter group
// share one entry, and a set of hundreds of tensors usually needs one or two.
template <class T, class MakeOp>
packed pack(std::vector<unsigned char>& out, std::span<const TensorRef<T>> tensors, MakeOp& make_op) {
  using Op = std::remove_cvref_t<decltype(make_op(std::size_t{}))>;
  static_assert(std::is_trivially_copyable_v<Op>, "nestla: update functors travel to the GPU as bytes");
  static_assert(alignof(Op) <= 16, "nestla: update functors must not need more than 16-byte alignment");
  const std::size_t n = tensors.size();
  const std::size_t ops_at = round_up(n * sizeof(tensor_meta<T>), alignof(Op));
  const std::size_t most = ops_at + std::max<std::size_t>(n, 1) * sizeof(Op);
  if (out.size() < most) out.resize(most);
  unsigned char* const base = out.data();
  std::uint32_t nops = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const Op op = make_op(i);
    unsigned char* const slot = base + ops_at + nops * sizeof(Op);
    if (nops == 0 || std::memcmp(slot - sizeof(Op), &op, sizeof(Op)) != 0) {
      std::memcpy(slot, &op, sizeof(Op));
      ++nops;
    }
    const auto& t = tensors[i];
    const bool aligned = reinterpret_cast<std::uintptr_t>(t.param) % vector_bytes == 0 &&
                         reinterpret_cast<std::uintptr_t>(t.grad) % vector_bytes == 0;
    const tensor_meta<T> m{t.param, t.grad, t.size, t.offset, nops - 1, aligned ? 1u : 0u};
    std::memcpy(base + i * sizeof(m), &m, sizeof(m));
  }
  return {ops_at + nops * sizeof(Op), nops, static_cast<std::uint32_t>(ops_at)};
}

// The first tensor that can overlap [at, ...): the last one whose offset is at
// or before at. Offsets never decrease (empty tensors repeat one), so a binary
// search does; the caller walks on from there.
template <class T>
NESTLA_HOST_DEVICE inline std::uint32_t first_tensor(const tensor_meta<T>* meta, std::uint32_t n, std::size_t at) {
  std::uint32_t lo = 0, hi = n;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const std::uint32_t mid = lo + (hi - lo) / 2;
    if (meta[mid].offset <= at) lo = mid;
    else hi = mid;
  }
  return lo;
}

// Elements per chunk: block_threads threads, each moving vectors_per_thread
// 16-byte vectors. A multiple of 64 bytes, so chunk edges keep tensors' vector
// alignment (their offsets are multiples of 64 bytes too).
template <class T>
constexpr std::size_t chunk_elements(unsigned vectors_per_thread) {
  return std::size_t(block_threads) * std::max(vectors_per_thread, 1u) * (vector_bytes / sizeof(T));
}

// Blocks for a launch over flat_total elements: one per chunk, at most
// max_blocks (what the GPU holds at once), at least one.
inline unsigned grid_blocks(std::size_t flat_total, std::size_t chunk, std::size_t max_blocks) {
  const std::size_t chunks = (flat_total + chunk - 1) / chunk;
  return static_cast<unsigned>(std::max<std::size_t>(1, std::min(chunks, std::max<std::size_t>(max_blocks, 1))));
}

}  // namespace nestla::cuda::detail
