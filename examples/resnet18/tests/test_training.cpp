// The whole trainer on the synthetic set: the loss falls, resume is bit-identical (after SIGINT too), files are guarded.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cmath>
#include <cstring>
#include <regex>
#include <thread>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cpu_backend.hpp"
#include "data.hpp"
#include "data_test_files.hpp"
#include "trainer.hpp"
#include "util.hpp"

extern char** environ;

using namespace resnet18;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// 16x16x3 synthetic images, width-4 network, one thread: a run of a few hundred steps takes
// seconds, and one thread makes every number reproducible on this machine.
constexpr int kSize = 16;

Dataset synthetic(std::size_t count, Split split) {
  DatasetOptions o;
  o.name = "synthetic";
  o.synthetic.count = count;
  o.synthetic.size = kSize;
  return load_dataset(o, split);
}

CpuBackendOptions backend_options(BaseKind base, std::vector<LevelSpec> levels, double lr) {
  CpuBackendOptions o;
  o.model.width = 4;
  o.model.in_channels = 3;
  o.model.image_size = kSize;
  o.model.num_classes = 10;
  o.model.seed = 0;
  o.optimizer.base = base;
  o.optimizer.levels = std::move(levels);
  o.optimizer.lr = lr;
  o.threads = 1;
  return o;
}

TrainerOptions trainer_options(int epochs, double lr) {
  TrainerOptions t;
  t.epochs = epochs;
  t.batch_size = 32;
  t.seed = 0;
  t.schedule.lr = lr;
  t.progress = TrainerOptions::Progress::none;
  return t;
}

// A fresh directory per test case, removed at the end.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("resnet18_train_test_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path operator/(const std::string& f) const { return path / f; }
};

// The epoch records of a metrics file, without the wall-clock fields.
std::vector<json> epoch_records(const fs::path& metrics) {
  std::ifstream in(metrics);
  std::vector<json> out;
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    if (!j.contains("epoch")) continue;
    j.erase("seconds");
    j.erase("images_per_s");
    out.push_back(j);
  }
  return out;
}

std::vector<float> flat_params(CpuBackend& b) {
  const auto p = b.model().flat_parameters();
  return {p.data(), p.data() + p.size()};
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void spit(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

const std::vector<LevelSpec> kNested = {{5, 0.5, nestla::Momentum::keep}, {5, 0.5, nestla::Momentum::keep}};

// Forwards to a CpuBackend and raises a signal at a chosen moment, as if it arrived
// then: at the end of the n-th training step, or of the n-th evaluation batch (counted
// from 1 over the backend's life; 0: never). The process's handlers catch it, so with
// InterruptHandlers installed this is the path of a real Ctrl-C. It keeps the default
// checkpoint bounds of TrainingBackend, so those are exercised too.
class SignallingBackend final : public TrainingBackend {
 public:
  SignallingBackend(CpuBackend& inner, std::int64_t at_step, std::int64_t at_eval = 0, int sig = SIGINT)
      : inner_(inner), at_step_(at_step), at_eval_(at_eval), sig_(sig) {}
  std::string describe() const override { return inner_.describe(); }
  BatchResult train_step(const float* images, const std::int32_t* labels, int n) override {
    if (steps_ + 1 == bad_alloc_at_step) throw std::bad_alloc();
    const BatchResult r = inner_.train_step(images, labels, n);
    if (++steps_ == at_step_) ::raise(sig_);
    return r;
  }
  BatchResult evaluate(const float* images, const std::int32_t* labels, int n) override {
    if (evals_ + 1 == bad_alloc_at_eval) throw std::bad_alloc();
    const BatchResult r = inner_.evaluate(images, labels, n);
    if (++evals_ == at_eval_) ::raise(sig_);
    return r;
  }
  void set_lr(double lr) override { inner_.set_lr(lr); }
  bool has_slow_weights() const override { return inner_.has_slow_weights(); }
  void swap_slow_weights() override { inner_.swap_slow_weights(); }
  std::vector<std::pair<std::string, double>> optimizer_metrics() const override {
    return inner_.optimizer_metrics();
  }
  void save_model(std::ostream& out) const override { inner_.save_model(out); }
  void load_model(std::istream& in) override { inner_.load_model(in); }
  void save_optimizer(std::ostream& out) const override { inner_.save_optimizer(out); }
  void load_optimizer(std::istream& in) override { inner_.load_optimizer(in); }

  std::int64_t steps() const { return steps_; }
  // std::bad_alloc from the n-th step or evaluation batch instead (0: never).
  std::int64_t bad_alloc_at_step = 0, bad_alloc_at_eval = 0;

 private:
  CpuBackend& inner_;
  std::int64_t at_step_, at_eval_;
  int sig_;
  std::int64_t steps_ = 0, evals_ = 0;
};

// The names in a directory, sorted, with their kinds: a before/after snapshot.
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    out.push_back(e.path().filename().string() + (e.is_symlink() ? "@" : e.is_fifo() ? "|" : e.is_directory() ? "/" : ""));
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

// 512 images in batches of 32, no augmentation: 16 steps per epoch, 8 epochs = 128 steps.
// The first epoch's mean loss starts near ln 10 = 2.30 (chance). Observed last-epoch mean
// loss over seeds 0..3, Eigen and oneDNN convolutions: SGD 0.02-0.31, Adam 0.05-0.30,
// Nested+Adam 0.15-0.29; the bound 0.6 leaves about twice the worst of them.
TEST_CASE("training: loss falls below 0.6 within 128 steps for SGD, Adam and Nested Lookahead + Adam") {
  const Dataset train_set = synthetic(512, Split::train);
  const Dataset test_set = synthetic(128, Split::test);
  struct Case {
    std::string name;
    BaseKind base;
    std::vector<LevelSpec> levels;
    double lr;
  };
  const Case cases[] = {{"SGD (momentum 0.9)", BaseKind::sgd, {}, 0.05},
                        {"Adam", BaseKind::adam, {}, 0.01},
                        {"Nested Lookahead (5, 0.5, 5, 0.5) + Adam", BaseKind::adam, kNested, 0.01}};
  for (const Case& c : cases) {
    CAPTURE(c.name);
    CpuBackend backend(backend_options(c.base, c.levels, c.lr));
    TrainerOptions t = trainer_options(8, c.lr);
    t.augment = false;
    std::ostringstream log;
    const TrainSummary s = train(backend, train_set, test_set, t, log);
    REQUIRE(s.epochs.size() == 8);
    CHECK(s.steps == 128);
    CHECK(s.epochs.front().train_loss > 1.8);
    CHECK(s.epochs.back().train_loss < 0.6);
    MESSAGE(c.name << ": first epoch loss " << s.epochs.front().train_loss << ", last " << s.epochs.back().train_loss);
  }
}

TEST_CASE("training: same seed, same threads, same numbers") {
  const Dataset train_set = synthetic(256, Split::train);
  const Dataset test_set = synthetic(64, Split::test);
  TempDir dir("determinism");
  for (const char* name : {"a.jsonl", "b.jsonl"}) {
    CpuBackend backend(backend_options(BaseKind::adam, kNested, 0.01));
    TrainerOptions t = trainer_options(2, 0.01);
    t.metrics = dir / name;
    std::ostringstream log;
    train(backend, train_set, test_set, t, log);
  }
  const auto a = epoch_records(dir / "a.jsonl");
  CHECK(a.size() == 2);
  CHECK(a == epoch_records(dir / "b.jsonl"));
}

// The run with the most state: SGD momentum under two levels with pullback and reset,
// weight decay with a no-decay group, cosine schedule with warm-up, augmentation on.
TEST_CASE("training: checkpoint + resume gives the uninterrupted run's metrics and weights, bit for bit") {
  const Dataset train_set = synthetic(256, Split::train);  // 8 steps per epoch
  const Dataset test_set = synthetic(64, Split::test);
  TempDir dir("resume");
  auto options = [] {
    CpuBackendOptions o = backend_options(BaseKind::sgd, {{3, 0.5, nestla::Momentum::pullback}, {2, 0.5, nestla::Momentum::reset}}, 0.05);
    o.optimizer.weight_decay = 5e-4;
    o.no_decay_bn_bias = true;
    return o;
  };
  auto trainer = [&](int epochs, const std::string& metrics) {
    TrainerOptions t = trainer_options(epochs, 0.05);
    t.schedule.kind = Schedule::cosine;
    t.schedule.warmup = 0.5;
    t.metrics = dir / metrics;
    t.signature = {{"run", "resume test"}};
    return t;
  };

  // Uninterrupted: 3 epochs.
  CpuBackend straight(options());
  std::ostringstream log;
  train(straight, train_set, test_set, trainer(3, "straight.jsonl"), log);
  const auto want = epoch_records(dir / "straight.jsonl");
  REQUIRE(want.size() == 3);

  SUBCASE("stopped at an epoch end") {
    {
      CpuBackend first(options());
      TrainerOptions t = trainer(3, "split.jsonl");
      t.checkpoint = dir / "run.ckpt";
      t.max_steps = 8;  // one epoch
      const TrainSummary s = train(first, train_set, test_set, t, log);
      CHECK(s.epochs_done == 1);
      CHECK(s.stopped_early);
    }
    CpuBackend second(options());
    TrainerOptions t = trainer(3, "split.jsonl");
    t.resume = dir / "run.ckpt";
    const TrainSummary s = train(second, train_set, test_set, t, log);
    CHECK(s.epochs.size() == 2);
    CHECK(epoch_records(dir / "split.jsonl") == want);
    CHECK(flat_params(second) == flat_params(straight));
  }
  SUBCASE("stopped inside an epoch (batch position, running averages and schedule restored)") {
    {
      CpuBackend first(options());
      TrainerOptions t = trainer(3, "mid.jsonl");
      t.checkpoint = dir / "run.ckpt";
      t.max_steps = 13;  // epoch 2, batch 5 of 8
      const TrainSummary s = train(first, train_set, test_set, t, log);
      CHECK(s.epochs_done == 1);
      CHECK(s.steps == 13);
    }
    CpuBackend second(options());
    TrainerOptions t = trainer(3, "mid.jsonl");
    t.resume = dir / "run.ckpt";
    train(second, train_set, test_set, t, log);
    CHECK(epoch_records(dir / "mid.jsonl") == want);
    CHECK(flat_params(second) == flat_params(straight));
  }
  SUBCASE("resuming an older checkpoint drops the metrics lines written after it") {
    {
      CpuBackend first(options());
      TrainerOptions t = trainer(3, "old.jsonl");
      t.checkpoint = dir / "run.ckpt";
      t.max_steps = 8;
      train(first, train_set, test_set, t, log);
    }
    fs::copy_file(dir / "run.ckpt", dir / "epoch1.ckpt");
    {
      CpuBackend second(options());
      TrainerOptions t = trainer(3, "old.jsonl");
      t.resume = dir / "run.ckpt";
      t.checkpoint = dir / "run.ckpt";
      train(second, train_set, test_set, t, log);
    }
    CpuBackend third(options());
    TrainerOptions t = trainer(3, "old.jsonl");
    t.resume = dir / "epoch1.ckpt";
    train(third, train_set, test_set, t, log);
    CHECK(epoch_records(dir / "old.jsonl") == want);  // epochs 1, 2, 3 once each
  }
}

TEST_CASE("training: damaged, truncated or foreign checkpoints are refused and change nothing") {
  const Dataset train_set = synthetic(128, Split::train);
  const Dataset test_set = synthetic(32, Split::test);
  TempDir dir("damage");
  CpuBackend backend(backend_options(BaseKind::adam, kNested, 0.01));
  TrainerOptions t = trainer_options(1, 0.01);
  t.checkpoint = dir / "good.ckpt";
  t.signature = {{"seed", 0}};
  std::ostringstream log;
  train(backend, train_set, test_set, t, log);
  const std::string good = slurp(dir / "good.ckpt");
  REQUIRE(good.size() > 1000);

  CpuBackend other(backend_options(BaseKind::adam, kNested, 0.01));
  const std::vector<float> before = flat_params(other);
  auto refused = [&](const std::string& bytes, const std::string& why) {
    spit(dir / "bad.ckpt", bytes);
    CHECK_THROWS_WITH_AS(load_train_checkpoint(dir / "bad.ckpt", other), doctest::Contains(why.c_str()),
                         TrainCheckpointError);
    CHECK(flat_params(other) == before);
  };
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x10;
  refused(flipped, "checksum mismatch");
  refused(good.substr(0, good.size() - 100), "truncated");
  refused(good.substr(0, 10), "truncated");
  refused("not a checkpoint at all, but long enough", "bad magic");

  // Another optimizer: the model part loads, the optimizer refuses, the model goes back.
  CpuBackend sgd(backend_options(BaseKind::sgd, kNested, 0.01));
  const std::vector<float> sgd_before = flat_params(sgd);
  CHECK_THROWS_WITH_AS(load_train_checkpoint(dir / "good.ckpt", sgd), doctest::Contains("optimizer"),
                       TrainCheckpointError);
  CHECK(flat_params(sgd) == sgd_before);
  // Another architecture.
  CpuBackendOptions wide = backend_options(BaseKind::adam, kNested, 0.01);
  wide.model.width = 8;
  CpuBackend wider(wide);
  CHECK_THROWS_WITH_AS(load_train_checkpoint(dir / "good.ckpt", wider), doctest::Contains("width"),
                       TrainCheckpointError);

  // Another run's settings.
  CpuBackend again(backend_options(BaseKind::adam, kNested, 0.01));
  TrainerOptions r = trainer_options(2, 0.01);
  r.resume = dir / "good.ckpt";
  r.signature = {{"seed", 1}};
  CHECK_THROWS_WITH_AS(train(again, train_set, test_set, r, log), doctest::Contains("seed is 0 there, 1 now"),
                       TrainCheckpointError);
}

TEST_CASE("training: --eval-slow evaluates elsewhere but leaves training untouched") {
  const Dataset train_set = synthetic(256, Split::train);
  const Dataset test_set = synthetic(64, Split::test);
  TempDir dir("slow");
  std::vector<std::vector<json>> records;
  std::vector<std::vector<float>> weights;
  for (bool slow : {false, true}) {
    CpuBackend backend(backend_options(BaseKind::adam, {{3, 0.5, nestla::Momentum::keep}, {3, 0.5, nestla::Momentum::keep}}, 0.01));
    TrainerOptions t = trainer_options(2, 0.01);
    t.eval_slow = slow;
    t.metrics = dir / (slow ? "slow.jsonl" : "fast.jsonl");
    std::ostringstream log;
    train(backend, train_set, test_set, t, log);
    records.push_back(epoch_records(t.metrics));
    weights.push_back(flat_params(backend));
    CHECK(backend.optimizer().has_slow_weights());
  }
  REQUIRE(records[0].size() == 2);
  REQUIRE(records[1].size() == 2);
  for (int e = 0; e < 2; ++e) {
    CHECK(records[0][e]["train_loss"] == records[1][e]["train_loss"]);
    CHECK(records[0][e]["train_acc"] == records[1][e]["train_acc"]);
    CHECK(records[1][e]["eval_slow"] == 1.0);
  }
  // 16 steps, k = s = 3: the outermost slow weights are those of step 9, not the live ones.
  CHECK(records[0][1]["test_loss"] != records[1][1]["test_loss"]);
  CHECK(weights[0] == weights[1]);
}

TEST_CASE("schedules: warm-up, cosine and step as functions of the step") {
  ScheduleOptions s;
  s.lr = 0.1;
  CHECK(scheduled_lr(s, 0, 10, 5) == 0.1);
  CHECK(scheduled_lr(s, 49, 10, 5) == 0.1);
  s.kind = Schedule::cosine;
  CHECK(scheduled_lr(s, 0, 10, 5) == doctest::Approx(0.1));
  CHECK(scheduled_lr(s, 25, 10, 5) == doctest::Approx(0.05));
  CHECK(scheduled_lr(s, 50, 10, 5) == doctest::Approx(0.0));
  s.warmup = 1;  // 10 steps
  CHECK(scheduled_lr(s, 0, 10, 5) == doctest::Approx(0.01));
  CHECK(scheduled_lr(s, 9, 10, 5) == doctest::Approx(0.1));
  CHECK(scheduled_lr(s, 10, 10, 5) == doctest::Approx(0.1));
  CHECK(scheduled_lr(s, 30, 10, 5) == doctest::Approx(0.05));
  s = {};
  s.lr = 0.1;
  s.kind = Schedule::step;
  s.step_size = 2;
  s.gamma = 0.5;
  CHECK(scheduled_lr(s, 19, 10, 9) == doctest::Approx(0.1));
  CHECK(scheduled_lr(s, 20, 10, 9) == doctest::Approx(0.05));
  CHECK(scheduled_lr(s, 45, 10, 9) == doctest::Approx(0.025));
}

// ---------------------------------------------------------------- interrupts

// A Ctrl-C used to lose everything since the last save. Now the step in progress
// finishes, the checkpoint is written at that exact position (mid-epoch, at the epoch's
// last batch before its evaluation, or in the middle of the evaluation), and a resume
// ends where the uninterrupted run ends: same weights, same metrics, same checkpoint bytes.
TEST_CASE("training: SIGINT, then resume, gives the uninterrupted run bit for bit") {
  const Dataset train_set = synthetic(256, Split::train);  // 8 steps per epoch
  const Dataset test_set = synthetic(64, Split::test);     // 2 evaluation batches
  TempDir dir("interrupt");
  auto options = [] {
    CpuBackendOptions o = backend_options(BaseKind::sgd, {{3, 0.5, nestla::Momentum::pullback}, {2, 0.5, nestla::Momentum::reset}}, 0.05);
    o.optimizer.weight_decay = 5e-4;
    o.no_decay_bn_bias = true;
    return o;
  };
  auto trainer = [&](const std::string& name) {
    TrainerOptions t = trainer_options(3, 0.05);
    t.schedule.kind = Schedule::cosine;
    t.schedule.warmup = 0.5;
    t.metrics = dir / (name + ".jsonl");
    t.checkpoint = dir / (name + ".ckpt");
    t.signature = {{"run", "interrupt test"}};
    return t;
  };
  std::ostringstream log;
  CpuBackend straight(options());
  train(straight, train_set, test_set, trainer("straight"), log);
  const auto want_records = epoch_records(dir / "straight.jsonl");
  const std::string want_checkpoint = slurp(dir / "straight.ckpt");
  REQUIRE(want_records.size() == 3);

  // Runs until the signal (steps and evaluation batches counted in this process), checks
  // where it stopped, and returns.
  auto interrupted_run = [&](const std::string& name, bool resume, std::int64_t at_step, std::int64_t at_eval,
                             int want_epochs_done, std::size_t want_batches) {
    CpuBackend inner(options());
    SignallingBackend backend(inner, at_step, at_eval);
    TrainerOptions t = trainer(name);
    if (resume) t.resume = t.checkpoint;
    const InterruptHandlers handlers;
    t.interrupt = &InterruptHandlers::flag();
    const TrainSummary s = train(backend, train_set, test_set, t, log);
    CHECK(s.interrupted == SIGINT);
    CHECK(s.stopped_early);
    CHECK(s.epochs_done == want_epochs_done);
    CHECK(s.batches_done == want_batches);
    CHECK(s.steps_this_run == backend.steps());
  };
  auto finish_and_compare = [&](const std::string& name) {
    CpuBackend second(options());
    TrainerOptions t = trainer(name);
    t.resume = t.checkpoint;
    const TrainSummary s = train(second, train_set, test_set, t, log);
    CHECK(s.interrupted == 0);
    CHECK(epoch_records(t.metrics) == want_records);
    CHECK(flat_params(second) == flat_params(straight));
    CHECK(slurp(t.checkpoint) == want_checkpoint);
  };

  SUBCASE("in the middle of an epoch") {
    interrupted_run("mid", false, 11, 0, 1, 3);  // epoch 2, batch 3
    finish_and_compare("mid");
  }
  SUBCASE("on an epoch's last step, before its evaluation") {
    interrupted_run("last", false, 16, 0, 1, 8);
    finish_and_compare("last");
  }
  SUBCASE("during an evaluation") {
    interrupted_run("eval", false, 0, 3, 1, 8);  // the first batch of epoch 2's evaluation
    CHECK(epoch_records(dir / "eval.jsonl").size() == 1);
    finish_and_compare("eval");
  }
  SUBCASE("twice, in a run and in its resumption") {
    interrupted_run("twice", false, 5, 0, 0, 5);
    interrupted_run("twice", true, 9, 0, 1, 6);  // step 14
    finish_and_compare("twice");
  }
  SUBCASE("without --checkpoint nothing is written, and the summary says so") {
    CpuBackend inner(options());
    SignallingBackend backend(inner, 4);
    TrainerOptions t = trainer("none");
    t.checkpoint.clear();
    const InterruptHandlers handlers;
    t.interrupt = &InterruptHandlers::flag();
    const TrainSummary s = train(backend, train_set, test_set, t, log);
    CHECK(s.interrupted == SIGINT);
    CHECK(s.steps == 4);
    CHECK_FALSE(fs::exists(dir / "none.ckpt"));
    std::ifstream in(t.metrics);
    std::string last;
    for (std::string line; std::getline(in, line);) last = line;
    CHECK(json::parse(last)["summary"]["interrupted"] == "SIGINT");
  }
  SUBCASE("a signal before the first step: nothing is read or written") {
    CpuBackend inner(options());
    SignallingBackend backend(inner, 0);
    const InterruptHandlers handlers;
    ::raise(SIGTERM);
    TrainerOptions t = trainer("early");
    t.interrupt = &InterruptHandlers::flag();
    const TrainSummary s = train(backend, train_set, test_set, t, log);
    CHECK(s.interrupted == SIGTERM);
    CHECK(s.steps_this_run == 0);
    CHECK_FALSE(fs::exists(t.metrics));
    CHECK_FALSE(fs::exists(t.checkpoint));
  }
}

// ---------------------------------------------------------------- files

// A bad --checkpoint used to surface after a whole epoch, and a special file was
// replaced. Every case is refused before the first step, with the option named, and
// nothing in the directory (nor an existing metrics file) changes.
TEST_CASE("training: unusable --checkpoint, --metrics or --resume files are refused before the first step") {
  const Dataset train_set = synthetic(64, Split::train);
  const Dataset test_set = synthetic(32, Split::test);
  TempDir dir("refuse");
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  fs::create_directory(dir / "sub");
  spit(dir / "m.jsonl", "{\"epoch\":1}\n");
  spit(dir / "file", "x");
  // A device node of our own: if the guard ever broke, a run would replace it (as root,
  // the system's /dev/null would be replaced for everyone).
  const fs::path device = resnet18::testing::scratch_device(dir.path);
  const auto before = listing(dir.path);
  struct Case {
    std::string checkpoint, metrics, resume, says;
  };
  const std::string ok_ckpt = (dir / "new.ckpt").string(), metrics = (dir / "m.jsonl").string();
  const Case cases[] = {
      {(dir / "fifo").string(), metrics, "", "--checkpoint " + (dir / "fifo").string() + ": is a FIFO"},
      {device.string(), metrics, "", "--checkpoint " + device.string() + ": is a character device"},
      {(dir / "sub").string(), metrics, "", "--checkpoint " + (dir / "sub").string() + ": is a directory"},
      {(dir / "missing" / "c.ckpt").string(), metrics, "", "its directory " + (dir / "missing").string() + " does not exist"},
      {(dir / "file" / "c.ckpt").string(), metrics, "", "/file/c.ckpt: cannot inspect it: Not a directory"},
      {"/proc/resnet18-test.ckpt", metrics, "", "--checkpoint /proc/resnet18-test.ckpt: cannot create a file in /proc"},
      {ok_ckpt, (dir / "fifo").string(), "", "--metrics " + (dir / "fifo").string() + ": is a FIFO"},
      {ok_ckpt, device.string(), "", "--metrics " + device.string() + ": is a character device"},
      {ok_ckpt, ok_ckpt, "", "--metrics " + ok_ckpt + ": is also the --checkpoint file"},
      {ok_ckpt, metrics, (dir / "fifo").string(), "--resume " + (dir / "fifo").string() + ": is a FIFO (named pipe), not a checkpoint file"},
      {ok_ckpt, metrics, "/dev/zero", "--resume /dev/zero: is a character device"},
      {ok_ckpt, metrics, metrics, "--metrics " + metrics + ": is also the --resume file"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.says);
    if (device.empty() && (c.checkpoint.empty() || c.metrics.empty())) continue;
    CpuBackend inner(backend_options(BaseKind::adam, {}, 0.01));
    SignallingBackend backend(inner, 0);
    TrainerOptions t = trainer_options(1, 0.01);
    t.checkpoint = c.checkpoint;
    t.metrics = c.metrics;
    t.resume = c.resume;
    std::ostringstream log;
    CHECK_THROWS_WITH_AS(train(backend, train_set, test_set, t, log), doctest::Contains(c.says.c_str()), RefusedError);
    CHECK(backend.steps() == 0);
    CHECK(listing(dir.path) == before);
    CHECK(slurp(dir / "m.jsonl") == "{\"epoch\":1}\n");
    CHECK(fs::is_fifo(dir / "fifo"));
  }
  if (!device.empty()) CHECK(fs::is_character_file(device));
}

// `--resume /dev/zero` read forever, and a crafted header could ask for any amount of
// memory. The file is refused from its type or size before it is read, and each
// section's declared length is checked against what this model and optimizer can hold.
TEST_CASE("training: a resume reads no more than this model's and optimizer's checkpoint can hold") {
  const Dataset train_set = synthetic(64, Split::train);
  const Dataset test_set = synthetic(32, Split::test);
  TempDir dir("bounds");
  CpuBackend trained(backend_options(BaseKind::adam, kNested, 0.01));
  TrainerOptions t = trainer_options(1, 0.01);
  t.checkpoint = dir / "good.ckpt";
  std::ostringstream log;
  train(trained, train_set, test_set, t, log);
  const std::string good = slurp(dir / "good.ckpt");

  CpuBackend fresh_inner(backend_options(BaseKind::adam, kNested, 0.01));
  SignallingBackend fresh(fresh_inner, 0);  // the default bounds of TrainingBackend
  const std::vector<float> before = flat_params(fresh_inner);
  const std::vector<TrainingBackend*> both = {&fresh, &fresh_inner};
  auto refused = [&](const fs::path& file, const std::string& why, const std::vector<TrainingBackend*>& backends) {
    CAPTURE(why);
    const auto start = std::chrono::steady_clock::now();
    for (TrainingBackend* b : backends)
      CHECK_THROWS_WITH_AS(load_train_checkpoint(file, *b), doctest::Contains(why.c_str()), TrainCheckpointError);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
    CHECK(flat_params(fresh_inner) == before);
  };
  // Sections start after the 8-byte magic and the 4-byte version: u64 length, bytes.
  auto with_length = [&](int section, std::uint64_t n) {
    std::string bytes = good;
    std::size_t at = 12;
    for (int i = 0; i < section; ++i) {
      std::uint64_t len;
      std::memcpy(&len, bytes.data() + at, 8);
      at += 8 + len;
    }
    std::memcpy(bytes.data() + at, &n, 8);
    spit(dir / "crafted.ckpt", bytes);
    return dir / "crafted.ckpt";
  };
  refused(with_length(0, std::uint64_t(1) << 62), "declares a 4611686018427387904-byte trainer state section", both);
  refused(with_length(0, max_trainer_state_bytes + 1), "-byte trainer state section; this model and optimizer's is at most 1048576 bytes", both);
  refused(with_length(1, fresh_inner.model_state_bound() + 1), "-byte model section", both);
  refused(with_length(2, ~std::uint64_t(0)), "declares a 18446744073709551615-byte optimizer section", both);
  // Each backend's own bound: CpuBackend's from the optimizer's depth, the default from the model's size.
  refused(with_length(2, fresh_inner.optimizer_state_bound() + 1),
          "-byte optimizer section; this model and optimizer's is at most " +
              std::to_string(fresh_inner.optimizer_state_bound()) + " bytes",
          {&fresh_inner});
  refused(with_length(2, fresh.optimizer_state_bound() + 1),
          "this model and optimizer's is at most " + std::to_string(fresh.optimizer_state_bound()) + " bytes",
          {&fresh});
  CHECK(fresh.optimizer_state_bound() > fresh_inner.optimizer_state_bound());
  // Within the bounds but past the end of the file.
  {
    std::uint64_t state, model, opt;
    std::memcpy(&state, good.data() + 12, 8);
    std::memcpy(&model, good.data() + 20 + state, 8);
    std::memcpy(&opt, good.data() + 28 + state + model, 8);
    refused(with_length(2, opt + 100), "truncated: the optimizer section runs past the end of the file", both);
  }
  // A file far larger than any checkpoint of this run: refused from its size (sparse, 1 TiB).
  {
    spit(dir / "huge.ckpt", good);
    REQUIRE(::truncate((dir / "huge.ckpt").c_str(), off_t(1) << 40) == 0);
  }
  refused(dir / "huge.ckpt", "is 1099511627776 bytes, more than the", both);
  refused("/dev/zero", "checkpoint /dev/zero: is a character device, not a regular file", both);
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  refused(dir / "fifo", "is a FIFO (named pipe), not a regular file", both);  // would block if opened
  spit(dir / "long.ckpt", good + "x");
  refused(dir / "long.ckpt", "trailing bytes after the checksum", both);
  CHECK_NOTHROW(load_train_checkpoint(dir / "good.ckpt", fresh));
}

// The bounds must hold every real checkpoint: the optimizers with the most state
// (Adam's two moments, pullback's slow momenta at three levels), stepped.
TEST_CASE("training: the checkpoint bounds hold every optimizer's real state") {
  const Dataset train_set = synthetic(32, Split::train);
  const Dataset test_set = synthetic(16, Split::test);
  const std::vector<LevelSpec> deep = {{2, 0.5, nestla::Momentum::pullback},
                                       {2, 0.5, nestla::Momentum::pullback},
                                       {2, 0.5, nestla::Momentum::pullback}};
  for (BaseKind base : {BaseKind::sgd, BaseKind::adam, BaseKind::adamw})
    for (const auto& levels : {std::vector<LevelSpec>{}, deep}) {
      CAPTURE(to_string(base));
      CAPTURE(levels.size());
      CpuBackendOptions o = backend_options(base, levels, 0.01);
      o.no_decay_bn_bias = true;
      CpuBackend backend(o);
      SignallingBackend generic(backend, 0);
      std::ostringstream model, opt, log;
      backend.save_optimizer(opt);
      const std::size_t fresh_bytes = opt.str().size();
      train(backend, train_set, test_set, trainer_options(1, 0.01), log);
      opt.str("");
      backend.save_optimizer(opt);
      backend.save_model(model);
      CHECK(opt.str().size() > fresh_bytes);
      CHECK(backend.model_state_bound() == model.str().size());
      CHECK(generic.model_state_bound() == model.str().size());
      CHECK(opt.str().size() <= backend.optimizer_state_bound());
      CHECK(opt.str().size() <= generic.optimizer_state_bound());
      // And not loose by more than the fixed allowance.
      CHECK(backend.optimizer_state_bound() <= 2 * opt.str().size() + (std::size_t(64) << 10) + 62 * 64);
    }
}

TEST_CASE("training: the metrics file read on resume is bounded, and refused when special") {
  const Dataset train_set = synthetic(64, Split::train);
  const Dataset test_set = synthetic(32, Split::test);
  TempDir dir("metrics");
  CpuBackend first(backend_options(BaseKind::adam, {}, 0.01));
  TrainerOptions t = trainer_options(1, 0.01);
  t.checkpoint = dir / "run.ckpt";
  t.metrics = dir / "run.jsonl";
  std::ostringstream log;
  train(first, train_set, test_set, t, log);
  // 1 TiB of sparse "metrics": refused from its size, left as it was.
  REQUIRE(::truncate((dir / "run.jsonl").c_str(), off_t(1) << 40) == 0);
  t.epochs = 2;
  t.resume = t.checkpoint;
  const std::string checkpoint = slurp(t.checkpoint);
  CpuBackend second(backend_options(BaseKind::adam, {}, 0.01));
  SignallingBackend counted(second, 0);
  CHECK_THROWS_WITH_AS(train(counted, train_set, test_set, t, log),
                       doctest::Contains(("--metrics " + t.metrics.string() + ": is 1099511627776 bytes, more than").c_str()),
                       RefusedError);
  CHECK(counted.steps() == 0);
  CHECK(fs::file_size(t.metrics) == (std::uintmax_t(1) << 40));
  CHECK(slurp(t.checkpoint) == checkpoint);
}

TEST_CASE("training: temporaries left by a killed save are removed on start, and only those") {
  const Dataset train_set = synthetic(64, Split::train);
  const Dataset test_set = synthetic(32, Split::test);
  TempDir dir("stale");
  const std::string dead = std::to_string(resnet18::testing::dead_pid());
  spit(dir / (".run.ckpt.tmp." + dead + ".0"), "half a checkpoint");
  spit(dir / (".run.jsonl.tmp." + dead + ".3"), "half a metrics file");
  spit(dir / (".other.ckpt.tmp." + dead + ".0"), "not ours");
  CpuBackend backend(backend_options(BaseKind::adam, {}, 0.01));
  TrainerOptions t = trainer_options(1, 0.01);
  t.checkpoint = dir / "run.ckpt";
  t.metrics = dir / "run.jsonl";
  std::ostringstream log;
  train(backend, train_set, test_set, t, log);
  CHECK(log.str().find("removed " + (dir / (".run.ckpt.tmp." + dead + ".0")).string() +
                       ", a temporary file left by an interrupted save") != std::string::npos);
  CHECK(log.str().find(".run.jsonl.tmp." + dead + ".3") != std::string::npos);
  CHECK(listing(dir.path) == std::vector<std::string>{".other.ckpt.tmp." + dead + ".0", "run.ckpt", "run.jsonl"});
}

// ---------------------------------------------------------------- the program

namespace {

// Runs resnet18_train with `args`, its output in `log`; `while_running(pid)` is called
// once it started. Returns the wait status.
int run_trainer(const std::vector<std::string>& args, const fs::path& log,
                const std::function<void(pid_t)>& while_running = {}) {
  std::vector<std::string> all = {RESNET18_TRAIN_EXE};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&files, STDOUT_FILENO, STDERR_FILENO);
  // The child starts with default signal dispositions (doctest's handlers are not inherited by exec anyway).
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t all_signals;
  sigfillset(&all_signals);
  posix_spawnattr_setsigdefault(&attr, &all_signals);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &files, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attr);
  REQUIRE(rc == 0);
  if (while_running) while_running(pid);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return status;
}

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

}  // namespace

TEST_CASE("resnet18_train: refusals exit with status 2, naming the option, before any data is loaded") {
  TempDir dir("exe_refuse");
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  const fs::path device = resnet18::testing::scratch_device(dir.path);
  const fs::path log = dir / "log.txt";
  const std::vector<std::pair<std::string, std::string>> tiny = {{"--dataset", "synthetic"}, {"--image-size", "8"},
                                                                 {"--width", "2"},          {"--train-subset", "64"},
                                                                 {"--test-subset", "16"},   {"--progress", "none"}};
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const Case cases[] = {
      {{"--checkpoint", (dir / "fifo").string()}, "--checkpoint: " + (dir / "fifo").string() + ": is a FIFO"},
      {{"--metrics", device.string()}, "--metrics: " + device.string() + ": is a character device"},
      {{"--resume", "/dev/zero"}, "--resume: /dev/zero: is a character device, not a checkpoint file"},
      {{"--checkpoint", (dir / "no" / "c.ckpt").string()},
       "resnet18_train: refused: --checkpoint " + (dir / "no" / "c.ckpt").string() + ": its directory " +
           (dir / "no").string() + " does not exist; nothing was written"},
      {{"--schedule", "step", "--gamma", "nan"}, "--gamma: must be a finite number in (0, 1] (got nan)"},
      {{"--train-subset", "-1"}, "--train-subset: must be an integer in [0, 2147483647] (got -1)"},
      {{"--width", "4096"}, "resnet18_train: refused: --width 4096: the model's"},
      {{"--batch-size", "65536", "--image-size", "128", "--width", "64"}, "refused: --batch-size 65536: a batch's activations"},
      {{"--train-subset", "2000000000", "--image-size", "1024"}, "refused: --train-subset 2000000000: 2000000000 synthetic images"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.says);
    if (std::find(c.args.begin(), c.args.end(), "") != c.args.end()) continue;  // no device node here
    std::vector<std::string> args = c.args;
    for (const auto& [option, value] : tiny)
      if (std::find(c.args.begin(), c.args.end(), option) == c.args.end()) {
        args.push_back(option);
        args.push_back(value);
      }
    CHECK(exit_code(run_trainer(args, log)) == 2);
    const std::string out = slurp(log);
    CAPTURE(out);
    CHECK(out.find(c.says) != std::string::npos);
    CHECK(out.find("epoch 1/") == std::string::npos);
  }
  CHECK(fs::is_fifo(dir / "fifo"));
  std::vector<std::string> want = {"fifo|", "log.txt"};
  if (device.parent_path() == dir.path) want.push_back("null-device");
  std::sort(want.begin(), want.end());
  CHECK(listing(dir.path) == want);
}

// The real thing: a separate process, a real SIGINT at whatever step it lands, status 75,
// and a resume whose final checkpoint is byte-identical to an uninterrupted run's.
TEST_CASE("resnet18_train: SIGINT saves and exits with status 75, and --resume ends bit for bit where a straight run ends") {
  TempDir dir("exe_sigint");
  const std::vector<std::string> common = {
      "--dataset", "synthetic", "--image-size", "16", "--width", "4", "--train-subset", "512", "--test-subset", "64",
      "--batch-size", "16", "--optimizer", "nested", "--pullback", "pullback", "--seed", "3", "--threads", "1",
      "--progress", "none"};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> a = common;
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  const std::string a_ckpt = (dir / "a.ckpt").string(), b_ckpt = (dir / "b.ckpt").string();
  // Long enough never to finish on its own; saves after every step, so the first save
  // tells that training is under way.
  const int status =
      run_trainer(with({"--epochs", "10000", "--checkpoint", a_ckpt, "--checkpoint-every", "1", "--metrics",
                        (dir / "a.jsonl").string()}),
                  dir / "a.log", [&](pid_t pid) {
                    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
                    while (!fs::exists(a_ckpt) && std::chrono::steady_clock::now() < deadline)
                      std::this_thread::sleep_for(std::chrono::milliseconds(5));
                    ::kill(pid, SIGINT);
                  });
  const std::string out = slurp(dir / "a.log");
  CAPTURE(out);
  REQUIRE(exit_code(status) == 75);
  std::smatch m;
  REQUIRE(std::regex_search(out, m, std::regex("interrupted by SIGINT at epoch ([0-9]+), batch ([0-9]+), step ([0-9]+); "
                                               "checkpoint saved to " + a_ckpt + ": continue with --resume")));
  const int epoch = std::stoi(m[1]);
  MESSAGE("interrupted at epoch " << epoch << ", batch " << m[2] << ", step " << m[3]);
  CHECK(out.find("done:") == std::string::npos);
  const std::string epochs = std::to_string(epoch + 1);
  CHECK(exit_code(run_trainer(with({"--epochs", epochs, "--resume", a_ckpt, "--checkpoint", a_ckpt, "--metrics",
                                    (dir / "a.jsonl").string()}),
                              dir / "a2.log")) == 0);
  CHECK(exit_code(run_trainer(with({"--epochs", epochs, "--checkpoint", b_ckpt, "--metrics", (dir / "b.jsonl").string()}),
                              dir / "b.log")) == 0);
  const std::string a = slurp(a_ckpt), b = slurp(b_ckpt);
  CHECK(a.size() > 10000);
  CHECK(a == b);
  CHECK(epoch_records(dir / "a.jsonl") == epoch_records(dir / "b.jsonl"));
  CHECK(epoch_records(dir / "b.jsonl").size() == std::size_t(epoch + 1));
}

TEST_CASE("training: running out of memory in a step or an evaluation names the batch size that asked for it") {
  const Dataset train_set = synthetic(64, Split::train);
  const Dataset test_set = synthetic(32, Split::test);
  std::ostringstream log;
  {
    CpuBackend inner(backend_options(BaseKind::adam, {}, 0.01));
    SignallingBackend backend(inner, 0);
    backend.bad_alloc_at_step = 2;
    CHECK_THROWS_WITH_AS(train(backend, train_set, test_set, trainer_options(1, 0.01), log),
                         "--batch-size 32: out of memory in a training step at this batch size; use a smaller "
                         "--batch-size or --width",
                         std::runtime_error);
  }
  {
    CpuBackend inner(backend_options(BaseKind::adam, {}, 0.01));
    SignallingBackend backend(inner, 0);
    backend.bad_alloc_at_eval = 1;
    TrainerOptions t = trainer_options(1, 0.01);
    t.eval_batch_size = 16;
    CHECK_THROWS_WITH_AS(train(backend, train_set, test_set, t, log),
                         doctest::Contains("--eval-batch-size 16: out of memory in an evaluation"), std::runtime_error);
  }
}
