// Owning, zero-initialized device memory for optimizer state, and the synchronous copies the backend's stream-less operations use.
#pragma once

#include <cstddef>
#include <new>
#include <utility>

#include <cuda_runtime_api.h>

#include "nestla/cuda/error.hpp"
#include "nestla/detail/checked.hpp"

namespace nestla::cuda {
namespace detail {

// The backend's operations outside step() (checkpoints, swap and copy of slow
// weights, buffer creation) are given no stream. So they order themselves
// against all device work: wait for the device, run on the calling thread's
// default stream, wait again. They are rare, so correctness wins over overlap.
template <class F>
void device_synchronous(F&& f) {
  NESTLA_CUDA_CHECK(cudaDeviceSynchronize());
  f(cudaStreamPerThread);
  NESTLA_CUDA_CHECK(cudaStreamSynchronize(cudaStreamPerThread));
}

}  // namespace detail

// n elements of T in device memory (cudaMalloc), zero when created. Copies are
// device-to-device. Creating or copying one waits for the device (see
// detail::device_synchronous): it happens on the first step, on load and when
// set_options adds state, never in a plain step.
template <class T>
class device_buffer {
 public:
  using value_type = T;

  device_buffer() = default;
  explicit device_buffer(std::size_t n) : data_(allocate(n)), size_(n) {
    if (n == 0) return;
    try {
      detail::device_synchronous(
          [&](cudaStream_t s) { NESTLA_CUDA_CHECK(cudaMemsetAsync(data_, 0, n * sizeof(T), s)); });
    } catch (...) {
      cudaFree(data_);
      throw;
    }
  }
  device_buffer(const device_buffer& o) : data_(allocate(o.size_)), size_(o.size_) {
    if (size_ == 0) return;
    try {
      detail::device_synchronous([&](cudaStream_t s) {
        NESTLA_CUDA_CHECK(cudaMemcpyAsync(data_, o.data_, size_ * sizeof(T), cudaMemcpyDeviceToDevice, s));
      });
    } catch (...) {
      cudaFree(data_);
      throw;
    }
  }
  device_buffer(device_buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  device_buffer& operator=(device_buffer o) noexcept {
    swap(o);
    return *this;
  }
  // Errors here (a driver already shut down at exit) cannot be reported.
  ~device_buffer() {
    if (data_) cudaFree(data_);
  }

  void swap(device_buffer& o) noexcept {
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
    if (!nestla::detail::object_bytes<T>(n, bytes)) throw std::bad_array_new_length();
    void* p = nullptr;
    NESTLA_CUDA_CHECK(cudaMalloc(&p, bytes));
    return static_cast<T*>(p);
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace nestla::cuda
