// A base optimizer from an update rule (rule.hpp): binding a parameter set, state, parameter groups, the step driver, checkpoints.
#pragma once

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <istream>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <type_traits>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

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
// Version 2: base optimizers as update rules. Version 3 added each Lookahead
// level's outer momentum; version 2 files load as levels without it.
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
template <class Backend, class T>
typename Backend::template buffer<T> read_state_buffer(checkpoint_reader& r, const Layout& l, const char* field) {
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

// The rule's functor on a scaled gradient, g * scale: -1 for maximize (torch
// negates the gradient before everything else; times -1 is exact). Only steps
// that need it run it, so the plain path keeps its code and speed.
template <class Op, class T>
struct scaled_gradient {
  Op op;
  T scale;

  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    op(p, g * V(scale), s);
  }
};

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
      const auto b = r.get<std::uint8_t>(name);
      if (b > 1) r.error(concat("field '", name, "' is a flag, but holds ", unsigned(b)));
      v = b != 0;
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
void load_checkpoint(Top& top, std::istream& is);

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

  explicit BaseOptimizer(options_type options = {}) : opts_(validated(options)) {}

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
  // entirely (no state, counter or parameter changes) and counted.
  void set_skip_nonfinite(bool on) noexcept { guard_ = on; }
  bool skip_nonfinite() const noexcept { return guard_; }
  std::uint64_t skipped_steps() const noexcept { return skipped_; }
  bool last_step_skipped() const noexcept { return last_skipped_; }

  // Steps taken (t in the update rules); skipped steps are not counted.
  std::uint64_t step_count() const noexcept { return t_; }
  bool initialized() const noexcept { return initialized_; }
  const Layout& layout() const noexcept { return layout_; }

  void save(std::ostream& os) const { detail::save_checkpoint(*this, os); }
  void load(std::istream& is) { detail::load_checkpoint(*this, is); }

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
  bool note_guard() {
    last_skipped_ = false;
    if (guard_ && !Backend::template all_finite<T>(ctx_, views_)) {
      ++skipped_;
      last_skipped_ = true;
      return false;
    }
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
  }
  void read_state(detail::checkpoint_reader& r, const std::optional<Layout>& l) {
    t_ = r.get<std::uint64_t>("step count");
    skipped_ = r.get<std::uint64_t>("skipped steps");
    const auto ngroups = r.get<std::uint64_t>("group count");
    if (ngroups > (std::uint64_t(1) << 20)) r.error("implausible group count");
    groups_.clear();
    for (std::uint64_t g = 0; g < ngroups; ++g) {
      ParamGroup pg;
      const auto n = r.get<std::uint64_t>("group size");
      if (n > (std::uint64_t(1) << 24)) r.error("implausible group size");
      for (std::uint64_t i = 0; i < n; ++i) pg.tensors.push_back(r.get<std::uint64_t>("group tensor"));
      if (r.get<std::uint8_t>("group lr flag")) pg.options.lr = r.get<double>("group lr");
      else r.get<double>("group lr");
      if (r.get<std::uint8_t>("group weight_decay flag")) pg.options.weight_decay = r.get<double>("group weight_decay");
      else r.get<double>("group weight_decay");
      try {
        validate_group(pg.options);
      } catch (const invalid_option& e) {
        r.error(e.what());
      }
      groups_.push_back(std::move(pg));
    }
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
    } else if (detail::maximize_option(opts_)) {
      auto scaled = [&](std::size_t i) { return detail::scaled_gradient<decltype(make(i)), T>{make(i), T(-1)}; };
      Backend::template fused_step<T, S>(ctx_, views(), layout_.total, ptrs, m_index, plan, scaled);
    } else {
      Backend::template fused_step<T, S>(ctx_, views(), layout_.total, ptrs, m_index, plan, make);
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
    fresh_ = r.get<std::uint32_t>("fresh states");
    if (fresh_ >> state_count) r.error(detail::concat("fresh-state flags name states ", Rule::name, " does not have"));
    for (std::size_t k = 0; k < state_count; ++k) {
      states_[k] = {};
      if (!r.get<std::uint8_t>(Rule::states[k])) {
        if (!((fresh_ >> k) & 1u))
          r.error(detail::concat("state '", Rule::states[k], "' is missing but marked as updated"));
        continue;
      }
      if (!initialized_)
        r.error(detail::concat("state '", Rule::states[k], "' present in a checkpoint taken before the first step"));
      states_[k] = detail::read_state_buffer<Backend, T>(r, layout_, Rule::states[k]);
    }
    if (initialized_) {
      // Steps after the load create what the options need; what an earlier
      // step used must be there (a missing one would silently restart at zero).
      const unsigned needed = mask_of(prepare_for(-1, next_scalars())) & ~fresh_;
      for (std::size_t k = 0; k < state_count; ++k)
        if (((needed >> k) & 1u) && states_[k].empty())
          r.error(detail::concat("state '", Rule::states[k], "' is missing"));
    }
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
  std::uint32_t fresh_ = state_count == 0 ? 0u : ~0u >> (32 - state_count);  // bit k: states_[k] never updated
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

// Parses into a copy and commits only when the whole checkpoint was read: a
// bad checkpoint leaves the optimizer exactly as it was.
template <class Top>
void load_checkpoint(Top& top, std::istream& is) {
  using T = typename Top::scalar_type;
  checkpoint_reader r(is, "load");
  for (char c : checkpoint_magic)
    if (r.get<char>("magic") != c) r.error("not a nestla checkpoint (bad magic tag)");
  if (!r.checksum_ok()) r.error("checksum mismatch: the checkpoint is damaged");
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
  const bool init = r.get<std::uint8_t>("initialized") != 0;
  const auto count = r.get<std::uint64_t>("tensor count");
  if (count > (std::uint64_t(1) << 24)) r.error("implausible tensor count");
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
  std::optional<Layout> l;
  if (init) l = Layout::of<T>(sizes);
  Top staged(top);
  staged.read_state(r, l);
  if (!r.at_end()) r.error("trailing data after the optimizer state");
  top = std::move(staged);
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
