// Device memory as nestla tensors: a pointer-and-size view over the user's own allocations, and nestla's owning buffer.
#pragma once

#include <concepts>
#include <cstddef>
#include <type_traits>

#include "nestla/cuda/device_buffer.hpp"
#include "nestla/tensor_traits.hpp"

namespace nestla::cuda {

// size elements of T at data, in device memory (cudaMalloc, cudaMallocAsync,
// managed memory, or a slice of one). device_span<const T> is read-only and
// serves for gradients. A view owns nothing; the memory must outlive each step.
template <class T>
class device_span {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;

  constexpr device_span() noexcept = default;
  constexpr device_span(T* data, std::size_t size) noexcept : data_(data), size_(size) {}
  // device_span<float> converts to device_span<const float>.
  template <class U>
    requires(!std::is_same_v<U, T> && std::is_convertible_v<U (*)[], T (*)[]>)
  constexpr device_span(const device_span<U>& o) noexcept : data_(o.data()), size_(o.size()) {}
  template <class U>
    requires std::is_convertible_v<U (*)[], T (*)[]>
  device_span(device_buffer<U>& b) noexcept : data_(b.data()), size_(b.size()) {}
  template <class U>
    requires std::is_convertible_v<const U (*)[], T (*)[]>
  device_span(const device_buffer<U>& b) noexcept : data_(b.data()), size_(b.size()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr std::size_t size() const noexcept { return size_; }
  constexpr bool empty() const noexcept { return size_ == 0; }
  // Elements [offset, offset + count) of this view.
  constexpr device_span subspan(std::size_t offset, std::size_t count) const noexcept {
    return device_span(data_ + offset, count);
  }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

template <class T>
device_span(T*, std::size_t) -> device_span<T>;

}  // namespace nestla::cuda

namespace nestla {

template <class T>
  requires std::floating_point<std::remove_const_t<T>>
struct tensor_traits<cuda::device_span<T>> {
  using value_type = std::remove_const_t<T>;
  static T* data(const cuda::device_span<T>& s) { return s.data(); }
  static std::size_t size(const cuda::device_span<T>& s) { return s.size(); }
};

template <std::floating_point T>
struct tensor_traits<cuda::device_buffer<T>> {
  using value_type = T;
  static T* data(cuda::device_buffer<T>& b) { return b.data(); }
  static const T* data(const cuda::device_buffer<T>& b) { return b.data(); }
  static std::size_t size(const cuda::device_buffer<T>& b) { return b.size(); }
};

}  // namespace nestla
