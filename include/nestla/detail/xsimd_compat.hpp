// What differs between the xsimd releases nestla supports (8.1 to 14): one name for each such operation.
#pragma once

#include <xsimd/xsimd.hpp>

#ifndef XSIMD_VERSION_MAJOR
#error "nestla: xsimd/xsimd.hpp did not define XSIMD_VERSION_MAJOR (nestla needs xsimd 8 or later)"
#endif
#if XSIMD_VERSION_MAJOR < 8
#error "nestla: needs xsimd 8 or later"
#endif

namespace nestla::detail {

// The sum of a batch's lanes: xsimd 9 renamed hadd to reduce_add (and removed hadd).
template <class B>
auto reduce_add(const B& x) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(x);
#else
  return xsimd::hadd(x);
#endif
}

}  // namespace nestla::detail
