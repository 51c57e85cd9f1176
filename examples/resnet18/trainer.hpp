// The training loop (epochs, schedule, evaluation, metrics, resumable checkpoints) over a small model backend.
#pragma once

// The loop knows nothing of Eigen, threads or devices: everything that touches the model
// and the optimizer goes through TrainingBackend. The CPU trainer implements it with
// ResNet18<float> and nestla on the host (cpu_backend.hpp); a GPU backend implements the
// same dozen calls and reuses the loop, the CLI, the data pipeline and the checkpoints.

#include <atomic>
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
  // The most bytes save_model / save_optimizer can write for this model and optimizer, in
  // any state (fresh or stepped): a resume reads no more than these. By default the
  // model's size is measured (it is fixed), and the optimizer's bounded by 8 floats per
  // model float plus 1 MiB (a base's two moments and slow weights and slow momenta at
  // each of up to three levels).
  [[nodiscard]] virtual std::size_t model_state_bound() const;
  [[nodiscard]] virtual std::size_t optimizer_state_bound() const;

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

// The workers of a distributed run, as the loop needs them (MPI stays in workers.cpp).
// Every worker runs the same loop on its shard of each batch; the optimizer's groups do
// the averaging. The loop itself only agrees on when to stop and adds up what it reports.
class WorkerComm {
 public:
  virtual ~WorkerComm() = default;
  [[nodiscard]] virtual int rank() const = 0;
  [[nodiscard]] virtual int size() const = 0;
  // Bitwise OR of every worker's flags (one small collective).
  [[nodiscard]] virtual int any(int flags) const = 0;
  // In place: values[i] <- the sum over the workers.
  virtual void sum(double* values, int n) const = 0;
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

  // Set (to a signal number) by InterruptHandlers: the loop stops after its current step,
  // or in the middle of an evaluation, saves the checkpoint and returns. Null: never.
  const std::atomic<int>* interrupt = nullptr;

  // Distributed: the workers (null: this process alone). Each takes its shard of every
  // batch (batch_size is the global batch); they stop together (interrupts, divergence);
  // the epoch's training loss and accuracy are over all workers; only worker 0
  // evaluates (the outermost slow weights, or theta, agree across workers after a sync).
  // The caller gives the other workers no metrics, checkpoint or progress.
  const WorkerComm* workers = nullptr;

  // Everything about the run, written as the metrics file's first record.
  nlohmann::json run_info = nlohmann::json::object();
  // What must match for a resume to continue the same run (dataset, model, optimizer,
  // batch size, seed...); checked field by field against the checkpoint's.
  nlohmann::json signature = nlohmann::json::object();
};

struct TrainSummary {
  int epochs_done = 0;
  std::int64_t steps = 0;
  std::int64_t steps_this_run = 0;  // taken by this process (steps counts a resumed run's too)
  bool stopped_early = false;  // max_steps reached inside an epoch, or interrupted
  int interrupted = 0;         // the signal that stopped the run, 0 if none
  std::size_t batches_done = 0;  // position inside the epoch in progress when stopped
  std::optional<double> best_test_acc;
  int best_epoch = 0;
  std::optional<double> final_test_acc;
  std::optional<double> final_test_loss;
  double seconds = 0;                // wall time of this process's training
  std::vector<EpochMetrics> epochs;  // the epochs this process ran
};

// Trains for options.epochs epochs (counting those a resumed checkpoint already did).
// Per-epoch lines go to `log`, progress bars to stderr. Runs check_files() first, so a
// bad --checkpoint, --metrics or --resume is refused (RefusedError) before anything is
// written. Throws on I/O or checkpoint errors.
TrainSummary train(TrainingBackend& backend, const Dataset& train_set, const Dataset& test_set,
                   const TrainerOptions& options, std::ostream& log);

// The files of a run, checked before its first step, and its stale temporaries removed:
// - --checkpoint: missing or a regular file we may write (a symbolic link is followed and
//   the file it names replaced, the link kept), in an existing directory where a file can
//   be created (a temporary is created and removed);
// - --metrics: the same (its directory only when a resume rewrites it), and not the
//   checkpoint's or the resume file's path;
// - --resume: an existing regular file.
// Device nodes, FIFOs, sockets and directories are refused, never opened. Throws
// RefusedError naming the option and the path; returns one line per temporary file
// removed (left by a killed save: see remove_stale_temporaries()).
std::vector<std::string> check_files(const TrainerOptions& options);

// ---- checkpoint file: the trainer's position (JSON), the model, the optimizer, one CRC-32.

// A checkpoint refused on resume (type, size, format, checksum, another run's).
class TrainCheckpointError : public RefusedError {
 public:
  using RefusedError::RefusedError;
};

// The trainer-state section's largest size (the position and the run's signature are a
// few KiB).
inline constexpr std::size_t max_trainer_state_bytes = 1 << 20;

void save_train_checkpoint(const std::filesystem::path& path, const nlohmann::json& trainer_state,
                           const TrainingBackend& backend);
// Verifies the whole file (magic, version, sizes, checksum) before it touches the backend,
// then loads model and optimizer; returns the trainer state. Reads no more than the
// bounds allow: a file that is not regular is never opened, one larger than header +
// max_trainer_state_bytes + the backend's two state bounds is refused unread, and each
// section's declared length is checked against its bound before it is read.
nlohmann::json load_train_checkpoint(const std::filesystem::path& path, TrainingBackend& backend);

}  // namespace resnet18
