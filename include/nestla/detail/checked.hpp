// Size arithmetic that reports overflow instead of wrapping: every combination of sizes (layouts, byte counts, allocator rounding, checkpoint bounds) goes through it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace nestla::detail {

// Sizes come from users' tensors and from checkpoint files; a file can declare
// any 64-bit value, so a wrapped product would turn a huge request into a tiny
// allocation that the following copy overruns. These tests never wrap.
inline constexpr std::size_t size_max = std::numeric_limits<std::size_t>::max();
// The largest object the language lets one allocation hold (pointer differences must fit).
inline constexpr std::size_t max_object_bytes = static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max());

constexpr bool add_overflows(std::size_t a, std::size_t b) noexcept { return a > size_max - b; }
constexpr bool mul_overflows(std::size_t a, std::size_t b) noexcept { return b != 0 && a > size_max / b; }
// n rounded up to a multiple of m (m > 0).
constexpr bool round_up_overflows(std::size_t n, std::size_t m) noexcept { return add_overflows(n, m - 1); }
constexpr std::size_t round_up_unchecked(std::size_t n, std::size_t m) noexcept { return (n + m - 1) / m * m; }

// Throwing forms, for callers without an error of their own to report:
// std::length_error naming what was being computed.
inline std::size_t checked_add(std::size_t a, std::size_t b, const char* what) {
  if (add_overflows(a, b)) throw std::length_error(std::string("nestla: size overflow in ") + what);
  return a + b;
}
inline std::size_t checked_mul(std::size_t a, std::size_t b, const char* what) {
  if (mul_overflows(a, b)) throw std::length_error(std::string("nestla: size overflow in ") + what);
  return a * b;
}
inline std::size_t checked_round_up(std::size_t n, std::size_t m, const char* what) {
  if (round_up_overflows(n, m)) throw std::length_error(std::string("nestla: size overflow in ") + what);
  return round_up_unchecked(n, m);
}

// Bytes of n values of T, when one allocation can hold them (else 0 and false).
template <class T>
constexpr bool object_bytes(std::size_t n, std::size_t& bytes) noexcept {
  if (n > max_object_bytes / sizeof(T)) return false;
  bytes = n * sizeof(T);
  return true;
}

}  // namespace nestla::detail
