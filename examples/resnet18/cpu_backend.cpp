// The trainer's CPU backend.
#include "cpu_backend.hpp"

#include <omp.h>

#include <Eigen/Core>
#include <ostream>
#include <sstream>

namespace resnet18 {

int set_process_threads(int threads) {
  if (threads > 0) {
    omp_set_num_threads(threads);
    Eigen::setNbThreads(threads);
  }
  return omp_get_max_threads();
}

namespace {
OptimizerSpec with_groups(OptimizerSpec spec, const ResNet18<float>& model, bool no_decay_bn_bias) {
  spec.no_decay_tensors.clear();
  if (no_decay_bn_bias) {
    const std::vector<bool> flags = model.no_weight_decay();
    for (std::size_t i = 0; i < flags.size(); ++i)
      if (flags[i]) spec.no_decay_tensors.push_back(i);
  }
  return spec;
}
}  // namespace

CpuBackend::CpuBackend(const CpuBackendOptions& o)
    : threads_(set_process_threads(o.threads)),
      model_(o.model),
      params_(model_.parameters()),
      grads_(model_.gradients()),
      optimizer_(make_optimizer<EigenParams>(with_groups(o.optimizer, model_, o.no_decay_bn_bias))) {
  optimizer_->set_threads(static_cast<unsigned>(threads_));
  optimizer_->set_groups(o.groups);
}

std::string CpuBackend::describe() const {
  const ModelConfig& c = model_.config();
  std::ostringstream s;
  s << "cpu, " << threads_ << (threads_ == 1 ? " thread" : " threads") << "; ResNet-18 width " << c.width << ", "
    << (c.stem == Stem::cifar ? "cifar" : "imagenet") << " stem, " << c.in_channels << "x" << c.image_size << "x"
    << c.image_size << " input, " << model_.num_parameters() << " parameters; " << optimizer_->describe();
  return s.str();
}

BatchResult CpuBackend::train_step(const float* images, const std::int32_t* labels, int n) {
  const BatchResult r = model_.train_step(images, labels, n);
  optimizer_->step(params_, grads_);
  return r;
}

BatchResult CpuBackend::evaluate(const float* images, const std::int32_t* labels, int n) {
  return model_.evaluate(images, labels, n);
}

std::vector<std::pair<std::string, double>> CpuBackend::optimizer_metrics() const {
  std::vector<std::pair<std::string, double>> out;
  const auto syncs = optimizer_->syncs();
  for (std::size_t i = 0; i < syncs.size(); ++i)
    out.emplace_back("syncs_level" + std::to_string(i + 1), static_cast<double>(syncs[i]));
  if (const nestla::comm_stats c = optimizer_->comm_stats(); c.collectives > 0) {
    out.emplace_back("collectives", static_cast<double>(c.collectives));
    out.emplace_back("bytes_sent", static_cast<double>(c.bytes_sent));
  }
  return out;
}

std::size_t CpuBackend::optimizer_state_bound() const {
  // nestla's format holds every tensor's elements once per state buffer: the base's (at
  // most two moments) and, per Lookahead level, slow weights, slow momenta and outer
  // momentum. The rest (names, options, counters, tensor sizes, group lists) is a few
  // bytes per tensor.
  const std::size_t buffers = 2 + 3 * static_cast<std::size_t>(optimizer_->depth());
  return model_.num_parameters() * buffers * sizeof(float) + params_.size() * 64 + (std::size_t(64) << 10);
}

void CpuBackend::print_profile(std::ostream& out) const { model_.profile().print(out, false); }

}  // namespace resnet18
