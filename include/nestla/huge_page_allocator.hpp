// An allocator for the parameters and gradients you own: cache-line aligned,
// and on huge pages (Linux, 2 MiB and more) like nestla's own state.
//
//   std::vector<float, nestla::huge_page_allocator<float>> weights(n);
//
// With transparent huge pages in "madvise" mode (Debian's default), a plain
// std::vector of an 11M-float tensor sits on 4 KiB pages, and an Adam step
// over it ran 1 to 8 points of the memory roofline slower than over
// huge-page memory (benchmarks/RESULTS.md, "Page size"). glibc's
// GLIBC_TUNABLES=glibc.malloc.hugetlb=1 does the same for a whole process.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

#include "nestla/detail/host_buffer.hpp"

namespace nestla {

template <class T>
struct huge_page_allocator {
  using value_type = T;

  huge_page_allocator() noexcept = default;
  template <class U>
  huge_page_allocator(const huge_page_allocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    std::size_t bytes = 0;
    if (!detail::object_bytes<T>(n == 0 ? 1 : n, bytes)) throw std::bad_array_new_length();
    return static_cast<T*>(detail::allocate_host_bytes(bytes));
  }
  void deallocate(T* p, std::size_t) noexcept { std::free(p); }

  template <class U>
  bool operator==(const huge_page_allocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace nestla
