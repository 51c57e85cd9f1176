// Seeded random numbers whose sequences are the same on every compiler and standard library.
#pragma once

// std::mt19937_64's output is fixed by the standard, but std::uniform_*_distribution,
// std::normal_distribution and std::shuffle are not: libstdc++ and libc++ give different
// values. Data generation, shuffling and augmentation build on the raw engine only, so a
// (seed, epoch) pair means the same batches everywhere.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <random>

namespace resnet18 {

// SplitMix64 finalizer: turns related inputs (seed, epoch, index) into unrelated seeds.
[[nodiscard]] constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

[[nodiscard]] constexpr std::uint64_t mix64(std::uint64_t a, std::uint64_t b) noexcept {
  return mix64(mix64(a) ^ (b + 0x632be59bd9b4e019ULL));
}

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : engine_(mix64(seed)) {}

  std::uint64_t next() { return engine_(); }

  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

  // Uniform integer in [0, n), n > 0, without modulo bias: values below 2^64 mod n are
  // redrawn, so the rest is a whole number of periods of n.
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t threshold = (0 - n) % n;
    std::uint64_t r = engine_();
    while (r < threshold) r = engine_();
    return r % n;
  }

  // Standard normal (Box-Muller; the second value is dropped to keep the state simple).
  double normal() {
    const double u1 = 1.0 - uniform();  // (0, 1]: log stays finite
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

  // Fisher-Yates.
  template <class T>
  void shuffle(T* first, std::size_t n) {
    for (std::size_t i = n; i > 1; --i) {
      const std::size_t j = static_cast<std::size_t>(below(i));
      T tmp = first[i - 1];
      first[i - 1] = first[j];
      first[j] = tmp;
    }
  }

 private:
  std::mt19937_64 engine_;
};

}  // namespace resnet18
