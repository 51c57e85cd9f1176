// GPU ResNet-18 against the CPU model on the same weights and inputs: logits, loss, every gradient, running statistics, augmentation.
#include <doctest/doctest.h>

#include <cstring>

#include "augment.hpp"
#include "data.hpp"
#include "gpu_test_util.hpp"

using namespace resnet18;
using namespace resnet18::gpu;
using namespace resnet18::gpu::test;

namespace {

// Float32 on both sides, FMA-only convolutions on the GPU: what is left is summation
// order, which a few layers of batch norm keep near 1e-6 relative.
constexpr double kTolerance = 1e-4;

GpuModelOptions strict(Layout l, bool bn_persistent = false) {
  GpuModelOptions o;
  o.layout = l;
  o.tf32 = false;
  o.bn_persistent = bn_persistent;
  return o;
}

void compare_step(const ModelConfig& config, Layout layout, int batch, bool bn_persistent = false) {
  INFO(describe(config, layout), bn_persistent ? " (persistent batch norm)" : "", ", batch ", batch);
  ResNet18<float> cpu(config);
  GpuResNet18 gpu(config, strict(layout, bn_persistent));
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  random_batch(batch, config.in_channels, config.image_size, config.num_classes, 11, images, labels);

  // Same initialization: the GPU model starts from the host mirror, itself the CPU model's code.
  gpu.download_to_host();
  {
    auto a = gpu.host().flat_parameters();
    auto b = cpu.flat_parameters();
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), std::size_t(a.size()) * sizeof(float)) == 0);
  }

  const auto cpu_logits = cpu.forward(images.data(), batch, true);
  const std::vector<float> ref_logits(cpu_logits.data(), cpu_logits.data() + cpu_logits.size());
  const BatchResult ref = cpu.backward(labels.data());
  upload_batch(gpu, images, labels);
  gpu.forward(batch, true);
  gpu.loss(true);
  gpu.backward();
  const auto logits = download(gpu.logits(), std::size_t(config.num_classes) * batch);
  const auto stats = download(gpu.stats_device(), 1)[0];
  const auto grads = gpu.download_gradients();

  CHECK(relative_error(logits.data(), ref_logits.data(), logits.size()) < kTolerance);
  CHECK(stats.loss_sum / batch == doctest::Approx(ref.loss).epsilon(kTolerance));
  CHECK(stats.correct == ref.correct);
  CHECK(stats.batch == batch);

  const auto& info = cpu.parameter_info();
  const auto cg = cpu.gradients();
  double worst = 0;
  std::string worst_name;
  for (std::size_t t = 0; t < info.size(); ++t) {
    const double e = relative_error(grads.data() + info[t].offset, cg[t].data(), info[t].size);
    if (e > worst) worst = e, worst_name = info[t].name;
    INFO("gradient of ", info[t].name);
    CHECK(e < kTolerance);
  }
  // One line per case for benchmarks/gpu/device_check.sh's table.
  std::printf("GRADCHECK %s%s, batch %d: logits rel err %.2e, worst gradient rel err %.2e (%s)\n",
              describe(config, layout).c_str(), bn_persistent ? " (persistent BN)" : "", batch, relative_error(logits.data(), ref_logits.data(), logits.size()),
              worst, worst_name.c_str());

  // Running statistics after one training forward.
  gpu.download_to_host();
  auto gb = gpu.host().buffers();
  auto cb = cpu.buffers();
  for (std::size_t i = 0; i < cb.size(); ++i) {
    INFO("buffer ", cpu.buffer_info()[i].name);
    CHECK(relative_error(gb[i].data(), cb[i].data(), std::size_t(cb[i].size())) < kTolerance);
  }

  // Evaluation mode: running statistics.
  const BatchResult ev = cpu.evaluate(images.data(), labels.data(), batch);
  gpu.forward(batch, false);
  gpu.loss(false);
  const auto elogits = download(gpu.logits(), logits.size());
  const auto eref = cpu.forward(images.data(), batch, false);
  CHECK(relative_error(elogits.data(), eref.data(), elogits.size()) < kTolerance);
  CHECK(download(gpu.stats_device(), 1)[0].loss_sum / batch == doctest::Approx(ev.loss).epsilon(kTolerance));
}

}  // namespace

TEST_CASE("GPU forward, loss and every gradient match the CPU model (cifar stem)") {
  ModelConfig c;
  c.width = 8;
  c.image_size = 16;
  c.seed = 5;
  for (Layout l : {Layout::nhwc, Layout::nchw}) compare_step(c, l, 6);
}

TEST_CASE("GPU forward, loss and every gradient match the CPU model (imagenet stem, max pooling)") {
  ModelConfig c;
  c.width = 8;
  c.image_size = 32;
  c.stem = Stem::imagenet;
  c.in_channels = 1;
  c.num_classes = 7;
  c.seed = 9;
  for (Layout l : {Layout::nhwc, Layout::nchw}) compare_step(c, l, 5);
}

TEST_CASE("GPU model at full width on CIFAR-sized images matches the CPU model") {
  ModelConfig c;
  c.seed = 1;
  compare_step(c, Layout::nhwc, 4);
}

TEST_CASE("cuDNN's persistent batch-norm kernels (NHWC) match the CPU model too") {
  ModelConfig c;
  c.width = 16;
  c.image_size = 16;
  c.seed = 6;
  compare_step(c, Layout::nhwc, 8, true);
}

TEST_CASE("device augmentation reproduces the CPU Batcher bit for bit, in both memory formats") {
  SyntheticOptions so;
  so.count = 50;
  so.channels = 3;
  so.size = 12;
  const Dataset d = make_synthetic(so);
  for (Layout layout : {Layout::nchw, Layout::nhwc}) {
    INFO(to_string(layout));
    DeviceArray<float> images(d.images.size()), scale_shift(6), out(std::size_t(16) * d.image_size());
    DeviceArray<std::int32_t> labels(d.size()), labels_out(16);
    DeviceArray<AugmentRecord> records(16);
    std::vector<std::int32_t> wide(d.labels.begin(), d.labels.end());
    std::vector<float> scale, shift;
    normalization_constants(d.mean, d.stddev, scale, shift);
    scale.insert(scale.end(), shift.begin(), shift.end());
    GPU_CHECK(cudaMemcpy(images.data(), d.images.data(), d.images.size() * 4, cudaMemcpyHostToDevice));
    GPU_CHECK(cudaMemcpy(labels.data(), wide.data(), wide.size() * 4, cudaMemcpyHostToDevice));
    GPU_CHECK(cudaMemcpy(scale_shift.data(), scale.data(), scale.size() * 4, cudaMemcpyHostToDevice));
    for (bool train : {true, false}) {
      BatcherOptions o;
      o.batch_size = 16;
      o.seed = 21;
      o.train = train;
      o.crop_padding = 5;  // wider than usual: whole rows and columns of padding
      o.channels_last = layout == Layout::nhwc;
      Batcher b(d, o);
      b.start_epoch(2);
      std::vector<AugmentRecord> rec(16);
      while (const std::size_t n = b.next()) {
        fill_augment_records(b, rec);
        GPU_CHECK(cudaMemcpy(records.data(), rec.data(), n * sizeof(AugmentRecord), cudaMemcpyHostToDevice));
        const Dims4 dims = dims_of(Shape{1, d.height, d.width, d.channels}, int(n), layout);
        augment_batch(images.data(), labels.data(), records.data(), d.height, d.width, scale_shift.data(),
                      scale_shift.data() + 3, dims, out.data(), labels_out.data(), nullptr);
        const auto got = download(out.data(), n * d.image_size());
        const auto got_labels = download(labels_out.data(), n);
        CHECK(std::memcmp(got.data(), b.images().data(), got.size() * sizeof(float)) == 0);
        for (std::size_t i = 0; i < n; ++i) CHECK(got_labels[i] == b.labels()[i]);
      }
    }
  }
}

TEST_CASE("algorithm search runs once per distinct shape and batch, and heuristics also work") {
  ModelConfig c;
  c.width = 8;
  c.image_size = 16;
  GpuModelOptions o = strict(Layout::nhwc);
  GpuResNet18 m(c, o);
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  random_batch(4, 3, 16, 10, 3, images, labels);
  upload_batch(m, images, labels);
  m.forward(4, true);
  CHECK(m.algorithm_searches() == m.distinct_conv_shapes(4));
  m.forward(4, false);
  CHECK(m.algorithm_searches() == m.distinct_conv_shapes(4));
  random_batch(3, 3, 16, 10, 3, images, labels);
  upload_batch(m, images, labels);
  m.forward(3, true);
  CHECK(m.algorithm_searches() == m.distinct_conv_shapes(4) + m.distinct_conv_shapes(3));

  o.algo_search = AlgoSearch::heuristic;
  GpuResNet18 h(c, o);
  upload_batch(h, images, labels);
  h.forward(3, true);
  h.loss(true);
  h.backward();
  h.synchronize();
  CHECK(h.algorithm_searches() == h.distinct_conv_shapes(3));
}

TEST_CASE("TF32 convolutions stay close to float32 (loose tolerance)") {
  ModelConfig c;
  c.width = 16;
  c.image_size = 16;
  GpuModelOptions o;
  o.tf32 = true;
  GpuResNet18 g(c, o);
  ResNet18<float> cpu(c);
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  random_batch(8, 3, 16, 10, 4, images, labels);
  upload_batch(g, images, labels);
  g.forward(8, true);
  const auto logits = download(g.logits(), 80);
  const auto ref = cpu.forward(images.data(), 8, true);
  CHECK(relative_error(logits.data(), ref.data(), 80) < 2e-2);
}
