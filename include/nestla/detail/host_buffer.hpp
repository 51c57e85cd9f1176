// Zero-initialized, 64-byte aligned host storage for optimizer state; large buffers ask for huge pages.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "nestla/detail/checked.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace nestla::detail {

// Page faults cost about 11.5 us per 4 KiB page on the target machines, and
// streams on 4 KiB pages pay TLB misses that huge pages avoid (an Adam step
// lost up to 8 points of the memory roofline: benchmarks/RESULTS.md). So
// blocks of 2 MiB and more are aligned to 2 MiB and advised as huge pages
// before their first touch; smaller ones are aligned to a cache line.
// Release with std::free.
// Throws std::bad_alloc, also for requests no allocation can hold (the
// rounding would wrap them to a small block).
inline void* allocate_host_bytes(std::size_t bytes) {
  constexpr std::size_t huge = std::size_t(2) << 20;
  const std::size_t align = bytes >= huge ? huge : 64;
  if (bytes > max_object_bytes || round_up_overflows(bytes, align)) throw std::bad_alloc();
  const std::size_t rounded = round_up_unchecked(bytes, align);
  void* p = std::aligned_alloc(align, rounded);
  if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == huge) ::madvise(p, rounded, MADV_HUGEPAGE);
#endif
  return p;
}

template <class T>
class host_buffer {
 public:
  host_buffer() = default;
  explicit host_buffer(std::size_t n) : data_(allocate(n)), size_(n) {}
  host_buffer(const host_buffer& o) : data_(allocate(o.size_)), size_(o.size_) {
    if (size_) std::memcpy(data_, o.data_, size_ * sizeof(T));
  }
  host_buffer(host_buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  host_buffer& operator=(host_buffer o) noexcept {
    swap(o);
    return *this;
  }
  ~host_buffer() { std::free(data_); }

  void swap(host_buffer& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
  }
  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

 private:
  static T* allocate(std::size_t n) {
    if (n == 0) return nullptr;
    std::size_t bytes = 0;
    if (!object_bytes<T>(n, bytes)) throw std::bad_array_new_length();
    void* p = allocate_host_bytes(bytes);
    std::memset(p, 0, bytes);
    return static_cast<T*>(p);
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace nestla::detail
