// Parameter sets: one tensor, or a range or tuple of parameter sets, visited tensor by tensor in order.
#pragma once

#include <cstddef>
#include <functional>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>

#include "nestla/tensor_traits.hpp"

namespace nestla {
namespace detail {

template <class T>
struct is_reference_wrapper : std::false_type {};
template <class T>
struct is_reference_wrapper<std::reference_wrapper<T>> : std::true_type {};

template <class T>
concept tuple_like = requires { std::tuple_size<T>::value; };

// Which scalar a parameter set holds; void when it is not a parameter set,
// and a distinct marker when it mixes scalars.
struct mixed_scalars {};

template <class P>
constexpr auto set_scalar() {
  using Q = std::remove_cvref_t<P>;
  if constexpr (Tensor<Q>) {
    return std::type_identity<tensor_value_t<Q>>{};
  } else if constexpr (is_reference_wrapper<Q>::value) {
    return set_scalar<typename Q::type>();
  } else if constexpr (tuple_like<Q>) {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      if constexpr (sizeof...(I) == 0) {
        return std::type_identity<void>{};
      } else {
        using First = typename decltype(set_scalar<std::tuple_element_t<0, Q>>())::type;
        constexpr bool same =
            (std::is_same_v<First, typename decltype(set_scalar<std::tuple_element_t<I, Q>>())::type> && ...);
        if constexpr (same) return std::type_identity<First>{};
        else return std::type_identity<mixed_scalars>{};
      }
    }(std::make_index_sequence<std::tuple_size_v<Q>>{});
  } else if constexpr (std::ranges::range<Q>) {
    return set_scalar<std::ranges::range_value_t<Q>>();
  } else {
    return std::type_identity<void>{};
  }
}

}  // namespace detail

// The scalar type of a parameter set (void: not a parameter set).
template <class P>
using set_scalar_t = typename decltype(detail::set_scalar<P>())::type;

// A tensor, a std::reference_wrapper to one, a range of parameter sets
// (std::vector<X>, std::array<X, N>, std::span<X>) or a tuple of them
// (std::tuple, std::tie, std::pair), all holding the same scalar type.
template <class P>
concept ParameterSet = std::floating_point<set_scalar_t<P>>;

// Calls f(tensor) for every tensor of the set, in order (depth first).
template <class P, class F>
constexpr void for_each_tensor(P&& set, F&& f) {
  using Q = std::remove_cvref_t<P>;
  if constexpr (Tensor<Q>) {
    f(set);
  } else if constexpr (detail::is_reference_wrapper<Q>::value) {
    for_each_tensor(set.get(), f);
  } else if constexpr (detail::tuple_like<Q>) {
    std::apply([&](auto&&... parts) { (for_each_tensor(parts, f), ...); }, set);
  } else {
    for (auto&& part : set) for_each_tensor(part, f);
  }
}

}  // namespace nestla
