// Per-epoch shuffling, random-crop and flip augmentation, and normalization into one reused batch buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "data.hpp"

namespace resnet18 {

// Where the crop window sits and whether it is mirrored. The output pixel (y, x) comes
// from source pixel (y + dy, x' + dx) with x' = W - 1 - x when flipped, else x; outside
// the source it is black (0 before normalization), as torchvision's
// RandomCrop(padding) + RandomHorizontalFlip produce it.
struct AugmentParams {
  int dy = 0;
  int dx = 0;
  bool flip = false;
};

// Writes one C x H x W image to dst, cropped and flipped by `a` and normalized per channel:
// (value - mean[c]) / stddev[c]. dst is C x H x W too, or H x W x C with channels_last.
// src and dst must not overlap.
void augment_image(const float* src, float* dst, int channels, int height, int width, AugmentParams a,
                   const float* mean, const float* stddev, bool channels_last = false);

struct BatcherOptions {
  std::size_t batch_size = 128;
  // Training: a new shuffle per epoch plus the augmentations below. Evaluation: dataset
  // order, no augmentation (images are only normalized).
  bool train = true;
  std::uint64_t seed = 0;
  int crop_padding = 4;  // pixels of black padding for the random crop; 0 turns it off
  bool horizontal_flip = true;
  bool drop_last = false;  // skip a final batch smaller than batch_size
  // Batch layout: N x C x H x W by default; N x H x W x C for a channels-last model,
  // which then needs no transpose of its input.
  bool channels_last = false;
  // false: next() picks the batch (indices, labels) but copies no images, for a backend
  // that keeps the dataset on its device and augments there from indices() and
  // augmentation() (the GPU trainer).
  bool fill_images = true;
  // Distributed training: this worker's share (shard of shards) of every batch. Each
  // batch of batch_size positions of the epoch's order is split into shards contiguous
  // parts, the same permutation on every worker; a final batch with fewer images than
  // shards is dropped on every worker.
  std::size_t shards = 1, shard = 0;
};

// Hands out the batches of an epoch. All buffers are allocated (and touched) once in the
// constructor; next() only copies. A batch depends only on (seed, epoch, batch index),
// never on what ran before, so a resumed run sees the same batches.
// The dataset must outlive the Batcher.
class Batcher {
 public:
  Batcher(const Dataset& data, const BatcherOptions& options);

  // Resets to the first batch of `epoch` (the constructor starts epoch 0).
  void start_epoch(std::uint64_t epoch);

  // Fills images() and labels() with the next batch and returns its size; 0 when the
  // epoch is over (the buffers then keep the last batch).
  std::size_t next();

  [[nodiscard]] std::size_t batches_per_epoch() const noexcept;
  [[nodiscard]] std::size_t batches_done() const noexcept { return batches_done_; }
  [[nodiscard]] std::uint64_t epoch() const noexcept { return epoch_; }

  // The current batch: size() images of C x H x W floats (H x W x C with channels_last),
  // normalized, and their labels.
  [[nodiscard]] std::size_t size() const noexcept { return current_; }
  [[nodiscard]] std::span<const float> images() const noexcept {
    return {images_.data(), current_ * data_.image_size()};
  }
  [[nodiscard]] std::span<const std::int32_t> labels() const noexcept { return {labels_.data(), current_}; }
  // Dataset indices of the current batch, in batch order.
  [[nodiscard]] std::span<const std::size_t> indices() const noexcept {
    return {order_.data() + cursor_ - current_, current_};
  }

  // The epoch's sample order (a permutation of 0..N-1; the identity when evaluating).
  [[nodiscard]] std::span<const std::size_t> order() const noexcept { return order_; }

  // The augmentation of the sample at `position` in the order of `epoch` (identity when
  // evaluating).
  [[nodiscard]] AugmentParams augmentation(std::uint64_t epoch, std::size_t position) const noexcept;

  [[nodiscard]] const Dataset& dataset() const noexcept { return data_; }
  [[nodiscard]] const BatcherOptions& options() const noexcept { return options_; }

 private:
  const Dataset& data_;
  BatcherOptions options_;
  std::vector<std::size_t> order_;
  std::vector<float> images_;
  std::vector<std::int32_t> labels_;
  std::uint64_t epoch_ = 0;
  std::size_t cursor_ = 0;
  std::size_t skip_ = 0;  // positions after this worker's shard of the current batch
  std::size_t current_ = 0;
  std::size_t batches_done_ = 0;
};

}  // namespace resnet18
