// The trainer's workers under mpirun: MPI set up when the process was started by it, the loop's WorkerComm, and each level's group of workers (host memory; the GPU trainer's NCCL groups are in cuda/nccl_groups.hpp).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nestla/group.hpp>

#include "trainer.hpp"

namespace resnet18 {

// MPI for this process: initialized when mpirun (or another MPI launcher) started it,
// finalized at destruction; otherwise one worker and no MPI at all. Without MPI built in
// (no MPI found at configure time), always one worker.
class Workers final : public WorkerComm {
 public:
  Workers(int* argc, char*** argv);
  ~Workers() override;
  Workers(const Workers&) = delete;
  Workers& operator=(const Workers&) = delete;

  [[nodiscard]] int rank() const override { return rank_; }
  [[nodiscard]] int size() const override { return size_; }
  [[nodiscard]] int any(int flags) const override;
  void sum(double* values, int n) const override;

  // Ends every worker of a distributed run with this exit status (MPI_Abort): one that
  // failed alone would leave the others waiting in a collective. Returns with one worker.
  void abort(int code) const;

  // The workers of this machine: this worker's rank among them.
  [[nodiscard]] int local_rank() const { return local_rank_; }

  // The group of every level, level 0 first, from --groups items ("1", "all", "node",
  // or a block size; `specs` empty: "1" for every level but the outermost, "all").
  // Host memory (MPI). Collective: every worker calls it with the same specs.
  [[nodiscard]] std::vector<std::shared_ptr<nestla::worker_group>> host_groups(std::vector<std::string> specs,
                                                                               int depth) const;
  // Worker 0's bytes to every worker (the GPU trainer's NCCL unique id).
  void broadcast(void* data, int bytes) const;
  // The rank of the first worker on this worker's machine: one number per machine.
  [[nodiscard]] int node_index() const { return node_index_; }

  // "4 workers, groups 1,2,all" for the log; empty for one worker.
  [[nodiscard]] static std::string describe(const std::vector<std::string>& specs, int workers);
  // The --groups items in effect (the default filled in).
  [[nodiscard]] static std::vector<std::string> layout(std::vector<std::string> specs, int depth);

 private:
  bool mpi_ = false;
  int rank_ = 0, size_ = 1, local_rank_ = 0, node_index_ = 0;
};

}  // namespace resnet18
