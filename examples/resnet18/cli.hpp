// resnet18_train's command line: the options (CLI11), their checks, and the run they describe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "data.hpp"
#include "optimizer_factory.hpp"
#include "resnet.hpp"
#include "trainer.hpp"

namespace resnet18 {

// The values as typed; finalize() turns them into a checked RunSetup.
struct CliConfig {
  // optimizer
  std::string optimizer = "adam";
  std::string inner = "adam";
  int depth = 0;  // meaningful only when given (app.count("--depth"))
  int k = 5;
  double alpha = 0.5;
  int s = 5;
  double h = 0.5;
  std::string levels;
  std::string pullback = "none";
  double outer_momentum = 0;    // the outermost level's (DiLoCo)
  bool outer_nesterov = false;
  std::string groups;           // distributed: one group per level, level 0 first
  double lr = 1e-3;
  double momentum = 0.9;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999;
  double weight_decay = 0;  // when not given: 0, or 1e-2 for AdamW (PyTorch's defaults)
  bool no_decay_bn_bias = false;
  // schedule
  std::string schedule = "none";
  double step_size = 30;
  double gamma = 0.1;
  double warmup = 0;
  // data
  std::string dataset = "fashion-mnist";
  std::string data_dir;
  std::size_t train_subset = 0;
  std::size_t test_subset = 0;
  int image_size = 32;  // synthetic only
  bool no_augment = false;
  // model
  int width = 64;
  std::string stem = "cifar";
  // run
  std::size_t batch_size = 64;
  std::size_t eval_batch_size = 0;
  int epochs = 1;
  std::uint64_t seed = 0;
  int threads = 1;  // see --threads: 2 threads on a shared 2-core machine can be far slower than 1
  std::string device = "cpu";
  // --device cuda only
  std::string cuda_layout = "nhwc";
  bool no_tf32 = false;
  std::string cuda_algo = "find";
  std::string metrics, checkpoint, resume;
  std::int64_t checkpoint_every = 0;
  std::int64_t max_steps = 0;
  bool eval_slow = false;
  std::string progress = "auto";
  bool profile = false;
};

// Everything main needs, checked and converted.
struct RunSetup {
  CliConfig cli;
  OptimizerSpec optimizer;  // no_decay_tensors filled in by the backend, which knows the model
  DatasetOptions train_data, test_data;
  ModelConfig model;  // width, stem, seed; channels, size and classes come from the data
  TrainerOptions trainer;  // run_info and signature are completed by complete_run_info()
  // Distributed (mpirun): each level's group of workers, level 0 (gradient averaging)
  // first: "1" (the worker alone), "all", "node" (the workers of this machine) or a
  // number g (blocks of g consecutive ranks). Empty: the default layout, every level
  // alone but the outermost, which is "all".
  std::vector<std::string> groups;
};

// --groups "1,2,all" -> {"1", "2", "all"}, checked: each item 1, all, node or a positive
// integer, depth + 1 of them. Throws CLI::ValidationError.
std::vector<std::string> parse_groups(const std::string& text, int depth);

// Declares every option on `app`, bound to `config`, with help text and per-value checks.
void add_options(CLI::App& app, CliConfig& config);

// Cross-option checks and conversion. Errors are CLI::ValidationError (a CLI::ParseError,
// so app.exit() prints them the same way) naming the option and the value.
RunSetup finalize(const CLI::App& app, const CliConfig& config);

// "5:0.5,5:0.5:pullback" -> levels, innermost first. `fallback` is the policy of levels
// without their own. Throws CLI::ValidationError.
std::vector<LevelSpec> parse_levels(const std::string& text, nestla::Momentum fallback);
nestla::Momentum parse_momentum_policy(const std::string& name);  // none|keep|reset|pullback

// Parses argv-style arguments (without the program name) into a RunSetup; for tests and
// tools. Throws CLI::ParseError (including CLI::CallForHelp for --help).
RunSetup parse_command_line(const std::vector<std::string>& args);

// Fills setup.trainer.run_info (all options, the optimizer's description, the data) and
// setup.trainer.signature (what a resume must agree on), once the data and model are known.
void complete_run_info(RunSetup& setup, const Dataset& train_set, const Dataset& test_set,
                       const std::string& backend_description);

}  // namespace resnet18
