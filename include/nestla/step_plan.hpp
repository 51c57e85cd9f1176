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
// level's flat buffers; slow_m is null unless the level keeps slow momenta.
template <class T>
struct SyncLevel {
  T* slow;
  T* slow_m;
  T alpha;
  Momentum policy;
};

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

  bool plain() const { return nsync == 0 && ninit == 0; }
};

// Applies the syncs of a plan to element e of a tensor: p is the parameter
// after the base update, m the first moment (null when the base optimizer
// keeps none). V is a scalar or a SIMD batch; load/store are how the caller
// reaches a slow buffer at this element.
template <class V, class T, class Load, class Store>
NESTLA_HOST_DEVICE inline void apply_syncs(const StepPlan<T>& plan, V& p, V* m, Load load, Store store) {
  for (int i = 0; i < plan.nsync; ++i) {
    const SyncLevel<T>& L = plan.sync[i];
    const V a(L.alpha);
    V s = load(L.slow);
    s = s + a * (p - s);
    store(L.slow, s);
    p = s;
    for (int l = 0; l < i; ++l) store(plan.sync[l].slow, s);
    if (!m || L.policy == Momentum::keep) continue;
    V nm;
    if (L.policy == Momentum::reset) {
      nm = V(T(0));
    } else {
      V ms = load(L.slow_m);
      nm = ms + a * (*m - ms);
      store(L.slow_m, nm);
    }
    *m = nm;
    for (int l = 0; l < i; ++l)
      if (plan.sync[l].policy == Momentum::pullback) store(plan.sync[l].slow_m, nm);
  }
}

}  // namespace nestla
