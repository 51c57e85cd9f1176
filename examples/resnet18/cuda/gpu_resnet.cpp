// ResNet-18 on the GPU: architecture mirror of the CPU model, cuDNN/cuBLAS calls, algorithm search, forward/backward schedule.
#include "gpu_resnet.hpp"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "cuda_check.hpp"
#include "kernels.hpp"

namespace resnet18::gpu {

// ----------------------------------------------------------------------- DeviceArray

template <class T>
void DeviceArray<T>::grow(std::size_t n) {
  if (n <= size_) return;
  release();
  void* p = nullptr;
  GPU_CHECK(cudaMalloc(&p, n * sizeof(T)));
  data_ = static_cast<T*>(p);
  size_ = n;
  GPU_CHECK(cudaMemset(data_, 0, n * sizeof(T)));
}

template <class T>
void DeviceArray<T>::release() noexcept {
  // A driver already shut down at exit cannot be told; nothing to report then.
  if (data_ != nullptr) cudaFree(data_);
  data_ = nullptr;
  size_ = 0;
}

template class DeviceArray<float>;
template class DeviceArray<std::int32_t>;
template class DeviceArray<unsigned char>;
template class DeviceArray<LossStats>;
template class DeviceArray<AugmentRecord>;

namespace {

constexpr float kOne = 1.0f, kZero = 0.0f;
constexpr double kBnMomentum = 0.1, kBnEps = 1e-5;  // BatchNorm2d's (and the CPU model's) defaults

cudnnTensorFormat_t format_of(Layout l) { return l == Layout::nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW; }

bool is_tensor_op(cudnnMathType_t m) {
  return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

// strict: count CUDNN_DEFAULT_MATH as tensor-core math too (on Ampere and newer it may
// run TF32), so that results measured under CUDNN_FMA_MATH are preferred.
template <class Perf>
std::vector<AlgoCandidate> candidates_of(const Perf* results, int count, bool strict) {
  std::vector<AlgoCandidate> v;
  for (int i = 0; i < count; ++i) {
    const Perf& r = results[i];
    const bool tensor = strict ? r.mathType != CUDNN_FMA_MATH : is_tensor_op(r.mathType);
    v.push_back({static_cast<int>(r.algo), r.status == CUDNN_STATUS_SUCCESS, r.time, r.memory,
                 r.determinism == CUDNN_DETERMINISTIC, tensor});
  }
  return v;
}

// The admissible candidate; in strict mode, failing an FMA-labelled one, one of default
// math, which then runs under CUDNN_FMA_MATH (the descriptor's setting decides).
template <class Perf>
int pick(const Perf* results, int count, const AlgoPolicy& policy) {
  const bool strict = !policy.allow_tensor_op;
  const int i = choose_algo(candidates_of(results, count, strict), policy);
  if (i >= 0 || !strict) return i;
  return choose_algo(candidates_of(results, count, false), policy);
}

std::string conv_name(const ConvKey& k) {
  std::ostringstream s;
  s << k.kernel << "x" << k.kernel << "/" << k.stride << " conv " << k.cin << "->" << k.cout << " on " << k.n << "x"
    << k.h << "x" << k.w << " (" << to_string(k.layout) << ")";
  return s.str();
}

}  // namespace

// -------------------------------------------------------------------- construction

int GpuResNet18::param_index(const std::string& name, const std::vector<int>& shape) const {
  const auto& info = host_.parameter_info();
  for (std::size_t i = 0; i < info.size(); ++i) {
    if (info[i].name != name) continue;
    if (info[i].shape != shape)
      throw std::logic_error("GPU model: parameter " + name + " has another shape in the CPU model");
    return static_cast<int>(i);
  }
  throw std::logic_error("GPU model: the CPU model has no parameter " + name);
}

int GpuResNet18::add_activation(Shape per_image) {
  per_image.n = 1;
  act_shapes_.push_back(per_image);
  return static_cast<int>(act_shapes_.size()) - 1;
}

int GpuResNet18::add_conv(const std::string& name, int act_in, Shape in, int out_channels, int k, int stride,
                          int pad) {
  Conv c;
  c.cin = in.c;
  c.cout = out_channels;
  c.k = k;
  c.stride = stride;
  c.pad = pad;
  in.n = 1;
  c.in = in;
  // The CPU model's output size: (size + 2 pad - k) / stride + 1.
  c.out = {1, (in.h + 2 * pad - k) / stride + 1, (in.w + 2 * pad - k) / stride + 1, out_channels};
  c.weight = param_index(name + ".weight", {out_channels, k, k, in.c});
  c.act_in = act_in;
  c.act_out = add_activation(c.out);
  GPU_CHECK(cudnnCreateFilterDescriptor(&c.wdesc));
  GPU_CHECK(cudnnSetFilter4dDescriptor(c.wdesc, CUDNN_DATA_FLOAT, format_of(options_.layout), out_channels, in.c, k, k));
  GPU_CHECK(cudnnCreateConvolutionDescriptor(&c.cdesc));
  GPU_CHECK(cudnnSetConvolution2dDescriptor(c.cdesc, pad, pad, stride, stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                            CUDNN_DATA_FLOAT));
  convs_.push_back(c);
  return static_cast<int>(convs_.size()) - 1;
}

int GpuResNet18::add_bn(const std::string& name, int act_in, Shape in) {
  Bn b;
  b.c = in.c;
  b.weight = param_index(name + ".weight", {in.c});
  b.bias = param_index(name + ".bias", {in.c});
  const auto& binfo = host_.buffer_info();
  for (std::size_t i = 0; i < binfo.size(); ++i)
    if (binfo[i].name == name + ".running_mean") b.stats = static_cast<int>(i);
  if (b.stats < 0 || binfo[std::size_t(b.stats) + 1].name != name + ".running_var")
    throw std::logic_error("GPU model: the CPU model has no running statistics for " + name);
  b.act_in = act_in;
  b.act_out = add_activation(in);
  b.saved = bns_.empty() ? 0 : bns_.back().saved + 2 * std::size_t(bns_.back().c);
  GPU_CHECK(cudnnCreateTensorDescriptor(&b.pdesc));
  GPU_CHECK(cudnnSetTensor4dDescriptor(b.pdesc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, in.c, 1, 1));
  bns_.push_back(b);
  return static_cast<int>(bns_.size()) - 1;
}

GpuResNet18::GpuResNet18(const ModelConfig& config, const GpuModelOptions& options)
    : options_((validate(options), options)), host_(config) {
  GPU_CHECK(cudaSetDevice(options_.device));
  GPU_CHECK(cudnnCreate(&cudnn_));
  GPU_CHECK(cudnnSetStream(cudnn_, stream_));
  GPU_CHECK(cublasCreate(&cublas_));
  GPU_CHECK(cublasSetStream(cublas_, stream_));
  // The fc layer is tiny: keep it in plain float32 whatever the convolutions do.
  GPU_CHECK(cublasSetMathMode(cublas_, CUBLAS_PEDANTIC_MATH));
  bn_train_mode_ = options_.bn_persistent ? CUDNN_BATCHNORM_SPATIAL_PERSISTENT : CUDNN_BATCHNORM_SPATIAL;

  // The same construction as ResNet18's, so that every layer finds its tensors by name.
  const ModelConfig& c = host_.config();
  const Shape input{1, c.image_size, c.image_size, c.in_channels};
  act_input_ = add_activation(input);
  if (c.stem == Stem::cifar)
    stem_conv_ = add_conv("conv1", act_input_, input, c.width, 3, 1, 1);
  else
    stem_conv_ = add_conv("conv1", act_input_, input, c.width, 7, 2, 3);
  Shape cur = convs_[std::size_t(stem_conv_)].out;
  stem_bn_ = add_bn("bn1", convs_[std::size_t(stem_conv_)].act_out, cur);
  convs_[std::size_t(stem_conv_)].needs_dx = false;
  stem_out_ = cur;
  int act_cur = bns_[std::size_t(stem_bn_)].act_out;
  if (c.stem == Stem::imagenet) {
    cur = {1, (cur.h + 2 - 3) / 2 + 1, (cur.w + 2 - 3) / 2 + 1, cur.c};
    pool_out_ = cur;
    act_pool_ = add_activation(cur);
    act_cur = act_pool_;
  }
  for (int stage = 0; stage < 4; ++stage) {
    const int channels = c.width << stage;
    for (int i = 0; i < 2; ++i) {
      const std::string name = "layer" + std::to_string(stage + 1) + "." + std::to_string(i);
      const int stride = stage > 0 && i == 0 ? 2 : 1;
      Block b;
      b.act_in = act_cur;
      b.conv1 = add_conv(name + ".conv1", act_cur, cur, channels, 3, stride, 1);
      const Shape mid = convs_[std::size_t(b.conv1)].out;
      b.bn1 = add_bn(name + ".bn1", convs_[std::size_t(b.conv1)].act_out, mid);
      b.conv2 = add_conv(name + ".conv2", bns_[std::size_t(b.bn1)].act_out, mid, channels, 3, 1, 1);
      b.bn2 = add_bn(name + ".bn2", convs_[std::size_t(b.conv2)].act_out, mid);
      if (stride != 1 || cur.c != channels) {
        b.conv_sc = add_conv(name + ".downsample.0", act_cur, cur, channels, 1, stride, 0);
        b.bn_sc = add_bn(name + ".downsample.1", convs_[std::size_t(b.conv_sc)].act_out, mid);
      }
      act_cur = bns_[std::size_t(b.bn2)].act_out;
      cur = mid;
      blocks_.push_back(b);
    }
  }
  feature_in_ = cur;
  act_feat_ = add_activation({1, 1, 1, cur.c});
  act_dfeat_ = add_activation({1, 1, 1, cur.c});
  fc_weight_ = param_index("fc.weight", {c.num_classes, cur.c});
  fc_bias_ = param_index("fc.bias", {c.num_classes});
  act_logits_ = add_activation({1, 1, 1, c.num_classes});
  act_dlogits_ = add_activation({1, 1, 1, c.num_classes});
  if (host_.parameter_info().size() != convs_.size() + 2 * bns_.size() + 2)
    throw std::logic_error("GPU model: the CPU model has parameters this mirror does not use");

  act_desc_.resize(act_shapes_.size(), nullptr);
  for (auto& d : act_desc_) GPU_CHECK(cudnnCreateTensorDescriptor(&d));

  const std::size_t flat = std::size_t(host_.flat_parameters().size());
  params_.grow(flat);
  grads_.grow(flat);
  if (options_.layout == Layout::nchw) {
    filters_.grow(flat);
    filter_grads_.grow(flat);
  }
  const auto& binfo = host_.buffer_info();
  running_total_ = binfo.back().offset + binfo.back().size;
  running_.grow(running_total_);
  saved_.grow(bns_.back().saved + 2 * std::size_t(bns_.back().c));
  stats_.grow(1);
  upload_from_host();
}

GpuResNet18::~GpuResNet18() {
  // Destroy calls cannot fail in a way worth reporting from a destructor.
  for (Conv& c : convs_) {
    if (c.wdesc) cudnnDestroyFilterDescriptor(c.wdesc);
    if (c.cdesc) cudnnDestroyConvolutionDescriptor(c.cdesc);
  }
  for (Bn& b : bns_)
    if (b.pdesc) cudnnDestroyTensorDescriptor(b.pdesc);
  for (auto d : act_desc_)
    if (d) cudnnDestroyTensorDescriptor(d);
  if (cublas_) cublasDestroy(cublas_);
  if (cudnn_) cudnnDestroy(cudnn_);
}

// ------------------------------------------------------------------ host transfers

void GpuResNet18::upload_from_host() {
  auto flat = host_.flat_parameters();
  GPU_CHECK(cudaMemcpyAsync(params_.data(), flat.data(), std::size_t(flat.size()) * sizeof(float),
                            cudaMemcpyHostToDevice, stream_));
  std::vector<float> running(running_total_, 0.0f);
  const auto& binfo = host_.buffer_info();
  auto bufs = host_.buffers();
  for (std::size_t i = 0; i < binfo.size(); ++i)
    std::copy_n(bufs[i].data(), binfo[i].size, running.data() + binfo[i].offset);
  GPU_CHECK(cudaMemcpyAsync(running_.data(), running.data(), running.size() * sizeof(float), cudaMemcpyHostToDevice,
                            stream_));
  GPU_CHECK(cudaStreamSynchronize(stream_));  // `running` dies here
  weights_dirty_ = true;
}

void GpuResNet18::download_to_host() {
  auto flat = host_.flat_parameters();
  GPU_CHECK(cudaMemcpyAsync(flat.data(), params_.data(), std::size_t(flat.size()) * sizeof(float),
                            cudaMemcpyDeviceToHost, stream_));
  std::vector<float> running(running_total_);
  GPU_CHECK(cudaMemcpyAsync(running.data(), running_.data(), running.size() * sizeof(float), cudaMemcpyDeviceToHost,
                            stream_));
  GPU_CHECK(cudaStreamSynchronize(stream_));
  const auto& binfo = host_.buffer_info();
  auto bufs = host_.buffers();
  for (std::size_t i = 0; i < binfo.size(); ++i)
    std::copy_n(running.data() + binfo[i].offset, binfo[i].size, bufs[i].data());
}

std::vector<float> GpuResNet18::download_gradients() {
  std::vector<float> g(grads_.size());
  GPU_CHECK(cudaMemcpyAsync(g.data(), grads_.data(), g.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  GPU_CHECK(cudaStreamSynchronize(stream_));
  return g;
}

void GpuResNet18::synchronize() { GPU_CHECK(cudaStreamSynchronize(stream_)); }

// ---------------------------------------------------------------------- preparation

Dims4 GpuResNet18::dims(int act_id) const noexcept {
  return dims_of(act_shapes_[std::size_t(act_id)], batch_, options_.layout);
}

Dims4 GpuResNet18::input_dims(int batch) const noexcept {
  return dims_of(act_shapes_[std::size_t(act_input_)], batch, options_.layout);
}

float* GpuResNet18::input(int batch) {
  prepare(batch);
  return act(act_input_);
}

std::int32_t* GpuResNet18::labels(int batch) {
  prepare(batch);
  return labels_.data();
}

const float* GpuResNet18::logits() const noexcept {
  return acts_.data() + act_offset_[std::size_t(act_logits_)];
}

std::size_t GpuResNet18::distinct_conv_shapes(int batch) const {
  std::vector<ConvKey> keys;
  for (const Conv& c : convs_) {
    const ConvKey k{batch, c.cin, c.in.h, c.in.w, c.cout, c.k, c.stride, c.pad, options_.layout, options_.tf32};
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  }
  return keys.size();
}

void GpuResNet18::prepare(int batch) {
  if (batch < 1) throw std::invalid_argument("GPU model: batch must be positive, got " + std::to_string(batch));
  if (batch > capacity_) {
    act_offset_.resize(act_shapes_.size());
    std::size_t off = 0, largest = 0;
    for (std::size_t i = 0; i < act_shapes_.size(); ++i) {
      act_offset_[i] = off;
      const std::size_t n = act_shapes_[i].size() * std::size_t(batch);
      off += align_elements<float>(n);
      largest = std::max(largest, n);
    }
    acts_ = DeviceArray<float>(off);
    gbuf_stride_ = align_elements<float>(largest);
    gbufs_ = DeviceArray<float>(3 * gbuf_stride_);
    labels_ = DeviceArray<std::int32_t>(std::size_t(batch));
    if (act_pool_ >= 0) argmax_ = DeviceArray<std::int32_t>(pool_out_.size() * std::size_t(batch));
    capacity_ = batch;
  }
  if (batch == desc_batch_) return;
  const cudnnTensorFormat_t fmt = format_of(options_.layout);
  for (std::size_t i = 0; i < act_shapes_.size(); ++i) {
    const Shape& s = act_shapes_[i];
    GPU_CHECK(cudnnSetTensor4dDescriptor(act_desc_[i], fmt, CUDNN_DATA_FLOAT, batch, s.c, s.h, s.w));
  }
  std::size_t ws = 0;
  for (Conv& c : convs_) {
    c.algos = &search(c, batch);
    ws = std::max(ws, c.algos->workspace);
  }
  workspace_.grow(std::max<std::size_t>(ws, 256));
  desc_batch_ = batch;
}

const ConvAlgos& GpuResNet18::search(const Conv& c, int batch) {
  const ConvKey key{batch, c.cin, c.in.h, c.in.w, c.cout, c.k, c.stride, c.pad, options_.layout, options_.tf32};
  if (auto it = algo_cache_.find(key); it != algo_cache_.end()) {
    if (c.needs_dx && !it->second.has_bwd_data) {
      // Cached for the stem (no input gradient); fall through and search again with it.
    } else {
      return it->second;
    }
  }
  ++searches_;
  const AlgoPolicy policy{options_.workspace_limit, options_.deterministic, options_.tf32};
  // FMA math in the descriptor is what guarantees plain float32 when TF32 is off.
  const cudnnMathType_t search_math = options_.tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
  GPU_CHECK(cudnnSetConvolutionMathType(c.cdesc, search_math));
  const cudnnTensorDescriptor_t x = act_desc_[std::size_t(c.act_in)], y = act_desc_[std::size_t(c.act_out)];
  const bool find = options_.algo_search == AlgoSearch::find;
  auto run_math = [&](cudnnMathType_t reported) { return options_.tf32 ? reported : CUDNN_FMA_MATH; };
  auto fail = [&](const char* pass) {
    throw std::runtime_error("GPU model: no " + std::string(pass) + " algorithm for " + conv_name(key) +
                             " within a workspace of " + std::to_string(options_.workspace_limit >> 20) + " MiB" +
                             (options_.deterministic ? " among the deterministic ones" : ""));
  };
  ConvAlgos a;
  {
    int max = 0, got = 0;
    GPU_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(cudnn_, &max));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> r(std::size_t(std::max(max, 1)));
    if (find)
      GPU_CHECK(cudnnFindConvolutionForwardAlgorithm(cudnn_, x, c.wdesc, c.cdesc, y, max, &got, r.data()));
    else
      GPU_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(cudnn_, x, c.wdesc, c.cdesc, y, max, &got, r.data()));
    const int i = pick(r.data(), got, policy);
    if (i < 0) fail("forward");
    a.fwd = r[std::size_t(i)].algo;
    a.fwd_math = run_math(r[std::size_t(i)].mathType);
    a.workspace = std::max(a.workspace, r[std::size_t(i)].memory);
  }
  if (c.needs_dx) {
    int max = 0, got = 0;
    GPU_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnn_, &max));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> r(std::size_t(std::max(max, 1)));
    if (find)
      GPU_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(cudnn_, c.wdesc, y, c.cdesc, x, max, &got, r.data()));
    else
      GPU_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnn_, c.wdesc, y, c.cdesc, x, max, &got, r.data()));
    const int i = pick(r.data(), got, policy);
    if (i < 0) fail("backward-data");
    a.bwd_data = r[std::size_t(i)].algo;
    a.bwd_data_math = run_math(r[std::size_t(i)].mathType);
    a.workspace = std::max(a.workspace, r[std::size_t(i)].memory);
    a.has_bwd_data = true;
  }
  {
    int max = 0, got = 0;
    GPU_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnn_, &max));
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> r(std::size_t(std::max(max, 1)));
    if (find)
      GPU_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(cudnn_, x, y, c.cdesc, c.wdesc, max, &got, r.data()));
    else
      GPU_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnn_, x, y, c.cdesc, c.wdesc, max, &got, r.data()));
    const int i = pick(r.data(), got, policy);
    if (i < 0) fail("backward-filter");
    a.bwd_filter = r[std::size_t(i)].algo;
    a.bwd_filter_math = run_math(r[std::size_t(i)].mathType);
    a.workspace = std::max(a.workspace, r[std::size_t(i)].memory);
  }
  return algo_cache_[key] = a;
}

void GpuResNet18::refresh_filters() {
  if (!weights_dirty_) return;
  if (options_.layout == Layout::nchw) {
    const auto& info = host_.parameter_info();
    for (const Conv& c : convs_) {
      const std::size_t off = info[std::size_t(c.weight)].offset;
      permute_ohwi_to_oihw(params_.data() + off, filters_.data() + off, c.cout, c.k, c.cin, stream_);
    }
  }
  weights_dirty_ = false;
}

const float* GpuResNet18::weight_of(const Conv& c) noexcept {
  const std::size_t off = host_.parameter_info()[std::size_t(c.weight)].offset;
  return (options_.layout == Layout::nchw ? filters_.data() : params_.data()) + off;
}

float* GpuResNet18::dweight_of(const Conv& c) noexcept {
  const std::size_t off = host_.parameter_info()[std::size_t(c.weight)].offset;
  return (options_.layout == Layout::nchw ? filter_grads_.data() : grads_.data()) + off;
}

// ------------------------------------------------------------------------- layers

void GpuResNet18::conv_forward(const Conv& c) {
  const ConvAlgos& a = *c.algos;
  GPU_CHECK(cudnnSetConvolutionMathType(c.cdesc, a.fwd_math));
  GPU_CHECK(cudnnConvolutionForward(cudnn_, &kOne, act_desc_[std::size_t(c.act_in)], act(c.act_in), c.wdesc,
                                    weight_of(c), c.cdesc, a.fwd, workspace_.data(), workspace_.size(), &kZero,
                                    act_desc_[std::size_t(c.act_out)], act(c.act_out)));
}

void GpuResNet18::conv_backward(const Conv& c, const float* dy, float* dx, bool accumulate_dx) {
  const ConvAlgos& a = *c.algos;
  const cudnnTensorDescriptor_t xd = act_desc_[std::size_t(c.act_in)], yd = act_desc_[std::size_t(c.act_out)];
  GPU_CHECK(cudnnSetConvolutionMathType(c.cdesc, a.bwd_filter_math));
  GPU_CHECK(cudnnConvolutionBackwardFilter(cudnn_, &kOne, xd, act(c.act_in), yd, dy, c.cdesc, a.bwd_filter,
                                           workspace_.data(), workspace_.size(), &kZero, c.wdesc, dweight_of(c)));
  if (dx == nullptr) return;
  GPU_CHECK(cudnnSetConvolutionMathType(c.cdesc, a.bwd_data_math));
  GPU_CHECK(cudnnConvolutionBackwardData(cudnn_, &kOne, c.wdesc, weight_of(c), yd, dy, c.cdesc, a.bwd_data,
                                         workspace_.data(), workspace_.size(), accumulate_dx ? &kOne : &kZero, xd, dx));
}

void GpuResNet18::bn_forward(const Bn& b, bool train) {
  const auto& info = host_.parameter_info();
  const auto& binfo = host_.buffer_info();
  const float* gamma = params_.data() + info[std::size_t(b.weight)].offset;
  const float* beta = params_.data() + info[std::size_t(b.bias)].offset;
  float* mean = running_.data() + binfo[std::size_t(b.stats)].offset;
  float* var = running_.data() + binfo[std::size_t(b.stats) + 1].offset;
  const cudnnTensorDescriptor_t xd = act_desc_[std::size_t(b.act_in)], yd = act_desc_[std::size_t(b.act_out)];
  if (train) {
    GPU_CHECK(cudnnBatchNormalizationForwardTraining(cudnn_, bn_train_mode_, &kOne, &kZero, xd, act(b.act_in), yd,
                                                     act(b.act_out), b.pdesc, gamma, beta, kBnMomentum, mean, var,
                                                     kBnEps, saved_.data() + b.saved,
                                                     saved_.data() + b.saved + std::size_t(b.c)));
  } else {
    GPU_CHECK(cudnnBatchNormalizationForwardInference(cudnn_, CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, xd,
                                                      act(b.act_in), yd, act(b.act_out), b.pdesc, gamma, beta, mean,
                                                      var, kBnEps));
  }
}

void GpuResNet18::bn_backward(const Bn& b, const float* dy, float* dx) {
  const auto& info = host_.parameter_info();
  const float* gamma = params_.data() + info[std::size_t(b.weight)].offset;
  const cudnnTensorDescriptor_t xd = act_desc_[std::size_t(b.act_in)];
  GPU_CHECK(cudnnBatchNormalizationBackward(cudnn_, bn_train_mode_, &kOne, &kZero, &kOne, &kZero, xd, act(b.act_in),
                                            xd, dy, xd, dx, b.pdesc, gamma,
                                            grads_.data() + info[std::size_t(b.weight)].offset,
                                            grads_.data() + info[std::size_t(b.bias)].offset, kBnEps,
                                            saved_.data() + b.saved, saved_.data() + b.saved + std::size_t(b.c)));
}

// ------------------------------------------------------------------ forward / backward

void GpuResNet18::forward(int batch, bool train) {
  if (train && batch < 2)
    throw std::invalid_argument("GPU model: training batch norm needs a batch of 2 or more");
  prepare(batch);
  batch_ = batch;
  last_train_ = train;
  loss_grad_ = false;
  refresh_filters();
  const std::size_t n = std::size_t(batch);

  const Conv& sc = convs_[std::size_t(stem_conv_)];
  const Bn& sb = bns_[std::size_t(stem_bn_)];
  conv_forward(sc);
  bn_forward(sb, train);
  relu_inplace(act(sb.act_out), stem_out_.size() * n, stream_);
  if (act_pool_ >= 0)
    max_pool(act(sb.act_out), dims(sb.act_out), dims(act_pool_), 3, 2, 1, act(act_pool_), argmax_.data(), stream_);
  for (const Block& b : blocks_) {
    const Conv& c1 = convs_[std::size_t(b.conv1)];
    const Conv& c2 = convs_[std::size_t(b.conv2)];
    const Bn& n1 = bns_[std::size_t(b.bn1)];
    const Bn& n2 = bns_[std::size_t(b.bn2)];
    conv_forward(c1);
    bn_forward(n1, train);
    const std::size_t mid = act_shapes_[std::size_t(n1.act_out)].size() * n;
    relu_inplace(act(n1.act_out), mid, stream_);
    conv_forward(c2);
    const float* residual = act(b.act_in);
    if (b.conv_sc >= 0) {
      conv_forward(convs_[std::size_t(b.conv_sc)]);
      const Bn& ns = bns_[std::size_t(b.bn_sc)];
      bn_forward(ns, train);
      residual = act(ns.act_out);
    }
    bn_forward(n2, train);
    add_relu_inplace(act(n2.act_out), residual, mid, stream_);
  }
  const int F = feature_in_.c, K = config().num_classes;
  global_avg_pool(act(bns_[std::size_t(blocks_.back().bn2)].act_out), dims(bns_[std::size_t(blocks_.back().bn2)].act_out),
                  act(act_feat_), stream_);
  const auto& info = host_.parameter_info();
  // logits (K x batch) = W (K x F, row-major: column-major F x K, transposed) * features (F x batch)
  GPU_CHECK(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, K, batch, F, &kOne,
                        params_.data() + info[std::size_t(fc_weight_)].offset, F, act(act_feat_), F, &kZero,
                        act(act_logits_), K));
  add_bias(act(act_logits_), params_.data() + info[std::size_t(fc_bias_)].offset, K, batch, stream_);
}

void GpuResNet18::loss(bool grad) {
  if (batch_ == 0) throw std::logic_error("GPU model: loss() needs a forward pass first");
  const auto& info = host_.parameter_info();
  softmax_cross_entropy(act(act_logits_), labels_.data(), config().num_classes, batch_,
                        grad ? act(act_dlogits_) : nullptr,
                        grad ? grads_.data() + info[std::size_t(fc_bias_)].offset : nullptr, stats_.data(), stream_);
  loss_grad_ = grad;
}

void GpuResNet18::backward() {
  if (batch_ == 0 || !last_train_ || !loss_grad_)
    throw std::logic_error("GPU model: backward() needs forward(..., train = true) and loss(grad = true) first");
  const int batch = batch_;
  const int F = feature_in_.c, K = config().num_classes;
  const auto& info = host_.parameter_info();
  const float* W = params_.data() + info[std::size_t(fc_weight_)].offset;
  // dW (K x F row-major = column-major F x K) = features (F x batch) * dlogits^T (batch x K)
  GPU_CHECK(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, F, K, batch, &kOne, act(act_feat_), F, act(act_dlogits_), K,
                        &kZero, grads_.data() + info[std::size_t(fc_weight_)].offset, F));
  // dfeatures (F x batch) = W^T (F x K) * dlogits (K x batch)
  GPU_CHECK(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, F, batch, K, &kOne, W, F, act(act_dlogits_), K, &kZero,
                        act(act_dfeat_), F));
  // Three gradient buffers: G carries the gradient from block to block, A and B are scratch.
  constexpr int G = 0, A = 1, B = 2;
  const Bn& last = bns_[std::size_t(blocks_.back().bn2)];
  global_avg_pool_backward(act(act_dfeat_), dims(last.act_out), gbuf(G), stream_);
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) {
    const Block& b = *it;
    const Conv& c1 = convs_[std::size_t(b.conv1)];
    const Conv& c2 = convs_[std::size_t(b.conv2)];
    const Bn& n1 = bns_[std::size_t(b.bn1)];
    const Bn& n2 = bns_[std::size_t(b.bn2)];
    const std::size_t mid = act_shapes_[std::size_t(n2.act_out)].size() * std::size_t(batch);
    // out = relu(bn2(c2) + shortcut): after the mask, G is the gradient of both addends.
    relu_mask_inplace(gbuf(G), act(n2.act_out), mid, stream_);
    bn_backward(n2, gbuf(G), gbuf(A));
    if (b.conv_sc >= 0) {
      const Conv& cs = convs_[std::size_t(b.conv_sc)];
      bn_backward(bns_[std::size_t(b.bn_sc)], gbuf(G), gbuf(B));
      conv_backward(cs, gbuf(B), gbuf(G), false);  // G is consumed: it now starts the input gradient
    }
    conv_backward(c2, gbuf(A), gbuf(B), false);
    relu_mask_inplace(gbuf(B), act(n1.act_out), mid, stream_);
    bn_backward(n1, gbuf(B), gbuf(A));
    conv_backward(c1, gbuf(A), gbuf(G), true);  // identity shortcut: G already holds its gradient
  }
  const Conv& sc = convs_[std::size_t(stem_conv_)];
  const Bn& sb = bns_[std::size_t(stem_bn_)];
  int cur = G;
  if (act_pool_ >= 0) {
    max_pool_backward(gbuf(G), dims(sb.act_out), dims(act_pool_), 3, 2, 1, argmax_.data(), gbuf(A), stream_);
    cur = A;
  }
  const int other = cur == G ? A : B;
  relu_mask_inplace(gbuf(cur), act(sb.act_out), stem_out_.size() * std::size_t(batch), stream_);
  bn_backward(sb, gbuf(cur), gbuf(other));
  conv_backward(sc, gbuf(other), nullptr, false);
  if (options_.layout == Layout::nchw) {
    for (const Conv& c : convs_) {
      const std::size_t off = info[std::size_t(c.weight)].offset;
      permute_oihw_to_ohwi(filter_grads_.data() + off, grads_.data() + off, c.cout, c.k, c.cin, stream_);
    }
  }
}

// --------------------------------------------------------------------------- misc

std::string GpuResNet18::describe() const {
  cudaDeviceProp p{};
  GPU_CHECK(cudaGetDeviceProperties(&p, options_.device));
  const std::size_t v = cudnnGetVersion();
  std::ostringstream s;
  s << "cuda:" << options_.device << " " << p.name << " (sm_" << p.major << p.minor << ", cuDNN " << v / 10000 << "."
    << (v / 100) % 100 << "." << v % 100 << "), " << to_string(options_.layout) << ", float32"
    << (options_.tf32 ? " with TF32 convolutions" : " (FMA only)") << ", algorithms by " << to_string(options_.algo_search);
  return s.str();
}

}  // namespace resnet18::gpu
