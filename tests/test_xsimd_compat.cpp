// The xsimd compatibility layer: the headers are the xsimd CMake found, and reduce_add sums every lane.
#include <doctest/doctest.h>

#include <nestla/detail/xsimd_compat.hpp>
#include <nestla/nestla.hpp>

#include <cmath>
#include <limits>
#include <vector>

#ifdef NESTLA_TEST_XSIMD_MAJOR
static_assert(XSIMD_VERSION_MAJOR == NESTLA_TEST_XSIMD_MAJOR,
              "the xsimd headers in use are not the version CMake found (include order)");
#endif

TEST_CASE_TEMPLATE("reduce_add sums every lane of a batch", T, float, double) {
  using B = xsimd::batch<T>;
  constexpr std::size_t W = B::size;
  alignas(64) T lanes[W];
  T want = 0;
  for (std::size_t i = 0; i < W; ++i) want += lanes[i] = static_cast<T>(1u << i);  // distinct bits: each lane counts
  CHECK(nestla::detail::reduce_add(B::load_unaligned(lanes)) == want);
  for (std::size_t i = 0; i < W; ++i) {
    lanes[i] = std::numeric_limits<T>::quiet_NaN();
    CHECK(std::isnan(nestla::detail::reduce_add(B::load_unaligned(lanes))));
    lanes[i] = static_cast<T>(1u << i);
  }
}

TEST_CASE_TEMPLATE("the non-finite guard sees a NaN or infinity in any lane and in the tail", T, float, double) {
  const std::size_t n = 2 * xsimd::batch<T>::size + 3;
  for (std::size_t at = 0; at < n; ++at) {
    CAPTURE(at);
    nestla::SGD<T> opt({.lr = 0.1});
    opt.set_skip_nonfinite(true);
    std::vector<T> w(n, T(1)), g(n, T(0.5));
    g[at] = at % 2 ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::quiet_NaN();
    CHECK_FALSE(opt.step(w, g));
    CHECK(w == std::vector<T>(n, T(1)));
    g[at] = T(0.5);
    CHECK(opt.step(w, g));
  }
}
