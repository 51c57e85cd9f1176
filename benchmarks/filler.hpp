// The benchmarks' deterministic tensor values: normal floats that keep the optimizers' state clear of denormals.
#pragma once

#include <cstdint>

namespace bench {

// Denormals would cost microcode assists and measure something else.
struct filler {
  std::uint64_t s = 0x9E3779B97F4A7C15ull;
  float next(float lo, float hi) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const float u = static_cast<float>(s >> 40) / static_cast<float>(1 << 24);
    const float x = lo + (hi - lo) * u;
    return (s >> 20) & 1 ? x : -x;
  }
};

}  // namespace bench
