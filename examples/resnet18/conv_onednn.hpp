// Float convolutions through oneDNN with Conv2d's contract: the fast path of the ResNet-18 example.
#pragma once

// Why: im2col plus Eigen's GEMM tops out near Eigen's sgemm speed (about 250 GFLOP/s on the
// 2-core AVX-512 machines), below what oneDNN's direct convolutions sustain; PyTorch's CPU
// training uses the same library (perf-notes.md). Activations stay NHWC and weights OHWI in
// the caller's buffers; oneDNN may want the weights in a blocked layout, which is produced by
// a reorder per call (weights change every step; 11M floats cost a few ms).
//
// Built only with the CMake option NESTLA_RESNET18_ONEDNN (then RESNET18_HAVE_ONEDNN is 1);
// the header has no oneDNN types, so users of the model need no oneDNN headers.

#include <cstddef>
#include <memory>

#include "layers.hpp"

namespace resnet18 {

// Whether this build has oneDNN; without it, constructing a OneDnnConv throws.
[[nodiscard]] bool onednn_available() noexcept;

class OneDnnConv {
 public:
  OneDnnConv(int in_channels, int out_channels, int kernel, int stride, int padding);
  OneDnnConv(OneDnnConv&&) noexcept;
  OneDnnConv& operator=(OneDnnConv&&) noexcept;
  ~OneDnnConv();

  [[nodiscard]] Shape output_shape(Shape in) const noexcept;
  // Floats of caller scratch for this input shape (oneDNN's scratchpad plus room for the
  // input gradient when it must be accumulated). Builds the primitives for in.n on first
  // use of a batch size; call it before forward/backward with that batch size.
  [[nodiscard]] std::size_t workspace_size(Shape in);
  // Which oneDNN implementations run (e.g. "brgconv:avx512_core"), for logs.
  [[nodiscard]] const char* implementation(Shape in);

  // As Conv2d<float>::forward/backward; workspace must hold workspace_size(in) floats and be
  // 64-byte aligned.
  void forward(const float* weight, const float* x, Shape in, float* y, float* workspace);
  void backward(const float* weight, const float* x, Shape in, const float* dy, float* dweight, float* dx,
                bool accumulate_dx, float* workspace);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace resnet18
