// The GPU trainer's own kernels: augmentation, ReLU and residual, pooling, bias, softmax cross-entropy, weight permutes.
#include "kernels.hpp"

#include <algorithm>
#include <cfloat>

#include <cuda_runtime.h>

#include "cuda_check.hpp"

namespace resnet18::gpu {
namespace {

constexpr unsigned kThreads = 256;

// Grid-stride loops everywhere; the grid is capped where a larger one buys nothing.
unsigned grid_for(long long n) {
  const long long blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::clamp<long long>(blocks, 1, 1 << 20));
}

__device__ __forceinline__ long long thread_index() {
  return static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long thread_count() { return static_cast<long long>(gridDim.x) * blockDim.x; }

// Splits a linear index in d's memory order into (n, c, y, x).
__device__ __forceinline__ void decode(long long i, const Dims4& d, int& n, int& c, int& y, int& x) {
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

__global__ void augment_kernel(const float* __restrict__ data, const std::int32_t* __restrict__ labels,
                               const AugmentRecord* __restrict__ records, int H, int W,
                               const float* __restrict__ scale, const float* __restrict__ shift, Dims4 out,
                               float* __restrict__ y, std::int32_t* __restrict__ labels_out) {
  const long long total = out.size();
  for (long long i = thread_index(); i < total; i += thread_count()) {
    int n, c, oy, ox;
    decode(i, out, n, c, oy, ox);
    const AugmentRecord r = records[n];
    const int sy = oy + r.dy;
    const int sx = r.flip ? W - 1 - ox + r.dx : ox + r.dx;
    float v = shift[c];
    if (sy >= 0 && sy < H && sx >= 0 && sx < W) {
      const float src = data[((static_cast<long long>(r.index) * out.c + c) * H + sy) * W + sx];
      // Rounded multiply then add, never a fused multiply-add: the CPU Batcher computes
      // it that way, and the tests ask for identical bits.
      v = __fadd_rn(__fmul_rn(src, scale[c]), shift[c]);
    }
    y[i] = v;
    if (c == 0 && oy == 0 && ox == 0) labels_out[n] = labels[r.index];
  }
}

__global__ void nchw_to_kernel(const float* __restrict__ x, Dims4 out, float* __restrict__ y) {
  const long long total = out.size();
  for (long long i = thread_index(); i < total; i += thread_count()) {
    int n, c, oy, ox;
    decode(i, out, n, c, oy, ox);
    y[i] = x[((static_cast<long long>(n) * out.c + c) * out.h + oy) * out.w + ox];
  }
}

__global__ void relu_kernel(float* __restrict__ y, long long n) {
  for (long long i = thread_index(); i < n; i += thread_count()) y[i] = fmaxf(y[i], 0.0f);
}
__global__ void relu4_kernel(float4* __restrict__ y, long long n4) {
  for (long long i = thread_index(); i < n4; i += thread_count()) {
    float4 v = y[i];
    v.x = fmaxf(v.x, 0.0f);
    v.y = fmaxf(v.y, 0.0f);
    v.z = fmaxf(v.z, 0.0f);
    v.w = fmaxf(v.w, 0.0f);
    y[i] = v;
  }
}

__global__ void add_relu_kernel(float* __restrict__ y, const float* __restrict__ r, long long n) {
  for (long long i = thread_index(); i < n; i += thread_count()) y[i] = fmaxf(y[i] + r[i], 0.0f);
}
__global__ void add_relu4_kernel(float4* __restrict__ y, const float4* __restrict__ r, long long n4) {
  for (long long i = thread_index(); i < n4; i += thread_count()) {
    float4 v = y[i];
    const float4 s = r[i];
    v.x = fmaxf(v.x + s.x, 0.0f);
    v.y = fmaxf(v.y + s.y, 0.0f);
    v.z = fmaxf(v.z + s.z, 0.0f);
    v.w = fmaxf(v.w + s.w, 0.0f);
    y[i] = v;
  }
}

__global__ void relu_mask_kernel(float* __restrict__ g, const float* __restrict__ y, long long n) {
  for (long long i = thread_index(); i < n; i += thread_count()) g[i] = y[i] > 0.0f ? g[i] : 0.0f;
}
__global__ void relu_mask4_kernel(float4* __restrict__ g, const float4* __restrict__ y, long long n4) {
  for (long long i = thread_index(); i < n4; i += thread_count()) {
    float4 v = g[i];
    const float4 m = y[i];
    v.x = m.x > 0.0f ? v.x : 0.0f;
    v.y = m.y > 0.0f ? v.y : 0.0f;
    v.z = m.z > 0.0f ? v.z : 0.0f;
    v.w = m.w > 0.0f ? v.w : 0.0f;
    g[i] = v;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

// One thread per (image, channel); consecutive threads take consecutive channels, which
// in NHWC read consecutive addresses. Pixels are summed in row-major order and then
// scaled by 1/P, as the CPU does.
__global__ void gap_kernel(const float* __restrict__ x, Dims4 d, float* __restrict__ f) {
  const long long total = static_cast<long long>(d.n) * d.c;
  const float inv = 1.0f / static_cast<float>(d.h * d.w);
  for (long long i = thread_index(); i < total; i += thread_count()) {
    const int n = static_cast<int>(i / d.c), c = static_cast<int>(i % d.c);
    const float* p = x + n * d.sn + c * d.sc;
    float s = 0.0f;
    for (int yy = 0; yy < d.h; ++yy)
      for (int xx = 0; xx < d.w; ++xx) s += p[yy * d.sh + xx * d.sw];
    f[i] = s * inv;
  }
}

__global__ void gap_backward_kernel(const float* __restrict__ df, Dims4 d, float* __restrict__ dx) {
  const long long total = d.size();
  const float inv = 1.0f / static_cast<float>(d.h * d.w);
  for (long long i = thread_index(); i < total; i += thread_count()) {
    int n, c, yy, xx;
    decode(i, d, n, c, yy, xx);
    dx[i] = df[static_cast<long long>(n) * d.c + c] * inv;
  }
}

__global__ void max_pool_kernel(const float* __restrict__ x, Dims4 in, Dims4 out, int k, int s, int p,
                                float* __restrict__ y, std::int32_t* __restrict__ argmax) {
  const long long total = out.size();
  for (long long i = thread_index(); i < total; i += thread_count()) {
    int n, c, oy, ox;
    decode(i, out, n, c, oy, ox);
    const float* base = x + n * in.sn + c * in.sc;
    float best = -INFINITY;
    int arg = -1;
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
    y[i] = best;
    argmax[i] = arg;
  }
}

__global__ void max_pool_backward_kernel(const float* __restrict__ dy, Dims4 in, Dims4 out, int k, int s, int p,
                                         const std::int32_t* __restrict__ argmax, float* __restrict__ dx) {
  const long long total = in.size();
  for (long long i = thread_index(); i < total; i += thread_count()) {
    int n, c, iy, ix;
    decode(i, in, n, c, iy, ix);
    // Windows that contain (iy, ix): oy * s - p <= iy <= oy * s - p + k - 1.
    const int ty = iy + p - (k - 1), tx = ix + p - (k - 1);
    const int oy0 = ty <= 0 ? 0 : (ty + s - 1) / s, ox0 = tx <= 0 ? 0 : (tx + s - 1) / s;
    const int oy1 = min(out.h - 1, (iy + p) / s), ox1 = min(out.w - 1, (ix + p) / s);
    const int me = iy * in.w + ix;
    const long long ob = n * out.sn + c * out.sc;
    float sum = 0.0f;
    for (int oy = oy0; oy <= oy1; ++oy)
      for (int ox = ox0; ox <= ox1; ++ox) {
        const long long o = ob + oy * out.sh + ox * out.sw;
        if (argmax[o] == me) sum += dy[o];
      }
    dx[i] = sum;
  }
}

__global__ void add_bias_kernel(float* __restrict__ logits, const float* __restrict__ bias, int K, long long total) {
  for (long long i = thread_index(); i < total; i += thread_count()) logits[i] += bias[i % K];
}

constexpr int kLossThreads = 256;

__global__ void __launch_bounds__(kLossThreads) loss_kernel(const float* __restrict__ logits,
                                                            const std::int32_t* __restrict__ labels, int K, int B,
                                                            float* __restrict__ dlogits, float* __restrict__ dbias,
                                                            LossStats* __restrict__ stats) {
  __shared__ double s_loss[kLossThreads];
  __shared__ int s_hits[kLossThreads];
  double loss = 0;
  int hits = 0;
  for (int n = threadIdx.x; n < B; n += blockDim.x) {
    const float* z = logits + static_cast<long long>(n) * K;
    const int label = labels[n];
    if (label < 0 || label >= K) {
      loss = nan("");  // reported as a diverged loss; the host validates labels first
      continue;
    }
    int best = 0;
    for (int k = 1; k < K; ++k)
      if (z[k] > z[best]) best = k;
    const double zmax = z[best];
    double sum = 0;
    for (int k = 0; k < K; ++k) sum += exp(static_cast<double>(z[k]) - zmax);
    const double log_sum = log(sum);
    loss += log_sum + zmax - static_cast<double>(z[label]);
    hits += best == label ? 1 : 0;
    if (dlogits != nullptr) {
      float* d = dlogits + static_cast<long long>(n) * K;
      for (int k = 0; k < K; ++k)
        d[k] = static_cast<float>((exp(static_cast<double>(z[k]) - zmax - log_sum) - (k == label ? 1.0 : 0.0)) / B);
    }
  }
  s_loss[threadIdx.x] = loss;
  s_hits[threadIdx.x] = hits;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      s_loss[threadIdx.x] += s_loss[threadIdx.x + half];
      s_hits[threadIdx.x] += s_hits[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    stats->loss_sum = s_loss[0];
    stats->correct = s_hits[0];
    stats->batch = B;
  }
  if (dbias != nullptr && dlogits != nullptr) {
    // The block's own global writes above are visible to it after the barrier.
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
      float s = 0.0f;
      for (int n = 0; n < B; ++n) s += dlogits[static_cast<long long>(n) * K + k];
      dbias[k] = s;
    }
  }
}

__global__ void ohwi_to_oihw_kernel(const float* __restrict__ src, float* __restrict__ dst, int O, int KK, int I) {
  const long long total = static_cast<long long>(O) * KK * I;
  for (long long j = thread_index(); j < total; j += thread_count()) {
    // j indexes dst = [o][i][p]
    const int p = static_cast<int>(j % KK);
    const long long oi = j / KK;
    const int i = static_cast<int>(oi % I);
    const long long o = oi / I;
    dst[j] = src[(o * KK + p) * I + i];
  }
}

__global__ void oihw_to_ohwi_kernel(const float* __restrict__ src, float* __restrict__ dst, int O, int KK, int I) {
  const long long total = static_cast<long long>(O) * KK * I;
  for (long long j = thread_index(); j < total; j += thread_count()) {
    // j indexes dst = [o][p][i]
    const int i = static_cast<int>(j % I);
    const long long op = j / I;
    const int p = static_cast<int>(op % KK);
    const long long o = op / KK;
    dst[j] = src[(o * I + i) * KK + p];
  }
}

}  // namespace

void augment_batch(const float* dataset, const std::int32_t* labels, const AugmentRecord* records, int height,
                   int width, const float* scale, const float* shift, Dims4 out, float* y, std::int32_t* labels_out,
                   cudaStream_t stream) {
  if (out.size() == 0) return;
  augment_kernel<<<grid_for(out.size()), kThreads, 0, stream>>>(dataset, labels, records, height, width, scale, shift,
                                                                 out, y, labels_out);
  check_launch("augment_kernel");
}

void nchw_to(const float* x, Dims4 out, float* y, cudaStream_t stream) {
  if (out.size() == 0) return;
  nchw_to_kernel<<<grid_for(out.size()), kThreads, 0, stream>>>(x, out, y);
  check_launch("nchw_to_kernel");
}

void relu_inplace(float* y, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const auto ln = static_cast<long long>(n);
  if (n % 4 == 0 && aligned16(y))
    relu4_kernel<<<grid_for(ln / 4), kThreads, 0, stream>>>(reinterpret_cast<float4*>(y), ln / 4);
  else
    relu_kernel<<<grid_for(ln), kThreads, 0, stream>>>(y, ln);
  check_launch("relu_kernel");
}

void add_relu_inplace(float* y, const float* residual, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const auto ln = static_cast<long long>(n);
  if (n % 4 == 0 && aligned16(y) && aligned16(residual))
    add_relu4_kernel<<<grid_for(ln / 4), kThreads, 0, stream>>>(reinterpret_cast<float4*>(y),
                                                               reinterpret_cast<const float4*>(residual), ln / 4);
  else
    add_relu_kernel<<<grid_for(ln), kThreads, 0, stream>>>(y, residual, ln);
  check_launch("add_relu_kernel");
}

void relu_mask_inplace(float* g, const float* y, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const auto ln = static_cast<long long>(n);
  if (n % 4 == 0 && aligned16(g) && aligned16(y))
    relu_mask4_kernel<<<grid_for(ln / 4), kThreads, 0, stream>>>(reinterpret_cast<float4*>(g),
                                                                reinterpret_cast<const float4*>(y), ln / 4);
  else
    relu_mask_kernel<<<grid_for(ln), kThreads, 0, stream>>>(g, y, ln);
  check_launch("relu_mask_kernel");
}

void global_avg_pool(const float* x, Dims4 in, float* features, cudaStream_t stream) {
  const long long total = static_cast<long long>(in.n) * in.c;
  if (total == 0) return;
  gap_kernel<<<grid_for(total), kThreads, 0, stream>>>(x, in, features);
  check_launch("gap_kernel");
}

void global_avg_pool_backward(const float* dfeatures, Dims4 in, float* dx, cudaStream_t stream) {
  if (in.size() == 0) return;
  gap_backward_kernel<<<grid_for(in.size()), kThreads, 0, stream>>>(dfeatures, in, dx);
  check_launch("gap_backward_kernel");
}

void max_pool(const float* x, Dims4 in, Dims4 out, int kernel, int stride, int pad, float* y, std::int32_t* argmax,
              cudaStream_t stream) {
  if (out.size() == 0) return;
  max_pool_kernel<<<grid_for(out.size()), kThreads, 0, stream>>>(x, in, out, kernel, stride, pad, y, argmax);
  check_launch("max_pool_kernel");
}

void max_pool_backward(const float* dy, Dims4 in, Dims4 out, int kernel, int stride, int pad,
                       const std::int32_t* argmax, float* dx, cudaStream_t stream) {
  if (in.size() == 0) return;
  max_pool_backward_kernel<<<grid_for(in.size()), kThreads, 0, stream>>>(dy, in, out, kernel, stride, pad, argmax, dx);
  check_launch("max_pool_backward_kernel");
}

void add_bias(float* logits, const float* bias, int classes, int batch, cudaStream_t stream) {
  const long long total = static_cast<long long>(classes) * batch;
  if (total == 0) return;
  add_bias_kernel<<<grid_for(total), kThreads, 0, stream>>>(logits, bias, classes, total);
  check_launch("add_bias_kernel");
}

void softmax_cross_entropy(const float* logits, const std::int32_t* labels, int classes, int batch, float* dlogits,
                           float* dbias, LossStats* stats, cudaStream_t stream) {
  loss_kernel<<<1, kLossThreads, 0, stream>>>(logits, labels, classes, batch, dlogits, dbias, stats);
  check_launch("loss_kernel");
}

void permute_ohwi_to_oihw(const float* src, float* dst, int out, int kernel, int in, cudaStream_t stream) {
  const long long total = static_cast<long long>(out) * kernel * kernel * in;
  if (total == 0) return;
  ohwi_to_oihw_kernel<<<grid_for(total), kThreads, 0, stream>>>(src, dst, out, kernel * kernel, in);
  check_launch("ohwi_to_oihw_kernel");
}

void permute_oihw_to_ohwi(const float* src, float* dst, int out, int kernel, int in, cudaStream_t stream) {
  const long long total = static_cast<long long>(out) * kernel * kernel * in;
  if (total == 0) return;
  oihw_to_ohwi_kernel<<<grid_for(total), kThreads, 0, stream>>>(src, dst, out, kernel * kernel, in);
  check_launch("oihw_to_ohwi_kernel");
}

}  // namespace resnet18::gpu
