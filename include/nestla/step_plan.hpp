// What one fused step does: the tensors it visits, where their state lives, and which Lookahead levels sync.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "nestla/detail/checked.hpp"
#include "nestla/detail/host_device.hpp"

namespace nestla {

// What a Lookahead level does to the base optimizer's first moments when it syncs.
enum class Momentum : std::uint8_t {
  keep,      // leave them alone (the default)
  reset,     // set them to zero
  pullback,  // m_s <- m_s + alpha (m - m_s); m <- m_s, with the level's own slow copy m_s
};

// Deepest nesting a step plan can describe. Deeper types fail to compile.
inline constexpr int max_depth = 8;

// Where each tensor's state starts inside the flat state buffers. Offsets are
// rounded up to 64 bytes so that every tensor's state is cache-line aligned
// and threads can split the flat range on cache-line boundaries.
struct Layout {
  std::vector<std::size_t> sizes;
  std::vector<std::size_t> offsets;
  std::size_t total = 0;  // flat length, padding included

  // Throws std::length_error when the padded total of T values would not fit
  // in one allocation (sizes from a checkpoint file can be anything).
  template <class T>
  static Layout of(const std::vector<std::size_t>& sizes) {
    constexpr std::size_t pad = 64 / sizeof(T) > 0 ? 64 / sizeof(T) : 1;
    Layout l;
    l.sizes = sizes;
    l.offsets.reserve(sizes.size());
    for (auto n : sizes) {
      l.offsets.push_back(l.total);
      l.total = detail::checked_add(l.total, detail::checked_round_up(n, pad, "a tensor's padded size"),
                                    "the state layout's total size");
    }
    std::size_t bytes = 0;
    if (!detail::object_bytes<T>(l.total, bytes))
      throw std::length_error("nestla: the state layout's total size exceeds the largest possible allocation");
    return l;
  }
  std::size_t count() const { return sizes.size(); }
  std::size_t elements() const {
    std::size_t s = 0;
    for (auto n : sizes) s += n;
    return s;
  }
  bool operator==(const Layout&) const = default;
};

// One user tensor and its gradient, as the kernels see them.
template <class T>
struct TensorRef {
  T* param;
  const T* grad;
  std::size_t size;
  std::size_t offset;  // into the flat state buffers
};

// One Lookahead level that syncs at this step. Pointers are the starts of the
// level's flat buffers; slow_m is null unless the level keeps slow momenta, u
// is null unless it has outer momentum.
template <class T>
struct SyncLevel {
  T* slow;
  T* slow_m;
  T alpha;
  Momentum policy;
  // Outer momentum (DiLoCo's outer SGD on the pseudo-gradient phi - theta).
  T* u = nullptr;
  T outer_momentum = T(0);
  bool outer_nesterov = false;
  bool u_first = false;  // the level's first sync with momentum: u <- Delta
};

// A plan is what one pass over every element does:
//
//   [the base update, its gradient the group mean (sum / grad_group) when grad_group > 0
//    | nothing, when update is false]
//   then the syncs sync[first_sync .. nsync) in order,
//        the one at index mean_level taking the group mean from sum (and sum_m)
//   then, when pack is set, writes theta - pack_slow to pack (and m to pack_m).
//
// A single-process step is one pass: the update and every sync (mean_level
// -1, no pack). A step with distributed levels runs one pass up to the first
// distributed level that syncs, packs what it sends, and after each
// collective one more pass that applies that level's mean and packs for the
// next (include/nestla/detail/distributed.hpp). sync[0 .. first_sync) are the
// levels already synced in an earlier pass of the step: they only receive the
// slow weights (and slow momenta) of the levels outside them.
//
// Filled innermost level first. Levels that sync at a step always form a
// prefix (a level syncs only right after its inner level completed a cycle),
// so after level i, every level below it holds the same slow weights.
// Plain arrays, not std::array: device code reads the plan, and std::array's
// operator[] is a host function there.
template <class T>
struct StepPlan {
  SyncLevel<T> sync[max_depth]{};
  int nsync = 0;
  // First step: every level's slow weights are copied from the parameters
  // before the update.
  T* init[max_depth]{};
  int ninit = 0;

  // --- distributed passes (all unset in a single-process step) ---
  bool update = true;          // this pass runs the base update
  T grad_group = T(0);         // > 0: the gradients are sums over this many workers
  int first_sync = 0;
  int mean_level = -1;         // index into sync of the level whose mean this pass applies
  const T* sum = nullptr;      // that level's group sum of theta - phi, flat
  const T* sum_m = nullptr;    // and of the first moments (pullback), flat
  T group = T(1);              // its group's size
  T* pack = nullptr;           // where this pass writes theta - pack_slow, flat
  T* pack_m = nullptr;         // and the first moments
  const T* pack_slow = nullptr;

  bool plain() const { return nsync == 0 && ninit == 0 && grad_group == T(0) && pack == nullptr; }
  // Uses more than Lookahead's plain syncs: outer momentum, a group mean, a
  // pack or gradient means. Vector loops pick apply_syncs<V, false> (the
  // plain syncs alone, fewer branches per vector) when it does not.
  bool extended() const {
    if (grad_group != T(0) || pack != nullptr || mean_level >= 0 || first_sync != 0) return true;
    for (int i = 0; i < nsync; ++i)
      if (sync[i].u) return true;
    return false;
  }
};

// Applies the syncs of a plan to element e of a tensor, then packs: p is the
// parameter after the base update, m the first moment (null when the base
// optimizer keeps none). V is a scalar or a SIMD batch; load/store are how the
// caller reaches a flat buffer at this element.
//
// A level's sync, with x = theta - phi (or the group mean of it):
//   no outer momentum:  phi <- phi + alpha x                (Lookahead; phi + alpha (theta - phi))
//   outer momentum mu:  Delta = -x;  u <- Delta (first) or mu u + Delta;
//                       d = Delta + mu u (Nesterov) or u;  phi <- phi - alpha d
// as torch.optim.SGD(lr = alpha, momentum = mu, nesterov) on phi with gradient Delta.
// Always inlined into the vector loops that call it: as a call per vector it
// costs more than the syncs' arithmetic (callgrind, nested Adam over SSE2
// vectors: +66% instructions in syncing steps).
#if defined(__CUDACC__)
#define NESTLA_SYNC_INLINE __forceinline__
#elif defined(__GNUC__)
#define NESTLA_SYNC_INLINE [[gnu::always_inline]] inline
#else
#define NESTLA_SYNC_INLINE inline
#endif

template <class V, bool Extended = true, class T, class Load, class Store>
NESTLA_HOST_DEVICE NESTLA_SYNC_INLINE void apply_syncs(const StepPlan<T>& plan, V& p, V* m, Load load, Store store) {
  // Extended false (plan.extended() is false): Lookahead's plain syncs alone,
  // the group means, outer momentum and pack folded away at compile time.
  for (int i = Extended ? plan.first_sync : 0; i < plan.nsync; ++i) {
    const SyncLevel<T>& L = plan.sync[i];
    const bool mean = Extended && i == plan.mean_level;
    const V a(L.alpha);
    V s = load(L.slow);
    if (!Extended || !L.u) {
      if (mean) s = s + a * (load(plan.sum) / V(plan.group));
      else s = s + a * (p - s);
    } else {
      const V mu(L.outer_momentum);
      const V delta = mean ? V(T(0)) - load(plan.sum) / V(plan.group) : s - p;
      const V u = L.u_first ? delta : load(L.u) * mu + delta;
      store(L.u, u);
      const V d = L.outer_nesterov ? delta + mu * u : u;
      s = s + V(-L.alpha) * d;
    }
    store(L.slow, s);
    p = s;
    for (int l = 0; l < i; ++l) store(plan.sync[l].slow, s);
    if (!m || L.policy == Momentum::keep) continue;
    V nm;
    if (L.policy == Momentum::reset) {
      nm = V(T(0));
    } else {
      V ms = load(L.slow_m);
      nm = ms + a * ((mean ? load(plan.sum_m) / V(plan.group) : *m) - ms);
      store(L.slow_m, nm);
    }
    *m = nm;
    for (int l = 0; l < i; ++l)
      if (plan.sync[l].policy == Momentum::pullback) store(plan.sync[l].slow_m, nm);
  }
  if constexpr (Extended) {
    if (plan.pack) {
      store(plan.pack, p - load(plan.pack_slow));
      if (plan.pack_m && m) store(plan.pack_m, *m);
    }
  }
}

}  // namespace nestla
