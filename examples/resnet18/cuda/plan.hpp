// Host-side bookkeeping of the GPU trainer, free of CUDA: memory formats, weight permutations, algorithm choice, batch records, options.
#pragma once

// Everything here is plain C++ so that CI, which has the CUDA toolkit but no GPU, tests it.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "device_types.hpp"
#include "layers.hpp"

namespace resnet18 {
class Batcher;
}

namespace resnet18::gpu {

// Memory format of activations on the device. Parameters always keep the CPU model's
// layout (conv weights [out][kh][kw][in]); NCHW runs its convolutions on a permuted copy.
enum class Layout { nchw, nhwc };

[[nodiscard]] const char* to_string(Layout l) noexcept;
// "nchw" or "nhwc" (also "channels_last"); throws std::invalid_argument naming the value.
[[nodiscard]] Layout parse_layout(std::string_view name);

// Sizes and strides of a per-image shape at batch n in the given format.
[[nodiscard]] Dims4 dims_of(Shape per_image, int n, Layout layout) noexcept;

// Conv weights between the CPU model's [out][kh][kw][in] and cuDNN's NCHW filter order
// [out][in][kh][kw]. src and dst must not overlap.
void ohwi_to_oihw(const float* src, float* dst, int out, int kernel, int in);
void oihw_to_ohwi(const float* src, float* dst, int out, int kernel, int in);

// One algorithm as cuDNN's Find/Get reports it, reduced to what the choice needs.
struct AlgoCandidate {
  int algo = 0;
  bool ok = false;       // status == CUDNN_STATUS_SUCCESS
  float time_ms = -1;    // measured (Find) or -1 (heuristics: the list is already ranked)
  std::size_t workspace = 0;
  bool deterministic = true;
  bool tensor_op = false;  // uses tensor cores (TF32 on float32 data)
};

struct AlgoPolicy {
  std::size_t workspace_limit = std::size_t(1) << 30;
  bool deterministic_only = false;
  bool allow_tensor_op = true;  // false: FMA-only kernels (strict float32, for the tests)
};

// Index of the candidate to use: the first admissible one in cuDNN's order (fastest
// first for Find, best-ranked first for the heuristics). -1 when none is admissible.
[[nodiscard]] int choose_algo(std::span<const AlgoCandidate> candidates, const AlgoPolicy& policy) noexcept;

// What identifies a convolution for the algorithm cache: the same shape at the same
// batch runs the same algorithms (ResNet-18 has 20 convolutions but 11 distinct shapes).
struct ConvKey {
  int n = 0, cin = 0, h = 0, w = 0, cout = 0, kernel = 0, stride = 0, pad = 0;
  Layout layout = Layout::nhwc;
  bool tensor_op = true;
  friend bool operator==(const ConvKey&, const ConvKey&) = default;
};
struct ConvKeyHash {
  std::size_t operator()(const ConvKey& k) const noexcept;
};

// The device-side batch the Batcher's current batch stands for: dataset indices with the
// augmentation the Batcher drew for each position (identity when evaluating).
void fill_augment_records(const Batcher& batcher, std::span<AugmentRecord> out);

// Per-channel normalization as the Batcher applies it: value * scale + shift with
// scale = 1 / stddev, shift = -mean * scale (also the value of a padded pixel).
void normalization_constants(std::span<const float> mean, std::span<const float> stddev, std::vector<float>& scale,
                             std::vector<float>& shift);

// How the GPU trainer chooses its convolution algorithms.
enum class AlgoSearch {
  find,      // time every algorithm once per shape and batch (cudnnFind, like cudnn.benchmark)
  heuristic  // take cuDNN's ranking without timing (cudnnGet*_v7): faster start
};
[[nodiscard]] const char* to_string(AlgoSearch a) noexcept;
[[nodiscard]] AlgoSearch parse_algo_search(std::string_view name);

struct GpuModelOptions {
  Layout layout = Layout::nhwc;
  // TF32 tensor cores in the convolutions: PyTorch's default for cuDNN convolutions
  // (torch.backends.cudnn.allow_tf32). Off: FMA-only float32, what the tests compare.
  bool tf32 = true;
  AlgoSearch algo_search = AlgoSearch::find;
  std::size_t workspace_limit = std::size_t(1) << 30;  // bytes per convolution call
  bool deterministic = false;                          // deterministic algorithms only
  // cuDNN's CUDNN_BATCHNORM_SPATIAL_PERSISTENT in training (faster in NHWC; cuDNN warns
  // it may overflow on extreme inputs).
  bool bn_persistent = false;
  int device = 0;  // CUDA device ordinal
};

// Throws std::invalid_argument naming the bad field.
void validate(const GpuModelOptions& o);

}  // namespace resnet18::gpu
