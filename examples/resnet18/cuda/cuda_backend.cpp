// The trainer's GPU backend: device datasets, per-batch index upload, step schedule with an early loss read, checkpoints through the host mirror.
#include "cuda_backend.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <stdexcept>

#include <cuda_runtime_api.h>

#include "cuda_check.hpp"
#include "gpu_resnet.hpp"
#include "kernels.hpp"

namespace resnet18 {
namespace {

using gpu::DeviceArray;

// Page-locked host memory: the only kind a copy can overlap with the GPU's work.
template <class T>
class PinnedArray {
 public:
  PinnedArray() = default;
  PinnedArray(const PinnedArray&) = delete;
  PinnedArray& operator=(const PinnedArray&) = delete;
  ~PinnedArray() {
    if (data_) cudaFreeHost(data_);
  }
  void grow(std::size_t n) {
    if (n <= size_) return;
    if (data_) cudaFreeHost(data_);
    data_ = nullptr;
    size_ = 0;
    void* p = nullptr;
    GPU_CHECK(cudaMallocHost(&p, n * sizeof(T)));
    data_ = static_cast<T*>(p);
    size_ = n;
  }
  T* data() noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

class Event {
 public:
  explicit Event(bool timing = false) {
    GPU_CHECK(cudaEventCreateWithFlags(&e_, timing ? cudaEventDefault : cudaEventDisableTiming));
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  cudaEvent_t get() const noexcept { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// A dataset copied to the device once: images as the Batcher reads them (N x C x H x W in
// [0, 1]), labels widened to int32, and the per-channel normalization.
struct DeviceDataset {
  const Dataset* source = nullptr;
  const float* host_images = nullptr;  // identifies the dataset together with source and size
  std::size_t count = 0;
  DeviceArray<float> images;
  DeviceArray<std::int32_t> labels;
  DeviceArray<float> scale_shift;  // C scales, then C shifts
};

// Phases of a training step, timed with events when profiling.
constexpr std::array<const char*, 5> kPhases = {"input (augment/upload)", "forward", "loss", "backward",
                                                "optimizer step"};

}  // namespace

bool cuda_device_available(std::string* why) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    if (why) *why = gpu::describe(e, "cudaGetDeviceCount");
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device is visible (cudaGetDeviceCount returned 0)";
    return false;
  }
  return true;
}

struct CudaBackend::Impl {
  explicit Impl(const CudaBackendOptions& o)
      : options(o), model(o.model, o.gpu), stats_ready(false), records_free(false) {
    const auto& info = model.parameter_info();
    for (const ParameterInfo& p : info) {
      params.emplace_back(model.parameters() + p.offset, p.size);
      grads.emplace_back(model.gradients() + p.offset, p.size);
    }
    OptimizerSpec spec = o.optimizer;
    spec.no_decay_tensors.clear();
    if (o.no_decay_bn_bias)
      for (std::size_t i = 0; i < info.size(); ++i)
        if (info[i].no_weight_decay) spec.no_decay_tensors.push_back(i);
    optimizer = gpu::make_device_optimizer(spec);
    optimizer->set_groups(o.groups);
    host_stats.grow(1);
    if (o.profile)
      for (auto& e : phase_events) e = std::make_unique<Event>(true);
  }

  DeviceDataset& dataset(const Dataset& d) {
    for (auto& dd : datasets)
      if (dd->source == &d && dd->host_images == d.images.data() && dd->count == d.size()) return *dd;
    const ModelConfig& c = model.config();
    if (d.channels != c.in_channels || d.height != c.image_size || d.width != c.image_size)
      throw std::invalid_argument("GPU trainer: dataset '" + d.name + "' has " + std::to_string(d.channels) + "x" +
                                  std::to_string(d.height) + "x" + std::to_string(d.width) + " images, the model takes " +
                                  std::to_string(c.in_channels) + "x" + std::to_string(c.image_size) + "x" +
                                  std::to_string(c.image_size));
    if (d.images.size() != d.size() * d.image_size())
      throw std::invalid_argument("GPU trainer: dataset '" + d.name + "' holds " + std::to_string(d.images.size()) +
                                  " floats for " + std::to_string(d.size()) + " images");
    std::vector<std::int32_t> labels(d.size());
    for (std::size_t i = 0; i < d.size(); ++i) {
      if (d.labels[i] >= c.num_classes)
        throw std::invalid_argument("GPU trainer: dataset '" + d.name + "' image " + std::to_string(i) + " has label " +
                                    std::to_string(int(d.labels[i])) + ", the model has " +
                                    std::to_string(c.num_classes) + " classes");
      labels[i] = d.labels[i];
    }
    std::vector<float> scale, shift;
    gpu::normalization_constants(d.mean, d.stddev, scale, shift);
    scale.insert(scale.end(), shift.begin(), shift.end());
    // A trainer holds a training and a test set; a third dataset replaces the oldest.
    if (datasets.size() >= 2) datasets.erase(datasets.begin());
    auto dd = std::make_unique<DeviceDataset>();
    dd->source = &d;
    dd->host_images = d.images.data();
    dd->count = d.size();
    dd->images.grow(std::max<std::size_t>(d.images.size(), 1));
    dd->labels.grow(std::max<std::size_t>(labels.size(), 1));
    dd->scale_shift.grow(scale.size());
    const cudaStream_t s = model.stream();
    GPU_CHECK(cudaMemcpyAsync(dd->images.data(), d.images.data(), d.images.size() * sizeof(float),
                              cudaMemcpyHostToDevice, s));
    GPU_CHECK(cudaMemcpyAsync(dd->labels.data(), labels.data(), labels.size() * sizeof(std::int32_t),
                              cudaMemcpyHostToDevice, s));
    GPU_CHECK(cudaMemcpyAsync(dd->scale_shift.data(), scale.data(), scale.size() * sizeof(float),
                              cudaMemcpyHostToDevice, s));
    GPU_CHECK(cudaStreamSynchronize(s));  // the host vectors die here
    datasets.push_back(std::move(dd));
    return *datasets.back();
  }

  // Queues the Batcher's batch into the model's input: records up, gather/augment down there.
  int stage(const Batcher& b) {
    const int n = static_cast<int>(b.size());
    if (n == 0) return 0;
    DeviceDataset& d = dataset(b.dataset());
    // The pinned records may be refilled once the previous batch's copy has run.
    GPU_CHECK(cudaEventSynchronize(records_free.get()));
    records_host.grow(std::size_t(n));
    records_device.grow(std::size_t(n));
    gpu::fill_augment_records(b, {records_host.data(), std::size_t(n)});
    float* input = model.input(n);
    std::int32_t* labels = model.labels(n);
    const cudaStream_t s = model.stream();
    mark(0);
    GPU_CHECK(cudaMemcpyAsync(records_device.data(), records_host.data(), std::size_t(n) * sizeof(gpu::AugmentRecord),
                              cudaMemcpyHostToDevice, s));
    GPU_CHECK(cudaEventRecord(records_free.get(), s));
    const int C = b.dataset().channels;
    gpu::augment_batch(d.images.data(), d.labels.data(), records_device.data(), b.dataset().height,
                       b.dataset().width, d.scale_shift.data(), d.scale_shift.data() + C, model.input_dims(n), input,
                       labels, s);
    return n;
  }

  // Host images (NCHW, normalized) and labels, for callers without a Batcher.
  void stage(const float* images, const std::int32_t* labels, int n) {
    if (n < 1) throw std::invalid_argument("GPU trainer: batch must be positive, got " + std::to_string(n));
    const int K = model.config().num_classes;
    for (int i = 0; i < n; ++i)
      if (labels[i] < 0 || labels[i] >= K)
        throw std::out_of_range("GPU trainer: label " + std::to_string(labels[i]) + " of sample " + std::to_string(i) +
                                " is outside [0, " + std::to_string(K) + ")");
    const gpu::Dims4 d = model.input_dims(n);
    float* input = model.input(n);
    const cudaStream_t s = model.stream();
    mark(0);
    const std::size_t bytes = std::size_t(d.size()) * sizeof(float);
    if (!d.nhwc) {
      GPU_CHECK(cudaMemcpyAsync(input, images, bytes, cudaMemcpyHostToDevice, s));
    } else {
      raw.grow(std::size_t(d.size()));
      GPU_CHECK(cudaMemcpyAsync(raw.data(), images, bytes, cudaMemcpyHostToDevice, s));
      gpu::nchw_to(raw.data(), d, input, s);
    }
    GPU_CHECK(cudaMemcpyAsync(model.labels(n), labels, std::size_t(n) * sizeof(std::int32_t), cudaMemcpyHostToDevice, s));
  }

  void mark(std::size_t phase) {
    if (phase_events[0]) GPU_CHECK(cudaEventRecord(phase_events[phase]->get(), model.stream()));
  }

  BatchResult train(int n) {
    const cudaStream_t s = model.stream();
    mark(1);
    model.forward(n, true);
    mark(2);
    model.loss(true);
    GPU_CHECK(cudaMemcpyAsync(host_stats.data(), model.stats_device(), sizeof(gpu::LossStats), cudaMemcpyDeviceToHost, s));
    GPU_CHECK(cudaEventRecord(stats_ready.get(), s));
    mark(3);
    model.backward();
    mark(4);
    optimizer->step(params, grads);
    model.weights_changed();
    mark(5);
    // The loss is ready after the forward pass: backward and the step still run while
    // the loop prepares the next batch.
    GPU_CHECK(cudaEventSynchronize(stats_ready.get()));
    const gpu::LossStats st = *host_stats.data();
    if (phase_events[0]) accumulate();
    return {st.loss_sum / n, st.correct, n};
  }

  BatchResult evaluate(int n) {
    const cudaStream_t s = model.stream();
    model.forward(n, false);
    model.loss(false);
    GPU_CHECK(cudaMemcpyAsync(host_stats.data(), model.stats_device(), sizeof(gpu::LossStats), cudaMemcpyDeviceToHost, s));
    GPU_CHECK(cudaEventRecord(stats_ready.get(), s));
    GPU_CHECK(cudaEventSynchronize(stats_ready.get()));
    const gpu::LossStats st = *host_stats.data();
    return {st.loss_sum / n, st.correct, n};
  }

  void accumulate() {
    GPU_CHECK(cudaEventSynchronize(phase_events[5]->get()));
    for (std::size_t i = 0; i < kPhases.size(); ++i) {
      float ms = 0;
      GPU_CHECK(cudaEventElapsedTime(&ms, phase_events[i]->get(), phase_events[i + 1]->get()));
      phase_ms[i] += ms;
    }
    ++profiled_steps;
  }

  CudaBackendOptions options;
  gpu::GpuResNet18 model;
  gpu::DeviceParams params, grads;
  std::unique_ptr<AnyOptimizer<gpu::DeviceParams>> optimizer;
  std::vector<std::unique_ptr<DeviceDataset>> datasets;
  PinnedArray<gpu::AugmentRecord> records_host;
  DeviceArray<gpu::AugmentRecord> records_device;
  PinnedArray<gpu::LossStats> host_stats;
  DeviceArray<float> raw;
  Event stats_ready, records_free;
  std::array<std::unique_ptr<Event>, kPhases.size() + 1> phase_events;
  std::array<double, kPhases.size()> phase_ms{};
  std::int64_t profiled_steps = 0;
};

CudaBackend::CudaBackend(const CudaBackendOptions& options) : impl_(std::make_unique<Impl>(options)) {}
CudaBackend::~CudaBackend() = default;

gpu::GpuResNet18& CudaBackend::model() noexcept { return impl_->model; }
AnyOptimizer<gpu::DeviceParams>& CudaBackend::optimizer() noexcept { return *impl_->optimizer; }
std::size_t CudaBackend::datasets_on_device() const noexcept { return impl_->datasets.size(); }

std::string CudaBackend::describe() const {
  const ModelConfig& c = impl_->model.config();
  std::ostringstream s;
  s << impl_->model.describe() << "; ResNet-18 width " << c.width << ", "
    << (c.stem == Stem::cifar ? "cifar" : "imagenet") << " stem, " << c.in_channels << "x" << c.image_size << "x"
    << c.image_size << " input, " << impl_->model.num_parameters() << " parameters; " << impl_->optimizer->describe();
  return s.str();
}

BatchResult CudaBackend::train_step(const float* images, const std::int32_t* labels, int n) {
  impl_->stage(images, labels, n);
  return impl_->train(n);
}

BatchResult CudaBackend::evaluate(const float* images, const std::int32_t* labels, int n) {
  impl_->stage(images, labels, n);
  return impl_->evaluate(n);
}

BatchResult CudaBackend::train_batch(const Batcher& batch) {
  const int n = impl_->stage(batch);
  if (n == 0) return {};
  return impl_->train(n);
}

BatchResult CudaBackend::evaluate_batch(const Batcher& batch) {
  const int n = impl_->stage(batch);
  if (n == 0) return {};
  return impl_->evaluate(n);
}

void CudaBackend::set_lr(double lr) { impl_->optimizer->set_lr(lr); }
bool CudaBackend::has_slow_weights() const { return impl_->optimizer->has_slow_weights(); }

void CudaBackend::swap_slow_weights() {
  impl_->optimizer->swap_slow(impl_->params);
  impl_->model.weights_changed();
}

std::vector<std::pair<std::string, double>> CudaBackend::optimizer_metrics() const {
  std::vector<std::pair<std::string, double>> out;
  const auto syncs = impl_->optimizer->syncs();
  for (std::size_t i = 0; i < syncs.size(); ++i)
    out.emplace_back("syncs_level" + std::to_string(i + 1), static_cast<double>(syncs[i]));
  if (const nestla::comm_stats c = impl_->optimizer->comm_stats(); c.collectives > 0) {
    out.emplace_back("collectives", static_cast<double>(c.collectives));
    out.emplace_back("bytes_sent", static_cast<double>(c.bytes_sent));
  }
  return out;
}

void select_cuda_device(int local_rank) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) return;  // the backend reports the missing device
  cudaSetDevice(local_rank % count);
}

void CudaBackend::save_model(std::ostream& out) const {
  impl_->model.download_to_host();
  impl_->model.host().save(out);
}

void CudaBackend::load_model(std::istream& in) {
  impl_->model.synchronize();
  impl_->model.host().load(in);  // checks everything; throws before changing anything
  impl_->model.upload_from_host();
}

void CudaBackend::save_optimizer(std::ostream& out) const { impl_->optimizer->save(out); }
void CudaBackend::load_optimizer(std::istream& in) { impl_->optimizer->load(in); }

void CudaBackend::print_profile(std::ostream& out) const {
  const Impl& m = *impl_;
  if (m.profiled_steps == 0) {
    out << "(no profiled GPU steps: run with --profile)\n";
    return;
  }
  double total = 0;
  for (double v : m.phase_ms) total += v;
  const auto flags = out.flags();
  const auto prec = out.precision();
  out << std::left << std::setw(26) << "GPU phase" << std::right << std::setw(12) << "ms/step" << std::setw(8) << "share"
      << "\n"
      << std::fixed;
  for (std::size_t i = 0; i < kPhases.size(); ++i)
    out << std::left << std::setw(26) << kPhases[i] << std::right << std::setprecision(3) << std::setw(12)
        << m.phase_ms[i] / double(m.profiled_steps) << std::setprecision(1) << std::setw(7)
        << (total > 0 ? 100.0 * m.phase_ms[i] / total : 0.0) << "%\n";
  out << std::left << std::setw(26) << "total" << std::right << std::setprecision(3) << std::setw(12)
      << total / double(m.profiled_steps) << "   (" << m.profiled_steps << " steps)\n";
  out.flags(flags);
  out.precision(prec);
}

}  // namespace resnet18
