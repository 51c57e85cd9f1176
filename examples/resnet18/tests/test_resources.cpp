// Memory lower bounds of a run: exact counts against the model, refusals naming the option, bad_alloc mapped to it.
#include <doctest/doctest.h>

#include <new>
#include <stdexcept>
#include <string>

#include "resources.hpp"
#include "resnet.hpp"

using namespace resnet18;

TEST_CASE("resources: the parameter count is the model's, for every stem, width, input and class count") {
  for (Stem stem : {Stem::cifar, Stem::imagenet})
    for (int width : {1, 3, 8})
      for (int in_channels : {1, 3})
        for (int size : {5, 16, 28})
          for (int classes : {2, 10}) {
            ModelConfig m;
            m.stem = stem;
            m.width = width;
            m.in_channels = in_channels;
            m.image_size = size;
            m.num_classes = classes;
            CAPTURE(width);
            CAPTURE(size);
            CHECK(resnet18_parameter_count(m) == ResNet18<float>(m).num_parameters());
          }
  ModelConfig full;  // torchvision's CIFAR-stem ResNet-18 at width 64
  CHECK(resnet18_parameter_count(full) == 11173962);
}

// Counted by hand from resnet.cpp's buffers (one per convolution and per batch norm, the
// input, the pool, features, logits and their gradients): width 1, one 4x4 channel, 2 classes.
TEST_CASE("resources: activations per image, counted by hand") {
  ModelConfig m;
  m.width = 1;
  m.in_channels = 1;
  m.image_size = 4;
  m.num_classes = 2;
  // input 16; stem conv + bn 2 x 16; layer1 (1 channel, 4x4) 8 x 16; layer2 (2, 2x2) 6 x 8
  // + 4 x 8 (its first block has the shortcut's conv + bn); layer3 (4, 1x1) 10 x 4;
  // layer4 (8, 1x1) 10 x 8; features and logits with their gradients 8 + 8 + 2 + 2.
  CHECK(resnet18_activations_per_image(m) == 16 + 32 + 128 + 80 + 40 + 80 + 20);
  // The ImageNet stem: 7x7/2 convolution to 2x2 (conv + bn 2 x 4), 3x3/2 max pool to 1x1
  // (1); every stage then at 1x1: 8 x 1, 10 x 2, 10 x 4, 10 x 8.
  m.stem = Stem::imagenet;
  CHECK(resnet18_activations_per_image(m) == 16 + 8 + 1 + 8 + 20 + 40 + 80 + 20);
}

TEST_CASE("resources: a model or batch that cannot fit is refused, naming the option") {
  ModelConfig m;  // width 64, 32x32x3
  OptimizerSpec adam;
  adam.levels = {{5, 0.5, nestla::Momentum::keep}, {5, 0.5, nestla::Momentum::keep}};
  const std::uint64_t gib = std::uint64_t(1) << 30;
  // 11.2 M parameters x (value, gradient, m, v, 2 slow copies) x 4 bytes = 268 MB.
  const CpuMemoryNeed need = cpu_memory_need(m, adam, 64, 0);
  CHECK(need.model == 11173962ull * 6 * 4);
  CHECK(need.step == (resnet18_activations_per_image(m) + 3 * 32 * 32) * 64 * 4);
  CHECK_NOTHROW(check_cpu_memory(m, adam, 64, 0, 0, 4 * gib));

  // Convolutions scale with width^2 (11,157,504 / 64^2 = 2724 per width^2), the stem
  // convolution, batch norms and fc linearly: at 4096, 2724 w^2 + 27 w + 150 w + 80 w + 10.
  m.width = 4096;
  CHECK_THROWS_WITH_AS(check_cpu_memory(m, adam, 64, 0, 0, 512 * gib),
                       doctest::Contains("--width 4096: the model's 45702189066 parameters, their gradients and the "
                                         "optimizer's state need at least 1021.5 GiB, more than the 512.0 GiB"),
                       RefusedError);
  m.width = 64;
  CHECK_THROWS_WITH_AS(check_cpu_memory(m, adam, 65536, 0, 0, 4 * gib),
                       doctest::Contains("--batch-size 65536: a batch's activations at --width 64 on 32x32 images"),
                       RefusedError);
  CHECK_THROWS_WITH_AS(check_cpu_memory(m, adam, 64, 65536, 0, 4 * gib),
                       doctest::Contains("--eval-batch-size 65536"), RefusedError);
  // The data counts too: a model that fits, with the data it does not.
  CHECK_THROWS_WITH_AS(check_cpu_memory(m, adam, 64, 0, 4 * gib, 4 * gib), doctest::Contains("--width 64"),
                       RefusedError);
  // Saturating, never wrapping: the largest values the options allow.
  m.width = 4096;
  m.image_size = 1024;
  CHECK_THROWS_AS(check_cpu_memory(m, adam, 65536, 65536, ~std::uint64_t(0), ~std::uint64_t(0) - 1), RefusedError);
  CHECK(format_bytes(512) == "512 bytes");
  CHECK(format_bytes(3 * gib / 2) == "1.5 GiB");
}

TEST_CASE("resources: std::bad_alloc and std::length_error become a refusal naming the option") {
  CHECK_THROWS_WITH_AS(allocation_for("--width 4096", []() -> int { throw std::bad_alloc(); }),
                       "--width 4096: more memory than can be allocated here (std::bad_alloc); use a smaller value",
                       RefusedError);
  CHECK_THROWS_WITH_AS(allocation_for("--train-subset 7", []() -> int { throw std::length_error("vector"); }),
                       doctest::Contains("--train-subset 7: a size larger than can be allocated"), RefusedError);
  CHECK(allocation_for("--width 8", [] { return 42; }) == 42);
  CHECK_THROWS_AS(allocation_for("--width 8", []() -> int { throw std::runtime_error("other"); }), std::runtime_error);
  CHECK(memory_limit_bytes() > (std::uint64_t(64) << 20));
}
