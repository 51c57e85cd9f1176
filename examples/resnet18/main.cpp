// resnet18_train: trains ResNet-18 with SGD, Adam, Lookahead or Nested Lookahead (nestla) and reports test accuracy.
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>

#include "cli.hpp"
#include "cpu_backend.hpp"
#ifdef RESNET18_WITH_CUDA
#include "cuda_backend.hpp"
#include "nccl_groups.hpp"
#endif
#include "data.hpp"
#include "resources.hpp"
#include "trainer.hpp"
#include "util.hpp"
#include "workers.hpp"

namespace {

using namespace resnet18;

// Exit statuses (documented in --help and the README). All below 128, which shells use
// for "killed by a signal" (a second SIGINT ends the run that way, on purpose).
constexpr int kExitFailed = 1;       // an error while training
constexpr int kExitRefused = 2;      // refused before training: nothing was written
constexpr int kExitInterrupted = 75;  // SIGINT/SIGTERM: stopped after a step and saved (sysexits' EX_TEMPFAIL)

// The one place that knows the devices: a GPU backend adds its branch here.
std::unique_ptr<TrainingBackend> make_backend(const RunSetup& setup, const ModelConfig& model, const Workers& workers) {
  if (setup.cli.device == "cpu") {
    CpuBackendOptions o;
    o.model = model;
    o.optimizer = setup.optimizer;
    o.no_decay_bn_bias = setup.cli.no_decay_bn_bias;
    o.threads = setup.cli.threads;
    o.groups = workers.host_groups(setup.groups, setup.optimizer.depth());
    return std::make_unique<CpuBackend>(o);
  }
#ifdef RESNET18_WITH_CUDA
  if (setup.cli.device == "cuda") {
    if (workers.size() > 1) select_cuda_device(workers.local_rank());
    CudaBackendOptions o;
    o.groups = nccl_groups(workers, setup.groups, setup.optimizer.depth());
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
  throw RefusedError("--device " + setup.cli.device + " is not built into this trainer" +
                     (setup.cli.device == "cuda" ? " (configure with nvcc and cuDNN 9 found)" : ""));
}

std::string percent(const std::optional<double>& v) {
  if (!v) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * *v);
  return buf;
}

std::uint64_t image_bytes(const Dataset& d) {
  return std::uint64_t(d.size()) * std::uint64_t(d.channels) * std::uint64_t(d.height) * std::uint64_t(d.width) *
         sizeof(float);
}

Dataset load(const DatasetOptions& options, Split split) {
  if (options.name != "synthetic") return load_dataset(options, split);
  // Generated: its size is the option's.
  const char* option = split == Split::train ? "--train-subset" : "--test-subset";
  const std::uint64_t count = options.synthetic.count;
  const std::uint64_t bytes = count * 3 * std::uint64_t(options.synthetic.size) * std::uint64_t(options.synthetic.size) *
                              sizeof(float);
  const std::uint64_t limit = memory_limit_bytes();
  const std::string named = std::string(option) + " " + std::to_string(count);
  if (bytes > limit)
    throw RefusedError(named + ": " + std::to_string(count) + " synthetic images of " +
                       std::to_string(options.synthetic.size) + "x" + std::to_string(options.synthetic.size) +
                       " need " + format_bytes(bytes) + ", more than the " + format_bytes(limit) +
                       " of memory and swap this process can have");
  return allocation_for(named, [&] { return load_dataset(options, split); });
}

int run(RunSetup& setup, const Workers& workers) {
  const auto t0 = std::chrono::steady_clock::now();
  // Files first: a bad --checkpoint is reported now, not after the data and an epoch.
  for (const std::string& note : check_files(setup.trainer)) std::printf("%s\n", note.c_str());
  const Dataset train_set = load(setup.train_data, Split::train);
  const Dataset test_set = load(setup.test_data, Split::test);
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
  if (setup.cli.device == "cpu")
    check_cpu_memory(model, setup.optimizer, setup.trainer.batch_size, setup.trainer.eval_batch_size,
                     image_bytes(train_set) + image_bytes(test_set), memory_limit_bytes());
  const auto backend = allocation_for("--width " + std::to_string(model.width), [&] {
    // Nothing is written yet: a device that cannot hold or run the model is a refusal too.
    try {
      return make_backend(setup, model, workers);
    } catch (const RefusedError&) {
      throw;
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::length_error&) {
      throw;
    } catch (const std::exception& e) {
      throw RefusedError("--device " + setup.cli.device + ": cannot set up the model (--width " +
                         std::to_string(model.width) + "): " + e.what());
    }
  });
  const std::string description = backend->describe();
  std::printf("model: %s\n", description.c_str());
  const std::vector<std::string> layout = Workers::layout(setup.groups, setup.optimizer.depth());
  if (workers.size() > 1) std::printf("workers: %s\n", Workers::describe(layout, workers.size()).c_str());
  std::fflush(stdout);
  complete_run_info(setup, train_set, test_set, description);
  setup.trainer.run_info["workers"] = workers.size();
  if (workers.size() > 1) setup.trainer.run_info["groups"] = layout;
  setup.trainer.workers = &workers;

  const TrainSummary s = train(*backend, train_set, test_set, setup.trainer, std::cout);
  if (s.interrupted) {
    std::fflush(stdout);
    const std::string where = "epoch " + std::to_string(s.epochs_done + 1) + ", batch " +
                              std::to_string(s.batches_done) + ", step " + std::to_string(s.steps);
    if (s.steps_this_run == 0)
      std::fprintf(stderr, "resnet18_train: interrupted by %s before the first step; nothing was written\n",
                   signal_name(s.interrupted).c_str());
    else if (!setup.trainer.checkpoint.empty())
      std::fprintf(stderr,
                   "resnet18_train: interrupted by %s at %s; checkpoint saved to %s: continue with --resume %s\n",
                   signal_name(s.interrupted).c_str(), where.c_str(), setup.trainer.checkpoint.c_str(),
                   setup.trainer.checkpoint.c_str());
    else
      std::fprintf(stderr,
                   "resnet18_train: interrupted by %s at %s; no --checkpoint was given, so this run's progress is "
                   "not saved\n",
                   signal_name(s.interrupted).c_str(), where.c_str());
    return kExitInterrupted;
  }
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

int worker_rank = 0, worker_count = 1;  // for messages

int report(const char* kind, const char* what, int code) {
  std::fflush(stdout);
  if (worker_count > 1) std::fprintf(stderr, "resnet18_train (worker %d): %s: %s\n", worker_rank, kind, what);
  else std::fprintf(stderr, "resnet18_train: %s: %s\n", kind, what);
  return code;
}

// Distributed: worker 0 speaks and writes files; the others train quietly (their errors
// still reach stderr) and evaluate at the outermost slow weights as worker 0 does.
void adapt_to_workers(RunSetup& setup, const Workers& workers) {
  if (workers.size() <= 1) return;
  if (setup.optimizer.depth() >= 1) setup.trainer.eval_slow = setup.cli.eval_slow = true;
  if (workers.rank() == 0) return;
  setup.trainer.metrics.clear();
  setup.trainer.checkpoint.clear();
  setup.trainer.checkpoint_every = 0;
  setup.trainer.progress = TrainerOptions::Progress::none;
  if (!std::freopen("/dev/null", "w", stdout)) std::fprintf(stderr, "resnet18_train (worker %d): cannot silence stdout\n",
                                                           workers.rank());
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<Workers> workers;
  try {
    workers.emplace(&argc, &argv);
  } catch (const RefusedError& e) {
    return report("refused", e.what(), kExitRefused);
  }
  worker_rank = workers->rank();
  worker_count = workers->size();
  CliConfig config;
  CLI::App app;
  add_options(app, config);
  RunSetup setup;
  try {
    app.parse(argc, argv);
    setup = finalize(app, config);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints the message (or the help); its own codes are 100 and up.
    if (worker_rank != 0) return e.get_exit_code() == 0 ? 0 : kExitRefused;
    return app.exit(e) == 0 ? 0 : kExitRefused;
  }
  adapt_to_workers(setup, *workers);
  const InterruptHandlers handlers;
  setup.trainer.interrupt = &InterruptHandlers::flag();
  const int code = [&] {
    try {
      return run(setup, *workers);
    } catch (const RefusedError& e) {
      return report("refused", (std::string(e.what()) + "; nothing was written").c_str(), kExitRefused);
    } catch (const DataError& e) {
      return report("refused", (std::string(e.what()) + "; nothing was written").c_str(), kExitRefused);
    } catch (const std::bad_alloc&) {
      return report("error", "out of memory (std::bad_alloc)", kExitFailed);
    } catch (const std::exception& e) {
      return report("error", e.what(), kExitFailed);
    }
  }();
  // A worker that fails alone would leave the others waiting in a collective: end them all.
  if (code != 0 && code != kExitInterrupted) workers->abort(code);
  return code;
}
