// OneDnnConv: oneDNN forward, backward-data and backward-weights primitives per batch size, on the caller's NHWC/OHWI buffers.
#include "conv_onednn.hpp"

#if RESNET18_HAVE_ONEDNN

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

namespace resnet18 {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};

Context& context() {
  static Context c;
  return c;
}

std::size_t floats_for(std::size_t bytes) { return align_elements<float>((bytes + sizeof(float) - 1) / sizeof(float)); }

}  // namespace

bool onednn_available() noexcept { return true; }

struct OneDnnConv::Impl {
  // Everything oneDNN needs for one (batch size, thread count): oneDNN sizes its thread
  // partitioning when a primitive is created.
  struct Plan {
    int batch = 0;
    int threads = 0;
    dnnl::convolution_forward::primitive_desc fwd_pd;
    dnnl::convolution_backward_data::primitive_desc bwd_d_pd;
    dnnl::convolution_backward_weights::primitive_desc bwd_w_pd;
    dnnl::convolution_forward fwd;
    dnnl::convolution_backward_data bwd_d;
    dnnl::convolution_backward_weights bwd_w;
    std::optional<dnnl::reorder> to_fwd_w, to_bwd_d_w, from_bwd_w;  // absent when the layout is plain OHWI
    bool bwd_d_uses_fwd_w = false;  // the same blocked weights serve both
    std::size_t scratch_floats = 0;
    std::string impl;
  };

  int cin, cout, k, stride, pad;
  std::vector<Plan> plans;  // few: the training batch, a last partial batch, the eval batch
  Buffer<float> w_fwd, w_bwd_d, dw_blocked;

  memory::desc src_md(Shape in) const { return {{in.n, cin, in.h, in.w}, dt::f32, tag::nhwc}; }
  memory::desc dst_md(Shape in) const {
    const int ho = (in.h + 2 * pad - k) / stride + 1, wo = (in.w + 2 * pad - k) / stride + 1;
    return {{in.n, cout, ho, wo}, dt::f32, tag::nhwc};
  }
  memory::desc plain_w() const { return {{cout, cin, k, k}, dt::f32, tag::ohwi}; }

  Plan& plan(Shape in) {
    const int threads = omp_get_max_threads();
    for (Plan& p : plans)
      if (p.batch == in.n && p.threads == threads) return p;
    Context& ctx = context();
    Plan p;
    p.batch = in.n;
    p.threads = threads;
    const memory::desc src = src_md(in), dst = dst_md(in);
    const memory::desc any_w({cout, cin, k, k}, dt::f32, tag::any);
    const memory::dims strides{stride, stride}, pads{pad, pad};
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // our buffer: no allocation per call
    p.fwd_pd = dnnl::convolution_forward::primitive_desc(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
                                        any_w, dst, strides, pads, pads),
        attr, ctx.engine);
    p.bwd_d_pd = dnnl::convolution_backward_data::primitive_desc(
        dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, src, any_w, dst, strides, pads,
                                              pads),
        attr, ctx.engine, p.fwd_pd);
    p.bwd_w_pd = dnnl::convolution_backward_weights::primitive_desc(
        dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, src, any_w, dst, strides, pads,
                                                 pads),
        attr, ctx.engine, p.fwd_pd);
    p.fwd = dnnl::convolution_forward(p.fwd_pd);
    p.bwd_d = dnnl::convolution_backward_data(p.bwd_d_pd);
    p.bwd_w = dnnl::convolution_backward_weights(p.bwd_w_pd);
    const memory::desc plain = plain_w();
    if (p.fwd_pd.weights_desc() != plain)
      p.to_fwd_w = dnnl::reorder(dnnl::reorder::primitive_desc(ctx.engine, plain, ctx.engine, p.fwd_pd.weights_desc()));
    p.bwd_d_uses_fwd_w = p.bwd_d_pd.weights_desc() == p.fwd_pd.weights_desc();
    if (!p.bwd_d_uses_fwd_w && p.bwd_d_pd.weights_desc() != plain)
      p.to_bwd_d_w =
          dnnl::reorder(dnnl::reorder::primitive_desc(ctx.engine, plain, ctx.engine, p.bwd_d_pd.weights_desc()));
    if (p.bwd_w_pd.diff_weights_desc() != plain)
      p.from_bwd_w =
          dnnl::reorder(dnnl::reorder::primitive_desc(ctx.engine, p.bwd_w_pd.diff_weights_desc(), ctx.engine, plain));
    p.scratch_floats = floats_for(std::max({p.fwd_pd.scratchpad_desc().get_size(),
                                            p.bwd_d_pd.scratchpad_desc().get_size(),
                                            p.bwd_w_pd.scratchpad_desc().get_size()}));
    p.impl = std::string(p.fwd_pd.impl_info_str()) + " / " + p.bwd_d_pd.impl_info_str() + " / " +
             p.bwd_w_pd.impl_info_str();
    w_fwd.grow(floats_for(p.fwd_pd.weights_desc().get_size()));
    w_bwd_d.grow(floats_for(p.bwd_d_pd.weights_desc().get_size()));
    dw_blocked.grow(floats_for(p.bwd_w_pd.diff_weights_desc().get_size()));
    if (plans.size() >= 4) plans.erase(plans.begin());
    plans.push_back(std::move(p));
    return plans.back();
  }
};

OneDnnConv::OneDnnConv(int in_channels, int out_channels, int kernel, int stride, int padding)
    : impl_(new Impl{in_channels, out_channels, kernel, stride, padding, {}, {}, {}, {}}) {}
OneDnnConv::OneDnnConv(OneDnnConv&&) noexcept = default;
OneDnnConv& OneDnnConv::operator=(OneDnnConv&&) noexcept = default;
OneDnnConv::~OneDnnConv() = default;

Shape OneDnnConv::output_shape(Shape in) const noexcept {
  const Impl& m = *impl_;
  return {in.n, (in.h + 2 * m.pad - m.k) / m.stride + 1, (in.w + 2 * m.pad - m.k) / m.stride + 1, m.cout};
}

std::size_t OneDnnConv::workspace_size(Shape in) {
  in.c = impl_->cin;
  return impl_->plan(in).scratch_floats + align_elements<float>(in.size());
}

const char* OneDnnConv::implementation(Shape in) { return impl_->plan(in).impl.c_str(); }

void OneDnnConv::forward(const float* weight, const float* x, Shape in, float* y, float* workspace) {
  Impl& m = *impl_;
  Impl::Plan& p = m.plan(in);
  Context& ctx = context();
  auto* w = const_cast<float*>(weight);  // oneDNN takes void*; these inputs are only read
  memory user_w(m.plain_w(), ctx.engine, w);
  memory wmem = user_w;
  if (p.to_fwd_w) {
    wmem = memory(p.fwd_pd.weights_desc(), ctx.engine, m.w_fwd.data());
    p.to_fwd_w->execute(ctx.stream, user_w, wmem);
  }
  memory src(m.src_md(in), ctx.engine, const_cast<float*>(x));
  memory dst(m.dst_md(in), ctx.engine, y);
  memory scratch(p.fwd_pd.scratchpad_desc(), ctx.engine, workspace);
  p.fwd.execute(ctx.stream, {{DNNL_ARG_SRC, src},
                             {DNNL_ARG_WEIGHTS, wmem},
                             {DNNL_ARG_DST, dst},
                             {DNNL_ARG_SCRATCHPAD, scratch}});
  ctx.stream.wait();
}

void OneDnnConv::backward(const float* weight, const float* x, Shape in, const float* dy, float* dweight, float* dx,
                          bool accumulate_dx, float* workspace) {
  Impl& m = *impl_;
  Impl::Plan& p = m.plan(in);
  Context& ctx = context();
  memory src(m.src_md(in), ctx.engine, const_cast<float*>(x));
  memory ddst(m.dst_md(in), ctx.engine, const_cast<float*>(dy));
  memory user_dw(m.plain_w(), ctx.engine, dweight);
  memory dwmem = p.from_bwd_w ? memory(p.bwd_w_pd.diff_weights_desc(), ctx.engine, m.dw_blocked.data()) : user_dw;
  p.bwd_w.execute(ctx.stream, {{DNNL_ARG_SRC, src},
                               {DNNL_ARG_DIFF_DST, ddst},
                               {DNNL_ARG_DIFF_WEIGHTS, dwmem},
                               {DNNL_ARG_SCRATCHPAD, memory(p.bwd_w_pd.scratchpad_desc(), ctx.engine, workspace)}});
  if (p.from_bwd_w) p.from_bwd_w->execute(ctx.stream, dwmem, user_dw);
  if (dx != nullptr) {
    // Reordered again rather than reused from forward(): the weights may have changed since.
    memory user_w(m.plain_w(), ctx.engine, const_cast<float*>(weight));
    memory wmem = user_w;
    if (p.bwd_d_uses_fwd_w && p.to_fwd_w) {
      wmem = memory(p.fwd_pd.weights_desc(), ctx.engine, m.w_fwd.data());
      p.to_fwd_w->execute(ctx.stream, user_w, wmem);
    } else if (p.to_bwd_d_w) {
      wmem = memory(p.bwd_d_pd.weights_desc(), ctx.engine, m.w_bwd_d.data());
      p.to_bwd_d_w->execute(ctx.stream, user_w, wmem);
    }
    // oneDNN overwrites its output; a residual branch adds through a temporary.
    float* out = accumulate_dx ? workspace + p.scratch_floats : dx;
    memory dsrc(m.src_md(in), ctx.engine, out);
    p.bwd_d.execute(ctx.stream, {{DNNL_ARG_DIFF_DST, ddst},
                                 {DNNL_ARG_WEIGHTS, wmem},
                                 {DNNL_ARG_DIFF_SRC, dsrc},
                                 {DNNL_ARG_SCRATCHPAD, memory(p.bwd_d_pd.scratchpad_desc(), ctx.engine, workspace)}});
    ctx.stream.wait();
    if (accumulate_dx) {
      const std::size_t n = in.size();
#pragma omp parallel for schedule(static)
      for (std::size_t i = 0; i < n; ++i) dx[i] += out[i];
    }
  }
  ctx.stream.wait();
}

}  // namespace resnet18

#else  // built without oneDNN: the type exists, constructing it is an error

#include <stdexcept>

namespace resnet18 {

struct OneDnnConv::Impl {};

bool onednn_available() noexcept { return false; }

OneDnnConv::OneDnnConv(int, int, int, int, int) {
  throw std::invalid_argument("OneDnnConv: this build has no oneDNN (configure with -DNESTLA_RESNET18_ONEDNN=ON)");
}
OneDnnConv::OneDnnConv(OneDnnConv&&) noexcept = default;
OneDnnConv& OneDnnConv::operator=(OneDnnConv&&) noexcept = default;
OneDnnConv::~OneDnnConv() = default;
Shape OneDnnConv::output_shape(Shape in) const noexcept { return in; }
std::size_t OneDnnConv::workspace_size(Shape) { return 0; }
const char* OneDnnConv::implementation(Shape) { return "none"; }
void OneDnnConv::forward(const float*, const float*, Shape, float*, float*) {}
void OneDnnConv::backward(const float*, const float*, Shape, const float*, float*, float*, bool, float*) {}

}  // namespace resnet18

#endif
