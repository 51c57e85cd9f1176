// Helpers of the GPU tests: device uploads, downloads and tensor-wise relative comparisons against the CPU model.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "cuda_check.hpp"
#include "gpu_resnet.hpp"
#include "kernels.hpp"
#include "rng.hpp"

namespace resnet18::gpu::test {

// max |a - b| / max |b| over a tensor: the error relative to the tensor's scale, so that
// elements near zero (where float32 sums of opposite terms lose all relative accuracy)
// do not dominate.
inline double relative_error(const float* a, const float* b, std::size_t n) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

template <class T>
std::vector<T> download(const T* device, std::size_t n) {
  std::vector<T> h(n);
  GPU_CHECK(cudaMemcpy(h.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

// Normalized-looking random images (N x C x H x W) and labels, the same for a seed.
inline void random_batch(int n, int c, int size, int classes, std::uint64_t seed, std::vector<float>& images,
                         std::vector<std::int32_t>& labels) {
  Rng rng(seed);
  images.resize(std::size_t(n) * c * size * size);
  for (float& v : images) v = float(2.0 * rng.uniform() - 1.0);
  labels.resize(std::size_t(n));
  for (auto& l : labels) l = std::int32_t(rng.uniform() * classes) % classes;
}

// Puts NCHW host images and labels into the GPU model's input.
inline void upload_batch(GpuResNet18& m, const std::vector<float>& images, const std::vector<std::int32_t>& labels) {
  const int n = int(labels.size());
  const Dims4 d = m.input_dims(n);
  float* input = m.input(n);
  DeviceArray<float> staging(images.size());
  GPU_CHECK(cudaMemcpy(staging.data(), images.data(), images.size() * sizeof(float), cudaMemcpyHostToDevice));
  nchw_to(staging.data(), d, input, m.stream());
  GPU_CHECK(cudaMemcpy(m.labels(n), labels.data(), labels.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice));
  m.synchronize();
}

inline std::string describe(const ModelConfig& c, Layout l) {
  return std::string(c.stem == Stem::cifar ? "cifar" : "imagenet") + " stem, width " + std::to_string(c.width) + ", " +
         to_string(l);
}

}  // namespace resnet18::gpu::test
