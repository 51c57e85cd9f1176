// How nestla sees a tensor: contiguous storage of floating-point scalars, one trait per container kind.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

namespace nestla {

// Specialize this for a container kind to make it usable as a tensor. A
// specialization provides
//   using value_type = float or double;            (the scalar, without const)
//   static auto* data(C& c);                       (value_type* or const value_type*)
//   static std::size_t size(const C& c);           (number of scalars, contiguous)
// and may throw from data() when a runtime check (a strided view) fails.
// The primary template is deliberately empty: a type without a specialization
// is not a tensor, and the concept below reports it.
template <class C, class Enable = void>
struct tensor_traits {};

template <class C>
using tensor_value_t = typename tensor_traits<std::remove_cvref_t<C>>::value_type;

// A container the traits know, whose scalar is float or double.
template <class C>
concept Tensor = requires(std::remove_cvref_t<C>& c) {
  typename tensor_traits<std::remove_cvref_t<C>>::value_type;
  { tensor_traits<std::remove_cvref_t<C>>::size(c) } -> std::convertible_to<std::size_t>;
  tensor_traits<std::remove_cvref_t<C>>::data(c);
} && std::floating_point<tensor_value_t<C>>;

// --- standard containers --------------------------------------------------

template <std::floating_point T, class Alloc>
struct tensor_traits<std::vector<T, Alloc>> {
  using value_type = T;
  static T* data(std::vector<T, Alloc>& c) { return c.data(); }
  static const T* data(const std::vector<T, Alloc>& c) { return c.data(); }
  static std::size_t size(const std::vector<T, Alloc>& c) { return c.size(); }
};

template <std::floating_point T, std::size_t N>
struct tensor_traits<std::array<T, N>> {
  using value_type = T;
  static T* data(std::array<T, N>& c) { return c.data(); }
  static const T* data(const std::array<T, N>& c) { return c.data(); }
  static std::size_t size(const std::array<T, N>&) { return N; }
};

// std::span<float> is writable, std::span<const float> is read-only (gradients).
template <class T, std::size_t E>
  requires std::floating_point<std::remove_const_t<T>>
struct tensor_traits<std::span<T, E>> {
  using value_type = std::remove_const_t<T>;
  static T* data(const std::span<T, E>& c) { return c.data(); }
  static std::size_t size(const std::span<T, E>& c) { return c.size(); }
};

}  // namespace nestla
