// Host entry points of the GPU trainer's own kernels (kernels.cu): augmentation, ReLU and residual, pooling, bias, loss, weight permutes.
#pragma once

// Every pointer is device memory and every call is asynchronous on `stream`. The CPU
// model (layers.hpp) is the specification: where it fixes an order of floating-point
// operations that matters for bit-exact tests (augmentation, average pooling, max-pool
// ties and gradient sums), the kernels follow it.

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "device_types.hpp"

namespace resnet18::gpu {

// out (in out's format) = normalize(crop/flip(dataset[record.index])) for each of out.n
// samples; labels_out[i] = labels[record.index]. dataset is N x C x H x W float in [0, 1];
// scale/shift are per channel (normalization_constants), and the value of padded pixels.
void augment_batch(const float* dataset, const std::int32_t* labels, const AugmentRecord* records, int height,
                   int width, const float* scale, const float* shift, Dims4 out, float* y, std::int32_t* labels_out,
                   cudaStream_t stream);

// NCHW images (already normalized, as the CPU Batcher hands them) into `out`'s format.
void nchw_to(const float* x, Dims4 out, float* y, cudaStream_t stream);

// y = max(y, 0)
void relu_inplace(float* y, std::size_t n, cudaStream_t stream);
// y = max(y + residual, 0)
void add_relu_inplace(float* y, const float* residual, std::size_t n, cudaStream_t stream);
// g = y > 0 ? g : 0 (PyTorch's threshold_backward: no gradient where the output is 0)
void relu_mask_inplace(float* g, const float* y, std::size_t n, cudaStream_t stream);

// features[n * C + c] = mean over the pixels of channel c of image n.
void global_avg_pool(const float* x, Dims4 in, float* features, cudaStream_t stream);
void global_avg_pool_backward(const float* dfeatures, Dims4 in, float* dx, cudaStream_t stream);

// Max pooling with -infinity padding; argmax holds the winning pixel (y * W + x) of each
// output element, ties to the first in row-major window order. Backward gathers, so it
// needs no atomics and sums overlapping windows in the CPU's order.
void max_pool(const float* x, Dims4 in, Dims4 out, int kernel, int stride, int pad, float* y, std::int32_t* argmax,
              cudaStream_t stream);
void max_pool_backward(const float* dy, Dims4 in, Dims4 out, int kernel, int stride, int pad,
                       const std::int32_t* argmax, float* dx, cudaStream_t stream);

// logits (classes x batch, column n for image n) += bias.
void add_bias(float* logits, const float* bias, int classes, int batch, cudaStream_t stream);

// Softmax cross-entropy averaged over the batch, in double as the CPU computes it.
// stats gets the loss sum and the argmax hits; dlogits (may be null) the gradient of the
// mean loss, and dbias (may be null, needs dlogits) its sum over the batch. One block:
// the sums are deterministic.
void softmax_cross_entropy(const float* logits, const std::int32_t* labels, int classes, int batch, float* dlogits,
                           float* dbias, LossStats* stats, cudaStream_t stream);

// Conv weights between [out][kh][kw][in] (the model's) and [out][in][kh][kw] (cuDNN NCHW).
void permute_ohwi_to_oihw(const float* src, float* dst, int out, int kernel, int in, cudaStream_t stream);
void permute_oihw_to_ohwi(const float* src, float* dst, int out, int kernel, int in, cudaStream_t stream);

}  // namespace resnet18::gpu
