// Lookahead (Zhang et al., 2019, Algorithm 1) over any optimizer, itself included: Nested Lookahead (Gilbert).
//
// Every k-th cycle of the inner optimizer:  phi <- phi + alpha (theta - phi);  theta <- phi;
// every Lookahead inside sets its slow weights to phi; then the momentum policy acts.
// With outer momentum mu (DiLoCo, Douillard et al. 2023), the sync is an SGD step with
// momentum on phi:  Delta = phi - theta;  u <- Delta (first sync) or mu u + Delta;
// phi <- phi - alpha (Delta + mu u) (Nesterov) or phi - alpha u.
// The sync is fused into the pass of the step that completes the cycle.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>

#include "nestla/error.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct LookaheadOptions {
  int k = 5;                            // sync after every k-th cycle of the inner optimizer
  double alpha = 0.5;                   // slow weights step size, in [0, 1]
  Momentum momentum = Momentum::keep;   // what the sync does to the first moments
  double outer_momentum = 0;            // momentum of the sync's SGD step on phi (DiLoCo: 0.9), >= 0
  bool outer_nesterov = false;          // Nesterov outer momentum (DiLoCo); needs outer_momentum > 0
};

namespace detail {
inline const LookaheadOptions& validate(const LookaheadOptions& o) {
  check_option(o.k >= 1, "Lookahead", "k", o.k, "must be >= 1");
  check_option(o.alpha >= 0 && o.alpha <= 1, "Lookahead", "alpha", o.alpha, "must be in [0, 1]");
  const auto m = static_cast<unsigned>(o.momentum);
  check_option(m <= 2, "Lookahead", "momentum", m, "must be keep, reset or pullback");
  check_option(o.outer_momentum >= 0 && std::isfinite(o.outer_momentum), "Lookahead", "outer_momentum",
               o.outer_momentum, "must be finite and >= 0");
  if (o.outer_nesterov)
    check_option(o.outer_momentum > 0, "Lookahead", "outer_momentum", o.outer_momentum,
                 "outer_nesterov needs outer_momentum > 0");
  return o;
}
}  // namespace detail

inline const char* to_string(Momentum m) {
  switch (m) {
    case Momentum::keep: return "keep";
    case Momentum::reset: return "reset";
    case Momentum::pullback: return "pullback";
  }
  return "?";
}

template <class Inner>
class Lookahead {
 public:
  using inner_type = Inner;
  using scalar_type = typename Inner::scalar_type;
  using backend_type = typename Inner::backend_type;
  using base_type = typename Inner::base_type;
  static constexpr int depth = Inner::depth + 1;
  static_assert(depth <= max_depth, "nestla: Lookahead nesting deeper than nestla::max_depth");

 private:
  using T = scalar_type;
  using buffer = typename backend_type::template buffer<T>;

 public:
  // options by const reference: see schedule.hpp on GCC 12 and by-value option structs.
  Lookahead(Inner inner, const LookaheadOptions& options = {})
      : inner_(std::move(inner)), opts_(detail::validate(options)) {
    check_pullback(opts_, "construction");
  }

  // One training step. Returns whether this level synced (completed a cycle).
  template <class P, class G>
  bool step(P&& params, G&& grads) {
    check_levels();
    return detail::run_step(*this, params, grads);
  }

  Inner& inner() noexcept { return inner_; }
  const Inner& inner() const noexcept { return inner_; }
  base_type& base() noexcept { return inner_.base(); }
  const base_type& base() const noexcept { return inner_.base(); }

  const LookaheadOptions& options() const noexcept { return opts_; }
  // Takes effect from the next step. A level switched to pullback starts its
  // slow momenta at zero; one given outer momentum starts u at zero, and its
  // next sync sets u <- Delta (as torch.optim.SGD's first step).
  void set_options(const LookaheadOptions& o) {
    detail::validate(o);
    check_pullback(o, "set_options");
    buffer slow_m, u;
    const bool need_m = o.momentum == Momentum::pullback && slow_m_.empty() && base().initialized();
    const bool need_u = o.outer_momentum != 0 && u_.empty() && base().initialized();
    if (need_m) slow_m = buffer(slow_.size());
    if (need_u) u = buffer(slow_.size());
    if (need_m) slow_m_ = std::move(slow_m);
    if (need_u) {
      u_ = std::move(u);
      outer_started_ = false;
    }
    opts_ = o;
    // A smaller k: the next inner cycle syncs, as it would with the count
    // unclamped, and cycles_since_sync() < k holds (checkpoints rely on it).
    if (cycles_ >= static_cast<std::uint64_t>(o.k)) cycles_ = static_cast<std::uint64_t>(o.k) - 1;
  }
  void set_alpha(double alpha) {
    auto o = opts_;
    o.alpha = alpha;
    set_options(o);
  }

  // This level's group of workers (docs/semantics.md, "Distributed
  // Lookahead"): with several, a sync averages theta - phi (and, for pullback,
  // the first moments) over it and applies the sync to the mean. Null: this
  // worker alone. Groups nest outward; they are checked on the next step.
  void set_group(std::shared_ptr<worker_group> g) {
    detail::check_group_for<T, backend_type>(g, "set_group");
    group_ = std::move(g);
  }
  const std::shared_ptr<worker_group>& group() const noexcept { return group_; }

  // Syncs of this level so far, and inner cycles since its last sync.
  std::uint64_t syncs() const noexcept { return syncs_; }
  std::uint64_t cycles_since_sync() const noexcept { return cycles_; }
  // This level's slow weights (flat, laid out as base().layout()).
  const buffer& slow_weights() const noexcept { return slow_; }
  const buffer& slow_momentum() const noexcept { return slow_m_; }
  // The outer momentum buffer u (empty until outer momentum is used).
  const buffer& outer_momentum_buffer() const noexcept { return u_; }

  // Exchanges the parameters with this level's slow weights: call once to
  // evaluate at the slow weights, once more to return. No step is allowed in
  // between. To use an inner level's slow weights, call this on inner().
  template <class P>
  void swap_slow_weights(P&& params) {
    auto views = bind_for_slow(params, "swap_slow_weights");
    for (const auto& v : views) backend_type::swap(v.param, slow_.data() + v.offset, v.size);
    swapped_ = !swapped_;
  }
  bool slow_weights_swapped_in() const noexcept { return swapped_; }

  // Finishes training on the slow weights: theta <- phi of this level.
  template <class P>
  void copy_slow_weights_to(P&& params) {
    if (swapped_) detail::fail<std::logic_error>("nestla: copy_slow_weights_to: the slow weights are swapped in; swap back first");
    auto views = bind_for_slow(params, "copy_slow_weights_to");
    for (const auto& v : views) backend_type::copy(v.param, slow_.data() + v.offset, v.size);
  }

  // Calls f(level) on every Lookahead level, innermost first, this one last.
  template <class F>
  void for_each_level(F&& f) {
    if constexpr (requires { inner_.for_each_level(f); }) inner_.for_each_level(f);
    f(*this);
  }
  template <class F>
  void for_each_level(F&& f) const {
    if constexpr (requires { inner_.for_each_level(f); }) inner_.for_each_level(f);
    f(*this);
  }

  static std::string type_name() { return "Lookahead<" + Inner::type_name() + ">"; }

  void save(std::ostream& os) const { detail::save_checkpoint(*this, os); }
  void load(std::istream& is, std::uint64_t max_bytes = detail::checkpoint_reader::unlimited) {
    detail::load_checkpoint(*this, is, max_bytes);
  }

  // --- protocol between levels (not for users) -------------------------------
  // Every level's policy still fits the base optimizer, whose first moment
  // may have gone since (SGD's momentum set to 0): checked before a step
  // changes anything.
  void check_levels() const {
    if constexpr (requires { inner_.check_levels(); }) inner_.check_levels();
    check_pullback(opts_, "step");
  }
  bool plan_step(StepPlan<T>& plan) {
    if (swapped_)
      detail::fail<std::logic_error>("nestla: step: the slow weights of a Lookahead level are swapped in; call "
                                     "swap_slow_weights again before stepping");
    const bool inner_done = inner_.plan_step(plan);
    pending_inner_ = inner_done;
    pending_sync_ = inner_done && cycles_ + 1 >= static_cast<std::uint64_t>(opts_.k);
    if (pending_sync_) {
      const bool pull = opts_.momentum == Momentum::pullback;  // check_levels: the base has a first moment
      const bool outer = opts_.outer_momentum != 0;
      plan.sync[plan.nsync++] = SyncLevel<T>{slow_.data(),
                                             pull ? slow_m_.data() : nullptr,
                                             T(opts_.alpha),
                                             opts_.momentum,
                                             outer ? u_.data() : nullptr,
                                             T(opts_.outer_momentum),
                                             opts_.outer_nesterov,
                                             outer && !outer_started_};
    }
    return pending_sync_;
  }
  void collect_init(StepPlan<T>& plan) {
    inner_.collect_init(plan);
    plan.init[plan.ninit++] = slow_.data();
  }
  void commit_step() {
    inner_.commit_step();
    if (!pending_inner_) return;
    if (pending_sync_) {
      cycles_ = 0;
      ++syncs_;
      if (opts_.outer_momentum != 0) outer_started_ = true;
    } else {
      ++cycles_;
    }
  }
  void initialize_state(const Layout& l) {
    buffer slow(l.total), slow_m, u;
    if (opts_.momentum == Momentum::pullback) slow_m = buffer(l.total);
    if (opts_.outer_momentum != 0) u = buffer(l.total);
    inner_.initialize_state(l);
    slow_ = std::move(slow);
    slow_m_ = std::move(slow_m);
    u_ = std::move(u);
  }
  void write_state(detail::checkpoint_writer& w) const {
    w.put<std::int64_t>(opts_.k);
    w.put<double>(opts_.alpha);
    w.put<std::uint8_t>(static_cast<std::uint8_t>(opts_.momentum));
    w.put<std::uint64_t>(cycles_);
    w.put<std::uint64_t>(syncs_);
    w.put<std::uint8_t>(swapped_);
    if (base().initialized()) {
      detail::write_state_buffer<backend_type>(w, slow_, base().layout());
      w.put<std::uint8_t>(!slow_m_.empty());
      if (!slow_m_.empty()) detail::write_state_buffer<backend_type>(w, slow_m_, base().layout());
    }
    // Since format version 3: outer momentum.
    w.put<double>(opts_.outer_momentum);
    w.put<std::uint8_t>(opts_.outer_nesterov);
    w.put<std::uint8_t>(outer_started_);
    w.put<std::uint8_t>(!u_.empty());
    if (!u_.empty()) detail::write_state_buffer<backend_type>(w, u_, base().layout());
    inner_.write_state(w);
  }
  void read_state(detail::checkpoint_reader& r, const std::optional<Layout>& l) {
    LookaheadOptions o;
    const auto k = r.get<std::int64_t>("Lookahead k");
    if (k < 1 || k > std::numeric_limits<int>::max()) r.error(detail::concat("Lookahead k = ", k, " is invalid"));
    o.k = static_cast<int>(k);
    o.alpha = r.get<double>("Lookahead alpha");
    o.momentum = static_cast<Momentum>(r.get<std::uint8_t>("Lookahead momentum"));
    try {
      detail::validate(o);
    } catch (const invalid_option& e) {
      r.error(e.what());
    }
    opts_ = o;
    cycles_ = r.get<std::uint64_t>("Lookahead cycles");
    if (cycles_ >= static_cast<std::uint64_t>(o.k))
      r.error(detail::concat("field 'Lookahead cycles' = ", cycles_, " is not below k = ", o.k));
    syncs_ = r.get<std::uint64_t>("Lookahead syncs");
    detail::check_count_plausible(r, syncs_, "Lookahead syncs");
    swapped_ = r.get_flag("Lookahead swapped");
    // Slow weights exist from the first step on; before it there is nothing to swap.
    if (swapped_ && !l) r.error("field 'Lookahead swapped' is set in a checkpoint taken before the first step");
    slow_ = {};
    slow_m_ = {};
    u_ = {};
    outer_started_ = false;
    if (l) {
      slow_ = detail::read_state_buffer<backend_type, T>(r, *l, "Lookahead slow weights");
      // Slow momenta exist for a pullback level (set_options adds them, never
      // removes them); over tensors with no elements they are empty, saved as absent.
      if (r.get_flag("Lookahead has slow momenta")) {
        if (l->total == 0) r.error("field 'Lookahead has slow momenta' is set, but the tensors hold no elements");
        slow_m_ = detail::read_state_buffer<backend_type, T>(r, *l, "Lookahead slow momenta");
      } else if (opts_.momentum == Momentum::pullback && l->total != 0) {
        r.error("pullback level without slow momenta");
      }
    }
    if (r.version() >= 3) read_outer_momentum(r, l);
    inner_.read_state(r, l);
    try {
      check_pullback(opts_, "load");
    } catch (const invalid_option& e) {
      r.error(e.what());
    }
    check_counters_against_inner(r);
  }

 private:
  // pullback acts on the base optimizer's first moment: without one (SGD
  // without momentum) it would do nothing, so it is refused rather than
  // silently kept.
  void check_pullback(const LookaheadOptions& o, const char* when) const {
    if (o.momentum == Momentum::pullback && !base().has_first_moment())
      detail::fail<invalid_option>("nestla: Lookahead level ", depth, " (1 = innermost), ", when,
                                   ": momentum = pullback needs a first moment to pull back, and the base optimizer ",
                                   base_type::type_name(),
                                   " has none (SGD has one only with momentum > 0); use keep or reset, or give the base "
                                   "a first moment");
  }

  // Each sync of this level took one or more completed cycles of the inner
  // level (its syncs, or the base optimizer's steps), and cycles counts those
  // since the last sync: so syncs + cycles never exceeds the inner count.
  void check_counters_against_inner(detail::checkpoint_reader& r) const {
    std::uint64_t inner_done;
    if constexpr (Inner::depth == 0) inner_done = inner_.step_count();
    else inner_done = inner_.syncs();
    if (syncs_ > inner_done || cycles_ > inner_done - syncs_)
      r.error(detail::concat("fields 'Lookahead syncs' = ", syncs_, " and 'Lookahead cycles' = ", cycles_,
                             " exceed the ", inner_done, " cycles the inner level completed"));
  }

  void read_outer_momentum(detail::checkpoint_reader& r, const std::optional<Layout>& l) {
    opts_.outer_momentum = r.get<double>("Lookahead outer_momentum");
    opts_.outer_nesterov = r.get_flag("Lookahead outer_nesterov");
    try {
      detail::validate(opts_);
    } catch (const invalid_option& e) {
      r.error(e.what());
    }
    outer_started_ = r.get_flag("Lookahead outer momentum started");
    // Like the slow momenta: over tensors with no elements the buffer is empty, saved as absent.
    if (r.get_flag("Lookahead has outer momentum buffer")) {
      if (!l) r.error("outer momentum buffer present in a checkpoint taken before the first step");
      if (l->total == 0) r.error("field 'Lookahead has outer momentum buffer' is set, but the tensors hold no elements");
      u_ = detail::read_state_buffer<backend_type, T>(r, *l, "Lookahead outer momentum buffer");
    } else if (l && opts_.outer_momentum != 0 && l->total != 0) {
      r.error("Lookahead outer momentum buffer missing");
    }
  }

  template <class P>
  std::span<const TensorRef<T>> bind_for_slow(P& params, const char* who) {
    if (!base().initialized())
      detail::fail<std::logic_error>("nestla: ", who, ": there are no slow weights before the first step");
    base().bind_params(params, who);
    return base().views();
  }
  Inner inner_;
  LookaheadOptions opts_;
  buffer slow_, slow_m_, u_;
  std::uint64_t cycles_ = 0, syncs_ = 0;
  bool swapped_ = false;
  bool outer_started_ = false;  // u holds momentum (torch: state has 'momentum_buffer')
  std::shared_ptr<worker_group> group_;
  bool pending_inner_ = false, pending_sync_ = false;  // scratch between plan_step and commit_step
};

// Lookahead nested D times around base, levels given innermost first:
//   nested<2>(Adam<>{}, {{.k = 5, .alpha = 0.5}, {.k = 5, .alpha = 0.5}})  is
//   Lookahead<Lookahead<Adam<>>>.
template <int D, class Base>
struct nested_type {
  using type = Lookahead<typename nested_type<D - 1, Base>::type>;
};
template <class Base>
struct nested_type<0, Base> {
  using type = Base;
};
template <int D, class Base>
using nested_t = typename nested_type<D, Base>::type;

namespace detail {
template <int I, int D, class Opt>
auto wrap_levels(Opt opt, std::span<const LookaheadOptions> levels) {
  if constexpr (I == D) {
    return opt;
  } else {
    return wrap_levels<I + 1, D>(Lookahead<Opt>(std::move(opt), levels[I]), levels);
  }
}
}  // namespace detail

// The list's length is deduced apart from D, so that a list of fewer than D
// levels is an error here instead of filling the rest with default levels.
template <int D, class Base, std::size_t N>
  requires(D >= 1)
nested_t<D, Base> nested(Base base, const LookaheadOptions (&levels)[N]) {
  static_assert(N == static_cast<std::size_t>(D),
                "nestla::nested<D>(base, {...}): give exactly D level options, innermost first");
  return detail::wrap_levels<0, D>(std::move(base), std::span<const LookaheadOptions>(levels, N));
}

// The same from a runtime list (e.g. per-level values from a command line),
// which must hold exactly D levels.
template <int D, class Base>
nested_t<D, Base> nested(Base base, std::span<const LookaheadOptions> levels) {
  if (levels.size() != static_cast<std::size_t>(D))
    detail::fail<invalid_option>("nestla: nested<", D, ">: ", levels.size(), " level options given, expected ", D);
  return detail::wrap_levels<0, D>(std::move(base), levels);
}

}  // namespace nestla
