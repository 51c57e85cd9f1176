// Times ResNet-18 forward+backward (no optimizer) on random 32x32 images and prints images/s and a per-layer profile.
//
// usage: resnet18_bench [--threads N] [--batch 64,128] [--steps S] [--warmup W] [--width W]
//                       [--size S] [--channels C] [--stem cifar|imagenet] [--backend eigen|onednn]
//                       [--per-layer] [--double]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <omp.h>

#include <nestla/eigen.hpp>

#include "resnet.hpp"
#include "rng.hpp"

namespace {

struct Options {
  int threads = 0;
  std::vector<int> batches{64, 128};
  int steps = 5;
  int warmup = 2;
  resnet18::ModelConfig model;
  bool per_layer = false;
  bool use_double = false;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "resnet18_bench: %s\nusage: resnet18_bench [--threads N] [--batch 64,128] [--steps S] [--warmup W] "
               "[--width W] [--size S] [--channels C] [--stem cifar|imagenet] [--backend eigen|onednn] [--per-layer] "
               "[--double]\n",
               msg);
  std::exit(2);
}

int to_int(const char* s, const char* what) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < 0 || v > 1 << 20) usage((std::string("bad value for ") + what).c_str());
  return int(v);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--threads") {
      o.threads = to_int(value(), "--threads");
    } else if (a == "--batch") {
      o.batches.clear();
      std::stringstream ss(value());
      for (std::string item; std::getline(ss, item, ',');) o.batches.push_back(to_int(item.c_str(), "--batch"));
    } else if (a == "--steps") {
      o.steps = to_int(value(), "--steps");
    } else if (a == "--warmup") {
      o.warmup = to_int(value(), "--warmup");
    } else if (a == "--width") {
      o.model.width = to_int(value(), "--width");
    } else if (a == "--size") {
      o.model.image_size = to_int(value(), "--size");
    } else if (a == "--channels") {
      o.model.in_channels = to_int(value(), "--channels");
    } else if (a == "--stem") {
      const std::string s = value();
      if (s == "cifar")
        o.model.stem = resnet18::Stem::cifar;
      else if (s == "imagenet")
        o.model.stem = resnet18::Stem::imagenet;
      else
        usage("--stem takes cifar or imagenet");
    } else if (a == "--backend") {
      const std::string s = value();
      if (s == "eigen")
        o.model.conv_backend = resnet18::ConvBackend::eigen;
      else if (s == "onednn")
        o.model.conv_backend = resnet18::ConvBackend::onednn;
      else
        usage("--backend takes eigen or onednn");
    } else if (a == "--per-layer") {
      o.per_layer = true;
    } else if (a == "--double") {
      o.use_double = true;
    } else {
      usage(("unknown argument " + a).c_str());
    }
  }
  if (o.steps < 1) usage("--steps must be at least 1");
  return o;
}

template <class S>
void run(const Options& o) {
  using Clock = std::chrono::steady_clock;
  resnet18::ResNet18<S> model(o.model);
  std::printf("ResNet-18 %s stem, width %d, %dx%dx%d, %zu parameters, %.3f GFLOP/image forward, %d threads, %s, "
              "%s convolutions\n",
              o.model.stem == resnet18::Stem::cifar ? "CIFAR" : "ImageNet", o.model.width, o.model.image_size,
              o.model.image_size, o.model.in_channels, model.num_parameters(), 1e-9 * model.forward_flop_per_image(),
              omp_get_max_threads(), sizeof(S) == 4 ? "float32" : "float64", model.conv_backend_name());
  for (int batch : o.batches) {
    const std::size_t per_image = std::size_t(o.model.in_channels) * o.model.image_size * o.model.image_size;
    std::vector<S> images(per_image * std::size_t(batch));
    std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
    resnet18::Rng rng(1234);
    for (S& v : images) v = S(rng.normal());
    for (auto& l : labels) l = std::int32_t(rng.below(std::uint64_t(o.model.num_classes)));

    // A training step as the trainer takes it: forward, backward, then nestla's Adam over the
    // model's own storage (timed apart too, so the table above stays forward+backward).
    auto params = model.parameters();
    auto grads = model.gradients();
    nestla::Adam<S> adam({.lr = 1e-3});
    adam.set_threads(static_cast<unsigned>(omp_get_max_threads()));
    for (int i = 0; i < o.warmup; ++i) {
      model.train_step(images.data(), labels.data(), batch);
      adam.step(params, grads);
    }
    model.profile().reset();
    std::vector<double> times, step_times;
    for (int i = 0; i < o.steps; ++i) {
      const auto t0 = Clock::now();
      model.train_step(images.data(), labels.data(), batch);
      const auto t1 = Clock::now();
      adam.step(params, grads);
      times.push_back(std::chrono::duration<double>(t1 - t0).count());
      step_times.push_back(std::chrono::duration<double>(Clock::now() - t1).count());
    }
    std::sort(step_times.begin(), step_times.end());
    const double adam_median = step_times[step_times.size() / 2];
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    const double train_flop = 3.0 * model.forward_flop_per_image() * batch;

    // Inference throughput, unprofiled so that the table above stays forward+backward only.
    model.profile().enabled = false;
    model.forward(images.data(), batch, false);
    std::vector<double> eval_times;
    for (int i = 0; i < o.steps; ++i) {
      const auto t0 = Clock::now();
      model.forward(images.data(), batch, false);
      eval_times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    std::sort(eval_times.begin(), eval_times.end());
    model.profile().enabled = true;

    std::printf("\nbatch %d: forward+backward %.1f ms median (min %.1f, max %.1f) = %.1f images/s, %.0f GFLOP/s; "
                "with the Adam step (%.2f ms) %.1f images/s; inference %.1f images/s\n",
                batch, 1e3 * median, 1e3 * sorted.front(), 1e3 * sorted.back(), batch / median,
                1e-9 * train_flop / median, 1e3 * adam_median, batch / (median + adam_median),
                batch / eval_times[eval_times.size() / 2]);
    model.profile().print(std::cout, false);
    if (o.per_layer) {
      std::cout << "\n";
      model.profile().print(std::cout, true);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (o.threads > 0) {
    omp_set_num_threads(o.threads);
    Eigen::setNbThreads(o.threads);
  }
  try {
    if (o.use_double)
      run<double>(o);
    else
      run<float>(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "resnet18_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
