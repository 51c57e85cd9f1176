// The GPU trainer's NCCL groups.
#include "nccl_groups.hpp"

#include <stdexcept>

#include "util.hpp"

#if defined(RESNET18_WITH_NCCL)
#include <nccl.h>

#include <nestla/nccl.hpp>
#endif

namespace resnet18 {

#if defined(RESNET18_WITH_NCCL)

std::vector<std::shared_ptr<nestla::worker_group>> nccl_groups(const Workers& workers, std::vector<std::string> specs,
                                                               int depth) {
  specs = Workers::layout(std::move(specs), depth);
  std::vector<std::shared_ptr<nestla::worker_group>> out;
  if (workers.size() == 1) return out;
  ncclUniqueId id{};
  if (workers.rank() == 0 && ncclGetUniqueId(&id) != ncclSuccess) throw std::runtime_error("ncclGetUniqueId failed");
  workers.broadcast(&id, sizeof id);
  ncclComm_t comm = nullptr;
  if (const ncclResult_t r = ncclCommInitRank(&comm, workers.size(), id, workers.rank()); r != ncclSuccess)
    throw std::runtime_error(std::string("ncclCommInitRank failed: ") + ncclGetErrorString(r));
  // The communicator of all workers lives as long as the process (groups do not own it).
  static std::vector<ncclComm_t> keep;
  keep.push_back(comm);
  auto all = nestla::nccl::group::create(comm, workers.rank());
  for (const std::string& g : specs) {
    if (g == "all") out.push_back(all);
    else if (g == "node") out.push_back(nestla::nccl::split(*all, workers.node_index(), workers.local_rank()));
    else if (g == "1") out.push_back(nullptr);
    else out.push_back(nestla::nccl::consecutive(*all, std::stoi(g)));
  }
  return out;
}

#else

std::vector<std::shared_ptr<nestla::worker_group>> nccl_groups(const Workers& workers, std::vector<std::string>, int) {
  if (workers.size() > 1)
    throw RefusedError("--device cuda with " + std::to_string(workers.size()) +
                       " workers needs NCCL, which this resnet18_train is built without");
  return {};
}

#endif

}  // namespace resnet18
