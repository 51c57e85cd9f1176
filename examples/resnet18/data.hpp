// Image-classification datasets (CIFAR-10, MNIST/Fashion-MNIST IDX, synthetic) held as one contiguous float buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace resnet18 {

// Every malformed, truncated or missing input file raises this, with the file and the
// offending record or field in the message, so a bad download is diagnosed from the log.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Split { train, test };

// Images are N x C x H x W float32 in [0, 1] (not normalized: the Batcher normalizes
// while it copies, so augmentation pads with true black, as torchvision does).
struct Dataset {
  std::string name;
  int channels = 0;
  int height = 0;
  int width = 0;
  int num_classes = 0;
  std::vector<float> images;
  std::vector<std::uint8_t> labels;
  // Per-channel normalization constants, one entry per channel.
  std::vector<float> mean;
  std::vector<float> stddev;

  [[nodiscard]] std::size_t size() const noexcept { return labels.size(); }
  [[nodiscard]] std::size_t image_size() const noexcept {
    return static_cast<std::size_t>(channels) * static_cast<std::size_t>(height) * static_cast<std::size_t>(width);
  }
  [[nodiscard]] std::span<const float> image(std::size_t i) const {
    return {images.data() + i * image_size(), image_size()};
  }
};

// Standard constants (torchvision recipes), so runs compare with published numbers.
inline constexpr float cifar10_mean[3] = {0.4914f, 0.4822f, 0.4465f};
inline constexpr float cifar10_std[3] = {0.2470f, 0.2435f, 0.2616f};
inline constexpr float fashion_mnist_mean = 0.2860f;
inline constexpr float fashion_mnist_std = 0.3530f;
inline constexpr float mnist_mean = 0.1307f;
inline constexpr float mnist_std = 0.3081f;

// Where Debian's dataset-fashion-mnist package installs its .gz files.
inline constexpr const char* default_fashion_mnist_dir = "/usr/share/datasets/fashion-mnist";

// CIFAR-10 binary version: data_batch_1.bin .. data_batch_5.bin (train) or test_batch.bin
// (test) in `dir`. `limit` > 0 keeps the first `limit` images in file order (0 = all).
Dataset load_cifar10(const std::filesystem::path& dir, Split split, std::size_t limit = 0);

// One IDX image file (magic 0x00000803) and its label file (0x00000801), plain or gzip
// (zlib detects which). Labels must lie in 0..num_classes-1. The normalization constants
// are placeholders (0.5, 0.5): set them, or call compute_channel_stats.
Dataset load_idx(const std::filesystem::path& images_file, const std::filesystem::path& labels_file,
                 std::size_t limit = 0, int num_classes = 10);

// train-images-idx3-ubyte / t10k-images-idx3-ubyte and their labels in `dir`, each either
// plain or with a .gz suffix (plain wins when both exist). Normalization constants are
// Fashion-MNIST's.
Dataset load_fashion_mnist(const std::filesystem::path& dir = default_fashion_mnist_dir,
                           Split split = Split::train, std::size_t limit = 0);

// As load_fashion_mnist, with MNIST's normalization constants.
Dataset load_mnist(const std::filesystem::path& dir, Split split = Split::train, std::size_t limit = 0);

// Each class has a fixed random oriented stripe pattern and colour; a sample is that
// pattern at a random phase plus Gaussian noise, clamped to [0, 1]. Learnable by a small
// CNN in a few hundred steps, and the same options always give the same bytes.
struct SyntheticOptions {
  std::uint64_t seed = 0;         // the class patterns
  std::uint64_t sample_seed = 0;  // phases, contrast and noise of the samples
  std::size_t count = 1024;
  int channels = 3;
  int size = 32;  // height and width
  int num_classes = 10;
  float noise = 0.15f;  // standard deviation of the added noise
};
Dataset make_synthetic(const SyntheticOptions& options);

// One entry point for the trainer's command line. name: "cifar10", "fashion-mnist",
// "mnist" or "synthetic". `dir` empty means the default (Fashion-MNIST's Debian
// directory; required for CIFAR-10 and MNIST). For "synthetic", `synthetic` gives the
// shape and count of each split; the test split keeps the class patterns (seed) and
// draws other samples (a sample_seed derived from the given one). `limit` caps the
// count of every dataset.
struct DatasetOptions {
  std::string name = "fashion-mnist";
  std::filesystem::path dir;
  std::size_t limit = 0;
  SyntheticOptions synthetic;
};
Dataset load_dataset(const DatasetOptions& options, Split split);

// Per-channel mean and standard deviation over all images, for datasets without
// published constants (the synthetic one uses it).
void compute_channel_stats(const Dataset& data, std::vector<float>& mean, std::vector<float>& stddev);

}  // namespace resnet18
