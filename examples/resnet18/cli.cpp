// resnet18_train's options, their cross-checks, and the conversion into a RunSetup.
#include "cli.hpp"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>

#include <sys/stat.h>

#include "util.hpp"

namespace resnet18 {

namespace {

constexpr const char* kFooter = R"(Optimizers:
  sgd | adam | adamw          the base optimizer alone (depth 0)
  lookahead                   Lookahead(k, alpha) o INNER (depth 1)
  nested                      Lookahead(s, h) o Lookahead(k, alpha) o INNER (depth 2 by
                              default); --depth 3 adds a third level with (s, h) again
  --levels K:ALPHA[:POLICY],...  every level explicitly, innermost first, e.g.
                              --optimizer nested --levels 5:0.5,5:0.5,2:0.5:pullback
  --pullback POLICY           what a level's sync does to the inner optimizer's first
                              moments (SGD's momentum buffer, Adam's m): none (keep them),
                              reset (zero them), pullback (interpolate them like the weights)
  --outer-momentum MU [--outer-nesterov]   the outermost level's sync as SGD with momentum
                              on the slow weights (DiLoCo: --optimizer lookahead --inner
                              adamw --alpha 0.7 --outer-momentum 0.9 --outer-nesterov)

Distributed (mpirun -np N resnet18_train ...): each worker trains on its shard of every
batch (--batch-size is the global batch) and the optimizer's levels average over groups
of workers, --groups G0,G1,...: one per level, level 0 (gradient averaging, as DDP) first,
each 1 (the worker alone), all, node (this machine's workers) or a number g (blocks of g
consecutive ranks). By default every level is alone but the outermost, which is all:
  --optimizer adam --groups all                  DDP-style gradient averaging
  --optimizer lookahead --groups 1,all           Lookahead over all workers
  --optimizer nested --groups 1,2,all            inner level over pairs, outer over all
  --optimizer lookahead --groups 2,all           gradient averaging in pairs, Lookahead across
Worker 0 prints, writes --metrics and --checkpoint, and evaluates (at the outermost slow
weights with --eval-slow); every worker resumes from the one checkpoint, in a job of any size.

Checkpoints hold the model, the whole optimizer state and the trainer's position (epoch,
step, batch within the epoch, running averages); batches depend only on (seed, epoch,
batch index), so --resume continues bit-identically. Same --seed and --threads give the
same numbers.

Files: --checkpoint and --metrics must be regular files or new ones (a symbolic link is
followed, the file it names replaced); devices, FIFOs, sockets and directories are
refused, and so is a location where no file can be created, before the first step.
Temporary files a killed save left next to them are removed on start.

SIGINT or SIGTERM (Ctrl-C): the current step finishes, --checkpoint is written, and the
run exits with status 75; --resume then continues bit-identically. A second signal ends
the run at once (the last complete checkpoint stays).

Exit status: 0 done (or stopped at --max-steps); 1 failed while training; 2 refused
before training, nothing written (a bad option, file or checkpoint, a size that cannot
be allocated); 75 interrupted.

Example (Fashion-MNIST, about 1.5 minutes on one core, about 83% test accuracy):
  resnet18_train --epochs 2 --width 8 --optimizer nested)";

// nestla reads k back up to 2^30.
constexpr int kMaxK = 1 << 30;
// --epochs, and so --step-size and --warmup.
constexpr int kMaxEpochs = 1 << 20;
constexpr double kInf = std::numeric_limits<double>::infinity();

[[noreturn]] void fail(const std::string& option, const std::string& message) {
  throw CLI::ValidationError(option, message);
}

template <class V>
std::string str(const V& v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

BaseKind base_of(const std::string& name) {
  if (name == "sgd") return BaseKind::sgd;
  if (name == "adam") return BaseKind::adam;
  if (name == "adamw") return BaseKind::adamw;
  fail("--inner", "unknown base optimizer '" + name + "' (expected sgd, adam or adamw)");
}

void check_level(const LevelSpec& l, const std::string& k_name, const std::string& alpha_name) {
  // The same words as integer_in(1, kMaxK), which checks --k and --s as typed.
  if (l.k < 1 || l.k > kMaxK) fail(k_name, "must be an integer in [1, " + str(kMaxK) + "] (got " + str(l.k) + ")");
  if (!(l.alpha >= 0 && l.alpha <= 1)) fail(alpha_name, "must be in [0, 1] (got " + str(l.alpha) + ")");
}

// ---- per-value checks, on the text as typed (before CLI11 converts it)
//
// CLI11's Range, PositiveNumber and NonNegativeNumber compare with < and >, so NaN passes
// them, and its unsigned conversion wraps "-1" to 2^64 - 1. These parse the text
// themselves and say what is allowed; CLI11 prefixes the option's name.

std::string number_text(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<long long>(v));
  return str(v);
}

// A finite real in the interval; *_open excludes the end, hi = inf means no upper end.
CLI::Validator real_in(double lo, double hi, bool lo_open = false, bool hi_open = false) {
  const bool unbounded = std::isinf(hi);
  const std::string range = std::string(lo_open ? "(" : "[") + number_text(lo) + ", " +
                            (unbounded ? std::string("inf)") : number_text(hi) + (hi_open ? ")" : "]"));
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        std::string_view t = text;
        if (!t.empty() && t.front() == '+') t.remove_prefix(1);
        double v = 0;
        const auto [end, err] = std::from_chars(t.data(), t.data() + t.size(), v);
        if (t.empty() || end != t.data() + t.size() || err == std::errc::invalid_argument)
          return "'" + text + "' is not a number";
        if (err == std::errc::result_out_of_range || !std::isfinite(v))
          return "must be a finite number in " + range + " (got " + text + ")";
        const bool low = lo_open ? !(v > lo) : !(v >= lo);
        const bool high = !unbounded && (hi_open ? !(v < hi) : !(v <= hi));
        if (low || high) return "must be in " + range + " (got " + text + ")";
        return {};
      },
      "in " + range);
}

// An integer in [lo, hi], as typed: no sign wrap-around, no fractions, no NaN.
CLI::Validator integer_in(std::int64_t lo, std::uint64_t hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        std::string_view t = text;
        if (!t.empty() && t.front() == '+') t.remove_prefix(1);
        const auto bad = [&] { return "must be an integer in " + range + " (got " + text + ")"; };
        if (!t.empty() && t.front() == '-') {
          std::int64_t v = 0;
          const auto [end, err] = std::from_chars(t.data(), t.data() + t.size(), v);
          if (err != std::errc() || end != t.data() + t.size() || v < lo || v > 0) return bad();
          return {};
        }
        std::uint64_t v = 0;
        const auto [end, err] = std::from_chars(t.data(), t.data() + t.size(), v);
        if (t.empty() || err != std::errc() || end != t.data() + t.size() || v > hi) return bad();
        if (lo > 0 && v < static_cast<std::uint64_t>(lo)) return bad();
        return {};
      },
      "in " + range);
}

// --checkpoint / --metrics: missing, or a regular file (links followed); never a device,
// FIFO, socket or directory. Writability is checked before training (check_files()).
CLI::Validator output_file() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        try {
          check_replaceable(text, "");
        } catch (const RefusedError& e) {
          return e.what();
        }
        return {};
      },
      "FILE");
}

// --resume: an existing regular file (a device, FIFO or directory is never opened).
CLI::Validator checkpoint_file() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        struct stat st {};
        if (::stat(text.c_str(), &st) != 0) {
          const int err = errno;
          return text + ": " + std::strerror(err);
        }
        if (!S_ISREG(st.st_mode)) return text + ": is " + describe_file_type(st.st_mode) + ", not a checkpoint file";
        return {};
      },
      "FILE");
}

}  // namespace

std::vector<std::string> parse_groups(const std::string& text, int depth) {
  std::vector<std::string> out;
  std::stringstream all(text);
  for (std::string item; std::getline(all, item, ',');) {
    bool number = !item.empty() && item.size() <= 9 &&
                  std::all_of(item.begin(), item.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!(item == "all" || item == "node" || (number && std::stoi(item) >= 1)))
      fail("--groups", "level " + std::to_string(out.size()) + ": '" + item +
                           "' is not a group (expected 1, all, node or a number of consecutive workers)");
    out.push_back(item);
  }
  if (static_cast<int>(out.size()) != depth + 1)
    fail("--groups", std::to_string(out.size()) + " groups for " + std::to_string(depth + 1) +
                         " levels (the base optimizer's, then each Lookahead level's, innermost first)");
  return out;
}

nestla::Momentum parse_momentum_policy(const std::string& name) {
  if (name == "none" || name == "keep") return nestla::Momentum::keep;
  if (name == "reset") return nestla::Momentum::reset;
  if (name == "pullback") return nestla::Momentum::pullback;
  fail("--pullback", "unknown policy '" + name + "' (expected none, reset or pullback)");
}

std::vector<LevelSpec> parse_levels(const std::string& text, nestla::Momentum fallback) {
  std::vector<LevelSpec> out;
  std::stringstream all(text);
  std::string item;
  while (std::getline(all, item, ',')) {
    const std::string where = "level " + std::to_string(out.size() + 1) + " '" + item + "'";
    std::vector<std::string> parts;
    std::stringstream one(item);
    for (std::string p; std::getline(one, p, ':');) parts.push_back(p);
    if (parts.size() < 2 || parts.size() > 3) fail("--levels", where + ": expected K:ALPHA or K:ALPHA:POLICY");
    LevelSpec l;
    const auto& ks = parts[0];
    const auto [kend, kerr] = std::from_chars(ks.data(), ks.data() + ks.size(), l.k);
    if (kerr != std::errc() || kend != ks.data() + ks.size() || ks.empty())
      fail("--levels", where + ": k '" + ks + "' is not an integer");
    try {
      std::size_t used = 0;
      l.alpha = std::stod(parts[1], &used);
      if (used != parts[1].size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      fail("--levels", where + ": alpha '" + parts[1] + "' is not a number");
    }
    try {
      l.momentum = parts.size() == 3 ? parse_momentum_policy(parts[2]) : fallback;
    } catch (const CLI::ValidationError&) {
      fail("--levels", where + ": unknown policy '" + parts[2] + "' (expected none, reset or pullback)");
    }
    check_level(l, "--levels (" + where + ")", "--levels (" + where + ")");
    out.push_back(l);
  }
  if (out.empty()) fail("--levels", "no levels given");
  return out;
}

void add_options(CLI::App& app, CliConfig& c) {
  app.description(
      "Trains ResNet-18 (He et al. 2016) on Fashion-MNIST, MNIST, CIFAR-10 or synthetic data with SGD, Adam, "
      "Lookahead or Nested Lookahead from nestla.");
  app.footer(kFooter);
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(34);

  const std::string og = "Optimizer";
  app.add_option("--optimizer", c.optimizer, "sgd, adam, adamw (base alone), lookahead (depth 1) or nested")
      ->check(CLI::IsMember({"sgd", "adam", "adamw", "lookahead", "nested"}))
      ->group(og);
  app.add_option("--inner", c.inner, "Base optimizer under lookahead/nested: sgd, adam or adamw")
      ->check(CLI::IsMember({"sgd", "adam", "adamw"}))
      ->group(og);
  app.add_option("--depth", c.depth,
                 "Lookahead levels of nested (1.." + std::to_string(max_factory_depth) + "; default 2, lookahead is 1)")
      ->default_str("2")
      ->check(integer_in(0, 1024))
      ->group(og);
  app.add_option("--k", c.k, "Innermost level: sync every k steps")->check(integer_in(1, kMaxK))->group(og);
  app.add_option("--alpha", c.alpha, "Innermost level: slow-weights step size in [0, 1]")
      ->check(real_in(0, 1))
      ->group(og);
  app.add_option("--s", c.s, "Second level (and above): sync every s inner syncs")
      ->check(integer_in(1, kMaxK))
      ->group(og);
  app.add_option("--h", c.h, "Second level (and above): step size in [0, 1]")->check(real_in(0, 1))->group(og);
  app.add_option("--levels", c.levels,
                 "Every level as K:ALPHA[:POLICY], innermost first (replaces --k/--alpha/--s/--h)")
      ->group(og);
  app.add_option("--pullback", c.pullback, "Momentum policy at every level's sync: none, reset or pullback")
      ->check(CLI::IsMember({"none", "keep", "reset", "pullback"}))
      ->group(og);
  app.add_option("--outer-momentum", c.outer_momentum,
                 "Outermost level: momentum of its sync's SGD step on the slow weights (DiLoCo: 0.9)")
      ->check(real_in(0, kInf))
      ->group(og);
  app.add_flag("--outer-nesterov", c.outer_nesterov, "Outermost level: Nesterov outer momentum (DiLoCo)")->group(og);
  app.add_option("--groups", c.groups,
                 "Distributed (mpirun): each level's group, level 0 first: 1, all, node or g (blocks of g ranks); "
                 "default 1,...,1,all")
      ->group(og);
  app.add_option("--lr", c.lr, "Learning rate (the peak of a schedule)")->check(real_in(0, kInf))->group(og);
  app.add_option("--momentum", c.momentum, "SGD momentum")->check(real_in(0, 1, false, true))->group(og);
  app.add_flag("--nesterov", c.nesterov, "SGD with Nesterov momentum")->group(og);
  app.add_option("--beta1", c.beta1, "Adam/AdamW beta1")->check(real_in(0, 1, false, true))->group(og);
  app.add_option("--beta2", c.beta2, "Adam/AdamW beta2")->check(real_in(0, 1, false, true))->group(og);
  app.add_option("--weight-decay", c.weight_decay, "Weight decay (L2 for SGD/Adam, decoupled for AdamW)")
      ->default_str("0; AdamW 0.01")
      ->check(real_in(0, kInf))
      ->group(og);
  app.add_flag("--no-decay-bn-bias", c.no_decay_bn_bias,
               "No weight decay on batch-norm weights/biases and the fc bias (a nestla param group)")
      ->group(og);

  const std::string sg = "Learning-rate schedule";
  app.add_option("--schedule", c.schedule, "none, cosine (to 0 at the last step) or step")
      ->check(CLI::IsMember({"none", "cosine", "step"}))
      ->group(sg);
  app.add_option("--step-size", c.step_size, "step: epochs between decays")
      ->check(real_in(0, kMaxEpochs, true))
      ->group(sg);
  app.add_option("--gamma", c.gamma, "step: decay factor")->check(real_in(0, 1, true))->group(sg);
  app.add_option("--warmup", c.warmup, "Epochs of linear warm-up (any schedule; fractions allowed)")
      ->check(real_in(0, kMaxEpochs))
      ->group(sg);

  const std::string dg = "Data";
  app.add_option("--dataset", c.dataset, "fashion-mnist, mnist, cifar10 or synthetic")
      ->check(CLI::IsMember({"fashion-mnist", "mnist", "cifar10", "synthetic"}))
      ->group(dg);
  app.add_option("--data", c.data_dir, "Dataset directory (IDX files, or CIFAR-10's binary batches)")
      ->default_str(std::string(default_fashion_mnist_dir) + " for fashion-mnist")
      ->group(dg);
  app.add_option("--train-subset", c.train_subset, "Use the first N training images (0: all; synthetic: 2048)")
      ->check(integer_in(0, INT_MAX))
      ->group(dg);
  app.add_option("--test-subset", c.test_subset, "Use the first N test images (0: all; synthetic: 512)")
      ->check(integer_in(0, INT_MAX))
      ->group(dg);
  app.add_option("--image-size", c.image_size, "Synthetic images' height and width")
      ->check(integer_in(4, 1024))
      ->group(dg);
  app.add_flag("--no-augment", c.no_augment, "No random crop (4-pixel padding) or horizontal flip")->group(dg);

  const std::string mg = "Model";
  app.add_option("--width", c.width, "Channels of the first stage (64: ResNet-18; 8 or 16 for quick CPU runs)")
      ->check(integer_in(1, 4096))
      ->group(mg);
  app.add_option("--stem", c.stem, "cifar (3x3 conv, no pooling) or imagenet (7x7/2 conv + max pool)")
      ->check(CLI::IsMember({"cifar", "imagenet"}))
      ->group(mg);

  const std::string rg = "Run";
  app.add_option("--batch-size", c.batch_size, "Training batch size")->check(integer_in(1, 1 << 16))->group(rg);
  app.add_option("--eval-batch-size", c.eval_batch_size, "Evaluation batch size (0: the training one)")
      ->check(integer_in(0, 1 << 16))
      ->group(rg);
  app.add_option("--epochs", c.epochs, "Epochs (a resumed run counts the ones already done)")
      ->check(integer_in(1, kMaxEpochs))
      ->group(rg);
  app.add_option("--seed", c.seed, "Model initialization, shuffling and augmentation")
      ->check(integer_in(0, std::numeric_limits<std::uint64_t>::max()))
      ->group(rg);
  app.add_option("--threads", c.threads,
                 "Threads of the model and the optimizer (0: all cores, or OMP_NUM_THREADS). 1 by default: "
                 "the model syncs its threads hundreds of times a step, and with another busy program on a "
                 "2-core machine 2 threads ran 4-50x slower than 1; use more on an idle machine")
      ->check(integer_in(0, 1024))
      ->group(rg);
  app.add_option("--device", c.device, "Where to train: cpu, or cuda (when built with the GPU trainer)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->group(rg);
  const std::string gg = "GPU (--device cuda)";
  app.add_option("--cuda-layout", c.cuda_layout, "Activation memory format on the GPU: nhwc (channels last) or nchw")
      ->check(CLI::IsMember({"nhwc", "nchw"}))
      ->group(gg);
  app.add_flag("--no-tf32", c.no_tf32,
               "Plain float32 convolutions (TF32 tensor cores are on by default, as in PyTorch)")
      ->group(gg);
  app.add_option("--cuda-algo", c.cuda_algo,
                 "Convolution algorithms: find (time each once) or heuristic (cuDNN's ranking)")
      ->check(CLI::IsMember({"find", "heuristic"}))
      ->group(gg);
  app.add_option("--max-steps", c.max_steps, "Stop after N optimizer steps in all (0: no limit)")
      ->check(integer_in(0, std::numeric_limits<std::int64_t>::max()))
      ->group(rg);
  app.add_flag("--eval-slow", c.eval_slow,
               "Evaluate at the outermost Lookahead level's slow weights (swapped in and back)")
      ->group(rg);
  app.add_option("--progress", c.progress, "auto (a bar on a terminal, lines in a log), bar, plain or none")
      ->check(CLI::IsMember({"auto", "bar", "plain", "none"}))
      ->group(rg);
  app.add_flag("--profile", c.profile, "Print the per-layer time table at the end")->group(rg);

  const std::string fg = "Files";
  app.add_option("--metrics", c.metrics, "Append a JSON line per epoch here (a run header first, a summary last)")
      ->check(output_file())
      ->group(fg);
  app.add_option("--checkpoint", c.checkpoint,
                 "Write model + optimizer + position here (atomically: a temporary file renamed over it) after "
                 "every epoch and when interrupted; a regular file or a new one (a link is followed)")
      ->check(output_file())
      ->group(fg);
  app.add_option("--checkpoint-every", c.checkpoint_every, "Also every N steps within an epoch (0: only at epoch ends)")
      ->check(integer_in(0, std::numeric_limits<std::int64_t>::max()))
      ->group(fg);
  app.add_option("--resume", c.resume,
                 "Continue the run saved in this checkpoint (same data, model, optimizer, batch size and seed; "
                 "--epochs may grow); give --checkpoint too to keep saving")
      ->check(checkpoint_file())
      ->group(fg);
}

RunSetup finalize(const CLI::App& app, const CliConfig& c) {
  auto given = [&](const std::string& name) { return app.count(name) > 0; };
  RunSetup r;
  r.cli = c;

  // ---- optimizer
  OptimizerSpec& spec = r.optimizer;
  const bool wrapped = c.optimizer == "lookahead" || c.optimizer == "nested";
  if (!wrapped) {
    spec.base = base_of(c.optimizer);
    for (const char* name : {"--inner", "--depth", "--k", "--alpha", "--s", "--h", "--levels", "--pullback"})
      if (given(name))
        fail(name, "applies only to --optimizer lookahead or nested (got --optimizer " + c.optimizer + ")");
  } else {
    spec.base = base_of(c.inner);
    const nestla::Momentum policy = parse_momentum_policy(c.pullback);
    const bool lookahead = c.optimizer == "lookahead";
    if (given("--depth") && lookahead && c.depth != 1)
      fail("--depth", "--optimizer lookahead is one level (depth 1); for " + str(c.depth) +
                          " levels use --optimizer nested --depth " + str(c.depth));
    if (given("--depth") && c.depth < 1)
      fail("--depth", "must be >= 1 for --optimizer nested (got " + str(c.depth) +
                          "); depth 0 is the base optimizer alone, e.g. --optimizer " + c.inner);
    if (given("--depth") && c.depth > max_factory_depth)
      fail("--depth",
           "at most " + str(max_factory_depth) + " levels are compiled into this trainer (got " + str(c.depth) + ")");
    if (given("--levels")) {
      for (const char* name : {"--k", "--alpha", "--s", "--h"})
        if (given(name)) fail(name, "give either --levels or --k/--alpha/--s/--h, not both");
      spec.levels = parse_levels(c.levels, policy);
      const int n = spec.depth();
      if (given("--depth") && n != c.depth) fail("--levels", str(n) + " levels given, but --depth is " + str(c.depth));
      if (lookahead && n != 1)
        fail("--levels", "--optimizer lookahead takes one level (got " + str(n) + "); use --optimizer nested");
      if (n > max_factory_depth)
        fail("--levels",
             str(n) + " levels given, at most " + str(max_factory_depth) + " are compiled into this trainer");
    } else {
      const int depth = lookahead ? 1 : (given("--depth") ? c.depth : 2);
      if (depth == 1 && (given("--s") || given("--h")))
        fail(given("--s") ? "--s" : "--h", "a one-level Lookahead has no second level; use --optimizer nested");
      LevelSpec first{c.k, c.alpha, policy};
      check_level(first, "--k", "--alpha");
      spec.levels.push_back(first);
      for (int i = 1; i < depth; ++i) {
        LevelSpec upper{c.s, c.h, policy};
        check_level(upper, "--s", "--h");
        spec.levels.push_back(upper);
      }
    }
  }
  if (given("--outer-momentum") || c.outer_nesterov) {
    if (!wrapped)
      fail(given("--outer-momentum") ? "--outer-momentum" : "--outer-nesterov",
           "applies to a Lookahead level (--optimizer lookahead or nested), not --optimizer " + c.optimizer);
    if (c.outer_nesterov && !(c.outer_momentum > 0)) fail("--outer-nesterov", "needs --outer-momentum > 0");
    spec.levels.back().outer_momentum = c.outer_momentum;
    spec.levels.back().outer_nesterov = c.outer_nesterov;
  }
  if (given("--groups")) r.groups = parse_groups(c.groups, spec.depth());
  const bool sgd = spec.base == BaseKind::sgd;
  if (!sgd && given("--momentum"))
    fail("--momentum",
         "is SGD's; Adam and AdamW take --beta1 (the base here is " + std::string(to_string(spec.base)) + ")");
  if (!sgd && c.nesterov) fail("--nesterov", "needs an SGD base");
  if (sgd && (given("--beta1") || given("--beta2")))
    fail(given("--beta1") ? "--beta1" : "--beta2", "applies to Adam and AdamW, not SGD");
  if (sgd && c.nesterov && c.momentum <= 0) fail("--nesterov", "needs --momentum > 0");
  spec.lr = c.lr;
  spec.momentum = sgd ? c.momentum : 0.0;
  spec.nesterov = c.nesterov;
  spec.beta1 = c.beta1;
  spec.beta2 = c.beta2;
  spec.weight_decay = given("--weight-decay") ? c.weight_decay : (spec.base == BaseKind::adamw ? 1e-2 : 0.0);

  // ---- schedule
  ScheduleOptions& sch = r.trainer.schedule;
  sch.kind = c.schedule == "cosine" ? Schedule::cosine : c.schedule == "step" ? Schedule::step : Schedule::none;
  if (sch.kind != Schedule::step)
    for (const char* name : {"--step-size", "--gamma"})
      if (given(name)) fail(name, "applies only to --schedule step (got --schedule " + c.schedule + ")");
  sch.lr = c.lr;
  sch.step_size = c.step_size;
  sch.gamma = c.gamma;
  sch.warmup = c.warmup;

  // ---- data
  if ((c.dataset == "cifar10" || c.dataset == "mnist") && c.data_dir.empty())
    fail("--data", "--dataset " + c.dataset + " needs --data DIR (where its files are)");
  if (c.dataset == "synthetic" && given("--data"))
    fail("--data", "--dataset synthetic is generated, it reads no files");
  if (c.dataset != "synthetic" && given("--image-size"))
    fail("--image-size", "applies to --dataset synthetic only (" + c.dataset + " has its own image size)");
  for (DatasetOptions* d : {&r.train_data, &r.test_data}) {
    d->name = c.dataset;
    d->dir = c.data_dir;
    d->synthetic.size = c.image_size;
  }
  r.train_data.limit = c.train_subset;
  r.test_data.limit = c.test_subset;
  if (c.dataset == "synthetic") {
    r.train_data.synthetic.count = c.train_subset ? c.train_subset : 2048;
    r.test_data.synthetic.count = c.test_subset ? c.test_subset : 512;
  }

  // ---- model
  r.model.width = c.width;
  r.model.stem = c.stem == "imagenet" ? Stem::imagenet : Stem::cifar;
  r.model.seed = c.seed;

  // ---- run
  TrainerOptions& t = r.trainer;
  t.epochs = c.epochs;
  t.batch_size = c.batch_size;
  t.eval_batch_size = c.eval_batch_size;
  t.seed = c.seed;
  t.augment = !c.no_augment;
  if (c.eval_slow && spec.depth() == 0)
    fail("--eval-slow",
         "needs a Lookahead optimizer (--optimizer lookahead or nested); " + c.optimizer + " has no slow weights");
  t.eval_slow = c.eval_slow;
  t.metrics = c.metrics;
  t.checkpoint = c.checkpoint;
  t.resume = c.resume;
  t.checkpoint_every = c.checkpoint_every;
  if (c.checkpoint_every > 0 && c.checkpoint.empty()) fail("--checkpoint-every", "needs --checkpoint PATH");
  t.max_steps = c.max_steps;
  t.progress = c.progress == "bar"     ? TrainerOptions::Progress::bar
               : c.progress == "plain" ? TrainerOptions::Progress::plain
               : c.progress == "none"  ? TrainerOptions::Progress::none
                                       : TrainerOptions::Progress::automatic;
  return r;
}

RunSetup parse_command_line(const std::vector<std::string>& args) {
  CliConfig c;
  CLI::App app{"resnet18_train"};
  add_options(app, c);
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 consumes from the back
  app.parse(reversed);
  return finalize(app, c);
}

void complete_run_info(RunSetup& r, const Dataset& train_set, const Dataset& test_set,
                       const std::string& backend_description) {
  using json = nlohmann::json;
  const CliConfig& c = r.cli;
  const OptimizerSpec& o = r.optimizer;
  json levels = json::array();
  for (const LevelSpec& l : o.levels) {
    json level = {{"k", l.k}, {"alpha", l.alpha}, {"momentum", nestla::to_string(l.momentum)}};
    if (l.outer_momentum != 0) {
      level["outer_momentum"] = l.outer_momentum;
      level["outer_nesterov"] = l.outer_nesterov;
    }
    levels.push_back(level);
  }
  json optimizer = {{"name", c.optimizer},
                    {"base", to_string(o.base)},
                    {"depth", o.depth()},
                    {"levels", levels},
                    {"lr", o.lr},
                    {"weight_decay", o.weight_decay},
                    {"no_decay_bn_bias", c.no_decay_bn_bias}};
  if (o.base == BaseKind::sgd) {
    optimizer["momentum"] = o.momentum;
    optimizer["nesterov"] = o.nesterov;
  } else {
    optimizer["betas"] = {o.beta1, o.beta2};
  }
  json schedule = {{"kind", c.schedule}, {"warmup", c.warmup}};
  if (c.schedule == "step") {
    schedule["step_size"] = c.step_size;
    schedule["gamma"] = c.gamma;
  }
  json data = {{"dataset", c.dataset},
               {"train_size", train_set.size()},
               {"test_size", test_set.size()},
               {"shape", {train_set.channels, train_set.height, train_set.width}},
               {"augment", !c.no_augment}};
  json model = {{"width", c.width}, {"stem", c.stem}};

  json& sig = r.trainer.signature;
  sig = {{"data", data}, {"model", model}, {"optimizer", optimizer}, {"schedule", schedule},
         {"batch_size", c.batch_size}, {"seed", c.seed}};
  if (c.schedule == "cosine") sig["epochs"] = c.epochs;  // the curve's length

  r.trainer.run_info = {{"data", data},
                        {"model", model},
                        {"optimizer", optimizer},
                        {"schedule", schedule},
                        {"batch_size", c.batch_size},
                        {"epochs", c.epochs},
                        {"seed", c.seed},
                        {"threads", c.threads},
                        {"device", c.device},
                        {"eval_slow", c.eval_slow},
                        {"backend", backend_description}};
}

}  // namespace resnet18
