// Distributed training's cost per step on the ResNet-18 parameter set: collectives and bytes per worker (counted by nestla's groups) and wall time, for DDP-style gradient averaging, Lookahead over all workers and nested Lookahead (pairs, then all).
//
//   mpirun -np 4 build/benchmarks/distributed_bench [--steps 50] [--layouts local,ddp,lookahead,nested]
//
// Each worker steps Adam (float32) under the layout over the 62 tensors of
// benchmarks/resnet18_shapes.txt (11.17M parameters) with fixed gradients of
// its own; k = s = 5. After warm-up steps (the first step checks the groups and
// broadcasts theta), the group counters are reset and `steps` steps timed
// (a multiple of 25: whole outer cycles). Time per step is the slowest
// worker's mean. "local" is the same optimizer with no groups: the step
// without communication.
#include <nestla/mpi.hpp>
#include <nestla/nestla.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::vector<std::size_t> read_shapes(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<std::size_t> sizes;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string name;
    ls >> name;
    std::size_t n = 1, d;
    while (ls >> d) n *= d;
    sizes.push_back(n);
  }
  return sizes;
}

struct Row {
  std::string layout;
  double seconds_per_step = 0;
  double collectives_per_step = 0;
  double bytes_per_step = 0;       // payload handed to collectives, per worker
  double sent_per_step = 0;        // bytes sent per worker (ring reduce-scatter + allgather)
  double inner_sent_per_step = 0;  // of which over the inner groups (pairs)
  double outer_sent_per_step = 0;  // of which over the group of all workers
};

template <class Opt>
Row run(const std::string& layout, Opt& opt, const std::vector<std::shared_ptr<nestla::mpi::group>>& inner,
        const std::vector<std::shared_ptr<nestla::mpi::group>>& outer, std::vector<std::vector<float>>& p,
        const std::vector<std::vector<float>>& g, int warmup, int steps) {
  for (int s = 0; s < warmup; ++s) opt.step(p, g);
  std::set<nestla::worker_group*> all;
  for (auto& x : inner) all.insert(x.get());
  for (auto& x : outer) all.insert(x.get());
  for (auto* x : all) x->reset_stats();
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = MPI_Wtime();
  for (int s = 0; s < steps; ++s) opt.step(p, g);
  const double mine = (MPI_Wtime() - t0) / steps;
  double slowest = 0;
  MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  Row r{layout, slowest};
  auto add = [&](const std::vector<std::shared_ptr<nestla::mpi::group>>& gs, double& sent) {
    std::set<nestla::worker_group*> seen;
    for (auto& x : gs)
      if (seen.insert(x.get()).second) sent += double(x->stats().bytes_sent) / steps;
  };
  add(inner, r.inner_sent_per_step);
  add(outer, r.outer_sent_per_step);
  for (auto* x : all) {
    r.collectives_per_step += double(x->stats().collectives) / steps;
    r.bytes_per_step += double(x->stats().bytes) / steps;
    r.sent_per_step += double(x->stats().bytes_sent) / steps;
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  CLI::App app{"nestla distributed step cost on the ResNet-18 parameter set"};
  int steps = 50, warmup = 25;
  std::string layouts = "local,ddp,lookahead,nested";
  std::string shapes = NESTLA_BENCH_SHAPES;
  app.add_option("--steps", steps, "timed steps (a multiple of 25)");
  app.add_option("--warmup", warmup, "steps before timing");
  app.add_option("--layouts", layouts, "comma-separated: local, ddp, lookahead, nested");
  app.add_option("--shapes", shapes, "parameter shapes file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    MPI_Finalize();
    return rc;
  }
  const auto sizes = read_shapes(shapes);
  std::vector<std::vector<float>> p0, g;
  std::size_t total = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    p0.emplace_back(sizes[i]);
    g.emplace_back(sizes[i]);
    for (std::size_t j = 0; j < sizes[i]; ++j) {
      p0[i][j] = 0.01f * float((i * 31 + j) % 97) - 0.5f;
      g[i][j] = 1e-3f * float((i * 17 + j * 13 + static_cast<std::size_t>(rank) * 7) % 101) - 0.05f;
    }
    total += sizes[i];
  }
  auto world = nestla::mpi::world();
  auto pairs = nestla::mpi::consecutive(2);
  std::vector<Row> rows;
  std::istringstream ls(layouts);
  std::string layout;
  const nestla::AdamOptions adam{.lr = 1e-4};
  while (std::getline(ls, layout, ',')) {
    auto p = p0;
    if (layout == "local") {
      auto opt = nestla::nested<2>(nestla::Adam<float>(adam), {{.k = 5}, {.k = 5}});
      rows.push_back(run(layout, opt, {}, {}, p, g, warmup, steps));
    } else if (layout == "ddp") {
      nestla::Adam<float> opt(adam);
      opt.set_group(world);
      rows.push_back(run(layout, opt, {}, {world}, p, g, warmup, steps));
    } else if (layout == "lookahead") {
      nestla::Lookahead opt(nestla::Adam<float>(adam), {.k = 5});
      opt.set_group(world);
      rows.push_back(run(layout, opt, {}, {world}, p, g, warmup, steps));
    } else if (layout == "nested") {
      auto opt = nestla::nested<2>(nestla::Adam<float>(adam), {{.k = 5}, {.k = 5}});
      opt.inner().set_group(pairs);
      opt.set_group(world);
      rows.push_back(run(layout, opt, {pairs}, {world}, p, g, warmup, steps));
    } else {
      if (rank == 0) std::fprintf(stderr, "unknown layout %s\n", layout.c_str());
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
  }
  if (rank == 0) {
    std::printf("%d workers, %zu tensors, %zu parameters (float32), %d timed steps after %d\n\n", size, sizes.size(),
                total, steps, warmup);
    std::printf("| layout | ms/step | collectives/step | payload MB/step | sent MB/step | of which inner (pairs) | outer (all) |\n");
    std::printf("|---|---|---|---|---|---|---|\n");
    for (const auto& r : rows)
      std::printf("| %s | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", r.layout.c_str(), r.seconds_per_step * 1e3,
                  r.collectives_per_step, r.bytes_per_step / 1e6, r.sent_per_step / 1e6, r.inner_sent_per_step / 1e6,
                  r.outer_sent_per_step / 1e6);
  }
  MPI_Finalize();
}
