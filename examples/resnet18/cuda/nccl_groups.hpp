// The GPU trainer's groups of workers per level, over NCCL (one GPU per worker).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nestla/group.hpp>

#include "workers.hpp"

namespace resnet18 {

// As Workers::host_groups, over NCCL communicators on this process's current device:
// all workers from worker 0's unique id (sent over MPI), "node" and block groups split
// from it. Collective. One worker: no groups. Without NCCL built in, more than one
// worker is refused.
std::vector<std::shared_ptr<nestla::worker_group>> nccl_groups(const Workers& workers, std::vector<std::string> specs,
                                                               int depth);

}  // namespace resnet18
