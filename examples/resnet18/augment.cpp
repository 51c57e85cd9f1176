// Batcher: seeded per-epoch shuffles and per-sample crop/flip draws, written into preallocated buffers.
#include "augment.hpp"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "rng.hpp"

namespace resnet18 {

void augment_image(const float* src, float* dst, int channels, int height, int width, AugmentParams a,
                   const float* mean, const float* stddev, bool channels_last) {
  const auto C = static_cast<std::size_t>(channels);
  const auto W = static_cast<std::size_t>(width);
  const std::size_t hw = static_cast<std::size_t>(height) * W;
  // Strides of dst in elements; NCHW keeps x contiguous, NHWC interleaves the channels.
  const std::size_t cs = channels_last ? 1 : hw;
  const std::size_t ys = channels_last ? W * C : W;
  const std::size_t xs = channels_last ? C : 1;
  // Output columns whose source column lies inside the image form one interval [lo, hi);
  // everything left and right of it is padding. Source column: x + dx, or W - 1 - x + dx
  // when flipped.
  const int lo_i = std::max(0, a.flip ? a.dx : -a.dx);
  const int hi_i = std::min(width, a.flip ? width + a.dx : width - a.dx);
  const bool any_column = lo_i < hi_i;
  const auto lo = static_cast<std::size_t>(any_column ? lo_i : 0);
  const auto hi = static_cast<std::size_t>(any_column ? hi_i : 0);
  for (std::size_t c = 0; c < C; ++c) {
    const float scale = 1.0f / stddev[c];
    const float shift = -mean[c] * scale;  // also the value of a padded (black) pixel
    const float* plane = src + c * hw;
    for (int y = 0; y < height; ++y) {
      float* out = dst + c * cs + static_cast<std::size_t>(y) * ys;
      const int sy = y + a.dy;
      if (sy < 0 || sy >= height || !any_column) {
        for (std::size_t x = 0; x < W; ++x) out[x * xs] = shift;
        continue;
      }
      const float* row = plane + static_cast<std::size_t>(sy) * W;
      for (std::size_t x = 0; x < lo; ++x) out[x * xs] = shift;
      if (!a.flip) {
        // row + dx may point before the row; only [lo, hi) is read, which is inside it.
        for (std::size_t x = lo; x < hi; ++x) out[x * xs] = row[static_cast<std::ptrdiff_t>(x) + a.dx] * scale + shift;
      } else {
        const std::ptrdiff_t last = width - 1 + a.dx;
        for (std::size_t x = lo; x < hi; ++x) out[x * xs] = row[last - static_cast<std::ptrdiff_t>(x)] * scale + shift;
      }
      for (std::size_t x = hi; x < W; ++x) out[x * xs] = shift;
    }
  }
}

Batcher::Batcher(const Dataset& data, const BatcherOptions& options) : data_(data), options_(options) {
  if (options_.batch_size == 0) throw std::invalid_argument("Batcher: batch_size must be positive");
  if (data_.size() == 0) throw std::invalid_argument("Batcher: dataset '" + data_.name + "' is empty");
  if (data_.images.size() != data_.size() * data_.image_size()) {
    throw std::invalid_argument("Batcher: dataset '" + data_.name + "' has " + std::to_string(data_.images.size()) +
                                " floats, expected " + std::to_string(data_.size()) + " images of " +
                                std::to_string(data_.image_size()));
  }
  const auto channels = static_cast<std::size_t>(data_.channels);
  if (data_.mean.size() != channels || data_.stddev.size() != channels) {
    throw std::invalid_argument("Batcher: dataset '" + data_.name + "' has " + std::to_string(data_.mean.size()) +
                                " means and " + std::to_string(data_.stddev.size()) +
                                " standard deviations for " + std::to_string(channels) + " channels");
  }
  for (std::size_t c = 0; c < channels; ++c) {
    if (!(data_.stddev[c] > 0.0f)) {
      throw std::invalid_argument("Batcher: dataset '" + data_.name + "' channel " + std::to_string(c) +
                                  " has standard deviation " + std::to_string(data_.stddev[c]) + ", must be > 0");
    }
  }
  // A padding wider than the image is pointless but harmless (some crops are all black);
  // the upper bound only keeps 2 * padding + 1 far from overflow.
  if (options_.shards == 0 || options_.shard >= options_.shards || options_.shards > options_.batch_size) {
    throw std::invalid_argument("Batcher: shard " + std::to_string(options_.shard) + " of " +
                                std::to_string(options_.shards) + " with batch size " +
                                std::to_string(options_.batch_size) +
                                " (every worker needs at least one image of each batch)");
  }
  if (options_.crop_padding < 0 || options_.crop_padding > 65536) {
    throw std::invalid_argument("Batcher: crop_padding " + std::to_string(options_.crop_padding) +
                                " is out of range 0..65536");
  }
  order_.resize(data_.size());
  images_.resize(options_.batch_size * data_.image_size());
  labels_.resize(options_.batch_size);
  start_epoch(0);
}

void Batcher::start_epoch(std::uint64_t epoch) {
  epoch_ = epoch;
  cursor_ = 0;
  skip_ = 0;
  current_ = 0;
  batches_done_ = 0;
  std::iota(order_.begin(), order_.end(), std::size_t{0});
  if (options_.train) {
    Rng rng(mix64(mix64(options_.seed, 0x5eed0bde5), epoch));
    rng.shuffle(order_.data(), order_.size());
  }
}

std::size_t Batcher::batches_per_epoch() const noexcept {
  const std::size_t n = data_.size();
  const std::size_t b = options_.batch_size;
  const bool short_last = n % b != 0 && (options_.drop_last || n % b < options_.shards);
  return short_last ? n / b : (n + b - 1) / b;
}

AugmentParams Batcher::augmentation(std::uint64_t epoch, std::size_t position) const noexcept {
  AugmentParams a;
  if (!options_.train) return a;
  // A hash of (seed, epoch, position) rather than a running generator: any batch can be
  // rebuilt on its own, and a parallel fill would draw the same values.
  const std::uint64_t h = mix64(mix64(mix64(options_.seed, 0xa0937e11), epoch), position);
  if (options_.crop_padding > 0) {
    const auto range = static_cast<std::uint64_t>(2 * options_.crop_padding + 1);
    // 32 bits per draw: the modulo bias is below 1e-8.
    a.dy = static_cast<int>((h & 0xffffffffu) % range) - options_.crop_padding;
    a.dx = static_cast<int>(((h >> 32) & 0x7fffffffu) % range) - options_.crop_padding;
  }
  if (options_.horizontal_flip) a.flip = (h >> 63) != 0;
  return a;
}

std::size_t Batcher::next() {
  const std::size_t n = data_.size();
  cursor_ += skip_;  // the rest of the previous batch, the other workers' shards
  skip_ = 0;
  const std::size_t remaining = n - cursor_;
  const std::size_t global = std::min(remaining, options_.batch_size);
  if (global == 0 || (options_.drop_last && global < options_.batch_size) || global < options_.shards) {
    current_ = 0;
    cursor_ = n;
    return 0;
  }
  // This worker's part of the batch: positions [cursor_ + lo, cursor_ + hi).
  const std::size_t lo = global * options_.shard / options_.shards;
  const std::size_t hi = global * (options_.shard + 1) / options_.shards;
  const std::size_t count = hi - lo;
  cursor_ += lo;
  const std::size_t image_size = data_.image_size();
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t position = cursor_ + i;
    const std::size_t index = order_[position];
    if (options_.fill_images)
      augment_image(data_.images.data() + index * image_size, images_.data() + i * image_size, data_.channels,
                    data_.height, data_.width, augmentation(epoch_, position), data_.mean.data(),
                    data_.stddev.data(), options_.channels_last);
    labels_[i] = data_.labels[index];
  }
  cursor_ += count;
  current_ = count;
  // indices() reads [cursor_ - current_, cursor_): keep it there until the next batch.
  skip_ = global - hi;
  ++batches_done_;
  return count;
}

}  // namespace resnet18
