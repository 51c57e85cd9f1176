// Tests of augment_image and the Batcher: crop/flip against a pad-then-crop reference, order, determinism.
#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <vector>

#include "augment.hpp"

using namespace resnet18;

namespace {

// A dataset of `n` C x H x W images whose pixels encode (image, c, y, x).
Dataset tiny_dataset(std::size_t n, int c, int h, int w) {
  Dataset d;
  d.name = "tiny";
  d.channels = c;
  d.height = h;
  d.width = w;
  d.num_classes = 10;
  for (std::size_t i = 0; i < n; ++i) {
    d.labels.push_back(static_cast<std::uint8_t>(i % 10));
    for (int ch = 0; ch < c; ++ch)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          d.images.push_back(static_cast<float>(i * 1000 + static_cast<std::size_t>(ch * 100 + y * 10 + x + 1)));
  }
  d.mean.assign(static_cast<std::size_t>(c), 0.0f);
  d.stddev.assign(static_cast<std::size_t>(c), 1.0f);
  return d;
}

// torchvision's order of operations, literally: pad with zeros, take the window at
// (pad + dy, pad + dx), mirror it, then normalize.
std::vector<float> reference(const float* src, int c, int h, int w, int pad, AugmentParams a, const float* mean,
                             const float* stddev) {
  const int ph = h + 2 * pad, pw = w + 2 * pad;
  std::vector<float> padded(static_cast<std::size_t>(c * ph * pw), 0.0f);
  for (int ch = 0; ch < c; ++ch)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        padded[static_cast<std::size_t>((ch * ph + y + pad) * pw + x + pad)] = src[(ch * h + y) * w + x];
  std::vector<float> out(static_cast<std::size_t>(c * h * w));
  for (int ch = 0; ch < c; ++ch)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const int cx = a.flip ? w - 1 - x : x;
        const float v = padded[static_cast<std::size_t>((ch * ph + y + pad + a.dy) * pw + cx + pad + a.dx)];
        out[static_cast<std::size_t>((ch * h + y) * w + x)] = (v - mean[ch]) / stddev[ch];
      }
  return out;
}

std::vector<std::vector<float>> epoch_batches(Batcher& b, std::uint64_t epoch) {
  std::vector<std::vector<float>> out;
  b.start_epoch(epoch);
  while (b.next() > 0) out.emplace_back(b.images().begin(), b.images().end());
  return out;
}

}  // namespace

TEST_CASE("flip and crop on a tiny known image") {
  // 1 x 2 x 3 image:  1 2 3
  //                   4 5 6
  const float src[6] = {1, 2, 3, 4, 5, 6};
  const float mean = 0, sd = 1;
  float out[6];

  augment_image(src, out, 1, 2, 3, {0, 0, false}, &mean, &sd);
  CHECK(std::vector<float>(out, out + 6) == std::vector<float>{1, 2, 3, 4, 5, 6});
  augment_image(src, out, 1, 2, 3, {0, 0, true}, &mean, &sd);
  CHECK(std::vector<float>(out, out + 6) == std::vector<float>{3, 2, 1, 6, 5, 4});
  // Window moved one right: the last column comes from the padding.
  augment_image(src, out, 1, 2, 3, {0, 1, false}, &mean, &sd);
  CHECK(std::vector<float>(out, out + 6) == std::vector<float>{2, 3, 0, 5, 6, 0});
  // Window moved one up and one left.
  augment_image(src, out, 1, 2, 3, {-1, -1, false}, &mean, &sd);
  CHECK(std::vector<float>(out, out + 6) == std::vector<float>{0, 0, 0, 0, 1, 2});
  // Crop then mirror the window.
  augment_image(src, out, 1, 2, 3, {1, 1, true}, &mean, &sd);
  CHECK(std::vector<float>(out, out + 6) == std::vector<float>{0, 6, 5, 0, 0, 0});
  // Padding is black before normalization: (0 - mean) / std.
  const float m2 = 2, s2 = 4;
  augment_image(src, out, 1, 2, 3, {0, -2, false}, &m2, &s2);
  CHECK(std::vector<float>(out, out + 6) == std::vector<float>{-0.5f, -0.5f, -0.25f, -0.5f, -0.5f, 0.5f});
  // A shift by the full width leaves only padding.
  augment_image(src, out, 1, 2, 3, {0, 3, true}, &mean, &sd);
  CHECK(std::vector<float>(out, out + 6) == std::vector<float>(6, 0.0f));
}

TEST_CASE("augment_image matches pad-crop-flip for every offset, and channels_last is its transpose") {
  const Dataset d = tiny_dataset(1, 3, 5, 7);
  const float mean[3] = {0.5f, 20.0f, -3.0f};
  const float sd[3] = {2.0f, 0.25f, 8.0f};
  const int pad = 4;
  std::vector<float> nchw(3 * 5 * 7), nhwc(3 * 5 * 7);
  for (int dy = -pad; dy <= pad; ++dy)
    for (int dx = -pad; dx <= pad; ++dx)
      for (const bool flip : {false, true}) {
        CAPTURE(dy);
        CAPTURE(dx);
        CAPTURE(flip);
        const AugmentParams a{dy, dx, flip};
        const auto ref = reference(d.images.data(), 3, 5, 7, pad, a, mean, sd);
        augment_image(d.images.data(), nchw.data(), 3, 5, 7, a, mean, sd);
        bool close = true;
        for (std::size_t i = 0; i < ref.size(); ++i) close &= std::abs(ref[i] - nchw[i]) <= 1e-5f * (1 + std::abs(ref[i]));
        CHECK(close);
        augment_image(d.images.data(), nhwc.data(), 3, 5, 7, a, mean, sd, true);
        bool transposed = true;
        for (int c = 0; c < 3; ++c)
          for (int y = 0; y < 5; ++y)
            for (int x = 0; x < 7; ++x) transposed &= nhwc[static_cast<std::size_t>((y * 7 + x) * 3 + c)] ==
                                                      nchw[static_cast<std::size_t>((c * 5 + y) * 7 + x)];
        CHECK(transposed);
      }
}

TEST_CASE("evaluation batches are the normalized images in dataset order") {
  Dataset d = tiny_dataset(10, 2, 3, 4);
  d.mean = {1.0f, 2.0f};
  d.stddev = {2.0f, 4.0f};
  BatcherOptions o;
  o.batch_size = 4;
  o.train = false;
  Batcher b(d, o);
  CHECK(b.batches_per_epoch() == 3);
  std::size_t seen = 0;
  for (const std::size_t expected : {std::size_t{4}, std::size_t{4}, std::size_t{2}}) {
    REQUIRE(b.next() == expected);
    CHECK(b.size() == expected);
    REQUIRE(b.images().size() == expected * 24);
    REQUIRE(b.labels().size() == expected);
    for (std::size_t i = 0; i < expected; ++i) {
      CHECK(b.indices()[i] == seen + i);
      CHECK(b.labels()[i] == d.labels[seen + i]);
      for (std::size_t k = 0; k < 24; ++k) {
        const float want = (d.images[(seen + i) * 24 + k] - d.mean[k / 12]) / d.stddev[k / 12];
        CHECK(b.images()[i * 24 + k] == doctest::Approx(want).epsilon(1e-6));
      }
    }
    seen += expected;
  }
  CHECK(b.next() == 0);
  CHECK(b.next() == 0);
  CHECK(b.batches_done() == 3);
  for (std::size_t p = 0; p < 10; ++p) {
    const AugmentParams a = b.augmentation(5, p);
    CHECK(a.dx == 0);
    CHECK(a.dy == 0);
    CHECK_FALSE(a.flip);
  }
}

TEST_CASE("a training epoch visits every image once and applies the drawn augmentation") {
  const Dataset d = tiny_dataset(23, 1, 6, 6);
  BatcherOptions o;
  o.batch_size = 5;
  o.seed = 7;
  Batcher b(d, o);
  b.start_epoch(2);
  std::vector<std::size_t> visited;
  std::size_t position = 0;
  std::vector<float> expected(36);
  while (const std::size_t n = b.next()) {
    for (std::size_t i = 0; i < n; ++i, ++position) {
      const std::size_t index = b.indices()[i];
      visited.push_back(index);
      CHECK(b.labels()[i] == d.labels[index]);
      augment_image(d.images.data() + index * 36, expected.data(), 1, 6, 6, b.augmentation(2, position),
                    d.mean.data(), d.stddev.data());
      CHECK(std::equal(expected.begin(), expected.end(), b.images().begin() + static_cast<std::ptrdiff_t>(i * 36)));
    }
  }
  CHECK(visited.size() == 23);
  std::vector<std::size_t> sorted = visited;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::size_t> all(23);
  std::iota(all.begin(), all.end(), std::size_t{0});
  CHECK(sorted == all);
  CHECK(visited != all);  // shuffled
  CHECK(std::equal(visited.begin(), visited.end(), b.order().begin()));
}

TEST_CASE("batches are a function of (seed, epoch) alone") {
  const Dataset d = tiny_dataset(40, 3, 8, 8);
  BatcherOptions o;
  o.batch_size = 16;
  o.seed = 1234;
  Batcher a(d, o), b(d, o);
  const auto a0 = epoch_batches(a, 0);
  const auto a1 = epoch_batches(a, 1);
  const auto a3 = epoch_batches(a, 3);
  // b jumps straight to epoch 3, then goes back to 0: same batches as a.
  CHECK(epoch_batches(b, 3) == a3);
  CHECK(epoch_batches(b, 0) == a0);
  CHECK(a0 != a1);
  CHECK(a1 != a3);
  o.seed = 1235;
  Batcher c(d, o);
  CHECK(epoch_batches(c, 0) != a0);
}

TEST_CASE("crop offsets stay within the padding and cover it, and flips are about half") {
  const Dataset d = tiny_dataset(2, 1, 32, 32);
  BatcherOptions o;
  o.seed = 99;
  const Batcher b(d, o);
  std::set<int> dys, dxs;
  int flips = 0;
  const int draws = 20000;
  for (int p = 0; p < draws; ++p) {
    const AugmentParams a = b.augmentation(static_cast<std::uint64_t>(p % 7), static_cast<std::size_t>(p));
    REQUIRE(a.dy >= -4);
    REQUIRE(a.dy <= 4);
    REQUIRE(a.dx >= -4);
    REQUIRE(a.dx <= 4);
    dys.insert(a.dy);
    dxs.insert(a.dx);
    flips += a.flip;
  }
  CHECK(dys.size() == 9);
  CHECK(dxs.size() == 9);
  CHECK(flips > draws * 45 / 100);
  CHECK(flips < draws * 55 / 100);

  o.crop_padding = 0;
  o.horizontal_flip = false;
  const Batcher none(d, o);
  for (std::size_t p = 0; p < 100; ++p) {
    const AugmentParams a = none.augmentation(0, p);
    CHECK(a.dy == 0);
    CHECK(a.dx == 0);
    CHECK_FALSE(a.flip);
  }
}

TEST_CASE("drop_last skips the short final batch") {
  const Dataset d = tiny_dataset(10, 1, 2, 2);
  BatcherOptions o;
  o.batch_size = 4;
  o.drop_last = true;
  Batcher b(d, o);
  CHECK(b.batches_per_epoch() == 2);
  CHECK(b.next() == 4);
  CHECK(b.next() == 4);
  CHECK(b.next() == 0);
  CHECK(b.size() == 0);
}

TEST_CASE("the Batcher rejects bad configurations with the reason") {
  Dataset d = tiny_dataset(3, 2, 4, 4);
  BatcherOptions o;
  o.batch_size = 0;
  CHECK_THROWS_WITH_AS(Batcher(d, o), "Batcher: batch_size must be positive", std::invalid_argument);
  o.batch_size = 2;
  o.crop_padding = -1;
  CHECK_THROWS_WITH_AS(Batcher(d, o), "Batcher: crop_padding -1 is out of range 0..65536", std::invalid_argument);
  o.crop_padding = 4;
  d.stddev = {1.0f};
  CHECK_THROWS_WITH_AS(Batcher(d, o), "Batcher: dataset 'tiny' has 2 means and 1 standard deviations for 2 channels",
                       std::invalid_argument);
  d.stddev = {1.0f, 0.0f};
  CHECK_THROWS_AS(Batcher(d, o), std::invalid_argument);
  Dataset empty = tiny_dataset(0, 1, 2, 2);
  CHECK_THROWS_WITH_AS(Batcher(empty, o), "Batcher: dataset 'tiny' is empty", std::invalid_argument);
}

TEST_CASE("shards: each worker takes its contiguous part of every batch of the same epoch order") {
  const Dataset d = tiny_dataset(23, 1, 4, 4);
  BatcherOptions o;
  o.batch_size = 8;  // batches of 8, 8 and 7; 3 workers take 2/3/3, 2/3/3 and 2/2/3
  o.seed = 5;
  Batcher whole(d, o);
  whole.start_epoch(1);
  std::vector<std::vector<std::size_t>> batches;
  std::vector<std::vector<float>> images;
  while (whole.next() > 0) {
    batches.emplace_back(whole.indices().begin(), whole.indices().end());
    images.emplace_back(whole.images().begin(), whole.images().end());
  }
  REQUIRE(batches.size() == 3);
  for (std::size_t shards : {std::size_t(2), std::size_t(3)}) {
    std::vector<std::vector<std::size_t>> joined(batches.size());
    std::vector<std::vector<float>> joined_images(batches.size());
    for (std::size_t w = 0; w < shards; ++w) {
      o.shards = shards;
      o.shard = w;
      Batcher part(d, o);
      CHECK(part.batches_per_epoch() == 3);
      part.start_epoch(1);
      std::size_t i = 0;
      while (const std::size_t n = part.next()) {
        REQUIRE(i < batches.size());
        CHECK(n == batches[i].size() * (w + 1) / shards - batches[i].size() * w / shards);
        joined[i].insert(joined[i].end(), part.indices().begin(), part.indices().end());
        joined_images[i].insert(joined_images[i].end(), part.images().begin(), part.images().end());
        ++i;
      }
      CHECK(i == batches.size());
    }
    CAPTURE(shards);
    CHECK(joined == batches);  // the same images, with the same augmentation draws
    CHECK(joined_images == images);
  }
}

TEST_CASE("shards: a final batch smaller than the number of workers is dropped on every worker") {
  const Dataset d = tiny_dataset(10, 1, 2, 2);
  BatcherOptions o;
  o.batch_size = 4;  // 4, 4, then 2: fewer than 3 workers
  o.shards = 3;
  for (std::size_t w = 0; w < 3; ++w) {
    o.shard = w;
    Batcher b(d, o);
    CHECK(b.batches_per_epoch() == 2);
    CHECK(b.next() > 0);
    CHECK(b.next() > 0);
    CHECK(b.next() == 0);
  }
  o.shard = 3;
  CHECK_THROWS_AS(Batcher(d, o), std::invalid_argument);
  o.shard = 0;
  o.shards = 5;  // more workers than images in a batch
  CHECK_THROWS_AS(Batcher(d, o), std::invalid_argument);
}
