// A base optimizer from an update rule (rule.hpp): binding a parameter set, state, parameter groups, the step driver, checkpoints.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <istream>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <type_traits>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "nestla/clip.hpp"
#include "nestla/detail/checked.hpp"
#include "nestla/detail/checkpoint_io.hpp"
#include "nestla/detail/distributed.hpp"
#include "nestla/error.hpp"
#include "nestla/group.hpp"
#include "nestla/parameter_set.hpp"
#include "nestla/rule.hpp"
#include "nestla/step_plan.hpp"

namespace nestla {

struct host;

// Per-tensor overrides of a base optimizer's options, as PyTorch's param
// groups. Unset fields follow the optimizer's own options (and so follow a
// schedule applied to them); set fields are absolute.
struct GroupOptions {
  std::optional<double> lr = std::nullopt;
  std::optional<double> weight_decay = std::nullopt;
};

struct ParamGroup {
  std::vector<std::size_t> tensors;  // indices in the parameter set's order
  GroupOptions options;
};

namespace detail {

inline void validate_group(const GroupOptions& g, const char* who) {
  if (g.lr) check_option(*g.lr >= 0 && std::isfinite(*g.lr), who, "group lr", *g.lr, "must be finite and >= 0");
  if (g.weight_decay)
    check_option(*g.weight_decay >= 0 && std::isfinite(*g.weight_decay), who, "group weight_decay", *g.weight_decay,
                 "must be finite and >= 0");
}

inline constexpr char checkpoint_magic[8] = {'N', 'E', 'S', 'T', 'L', 'A', 'C', 'K'};
// Version 2: base optimizers as update rules. Version 3 added the base
// optimizer's gradient clipping and each Lookahead level's outer momentum;
// version 2 files load without either.
inline constexpr std::uint32_t checkpoint_version = 3;
inline constexpr std::uint32_t oldest_checkpoint_version = 2;
inline constexpr std::uint32_t byte_order_mark = 0x01020304u;

// nvcc's device pass compiles every __host__ __device__ instantiation it
// meets, also those reached only from host code. The host backend's would hold
// host SIMD batches, which device code cannot, so that pass leaves it out.
#if defined(__CUDA_ARCH__)
template <class Backend>
inline constexpr bool skip_in_device_pass = std::is_same_v<Backend, host>;
#else
template <class Backend>
inline constexpr bool skip_in_device_pass = false;
#endif

template <class T>
constexpr const char* scalar_name() {
  if constexpr (std::is_same_v<T, float>) return "float32";
  else if constexpr (std::is_same_v<T, double>) return "float64";
  else return "long double";
}

// Each tensor's segment of a flat state buffer (padding left out), through
// the backend so that device state is copied to and from the host.
template <class Backend, class Buffer>
void write_state_buffer(checkpoint_writer& w, const Buffer& b, const Layout& l) {
  using T = std::remove_cvref_t<decltype(*b.data())>;
  for (std::size_t i = 0; i < l.count(); ++i)
    Backend::download(w.put_array_slot<T>(l.sizes[i]), b.data() + l.offsets[i], l.sizes[i]);
}
// The stream must deliver every segment before the buffer is allocated: a
// file can declare sizes it does not hold.
template <class Backend, class T>
typename Backend::template buffer<T> read_state_buffer(checkpoint_reader& r, const Layout& l, const char* field) {
  std::size_t bytes = 0;
  for (auto n : l.sizes) {  // each segment: its count, then its values
    if (mul_overflows(n, sizeof(T)) || add_overflows(n * sizeof(T), sizeof(std::uint64_t)) ||
        add_overflows(bytes, n * sizeof(T) + sizeof(std::uint64_t)))
      r.error(concat("field '", field, "': the tensor sizes exceed any possible file"));
    bytes += n * sizeof(T) + sizeof(std::uint64_t);
  }
  r.prefetch(bytes, field);
  typename Backend::template buffer<T> b(l.total);
  for (std::size_t i = 0; i < l.count(); ++i)
    Backend::upload(b.data() + l.offsets[i], r.get_array<T>(l.sizes[i], field), l.sizes[i]);
  return b;
}

// What a rule's prepare returns, as a variant (a single functor type is a
// variant of one alternative).
template <class P>
struct as_variant {
  using type = std::variant<P>;
};
template <class... Ops>
struct as_variant<std::variant<Ops...>> {
  using type = std::variant<Ops...>;
};

// Which states a functor reads and writes (its `uses` mask, else all N).
template <class Op, std::size_t N>
constexpr unsigned uses_mask() {
  constexpr unsigned all = N >= 32 ? ~0u : (1u << N) - 1u;
  if constexpr (requires { Op::uses; }) {
    static_assert((Op::uses & ~all) == 0, "nestla: an update functor's `uses` names a state the rule does not have");
    return Op::uses;
  } else {
    return all;
  }
}

// The functor the backends run when a variant uses states that are not a
// prefix of the rule's (e.g. {0, 2}): the backends load and store only the
// used ones, contiguously; this puts each at its rule index for the rule's
// functor. Straight-line code over compile-time indices, so that it compiles
// to nothing but register moves. (A prefix needs no wrapper: the functor just
// never touches the entries past it.)
template <class Op, std::size_t N, unsigned Mask>
struct masked_update {
  Op op;

  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    call(p, g, s, std::make_index_sequence<N>{});
  }

 private:
  // Where rule state K sits among the used ones.
  template <std::size_t K>
  static constexpr std::size_t slot = static_cast<std::size_t>(std::popcount(Mask & ((1u << K) - 1u)));
  template <std::size_t K>
  static constexpr bool used = ((Mask >> K) & 1u) != 0;

  template <class V, std::size_t... K>
  NESTLA_HOST_DEVICE void call(V& p, V g, V* s, std::index_sequence<K...>) const {
    V all[N];
    ((used<K> ? (void)(all[K] = s[slot<K>]) : (void)0), ...);
    op(p, g, all);
    ((used<K> ? (void)(s[slot<K>] = all[K]) : (void)0), ...);
  }
};

template <unsigned Mask>
inline constexpr bool is_prefix_mask = (Mask & (Mask + 1u)) == 0;

// The rule's functor on a transformed gradient: clamped to [lo, hi] when
// clamp is set (clip_grad_value_, as clamp_min then clamp_max: a NaN stays
// NaN), then times scale: clip_grad_norm_'s coefficient, and -1 for maximize
// (torch clips .grad, then the optimizer negates it; negation is exact and
// commutes with the rounding, so -(g c) is g (-c) to the bit). scale_at, when
// set, is device memory holding a factor of the scale (the coefficient the
// norm kernels computed), multiplied in by the kernel (resolve) before the
// first element. Only steps that need it run it, so the plain path keeps its
// code and speed; one type for every case, so a rule compiles one more
// variant of the update pass, not one per case.
template <class Op, class T>
struct transformed_gradient {
  Op op;
  T scale, lo, hi;
  const T* scale_at;
  bool clamp;

  NESTLA_HOST_DEVICE void resolve() {
    if (scale_at) scale = scale * *scale_at;
    scale_at = nullptr;
  }
  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    if (clamp) {
      const V l(lo), h(hi);
      g = ops::select(g < l, l, g);
      g = ops::select(g > h, h, g);
    }
    op(p, g * V(scale), s);
  }
};

// Built on zeroed bytes: the CUDA backend shares a functor between tensors
// whose bytes are equal, and uninitialized padding would tell equal ones apart.
template <class Op, class T>
transformed_gradient<Op, T> transform_gradient(const Op& op, T scale, T lo, T hi, const T* scale_at, bool clamp) {
  transformed_gradient<Op, T> w;
  std::memset(static_cast<void*>(&w), 0, sizeof(w));
  w.op = op;
  w.scale = scale;
  w.lo = lo;
  w.hi = hi;
  w.scale_at = scale_at;
  w.clamp = clamp;
  return w;
}

template <class O>
bool maximize_option(const O& o) {
  if constexpr (requires { o.maximize; }) return static_cast<bool>(o.maximize);
  else return false;
}

template <class O>
double weight_decay_option(const O& o) {
  if constexpr (requires { o.weight_decay; }) return static_cast<double>(o.weight_decay);
  else return 0;
}

// Options and scalars as checkpoint fields: doubles, bools, integers, enums.
struct field_writer {
  checkpoint_writer& w;
  template <class V>
  void operator()(const char*, const V& v) const {
    if constexpr (std::is_same_v<V, bool>) w.put<std::uint8_t>(v);
    else if constexpr (std::is_floating_point_v<V>) w.put<double>(static_cast<double>(v));
    else if constexpr (std::is_enum_v<V>) w.put<std::int64_t>(static_cast<std::int64_t>(v));
    else if constexpr (std::is_integral_v<V>) w.put<std::int64_t>(static_cast<std::int64_t>(v));
    else static_assert(sizeof(V) == 0, "nestla: an option field must be floating-point, bool, integral or an enum");
  }
};
struct field_reader {
  checkpoint_reader& r;
  template <class V>
  void operator()(const char* name, V& v) const {
    if constexpr (std::is_same_v<V, bool>) {
      v = r.get_flag(name);
    } else if constexpr (std::is_floating_point_v<V>) {
      v = static_cast<V>(r.get<double>(name));
    } else if constexpr (std::is_enum_v<V> || std::is_integral_v<V>) {
      using U = std::conditional_t<std::is_enum_v<V>, std::underlying_type<V>, std::type_identity<V>>;
      using I = typename U::type;
      const auto x = r.get<std::int64_t>(name);
      if (!std::in_range<I>(x)) r.error(concat("field '", name, "' = ", x, " is out of range"));
      v = static_cast<V>(static_cast<I>(x));
    }
  }
};

template <class Top, class P, class G>
bool run_step(Top& top, P& params, G& grads);
template <class Top>
void save_checkpoint(const Top& top, std::ostream& os);
template <class Top>
void load_checkpoint(Top& top, std::istream& is, std::uint64_t max_bytes);

// --- what a checkpoint may declare ----------------------------------------
// Every check below is one invariant that stepping and the setters keep, so a
// checkpoint the writer produced always passes, and a crafted one that breaks
// it is refused before anything is committed.

// Plausibility bounds (a real run never comes near them).
inline constexpr std::uint64_t max_checkpoint_tensors = std::uint64_t(1) << 24;
inline constexpr std::uint64_t max_checkpoint_groups = std::uint64_t(1) << 20;
inline constexpr std::uint64_t max_checkpoint_group_size = std::uint64_t(1) << 24;
// Step, skip and sync counters. Beyond 2^53 a step count is no longer exact in
// the double arithmetic of the bias corrections, and t + 1 could wrap.
inline constexpr std::uint64_t max_checkpoint_count = std::uint64_t(1) << 53;

inline void check_count_plausible(checkpoint_reader& r, std::uint64_t v, const char* field) {
  if (v > max_checkpoint_count) r.error(concat("field '", field, "' = ", v, " is implausible (more than 2^53)"));
}

// A group option: a presence flag, then the value, which is 0 when absent.
inline std::optional<double> read_optional_option(checkpoint_reader& r, const char* flag_field, const char* value_field) {
  const bool set = r.get_flag(flag_field);
  const double v = r.get<double>(value_field);
  if (set) return v;
  if (std::bit_cast<std::uint64_t>(v) != 0) r.error(concat("field '", value_field, "' is set but its flag is not"));
  return std::nullopt;
}

// validate: the optimizer's check of a group's options (throws invalid_option).
template <class Validate>
std::vector<ParamGroup> read_param_groups(checkpoint_reader& r, Validate&& validate) {
  const auto ngroups = r.get<std::uint64_t>("group count");
  if (ngroups > max_checkpoint_groups) r.error(concat("group count ", ngroups, " is implausible (more than 2^20)"));
  std::vector<ParamGroup> groups;
  for (std::uint64_t g = 0; g < ngroups; ++g) {
    ParamGroup pg;
    const auto n = r.get<std::uint64_t>("group size");
    if (n > max_checkpoint_group_size) r.error(concat("group ", g, " size ", n, " is implausible (more than 2^24)"));
    for (std::uint64_t i = 0; i < n; ++i) pg.tensors.push_back(r.get<std::uint64_t>("group tensor"));
    pg.options.lr = read_optional_option(r, "group lr flag", "group lr");
    pg.options.weight_decay = read_optional_option(r, "group weight_decay flag", "group weight_decay");
    try {
      validate(pg.options);
    } catch (const invalid_option& e) {
      r.error(e.what());
    }
    groups.push_back(std::move(pg));
  }
  return groups;
}

// Groups are disjoint and list each tensor once (as add_param_group demands);
// the range of their indices is checked against the layout by map_groups.
inline void check_groups_disjoint(checkpoint_reader& r, const std::vector<ParamGroup>& groups) {
  std::vector<std::pair<std::size_t, std::size_t>> seen;  // (tensor, group)
  for (std::size_t g = 0; g < groups.size(); ++g)
    for (auto t : groups[g].tensors) seen.emplace_back(t, g);
  std::sort(seen.begin(), seen.end());
  for (std::size_t i = 1; i < seen.size(); ++i)
    if (seen[i].first == seen[i - 1].first) {
      if (seen[i].second == seen[i - 1].second)
        r.error(concat("field 'group tensor': tensor ", seen[i].first, " is listed twice in group ", seen[i].second));
      r.error(concat("field 'group tensor': tensor ", seen[i].first, " is in groups ", seen[i - 1].second, " and ",
                     seen[i].second));
    }
}

}  // namespace detail

// A base optimizer: the update rule Rule (see rule.hpp) over tensors of T in
// Backend's memory. SGD, Adam, AdamW and the others are aliases of it:
//   template <class T = float, class Backend = host> using SGD = BaseOptimizer<sgd_rule, T, Backend>;
template <class Rule, class T = float, class Backend = host>
class BaseOptimizer {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "nestla: the scalar type must be float or double");
  static_assert(detail::rule_has_options<Rule>,
                "nestla: an update rule needs `struct options`: an aggregate of its hyperparameters with a `double lr`");
  static_assert(detail::rule_has_name<Rule>, "nestla: an update rule needs `static constexpr const char* name`");
  static_assert(detail::rule_has_states<Rule>,
                "nestla: an update rule needs `static constexpr std::array<const char*, N> states` naming its "
                "per-element state buffers (N <= 16; N = 0 for none)");
  static_assert(detail::rule_has_first_moment<Rule>,
                "nestla: an update rule needs `static constexpr int first_moment`: the index in `states` of the "
                "buffer the momentum policies act on, or -1");
  static_assert(detail::rule_has_validate<Rule>,
                "nestla: an update rule needs `static void validate(const options&, const nestla::option_check&)`");
  static_assert(detail::rule_has_fields<Rule>,
                "nestla: an update rule needs `static void fields(auto& options, auto&& f)` calling f(\"name\", "
                "options.member) for every option (checkpoints)");
  static_assert(detail::rule_scalars_ok<Rule>,
                "nestla: an update rule with `struct scalars` also needs `static void scalar_fields(auto& s, auto&& f)` "
                "and `static void advance(const options&, scalars&, const nestla::step_context&)`");
  static_assert(detail::rule_has_prepare<Rule, T>,
                "nestla: an update rule needs `template <class T> static auto prepare(const options&, const "
                "nestla::step_context&)` (with `, const scalars&` when it has scalars) returning its update functor");

  using buffer = typename Backend::template buffer<T>;
  using scalars_type = detail::rule_scalars_t<Rule>;
  using prepared_type = typename detail::as_variant<std::remove_cvref_t<decltype(detail::call_prepare<Rule, T>(
      std::declval<const typename Rule::options&>(), std::declval<const step_context&>(),
      std::declval<const scalars_type*>()))>>::type;

 public:
  using rule_type = Rule;
  using options_type = typename Rule::options;
  using scalar_type = T;
  using backend_type = Backend;
  using base_type = BaseOptimizer;
  static constexpr int depth = 0;
  static constexpr std::size_t state_count = Rule::states.size();

  // By const reference: GCC 12 with AVX-512 code generation miscompiles some
  // small option structs passed by value (README, "Compilers and xsimd versions").
  explicit BaseOptimizer(const options_type& options = {}) : opts_(validated(options)) {}

  static std::string type_name() { return std::string(Rule::name); }

  BaseOptimizer& base() noexcept { return *this; }
  const BaseOptimizer& base() const noexcept { return *this; }

  // One training step. Returns whether a cycle completed: always true for a
  // base optimizer, false only when the non-finite guard skipped the step.
  template <class P, class G>
  bool step(P&& params, G&& grads) {
    return detail::run_step(*this, params, grads);
  }

  // --- options --------------------------------------------------------------
  const options_type& options() const noexcept { return opts_; }
  // Validated; takes effect from the next step. State a new option needs
  // (AMSGrad's maximum, SGD's momentum) is created zero at that step.
  void set_options(const options_type& o) { opts_ = validated(o); }
  void set_lr(double lr) {
    auto o = opts_;
    o.lr = lr;
    set_options(o);
  }

  // --- state ----------------------------------------------------------------
  // State buffer k (Rule::states[k]), flat and laid out as layout(); empty
  // until a step used it.
  const buffer& state(std::size_t k) const {
    if (k >= state_count) detail::fail<std::out_of_range>("nestla: ", Rule::name, " has no state ", k);
    return states_[k];
  }
  const buffer& state(std::string_view name) const {
    for (std::size_t k = 0; k < state_count; ++k)
      if (name == Rule::states[k]) return states_[k];
    detail::fail<std::out_of_range>("nestla: ", Rule::name, " has no state '", name, "'");
  }
  // Whether the next step keeps a first moment for the momentum policies
  // (e.g. false for SGD without momentum).
  bool has_first_moment() const {
    if constexpr (Rule::first_moment < 0) return false;
    else return (mask_of(prepare_for(-1, next_scalars())) >> Rule::first_moment) & 1u;
  }

  // --- parameter groups ---------------------------------------------------
  // Puts the tensors with these indices (in the parameter set's order) in a
  // new group with its own lr and/or weight_decay. Returns the group's id.
  std::size_t add_param_group(std::vector<std::size_t> tensors, GroupOptions options) {
    validate_group(options);
    for (auto t : tensors) {
      if (initialized_ && t >= layout_.count())
        detail::fail<layout_error>("nestla: add_param_group: tensor index ", t, " is out of range (the parameter set has ",
                                   layout_.count(), " tensors)");
      for (std::size_t g = 0; g < groups_.size(); ++g)
        for (auto u : groups_[g].tensors)
          if (u == t) detail::fail<invalid_option>("nestla: add_param_group: tensor ", t, " is already in group ", g);
    }
    for (std::size_t i = 0; i < tensors.size(); ++i)
      for (std::size_t j = i + 1; j < tensors.size(); ++j)
        if (tensors[i] == tensors[j])
          detail::fail<invalid_option>("nestla: add_param_group: tensor ", tensors[i], " is listed twice");
    groups_.push_back({std::move(tensors), options});
    if (initialized_) map_groups(layout_.count(), tensor_group_);
    return groups_.size() - 1;
  }
  void set_param_group(std::size_t group, GroupOptions options) {
    if (group >= groups_.size())
      detail::fail<invalid_option>("nestla: set_param_group: group ", group, " does not exist (", groups_.size(),
                                   " groups)");
    validate_group(options);
    groups_[group].options = options;
  }
  const std::vector<ParamGroup>& param_groups() const noexcept { return groups_; }

  // Effective hyperparameters of tensor i (after the first step).
  double lr_of(std::size_t i) const { return group_lr(group_of(i)); }
  double weight_decay_of(std::size_t i) const { return group_weight_decay(group_of(i)); }

  // --- execution ------------------------------------------------------------
  // Worker threads for the update pass (1: the calling thread only).
  void set_threads(unsigned n)
    requires requires(typename Backend::context& c) { c.pool; }
  {
    ctx_.pool.set_threads(n);
  }
  unsigned threads() const
    requires requires(const typename Backend::context& c) { c.pool; }
  {
    return ctx_.pool.threads();
  }
  typename Backend::context& context() noexcept { return ctx_; }

  // Opt-in guard: a step whose gradients hold NaN or infinity is skipped
  // entirely (no state, counter or parameter changes) and counted. The guard
  // decides before clipping: with both on, such a step is skipped, not
  // clipped (and error_if_nonfinite does not throw for it).
  void set_skip_nonfinite(bool on) noexcept { guard_ = on; }
  bool skip_nonfinite() const noexcept { return guard_; }
  std::uint64_t skipped_steps() const noexcept { return skipped_; }
  bool last_step_skipped() const noexcept { return last_skipped_; }

  // --- gradient clipping (nestla/clip.hpp) ------------------------------------
  // torch.nn.utils.clip_grad_norm_ / clip_grad_value_ on the gradients of
  // every step of this optimizer (in a nested optimizer: every base step),
  // before the update rule sees them. Unlike torch, the gradients are only
  // read: the update pass multiplies (clamps) each gradient as it loads it,
  // so the user's gradients keep their values. Clipping by norm reads the
  // gradients once more for the norm (shared with the non-finite guard when
  // both are on). One mode at a time: setting one replaces the other.
  void set_clip_grad_norm(const ClipGradNorm& c) {
    detail::validate_clip_norm(c, "set_clip_grad_norm");
    clip_ = {GradClip::Mode::norm, c, 0};
  }
  void set_clip_grad_value(double clip_value) {
    detail::validate_clip_value(clip_value, "set_clip_grad_value");
    clip_ = {GradClip::Mode::value, {}, clip_value};
  }
  void clear_clip_grad() noexcept { clip_ = {}; }
  const GradClip& clip_grad() const noexcept { return clip_; }
  // The total norm (clip_grad_norm_'s return value) the last step measured,
  // also for a step the guard skipped; NaN before any. On a device backend
  // this waits for the GPU.
  double last_grad_norm() const {
    if constexpr (requires(const typename Backend::context& c) { Backend::template read_grad_norm<T>(c); })
      if (last_norm_on_device_) return static_cast<double>(Backend::template read_grad_norm<T>(ctx_));
    return last_norm_;
  }

  // Steps taken (t in the update rules); skipped steps are not counted.
  std::uint64_t step_count() const noexcept { return t_; }
  bool initialized() const noexcept { return initialized_; }
  const Layout& layout() const noexcept { return layout_; }

  void save(std::ostream& os) const { detail::save_checkpoint(*this, os); }
  // Reads one checkpoint record and leaves the stream after it. Any input is
  // safe (see load_checkpoint); max_bytes bounds how much is read.
  void load(std::istream& is, std::uint64_t max_bytes = detail::checkpoint_reader::unlimited) {
    detail::load_checkpoint(*this, is, max_bytes);
  }

  // --- distributed training (docs/semantics.md, "Distributed Lookahead") -----
  // Level 0's group: with several workers, the gradients are averaged over it
  // before every update (synchronous data parallel). Null: this worker alone.
  // Checked on the next step, with every level's group.
  void set_group(std::shared_ptr<worker_group> g) {
    detail::check_group_for<T, Backend>(g, "set_group");
    group_ = std::move(g);
  }
  const std::shared_ptr<worker_group>& group() const noexcept { return group_; }

  // --- protocol between the levels of a nested optimizer (not for users) ----
  // The rule's host part of this step: one update functor per parameter
  // group and the scalars after advance. Runs before anything changes, so a
  // rule that throws leaves the optimizer as it was.
  void prepare_update() {
    pending_scalars_ = next_scalars();
    prepared_.resize(groups_.size() + 1);
    for (std::size_t g = 0; g <= groups_.size(); ++g)
      prepared_[g] = prepare_for(static_cast<int>(g) - 1, pending_scalars_);
    for (std::size_t g = 1; g < prepared_.size(); ++g)
      if (prepared_[g].index() != prepared_[0].index())
        detail::fail<std::logic_error>("nestla: ", Rule::name, ": prepare chose different update variants for two "
                                       "parameter groups of one step");
    pending_mask_ = mask_of(prepared_[0]);
  }
  // Creates the state buffers this step's functors use that do not exist yet.
  bool plan_step(StepPlan<T>&) {
    for (std::size_t k = 0; k < state_count; ++k)
      if (((pending_mask_ >> k) & 1u) && states_[k].empty()) {
        states_[k] = buffer(layout_.total);
        fresh_ |= 1u << k;
      }
    return true;
  }
  void collect_init(StepPlan<T>&) {}
  void execute(const StepPlan<T>& plan) {
    std::visit([&](const auto& first) { run(first, plan); }, prepared_[0]);
  }
  void commit_step() {
    ++t_;
    fresh_ &= ~pending_mask_;
    scalars_ = pending_scalars_;
  }
  void initialize_state(const Layout& l) {
    std::vector<int> map;
    map_groups(l.count(), map);  // validates before anything changes
    layout_ = l;
    tensor_group_ = std::move(map);
    initialized_ = true;
  }
  // Flattens params (and grads, unless null) into views_, checking them
  // against the state's layout. Throws before anything is modified.
  template <class P>
  void bind_params(P& params, const char* who);
  template <class P, class G>
  void bind(P& params, G& grads);
  std::span<const TensorRef<T>> views() const noexcept { return views_; }
  // Distributed steps: the bound gradients are read from flat (laid out as
  // the state) instead, and the scratch the distributed step keeps.
  void use_flat_grads(const T* flat) {
    for (auto& v : views_) v.grad = flat + v.offset;
  }
  detail::distributed_scratch<T, Backend>& distributed_scratch() noexcept { return dist_; }
  // This step's first-moment buffer (after plan_step), for passes without the
  // update; null when the step keeps none.
  T* first_moment_data() noexcept {
    if constexpr (Rule::first_moment < 0) return nullptr;
    else return ((pending_mask_ >> Rule::first_moment) & 1u) ? states_[Rule::first_moment].data() : nullptr;
  }
  Layout pending_layout() const {
    std::vector<std::size_t> sizes;
    sizes.reserve(views_.size());
    for (auto& v : views_) sizes.push_back(v.size);
    return Layout::of<T>(sizes);
  }
  // The gradients' pre-pass, before anything changes: the non-finite guard
  // and clipping's norm. Returns false when the guard skips the step.
  //
  // Distributed training: with gradient averaging the bound gradients are
  // sums over grad_workers workers, and clipping by norm uses the mean's norm,
  // the sums' divided by their number; value clipping clamps the mean, as the
  // update pass divides before the clipping functor.
  bool note_guard(std::size_t grad_workers = 1) {
    last_skipped_ = false;
    clip_pass_ = clip_pass::none;
    bool finite_known = false;
    if (clip_.mode == GradClip::Mode::norm) {
      const ClipGradNorm& c = clip_.norm;
      const auto r = Backend::template grad_norm<T>(ctx_, std::span<const TensorRef<T>>(views_),
                                                   with_divisor(detail::norm_spec::of(c.norm_type), grad_workers),
                                                   static_cast<T>(c.max_norm),
                                                   guard_ || c.error_if_nonfinite);
      last_norm_ = r.on_host ? static_cast<double>(r.norm) : std::numeric_limits<double>::quiet_NaN();
      last_norm_on_device_ = !r.on_host;
      if (r.on_host) {
        // A NaN or infinite gradient makes the norm NaN or infinite, so a
        // finite norm answers the guard; a non-finite one may be overflow.
        const bool finite_norm = std::isfinite(static_cast<double>(r.norm));
        if (guard_ && !finite_norm && !Backend::template all_finite<T>(ctx_, views_)) return skip();
        finite_known = true;
        if (c.error_if_nonfinite && !finite_norm)
          detail::fail_nonfinite_norm("step", c.norm_type, static_cast<double>(r.norm));
      }
      // g * 1 == g for every g: a coefficient of 1 known here runs the plain
      // pass, with torch's bits and without the multiply.
      if (r.at || r.coef != T(1)) {
        clip_pass_ = clip_pass::scale;
        // On a device backend the kernel reads the coefficient, which follows the norm.
        clip_coef_ = r.at ? T(1) : r.coef;
        clip_at_ = r.at ? r.at + 1 : nullptr;
      }
    }
    if (guard_ && !finite_known && !Backend::template all_finite<T>(ctx_, views_)) return skip();
    if (clip_.mode == GradClip::Mode::value) clip_pass_ = clip_pass::clamp;
    return true;
  }
  void write_state(detail::checkpoint_writer& w) const {
    w.put<std::uint64_t>(t_);
    w.put<std::uint64_t>(skipped_);
    w.put<std::uint64_t>(groups_.size());
    for (auto& g : groups_) {
      w.put<std::uint64_t>(g.tensors.size());
      for (auto t : g.tensors) w.put<std::uint64_t>(t);
      w.put<std::uint8_t>(g.options.lr.has_value());
      w.put<double>(g.options.lr.value_or(0));
      w.put<std::uint8_t>(g.options.weight_decay.has_value());
      w.put<double>(g.options.weight_decay.value_or(0));
    }
    write_own(w);
    write_clip(w);
  }
  void read_state(detail::checkpoint_reader& r, const std::optional<Layout>& l) {
    t_ = r.get<std::uint64_t>("step count");
    detail::check_count_plausible(r, t_, "step count");
    // No step before the state exists (a skipped step changes neither).
    if (!l && t_ != 0) r.error(detail::concat("field 'step count' is ", t_, " in a checkpoint taken before the first step"));
    skipped_ = r.get<std::uint64_t>("skipped steps");
    detail::check_count_plausible(r, skipped_, "skipped steps");
    groups_ = detail::read_param_groups(r, [&](const GroupOptions& g) { validate_group(g); });
    detail::check_groups_disjoint(r, groups_);
    if (l) {
      try {
        map_groups(l->count(), tensor_group_);
      } catch (const std::invalid_argument& e) {
        r.error(e.what());
      }
      layout_ = *l;
      initialized_ = true;
    } else {
      layout_ = {};
      tensor_group_.clear();
      initialized_ = false;
    }
    read_own(r);
    // Version 2 predates clipping: such a file's optimizer did not clip.
    if (r.version() >= 3) read_clip(r);
    else clip_ = {};
  }

 private:
  static const options_type& validated(const options_type& o) {
    Rule::validate(o, option_check(Rule::name));
    return o;
  }
  void validate_group(const GroupOptions& g) const {
    detail::validate_group(g, Rule::name);
    if constexpr (!requires(const options_type& o) { o.weight_decay; })
      if (g.weight_decay)
        detail::fail<invalid_option>("nestla: ", Rule::name, ": a parameter group sets weight_decay, which ",
                                     Rule::name, " does not have");
  }

  // -1: tensors in no group.
  int group_of(std::size_t i) const { return i < tensor_group_.size() ? tensor_group_[i] : -1; }
  double group_lr(int g) const {
    if (g >= 0 && groups_[static_cast<std::size_t>(g)].options.lr) return *groups_[static_cast<std::size_t>(g)].options.lr;
    return opts_.lr;
  }
  double group_weight_decay(int g) const {
    if (g >= 0 && groups_[static_cast<std::size_t>(g)].options.weight_decay)
      return *groups_[static_cast<std::size_t>(g)].options.weight_decay;
    return detail::weight_decay_option(opts_);
  }

  scalars_type next_scalars() const {
    scalars_type s = scalars_;
    if constexpr (detail::rule_has_scalars<Rule>) Rule::advance(opts_, s, context_for(-1));
    return s;
  }
  step_context context_for(int group) const {
    return {t_ + 1, group_lr(group), group_weight_decay(group), fresh_};
  }
  prepared_type prepare_for(int group, const scalars_type& s) const {
    return prepared_type(detail::call_prepare<Rule, T>(opts_, context_for(group), &s));
  }
  static unsigned mask_of(const prepared_type& p) {
    return std::visit([](const auto& op) { return detail::uses_mask<std::remove_cvref_t<decltype(op)>, state_count>(); },
                      p);
  }

  // One fused pass of the update functor Op and the plan over the bound tensors.
  template <class Op>
  void run(const Op&, const StepPlan<T>& plan) {
    constexpr unsigned mask = detail::uses_mask<Op, state_count>();
    constexpr std::size_t S = static_cast<std::size_t>(std::popcount(mask));
    std::array<T*, S> ptrs{};
    int m_index = -1;
    std::size_t j = 0;
    for (std::size_t k = 0; k < state_count; ++k)
      if ((mask >> k) & 1u) {
        if (static_cast<int>(k) == Rule::first_moment) m_index = static_cast<int>(j);
        ptrs[j++] = states_[k].data();
      }
    auto make = [&](std::size_t i) {
      const Op& op = std::get<Op>(prepared_[static_cast<std::size_t>(group_of(i) + 1)]);
      if constexpr (detail::is_prefix_mask<mask>) return op;
      else return detail::masked_update<Op, state_count, mask>{op};
    };
    if constexpr (detail::skip_in_device_pass<Backend>) {
      return;
    } else {
      const T sign = detail::maximize_option(opts_) ? T(-1) : T(1);
      if (clip_pass_ == clip_pass::none && sign == T(1)) {
        Backend::template fused_step<T, S>(ctx_, views(), layout_.total, ptrs, m_index, plan, make);
      } else {
        const bool clamp = clip_pass_ == clip_pass::clamp;
        const T v(clamp ? clip_.clip_value : 0);
        const T scale = clip_pass_ == clip_pass::scale ? sign * clip_coef_ : sign;
        const T* at = clip_pass_ == clip_pass::scale ? clip_at_ : nullptr;
        auto transformed = [&](std::size_t i) { return detail::transform_gradient(make(i), scale, T(-v), v, at, clamp); };
        Backend::template fused_step<T, S>(ctx_, views(), layout_.total, ptrs, m_index, plan, transformed);
      }
    }
  }

  void write_own(detail::checkpoint_writer& w) const {
    Rule::fields(opts_, detail::field_writer{w});
    if constexpr (detail::rule_has_scalars<Rule>) Rule::scalar_fields(scalars_, detail::field_writer{w});
    w.put<std::uint32_t>(fresh_);
    for (std::size_t k = 0; k < state_count; ++k) {
      w.put<std::uint8_t>(!states_[k].empty());
      if (!states_[k].empty()) detail::write_state_buffer<Backend>(w, states_[k], layout_);
    }
  }
  void read_own(detail::checkpoint_reader& r) {
    options_type o{};
    Rule::fields(o, detail::field_reader{r});
    try {
      Rule::validate(o, option_check(Rule::name));
    } catch (const invalid_option& e) {
      r.error(e.what());
    }
    opts_ = o;
    scalars_ = {};
    if constexpr (detail::rule_has_scalars<Rule>) Rule::scalar_fields(scalars_, detail::field_reader{r});
    // Invariants: a state exists only after the first step, and one that a
    // step has updated (its fresh bit clear) exists; so before the first step
    // every state is fresh. Over tensors that hold no elements at all, every
    // buffer is empty and saved as absent.
    fresh_ = r.get<std::uint32_t>("fresh states");
    if (fresh_ >> state_count) r.error(detail::concat("fresh-state flags name states ", Rule::name, " does not have"));
    const bool no_elements = initialized_ && layout_.total == 0;
    for (std::size_t k = 0; k < state_count; ++k) {
      states_[k] = {};
      if (!r.get_flag(Rule::states[k])) {
        if (!((fresh_ >> k) & 1u) && !no_elements)
          r.error(detail::concat("state '", Rule::states[k], "' is missing but marked as updated"));
        continue;
      }
      if (!initialized_)
        r.error(detail::concat("state '", Rule::states[k], "' present in a checkpoint taken before the first step"));
      if (no_elements)
        r.error(detail::concat("state '", Rule::states[k], "' is stored, but the tensors hold no elements"));
      states_[k] = detail::read_state_buffer<Backend, T>(r, layout_, Rule::states[k]);
    }
    if (initialized_ && !no_elements) {
      // Steps after the load create what the options need; what an earlier
      // step used must be there (a missing one would silently restart at zero).
      const unsigned needed = mask_of(prepare_for(-1, next_scalars())) & ~fresh_;
      for (std::size_t k = 0; k < state_count; ++k)
        if (((needed >> k) & 1u) && states_[k].empty())
          r.error(detail::concat("state '", Rule::states[k], "' is missing"));
    }
  }

  bool skip() {
    ++skipped_;
    last_skipped_ = true;
    return false;
  }

  static detail::norm_spec with_divisor(detail::norm_spec s, std::size_t workers) {
    s.divisor = static_cast<double>(workers);
    return s;
  }

  // Clipping: its mode, then max_norm, norm_type, error_if_nonfinite and
  // clip_value, with zeros in the fields the mode does not use.
  void write_clip(detail::checkpoint_writer& w) const {
    const bool norm = clip_.mode == GradClip::Mode::norm, value = clip_.mode == GradClip::Mode::value;
    w.put<std::uint8_t>(static_cast<std::uint8_t>(clip_.mode));
    w.put<double>(norm ? clip_.norm.max_norm : 0);
    w.put<double>(norm ? clip_.norm.norm_type : 0);
    w.put<std::uint8_t>(norm && clip_.norm.error_if_nonfinite);
    w.put<double>(value ? clip_.clip_value : 0);
  }
  void read_clip(detail::checkpoint_reader& r) {
    const auto mode = r.get<std::uint8_t>("clip mode");
    if (mode > static_cast<std::uint8_t>(GradClip::Mode::value))
      r.error(detail::concat("field 'clip mode' = ", unsigned(mode), " is not a clipping mode"));
    GradClip c;
    c.mode = static_cast<GradClip::Mode>(mode);
    detail::field_reader f{r};
    f("clip max_norm", c.norm.max_norm);
    f("clip norm_type", c.norm.norm_type);
    f("clip error_if_nonfinite", c.norm.error_if_nonfinite);
    f("clip clip_value", c.clip_value);
    try {
      if (c.mode == GradClip::Mode::norm) detail::validate_clip_norm(c.norm, "checkpoint");
      if (c.mode == GradClip::Mode::value) detail::validate_clip_value(c.clip_value, "checkpoint");
    } catch (const invalid_option& e) {
      r.error(e.what());
    }
    // Unused fields are written as +0.0: anything else (-0.0 included) would
    // load and then save to other bytes.
    auto set = [](double x) { return std::bit_cast<std::uint64_t>(x) != 0; };
    const bool unused_set = (c.mode != GradClip::Mode::norm &&
                             (set(c.norm.max_norm) || set(c.norm.norm_type) || c.norm.error_if_nonfinite)) ||
                            (c.mode != GradClip::Mode::value && set(c.clip_value));
    if (unused_set) r.error("clipping fields are set that the clip mode does not use");
    if (c.mode != GradClip::Mode::norm) c.norm = {};
    clip_ = c;
  }

  // Per tensor: its group, or -1.
  void map_groups(std::size_t count, std::vector<int>& map) const {
    map.assign(count, -1);
    for (std::size_t g = 0; g < groups_.size(); ++g)
      for (auto t : groups_[g].tensors) {
        if (t >= count)
          detail::fail<layout_error>("nestla: param group ", g, " names tensor ", t, ", but the parameter set has ",
                                     count, " tensors");
        map[t] = static_cast<int>(g);
      }
  }
  // A backend may validate what was bound (the CUDA backend: device
  // pointers), before anything is modified.
  void check_views(const char* who) {
    if constexpr (requires { Backend::template check_tensors<T>(ctx_, std::span<const TensorRef<T>>(views_), who); })
      Backend::template check_tensors<T>(ctx_, std::span<const TensorRef<T>>(views_), who);
  }

  options_type opts_;
  std::array<buffer, state_count> states_{};
  std::uint32_t fresh_ = state_count == 0 ? 0u : ~0u >> (32 - (state_count == 0 ? 1 : state_count));  // bit k: states_[k] never updated
  scalars_type scalars_{};
  typename Backend::context ctx_;
  std::uint64_t t_ = 0;
  Layout layout_;
  bool initialized_ = false;
  std::vector<TensorRef<T>> views_;
  std::vector<ParamGroup> groups_;
  std::vector<int> tensor_group_;  // per tensor: its group, or -1
  bool guard_ = false, last_skipped_ = false;
  std::uint64_t skipped_ = 0;
  GradClip clip_;
  double last_norm_ = std::numeric_limits<double>::quiet_NaN();
  bool last_norm_on_device_ = false;
  // Scratch between note_guard and execute: how this step's pass clips.
  enum class clip_pass : std::uint8_t { none, scale, clamp };
  clip_pass clip_pass_ = clip_pass::none;
  T clip_coef_ = T(1);
  const T* clip_at_ = nullptr;
  // Scratch between plan_step and commit_step.
  std::vector<prepared_type> prepared_;  // per group + 1 (index 0: tensors in no group)
  unsigned pending_mask_ = 0;
  scalars_type pending_scalars_{};
  std::shared_ptr<worker_group> group_;
  detail::distributed_scratch<T, Backend> dist_;
};

namespace detail {

template <class P, class T>
constexpr void check_set_type() {
  static_assert(ParameterSet<P>,
                "nestla: not a parameter set: expected a tensor (std::vector<T>, std::array<T, N>, std::span<T>, "
                "or a type with a nestla::tensor_traits specialization, e.g. from <nestla/eigen.hpp> or "
                "<nestla/xtensor.hpp>), or a range or tuple of them");
  if constexpr (ParameterSet<P>)
    static_assert(std::is_same_v<set_scalar_t<P>, T>,
                  "nestla: the parameter set's scalar type differs from the optimizer's (e.g. double tensors given "
                  "to an optimizer of float)");
}

// The one step driver for every optimizer, base or nested: bind and check the
// sets, apply the guard, create the state on the first step, plan which levels
// sync, run one fused pass, then advance the counters. A step with a level
// whose group communicates goes to the distributed driver
// (detail/distributed.hpp) instead.
template <class Top, class P, class G>
bool run_step(Top& top, P& params, G& grads) {
  if (const level_groups lg = groups_of(top); lg.any()) return run_distributed_step(top, params, grads, lg);
  auto& b = top.base();
  b.bind(params, grads);
  if (!b.note_guard()) return false;
  b.prepare_update();
  using T = typename Top::scalar_type;
  StepPlan<T> plan;
  if (!b.initialized()) {
    top.initialize_state(b.pending_layout());
    top.collect_init(plan);
  }
  const bool done = top.plan_step(plan);
  b.execute(plan);
  top.commit_step();
  return done;
}

template <class Top>
void save_checkpoint(const Top& top, std::ostream& os) {
  using T = typename Top::scalar_type;
  const auto& b = top.base();
  checkpoint_writer w;
  for (char c : checkpoint_magic) w.put<char>(c);
  w.put<std::uint32_t>(checkpoint_version);
  w.put<std::uint32_t>(byte_order_mark);
  w.put_string(Top::type_name());
  w.put<std::uint32_t>(static_cast<std::uint32_t>(Top::depth));
  w.put_string(scalar_name<T>());
  w.put<std::uint8_t>(b.initialized());
  const auto& l = b.layout();
  w.put<std::uint64_t>(l.count());
  for (auto n : l.sizes) w.put<std::uint64_t>(n);
  top.write_state(w);
  w.finish_to(os, "save");
}

// Everything before the levels' state: what the checkpoint is for, and the
// tensor sizes, checked against this optimizer. Returns the layout when the
// checkpoint was taken after the first step.
template <class Top>
std::optional<Layout> read_checkpoint_header(const Top& top, checkpoint_reader& r) {
  using T = typename Top::scalar_type;
  for (char c : checkpoint_magic)
    if (r.get<char>("magic") != c) r.error("not a nestla checkpoint (bad magic tag)");
  if (auto v = r.get<std::uint32_t>("version"); v < oldest_checkpoint_version || v > checkpoint_version)
    r.error(concat("unsupported checkpoint format version ", v, " (this build reads ", oldest_checkpoint_version,
                   " to ", checkpoint_version, ")"));
  else
    r.set_version(v);
  if (r.get<std::uint32_t>("byte order") != byte_order_mark) r.error("checkpoint written on a machine of other byte order");
  if (auto type = r.get_string("optimizer type"); type != Top::type_name())
    r.error(concat("checkpoint is for optimizer ", type, ", this optimizer is ", Top::type_name()));
  if (auto d = r.get<std::uint32_t>("depth"); d != static_cast<std::uint32_t>(Top::depth))
    r.error(concat("checkpoint has nesting depth ", d, ", this optimizer has ", Top::depth));
  if (auto s = r.get_string("scalar type"); s != scalar_name<T>())
    r.error(concat("checkpoint holds ", s, " state, this optimizer uses ", scalar_name<T>()));
  const bool init = r.get_flag("initialized");
  const auto count = r.get<std::uint64_t>("tensor count");
  if (count > max_checkpoint_tensors) r.error(concat("tensor count ", count, " is implausible (more than 2^24)"));
  // The state, and with it the layout, is created by the first step.
  if (!init && count != 0) r.error(concat("a checkpoint taken before the first step declares ", count, " tensors"));
  std::vector<std::size_t> sizes;
  for (std::uint64_t i = 0; i < count; ++i) sizes.push_back(r.get<std::uint64_t>("tensor size"));
  const auto& cur = top.base().layout();
  if (top.base().initialized()) {
    if (!init) r.error("checkpoint was saved before the first step, this optimizer has already stepped");
    if (sizes.size() != cur.count())
      r.error(concat("checkpoint has ", sizes.size(), " tensors, this optimizer's state has ", cur.count()));
    for (std::size_t i = 0; i < sizes.size(); ++i)
      if (sizes[i] != cur.sizes[i])
        r.error(concat("tensor ", i, " has ", sizes[i], " elements in the checkpoint, ", cur.sizes[i], " here"));
  }
  if (!init) return std::nullopt;
  try {
    return Layout::of<T>(sizes);
  } catch (const std::length_error&) {
    r.error(concat("field 'tensor size': the ", count, " tensors of ", scalar_name<T>(),
                   " need more memory than one allocation can hold"));
  }
}

// Parses into a copy and commits only when the whole checkpoint was read and
// its checksum matched: a bad checkpoint leaves the optimizer exactly as it
// was. Nothing is allocated for a size before the stream has delivered the
// bytes it declares; running out of memory is a checkpoint_error too.
template <class Top>
void load_checkpoint(Top& top, std::istream& is, std::uint64_t max_bytes) {
  checkpoint_reader r(is, "load", max_bytes);
  std::optional<Layout> l;
  try {
    l = read_checkpoint_header(top, r);
  } catch (const std::bad_alloc&) {
    r.error(concat("not enough memory to read field '", r.field(), "'"));
  }
  std::optional<Top> staged;
  try {
    staged.emplace(top);
  } catch (const std::bad_alloc&) {
    r.error("not enough memory for a copy of the optimizer to load into");
  }
  try {
    staged->read_state(r, l);
    r.finish();
  } catch (const std::bad_alloc&) {
    r.error(concat("not enough memory to read field '", r.field(), "'"));
  }
  top = std::move(*staged);
}

}  // namespace detail

template <class Rule, class T, class Backend>
template <class P>
void BaseOptimizer<Rule, T, Backend>::bind_params(P& params, const char* who) {
  detail::check_set_type<P, T>();
  views_.clear();
  for_each_tensor(params, [&](auto& tensor) {
    using Tr = tensor_traits<std::remove_cvref_t<decltype(tensor)>>;
    auto* data = Tr::data(tensor);
    static_assert(!std::is_const_v<std::remove_pointer_t<decltype(data)>>,
                  "nestla: the parameters must be writable (a const container or std::span<const T> was given)");
    views_.push_back(TensorRef<T>{data, nullptr, static_cast<std::size_t>(Tr::size(tensor)), 0});
  });
  if (initialized_) {
    if (views_.size() != layout_.count())
      detail::fail<layout_error>("nestla: ", who, ": the parameter set has ", views_.size(),
                                 " tensors, the optimizer's state was created for ", layout_.count());
    for (std::size_t i = 0; i < views_.size(); ++i) {
      if (views_[i].size != layout_.sizes[i])
        detail::fail<layout_error>("nestla: ", who, ": parameter tensor ", i, " has ", views_[i].size,
                                   " elements, the optimizer's state was created for ", layout_.sizes[i]);
      views_[i].offset = layout_.offsets[i];
    }
  }
  check_views(who);
}

template <class Rule, class T, class Backend>
template <class P, class G>
void BaseOptimizer<Rule, T, Backend>::bind(P& params, G& grads) {
  detail::check_set_type<G, T>();
  bind_params(params, "step");
  std::size_t i = 0;
  for_each_tensor(grads, [&](auto& tensor) {
    using Tr = tensor_traits<std::remove_cvref_t<decltype(tensor)>>;
    const std::size_t n = Tr::size(tensor);
    if (i < views_.size()) {
      if (n != views_[i].size)
        detail::fail<layout_error>("nestla: step: gradient tensor ", i, " has ", n, " elements, parameter tensor ", i,
                                   " has ", views_[i].size);
      views_[i].grad = Tr::data(tensor);
    }
    ++i;
  });
  if (i != views_.size())
    detail::fail<layout_error>("nestla: step: ", i, " gradient tensors for ", views_.size(), " parameter tensors");
  if (!initialized_) {
    // Offsets of the layout the first step is about to create.
    const Layout l = pending_layout();
    for (std::size_t k = 0; k < views_.size(); ++k) views_[k].offset = l.offsets[k];
  }
  check_views("step");
}

}  // namespace nestla
