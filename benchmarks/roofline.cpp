// The roofline loops. This file is built with -O3 -march=native in every flavour, so the roofline is the machine's, not the flags'.
#include "roofline.hpp"

#include <algorithm>

namespace bench {
namespace {

// Part k of `parts` of [0, n), on cache-line (16-float) boundaries: the same
// split as nestla::host::fused_step, so both sides run with equal threading.
template <class F>
void split(nestla::detail::pool_handle& pool, std::size_t n, F&& body) {
  constexpr std::size_t pad = 16;
  auto part = [&](unsigned k, unsigned parts) {
    const std::size_t chunk = (n + parts - 1) / parts;
    const std::size_t lo = std::min(n, (chunk * k + pad - 1) / pad * pad);
    const std::size_t hi = k + 1 == parts ? n : std::min(n, (chunk * (k + 1) + pad - 1) / pad * pad);
    if (lo < hi) body(lo, hi);
  };
  pool.run(part);
}

}  // namespace

void roofline_copy(nestla::detail::pool_handle& pool, float* __restrict b, const float* __restrict a, std::size_t n) {
  split(pool, n, [=](std::size_t lo, std::size_t hi) {
    // Built with -fno-tree-loop-distribute-patterns: a memcpy call here could
    // switch to non-temporal stores and measure something else than STREAM does.
    for (std::size_t i = lo; i < hi; ++i) b[i] = a[i];
  });
}

void roofline_adam_shaped(nestla::detail::pool_handle& pool, float* __restrict p, const float* __restrict g,
                          float* __restrict m, float* __restrict v, std::size_t n) {
  split(pool, n, [=](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) {
      const float gi = g[i];
      const float mi = 0.9f * m[i] + 0.1f * gi;
      const float vi = 0.999f * v[i] + 0.001f * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] - 1e-3f * mi - 1e-3f * vi;
    }
  });
}

}  // namespace bench
