// Memory lower bounds of a CPU run and the machine's limit.
#include "resources.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>

#include <sys/resource.h>
#include <sys/sysinfo.h>

namespace resnet18 {

namespace {

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

// Saturating: a bound that overflows is "more than any machine".
std::uint64_t mul(std::uint64_t a, std::uint64_t b) { return (a != 0 && b > kMax / a) ? kMax : a * b; }
std::uint64_t add(std::uint64_t a, std::uint64_t b) { return b > kMax - a ? kMax : a + b; }

// Conv2d / MaxPool2d::output_shape for one side.
std::uint64_t out_side(std::uint64_t in, int kernel, int stride, int pad) {
  return (in + 2 * std::uint64_t(pad) - std::uint64_t(kernel)) / std::uint64_t(stride) + 1;
}

// Walks resnet.cpp's construction: calls conv(in_c, out_c, k, out_side) and bn(c, side)
// in order, and act(elements) for every other activation buffer.
template <class Conv, class Bn, class Act>
void walk(const ModelConfig& m, Conv conv, Bn bn, Act act) {
  const std::uint64_t w = std::uint64_t(m.width);
  std::uint64_t side = std::uint64_t(m.image_size);
  act(mul(mul(side, side), std::uint64_t(m.in_channels)));  // the input
  if (m.stem == Stem::cifar) {
    conv(std::uint64_t(m.in_channels), w, 3, side);
  } else {
    side = out_side(side, 7, 2, 3);
    conv(std::uint64_t(m.in_channels), w, 7, side);
  }
  bn(w, side);
  if (m.stem == Stem::imagenet) {
    side = out_side(side, 3, 2, 1);
    act(mul(mul(side, side), w));  // max pool
  }
  std::uint64_t c = w;
  for (int stage = 0; stage < 4; ++stage) {
    const std::uint64_t channels = w << stage;
    for (int i = 0; i < 2; ++i) {
      const int stride = stage > 0 && i == 0 ? 2 : 1;
      const std::uint64_t mid = out_side(side, 3, stride, 1);
      conv(c, channels, 3, mid);
      bn(channels, mid);
      conv(channels, channels, 3, mid);
      bn(channels, mid);
      if (stride != 1 || c != channels) {
        conv(c, channels, 1, mid);
        bn(channels, mid);
      }
      c = channels;
      side = mid;
    }
  }
  act(c);  // features
  act(c);  // their gradient
  act(std::uint64_t(m.num_classes));
  act(std::uint64_t(m.num_classes));
}

}  // namespace

std::uint64_t resnet18_parameter_count(const ModelConfig& m) {
  std::uint64_t n = 0;
  walk(
      m, [&](std::uint64_t in, std::uint64_t out, int k, std::uint64_t) { n = add(n, mul(mul(in, out), k * k)); },
      [&](std::uint64_t c, std::uint64_t) { n = add(n, 2 * c); }, [](std::uint64_t) {});
  const std::uint64_t features = std::uint64_t(m.width) << 3;
  return add(n, mul(features + 1, std::uint64_t(m.num_classes)));  // fc weight and bias
}

std::uint64_t resnet18_activations_per_image(const ModelConfig& m) {
  std::uint64_t n = 0;
  walk(
      m, [&](std::uint64_t, std::uint64_t out, int, std::uint64_t side) { n = add(n, mul(mul(side, side), out)); },
      [&](std::uint64_t c, std::uint64_t side) { n = add(n, mul(mul(side, side), c)); },
      [&](std::uint64_t e) { n = add(n, e); });
  return n;
}

CpuMemoryNeed cpu_memory_need(const ModelConfig& model, const OptimizerSpec& opt, std::size_t batch_size,
                              std::size_t eval_batch_size) {
  // Per parameter: the value and its gradient, the base optimizer's state (SGD's momentum
  // buffer only with momentum, Adam's m and v) and every Lookahead level's slow weights.
  const std::uint64_t base_state = opt.base == BaseKind::sgd ? (opt.momentum != 0 ? 1 : 0) : 2;
  const std::uint64_t per_param = 2 + base_state + std::uint64_t(opt.depth());
  CpuMemoryNeed need;
  need.model = mul(mul(resnet18_parameter_count(model), per_param), sizeof(float));
  const std::uint64_t batch = std::max<std::uint64_t>(batch_size, eval_batch_size);
  const std::uint64_t image = mul(mul(std::uint64_t(model.image_size), std::uint64_t(model.image_size)),
                                  std::uint64_t(model.in_channels));
  // The model's activations and the Batcher's images of one batch.
  need.step = mul(mul(add(resnet18_activations_per_image(model), image), batch), sizeof(float));
  return need;
}

std::uint64_t memory_limit_bytes() {
  std::uint64_t limit = kMax;
  struct sysinfo si {};
  if (::sysinfo(&si) == 0)
    limit = mul(add(std::uint64_t(si.totalram), std::uint64_t(si.totalswap)), std::max<std::uint64_t>(si.mem_unit, 1));
  for (int resource : {RLIMIT_AS, RLIMIT_DATA}) {
    rlimit r{};
    if (::getrlimit(resource, &r) == 0 && r.rlim_cur != RLIM_INFINITY) limit = std::min<std::uint64_t>(limit, r.rlim_cur);
  }
  return limit;
}

std::string format_bytes(std::uint64_t bytes) {
  if (bytes == kMax) return "more than 16 EiB";
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[48];
  if (u == 0) std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
  else std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

void check_cpu_memory(const ModelConfig& model, const OptimizerSpec& opt, std::size_t batch_size,
                      std::size_t eval_batch_size, std::uint64_t data_bytes, std::uint64_t limit) {
  const CpuMemoryNeed need = cpu_memory_need(model, opt, batch_size, eval_batch_size);
  const std::string machine = ", more than the " + format_bytes(limit) + " of memory and swap this process can have";
  if (add(need.model, data_bytes) > limit)
    throw RefusedError("--width " + std::to_string(model.width) + ": the model's " +
                       std::to_string(resnet18_parameter_count(model)) +
                       " parameters, their gradients and the optimizer's state need at least " +
                       format_bytes(need.model) + machine + "; use a smaller --width");
  const std::uint64_t total = add(add(need.model, need.step), data_bytes);
  if (total > limit) {
    const bool eval = eval_batch_size > batch_size;
    const std::string option =
        eval ? "--eval-batch-size " + std::to_string(eval_batch_size) : "--batch-size " + std::to_string(batch_size);
    throw RefusedError(option + ": a batch's activations at --width " + std::to_string(model.width) + " on " +
                       std::to_string(model.image_size) + "x" + std::to_string(model.image_size) + " images need at least " +
                       format_bytes(need.step) + ", with the model and the data " + format_bytes(total) + machine +
                       "; use a smaller " + (eval ? "--eval-batch-size" : "--batch-size"));
  }
}

}  // namespace resnet18
