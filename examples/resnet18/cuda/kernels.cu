// The GPU trainer's own kernels: augmentation, ReLU and residual, pooling, bias, softmax cross-entropy, weight permutes.
#include "kernels.hpp"

#include <algorithm>
#include <cfloat>

#include <cuda_runtime.h>

#include "cuda_check.hpp"
#include "kernel_math.hpp"

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

// The per-element bodies live in kernel_math.hpp, where the host tests run them too.
__global__ void augment_kernel(const float* __restrict__ data, const std::int32_t* __restrict__ labels,
                               const AugmentRecord* __restrict__ records, int H, int W,
                               const float* __restrict__ scale, const float* __restrict__ shift, Dims4 out,
                               float* __restrict__ y, std::int32_t* __restrict__ labels_out) {
  const long long total = out.size();
  const long long per_image = total / out.n;
  for (long long i = thread_index(); i < total; i += thread_count()) {
    y[i] = math::augment_value(data, records, H, W, scale, shift, out, i);
    // Element 0 of each image is (c, y, x) = (0, 0, 0) in either format.
    if (i % per_image == 0) labels_out[i / per_image] = labels[records[i / per_image].index];
  }
}

__global__ void nchw_to_kernel(const float* __restrict__ x, Dims4 out, float* __restrict__ y) {
  const long long total = out.size();
  for (long long i = thread_index(); i < total; i += thread_count()) y[i] = math::nchw_value(x, out, i);
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
// in NHWC read consecutive addresses.
__global__ void gap_kernel(const float* __restrict__ x, Dims4 d, float* __restrict__ f) {
  const long long total = static_cast<long long>(d.n) * d.c;
  for (long long i = thread_index(); i < total; i += thread_count())
    f[i] = math::gap_value(x, d, static_cast<int>(i / d.c), static_cast<int>(i % d.c));
}

__global__ void gap_backward_kernel(const float* __restrict__ df, Dims4 d, float* __restrict__ dx) {
  const long long total = d.size();
  for (long long i = thread_index(); i < total; i += thread_count()) dx[i] = math::gap_backward_value(df, d, i);
}

__global__ void max_pool_kernel(const float* __restrict__ x, Dims4 in, Dims4 out, int k, int s, int p,
                                float* __restrict__ y, std::int32_t* __restrict__ argmax) {
  const long long total = out.size();
  for (long long i = thread_index(); i < total; i += thread_count()) {
    std::int32_t arg;
    y[i] = math::max_pool_value(x, in, out, k, s, p, i, arg);
    argmax[i] = arg;
  }
}

__global__ void max_pool_backward_kernel(const float* __restrict__ dy, Dims4 in, Dims4 out, int k, int s, int p,
                                         const std::int32_t* __restrict__ argmax, float* __restrict__ dx) {
  const long long total = in.size();
  for (long long i = thread_index(); i < total; i += thread_count())
    dx[i] = math::max_pool_backward_value(dy, in, out, k, s, p, argmax, i);
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
    int hit = 0;
    loss += math::loss_sample(logits + static_cast<long long>(n) * K, labels[n], K, B,
                              dlogits != nullptr ? dlogits + static_cast<long long>(n) * K : nullptr, hit);
    hits += hit;
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
  for (long long j = thread_index(); j < total; j += thread_count()) dst[j] = src[math::oihw_source(j, KK, I)];
}

__global__ void oihw_to_ohwi_kernel(const float* __restrict__ src, float* __restrict__ dst, int O, int KK, int I) {
  const long long total = static_cast<long long>(O) * KK * I;
  for (long long j = thread_index(); j < total; j += thread_count()) dst[j] = src[math::ohwi_source(j, KK, I)];
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
