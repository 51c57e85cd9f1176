// Distributed Nested Lookahead over MPI: one process per worker, the inner level over pairs of workers, the outer over all.
#include <nestla/mpi.hpp>
#include <nestla/nestla.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, workers = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &workers);

  // Each worker its own data: here its own target in the loss sum((w - target)^2) / 2.
  std::vector<float> w{0.5f, -1.0f, 2.0f}, g(3);
  const float target = 1.0f + 0.1f * static_cast<float>(rank);

  auto opt = nestla::nested<2>(nestla::Adam<>({.lr = 0.05}), {{.k = 5, .alpha = 0.5}, {.k = 4, .alpha = 0.8}});
  opt.inner().set_group(nestla::mpi::consecutive(2));  // inner level: pairs of workers (say, the GPUs of a node)
  opt.set_group(nestla::mpi::world());                 // outer level: every worker

  for (int step = 0; step < 400; ++step) {
    for (std::size_t i = 0; i < w.size(); ++i) g[i] = w[i] - target;
    opt.step(w, g);  // every 20 steps the outer level syncs: all workers then hold the same w
  }
  // The minimum of the workers' mean loss is their mean target.
  const float mean_target = 1.0f + 0.05f * static_cast<float>(workers - 1);
  if (rank == 0) std::printf("%d workers: w[0] = %.4f, mean target %.4f\n", workers, w[0], mean_target);
  const bool ok = std::abs(w[0] - mean_target) < 0.02f;
  MPI_Finalize();
  return ok ? 0 : 1;
}
