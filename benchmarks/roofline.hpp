// STREAM-style memory roofline loops (copy; Adam-shaped 4 reads / 3 writes), split across threads as nestla's host backend splits a step.
#pragma once

#include <cstddef>

#include <nestla/detail/thread_pool.hpp>

namespace bench {

// b[i] = a[i] over n floats. Counted as 8 bytes per element (STREAM's convention).
void roofline_copy(nestla::detail::pool_handle& pool, float* b, const float* a, std::size_t n);

// Reads p, g, m, v and writes p, m, v: the traffic of an Adam step (28 bytes
// per float) with a few multiply-adds and neither sqrt nor division.
void roofline_adam_shaped(nestla::detail::pool_handle& pool, float* p, const float* g, float* m, float* v,
                          std::size_t n);

}  // namespace bench
