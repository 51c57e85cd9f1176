// The training loop (epochs, schedule, evaluation, metrics, resumable checkpoints) over a small model backend.
#pragma once

// The loop knows nothing of Eigen, threads or devices: everything that touches the model
// and the optimizer goes through TrainingBackend. The CPU trainer implements it with
// ResNet18<float> and nestla on the host (cpu_backend.hpp); a GPU backend implements the
// same dozen calls and reuses the loop, the CLI, the data pipeline and the checkpoints.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "augment.hpp"
#include "data.hpp"
#include "resnet.hpp"
#include "util.hpp"

namespace resnet18 {

class TrainingBackend {
 public:
  virtual ~TrainingBackend() = default;

  // One line for the log: device, threads, model, optimizer.
  [[nodiscard]] virtual std::string describe() const = 0;

  // Forward in training mode, backward, then one optimizer step. images: n x C x H x W,
  // normalized (the Batcher's layout). Returns the forward's loss and hits.
  virtual BatchResult train_step(const float* images, const std::int32_t* labels, int n) = 0;
  // Forward with running statistics; parameters and optimizer untouched.
  virtual BatchResult evaluate(const float* images, const std::int32_t* labels, int n) = 0;

  // The learning rate of the next steps (the base optimizer's; set before every step).
  virtual void set_lr(double lr) = 0;

  // Whether the optimizer has slow weights to evaluate at (a Lookahead level that has stepped).
  [[nodiscard]] virtual bool has_slow_weights() const = 0;
  // Exchanges the model's parameters with the outermost Lookahead level's slow weights;
  // a second call swaps back.
  virtual void swap_slow_weights() = 0;

  // Counters worth a metrics field, e.g. {"syncs_level1", 120}.
  [[nodiscard]] virtual std::vector<std::pair<std::string, double>> optimizer_metrics() const = 0;

  // State for checkpoints. Each load checks what it reads and leaves the state unchanged on error.
  virtual void save_model(std::ostream& out) const = 0;
  virtual void load_model(std::istream& in) = 0;
  virtual void save_optimizer(std::ostream& out) const = 0;
  virtual void load_optimizer(std::istream& in) = 0;

  // A backend that keeps the datasets in its own memory (the GPU one) takes each batch as
  // the Batcher's indices and augmentation draws rather than host images: the loop then
  // lets the Batcher skip its image copy (BatcherOptions::fill_images = false).
  [[nodiscard]] virtual bool wants_batch_indices() const { return false; }
  // The Batcher's current batch; by default its images, through train_step / evaluate.
  virtual BatchResult train_batch(const Batcher& batch) {
    return train_step(batch.images().data(), batch.labels().data(), static_cast<int>(batch.size()));
  }
  virtual BatchResult evaluate_batch(const Batcher& batch) {
    return evaluate(batch.images().data(), batch.labels().data(), static_cast<int>(batch.size()));
  }

  // A per-layer time table, where the backend keeps one.
  virtual void print_profile(std::ostream& out) const { (void)out; }
};

enum class Schedule { none, cosine, step };

struct ScheduleOptions {
  Schedule kind = Schedule::none;
  double lr = 1e-3;            // peak learning rate
  double step_size = 30;       // epochs between decays (step)
  double gamma = 0.1;          // decay factor (step)
  double warmup = 0;           // epochs of linear warm-up from lr/steps to lr (any schedule)
};

// The learning rate of the optimizer step with 0-based index `step`. A function of the
// step alone, so a resumed run continues the same curve.
double scheduled_lr(const ScheduleOptions& s, std::int64_t step, std::size_t steps_per_epoch, int epochs);

struct TrainerOptions {
  int epochs = 10;
  std::size_t batch_size = 64;
  std::size_t eval_batch_size = 0;  // 0: batch_size
  std::uint64_t seed = 0;           // shuffling and augmentation (the model's init is the backend's)
  bool augment = true;              // random crop (4-pixel padding) and horizontal flip
  ScheduleOptions schedule;
  bool eval_slow = false;  // evaluate at the outermost Lookahead level's slow weights

  std::filesystem::path metrics;     // JSON lines; empty: none
  std::filesystem::path checkpoint;  // written atomically after every epoch; empty: none
  std::filesystem::path resume;      // checkpoint to continue from; empty: a fresh run
  std::int64_t checkpoint_every = 0;  // also every this many steps inside an epoch (0: never)
  std::int64_t max_steps = 0;         // stop after this many steps in all (0: no limit)

  enum class Progress { automatic, bar, plain, none };
  Progress progress = Progress::automatic;

  // Everything about the run, written as the metrics file's first record.
  nlohmann::json run_info = nlohmann::json::object();
  // What must match for a resume to continue the same run (dataset, model, optimizer,
  // batch size, seed...); checked field by field against the checkpoint's.
  nlohmann::json signature = nlohmann::json::object();
};

struct TrainSummary {
  int epochs_done = 0;
  std::int64_t steps = 0;
  bool stopped_early = false;  // max_steps reached inside an epoch
  std::optional<double> best_test_acc;
  int best_epoch = 0;
  std::optional<double> final_test_acc;
  std::optional<double> final_test_loss;
  double seconds = 0;                // wall time of this process's training
  std::vector<EpochMetrics> epochs;  // the epochs this process ran
};

// Trains for options.epochs epochs (counting those a resumed checkpoint already did).
// Per-epoch lines go to `log`, progress bars to stderr. Throws on I/O or checkpoint errors.
TrainSummary train(TrainingBackend& backend, const Dataset& train_set, const Dataset& test_set,
                   const TrainerOptions& options, std::ostream& log);

// ---- checkpoint file: the trainer's position (JSON), the model, the optimizer, one CRC-32.

class TrainCheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

void save_train_checkpoint(const std::filesystem::path& path, const nlohmann::json& trainer_state,
                           const TrainingBackend& backend);
// Verifies the whole file (magic, version, sizes, checksum) before it touches the backend,
// then loads model and optimizer; returns the trainer state.
nlohmann::json load_train_checkpoint(const std::filesystem::path& path, TrainingBackend& backend);

}  // namespace resnet18
