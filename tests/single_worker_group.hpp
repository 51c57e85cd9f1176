// A worker_group of one worker that always communicates: runs the distributed step in one process, without MPI.
#pragma once

#include <nestla/group.hpp>

#include <cstring>

namespace nestla_test {

// Its sums and broadcasts over one worker leave the data as it is, so a step
// through the distributed driver must give the single-process bits.
class single_worker_group final : public nestla::worker_group {
 public:
  explicit single_worker_group(nestla::memory_space m = nestla::memory_space::host, std::int64_t id = 0)
      : worker_group(0, {id}), memory_(m) {
    set_always_communicate(true);
  }
  nestla::memory_space memory() const noexcept override { return memory_; }
  const char* kind() const noexcept override { return "one worker (test)"; }

 private:
  void do_allreduce_sum(float*, std::size_t, void*) override {}
  void do_allreduce_sum(double*, std::size_t, void*) override {}
  void do_broadcast(float*, std::size_t, void*) override {}
  void do_broadcast(double*, std::size_t, void*) override {}
  void do_allgather(const void* mine, void* all, std::size_t bytes) override { std::memcpy(all, mine, bytes); }
  nestla::memory_space memory_;
};

}  // namespace nestla_test
