// The update-rule policy: what defines a base optimizer, and the concept that checks a rule's shape.
//
// nestla::BaseOptimizer<Rule, T, Backend> turns a rule into an optimizer that
// binds parameter sets, owns the state buffers, nests under Lookahead, fuses
// the syncs into its pass, runs on worker threads and on the CUDA backend,
// supports parameter groups, guards non-finite gradients and checkpoints. The
// rule says only what is particular to one optimizer:
//
//   struct MyRule {
//     struct options { double lr = 1e-3; ... };   // an aggregate, PyTorch's names; `lr` is
//                                                 // required, a `weight_decay` enables it in groups
//     static constexpr const char* name = "Lion"; // checkpoints and error messages
//     static void validate(const options& o, const nestla::option_check& check) {
//       check(o.lr >= 0, "lr", o.lr, "must be >= 0");  ...
//     }
//     static void fields(auto& o, auto&& f) { f("lr", o.lr); ... }   // every option, for checkpoints
//     static constexpr std::array<const char*, 1> states{"exp_avg"}; // per-element buffers, zero at first
//     static constexpr int first_moment = 0;      // the state the momentum policies act on, or -1
//     template <class T> struct update { ... };   // the per-element update, below
//     template <class T>
//     static update<T> prepare(const options& o, const nestla::step_context& c);  // on the host
//   };
//
// prepare runs on the host once per step and parameter group: bias
// corrections, step sizes, the group's lr and weight decay (c.lr,
// c.weight_decay) go into the functor, which must be trivially copyable (it
// travels to the GPU as bytes). It may return a std::variant of functor types
// to pick a compiled variant of the loop per step (Adam with and without
// AMSGrad, SGD's first momentum step); every group of one step must pick the
// same alternative. The functor:
//
//   template <class T> struct update {
//     T lr, ...;                                   // what prepare computed, in T
//     static constexpr unsigned uses = 0b01;       // optional: bit k set = reads and writes
//                                                  // states[k] (default: all; unused ones are
//                                                  // neither allocated nor moved)
//     template <class V>
//     NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const { ... }
//   };
//
// V is a scalar or a vector of T (see nestla/ops.hpp for the operations it
// has); p is the parameter, g its gradient, s[k] the element of states[k].
// Write constants as V(x) and use nestla::ops for everything beyond + - * /.
// NESTLA_HOST_DEVICE makes the functor usable in CUDA kernels.
//
// A rule that keeps host-side scalars across steps (NAdam's running product
// of momentum coefficients) also declares
//
//     struct scalars { double mu_product = 1; };
//     static void scalar_fields(auto& s, auto&& f) { f("mu_product", s.mu_product); }
//     static void advance(const options&, scalars&, const nestla::step_context&);  // once per step
//
// and then receives them in prepare(o, c, s), after advance.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <variant>

#include "nestla/error.hpp"
#include "nestla/ops.hpp"

namespace nestla {

// What prepare and advance know about the step being taken.
struct step_context {
  std::uint64_t t = 1;      // the step being taken, counted from 1
  double lr = 0;            // this parameter group's learning rate
  double weight_decay = 0;  // this group's weight decay (0 when the rule has none)
  std::uint32_t fresh = 0;  // bit k: states[k] has never been updated (zero, just created)

  constexpr bool is_fresh(std::size_t k) const noexcept { return (fresh >> k) & 1u; }
};

namespace detail {
inline void check_option(bool ok, const char* who, const char* name, double value, const char* rule) {
  if (!ok) fail<invalid_option>("nestla: ", who, ": ", name, " = ", value, " is invalid (", rule, ")");
}
}  // namespace detail

// Passed to a rule's validate: check(ok, name, value, rule) throws
// nestla::invalid_option naming the optimizer, the option and its value.
class option_check {
 public:
  explicit constexpr option_check(const char* who) noexcept : who_(who) {}
  void operator()(bool ok, const char* name, double value, const char* rule) const {
    detail::check_option(ok, who_, name, value, rule);
  }
  const char* who() const noexcept { return who_; }

 private:
  const char* who_;
};

namespace detail {

// A field visitor with the shape the library passes to fields().
struct field_archetype {
  template <class V>
  void operator()(const char*, V&) const {}
};

template <class R>
concept rule_has_options = requires(typename R::options o) {
  { o.lr } -> std::convertible_to<double>;
} && std::is_aggregate_v<typename R::options> && std::is_default_constructible_v<typename R::options>;

template <class R>
concept rule_has_name = requires {
  { R::name } -> std::convertible_to<std::string_view>;
};

template <class T>
struct is_name_array : std::false_type {};
template <std::size_t N>
struct is_name_array<std::array<const char*, N>> : std::true_type {};

template <class R>
concept rule_has_states = is_name_array<std::remove_cvref_t<decltype(R::states)>>::value && R::states.size() <= 16;

template <class R>
concept rule_has_first_moment = requires {
  { R::first_moment } -> std::convertible_to<int>;
} && rule_has_states<R> && (R::first_moment >= -1) && (R::first_moment < static_cast<int>(R::states.size()));

template <class R>
concept rule_has_validate = requires(const typename R::options& o, const option_check& c) { R::validate(o, c); };

template <class R>
concept rule_has_fields = requires(typename R::options& o, const typename R::options& co) {
  R::fields(o, field_archetype{});
  R::fields(co, field_archetype{});
};

template <class R>
concept rule_has_scalars = requires { typename R::scalars; };

template <class R>
concept rule_scalars_ok = !rule_has_scalars<R> || requires(typename R::scalars& s, const typename R::scalars& cs,
                                                           const typename R::options& o, const step_context& c) {
  R::scalar_fields(s, field_archetype{});
  R::scalar_fields(cs, field_archetype{});
  R::advance(o, s, c);
};

// prepare with or without the rule's scalars (return types spelled out, so
// that a rule without prepare fails the concept instead of erroring here).
template <class R, class T>
auto call_prepare(const typename R::options& o, const step_context& c, const typename R::scalars* s)
    -> decltype(R::template prepare<T>(o, c, *s)) {
  return R::template prepare<T>(o, c, *s);
}
template <class R, class T>
auto call_prepare(const typename R::options& o, const step_context& c, const void*)
    -> decltype(R::template prepare<T>(o, c)) {
  return R::template prepare<T>(o, c);
}

template <class R>
struct rule_scalars {
  using type = std::monostate;
};
template <class R>
  requires rule_has_scalars<R>
struct rule_scalars<R> {
  using type = typename R::scalars;
};
template <class R>
using rule_scalars_t = typename rule_scalars<R>::type;

template <class R, class T>
concept rule_has_prepare = requires(const typename R::options& o, const step_context& c,
                                    const rule_scalars_t<R>* s) { call_prepare<R, T>(o, c, s); };

}  // namespace detail

// The shape every update rule has (see the top of this header). BaseOptimizer
// checks each part with its own message; this is for your own static_asserts.
template <class R>
concept UpdateRule = detail::rule_has_options<R> && detail::rule_has_name<R> && detail::rule_has_states<R> &&
                     detail::rule_has_first_moment<R> && detail::rule_has_validate<R> && detail::rule_has_fields<R> &&
                     detail::rule_scalars_ok<R> && detail::rule_has_prepare<R, float> &&
                     detail::rule_has_prepare<R, double>;

}  // namespace nestla
