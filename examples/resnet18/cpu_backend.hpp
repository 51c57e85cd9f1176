// The trainer's CPU backend: ResNet18<float> on Eigen/OpenMP, stepped by a nestla optimizer over maps of its storage.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "optimizer_factory.hpp"
#include "resnet.hpp"
#include "trainer.hpp"

namespace resnet18 {

struct CpuBackendOptions {
  ModelConfig model;
  OptimizerSpec optimizer;
  bool no_decay_bn_bias = false;  // batch-norm weights/biases and the fc bias in a group with weight_decay 0
  int threads = 0;                // OpenMP, Eigen and nestla threads; 0: OpenMP's default
  // Distributed: each level's group of workers, level 0 first (AnyOptimizer::set_groups); empty: none.
  std::vector<std::shared_ptr<nestla::worker_group>> groups;
};

class CpuBackend final : public TrainingBackend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options);

  [[nodiscard]] std::string describe() const override;
  BatchResult train_step(const float* images, const std::int32_t* labels, int n) override;
  BatchResult evaluate(const float* images, const std::int32_t* labels, int n) override;
  void set_lr(double lr) override { optimizer_->set_lr(lr); }
  [[nodiscard]] bool has_slow_weights() const override { return optimizer_->has_slow_weights(); }
  void swap_slow_weights() override { optimizer_->swap_slow(params_); }
  [[nodiscard]] std::vector<std::pair<std::string, double>> optimizer_metrics() const override;
  void save_model(std::ostream& out) const override { model_.save(out); }
  void load_model(std::istream& in) override { model_.load(in); }
  void save_optimizer(std::ostream& out) const override { optimizer_->save(out); }
  void load_optimizer(std::istream& in) override { optimizer_->load(in); }
  [[nodiscard]] std::size_t model_state_bound() const override { return model_.checkpoint_bytes(); }
  [[nodiscard]] std::size_t optimizer_state_bound() const override;
  void print_profile(std::ostream& out) const override;

  [[nodiscard]] ResNet18<float>& model() noexcept { return model_; }
  [[nodiscard]] AnyOptimizer<EigenParams>& optimizer() noexcept { return *optimizer_; }

 private:
  int threads_;  // first: the model sizes its per-thread scratch by the thread count
  ResNet18<float> model_;
  EigenParams params_, grads_;  // views of the model's storage, made once
  std::unique_ptr<AnyOptimizer<EigenParams>> optimizer_;
};

// Sets OpenMP's and Eigen's thread counts for the whole process (0: leave the default)
// and returns the count in effect.
int set_process_threads(int threads);

}  // namespace resnet18
