// ResNet-18 assembly: parameter layout, initialization, forward/backward schedule, profile and checkpoints.
#include "resnet.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <istream>
#include <map>
#include <numbers>
#include <ostream>
#include <sstream>
#include <type_traits>

#include <omp.h>

#include "rng.hpp"

namespace resnet18 {
namespace {

using Clock = std::chrono::steady_clock;

// Adds the lifetime of a scope to one profile entry.
class Timed {
 public:
  Timed(Profile& p, int id, bool backward, double flop)
      : p_(p.enabled && id >= 0 ? &p : nullptr), id_(id), backward_(backward), flop_(flop) {
    if (p_ != nullptr) start_ = Clock::now();
  }
  Timed(const Timed&) = delete;
  Timed& operator=(const Timed&) = delete;
  ~Timed() {
    if (p_ == nullptr) return;
    const double s = std::chrono::duration<double>(Clock::now() - start_).count();
    LayerTime& l = p_->layers[std::size_t(id_)];
    if (backward_) {
      l.backward_seconds += s;
      l.backward_flop += flop_;
    } else {
      l.forward_seconds += s;
      l.forward_flop += flop_;
      ++l.calls;
    }
  }

 private:
  Profile* p_;
  int id_;
  bool backward_;
  double flop_;
  Clock::time_point start_;
};

std::string kind_of_conv(int k, int stride) {
  std::string s = "conv" + std::to_string(k) + "x" + std::to_string(k);
  if (stride != 1) s += " s" + std::to_string(stride);
  return s;
}

constexpr char kMagic[16] = {'n', 'e', 's', 't', 'l', 'a', '-', 'r', 'e', 's', 'n', 'e', 't', '1', '8', '\n'};
constexpr std::uint32_t kFormatVersion = 1;

}  // namespace

// ----------------------------------------------------------------------------- Profile

void Profile::reset() {
  for (LayerTime& l : layers) {
    l.forward_seconds = l.backward_seconds = l.forward_flop = l.backward_flop = 0;
    l.calls = 0;
  }
}

std::vector<LayerTime> Profile::by_kind() const {
  std::vector<LayerTime> out;
  std::map<std::string, std::size_t> index;
  for (const LayerTime& l : layers) {
    auto [it, fresh] = index.try_emplace(l.kind, out.size());
    if (fresh) {
      out.push_back(l);
      out.back().name = l.kind;
      continue;
    }
    LayerTime& k = out[it->second];
    k.forward_seconds += l.forward_seconds;
    k.backward_seconds += l.backward_seconds;
    k.forward_flop += l.forward_flop;
    k.backward_flop += l.backward_flop;
    k.calls = std::max(k.calls, l.calls);
  }
  return out;
}

double Profile::forward_seconds() const {
  double s = 0;
  for (const LayerTime& l : layers) s += l.forward_seconds;
  return s;
}

double Profile::backward_seconds() const {
  double s = 0;
  for (const LayerTime& l : layers) s += l.backward_seconds;
  return s;
}

void Profile::print(std::ostream& out, bool per_layer) const {
  const std::vector<LayerTime> rows = per_layer ? layers : by_kind();
  std::int64_t steps = 0;
  for (const LayerTime& l : layers) steps = std::max(steps, l.calls);
  if (steps == 0) {
    out << "(no profiled steps)\n";
    return;
  }
  const double total = forward_seconds() + backward_seconds();
  const auto flags = out.flags();
  const auto prec = out.precision();
  out << std::left << std::setw(24) << (per_layer ? "layer" : "kind") << std::right << std::setw(10) << "fwd ms"
      << std::setw(10) << "bwd ms" << std::setw(8) << "share" << std::setw(11) << "fwd GF/s" << std::setw(11)
      << "bwd GF/s" << "\n";
  out << std::fixed;
  for (const LayerTime& l : rows) {
    const double steps_d = double(steps);
    out << std::left << std::setw(24) << l.name << std::right << std::setprecision(2) << std::setw(10)
        << 1e3 * l.forward_seconds / steps_d << std::setw(10) << 1e3 * l.backward_seconds / steps_d
        << std::setprecision(1) << std::setw(7) << 100.0 * (l.forward_seconds + l.backward_seconds) / total << "%";
    if (l.forward_flop > 0 && l.forward_seconds > 0)
      out << std::setw(11) << 1e-9 * l.forward_flop / l.forward_seconds;
    else
      out << std::setw(11) << "-";
    if (l.backward_flop > 0 && l.backward_seconds > 0)
      out << std::setw(11) << 1e-9 * l.backward_flop / l.backward_seconds;
    else
      out << std::setw(11) << "-";
    out << "\n";
  }
  out << std::left << std::setw(24) << "total" << std::right << std::setprecision(2) << std::setw(10)
      << 1e3 * forward_seconds() / double(steps) << std::setw(10) << 1e3 * backward_seconds() / double(steps)
      << "\n";
  out.flags(flags);
  out.precision(prec);
}

// -------------------------------------------------------------------- construction

template <class S>
int ResNet18<S>::add_parameter(const std::string& name, std::vector<int> shape, bool no_decay) {
  ParameterInfo p;
  p.name = name;
  p.size = 1;
  for (int d : shape) p.size *= std::size_t(d);
  p.shape = std::move(shape);
  p.offset = params_info_.empty() ? 0 : align_elements<S>(params_info_.back().offset + params_info_.back().size);
  p.no_weight_decay = no_decay;
  params_info_.push_back(std::move(p));
  return int(params_info_.size()) - 1;
}

template <class S>
int ResNet18<S>::add_activation(Shape per_image) {
  per_image.n = 1;
  act_shapes_.push_back(per_image);
  return int(act_shapes_.size()) - 1;
}

template <class S>
int ResNet18<S>::add_profile(const std::string& name, const std::string& kind) {
  LayerTime l;
  l.name = name;
  l.kind = kind;
  profile_.layers.push_back(std::move(l));
  return int(profile_.layers.size()) - 1;
}

template <class S>
int ResNet18<S>::add_conv(const std::string& name, Shape in, int out_channels, int kernel, int stride, int padding) {
  ConvLayer l;
  l.op = Conv2d<S>(in.c, out_channels, kernel, stride, padding);
  if (use_onednn_) l.fast = std::make_unique<OneDnnConv>(in.c, out_channels, kernel, stride, padding);
  in.n = 1;
  l.in = in;
  l.weight = add_parameter(name + ".weight", {out_channels, kernel, kernel, in.c}, false);
  l.prof = add_profile(name, kind_of_conv(kernel, stride));
  l.act_out = add_activation(l.op.output_shape(in));
  convs_.push_back(std::move(l));
  return int(convs_.size()) - 1;
}

template <class S>
int ResNet18<S>::add_bn(const std::string& name, Shape in, const std::string& kind) {
  BnLayer l;
  l.op = BatchNorm2d<S>(in.c);
  l.weight = add_parameter(name + ".weight", {in.c}, true);
  l.bias = add_parameter(name + ".bias", {in.c}, true);
  l.stats = int(buffers_info_.size());
  for (const char* suffix : {".running_mean", ".running_var"}) {
    ParameterInfo b;
    b.name = name + suffix;
    b.shape = {in.c};
    b.size = std::size_t(in.c);
    b.offset = buffers_info_.empty() ? 0 : align_elements<S>(buffers_info_.back().offset + buffers_info_.back().size);
    buffers_info_.push_back(std::move(b));
  }
  l.prof = add_profile(name, kind);
  l.act_out = add_activation(in);
  bns_.push_back(std::move(l));
  return int(bns_.size()) - 1;
}

template <class S>
ResNet18<S>::ResNet18(const ModelConfig& config) : config_(config) {
  const ModelConfig& c = config_;
  if (c.width < 1 || c.in_channels < 1 || c.num_classes < 1)
    throw std::invalid_argument("ResNet18: width, in_channels and num_classes must be positive");
  // Every convolution is padded, so any positive size keeps at least one pixel per stage.
  if (c.image_size < 1) throw std::invalid_argument("ResNet18: image_size must be positive");
  constexpr bool is_float = std::is_same_v<S, float>;
  if (c.conv_backend == ConvBackend::onednn && !(is_float && onednn_available()))
    throw std::invalid_argument(is_float ? "ResNet18: conv_backend onednn, but this build has no oneDNN"
                                         : "ResNet18: conv_backend onednn works on float only");
  use_onednn_ = is_float && onednn_available() && c.conv_backend != ConvBackend::eigen;

  input_shape_ = {1, c.image_size, c.image_size, c.in_channels};
  prof_input_ = add_profile("input", "input (NCHW->NHWC)");
  act_input_ = add_activation(input_shape_);
  Shape cur = input_shape_;
  if (c.stem == Stem::cifar)
    stem_conv_ = add_conv("conv1", cur, c.width, 3, 1, 1);
  else
    stem_conv_ = add_conv("conv1", cur, c.width, 7, 2, 3);
  cur = convs_[std::size_t(stem_conv_)].op.output_shape(cur);
  stem_bn_ = add_bn("bn1", cur, "bn+relu");
  stem_out_ = cur;
  if (c.stem == Stem::imagenet) {
    prof_pool_ = add_profile("maxpool", "maxpool");
    cur = pool_.output_shape(cur);
    act_pool_ = add_activation(cur);
  }
  int act_cur = c.stem == Stem::imagenet ? act_pool_ : bns_[std::size_t(stem_bn_)].act_out;
  for (int stage = 0; stage < 4; ++stage) {
    const int channels = c.width << stage;
    for (int i = 0; i < 2; ++i) {
      const std::string name = "layer" + std::to_string(stage + 1) + "." + std::to_string(i);
      const int stride = stage > 0 && i == 0 ? 2 : 1;
      Block b;
      b.in = cur;
      b.act_in = act_cur;
      b.conv1 = add_conv(name + ".conv1", cur, channels, 3, stride, 1);
      const Shape mid = convs_[std::size_t(b.conv1)].op.output_shape(cur);
      b.bn1 = add_bn(name + ".bn1", mid, "bn+relu");
      b.conv2 = add_conv(name + ".conv2", mid, channels, 3, 1, 1);
      b.bn2 = add_bn(name + ".bn2", mid, "bn+add+relu");
      if (stride != 1 || cur.c != channels) {
        b.conv_sc = add_conv(name + ".downsample.0", cur, channels, 1, stride, 0);
        b.bn_sc = add_bn(name + ".downsample.1", mid, "bn");
      }
      b.out = mid;
      act_cur = bns_[std::size_t(b.bn2)].act_out;
      cur = mid;
      blocks_.push_back(b);
    }
  }
  feature_in_ = cur;
  prof_avgpool_ = add_profile("avgpool", "avgpool");
  act_feat_ = add_activation({1, 1, 1, cur.c});
  act_dfeat_ = add_activation({1, 1, 1, cur.c});
  fc_weight_ = add_parameter("fc.weight", {c.num_classes, cur.c}, false);
  fc_bias_ = add_parameter("fc.bias", {c.num_classes}, true);
  prof_fc_ = add_profile("fc", "linear");
  act_logits_ = add_activation({1, 1, 1, c.num_classes});
  act_dlogits_ = add_activation({1, 1, 1, c.num_classes});
  prof_loss_ = add_profile("loss", "loss");

  const std::size_t total = align_elements<S>(params_info_.back().offset + params_info_.back().size);
  params_.grow(total);
  grads_.grow(total);
  running_.grow(align_elements<S>(buffers_info_.back().offset + buffers_info_.back().size));
  initialize();
}

template <class S>
void ResNet18<S>::initialize() {
  // Blocks of 2^16 elements with their own streams: the draw parallelizes (11M normals
  // take about 0.4 s on one core) and stays the same for any thread count.
  constexpr std::size_t kBlock = std::size_t(1) << 16;
  struct Task {
    std::size_t tensor, begin, end;
  };
  std::vector<Task> tasks;
  for (std::size_t t = 0; t < params_info_.size(); ++t)
    for (std::size_t b = 0; b < params_info_[t].size; b += kBlock)
      tasks.push_back({t, b, std::min(params_info_[t].size, b + kBlock)});
  const double fc_bound = 1.0 / std::sqrt(double(params_info_[std::size_t(fc_weight_)].shape[1]));
#pragma omp parallel for schedule(dynamic)
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    const Task& task = tasks[i];
    const ParameterInfo& p = params_info_[task.tensor];
    S* w = params_.data() + p.offset;
    Rng rng(mix64(mix64(config_.seed, task.tensor), task.begin / kBlock));
    if (int(task.tensor) == fc_weight_ || int(task.tensor) == fc_bias_) {
      for (std::size_t j = task.begin; j < task.end; ++j) w[j] = S(rng.uniform(-fc_bound, fc_bound));
    } else if (p.shape.size() == 4) {
      const double std = std::sqrt(2.0 / (double(p.shape[0]) * p.shape[1] * p.shape[2]));
      // Box-Muller, both outputs used.
      for (std::size_t j = task.begin; j < task.end; j += 2) {
        const double r = std * std::sqrt(-2.0 * std::log(1.0 - rng.uniform()));
        const double a = 2.0 * std::numbers::pi * rng.uniform();
        w[j] = S(r * std::cos(a));
        if (j + 1 < task.end) w[j + 1] = S(r * std::sin(a));
      }
    } else {
      std::fill(w + task.begin, w + task.end, S(p.name.ends_with(".weight") ? 1 : 0));
    }
  }
  for (const ParameterInfo& b : buffers_info_)
    std::fill_n(running_.data() + b.offset, b.size, S(b.name.ends_with("_var") ? 1 : 0));
}

// ---------------------------------------------------------------------------- views

template <class S>
std::vector<Eigen::Map<typename ResNet18<S>::Vector>> ResNet18<S>::parameters() {
  std::vector<Eigen::Map<Vector>> v;
  v.reserve(params_info_.size());
  for (const ParameterInfo& p : params_info_) v.emplace_back(params_.data() + p.offset, Eigen::Index(p.size));
  return v;
}

template <class S>
std::vector<Eigen::Map<const typename ResNet18<S>::Vector>> ResNet18<S>::parameters() const {
  std::vector<Eigen::Map<const Vector>> v;
  v.reserve(params_info_.size());
  for (const ParameterInfo& p : params_info_) v.emplace_back(params_.data() + p.offset, Eigen::Index(p.size));
  return v;
}

template <class S>
std::vector<Eigen::Map<typename ResNet18<S>::Vector>> ResNet18<S>::gradients() {
  std::vector<Eigen::Map<Vector>> v;
  v.reserve(params_info_.size());
  for (const ParameterInfo& p : params_info_) v.emplace_back(grads_.data() + p.offset, Eigen::Index(p.size));
  return v;
}

template <class S>
std::vector<Eigen::Map<const typename ResNet18<S>::Vector>> ResNet18<S>::gradients() const {
  std::vector<Eigen::Map<const Vector>> v;
  v.reserve(params_info_.size());
  for (const ParameterInfo& p : params_info_) v.emplace_back(grads_.data() + p.offset, Eigen::Index(p.size));
  return v;
}

template <class S>
std::vector<Eigen::Map<typename ResNet18<S>::Vector>> ResNet18<S>::buffers() {
  std::vector<Eigen::Map<Vector>> v;
  v.reserve(buffers_info_.size());
  for (const ParameterInfo& p : buffers_info_) v.emplace_back(running_.data() + p.offset, Eigen::Index(p.size));
  return v;
}

template <class S>
std::vector<bool> ResNet18<S>::no_weight_decay() const {
  std::vector<bool> v;
  v.reserve(params_info_.size());
  for (const ParameterInfo& p : params_info_) v.push_back(p.no_weight_decay);
  return v;
}

template <class S>
std::size_t ResNet18<S>::num_parameters() const noexcept {
  std::size_t n = 0;
  for (const ParameterInfo& p : params_info_) n += p.size;
  return n;
}

template <class S>
Eigen::Map<typename ResNet18<S>::Vector> ResNet18<S>::flat_parameters() {
  return {params_.data(), Eigen::Index(params_.size())};
}

template <class S>
Eigen::Map<typename ResNet18<S>::Vector> ResNet18<S>::flat_gradients() {
  return {grads_.data(), Eigen::Index(grads_.size())};
}

template <class S>
std::vector<std::pair<std::string, Shape>> ResNet18<S>::stage_shapes() const {
  std::vector<std::pair<std::string, Shape>> v;
  v.emplace_back("conv1", stem_out_);
  if (config_.stem == Stem::imagenet) v.emplace_back("maxpool", pool_.output_shape(stem_out_));
  for (std::size_t i = 1; i < blocks_.size(); i += 2)
    v.emplace_back("layer" + std::to_string(i / 2 + 1), blocks_[i].out);
  v.emplace_back("avgpool", Shape{1, 1, 1, feature_in_.c});
  v.emplace_back("fc", Shape{1, 1, 1, config_.num_classes});
  return v;
}

template <class S>
double ResNet18<S>::forward_flop_per_image() const {
  double f = 0;
  for (const ConvLayer& l : convs_) f += l.op.forward_flops(l.in);
  f += 2.0 * double(feature_in_.c) * config_.num_classes;
  return f;
}

// ----------------------------------------------------------------- forward / backward

template <class S>
void ResNet18<S>::prepare(int batch) {
  const int threads = omp_get_max_threads();
  std::size_t ws = 0;
  for (ConvLayer& l : convs_) {
    Shape in = l.in;
    in.n = batch;
    ws = std::max(ws, l.fast ? l.fast->workspace_size(in) : l.op.workspace_size(in, threads));
  }
  workspace_.grow(ws);  // also when only the thread count changed
  if (batch <= capacity_) return;
  act_offset_.resize(act_shapes_.size());
  std::size_t off = 0;
  std::size_t largest = 0;
  for (std::size_t i = 0; i < act_shapes_.size(); ++i) {
    act_offset_[i] = off;
    const std::size_t n = act_shapes_[i].size() * std::size_t(batch);
    off += align_elements<S>(n);
    largest = std::max(largest, n);
  }
  acts_.grow(off);
  grad_buf_stride_ = align_elements<S>(largest);
  grad_bufs_.grow(4 * grad_buf_stride_);
  if (act_pool_ >= 0) argmax_.grow(act_shapes_[std::size_t(act_pool_)].size() * std::size_t(batch));
  capacity_ = batch;
}

template <class S>
void ResNet18<S>::conv_forward(ConvLayer& l, const S* x) {
  Shape in = l.in;
  in.n = batch_;
  Timed t(profile_, l.prof, false, l.op.forward_flops(in));
  if constexpr (std::is_same_v<S, float>) {
    if (l.fast) {
      l.fast->forward(param(l.weight), x, in, act(l.act_out), workspace_.data());
      return;
    }
  }
  l.op.forward(param(l.weight), x, in, act(l.act_out), workspace_.data());
}

template <class S>
void ResNet18<S>::conv_backward(ConvLayer& l, const S* x, const S* dy, S* dx, bool accumulate) {
  Shape in = l.in;
  in.n = batch_;
  Timed t(profile_, l.prof, true, (dx != nullptr ? 2.0 : 1.0) * l.op.forward_flops(in));
  if constexpr (std::is_same_v<S, float>) {
    if (l.fast) {
      l.fast->backward(param(l.weight), x, in, dy, grad(l.weight), dx, accumulate, workspace_.data());
      return;
    }
  }
  l.op.backward(param(l.weight), x, in, dy, grad(l.weight), dx, accumulate, workspace_.data());
}

template <class S>
void ResNet18<S>::bn_forward(BnLayer& l, const S* x, bool train, const S* residual, bool relu) {
  const Shape& s = act_shapes_[std::size_t(l.act_out)];
  Timed t(profile_, l.prof, false, 0);
  BatchNormParams<S> p{param(l.weight), param(l.bias), running_.data() + buffers_info_[std::size_t(l.stats)].offset,
                       running_.data() + buffers_info_[std::size_t(l.stats) + 1].offset};
  l.op.forward(p, x, s.pixels() * std::size_t(batch_), act(l.act_out), train, residual, relu);
}

template <class S>
Eigen::Map<const typename ResNet18<S>::Matrix> ResNet18<S>::forward(const S* images, int batch, bool train) {
  if (batch < 1) throw std::invalid_argument("ResNet18::forward: batch must be positive, got " + std::to_string(batch));
  if (train && batch < 2)
    throw std::invalid_argument("ResNet18::forward: training batch norm needs a batch of 2 or more");
  prepare(batch);
  batch_ = batch;
  last_train_ = train;
  {
    Timed t(profile_, prof_input_, false, 0);
    const int C = input_shape_.c;
    const std::size_t P = std::size_t(input_shape_.h) * input_shape_.w;
    S* x = act(act_input_);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < batch; ++n)
      for (int c = 0; c < C; ++c) {
        const S* src = images + (std::size_t(n) * C + c) * P;
        S* dst = x + std::size_t(n) * P * C + c;
        for (std::size_t p = 0; p < P; ++p) dst[p * C] = src[p];
      }
  }
  ConvLayer& sc = convs_[std::size_t(stem_conv_)];
  conv_forward(sc, act(act_input_));
  BnLayer& sb = bns_[std::size_t(stem_bn_)];
  bn_forward(sb, act(sc.act_out), train, nullptr, true);
  if (act_pool_ >= 0) {
    Shape in = stem_out_;
    in.n = batch;
    Timed t(profile_, prof_pool_, false, 0);
    pool_.forward(act(sb.act_out), in, act(act_pool_), argmax_.data());
  }
  for (const Block& b : blocks_) {
    const S* x = act(b.act_in);
    ConvLayer& c1 = convs_[std::size_t(b.conv1)];
    ConvLayer& c2 = convs_[std::size_t(b.conv2)];
    BnLayer& n1 = bns_[std::size_t(b.bn1)];
    BnLayer& n2 = bns_[std::size_t(b.bn2)];
    conv_forward(c1, x);
    bn_forward(n1, act(c1.act_out), train, nullptr, true);
    conv_forward(c2, act(n1.act_out));
    const S* residual = x;
    if (b.conv_sc >= 0) {
      ConvLayer& cs = convs_[std::size_t(b.conv_sc)];
      BnLayer& ns = bns_[std::size_t(b.bn_sc)];
      conv_forward(cs, x);
      bn_forward(ns, act(cs.act_out), train, nullptr, false);
      residual = act(ns.act_out);
    }
    bn_forward(n2, act(c2.act_out), train, residual, true);
  }
  {
    Shape in = feature_in_;
    in.n = batch;
    Timed t(profile_, prof_avgpool_, false, 0);
    global_avg_pool_forward(act(bns_[std::size_t(blocks_.back().bn2)].act_out), in, act(act_feat_));
  }
  {
    Timed t(profile_, prof_fc_, false, 2.0 * feature_in_.c * config_.num_classes * batch);
    linear_forward(param(fc_weight_), param(fc_bias_), act(act_feat_), feature_in_.c, config_.num_classes, batch,
                   act(act_logits_));
  }
  return {act(act_logits_), config_.num_classes, batch};
}

template <class S>
BatchResult ResNet18<S>::loss(const std::int32_t* labels) const {
  if (batch_ == 0) throw std::logic_error("ResNet18::loss: no forward pass yet");
  const S* logits = acts_.data() + act_offset_[std::size_t(act_logits_)];
  const LossResult r = softmax_cross_entropy<S>(logits, labels, config_.num_classes, batch_, nullptr);
  return {r.loss, r.correct, batch_};
}

template <class S>
int ResNet18<S>::block_backward(const Block& b, int g_out) {
  // Four gradient buffers of the largest activation: g_out comes in, three are free.
  int free_ids[3];
  for (int i = 0, k = 0; i < 4; ++i)
    if (i != g_out) free_ids[k++] = i;
  const int Q = free_ids[0], R = free_ids[1], T = free_ids[2];
  ConvLayer& c1 = convs_[std::size_t(b.conv1)];
  ConvLayer& c2 = convs_[std::size_t(b.conv2)];
  BnLayer& n1 = bns_[std::size_t(b.bn1)];
  BnLayer& n2 = bns_[std::size_t(b.bn2)];
  Shape mid = b.out;
  mid.n = batch_;
  const std::size_t M = mid.pixels();
  const S* x = act(b.act_in);

  auto conv_bwd = [&](ConvLayer& l, const S* cx, const S* dy, S* dx, bool acc) { conv_backward(l, cx, dy, dx, acc); };
  auto bn_bwd = [&](BnLayer& l, const S* bx, const S* dy, S* dx, S* dres, bool relu) {
    Timed t(profile_, l.prof, true, 0);
    l.op.backward(param(l.weight), bx, act(l.act_out), dy, M, grad(l.weight), grad(l.bias), dx, dres, relu);
  };

  // out = relu(bn2(c2) + shortcut): bn2 hands the shortcut its gradient in Q.
  bn_bwd(n2, act(c2.act_out), gbuf(g_out), gbuf(R), gbuf(Q), true);
  int result = Q;
  if (b.conv_sc >= 0) {
    ConvLayer& cs = convs_[std::size_t(b.conv_sc)];
    BnLayer& ns = bns_[std::size_t(b.bn_sc)];
    bn_bwd(ns, act(cs.act_out), gbuf(Q), gbuf(Q), nullptr, false);
    conv_bwd(cs, x, gbuf(Q), gbuf(g_out), false);  // g_out is consumed, reuse it
    result = g_out;
  }
  conv_bwd(c2, act(n1.act_out), gbuf(R), gbuf(T), false);
  bn_bwd(n1, act(c1.act_out), gbuf(T), gbuf(T), nullptr, true);
  conv_bwd(c1, x, gbuf(T), gbuf(result), true);
  return result;
}

template <class S>
BatchResult ResNet18<S>::backward(const std::int32_t* labels) {
  if (batch_ == 0 || !last_train_)
    throw std::logic_error("ResNet18::backward: needs a preceding forward(..., train = true)");
  const int batch = batch_;
  const int F = feature_in_.c;
  const int K = config_.num_classes;
  LossResult r;
  {
    Timed t(profile_, prof_loss_, true, 0);
    r = softmax_cross_entropy<S>(act(act_logits_), labels, K, batch, act(act_dlogits_));
  }
  {
    Timed t(profile_, prof_fc_, true, 4.0 * F * K * batch);
    linear_backward(param(fc_weight_), act(act_feat_), act(act_dlogits_), F, K, batch, grad(fc_weight_),
                    grad(fc_bias_), act(act_dfeat_));
  }
  int g = 0;
  {
    Shape in = feature_in_;
    in.n = batch;
    Timed t(profile_, prof_avgpool_, true, 0);
    global_avg_pool_backward(act(act_dfeat_), in, gbuf(g));
  }
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) g = block_backward(*it, g);
  Shape stem = stem_out_;
  stem.n = batch;
  if (act_pool_ >= 0) {
    const int to = (g + 1) % 4;
    Timed t(profile_, prof_pool_, true, 0);
    pool_.backward(gbuf(g), stem, argmax_.data(), gbuf(to));
    g = to;
  }
  ConvLayer& sc = convs_[std::size_t(stem_conv_)];
  BnLayer& sb = bns_[std::size_t(stem_bn_)];
  {
    Timed t(profile_, sb.prof, true, 0);
    sb.op.backward(param(sb.weight), act(sc.act_out), act(sb.act_out), gbuf(g), stem.pixels(), grad(sb.weight),
                   grad(sb.bias), gbuf(g), nullptr, true);
  }
  conv_backward(sc, act(act_input_), gbuf(g), nullptr, false);
  return {r.loss, r.correct, batch};
}

template <class S>
BatchResult ResNet18<S>::train_step(const S* images, const std::int32_t* labels, int batch) {
  forward(images, batch, true);
  return backward(labels);
}

template <class S>
BatchResult ResNet18<S>::evaluate(const S* images, const std::int32_t* labels, int batch) {
  forward(images, batch, false);
  BatchResult r;
  {
    Timed t(profile_, prof_loss_, false, 0);
    r = loss(labels);
  }
  return r;
}

// ------------------------------------------------------------------------ checkpoints

namespace {

template <class T>
void put(std::ostream& out, const T& v) {
  out.write(reinterpret_cast<const char*>(&v), sizeof v);
}

template <class T>
T get(std::istream& in, const char* what) {
  T v{};
  if (!in.read(reinterpret_cast<char*>(&v), sizeof v))
    throw CheckpointError(std::string("checkpoint truncated while reading ") + what);
  return v;
}

std::size_t header_bytes() { return sizeof kMagic + 2 * sizeof(std::uint32_t) + 5 * sizeof(std::int32_t) + 2 * 8; }

}  // namespace

template <class S>
std::size_t ResNet18<S>::checkpoint_bytes() const {
  std::size_t n = header_bytes();
  for (const auto* list : {&params_info_, &buffers_info_})
    for (const ParameterInfo& p : *list) n += 4 + p.name.size() + 8 + p.size * sizeof(S);
  return n;
}

template <class S>
void ResNet18<S>::save(std::ostream& out) const {
  out.write(kMagic, sizeof kMagic);
  put(out, kFormatVersion);
  put(out, std::uint32_t(sizeof(S)));
  put(out, std::int32_t(config_.width));
  put(out, std::int32_t(config_.in_channels));
  put(out, std::int32_t(config_.image_size));
  put(out, std::int32_t(config_.num_classes));
  put(out, std::int32_t(config_.stem == Stem::cifar ? 0 : 1));
  put(out, std::uint64_t(params_info_.size() + buffers_info_.size()));
  put(out, std::uint64_t(checkpoint_bytes()));
  auto write_list = [&](const std::vector<ParameterInfo>& list, const S* base) {
    for (const ParameterInfo& p : list) {
      put(out, std::uint32_t(p.name.size()));
      out.write(p.name.data(), std::streamsize(p.name.size()));
      put(out, std::uint64_t(p.size));
      out.write(reinterpret_cast<const char*>(base + p.offset), std::streamsize(p.size * sizeof(S)));
    }
  };
  write_list(params_info_, params_.data());
  write_list(buffers_info_, running_.data());
  if (!out) throw CheckpointError("checkpoint: write failed");
}

template <class S>
void ResNet18<S>::load(std::istream& in) {
  char magic[sizeof kMagic];
  if (!in.read(magic, sizeof magic)) throw CheckpointError("checkpoint truncated while reading the header");
  if (std::memcmp(magic, kMagic, sizeof kMagic) != 0)
    throw CheckpointError("not a nestla ResNet-18 checkpoint (bad magic bytes)");
  const auto version = get<std::uint32_t>(in, "the format version");
  if (version != kFormatVersion)
    throw CheckpointError("checkpoint format version " + std::to_string(version) + ", this build reads " +
                          std::to_string(kFormatVersion));
  const auto scalar = get<std::uint32_t>(in, "the scalar size");
  if (scalar != sizeof(S))
    throw CheckpointError("checkpoint holds " + std::to_string(scalar) + "-byte scalars, this model uses " +
                          std::to_string(sizeof(S)) + "-byte ones");
  const std::int32_t stem = config_.stem == Stem::cifar ? 0 : 1;
  const std::pair<const char*, std::int32_t> fields[] = {{"width", config_.width},
                                                          {"in_channels", config_.in_channels},
                                                          {"image_size", config_.image_size},
                                                          {"num_classes", config_.num_classes},
                                                          {"stem (0 cifar, 1 imagenet)", stem}};
  for (const auto& [name, want] : fields) {
    const auto got = get<std::int32_t>(in, name);
    if (got != want)
      throw CheckpointError(std::string("checkpoint architecture mismatch: ") + name + " is " + std::to_string(got) +
                            " in the file, " + std::to_string(want) + " in this model");
  }
  const auto count = get<std::uint64_t>(in, "the tensor count");
  const std::size_t want_count = params_info_.size() + buffers_info_.size();
  if (count != want_count)
    throw CheckpointError("checkpoint holds " + std::to_string(count) + " tensors, the model has " +
                          std::to_string(want_count));
  const auto bytes = get<std::uint64_t>(in, "the total size");
  if (bytes != checkpoint_bytes())
    throw CheckpointError("checkpoint declares " + std::to_string(bytes) + " bytes, this model's state takes " +
                          std::to_string(checkpoint_bytes()));
  // Stage everything first: a bad file must leave the model as it was.
  std::vector<S> staged(num_parameters() + [&] {
    std::size_t n = 0;
    for (const ParameterInfo& b : buffers_info_) n += b.size;
    return n;
  }());
  std::size_t pos = 0;
  std::string name;
  for (const auto* list : {&params_info_, &buffers_info_}) {
    for (const ParameterInfo& p : *list) {
      const auto len = get<std::uint32_t>(in, "a tensor name length");
      if (len != p.name.size())
        throw CheckpointError("checkpoint tensor " + std::to_string(pos) + ": expected \"" + p.name +
                              "\", found a name of " + std::to_string(len) + " bytes");
      name.assign(len, '\0');
      if (!in.read(name.data(), std::streamsize(len)))
        throw CheckpointError("checkpoint truncated in the name of \"" + p.name + "\"");
      if (name != p.name)
        throw CheckpointError("checkpoint tensor \"" + name + "\" where \"" + p.name + "\" was expected");
      const auto size = get<std::uint64_t>(in, "a tensor size");
      if (size != p.size)
        throw CheckpointError("checkpoint tensor \"" + p.name + "\" has " + std::to_string(size) +
                              " elements, the model expects " + std::to_string(p.size));
      if (!in.read(reinterpret_cast<char*>(staged.data() + pos), std::streamsize(p.size * sizeof(S))))
        throw CheckpointError("checkpoint truncated in the data of \"" + p.name + "\"");
      pos += p.size;
    }
  }
  pos = 0;
  for (const ParameterInfo& p : params_info_) {
    std::copy_n(staged.data() + pos, p.size, params_.data() + p.offset);
    pos += p.size;
  }
  for (const ParameterInfo& b : buffers_info_) {
    std::copy_n(staged.data() + pos, b.size, running_.data() + b.offset);
    pos += b.size;
  }
}

template class ResNet18<float>;
template class ResNet18<double>;

}  // namespace resnet18
