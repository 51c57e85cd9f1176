// Per-element bodies of the GPU trainer's kernels, host- and device-callable, so that host tests run the same index arithmetic and rounding.
#pragma once

// kernels.cu launches these over every element; tests/test_gpu_host.cpp runs them in plain
// loops against the CPU model's layers and the Batcher, on machines without a GPU. They
// take raw pointers and Dims4 only.

#include <cmath>
#include <cstdint>

#include "device_types.hpp"

#if defined(__CUDACC__)
#define RESNET18_INLINE __host__ __device__ __forceinline__
#else
#define RESNET18_INLINE inline
#endif

namespace resnet18::gpu::math {

// a * b + c, each rounded: never a fused multiply-add, as the CPU Batcher computes it.
// (Host callers compile without floating-point contraction; see the tests' flags.)
RESNET18_INLINE float mul_add_rounded(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(a, b), c);
#else
  return a * b + c;
#endif
}

// Splits a linear index in d's memory order into (n, c, y, x).
RESNET18_INLINE void decode(long long i, const Dims4& d, int& n, int& c, int& y, int& x) {
  if (d.nhwc) {
    c = static_cast<int>(i % d.c);
    i /= d.c;
    x = static_cast<int>(i % d.w);
    i /= d.w;
    y = static_cast<int>(i % d.h);
    n = static_cast<int>(i / d.h);
  } else {
    x = static_cast<int>(i % d.w);
    i /= d.w;
    y = static_cast<int>(i % d.h);
    i /= d.h;
    c = static_cast<int>(i % d.c);
    n = static_cast<int>(i / d.c);
  }
}

// Output element i of an augmented batch (out.n samples of a N x C x H x W dataset).
RESNET18_INLINE float augment_value(const float* data, const AugmentRecord* records, int H, int W, const float* scale,
                                    const float* shift, const Dims4& out, long long i) {
  int n, c, oy, ox;
  decode(i, out, n, c, oy, ox);
  const AugmentRecord r = records[n];
  const int sy = oy + r.dy;
  const int sx = r.flip ? W - 1 - ox + r.dx : ox + r.dx;
  if (sy < 0 || sy >= H || sx < 0 || sx >= W) return shift[c];
  const float src = data[((static_cast<long long>(r.index) * out.c + c) * H + sy) * W + sx];
  return mul_add_rounded(src, scale[c], shift[c]);
}

// Element i of `out` from NCHW images.
RESNET18_INLINE float nchw_value(const float* x, const Dims4& out, long long i) {
  int n, c, y, xx;
  decode(i, out, n, c, y, xx);
  return x[((static_cast<long long>(n) * out.c + c) * out.h + y) * out.w + xx];
}

// Mean of channel c of image n: pixels summed in row-major order, then scaled by 1/P.
RESNET18_INLINE float gap_value(const float* x, const Dims4& d, int n, int c) {
  const float inv = 1.0f / static_cast<float>(d.h * d.w);
  const float* p = x + n * d.sn + c * d.sc;
  float s = 0.0f;
  for (int yy = 0; yy < d.h; ++yy)
    for (int xx = 0; xx < d.w; ++xx) s += p[yy * d.sh + xx * d.sw];
  return s * inv;
}

RESNET18_INLINE float gap_backward_value(const float* df, const Dims4& d, long long i) {
  const float inv = 1.0f / static_cast<float>(d.h * d.w);
  int n, c, yy, xx;
  decode(i, d, n, c, yy, xx);
  return df[static_cast<long long>(n) * d.c + c] * inv;
}

// Output element i of max pooling; arg receives the winning pixel y * W + x of its image.
RESNET18_INLINE float max_pool_value(const float* x, const Dims4& in, const Dims4& out, int k, int s, int p,
                                     long long i, std::int32_t& arg) {
  int n, c, oy, ox;
  decode(i, out, n, c, oy, ox);
  const float* base = x + n * in.sn + c * in.sc;
  float best = -INFINITY;
  arg = -1;
  for (int ky = 0; ky < k; ++ky) {
    const int iy = oy * s - p + ky;
    if (iy < 0 || iy >= in.h) continue;
    for (int kx = 0; kx < k; ++kx) {
      const int ix = ox * s - p + kx;
      if (ix < 0 || ix >= in.w) continue;
      const float v = base[iy * in.sh + ix * in.sw];
      if (arg < 0 || v > best) {
        best = v;
        arg = iy * in.w + ix;
      }
    }
  }
  return best;
}

// Input-gradient element i of max pooling: the sum of the output gradients of the windows
// this pixel won, in output order (the CPU's scatter order).
RESNET18_INLINE float max_pool_backward_value(const float* dy, const Dims4& in, const Dims4& out, int k, int s, int p,
                                              const std::int32_t* argmax, long long i) {
  int n, c, iy, ix;
  decode(i, in, n, c, iy, ix);
  // Windows that contain (iy, ix): oy * s - p <= iy <= oy * s - p + k - 1.
  const int ty = iy + p - (k - 1), tx = ix + p - (k - 1);
  const int oy0 = ty <= 0 ? 0 : (ty + s - 1) / s, ox0 = tx <= 0 ? 0 : (tx + s - 1) / s;
  const int oy1 = (iy + p) / s < out.h - 1 ? (iy + p) / s : out.h - 1;
  const int ox1 = (ix + p) / s < out.w - 1 ? (ix + p) / s : out.w - 1;
  const int me = iy * in.w + ix;
  const long long ob = n * out.sn + c * out.sc;
  float sum = 0.0f;
  for (int oy = oy0; oy <= oy1; ++oy)
    for (int ox = ox0; ox <= ox1; ++ox) {
      const long long o = ob + oy * out.sh + ox * out.sw;
      if (argmax[o] == me) sum += dy[o];
    }
  return sum;
}

// Softmax cross-entropy of one sample (logits z[0..K)), as the CPU computes it in double.
// Returns the sample's loss (NaN for a label outside [0, K)); hit is 1 when the first
// maximum is the label; d (may be null) receives d(mean loss)/dz for a batch of B.
RESNET18_INLINE double loss_sample(const float* z, int label, int K, int B, float* d, int& hit) {
  hit = 0;
  if (label < 0 || label >= K) return NAN;
  int best = 0;
  for (int k = 1; k < K; ++k)
    if (z[k] > z[best]) best = k;
  const double zmax = z[best];
  double sum = 0;
  for (int k = 0; k < K; ++k) sum += exp(static_cast<double>(z[k]) - zmax);
  const double log_sum = log(sum);
  hit = best == label ? 1 : 0;
  if (d != nullptr)
    for (int k = 0; k < K; ++k)
      d[k] = static_cast<float>((exp(static_cast<double>(z[k]) - zmax - log_sum) - (k == label ? 1.0 : 0.0)) / B);
  return log_sum + zmax - static_cast<double>(z[label]);
}

// Source index of element j of a permuted conv weight (KK = kernel * kernel).
// [out][kh][kw][in] -> [out][in][kh][kw]: j indexes the destination.
RESNET18_INLINE long long oihw_source(long long j, int KK, int I) {
  const int p = static_cast<int>(j % KK);
  const long long oi = j / KK;
  const int i = static_cast<int>(oi % I);
  const long long o = oi / I;
  return (o * KK + p) * I + i;
}
// [out][in][kh][kw] -> [out][kh][kw][in]
RESNET18_INLINE long long ohwi_source(long long j, int KK, int I) {
  const int i = static_cast<int>(j % I);
  const long long op = j / I;
  const int p = static_cast<int>(op % KK);
  const long long o = op / KK;
  return (o * I + i) * KK + p;
}

}  // namespace resnet18::gpu::math
