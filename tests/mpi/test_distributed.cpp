// Distributed Lookahead over MPI: every worker's trajectory against a one-process simulation of the job, the contract's identities and invariants, and the errors.
//
// tests/data/distributed.json comes from tools/make_distributed_golden.py:
// for each case, every worker's gradients and parameters after every step.
// Each MPI process is one worker of the case whose worker count is the job's
// size; it feeds its recorded gradients and checks its parameters after every
// step (relative error 1e-12, absolute below 1e-2, as test_golden.cpp), and
// after every sync that every worker of the level's group holds the same bits.
#include <doctest/doctest.h>

#include "../golden_json.hpp"

#include <nestla/mpi.hpp>
#include <nestla/nestla.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef NESTLA_TEST_DATA_DIR
#error "NESTLA_TEST_DATA_DIR must be defined (tests/mpi/CMakeLists.txt sets it)"
#endif

#include "mpi_world.hpp"

namespace {

using json = nlohmann::json;
using Set = std::vector<std::vector<double>>;
using GroupPtr = std::shared_ptr<nestla::mpi::group>;

constexpr double kRelTol = 1e-12;
constexpr double kAbsFloor = 1e-2;

int world_rank() { return mpi_world::rank(); }
int world_size() { return mpi_world::size(); }

const json& data() {
  static const json d = golden_json::load("distributed.json");
  return d;
}

using golden_json::to_level;

// This worker's group at one level: the part of the partition holding worker
// w, ordered as listed (so its first worker is listed first). Collective over parent.
GroupPtr group_of(const json& partition, int w, MPI_Comm parent = MPI_COMM_WORLD) {
  for (std::size_t c = 0; c < partition.size(); ++c) {
    const auto& part = partition[c];
    for (std::size_t k = 0; k < part.size(); ++k)
      if (part[k].get<int>() == w) return nestla::mpi::split(static_cast<int>(c), static_cast<int>(k), parent);
  }
  throw std::runtime_error("worker not in the partition");
}

// The groups of every level, level 0 first.
std::vector<GroupPtr> groups_of(const json& layout, int w, MPI_Comm parent = MPI_COMM_WORLD) {
  std::vector<GroupPtr> g;
  for (const auto& partition : layout) g.push_back(group_of(partition, w, parent));
  return g;
}

template <class Opt>
void set_groups(Opt& opt, const std::vector<GroupPtr>& g) {
  opt.base().set_group(g.at(0));
  if constexpr (Opt::depth > 0) {
    std::size_t l = 1;
    opt.for_each_level([&](auto& level) { level.set_group(g.at(l++)); });
  }
}

// Every worker of comm holds the same bytes.
bool same_everywhere(const std::vector<char>& bytes, MPI_Comm comm) {
  int n = 0;
  MPI_Comm_size(comm, &n);
  unsigned long len = bytes.size(), most = 0;
  MPI_Allreduce(&len, &most, 1, MPI_UNSIGNED_LONG, MPI_MAX, comm);
  if (most != len) return false;
  std::vector<char> all(bytes.size() * static_cast<std::size_t>(n));
  MPI_Allgather(bytes.data(), static_cast<int>(len), MPI_BYTE, all.data(), static_cast<int>(len), MPI_BYTE, comm);
  for (int r = 0; r < n; ++r)
    if (std::memcmp(all.data() + bytes.size() * static_cast<std::size_t>(r), bytes.data(), bytes.size()) != 0)
      return false;
  return true;
}

template <class B>
void append(std::vector<char>& out, const B& b) {
  if (b.empty()) return;
  const char* p = reinterpret_cast<const char*>(b.data());
  out.insert(out.end(), p, p + b.size() * sizeof(*b.data()));
}

// What every worker of level l's group must hold after its sync: theta, the
// slow weights of level l and those inside it, level l's slow momenta and
// outer momentum, and, when level l's policy changed the first moments, the
// slow momenta of the pullback levels inside it.
template <class Opt>
std::vector<char> synced_state(Opt& opt, const Set& params, int l) {
  std::vector<char> out;
  for (const auto& t : params) append(out, t);
  if constexpr (Opt::depth > 0) {
    int i = 1;
    nestla::Momentum policy = nestla::Momentum::keep;
    opt.for_each_level([&](auto& level) {
      if (i == l) policy = level.options().momentum;
      ++i;
    });
    i = 1;
    opt.for_each_level([&](auto& level) {
      if (i <= l) append(out, level.slow_weights());
      if (i == l || (i < l && policy != nestla::Momentum::keep)) append(out, level.slow_momentum());
      if (i == l) append(out, level.outer_momentum_buffer());
      ++i;
    });
  }
  return out;
}

struct Result {
  double max_rel = 0;
  int failures = 0;
  int not_identical = 0;
  int cycle_mismatches = 0;
  std::string first_failure;
};

// Runs steps [from, to) of this worker's recorded trajectory.
template <class Opt>
void replay(Opt& opt, Set& params, const json& steps, int w, const std::vector<GroupPtr>& g, Result& r) {
  for (std::size_t s = 0; s < steps.size(); ++s) {
    const auto& st = steps[s];
    const Set grads = st.at("grad").at(w).get<Set>();
    const Set want = st.at("params").at(w).get<Set>();
    const auto& syncs = st.at("syncs");
    const bool cycle = opt.step(params, grads);
    const bool want_cycle = syncs.empty() ? true : syncs.back().get<bool>();
    if (cycle != want_cycle) ++r.cycle_mismatches;
    for (std::size_t i = 0; i < want.size(); ++i)
      for (std::size_t j = 0; j < want[i].size(); ++j) {
        const double a = params.at(i).at(j), b = want[i][j];
        const double rel = std::abs(a - b) / std::max(std::abs(b), kAbsFloor);
        r.max_rel = std::max(r.max_rel, std::isnan(rel) ? INFINITY : rel);
        if (!(rel <= kRelTol) && r.failures++ == 0) {
          std::ostringstream os;
          os.precision(17);
          os << "step " << s + 1 << ", tensor " << i << ", element " << j << ": nestla " << a << ", simulation " << b;
          r.first_failure = os.str();
        }
      }
    // Bit-identical state over every level's group that synced at this step
    // (level 0's after every step when it averages gradients).
    if (g[0]->size() > 1 && !same_everywhere(synced_state(opt, params, 0), g[0]->comm())) ++r.not_identical;
    for (std::size_t l = 1; l < g.size(); ++l)
      if (syncs.at(l - 1).get<bool>() && !same_everywhere(synced_state(opt, params, int(l)), g[l]->comm()))
        ++r.not_identical;
  }
}

template <class F>
auto with_base(const json& c, F&& f) {
  const std::string kind = c.at("optimizer").get<std::string>();
  const auto& o = c.at("options");
  if (kind == "sgd")
    return f(nestla::SGD<double>({.lr = o.at("lr").get<double>(),
                                  .momentum = o.at("momentum").get<double>(),
                                  .dampening = o.at("dampening").get<double>(),
                                  .weight_decay = o.at("weight_decay").get<double>(),
                                  .nesterov = o.at("nesterov").get<bool>()}));
  const auto betas = o.at("betas").get<std::array<double, 2>>();
  if (kind == "adam")
    return f(nestla::Adam<double>({.lr = o.at("lr").get<double>(), .beta1 = betas[0], .beta2 = betas[1],
                                   .eps = o.at("eps").get<double>(), .weight_decay = o.at("weight_decay").get<double>(),
                                   .amsgrad = o.at("amsgrad").get<bool>()}));
  if (kind == "adamw")
    return f(nestla::AdamW<double>({.lr = o.at("lr").get<double>(), .beta1 = betas[0], .beta2 = betas[1],
                                    .eps = o.at("eps").get<double>(), .weight_decay = o.at("weight_decay").get<double>(),
                                    .amsgrad = o.at("amsgrad").get<bool>()}));
  throw std::runtime_error("unknown optimizer " + kind);
}

// Builds the case's optimizer (depth 0 to 2) and hands it to f.
template <class F>
void with_optimizer(const json& c, F&& f) {
  const auto& lv = c.at("lookahead");
  with_base(c, [&](auto base) {
    switch (lv.size()) {
      case 0: f(base); break;
      case 1: {
        auto o = nestla::nested<1>(std::move(base), {to_level(lv[0])});
        f(o);
        break;
      }
      case 2: {
        auto o = nestla::nested<2>(std::move(base), {to_level(lv[0]), to_level(lv[1])});
        f(o);
        break;
      }
      default: throw std::runtime_error("unsupported depth");
    }
    return 0;
  });
}

void report(const json& c, const Result& r) {
  INFO("case ", c.at("name").get<std::string>(), " on worker ", world_rank());
  CHECK_MESSAGE(r.failures == 0, r.failures, " elements out of tolerance; first: ", r.first_failure);
  CHECK_MESSAGE(r.not_identical == 0, r.not_identical, " syncs left the workers of a group with different bits");
  CHECK(r.cycle_mismatches == 0);
  if (std::getenv("NESTLA_GOLDEN_VERBOSE") && world_rank() == 0)
    std::printf("  %-40s max rel %.3e\n", c.at("name").get<std::string>().c_str(), r.max_rel);
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

template <class Opt>
std::string bytes(const Opt& opt) {
  std::ostringstream os;
  opt.save(os);
  return os.str();
}

// Deterministic gradients that differ per worker and depend on the parameters.
struct grad_source {
  std::uint64_t state;
  explicit grad_source(int worker) : state(0x9E3779B97F4A7C15ull + 7919ull * static_cast<std::uint64_t>(worker)) {}
  double next() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(state >> 11) / 9007199254740992.0 - 0.5;
  }
  void fill(const std::vector<double>& p, std::vector<double>& g) {
    g.resize(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) g[i] = 0.2 * p[i] + next();
  }
};

// Every worker's gradient, summed in rank order and divided by the job's size:
// the mean gradient a one-process reference steps with.
void mean_over_workers(const std::vector<double>& g, std::vector<double>& mean) {
  const int n = world_size();
  std::vector<double> all(g.size() * static_cast<std::size_t>(n));
  MPI_Allgather(g.data(), int(g.size()), MPI_DOUBLE, all.data(), int(g.size()), MPI_DOUBLE, MPI_COMM_WORLD);
  mean.resize(g.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    double sum = all[i];
    for (int q = 1; q < n; ++q) sum += all[static_cast<std::size_t>(q) * g.size() + i];
    mean[i] = sum / n;
  }
}

}  // namespace

TEST_CASE("every worker's trajectory matches the simulation of the job, and syncs leave groups bit-identical") {
  int ran = 0;
  for (const auto& c : data()) {
    if (c.at("workers").get<int>() != world_size()) continue;
    ++ran;
    const int w = world_rank();
    const auto g = groups_of(c.at("groups"), w);
    with_optimizer(c, [&](auto& opt) {
      set_groups(opt, g);
      Set params = c.at("init").at(w).get<Set>();
      Result r;
      replay(opt, params, c.at("steps"), w, g, r);
      report(c, r);
    });
  }
  MESSAGE(ran, " cases for a job of ", world_size(), " workers");
  CHECK(ran >= 1);
}

TEST_CASE("elastic resume: a checkpoint taken after an outermost sync continues in a job of another size") {
  const char* mode = std::getenv("NESTLA_ELASTIC");
  const char* dir = std::getenv("NESTLA_ELASTIC_DIR");
  if (!mode || !dir) {
    MESSAGE("NESTLA_ELASTIC and NESTLA_ELASTIC_DIR unset: run by the mpi_elastic_* tests");
    return;
  }
  const json* found = nullptr;
  for (const auto& c : data())
    if (c.contains("resume")) found = &c;
  REQUIRE(found);
  const json& c = *found;
  const int w = world_rank();
  const std::filesystem::path d(dir);
  if (std::string(mode) == "save") {
    REQUIRE(world_size() == c.at("workers").get<int>());
    std::filesystem::create_directories(d);
    const auto g = groups_of(c.at("groups"), w);
    with_optimizer(c, [&](auto& opt) {
      set_groups(opt, g);
      Set params = c.at("init").at(w).get<Set>();
      Result r;
      replay(opt, params, c.at("steps"), w, g, r);
      report(c, r);
      // Each worker saves its own state (and its parameters, which the user saves).
      std::ofstream os(d / ("optimizer_" + std::to_string(w) + ".bin"), std::ios::binary);
      opt.save(os);
      std::ofstream ps(d / ("params_" + std::to_string(w) + ".json"));
      ps << json(params).dump();
    });
  } else {
    const auto& rs = c.at("resume");
    REQUIRE(world_size() == rs.at("workers").get<int>());
    const auto g = groups_of(rs.at("groups"), w);
    with_optimizer(c, [&](auto& opt) {
      // Every worker of the new job starts from worker 0's files.
      std::ifstream is(d / "optimizer_0.bin", std::ios::binary);
      REQUIRE(is);
      opt.load(is);
      std::ifstream ps(d / "params_0.json");
      Set params = json::parse(ps).get<Set>();
      set_groups(opt, g);
      Result r;
      replay(opt, params, rs.at("steps"), w, g, r);
      report(c, r);
    });
  }
}

TEST_CASE("one worker is the single-process optimizer, bit for bit, through MPI") {
  auto self = [] {
    auto g = nestla::mpi::group::create(MPI_COMM_SELF);
    g->set_always_communicate(true);
    return g;
  };
  auto plain = nestla::nested<2>(nestla::Adam<double>({.lr = 0.01}),
                                 {{.k = 2, .alpha = 0.5, .momentum = nestla::Momentum::pullback, .outer_momentum = 0.9},
                                  {.k = 3, .alpha = 0.8, .momentum = nestla::Momentum::reset}});
  auto dist = plain;
  dist.base().set_group(self());
  dist.inner().set_group(self());
  dist.set_group(self());
  std::vector<double> p(33, 0.25), q = p, g;
  grad_source src(world_rank());
  for (int s = 0; s < 20; ++s) {
    src.fill(p, g);
    REQUIRE(plain.step(p, g) == dist.step(q, g));
    REQUIRE(p == q);
  }
  CHECK(bytes(plain) == bytes(dist));
}

TEST_CASE("Lookahead(k = 1, alpha = 1) over SGD on N workers, and gradient averaging, are SGD on the mean gradient") {
  const int n = world_size(), w = world_rank();
  auto world = nestla::mpi::world();
  nestla::Lookahead la(nestla::SGD<double>({.lr = 0.1}), {.k = 1, .alpha = 1.0});
  la.set_group(world);
  nestla::SGD<double> ddp({.lr = 0.1});
  ddp.set_group(world);
  nestla::SGD<double> reference({.lr = 0.1});
  std::vector<double> a(40), b, r;
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = 0.05 * double(i) - 1.0;
  b = r = a;
  std::vector<double> g, gb, mean(a.size());
  grad_source src(w), srcb(w);
  double worst = 0;
  bool ddp_bits = true;
  for (int s = 0; s < 25; ++s) {
    src.fill(a, g);
    srcb.fill(b, gb);
    REQUIRE(g == gb);  // the same gradients while the two stay equal
    // The reference: every worker's gradient, averaged in rank order.
    mean_over_workers(g, mean);
    la.step(a, g);
    ddp.step(b, gb);
    reference.step(r, mean);
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - r[i]) / std::max(std::abs(r[i]), 1e-2));
    ddp_bits = ddp_bits && b == r;
    b = r;  // from the same point next step
    a = r;
    g.clear();
  }
  MESSAGE("max relative difference of Lookahead(k = 1, alpha = 1) from SGD on the mean gradient: ", worst);
  CHECK(worst < 1e-13);
  // Two workers add in one order only: gradient averaging then gives SGD's bits exactly.
  if (n == 2) CHECK(ddp_bits);
}

TEST_CASE("gradient averaging with clipping clips the mean gradient, as one process clipping the mean") {
  // By norm the threshold is below the mean gradient's norm on every step (the
  // coefficient is < 1 and matters); by value some elements are clamped.
  const int n = world_size(), w = world_rank();
  for (int mode = 0; mode < 2; ++mode) {
    INFO("clipping by ", mode == 0 ? "norm" : "value");
    nestla::Adam<double> ddp({.lr = 0.05});
    ddp.set_group(nestla::mpi::world());
    nestla::Adam<double> reference({.lr = 0.05});
    if (mode == 0) {
      ddp.set_clip_grad_norm({.max_norm = 0.5});
      reference.set_clip_grad_norm({.max_norm = 0.5});
    } else {
      ddp.set_clip_grad_value(0.1);
      reference.set_clip_grad_value(0.1);
    }
    std::vector<double> a(37), r;
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = 0.05 * double(i) - 1.0;
    r = a;
    std::vector<double> g, mean(a.size());
    grad_source src(w);
    double worst = 0, worst_norm = 0;
    for (int s = 0; s < 20; ++s) {
      src.fill(a, g);
      mean_over_workers(g, mean);
      ddp.step(a, g);
      reference.step(r, mean);
      if (mode == 0) {
        REQUIRE(reference.last_grad_norm() > 0.5);
        worst_norm = std::max(worst_norm, std::abs(ddp.last_grad_norm() - reference.last_grad_norm()) /
                                              reference.last_grad_norm());
      }
      for (std::size_t i = 0; i < a.size(); ++i)
        worst = std::max(worst, std::abs(a[i] - r[i]) / std::max(std::abs(r[i]), 1e-2));
      a = r;  // from the same point next step
    }
    CHECK(worst_norm < 1e-14);
    CHECK(worst < 1e-13);
    // Two workers: the sum has one order and halving is exact, so the norm and the step are the reference's bits.
    if (n == 2) {
      CHECK(worst_norm == 0);
      CHECK(worst == 0);
    }
  }
}

TEST_CASE("a worker out of step: an error on every worker naming both counts, no hang") {
  const int n = world_size(), w = world_rank();
  if (n < 2) return;
  SUBCASE("one worker skipped a step (non-finite gradients) and syncs one call later") {
    nestla::Lookahead opt(nestla::SGD<double>({.lr = 0.1}), {.k = 1, .alpha = 0.5});
    opt.set_group(nestla::mpi::world());
    opt.base().set_skip_nonfinite(true);
    std::vector<double> p(10, 1.0), g(10, 0.5);
    std::string m;
    try {
      for (int s = 1; s <= 5; ++s) {
        g[3] = (w == 1 && s == 3) ? std::numeric_limits<double>::quiet_NaN() : 0.5;
        opt.step(p, g);
      }
    } catch (const nestla::comm_error& e) {
      m = e.what();
    }
    CAPTURE(m);
    CHECK(m.find("out of step") != std::string::npos);
    // The others were at their third call (2 steps made), worker 1 at its fourth (3 made).
    if (w == 1) CHECK(m.find("has made 2 steps, this worker (1) 3") != std::string::npos);
    else CHECK(m.find("worker 1 of level 1's group") != std::string::npos);
    if (w != 1) CHECK(m.find("has made 3 steps, this worker (" + std::to_string(w) + ") 2") != std::string::npos);
  }
  SUBCASE("one worker loaded a checkpoint taken further on") {
    auto make = [] { return nestla::nested<2>(nestla::Adam<double>({.lr = 0.01}), {{.k = 2}, {.k = 2}}); };
    auto world = nestla::mpi::world(), pairs = nestla::mpi::consecutive(2);
    auto opt = make();
    opt.inner().set_group(pairs);
    opt.set_group(world);
    std::vector<double> p(12, 1.0), g(12, 0.25);
    std::stringstream at4, at8;
    for (int s = 1; s <= 8; ++s) {
      opt.step(p, g);
      if (s == 4) opt.save(at4);
      if (s == 8) opt.save(at8);
    }
    // Every worker reloads; worker 0 the later checkpoint.
    opt.load(w == 0 ? at8 : at4);
    const std::string before = bytes(opt);
    const auto p_before = p;
    const std::string m = error_of([&] { opt.step(p, g); });
    CAPTURE(m);
    CHECK(m.find("out of step") != std::string::npos);
    CHECK(m.find(w == 0 ? "has made 4 steps, this worker (0) 8" : "has made 8 steps, this worker") != std::string::npos);
    CHECK(bytes(opt) == before);  // found by the check before the step: nothing changed
    CHECK(p == p_before);
  }
}

TEST_CASE("mismatched groups and parameter sets are rejected on every worker before anything changes") {
  const int n = world_size(), w = world_rank();
  auto world = nestla::mpi::world(), pairs = nestla::mpi::consecutive(2);
  auto expect = [&](auto& opt, std::vector<double> p, const std::string& needle) {
    std::vector<double> g(p.size(), 0.1);
    const auto p0 = p;
    const std::string m = error_of([&] { opt.step(p, g); });
    CAPTURE(m);
    CHECK(m.find(needle) != std::string::npos);
    CHECK(p == p0);
    CHECK(!opt.base().initialized());
  };
  if (n >= 3) {
    SUBCASE("the levels' groups swapped: all workers inside, pairs outside") {
      auto opt = nestla::nested<2>(nestla::Adam<double>(), {{.k = 2}, {.k = 2}});
      opt.inner().set_group(world);
      opt.set_group(pairs);
      expect(opt, std::vector<double>(9, 1.0), "is not within level 2's");
    }
    SUBCASE("the workers disagree on a level's group") {
      auto opt = nestla::nested<2>(nestla::Adam<double>(), {{.k = 2}, {.k = 2}});
      opt.inner().set_group(w < 2 ? pairs : world);
      opt.set_group(world);
      expect(opt, std::vector<double>(9, 1.0), "do not agree on level 1's groups");
    }
  }
  SUBCASE("the workers step different parameter sets") {
    nestla::Lookahead opt(nestla::Adam<double>(), {.k = 2});
    opt.set_group(world);
    expect(opt, std::vector<double>(w == 0 ? 20 : 21, 1.0), "steps a parameter set of");
  }
  SUBCASE("the workers step optimizers of different depths") {
    if (w == 0) {
      nestla::Lookahead opt(nestla::Adam<double>(), {.k = 2});
      opt.set_group(world);
      expect(opt, std::vector<double>(9, 1.0), "depth");
    } else {
      auto opt = nestla::nested<2>(nestla::Adam<double>(), {{.k = 2}, {.k = 2}});
      opt.set_group(world);
      expect(opt, std::vector<double>(9, 1.0), "depth");
    }
  }
}

TEST_CASE("the library counts each worker's collectives and bytes") {
  const int n = world_size();
  auto world = nestla::mpi::world();
  nestla::Lookahead opt(nestla::Adam<float>(), {.k = 5, .momentum = nestla::Momentum::pullback});
  opt.set_group(world);
  std::vector<float> p(1000, 1.0f), g(1000, 0.5f);  // layout 1008 floats
  for (int s = 0; s < 5; ++s) opt.step(p, g);
  world->reset_stats();
  for (int s = 0; s < 10; ++s) opt.step(p, g);
  // Two syncs, each theta - phi and m (pullback) and 3 count slots per worker, padded to a multiple of n.
  const std::size_t words = (2 * 1008 + 3 * static_cast<std::size_t>(n) + n - 1) / n * n;
  CHECK(world->stats().collectives == 2);
  CHECK(world->stats().bytes == 2 * words * sizeof(float));
  CHECK(world->stats().bytes_sent == 2 * 2 * (words / n) * (n - 1) * sizeof(float));
}
