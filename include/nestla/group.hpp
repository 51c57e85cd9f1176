// A group of workers that a level of an optimizer averages over: communication as a policy of a level.
//
// Distributed training gives every level its group (docs/semantics.md, "Distributed Lookahead"):
//
//   opt.base().set_group(g0);   // level 0: the gradients are averaged over g0 before every update
//   opt.inner().set_group(g1);  // a Lookahead level: its syncs average theta - phi over g1
//   opt.set_group(g2);          // ... and so on out to the outermost level
//
// The groups nest (g0 within g1 within g2). A level without a group, or with a
// group of one worker, communicates nothing: a step whose groups all have one
// worker is the single-process step, bit for bit and at the same cost.
//
// worker_group is the whole interface the optimizer needs; <nestla/mpi.hpp>
// implements it over an MPI communicator (host memory) and <nestla/nccl.hpp>
// over an NCCL communicator (device memory). This header has no MPI or NCCL in
// it, and an optimizer that is never given a group never touches it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <utility>
#include <vector>

namespace nestla {

// A collective failed, or the workers disagree (out of step, mismatched groups or parameter sets).
struct comm_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Where a group's collectives read and write.
enum class memory_space : std::uint8_t { host, device };

// What a worker's collectives moved, counted by the library: for benchmarks and logs.
struct comm_stats {
  std::uint64_t collectives = 0;  // allreduces, broadcasts and allgathers started by this worker
  std::uint64_t bytes = 0;        // payload bytes handed to them
  std::uint64_t bytes_sent = 0;   // bytes this worker sends, as a ring reduce-scatter + allgather
                                  // (2 (N-1)/N of the payload) and a pipelined broadcast do
};

class worker_group {
 public:
  virtual ~worker_group() = default;
  worker_group(const worker_group&) = delete;
  worker_group& operator=(const worker_group&) = delete;

  int size() const noexcept { return static_cast<int>(members_.size()); }
  int rank() const noexcept { return rank_; }
  // The members' ids in a numbering every worker shares (MPI: ranks in
  // MPI_COMM_WORLD), in the group's rank order. Nesting is checked on these.
  const std::vector<std::int64_t>& members() const noexcept { return members_; }
  virtual memory_space memory() const noexcept = 0;
  // What the implementation is, for messages ("MPI", "NCCL").
  virtual const char* kind() const noexcept = 0;

  // In place: data[i] <- the sum over the group of data[i], for i < n, with
  // the same bits on every worker. n is a multiple of size(). stream orders
  // the collective on a device (the optimizer's CUDA stream; null on the host).
  void allreduce_sum(float* data, std::size_t n, void* stream = nullptr) {
    count_allreduce(n * sizeof(float));
    do_allreduce_sum(data, n, stream);
  }
  void allreduce_sum(double* data, std::size_t n, void* stream = nullptr) {
    count_allreduce(n * sizeof(double));
    do_allreduce_sum(data, n, stream);
  }
  // data on every worker <- data on the group's first worker (rank 0).
  void broadcast(float* data, std::size_t n, void* stream = nullptr) {
    count_broadcast(n * sizeof(float));
    do_broadcast(data, n, stream);
  }
  void broadcast(double* data, std::size_t n, void* stream = nullptr) {
    count_broadcast(n * sizeof(double));
    do_broadcast(data, n, stream);
  }
  // all[r * bytes .. (r + 1) * bytes) <- mine of the worker of rank r; host
  // memory on every implementation (the optimizer's checks use it, rarely).
  void allgather(const void* mine, void* all, std::size_t bytes) {
    ++stats_.collectives;
    stats_.bytes += bytes;
    stats_.bytes_sent += bytes * static_cast<std::uint64_t>(size() - 1);
    do_allgather(mine, all, bytes);
  }

  const comm_stats& stats() const noexcept { return stats_; }
  void reset_stats() noexcept { stats_ = {}; }

  // Tests: run the collectives even in a group of one worker, so that the
  // distributed step runs on one machine (it then gives the single-process
  // bits). Off by default: a group of one worker costs nothing.
  void set_always_communicate(bool on) noexcept { always_ = on; }
  // Does a level with this group communicate?
  bool communicates() const noexcept { return size() > 1 || always_; }

 protected:
  worker_group(int rank, std::vector<std::int64_t> members) : members_(std::move(members)), rank_(rank) {}

  virtual void do_allreduce_sum(float* data, std::size_t n, void* stream) = 0;
  virtual void do_allreduce_sum(double* data, std::size_t n, void* stream) = 0;
  virtual void do_broadcast(float* data, std::size_t n, void* stream) = 0;
  virtual void do_broadcast(double* data, std::size_t n, void* stream) = 0;
  virtual void do_allgather(const void* mine, void* all, std::size_t bytes) = 0;

 private:
  void count_allreduce(std::size_t bytes) {
    ++stats_.collectives;
    stats_.bytes += bytes;
    stats_.bytes_sent += 2 * (bytes / static_cast<std::size_t>(size())) * static_cast<std::uint64_t>(size() - 1);
  }
  void count_broadcast(std::size_t bytes) {
    ++stats_.collectives;
    stats_.bytes += bytes;
    if (rank_ + 1 < size()) stats_.bytes_sent += bytes;  // a chain: every worker but the last forwards it
  }

  std::vector<std::int64_t> members_;
  int rank_ = 0;
  bool always_ = false;
  comm_stats stats_;
};

}  // namespace nestla
