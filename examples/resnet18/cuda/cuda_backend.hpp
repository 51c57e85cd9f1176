// The trainer's GPU backend (--device cuda): the GPU ResNet-18 stepped by nestla's CUDA optimizers, datasets held and augmented on the device.
#pragma once

// The training loop, CLI, metrics, checkpoints and experiment runner are the CPU
// trainer's (trainer.hpp); this backend differs only in where the work runs:
// - Each dataset the loop hands over is copied to the GPU once. A batch travels as the
//   Batcher's indices and crop/flip draws (16 bytes a sample); the GPU gathers, crops,
//   flips and normalizes it, bit-identical to the CPU Batcher.
// - Forward, loss, backward and the nestla optimizer step are queued on one stream; the
//   host waits only for the loss and hit count, which arrive right after the forward
//   pass, so the next batch is queued while backward and the step still run.
// - Checkpoints are the CPU model's and nestla's formats, in the CPU model's tensor order:
//   a CPU run resumes on the GPU and the other way round.

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cuda_optimizer.hpp"
#include "optimizer_factory.hpp"
#include "plan.hpp"
#include "resnet.hpp"
#include "trainer.hpp"

namespace resnet18 {

namespace gpu {
class GpuResNet18;
}

struct CudaBackendOptions {
  ModelConfig model;
  OptimizerSpec optimizer;
  bool no_decay_bn_bias = false;  // batch-norm weights/biases and the fc bias in a group with weight_decay 0
  gpu::GpuModelOptions gpu;
  bool profile = false;  // time each phase with CUDA events (waits for the GPU after every step)
  // Distributed: each level's group of workers (NCCL, device memory), level 0 first; empty: none.
  std::vector<std::shared_ptr<nestla::worker_group>> groups;
};

// Distributed: the GPU of this worker, one per worker (its rank on the node, modulo the
// node's GPU count), made current before anything else touches CUDA.
void select_cuda_device(int local_rank);

// Whether a CUDA device can be used; if not, why (the CUDA runtime's message and a hint).
bool cuda_device_available(std::string* why = nullptr);

class CudaBackend final : public TrainingBackend {
 public:
  explicit CudaBackend(const CudaBackendOptions& options);
  ~CudaBackend() override;

  [[nodiscard]] std::string describe() const override;
  BatchResult train_step(const float* images, const std::int32_t* labels, int n) override;
  BatchResult evaluate(const float* images, const std::int32_t* labels, int n) override;
  [[nodiscard]] bool wants_batch_indices() const override { return true; }
  BatchResult train_batch(const Batcher& batch) override;
  BatchResult evaluate_batch(const Batcher& batch) override;
  void set_lr(double lr) override;
  [[nodiscard]] bool has_slow_weights() const override;
  void swap_slow_weights() override;
  [[nodiscard]] std::vector<std::pair<std::string, double>> optimizer_metrics() const override;
  void save_model(std::ostream& out) const override;
  void load_model(std::istream& in) override;
  void save_optimizer(std::ostream& out) const override;
  void load_optimizer(std::istream& in) override;
  void print_profile(std::ostream& out) const override;

  [[nodiscard]] gpu::GpuResNet18& model() noexcept;
  [[nodiscard]] AnyOptimizer<gpu::DeviceParams>& optimizer() noexcept;
  // Datasets currently held on the device (tests: each is uploaded once).
  [[nodiscard]] std::size_t datasets_on_device() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace resnet18
