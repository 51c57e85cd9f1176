// nestla over MPI: a worker_group on an MPI communicator (host memory), and the usual layouts of groups.
//
//   #include <nestla/mpi.hpp>                       // any MPI; link it (CMake: MPI::MPI_CXX)
//   auto opt = nestla::nested<2>(nestla::Adam<>(), {{.k = 5}, {.k = 5}});
//   opt.inner().set_group(nestla::mpi::node());     // inner level: the workers of this node
//   opt.set_group(nestla::mpi::world());            // outer level: every worker
//
// Every function here is collective over the communicator it is given, as the
// MPI calls it makes are: call it on every worker of that communicator, in the
// same order.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "nestla/error.hpp"
#include "nestla/group.hpp"

namespace nestla::mpi {
namespace detail {

inline void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  nestla::detail::fail<comm_error>("nestla: ", what, " failed: ", std::string(msg, static_cast<std::size_t>(len)));
}

template <class T>
MPI_Datatype datatype() {
  return sizeof(T) == sizeof(float) ? MPI_FLOAT : MPI_DOUBLE;
}

}  // namespace detail

// A group of the workers of an MPI communicator.
//
// The sum is a reduce-scatter followed by an allgather (MPI_Reduce_scatter_block,
// MPI_Allgather, in place): each block of the sum is computed on one worker
// and copied to the others, so every worker gets the same bits, which
// MPI_Allreduce does not promise (recursive doubling adds in an order that
// depends on the rank). It moves what a ring allreduce moves, 2 (N-1)/N of the
// payload per worker.
class group final : public worker_group {
 public:
  // A group over comm. It works on its own duplicate of comm (MPI_Comm_dup,
  // collective), so its collectives never match the caller's. A null or
  // intercommunicator, or MPI not initialized, is an error here.
  static std::shared_ptr<group> create(MPI_Comm comm) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized)
      nestla::detail::fail<comm_error>("nestla::mpi::group: MPI is ", finalized ? "finalized" : "not initialized",
                                       " (call MPI_Init before making groups and step them before MPI_Finalize)");
    if (comm == MPI_COMM_NULL)
      nestla::detail::fail<comm_error>("nestla::mpi::group: the communicator is MPI_COMM_NULL (a worker outside "
                                       "the communicator it was split into has no group; give it none)");
    int inter = 0;
    detail::check(MPI_Comm_test_inter(comm, &inter), "nestla::mpi::group: MPI_Comm_test_inter");
    if (inter) nestla::detail::fail<comm_error>("nestla::mpi::group: an intercommunicator cannot be a group of workers");
    MPI_Comm dup = MPI_COMM_NULL;
    detail::check(MPI_Comm_dup(comm, &dup), "nestla::mpi::group: MPI_Comm_dup");
    MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    int rank = 0, size = 0;
    MPI_Comm_rank(dup, &rank);
    MPI_Comm_size(dup, &size);
    // Members as ranks of MPI_COMM_WORLD: the numbering every worker shares.
    MPI_Group mine, world;
    MPI_Comm_group(dup, &mine);
    MPI_Comm_group(MPI_COMM_WORLD, &world);
    std::vector<int> ranks(static_cast<std::size_t>(size)), in_world(static_cast<std::size_t>(size));
    for (int i = 0; i < size; ++i) ranks[static_cast<std::size_t>(i)] = i;
    const int rc = MPI_Group_translate_ranks(mine, size, ranks.data(), world, in_world.data());
    MPI_Group_free(&mine);
    MPI_Group_free(&world);
    if (rc != MPI_SUCCESS) MPI_Comm_free(&dup);
    detail::check(rc, "nestla::mpi::group: MPI_Group_translate_ranks");
    std::vector<std::int64_t> members(in_world.begin(), in_world.end());
    return std::shared_ptr<group>(new group(dup, rank, std::move(members)));
  }

  ~group() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  // nestla's duplicate of the communicator.
  MPI_Comm comm() const noexcept { return comm_; }
  memory_space memory() const noexcept override { return memory_space::host; }
  const char* kind() const noexcept override { return "MPI"; }

 private:
  group(MPI_Comm comm, int rank, std::vector<std::int64_t> members)
      : worker_group(rank, std::move(members)), comm_(comm) {}

  template <class T>
  void sum(T* data, std::size_t n) {
    const std::size_t workers = static_cast<std::size_t>(size());
    if (n % workers != 0)
      nestla::detail::fail<comm_error>("nestla::mpi::group: allreduce_sum of ", n, " values over ", workers,
                                       " workers: the count must be a multiple of the group's size");
    if (workers == 1 || n == 0) return;
    const std::size_t chunk = n / workers;
    if (chunk > static_cast<std::size_t>(INT_MAX))
      nestla::detail::fail<comm_error>("nestla::mpi::group: a block of ", chunk, " values is more than MPI's int counts");
    const int c = static_cast<int>(chunk);
    detail::check(MPI_Reduce_scatter_block(MPI_IN_PLACE, data, c, detail::datatype<T>(), MPI_SUM, comm_),
                  "nestla::mpi::group: MPI_Reduce_scatter_block");
    // In place, this worker's block of the sum lands at the start; the allgather wants it at its own place.
    if (rank() > 0) std::memmove(data + static_cast<std::size_t>(rank()) * chunk, data, chunk * sizeof(T));
    detail::check(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, c, detail::datatype<T>(), comm_),
                  "nestla::mpi::group: MPI_Allgather");
  }
  template <class T>
  void bcast(T* data, std::size_t n) {
    for (std::size_t at = 0; at < n;) {
      const int c = static_cast<int>(std::min<std::size_t>(n - at, INT_MAX));
      detail::check(MPI_Bcast(data + at, c, detail::datatype<T>(), 0, comm_), "nestla::mpi::group: MPI_Bcast");
      at += static_cast<std::size_t>(c);
    }
  }

  void do_allreduce_sum(float* data, std::size_t n, void*) override { sum(data, n); }
  void do_allreduce_sum(double* data, std::size_t n, void*) override { sum(data, n); }
  void do_broadcast(float* data, std::size_t n, void*) override { bcast(data, n); }
  void do_broadcast(double* data, std::size_t n, void*) override { bcast(data, n); }
  void do_allgather(const void* mine, void* all, std::size_t bytes) override {
    if (bytes > static_cast<std::size_t>(INT_MAX))
      nestla::detail::fail<comm_error>("nestla::mpi::group: allgather of ", bytes, " bytes per worker");
    const int b = static_cast<int>(bytes);
    detail::check(MPI_Allgather(mine, b, MPI_BYTE, all, b, MPI_BYTE, comm_), "nestla::mpi::group: MPI_Allgather");
  }

  MPI_Comm comm_;
};

// Every worker of parent (by default all of them): the outermost level's group.
inline std::shared_ptr<group> world(MPI_Comm parent = MPI_COMM_WORLD) { return group::create(parent); }

// The workers of parent that share this worker's color, ordered by key
// (MPI_Comm_split); collective over parent.
inline std::shared_ptr<group> split(int color, int key, MPI_Comm parent = MPI_COMM_WORLD) {
  if (color < 0) nestla::detail::fail<invalid_option>("nestla::mpi::split: color ", color, " must be >= 0");
  MPI_Comm c = MPI_COMM_NULL;
  detail::check(MPI_Comm_split(parent, color, key, &c), "nestla::mpi::split: MPI_Comm_split");
  auto g = group::create(c);
  MPI_Comm_free(&c);
  return g;
}

// The workers of parent on this node (MPI_Comm_split_type with
// MPI_COMM_TYPE_SHARED): the inner level's group when a node's link is cheap.
inline std::shared_ptr<group> node(MPI_Comm parent = MPI_COMM_WORLD) {
  int rank = 0;
  MPI_Comm_rank(parent, &rank);
  MPI_Comm c = MPI_COMM_NULL;
  detail::check(MPI_Comm_split_type(parent, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &c),
                "nestla::mpi::node: MPI_Comm_split_type");
  auto g = group::create(c);
  MPI_Comm_free(&c);
  return g;
}

// Consecutive blocks of g ranks of parent: ranks [0, g), [g, 2g), ... (the
// last block smaller when g does not divide the size).
inline std::shared_ptr<group> consecutive(int g, MPI_Comm parent = MPI_COMM_WORLD) {
  if (g < 1) nestla::detail::fail<invalid_option>("nestla::mpi::consecutive: g = ", g, " must be >= 1");
  int rank = 0;
  MPI_Comm_rank(parent, &rank);
  return split(rank / g, rank, parent);
}

}  // namespace nestla::mpi
