// The distributed step: a step whose levels have groups of several workers, as passes over the step plan with one collective per communicating level between them.
//
// A level communicates when its group has more than one worker (or is told to
// always communicate). With none communicating, run_step never comes here.
// Otherwise one step is (docs/semantics.md, "Distributed Lookahead"):
//
//   first step:  check that the groups nest and that every worker agrees on
//                them and on the parameter set (one allgather over the
//                outermost group), then theta <- theta of the outermost
//                group's first worker (a broadcast)
//   level 0:     gradients copied to a flat buffer, summed over G_0; the
//                update divides the sum by |G_0| as it reads it
//   pass 0:      the base update and the syncs of the levels that sync
//                without communicating, up to the first communicating level
//                that syncs at this step, whose theta - phi (and first
//                moments, for pullback) the pass packs into the flat wire buffer
//   for each communicating level that syncs, innermost first:
//                sum the wire buffer over the level's group, then one pass
//                applies the mean, syncs the levels up to the next
//                communicating one and packs for it
//
// Every collective also carries each worker's count of step calls (three
// 16-bit pieces per worker after the payload, exact in float and double): a
// worker out of step is found in the same collective, and every worker of the
// group raises the same error. The wire buffer is one flat buffer of all
// tensors, laid out as the state (Layout), reused by every level: a pass reads
// a level's mean at an element before it packs the next level's value there.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nestla/detail/host_buffer.hpp"
#include "nestla/error.hpp"
#include "nestla/group.hpp"
#include "nestla/step_plan.hpp"

namespace nestla {
struct host;
}

namespace nestla::detail {

// Backend::sync_pass, left out of nvcc's device pass for the host backend
// (whose SIMD batches device code cannot hold), as BaseOptimizer::fused_step does.
template <class Backend, class... A>
void sync_pass_of(A&&... a) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<Backend, host>) return;
  else
#endif
    Backend::sync_pass(std::forward<A>(a)...);
}

// Does the backend keep its buffers in host memory?
template <class T, class Backend>
inline constexpr bool host_memory_backend = std::is_same_v<typename Backend::template buffer<T>, host_buffer<T>>;

template <class T, class Backend>
void check_group_for(const std::shared_ptr<worker_group>& g, const char* who) {
  if (!g) return;
  const memory_space want = host_memory_backend<T, Backend> ? memory_space::host : memory_space::device;
  if (g->memory() != want)
    fail<invalid_option>("nestla: ", who, ": a group of ", g->kind(), " works on ",
                         g->memory() == memory_space::host ? "host" : "device", " memory, this optimizer keeps ",
                         want == memory_space::host ? "host" : "device", " memory (", Backend::name, " backend)");
}

// The base optimizer's scratch for distributed steps: the flat wire and
// gradient buffers, and which groups were last checked. Not state: a copy
// (load stages one) starts empty and checks its groups again on its next step.
template <class T, class Backend>
struct distributed_scratch {
  using buffer = typename Backend::template buffer<T>;

  distributed_scratch() = default;
  distributed_scratch(const distributed_scratch&) {}
  distributed_scratch& operator=(const distributed_scratch&) {
    *this = distributed_scratch();
    return *this;
  }
  distributed_scratch(distributed_scratch&&) noexcept = default;
  distributed_scratch& operator=(distributed_scratch&&) noexcept = default;

  buffer wire, grads;
  std::vector<const worker_group*> checked;  // per level, the groups of the last check
  std::vector<T> counts;                     // host copy of a collective's step counts
};

// The groups of every level of an optimizer, level 0 (the base) first.
struct level_groups {
  worker_group* g[max_depth + 1]{};
  int depth = 0;

  bool communicates(int level) const { return g[level] && g[level]->communicates(); }
  bool any() const {
    for (int l = 0; l <= depth; ++l)
      if (communicates(l)) return true;
    return false;
  }
};

template <class Top>
level_groups groups_of(Top& top) {
  level_groups lg;
  lg.depth = Top::depth;
  lg.g[0] = top.base().group().get();
  if constexpr (Top::depth > 0) {
    int l = 1;
    top.for_each_level([&](auto& level) { lg.g[l++] = level.group().get(); });
  }
  return lg;
}

template <class Context>
void* stream_of(Context& ctx) {
  if constexpr (requires { ctx.stream; }) return static_cast<void*>(ctx.stream);
  else return nullptr;
}

inline std::size_t round_up_to(std::size_t n, std::size_t m) { return (n + m - 1) / m * m; }

inline std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// Step counts travel as three 16-bit pieces, exact in float.
inline constexpr int count_slots = 3;

// One collective over g on buf: the payload buf[0, payload) and every
// worker's step count after it. Checks that every worker of g made the same
// number of step calls, else throws the same error on each of them.
template <class T, class Backend>
void exchange(worker_group& g, T* buf, std::size_t payload, std::uint64_t calls, std::vector<T>& counts, void* stream,
              int level) {
  const std::size_t n = static_cast<std::size_t>(g.size());
  counts.assign(count_slots * n, T(0));
  for (int k = 0; k < count_slots; ++k)
    counts[count_slots * static_cast<std::size_t>(g.rank()) + k] = T(static_cast<double>((calls >> (16 * k)) & 0xFFFF));
  Backend::upload(buf + payload, counts.data(), counts.size());
  g.allreduce_sum(buf, round_up_to(payload + counts.size(), n), stream);
  Backend::download(counts.data(), buf + payload, counts.size());
  for (std::size_t r = 0; r < n; ++r) {
    std::uint64_t c = 0;
    for (int k = 0; k < count_slots; ++k)
      c |= static_cast<std::uint64_t>(static_cast<double>(counts[count_slots * r + k])) << (16 * k);
    if (c != calls)
      fail<comm_error>("nestla: step: the workers are out of step: worker ", r, " of level ", level, "'s group (",
                       n, " workers, ", g.kind(), ") has made ", c, " steps, this worker (", g.rank(), ") ", calls,
                       "; every worker must call step() equally often");
  }
}

// The check of the first step (and of the first step after groups change or
// a checkpoint is loaded): the groups nest, every worker of the outermost group
// names the same groups, steps the same parameter set and has made as many
// steps. One allgather over the outermost group; every worker reaches the
// same verdict, so all of them raise the same error or none does.
template <class T>
void check_groups(const level_groups& lg, const Layout& layout, std::uint64_t calls) {
  const int d = lg.depth;
  worker_group* outer = lg.g[d];
  int inner_level = -1;
  for (int l = 0; l < d; ++l)
    if (lg.g[l]) inner_level = l;
  if (!outer)
    fail<comm_error>("nestla: step: level ", inner_level, " has a group of ", lg.g[inner_level]->size(),
                     " workers but the outermost level (", d, ") has none: the groups must nest (G_0 within G_1 ... "
                     "within G_", d, "); give the outermost level the group of all workers");
  const std::int64_t self = outer->members()[static_cast<std::size_t>(outer->rank())];

  // Members of each level's group (none: this worker alone).
  std::vector<std::vector<std::int64_t>> members(static_cast<std::size_t>(d + 1));
  for (int l = 0; l <= d; ++l) {
    if (lg.g[l]) {
      members[l] = lg.g[l]->members();
      const auto& m = members[l];
      if (lg.g[l]->rank() < 0 || lg.g[l]->rank() >= lg.g[l]->size() ||
          m[static_cast<std::size_t>(lg.g[l]->rank())] != self)
        fail<comm_error>("nestla: step: level ", l, "'s group does not list this worker (id ", self,
                         ") at its rank: the groups of one worker must come from communicators it belongs to");
    } else {
      members[l] = {self};
    }
  }
  std::uint64_t problem = 0;  // level + 1 of the first level whose group does not hold the one inside it
  for (int l = 1; l <= d && !problem; ++l)
    for (auto id : members[l - 1])
      if (std::find(members[l].begin(), members[l].end(), id) == members[l].end()) {
        problem = static_cast<std::uint64_t>(l);
        break;
      }
  if (!outer->communicates() && problem)
    fail<comm_error>("nestla: step: level ", problem - 1, "'s group (", members[problem - 1].size(),
                     " workers) is not within level ", problem, "'s (", members[problem].size(),
                     " workers): the groups must nest");
  if (!outer->communicates()) return;

  std::uint64_t size_hash = 0;
  for (auto s : layout.sizes) size_hash = fnv1a(&s, sizeof s, size_hash);
  constexpr std::size_t head = 8;
  const std::size_t rec = head + 2 * static_cast<std::size_t>(max_depth + 1);  // one size for every depth
  std::vector<std::uint64_t> mine(rec), all(rec * static_cast<std::size_t>(outer->size()));
  mine[0] = static_cast<std::uint64_t>(self);
  mine[1] = static_cast<std::uint64_t>(d);
  mine[2] = sizeof(T);
  mine[3] = layout.count();
  mine[4] = layout.elements();
  mine[5] = size_hash;
  mine[6] = calls;
  mine[7] = problem;
  for (int l = 0; l <= d; ++l) {
    mine[head + 2 * l] = fnv1a(members[l].data(), members[l].size() * sizeof(std::int64_t));
    mine[head + 2 * l + 1] = members[l].size();
  }
  outer->allgather(mine.data(), all.data(), rec * sizeof(std::uint64_t));

  const std::size_t n = static_cast<std::size_t>(outer->size());
  auto at = [&](std::size_t r, std::size_t k) { return all[r * rec + k]; };
  for (std::size_t r = 0; r < n; ++r) {
    if (at(r, 1) != mine[1] || at(r, 2) != mine[2])
      fail<comm_error>("nestla: step: worker ", at(r, 0), " steps an optimizer of depth ", at(r, 1), " over ",
                       at(r, 2) * 8, "-bit scalars, this worker (", self, ") one of depth ", d, " over ",
                       sizeof(T) * 8, "-bit scalars");
    if (at(r, 3) != mine[3] || at(r, 4) != mine[4] || at(r, 5) != mine[5])
      fail<comm_error>("nestla: step: worker ", at(r, 0), " steps a parameter set of ", at(r, 4), " elements in ",
                       at(r, 3), " tensors, this worker (", self, ") ", mine[4], " in ", mine[3],
                       (at(r, 3) == mine[3] && at(r, 4) == mine[4] ? " of other sizes" : ""),
                       ": every worker must step the same parameter set");
  }
  for (std::size_t r = 0; r < n; ++r)
    if (at(r, 7))
      fail<comm_error>("nestla: step: on worker ", at(r, 0), ", level ", at(r, 7) - 1, "'s group (",
                       at(r, head + 2 * (at(r, 7) - 1) + 1), " workers) is not within level ", at(r, 7), "'s (",
                       at(r, head + 2 * at(r, 7) + 1), " workers): the groups must nest (G_0 within G_1 ... within G_",
                       d, ")");
  // Workers naming the same group must be exactly its members: as many as it has.
  for (int l = 0; l <= d; ++l)
    for (std::size_t r = 0; r < n; ++r) {
      std::uint64_t naming = 0;
      for (std::size_t q = 0; q < n; ++q) naming += at(q, head + 2 * l) == at(r, head + 2 * l);
      if (naming != at(r, head + 2 * l + 1))
        fail<comm_error>("nestla: step: the workers do not agree on level ", l, "'s groups: worker ", at(r, 0),
                         "'s group there has ", at(r, head + 2 * l + 1), " workers, but ", naming,
                         " workers of the outermost group name it (give every worker of a group the same "
                         "communicator at the same level)");
    }
  for (std::size_t r = 0; r < n; ++r)
    if (at(r, 6) != calls)
      fail<comm_error>("nestla: step: the workers are out of step: worker ", at(r, 0), " has made ", at(r, 6),
                       " steps, this worker (", self, ") ", calls, "; every worker must call step() equally often");
}

template <class Buffer>
void ensure_size(Buffer& b, std::size_t n) {
  if (b.size() < n) b = Buffer(n);
}

template <class T>
void set_pack(StepPlan<T>& p, const StepPlan<T>& plan, int level_index, T* wire, std::size_t total) {
  const SyncLevel<T>& L = plan.sync[level_index];
  p.pack = wire;
  p.pack_slow = L.slow;
  p.pack_m = L.policy == Momentum::pullback ? wire + total : nullptr;
}

template <class Top, class P, class G>
bool run_distributed_step(Top& top, P& params, G& grads, const level_groups& lg) {
  using T = typename Top::scalar_type;
  using Backend = typename Top::backend_type;
  auto& b = top.base();
  auto& sc = b.distributed_scratch();
  b.bind(params, grads);
  const Layout layout = b.initialized() ? b.layout() : b.pending_layout();
  const std::size_t total = layout.total;
  void* stream = stream_of(b.context());
  const std::uint64_t calls = b.step_count() + b.skipped_steps();
  const int d = lg.depth;

  if (sc.checked.size() != static_cast<std::size_t>(d + 1) || !std::equal(sc.checked.begin(), sc.checked.end(), lg.g)) {
    check_groups<T>(lg, layout, calls);
    sc.checked.assign(lg.g, lg.g + d + 1);
  }
  worker_group& outer = *lg.g[d];
  // The first step's broadcast goes through level 0's gradient buffer when it
  // has one, else through the wire buffer.
  if (lg.communicates(0)) {
    const std::size_t n = static_cast<std::size_t>(lg.g[0]->size());
    ensure_size(sc.grads, round_up_to(total + count_slots * n, n));
  }
  if (!b.initialized() && outer.communicates()) {
    auto& via = lg.communicates(0) ? sc.grads : sc.wire;
    ensure_size(via, total);
    for (const auto& v : b.views()) Backend::copy(via.data() + v.offset, v.param, v.size);
    outer.broadcast(via.data(), total, stream);
    for (const auto& v : b.views()) Backend::copy(v.param, via.data() + v.offset, v.size);
  }
  if (lg.communicates(0)) {
    Backend::gather_grads(b.context(), b.views(), sc.grads.data());
    exchange<T, Backend>(*lg.g[0], sc.grads.data(), total, calls, sc.counts, stream, 0);
    b.use_flat_grads(sc.grads.data());
  }
  if (!b.note_guard(lg.communicates(0) ? static_cast<std::size_t>(lg.g[0]->size()) : 1)) return false;
  b.prepare_update();

  StepPlan<T> plan;
  if (!b.initialized()) {
    top.initialize_state(layout);
    top.collect_init(plan);
  }
  const bool done = top.plan_step(plan);
  if (lg.communicates(0)) plan.grad_group = T(lg.g[0]->size());
  // Room for the collectives of the levels that sync now: theta - phi, the
  // first moments for pullback, the step counts, padded to the group's size.
  for (int j = 0; j < plan.nsync; ++j)
    if (lg.communicates(j + 1)) {
      const std::size_t n = static_cast<std::size_t>(lg.g[j + 1]->size());
      const std::size_t payload = plan.sync[j].policy == Momentum::pullback ? 2 * total : total;
      ensure_size(sc.wire, round_up_to(payload + count_slots * n, n));
    }
  // sync[i] is level i + 1.
  auto next_communicating = [&](int from) {
    int i = from;
    while (i < plan.nsync && !lg.communicates(i + 1)) ++i;
    return i;
  };
  T* wire = sc.wire.data();
  int next = next_communicating(0);
  StepPlan<T> pass = plan;
  pass.nsync = next;
  if (next < plan.nsync) set_pack(pass, plan, next, wire, total);
  b.execute(pass);
  while (next < plan.nsync) {
    const int j = next;
    worker_group& g = *lg.g[j + 1];
    const bool pull = plan.sync[j].policy == Momentum::pullback;
    exchange<T, Backend>(g, wire, pull ? 2 * total : total, calls, sc.counts, stream, j + 1);
    next = next_communicating(j + 1);
    pass = plan;
    pass.update = false;
    pass.ninit = 0;
    pass.grad_group = T(0);
    pass.first_sync = j;
    pass.mean_level = j;
    pass.sum = wire;
    pass.sum_m = pull ? wire + total : nullptr;
    pass.group = T(g.size());
    pass.nsync = next;
    pass.pack = nullptr;
    pass.pack_m = nullptr;
    pass.pack_slow = nullptr;
    if (next < plan.nsync) set_pack(pass, plan, next, wire, total);
    sync_pass_of<Backend>(b.context(), b.views(), total, b.first_moment_data(), pass);
  }
  top.commit_step();
  return done;
}

}  // namespace nestla::detail
