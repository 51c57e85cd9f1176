// resnet18_train: trains ResNet-18 with SGD, Adam, Lookahead or Nested Lookahead (nestla) and reports test accuracy.
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "cli.hpp"
#include "cpu_backend.hpp"
#ifdef RESNET18_WITH_CUDA
#include "cuda_backend.hpp"
#endif
#include "data.hpp"
#include "trainer.hpp"
#include "util.hpp"

namespace {

using namespace resnet18;

// The one place that knows the devices: a GPU backend adds its branch here.
std::unique_ptr<TrainingBackend> make_backend(const RunSetup& setup, const ModelConfig& model) {
  if (setup.cli.device == "cpu") {
    CpuBackendOptions o;
    o.model = model;
    o.optimizer = setup.optimizer;
    o.no_decay_bn_bias = setup.cli.no_decay_bn_bias;
    o.threads = setup.cli.threads;
    return std::make_unique<CpuBackend>(o);
  }
#ifdef RESNET18_WITH_CUDA
  if (setup.cli.device == "cuda") {
    CudaBackendOptions o;
    o.model = model;
    o.optimizer = setup.optimizer;
    o.no_decay_bn_bias = setup.cli.no_decay_bn_bias;
    o.gpu.layout = gpu::parse_layout(setup.cli.cuda_layout);
    o.gpu.tf32 = !setup.cli.no_tf32;
    o.gpu.algo_search = gpu::parse_algo_search(setup.cli.cuda_algo);
    o.profile = setup.cli.profile;
    return std::make_unique<CudaBackend>(o);
  }
#endif
  throw std::invalid_argument("--device " + setup.cli.device + " is not built into this trainer" +
                              (setup.cli.device == "cuda" ? " (configure with nvcc and cuDNN 9 found)" : ""));
}

std::string percent(const std::optional<double>& v) {
  if (!v) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * *v);
  return buf;
}

int run(RunSetup& setup) {
  const auto t0 = std::chrono::steady_clock::now();
  const Dataset train_set = load_dataset(setup.train_data, Split::train);
  const Dataset test_set = load_dataset(setup.test_data, Split::test);
  if (train_set.size() == 0) throw DataError(setup.cli.dataset + ": the training set is empty");
  if (train_set.height != train_set.width)
    throw DataError(setup.cli.dataset + ": images are " + std::to_string(train_set.height) + "x" +
                    std::to_string(train_set.width) + ", the model takes square ones");
  std::printf("data: %s, %zu training and %zu test images of %dx%dx%d, %d classes (%.1f s)\n", train_set.name.c_str(),
              train_set.size(), test_set.size(), train_set.channels, train_set.height, train_set.width,
              train_set.num_classes, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  ModelConfig model = setup.model;
  model.in_channels = train_set.channels;
  model.image_size = train_set.height;
  model.num_classes = train_set.num_classes;
  const auto backend = make_backend(setup, model);
  const std::string description = backend->describe();
  std::printf("model: %s\n", description.c_str());
  std::fflush(stdout);
  complete_run_info(setup, train_set, test_set, description);

  const TrainSummary s = train(*backend, train_set, test_set, setup.trainer, std::cout);
  std::printf("done: %d/%d epochs, %lld steps, %s; best test accuracy %s (epoch %d), final %s%s\n", s.epochs_done,
              setup.trainer.epochs, static_cast<long long>(s.steps), format_duration(s.seconds).c_str(),
              percent(s.best_test_acc).c_str(), s.best_epoch, percent(s.final_test_acc).c_str(),
              s.stopped_early ? " (stopped at --max-steps)" : "");
  if (!setup.trainer.checkpoint.empty()) std::printf("checkpoint: %s\n", setup.trainer.checkpoint.c_str());
  if (!setup.trainer.metrics.empty()) std::printf("metrics: %s\n", setup.trainer.metrics.c_str());
  if (setup.cli.profile) {
    std::cout << "\n";
    backend->print_profile(std::cout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CliConfig config;
  CLI::App app;
  add_options(app, config);
  RunSetup setup;
  try {
    app.parse(argc, argv);
    setup = finalize(app, config);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return run(setup);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "resnet18_train: error: %s\n", e.what());
    return 1;
  }
}
