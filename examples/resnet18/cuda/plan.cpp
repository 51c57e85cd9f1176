// Host-side bookkeeping of the GPU trainer (see plan.hpp).
#include "plan.hpp"

#include <stdexcept>

#include "augment.hpp"

namespace resnet18::gpu {

const char* to_string(Layout l) noexcept { return l == Layout::nchw ? "nchw" : "nhwc"; }

Layout parse_layout(std::string_view name) {
  if (name == "nchw") return Layout::nchw;
  if (name == "nhwc" || name == "channels_last") return Layout::nhwc;
  throw std::invalid_argument("unknown memory format '" + std::string(name) + "' (nchw or nhwc)");
}

const char* to_string(AlgoSearch a) noexcept { return a == AlgoSearch::find ? "find" : "heuristic"; }

AlgoSearch parse_algo_search(std::string_view name) {
  if (name == "find") return AlgoSearch::find;
  if (name == "heuristic") return AlgoSearch::heuristic;
  throw std::invalid_argument("unknown algorithm search '" + std::string(name) + "' (find or heuristic)");
}

Dims4 dims_of(Shape s, int n, Layout layout) noexcept {
  Dims4 d;
  d.n = n;
  d.c = s.c;
  d.h = s.h;
  d.w = s.w;
  d.nhwc = layout == Layout::nhwc;
  const long long hw = static_cast<long long>(s.h) * s.w;
  d.sn = hw * s.c;
  if (d.nhwc) {
    d.sc = 1;
    d.sw = s.c;
    d.sh = static_cast<long long>(s.w) * s.c;
  } else {
    d.sw = 1;
    d.sh = s.w;
    d.sc = hw;
  }
  return d;
}

void ohwi_to_oihw(const float* src, float* dst, int out, int kernel, int in) {
  const std::size_t kk = std::size_t(kernel) * std::size_t(kernel);
  for (std::size_t o = 0; o < std::size_t(out); ++o)
    for (std::size_t p = 0; p < kk; ++p)
      for (std::size_t i = 0; i < std::size_t(in); ++i)
        dst[(o * std::size_t(in) + i) * kk + p] = src[(o * kk + p) * std::size_t(in) + i];
}

void oihw_to_ohwi(const float* src, float* dst, int out, int kernel, int in) {
  const std::size_t kk = std::size_t(kernel) * std::size_t(kernel);
  for (std::size_t o = 0; o < std::size_t(out); ++o)
    for (std::size_t p = 0; p < kk; ++p)
      for (std::size_t i = 0; i < std::size_t(in); ++i)
        dst[(o * kk + p) * std::size_t(in) + i] = src[(o * std::size_t(in) + i) * kk + p];
}

int choose_algo(std::span<const AlgoCandidate> candidates, const AlgoPolicy& policy) noexcept {
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const AlgoCandidate& c = candidates[i];
    if (!c.ok || c.workspace > policy.workspace_limit) continue;
    if (policy.deterministic_only && !c.deterministic) continue;
    if (!policy.allow_tensor_op && c.tensor_op) continue;
    return static_cast<int>(i);
  }
  return -1;
}

std::size_t ConvKeyHash::operator()(const ConvKey& k) const noexcept {
  std::size_t h = 0;
  for (int v : {k.n, k.cin, k.h, k.w, k.cout, k.kernel, k.stride, k.pad, static_cast<int>(k.layout),
                static_cast<int>(k.tensor_op)})
    h = h * 1000003u ^ std::hash<int>{}(v);
  return h;
}

void fill_augment_records(const Batcher& batcher, std::span<AugmentRecord> out) {
  const std::span<const std::size_t> indices = batcher.indices();
  if (out.size() < indices.size())
    throw std::invalid_argument("fill_augment_records: room for " + std::to_string(out.size()) + " records, the batch has " +
                                std::to_string(indices.size()));
  // indices() is a window of order(): its offset is the position of the batch's first sample.
  const std::size_t first = indices.empty() ? 0 : static_cast<std::size_t>(indices.data() - batcher.order().data());
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const AugmentParams a = batcher.augmentation(batcher.epoch(), first + i);
    if (indices[i] > static_cast<std::size_t>(INT32_MAX))
      throw std::out_of_range("fill_augment_records: dataset index " + std::to_string(indices[i]) + " exceeds int32");
    out[i] = AugmentRecord{static_cast<std::int32_t>(indices[i]), a.dy, a.dx, a.flip ? 1 : 0};
  }
}

void normalization_constants(std::span<const float> mean, std::span<const float> stddev, std::vector<float>& scale,
                             std::vector<float>& shift) {
  if (mean.size() != stddev.size())
    throw std::invalid_argument("normalization_constants: " + std::to_string(mean.size()) + " means for " +
                                std::to_string(stddev.size()) + " standard deviations");
  scale.resize(mean.size());
  shift.resize(mean.size());
  for (std::size_t c = 0; c < mean.size(); ++c) {
    // The same float operations as augment_image, so device and host agree bit for bit.
    scale[c] = 1.0f / stddev[c];
    shift[c] = -mean[c] * scale[c];
  }
}

void validate(const GpuModelOptions& o) {
  if (o.workspace_limit == 0) throw std::invalid_argument("GPU model: workspace_limit must be positive");
  if (o.device < 0) throw std::invalid_argument("GPU model: device must be >= 0, got " + std::to_string(o.device));
}

}  // namespace resnet18::gpu
