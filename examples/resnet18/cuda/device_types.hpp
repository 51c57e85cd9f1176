// Plain structs shared by the GPU trainer's host code and its kernels (no CUDA headers, no library types).
#pragma once

#include <cstdint>

// Members that kernels call too.
#if defined(__CUDACC__)
#define RESNET18_HOST_DEVICE __host__ __device__
#else
#define RESNET18_HOST_DEVICE
#endif

namespace resnet18::gpu {

// A 4-D activation as the kernels see it: sizes and element strides, so one kernel serves
// both memory formats (NCHW: c stride h*w; NHWC: c stride 1).
struct Dims4 {
  int n = 0, c = 0, h = 0, w = 0;
  long long sn = 0, sc = 0, sh = 0, sw = 0;
  bool nhwc = false;
  [[nodiscard]] RESNET18_HOST_DEVICE long long size() const noexcept { return static_cast<long long>(n) * c * h * w; }
};

// One sample of a device-side batch: which dataset image, and the crop/flip the CPU
// Batcher drew for it. Four 32-bit fields: padding may be up to 65536 pixels.
struct AugmentRecord {
  std::int32_t index = 0;
  std::int32_t dy = 0;
  std::int32_t dx = 0;
  std::int32_t flip = 0;
};

// Loss and hits of one batch, written by the loss kernel and read back by the host.
struct LossStats {
  double loss_sum = 0;
  std::int32_t correct = 0;
  std::int32_t batch = 0;
};

}  // namespace resnet18::gpu
