// ResNet-18 on the GPU (cuDNN convolutions and batch norm, cuBLAS fc, own kernels), tensor for tensor the CPU model's twin.
#pragma once

// The CPU model (resnet.hpp) is the reference and the host mirror: it initializes the
// weights for a seed, names and orders the tensors, and writes and reads checkpoints. The
// GPU model keeps parameters, gradients and running statistics in device buffers with the
// CPU model's flat layout (same offsets, conv weights [out][kh][kw][in]), so an optimizer
// steps them as it would the CPU ones, and a download is a plain copy.
//
// Activations are NHWC (channels last, the CPU model's own order, and cuDNN's fast path
// on tensor cores) or NCHW. NHWC convolves the parameters in place; NCHW keeps a permuted
// copy of the conv weights, refreshed after each optimizer step (weights_changed()), and
// permutes the conv weight gradients back after backward: two passes over 45 MB, a few
// tens of microseconds on an H200, for checkpoints and optimizer state that stay in one order.
//
// All work is queued on one stream (the legacy default stream, which the nestla CUDA
// optimizer also uses by default) and nothing waits for the GPU except the calls that
// say so.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "device_types.hpp"
#include "plan.hpp"
#include "resnet.hpp"

namespace resnet18::gpu {

// Grow-only device memory (cudaMalloc), zeroed when it grows, like the CPU model's Buffer.
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(std::size_t n) { grow(n); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept : data_(o.data_), size_(o.size_) { o.data_ = nullptr, o.size_ = 0; }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  ~DeviceArray() { release(); }
  // Ensures room for n elements; growing discards the contents.
  void grow(std::size_t n);
  [[nodiscard]] T* data() noexcept { return data_; }
  [[nodiscard]] const T* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  void release() noexcept;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

// The convolution algorithms of one shape at one batch size.
struct ConvAlgos {
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  cudnnMathType_t fwd_math = CUDNN_FMA_MATH, bwd_data_math = CUDNN_FMA_MATH, bwd_filter_math = CUDNN_FMA_MATH;
  std::size_t workspace = 0;  // bytes, the largest of the three
  bool has_bwd_data = false;
};

class GpuResNet18 {
 public:
  GpuResNet18(const ModelConfig& config, const GpuModelOptions& options);
  ~GpuResNet18();
  GpuResNet18(const GpuResNet18&) = delete;
  GpuResNet18& operator=(const GpuResNet18&) = delete;

  [[nodiscard]] const ModelConfig& config() const noexcept { return host_.config(); }
  [[nodiscard]] const GpuModelOptions& options() const noexcept { return options_; }
  [[nodiscard]] const std::vector<ParameterInfo>& parameter_info() const noexcept { return host_.parameter_info(); }
  [[nodiscard]] std::size_t num_parameters() const noexcept { return host_.num_parameters(); }
  // Flat device buffers with the CPU model's offsets (parameter_info()).
  [[nodiscard]] float* parameters() noexcept { return params_.data(); }
  [[nodiscard]] float* gradients() noexcept { return grads_.data(); }
  [[nodiscard]] float* running_stats() noexcept { return running_.data(); }

  // ---- the host mirror (a CPU ResNet18<float>): initialization and checkpoints
  [[nodiscard]] ResNet18<float>& host() noexcept { return host_; }
  // Host parameters and running statistics to the device (waits for the copy).
  void upload_from_host();
  // Device parameters and running statistics to the host mirror (waits for the device).
  void download_to_host();
  // The device gradients in the CPU model's flat layout (waits for the device).
  [[nodiscard]] std::vector<float> download_gradients();

  // The parameters changed outside forward/backward (an optimizer step, a swap, a load):
  // NCHW's permuted filter copy is refreshed before the next forward.
  void weights_changed() noexcept { weights_dirty_ = true; }

  // ---- computation, queued on stream() without waiting
  // The input batch: batch x image in input_dims(batch)'s format, and its labels. Valid
  // until the next call with a larger batch.
  float* input(int batch);
  std::int32_t* labels(int batch);
  [[nodiscard]] Dims4 input_dims(int batch) const noexcept;
  // train: batch statistics (running ones updated) or running statistics.
  void forward(int batch, bool train);
  // Loss and hits of the last forward into stats_device(); with grad also d loss / d logits
  // and the fc bias gradient, for backward().
  void loss(bool grad);
  // After forward(train = true) and loss(grad = true): every gradient overwritten.
  void backward();
  [[nodiscard]] const float* logits() const noexcept;  // classes x batch, device
  [[nodiscard]] LossStats* stats_device() noexcept { return stats_.data(); }
  [[nodiscard]] cudaStream_t stream() const noexcept { return stream_; }
  void synchronize();

  // ---- bookkeeping
  [[nodiscard]] std::string describe() const;
  [[nodiscard]] std::size_t workspace_bytes() const noexcept { return workspace_.size(); }
  [[nodiscard]] std::size_t algorithm_searches() const noexcept { return searches_; }
  [[nodiscard]] std::size_t distinct_conv_shapes(int batch) const;
  [[nodiscard]] int batch() const noexcept { return batch_; }

 private:
  struct Conv {
    int cin = 0, cout = 0, k = 1, stride = 1, pad = 0;
    Shape in, out;  // n = 1
    int weight = -1, act_in = -1, act_out = -1;
    cudnnFilterDescriptor_t wdesc = nullptr;
    cudnnConvolutionDescriptor_t cdesc = nullptr;
    const ConvAlgos* algos = nullptr;  // for the current batch
    bool needs_dx = true;
  };
  struct Bn {
    int c = 0, weight = -1, bias = -1, stats = -1, act_in = -1, act_out = -1;
    std::size_t saved = 0;  // offset of this layer's saved mean (invstd follows) in saved_
    cudnnTensorDescriptor_t pdesc = nullptr;
  };
  struct Block {
    int conv1 = -1, bn1 = -1, conv2 = -1, bn2 = -1, conv_sc = -1, bn_sc = -1, act_in = -1;
  };

  int param_index(const std::string& name, const std::vector<int>& shape) const;
  int add_activation(Shape per_image);
  int add_conv(const std::string& name, int act_in, Shape in, int out_channels, int k, int stride, int pad);
  int add_bn(const std::string& name, int act_in, Shape in);
  void prepare(int batch);
  const ConvAlgos& search(const Conv& c, int batch);
  void refresh_filters();
  float* act(int id) noexcept { return acts_.data() + act_offset_[std::size_t(id)]; }
  const float* weight_of(const Conv& c) noexcept;
  float* dweight_of(const Conv& c) noexcept;
  void conv_forward(const Conv& c);
  void conv_backward(const Conv& c, const float* dy, float* dx, bool accumulate_dx);
  void bn_forward(const Bn& b, bool train);
  void bn_backward(const Bn& b, const float* dy, float* dx);
  Dims4 dims(int act_id) const noexcept;
  float* gbuf(int i) noexcept { return gbufs_.data() + std::size_t(i) * gbuf_stride_; }

  GpuModelOptions options_;
  ResNet18<float> host_;
  cudaStream_t stream_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cudnnBatchNormMode_t bn_train_mode_ = CUDNN_BATCHNORM_SPATIAL;

  DeviceArray<float> params_, grads_, running_, filters_, filter_grads_, saved_;
  DeviceArray<float> acts_, gbufs_;
  DeviceArray<std::int32_t> labels_, argmax_;
  DeviceArray<unsigned char> workspace_;
  DeviceArray<LossStats> stats_;

  std::vector<Conv> convs_;
  std::vector<Bn> bns_;
  std::vector<Block> blocks_;
  std::vector<Shape> act_shapes_;  // n = 1
  std::vector<std::size_t> act_offset_;
  std::vector<cudnnTensorDescriptor_t> act_desc_;
  int act_input_ = -1, act_pool_ = -1, act_feat_ = -1, act_dfeat_ = -1, act_logits_ = -1, act_dlogits_ = -1;
  int stem_conv_ = -1, stem_bn_ = -1, fc_weight_ = -1, fc_bias_ = -1;
  Shape stem_out_, pool_out_, feature_in_;
  std::size_t gbuf_stride_ = 0;
  std::size_t running_total_ = 0;

  std::unordered_map<ConvKey, ConvAlgos, ConvKeyHash> algo_cache_;
  std::size_t searches_ = 0;
  int capacity_ = 0;     // batch the activations are sized for
  int desc_batch_ = 0;   // batch the descriptors are set for
  int batch_ = 0;        // batch of the last forward
  bool last_train_ = false, loss_grad_ = false;
  bool weights_dirty_ = true;
};

}  // namespace resnet18::gpu
