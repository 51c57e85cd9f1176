// ResNet building blocks on NHWC tensors with explicit forward and backward passes, templated on the scalar.
#pragma once

// Layout: every activation is NHWC ("channels last"), element (n, y, x, c) at
// ((n*H + y)*W + x)*C + c. Read as a column-major matrix it is C x (N*H*W), so a
// convolution is one GEMM over all pixels of the batch, im2col copies contiguous runs of
// channels, and per-channel reductions (batch norm) vectorize along C. Images arriving in
// NCHW (the data loaders' and PyTorch's order) are transposed once at the model input.
//
// Layers are stateless apart from what backward needs from forward (batch-norm statistics,
// max-pool argmax): parameters, gradients, activations and scratch are caller-owned
// pointers, so the model can keep all parameters in one flat buffer and tests can run a
// layer on a few doubles. Backward always overwrites parameter gradients (no accumulation).
//
// Threading: OpenMP. Loops split the batch or the pixels over omp_get_max_threads()
// threads; GEMMs issued inside those parallel regions run single-threaded (Eigen sees that
// it is already in a parallel region), so there is no oversubscription.
//
// Only float and double are instantiated (layers.cpp).

#include <cstddef>
#include <cstdint>
#include <vector>

namespace resnet18 {

struct Shape {
  int n = 0;
  int h = 0;
  int w = 0;
  int c = 0;
  [[nodiscard]] std::size_t pixels() const noexcept { return std::size_t(n) * std::size_t(h) * std::size_t(w); }
  [[nodiscard]] std::size_t size() const noexcept { return pixels() * std::size_t(c); }
  friend bool operator==(const Shape&, const Shape&) = default;
};

// Grow-only, 64-byte aligned, zero-filled storage. Blocks of 2 MiB or more are 2 MiB aligned
// and advised for transparent huge pages: first-touch page faults cost about 11.5 us per
// 4 KiB page on the target machine, so buffers are allocated and touched once, not per step.
template <class S>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n) { grow(n); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : data_(o.data_), size_(o.size_) { o.data_ = nullptr, o.size_ = 0; }
  Buffer& operator=(Buffer&& o) noexcept;
  ~Buffer();

  // Ensures room for n elements. Growing discards the contents (the new block is zeroed).
  void grow(std::size_t n);
  [[nodiscard]] S* data() noexcept { return data_; }
  [[nodiscard]] const S* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  S* data_ = nullptr;
  std::size_t size_ = 0;
};

// Rounds an element count up so that consecutive sub-buffers start 64-byte aligned.
template <class S>
constexpr std::size_t align_elements(std::size_t n) noexcept {
  constexpr std::size_t per_line = 64 / sizeof(S);
  return (n + per_line - 1) / per_line * per_line;
}

// Elements of one thread's im2col chunk (default 2^20): whole images are grouped until a
// chunk would exceed it. For tuning and for tests that must exercise several chunks.
void set_conv_chunk_elements(std::size_t elements);
[[nodiscard]] std::size_t conv_chunk_elements() noexcept;

// Convolution without bias: im2col into a per-thread scratch chunk, then GEMM.
// Weights are [out][kh][kw][in] (PyTorch's OIHW permuted to OHWI, i.e. channels_last), a
// row-major out x (k*k*in) matrix that multiplies im2col columns directly.
template <class S>
class Conv2d {
 public:
  Conv2d() = default;
  Conv2d(int in_channels, int out_channels, int kernel, int stride, int padding);

  [[nodiscard]] int in_channels() const noexcept { return cin_; }
  [[nodiscard]] int out_channels() const noexcept { return cout_; }
  [[nodiscard]] int kernel() const noexcept { return k_; }
  [[nodiscard]] int stride() const noexcept { return stride_; }
  [[nodiscard]] int padding() const noexcept { return pad_; }
  [[nodiscard]] std::size_t weight_size() const noexcept { return std::size_t(cout_) * patch(); }
  [[nodiscard]] Shape output_shape(Shape in) const noexcept;
  // Scratch elements forward and backward need at this input shape with `threads` threads.
  [[nodiscard]] std::size_t workspace_size(Shape in, int threads) const noexcept;
  // Multiply-adds times two, of one forward pass.
  [[nodiscard]] double forward_flops(Shape in) const noexcept;

  void forward(const S* weight, const S* x, Shape in, S* y, S* workspace) const;
  // dx may be null (the stem needs no input gradient). With accumulate_dx the input
  // gradient is added to dx, as a residual branch needs. dweight is overwritten.
  void backward(const S* weight, const S* x, Shape in, const S* dy, S* dweight, S* dx, bool accumulate_dx,
                S* workspace) const;

 private:
  [[nodiscard]] std::size_t patch() const noexcept { return std::size_t(k_) * k_ * cin_; }
  [[nodiscard]] bool is_pointwise() const noexcept { return k_ == 1 && stride_ == 1 && pad_ == 0; }
  [[nodiscard]] int images_per_chunk(Shape in) const noexcept;
  void im2col(const S* x, Shape in, Shape out, std::size_t first_col, std::size_t cols, S* col) const;
  void col2im(const S* col, Shape in, Shape out, int first_image, int images, S* dx, bool accumulate) const;

  int cin_ = 0, cout_ = 0, k_ = 1, stride_ = 1, pad_ = 0;
};

// Affine batch norm over the N*H*W pixels of each channel, as torch.nn.BatchNorm2d:
// training normalizes with the batch mean and biased variance and updates
//   running_mean <- (1 - momentum) running_mean + momentum mean
//   running_var  <- (1 - momentum) running_var  + momentum var * M/(M-1)   (unbiased)
// evaluation normalizes with the running statistics. Optionally fused with a residual
// add and a ReLU, y = relu(bn(x) + residual), which saves two passes over memory.
template <class S>
struct BatchNormParams {
  const S* weight = nullptr;  // gamma
  const S* bias = nullptr;    // beta
  S* running_mean = nullptr;
  S* running_var = nullptr;
};

template <class S>
class BatchNorm2d {
 public:
  BatchNorm2d() = default;
  explicit BatchNorm2d(int channels, double momentum = 0.1, double eps = 1e-5);

  [[nodiscard]] int channels() const noexcept { return c_; }
  [[nodiscard]] double momentum() const noexcept { return momentum_; }
  [[nodiscard]] double eps() const noexcept { return eps_; }

  // x, y, residual: channels x pixels (NHWC). y may alias residual but not x.
  void forward(const BatchNormParams<S>& p, const S* x, std::size_t pixels, S* y, bool train,
               const S* residual = nullptr, bool relu = false);
  // After a training forward on the same x and y. dx may alias dy; dresidual (may be null,
  // may alias dy) receives the gradient of the residual input, i.e. dy through the ReLU.
  void backward(const S* weight, const S* x, const S* y, const S* dy, std::size_t pixels, S* dweight, S* dbias,
                S* dx, S* dresidual = nullptr, bool relu = false);

  // Statistics of the last training forward.
  [[nodiscard]] const std::vector<S>& batch_mean() const noexcept { return mean_; }
  [[nodiscard]] const std::vector<S>& batch_invstd() const noexcept { return invstd_; }

 private:
  int c_ = 0;
  double momentum_ = 0.1, eps_ = 1e-5;
  std::vector<S> mean_, invstd_;
  // Scratch kept across calls so that a step allocates nothing.
  std::vector<S> coef_;          // per-channel scale/shift (forward), a/b/d (backward)
  std::vector<double> sums_;     // per-channel reductions
  std::vector<double> partial_;  // per-thread partial reductions
};

// Elementwise y = max(x, 0); backward masks with y > 0 (PyTorch's threshold_backward,
// gradient 0 at x == 0). dx may alias dy.
template <class S>
void relu_forward(const S* x, std::size_t n, S* y);
template <class S>
void relu_backward(const S* y, const S* dy, std::size_t n, S* dx);

// y = a + b; backward hands dy to both inputs, adding to them with accumulate.
template <class S>
void add_forward(const S* a, const S* b, std::size_t n, S* y);
template <class S>
void add_backward(const S* dy, std::size_t n, S* da, S* db, bool accumulate);

// NHWC -> C x N means over each image's pixels.
template <class S>
void global_avg_pool_forward(const S* x, Shape in, S* y);
template <class S>
void global_avg_pool_backward(const S* dy, Shape in, S* dx);

// Max pooling with implicit -infinity padding (PyTorch semantics: padded cells never win).
// forward stores, per output element, the input offset within its image that won, ties
// going to the first in row-major window order as PyTorch does.
template <class S>
class MaxPool2d {
 public:
  MaxPool2d() = default;
  MaxPool2d(int kernel, int stride, int padding) : k_(kernel), stride_(stride), pad_(padding) {}
  [[nodiscard]] Shape output_shape(Shape in) const noexcept;
  void forward(const S* x, Shape in, S* y, std::int32_t* argmax) const;
  // dx is overwritten.
  void backward(const S* dy, Shape in, const std::int32_t* argmax, S* dx) const;

 private:
  int k_ = 3, stride_ = 2, pad_ = 1;
};

// y = W x + b on columns: x is in_features x batch, y out_features x batch, W row-major
// out x in (PyTorch's layout), b out. dx may be null; dweight and dbias are overwritten.
template <class S>
void linear_forward(const S* weight, const S* bias, const S* x, int in_features, int out_features, int batch, S* y);
template <class S>
void linear_backward(const S* weight, const S* x, const S* dy, int in_features, int out_features, int batch,
                     S* dweight, S* dbias, S* dx);

// Softmax cross-entropy averaged over the batch (torch.nn.CrossEntropyLoss()).
// logits: classes x batch. Labels must lie in [0, classes). dlogits (may be null) receives
// d loss / d logits; `correct` counts argmax hits (first maximum on ties).
struct LossResult {
  double loss = 0;
  int correct = 0;
};
template <class S>
LossResult softmax_cross_entropy(const S* logits, const std::int32_t* labels, int classes, int batch, S* dlogits);

}  // namespace resnet18
