// nestla over NCCL: a worker_group on an NCCL communicator (device memory), for optimizers with the CUDA backend.
//
//   #include <nestla/cuda.hpp>
//   #include <nestla/nccl.hpp>                      // NCCL from the CUDA toolkit; link libnccl
//   // one GPU per worker; the NCCL communicator of all workers made as usual
//   // (ncclGetUniqueId on one worker, sent to the others, ncclCommInitRank):
//   auto all = nestla::nccl::group::create(comm, my_mpi_rank);
//   auto node = nestla::nccl::split(*all, node_index, local_rank);   // ncclCommSplit
//   opt.inner().set_group(node);
//   opt.set_group(all);
//
// The collectives run on the optimizer's stream (opt.base().context().stream)
// after the passes that fill their buffers; the step then waits for each
// collective once, to read the step counts it carries (see
// nestla/detail/distributed.hpp). Everything the optimizer hands NCCL is a
// flat buffer in device memory.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nestla/error.hpp"
#include "nestla/group.hpp"

namespace nestla::nccl {
namespace detail {

inline void check(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return;
  nestla::detail::fail<comm_error>("nestla: ", what, " failed: ", ncclGetErrorString(r));
}
inline void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  nestla::detail::fail<comm_error>("nestla: ", what, " failed: ", cudaGetErrorString(e));
}

template <class T>
ncclDataType_t datatype() {
  return sizeof(T) == sizeof(float) ? ncclFloat32 : ncclFloat64;
}

// The sum as a reduce-scatter then an allgather, both in place: each block is
// summed on one worker and copied to the others, so every worker gets the same
// bits (ncclAllReduce's algorithms promise no such thing), with a ring
// allreduce's traffic. n is a multiple of the group's size.
template <class T>
void sum_in_place(T* data, std::size_t n, int rank, int size, ncclComm_t comm, cudaStream_t s) {
  if (n % static_cast<std::size_t>(size) != 0)
    nestla::detail::fail<comm_error>("nestla::nccl::group: allreduce_sum of ", n, " values over ", size,
                                     " workers: the count must be a multiple of the group's size");
  const std::size_t chunk = n / static_cast<std::size_t>(size);
  T* mine = data + static_cast<std::size_t>(rank) * chunk;
  check(ncclReduceScatter(data, mine, chunk, datatype<T>(), ncclSum, comm, s), "ncclReduceScatter");
  check(ncclAllGather(mine, data, chunk, datatype<T>(), comm, s), "ncclAllGather");
}

}  // namespace detail

// A group of the workers of an NCCL communicator (one GPU each).
class group final : public worker_group {
 public:
  // A group over comm, which stays the caller's. my_id is this worker's id in
  // a numbering every worker shares (its MPI world rank, say): the members'
  // ids are gathered here once (collective over comm) so that the optimizer
  // can check that the levels' groups nest.
  static std::shared_ptr<group> create(ncclComm_t comm, std::int64_t my_id) { return make(comm, my_id, false); }

  ~group() override {
    if (scratch_) cudaFree(scratch_);
    if (owned_ && comm_) ncclCommDestroy(comm_);
  }

  ncclComm_t comm() const noexcept { return comm_; }
  memory_space memory() const noexcept override { return memory_space::device; }
  const char* kind() const noexcept override { return "NCCL"; }

 private:
  friend std::shared_ptr<group> split(const group& parent, int color, int key);

  static std::shared_ptr<group> make(ncclComm_t comm, std::int64_t my_id, bool owned) {
    if (!comm)
      nestla::detail::fail<comm_error>("nestla::nccl::group: the communicator is null (a worker outside the "
                                       "communicator it was split into has no group; give it none)");
    int rank = 0, size = 0;
    detail::check(ncclCommUserRank(comm, &rank), "ncclCommUserRank");
    detail::check(ncclCommCount(comm, &size), "ncclCommCount");
    // The members' ids: an allgather of one int64 each, through device memory.
    std::int64_t* ids = nullptr;
    detail::check(cudaMalloc(&ids, sizeof(std::int64_t) * static_cast<std::size_t>(size)), "cudaMalloc");
    std::vector<std::int64_t> members(static_cast<std::size_t>(size));
    try {
      detail::check(cudaMemcpy(ids + rank, &my_id, sizeof my_id, cudaMemcpyHostToDevice), "cudaMemcpy");
      detail::check(ncclAllGather(ids + rank, ids, 1, ncclInt64, comm, cudaStreamPerThread), "ncclAllGather");
      detail::check(cudaStreamSynchronize(cudaStreamPerThread), "cudaStreamSynchronize");
      detail::check(cudaMemcpy(members.data(), ids, sizeof(std::int64_t) * members.size(), cudaMemcpyDeviceToHost),
                    "cudaMemcpy");
    } catch (...) {
      cudaFree(ids);
      throw;
    }
    cudaFree(ids);
    return std::shared_ptr<group>(new group(comm, rank, std::move(members), owned));
  }

  group(ncclComm_t comm, int rank, std::vector<std::int64_t> members, bool owned)
      : worker_group(rank, std::move(members)), comm_(comm), owned_(owned) {}

  static cudaStream_t stream_of(void* s) { return static_cast<cudaStream_t>(s); }

  void do_allreduce_sum(float* data, std::size_t n, void* s) override {
    detail::sum_in_place(data, n, rank(), size(), comm_, stream_of(s));
  }
  void do_allreduce_sum(double* data, std::size_t n, void* s) override {
    detail::sum_in_place(data, n, rank(), size(), comm_, stream_of(s));
  }
  void do_broadcast(float* data, std::size_t n, void* s) override {
    detail::check(ncclBroadcast(data, data, n, ncclFloat32, 0, comm_, stream_of(s)), "ncclBroadcast");
  }
  void do_broadcast(double* data, std::size_t n, void* s) override {
    detail::check(ncclBroadcast(data, data, n, ncclFloat64, 0, comm_, stream_of(s)), "ncclBroadcast");
  }
  // Host memory in and out (the optimizer's checks): staged through device
  // memory the group keeps, on the calling thread's default stream, waited for.
  void do_allgather(const void* mine, void* all, std::size_t bytes) override {
    const std::size_t need = bytes * static_cast<std::size_t>(size());
    if (scratch_bytes_ < need) {
      if (scratch_) cudaFree(scratch_);
      scratch_ = nullptr;
      scratch_bytes_ = 0;
      detail::check(cudaMalloc(&scratch_, need), "cudaMalloc");
      scratch_bytes_ = need;
    }
    auto* at = static_cast<char*>(scratch_) + bytes * static_cast<std::size_t>(rank());
    detail::check(cudaMemcpy(at, mine, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    detail::check(ncclAllGather(at, scratch_, bytes, ncclInt8, comm_, cudaStreamPerThread), "ncclAllGather");
    detail::check(cudaStreamSynchronize(cudaStreamPerThread), "cudaStreamSynchronize");
    detail::check(cudaMemcpy(all, scratch_, need, cudaMemcpyDeviceToHost), "cudaMemcpy");
  }

  ncclComm_t comm_;
  bool owned_;
  void* scratch_ = nullptr;
  std::size_t scratch_bytes_ = 0;
};

// The workers of parent with this worker's color, ordered by key, as a new
// communicator (ncclCommSplit, collective over parent) that the group owns:
// e.g. color = node index, key = local rank for the workers of one node.
inline std::shared_ptr<group> split(const group& parent, int color, int key) {
  if (color < 0) nestla::detail::fail<invalid_option>("nestla::nccl::split: color ", color, " must be >= 0");
  ncclComm_t c = nullptr;
  detail::check(ncclCommSplit(parent.comm(), color, key, &c, nullptr), "ncclCommSplit");
  const std::int64_t me = parent.members()[static_cast<std::size_t>(parent.rank())];
  try {
    return group::make(c, me, true);
  } catch (...) {
    ncclCommDestroy(c);
    throw;
  }
}

// Consecutive blocks of g workers of parent (ranks [0, g), [g, 2g), ...).
inline std::shared_ptr<group> consecutive(const group& parent, int g) {
  if (g < 1) nestla::detail::fail<invalid_option>("nestla::nccl::consecutive: g = ", g, " must be >= 1");
  return split(parent, parent.rank() / g, parent.rank());
}

}  // namespace nestla::nccl
