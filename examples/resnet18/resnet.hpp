// ResNet-18 (He et al. 2016) with explicit backward, flat parameter storage and checkpoints, templated on the scalar.
#pragma once

// Architecture as torchvision.models.resnet18: BasicBlocks [2, 2, 2, 2] with w, 2w, 4w, 8w
// channels, identity shortcuts, and 1x1 stride-2 conv + batch-norm projections where the
// shape changes. Stems: "cifar" (3x3 conv stride 1, BN, ReLU, no pooling; the usual
// CIFAR variant) or "imagenet" (7x7 conv stride 2 pad 3, BN, ReLU, 3x3/2 max pool).
//
// Parameters and their gradients live in two flat buffers with the same layout; every
// tensor starts 64-byte aligned (the gaps stay zero in both, so an optimizer may also run
// over the whole flat buffer). Tensors appear in the order of PyTorch's
// named_parameters() for torchvision's resnet18, with the same names:
//   conv1.weight, bn1.weight, bn1.bias,
//   layer1.0.conv1.weight, layer1.0.bn1.weight, layer1.0.bn1.bias,
//   layer1.0.conv2.weight, layer1.0.bn2.weight, layer1.0.bn2.bias,
//   [layerK.0.downsample.0.weight, layerK.0.downsample.1.weight, layerK.0.downsample.1.bias]
//   ... layer4.1.bn2.bias, fc.weight, fc.bias
// Conv weights are stored [out][kh][kw][in] (channels_last; PyTorch's [out][in][kh][kw]
// permuted), fc.weight is [out][in] as in PyTorch.
//
// Initialization (deterministic for a seed, whatever the thread count): each tensor is
// drawn in blocks of 65536 elements, block b of tensor t from
// resnet18::Rng(mix64(mix64(seed, t), b)) (rng.hpp: mt19937_64, same values with every
// standard library), normals by Box-Muller using both outputs. Conv weights
// ~ N(0, 2/(out*k*k)) (kaiming_normal_, mode fan_out, relu), batch-norm weight 1 and bias 0,
// fc weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)) (nn.Linear's default). Running means 0,
// running variances 1.
//
// Memory: activations, gradients and scratch are allocated for the largest batch seen
// and reused; a step allocates nothing. Every forward keeps what backward needs, so the
// footprint grows with the batch (about 6 MB per 32x32 image at width 64).
//
// Convolutions run through oneDNN for float when the build has it, else (and always for
// double) through im2col + Eigen GEMM; see ConvBackend. Threads: OpenMP, as many as
// omp_get_max_threads() says at each call. A model is not safe to use from two threads
// at once.

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "conv_onednn.hpp"
#include "layers.hpp"

namespace resnet18 {

enum class Stem { cifar, imagenet };

// automatic: oneDNN for float when the build has it (NESTLA_RESNET18_ONEDNN), else Eigen.
// eigen: im2col + Eigen GEMM (any scalar; the reference path). onednn: float only.
enum class ConvBackend { automatic, eigen, onednn };

struct ModelConfig {
  int width = 64;  // channels of the first stage
  int in_channels = 3;
  int image_size = 32;  // height = width of the input images
  int num_classes = 10;
  Stem stem = Stem::cifar;
  std::uint64_t seed = 0;  // initialization only; not part of the saved state
  ConvBackend conv_backend = ConvBackend::automatic;  // not part of the saved state either
};

struct ParameterInfo {
  std::string name;              // PyTorch's state_dict key
  std::vector<int> shape;        // in memory order
  std::size_t offset = 0;        // element offset in the flat buffer
  std::size_t size = 0;          // elements
  bool no_weight_decay = false;  // batch-norm weights and biases, fc.bias
};

// Forward/backward wall time per layer, accumulated over calls until reset().
struct LayerTime {
  std::string name;  // e.g. "layer2.0.conv1"
  std::string kind;  // e.g. "conv3x3 s2", "bn+relu"
  double forward_seconds = 0;
  double backward_seconds = 0;
  double forward_flop = 0;  // accumulated floating-point operations (2 per multiply-add)
  double backward_flop = 0;
  std::int64_t calls = 0;  // forward calls
};

class Profile {
 public:
  bool enabled = true;
  std::vector<LayerTime> layers;  // one entry per layer, in forward order

  void reset();
  // Entries summed over layers of the same kind, in order of first appearance.
  [[nodiscard]] std::vector<LayerTime> by_kind() const;
  [[nodiscard]] double forward_seconds() const;
  [[nodiscard]] double backward_seconds() const;
  // A table: kind, forward and backward ms per call of the step, share, GFLOP/s.
  void print(std::ostream& out, bool per_layer = false) const;
};

struct BatchResult {
  double loss = 0;  // mean over the batch
  int correct = 0;  // argmax hits
  int batch = 0;
};

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class Scalar>
class ResNet18 {
 public:
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  explicit ResNet18(const ModelConfig& config = {});
  ResNet18(const ResNet18&) = delete;
  ResNet18& operator=(const ResNet18&) = delete;

  [[nodiscard]] const ModelConfig& config() const noexcept { return config_; }
  // "eigen" or "onednn", as resolved from config().conv_backend.
  [[nodiscard]] const char* conv_backend_name() const noexcept { return use_onednn_ ? "onednn" : "eigen"; }

  // ---- parameters: views into the model's storage, valid for the model's lifetime
  [[nodiscard]] std::vector<Eigen::Map<Vector>> parameters();
  [[nodiscard]] std::vector<Eigen::Map<const Vector>> parameters() const;
  [[nodiscard]] std::vector<Eigen::Map<Vector>> gradients();
  [[nodiscard]] std::vector<Eigen::Map<const Vector>> gradients() const;
  [[nodiscard]] const std::vector<ParameterInfo>& parameter_info() const noexcept { return params_info_; }
  // One flag per parameter tensor, same order: true for batch-norm weights/biases and the
  // fc bias, which conventionally get no weight decay.
  [[nodiscard]] std::vector<bool> no_weight_decay() const;
  [[nodiscard]] std::size_t num_parameters() const noexcept;  // sum of tensor sizes
  // The whole flat buffers, alignment gaps included (zero in both).
  [[nodiscard]] Eigen::Map<Vector> flat_parameters();
  [[nodiscard]] Eigen::Map<Vector> flat_gradients();

  // ---- batch-norm running statistics (buffers, not parameters), e.g. "bn1.running_mean"
  [[nodiscard]] std::vector<Eigen::Map<Vector>> buffers();
  [[nodiscard]] const std::vector<ParameterInfo>& buffer_info() const noexcept { return buffers_info_; }

  // ---- computation
  // images: batch x in_channels x image_size x image_size (NCHW, as the data loaders
  // produce), copied in, so the caller may reuse its buffer right away. train selects
  // batch statistics (and updates the running ones) or running statistics. Returns the
  // logits, num_classes x batch (column n belongs to image n), valid until the next forward.
  Eigen::Map<const Matrix> forward(const Scalar* images, int batch, bool train);
  // Loss and accuracy of the last forward's logits. Labels in [0, num_classes).
  [[nodiscard]] BatchResult loss(const std::int32_t* labels) const;
  // After forward(..., train = true): loss, accuracy, and every gradient overwritten
  // (not accumulated) with d(mean loss)/d(parameter).
  BatchResult backward(const std::int32_t* labels);
  // forward(train = true) + backward.
  BatchResult train_step(const Scalar* images, const std::int32_t* labels, int batch);
  // forward(train = false) + loss; gradients untouched.
  BatchResult evaluate(const Scalar* images, const std::int32_t* labels, int batch);

  // Output shape (n = 1) after each stage: conv1 (stem conv+bn+relu), maxpool (imagenet
  // stem only), layer1..layer4, avgpool, fc.
  [[nodiscard]] std::vector<std::pair<std::string, Shape>> stage_shapes() const;
  // Forward multiply-adds times two, per image.
  [[nodiscard]] double forward_flop_per_image() const;

  [[nodiscard]] Profile& profile() noexcept { return profile_; }
  [[nodiscard]] const Profile& profile() const noexcept { return profile_; }

  // ---- checkpoints: parameters and running statistics, binary, native byte order.
  // load() checks the format, scalar type, architecture, every tensor's name and size and
  // the stream's length, and changes nothing unless all of it matches (CheckpointError).
  void save(std::ostream& out) const;
  void load(std::istream& in);
  // Bytes that save() writes.
  [[nodiscard]] std::size_t checkpoint_bytes() const;

 private:
  struct ConvLayer {
    Conv2d<Scalar> op;
    std::unique_ptr<OneDnnConv> fast;  // set when oneDNN runs this layer
    int weight = -1;  // parameter index
    Shape in;         // n = 1
    int prof = -1;
    int act_out = -1;
  };
  struct BnLayer {
    BatchNorm2d<Scalar> op;
    int weight = -1, bias = -1;
    int stats = -1;  // index of running_mean in buffers; running_var follows
    int prof = -1;
    int act_out = -1;
  };
  struct Block {
    int conv1 = -1, bn1 = -1, conv2 = -1, bn2 = -1, conv_sc = -1, bn_sc = -1;
    Shape in, out;
    int act_in = -1;
  };

  int add_parameter(const std::string& name, std::vector<int> shape, bool no_decay);
  int add_activation(Shape per_image);
  int add_conv(const std::string& name, Shape in, int out_channels, int kernel, int stride, int padding);
  int add_bn(const std::string& name, Shape in, const std::string& kind);
  int add_profile(const std::string& name, const std::string& kind);
  void initialize();
  void prepare(int batch);
  Scalar* act(int id) noexcept { return acts_.data() + act_offset_[std::size_t(id)]; }
  Scalar* param(int id) noexcept { return params_.data() + params_info_[std::size_t(id)].offset; }
  Scalar* grad(int id) noexcept { return grads_.data() + params_info_[std::size_t(id)].offset; }
  Scalar* gbuf(int i) noexcept { return grad_bufs_.data() + std::size_t(i) * grad_buf_stride_; }
  void conv_forward(ConvLayer& l, const Scalar* x);
  void conv_backward(ConvLayer& l, const Scalar* x, const Scalar* dy, Scalar* dx, bool accumulate);
  void bn_forward(BnLayer& l, const Scalar* x, bool train, const Scalar* residual, bool relu);
  int block_backward(const Block& b, int g_out);

  ModelConfig config_;
  bool use_onednn_ = false;
  std::vector<ParameterInfo> params_info_, buffers_info_;
  Buffer<Scalar> params_, grads_, running_;
  std::vector<ConvLayer> convs_;
  std::vector<BnLayer> bns_;
  std::vector<Block> blocks_;
  MaxPool2d<Scalar> pool_{3, 2, 1};
  int stem_conv_ = -1, stem_bn_ = -1, act_input_ = -1, act_pool_ = -1, act_feat_ = -1, act_logits_ = -1,
      act_dlogits_ = -1, act_dfeat_ = -1;
  int fc_weight_ = -1, fc_bias_ = -1;
  int prof_input_ = -1, prof_pool_ = -1, prof_avgpool_ = -1, prof_fc_ = -1, prof_loss_ = -1;
  Shape input_shape_, stem_out_, feature_in_;  // n = 1
  std::vector<Shape> act_shapes_;               // n = 1
  std::vector<std::size_t> act_offset_;

  Buffer<Scalar> acts_, grad_bufs_, workspace_;
  Buffer<std::int32_t> argmax_;
  std::size_t grad_buf_stride_ = 0;
  int capacity_ = 0;  // batch the buffers are sized for
  int batch_ = 0;     // batch of the last forward
  bool last_train_ = false;
  Profile profile_;
};

extern template class ResNet18<float>;
extern template class ResNet18<double>;

}  // namespace resnet18
