// The trainer's workers: MPI when launched by mpirun, groups per level over MPI (host) or NCCL (GPU).
#include "workers.hpp"

#include <cstdlib>
#include <stdexcept>

#include "util.hpp"

#if defined(RESNET18_WITH_MPI)
#include <mpi.h>

#include <nestla/mpi.hpp>
#endif

namespace resnet18 {

namespace {

// Started by an MPI launcher (Open MPI, MPICH/Hydra, PMIx, Slurm's srun with PMI)?
bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

}  // namespace

std::vector<std::string> Workers::layout(std::vector<std::string> specs, int depth) {
  if (specs.empty()) {
    specs.assign(static_cast<std::size_t>(depth + 1), "1");
    specs.back() = "all";
  }
  return specs;
}

std::string Workers::describe(const std::vector<std::string>& specs, int workers) {
  if (workers <= 1) return {};
  std::string s = std::to_string(workers) + " workers, groups ";
  for (std::size_t i = 0; i < specs.size(); ++i) s += (i ? "," : "") + specs[i];
  return s;
}

#if defined(RESNET18_WITH_MPI)

Workers::Workers(int* argc, char*** argv) {
  if (!launched_by_mpi()) return;
  MPI_Init(argc, argv);
  mpi_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank_);
  node_index_ = rank_;
  MPI_Allreduce(&rank_, &node_index_, 1, MPI_INT, MPI_MIN, node);
  MPI_Comm_free(&node);
}

Workers::~Workers() {
  if (mpi_) MPI_Finalize();
}

void Workers::abort(int code) const {
  if (mpi_ && size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

int Workers::any(int flags) const {
  if (!mpi_) return flags;
  int out = 0;
  MPI_Allreduce(&flags, &out, 1, MPI_INT, MPI_BOR, MPI_COMM_WORLD);
  return out;
}

void Workers::sum(double* values, int n) const {
  if (mpi_) MPI_Allreduce(MPI_IN_PLACE, values, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

void Workers::broadcast(void* data, int bytes) const {
  if (mpi_) MPI_Bcast(data, bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
}

std::vector<std::shared_ptr<nestla::worker_group>> Workers::host_groups(std::vector<std::string> specs,
                                                                        int depth) const {
  specs = layout(std::move(specs), depth);
  std::vector<std::shared_ptr<nestla::worker_group>> out;
  if (!mpi_ || size_ == 1) return out;  // one worker: no groups, the single-process optimizer
  for (const std::string& g : specs) {
    if (g == "all") out.push_back(nestla::mpi::world());
    else if (g == "node") out.push_back(nestla::mpi::node());
    else if (g == "1") out.push_back(nullptr);
    else out.push_back(nestla::mpi::consecutive(std::stoi(g)));
  }
  return out;
}

#else

Workers::Workers(int*, char***) {
  if (launched_by_mpi())
    throw RefusedError("started by an MPI launcher, but this resnet18_train is built without MPI "
                       "(install openmpi-bin libopenmpi-dev and configure again)");
}
Workers::~Workers() = default;
void Workers::abort(int) const {}
int Workers::any(int flags) const { return flags; }
void Workers::sum(double*, int) const {}
void Workers::broadcast(void*, int) const {}
std::vector<std::shared_ptr<nestla::worker_group>> Workers::host_groups(std::vector<std::string>, int) const {
  return {};
}

#endif

}  // namespace resnet18
