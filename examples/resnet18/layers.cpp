// Implementations of the NHWC layers, explicitly instantiated for float and double.
#include "layers.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>

#include <Eigen/Core>
#include <omp.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace resnet18 {
namespace {

template <class S>
using MatC = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
template <class S>
using MatR = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Below this much work per thread the fork/join costs more than it saves.
int threads_for(std::size_t work, std::size_t grain = 1 << 15) {
  const std::size_t want = std::max<std::size_t>(1, work / grain);
  return static_cast<int>(std::min<std::size_t>(want, static_cast<std::size_t>(omp_get_max_threads())));
}

// [begin, end) of part t of n split into parts pieces.
inline std::size_t split(std::size_t n, int t, int parts) { return n * std::size_t(t) / std::size_t(parts); }

// The scratch chunk of one thread: large enough that the GEMM sees a few hundred columns or
// more (its packing cost amortizes), small enough to stay in the outer caches between the
// im2col that writes it and the GEMM that reads it.
std::size_t g_chunk_elements = std::size_t(1) << 20;

}  // namespace

void set_conv_chunk_elements(std::size_t elements) { g_chunk_elements = std::max<std::size_t>(elements, 1); }
std::size_t conv_chunk_elements() noexcept { return g_chunk_elements; }

// ------------------------------------------------------------------------------ Buffer

template <class S>
Buffer<S>& Buffer<S>::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    std::free(data_);
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

template <class S>
Buffer<S>::~Buffer() {
  std::free(data_);
}

template <class S>
void Buffer<S>::grow(std::size_t n) {
  if (n <= size_) return;
  constexpr std::size_t huge = std::size_t(2) << 20;
  std::size_t bytes = n * sizeof(S);
  const std::size_t align = bytes >= huge ? huge : 64;
  bytes = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, bytes);
  if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == huge) madvise(p, bytes, MADV_HUGEPAGE);
#endif
  std::memset(p, 0, bytes);  // first touch here, once, instead of inside a timed step
  std::free(data_);
  data_ = static_cast<S*>(p);
  size_ = n;
}

// ------------------------------------------------------------------------------ Conv2d

template <class S>
Conv2d<S>::Conv2d(int in_channels, int out_channels, int kernel, int stride, int padding)
    : cin_(in_channels), cout_(out_channels), k_(kernel), stride_(stride), pad_(padding) {
  if (in_channels < 1 || out_channels < 1 || kernel < 1 || stride < 1 || padding < 0 || padding >= kernel)
    throw std::invalid_argument("Conv2d: bad geometry (in " + std::to_string(in_channels) + ", out " +
                                std::to_string(out_channels) + ", kernel " + std::to_string(kernel) + ", stride " +
                                std::to_string(stride) + ", padding " + std::to_string(padding) + ")");
}

template <class S>
Shape Conv2d<S>::output_shape(Shape in) const noexcept {
  return {in.n, (in.h + 2 * pad_ - k_) / stride_ + 1, (in.w + 2 * pad_ - k_) / stride_ + 1, cout_};
}

template <class S>
int Conv2d<S>::images_per_chunk(Shape in) const noexcept {
  const Shape out = output_shape(in);
  const std::size_t per_image = std::size_t(out.h) * out.w * patch();
  return static_cast<int>(std::clamp<std::size_t>(g_chunk_elements / per_image, 1, std::max(in.n, 1)));
}

template <class S>
std::size_t Conv2d<S>::workspace_size(Shape in, int threads) const noexcept {
  if (is_pointwise()) return 0;
  const Shape out = output_shape(in);
  const std::size_t chunk = std::size_t(images_per_chunk(in)) * out.h * out.w * patch();
  return std::size_t(threads) * align_elements<S>(chunk) + std::size_t(threads - 1) * align_elements<S>(weight_size());
}

template <class S>
double Conv2d<S>::forward_flops(Shape in) const noexcept {
  return 2.0 * double(output_shape(in).pixels()) * double(weight_size());
}

template <class S>
void Conv2d<S>::im2col(const S* x, Shape in, Shape out, std::size_t first_col, std::size_t cols, S* col) const {
  const std::size_t K = patch();
  const std::size_t P = std::size_t(out.h) * out.w;
  const std::size_t C = std::size_t(cin_);
  const std::size_t run = std::size_t(k_) * C;  // one kernel row of a patch
  std::size_t n = first_col / P;
  int oy = int((first_col % P) / out.w);
  int ox = int((first_col % P) % out.w);
  for (std::size_t j = 0; j < cols; ++j) {
    S* dst = col + j * K;
    const S* img = x + n * std::size_t(in.h) * in.w * C;
    const int iy0 = oy * stride_ - pad_;
    const int ix0 = ox * stride_ - pad_;
    // The valid kernel columns form one interval, and in NHWC their pixels are adjacent:
    // one copy per kernel row.
    const int lo = std::max(0, -ix0);
    const int hi = std::min(k_, in.w - ix0);
    for (int ky = 0; ky < k_; ++ky, dst += run) {
      const int iy = iy0 + ky;
      if (iy < 0 || iy >= in.h || lo >= hi) {
        std::fill_n(dst, run, S(0));
        continue;
      }
      std::fill_n(dst, std::size_t(lo) * C, S(0));
      std::copy_n(img + (std::size_t(iy) * in.w + std::size_t(ix0 + lo)) * C, std::size_t(hi - lo) * C,
                  dst + std::size_t(lo) * C);
      std::fill_n(dst + std::size_t(hi) * C, std::size_t(k_ - hi) * C, S(0));
    }
    if (++ox == out.w) {
      ox = 0;
      if (++oy == out.h) {
        oy = 0;
        ++n;
      }
    }
  }
}

template <class S>
void Conv2d<S>::col2im(const S* col, Shape in, Shape out, int first_image, int images, S* dx, bool accumulate) const {
  // Gather rather than scatter: each input pixel sums the patch entries that read it, so
  // every dx element is written once and needs no zeroing pass.
  const std::size_t K = patch();
  const std::size_t C = std::size_t(cin_);
  const std::size_t P = std::size_t(out.h) * out.w;
  for (int i = 0; i < images; ++i) {
    const S* cimg = col + std::size_t(i) * P * K;
    S* dimg = dx + std::size_t(first_image + i) * in.h * in.w * C;
    for (int iy = 0; iy < in.h; ++iy) {
      for (int ix = 0; ix < in.w; ++ix) {
        S* __restrict d = dimg + (std::size_t(iy) * in.w + ix) * C;
        if (!accumulate) std::fill_n(d, C, S(0));
        for (int ky = 0; ky < k_; ++ky) {
          const int ty = iy + pad_ - ky;
          if (ty < 0) break;
          if (ty % stride_ != 0 || ty / stride_ >= out.h) continue;
          const int oy = ty / stride_;
          for (int kx = 0; kx < k_; ++kx) {
            const int tx = ix + pad_ - kx;
            if (tx < 0) break;
            if (tx % stride_ != 0 || tx / stride_ >= out.w) continue;
            const int ox = tx / stride_;
            const S* __restrict s = cimg + (std::size_t(oy) * out.w + ox) * K + (std::size_t(ky) * k_ + kx) * C;
            for (std::size_t c = 0; c < C; ++c) d[c] += s[c];
          }
        }
      }
    }
  }
}

template <class S>
void Conv2d<S>::forward(const S* weight, const S* x, Shape in, S* y, S* workspace) const {
  const Shape out = output_shape(in);
  const auto K = Eigen::Index(patch());
  const Eigen::Map<const MatR<S>> W(weight, cout_, K);
  if (is_pointwise()) {  // the input already is the im2col matrix; let Eigen thread the GEMM
    Eigen::Map<MatC<S>> Y(y, cout_, Eigen::Index(out.pixels()));
    Y.noalias() = W * Eigen::Map<const MatC<S>>(x, cin_, Eigen::Index(in.pixels()));
    return;
  }
  const std::size_t cols = out.pixels();
  const std::size_t chunk_cols = std::size_t(images_per_chunk(in)) * out.h * out.w;
  const std::size_t stride_ws = align_elements<S>(chunk_cols * patch());
  const int T = threads_for(cols * patch(), std::size_t(1) << 16);
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    S* col = workspace + std::size_t(t) * stride_ws;
    // Columns split at multiples of 16 keep each thread's slice of y 64-byte aligned.
    const std::size_t b = std::min(cols, split(cols / 16, t, nt) * 16);
    const std::size_t e = t + 1 == nt ? cols : std::min(cols, split(cols / 16, t + 1, nt) * 16);
    for (std::size_t c0 = b; c0 < e; c0 += chunk_cols) {
      const std::size_t nc = std::min(chunk_cols, e - c0);
      im2col(x, in, out, c0, nc, col);
      Eigen::Map<MatC<S>> Y(y + c0 * cout_, cout_, Eigen::Index(nc));
      Y.noalias() = W * Eigen::Map<const MatC<S>>(col, K, Eigen::Index(nc));
    }
  }
}

template <class S>
void Conv2d<S>::backward(const S* weight, const S* x, Shape in, const S* dy, S* dweight, S* dx, bool accumulate_dx,
                         S* workspace) const {
  const Shape out = output_shape(in);
  const auto K = Eigen::Index(patch());
  const Eigen::Map<const MatR<S>> W(weight, cout_, K);
  if (is_pointwise()) {
    const Eigen::Map<const MatC<S>> X(x, cin_, Eigen::Index(in.pixels()));
    const Eigen::Map<const MatC<S>> dY(dy, cout_, Eigen::Index(out.pixels()));
    Eigen::Map<MatR<S>>(dweight, cout_, K).noalias() = dY * X.transpose();
    if (dx != nullptr) {
      Eigen::Map<MatC<S>> dX(dx, cin_, Eigen::Index(in.pixels()));
      if (accumulate_dx)
        dX.noalias() += W.transpose() * dY;
      else
        dX.noalias() = W.transpose() * dY;
    }
    return;
  }
  const std::size_t P = std::size_t(out.h) * out.w;
  const int chunk = images_per_chunk(in);
  const std::size_t stride_ws = align_elements<S>(std::size_t(chunk) * P * patch());
  // Split by whole images so that col2im of one thread never touches another's pixels.
  const int T = std::min(in.n, threads_for(out.pixels() * patch(), std::size_t(1) << 16));
  S* partials = workspace + std::size_t(T) * stride_ws;
  const std::size_t wsize = weight_size();
  const std::size_t wstride = align_elements<S>(wsize);
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    S* col = workspace + std::size_t(t) * stride_ws;
    S* dw = t == 0 ? dweight : partials + std::size_t(t - 1) * wstride;
    Eigen::Map<MatR<S>> dW(dw, cout_, K);
    const int b = int(split(std::size_t(in.n), t, nt));
    const int e = int(split(std::size_t(in.n), t + 1, nt));
    if (b == e) dW.setZero();
    for (int n0 = b; n0 < e; n0 += chunk) {
      const int nn = std::min(chunk, e - n0);
      const auto nc = Eigen::Index(std::size_t(nn) * P);
      im2col(x, in, out, std::size_t(n0) * P, std::size_t(nc), col);
      const Eigen::Map<const MatC<S>> dY(dy + std::size_t(n0) * P * cout_, cout_, nc);
      Eigen::Map<MatC<S>> Col(col, K, nc);
      if (n0 == b)
        dW.noalias() = dY * Col.transpose();
      else
        dW.noalias() += dY * Col.transpose();
      if (dx != nullptr) {
        Col.noalias() = W.transpose() * dY;
        col2im(col, in, out, n0, nn, dx, accumulate_dx);
      }
    }
#pragma omp barrier
    if (nt > 1) {
      // Sum the partial weight gradients, each thread over its own 16-aligned slice.
      const std::size_t rb = std::min(wsize, split(wsize / 16, t, nt) * 16);
      const std::size_t re = t + 1 == nt ? wsize : std::min(wsize, split(wsize / 16, t + 1, nt) * 16);
      for (int p = 1; p < nt; ++p) {
        const S* __restrict src = partials + std::size_t(p - 1) * wstride;
        S* __restrict dst = dweight;
        for (std::size_t i = rb; i < re; ++i) dst[i] += src[i];
      }
    }
  }
}

// ------------------------------------------------------------------------- BatchNorm2d

namespace {

// Per-channel sums over the pixels [0, M) of f(pixel, acc) into out[C] (double). Each
// thread sums blocks of 256 pixels in S (vectorized), then adds the block into double, so
// float sums over 10^5 pixels keep full float precision.
template <class S, class F>
void channel_sums(int C, std::size_t M, std::vector<double>& partial, double* out, F&& f) {
  const int T = threads_for(M * std::size_t(C));
  if (partial.size() < std::size_t(T) * C) partial.resize(std::size_t(T) * C);
  std::fill_n(partial.data(), std::size_t(T) * C, 0.0);
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    thread_local std::vector<S> acc;
    if (acc.size() < std::size_t(C)) acc.resize(std::size_t(C));
    double* part = partial.data() + std::size_t(t) * C;
    const std::size_t b = split(M, t, nt);
    const std::size_t e = split(M, t + 1, nt);
    for (std::size_t i0 = b; i0 < e; i0 += 256) {
      const std::size_t i1 = std::min(e, i0 + 256);
      std::fill_n(acc.data(), C, S(0));
      for (std::size_t i = i0; i < i1; ++i) f(i, acc.data());
      for (int c = 0; c < C; ++c) part[c] += double(acc[std::size_t(c)]);
    }
  }
  for (int c = 0; c < C; ++c) {
    double s = 0;
    for (int t = 0; t < T; ++t) s += partial[std::size_t(t) * C + c];
    out[c] = s;
  }
}

// y = x*scale + shift (+ residual), then ReLU, per channel.
template <class S>
void bn_apply(int C, std::size_t M, const S* x, const S* scale, const S* shift, const S* residual, bool relu, S* y) {
  const int T = threads_for(M * std::size_t(C));
#pragma omp parallel for num_threads(T) schedule(static)
  for (std::size_t i = 0; i < M; ++i) {
    const S* __restrict xi = x + i * C;
    S* yi = y + i * C;  // may alias residual
    if (residual != nullptr) {
      const S* ri = residual + i * C;
      if (relu)
        for (int c = 0; c < C; ++c) yi[c] = std::max(xi[c] * scale[c] + shift[c] + ri[c], S(0));
      else
        for (int c = 0; c < C; ++c) yi[c] = xi[c] * scale[c] + shift[c] + ri[c];
    } else if (relu) {
      for (int c = 0; c < C; ++c) yi[c] = std::max(xi[c] * scale[c] + shift[c], S(0));
    } else {
      for (int c = 0; c < C; ++c) yi[c] = xi[c] * scale[c] + shift[c];
    }
  }
}

}  // namespace

template <class S>
BatchNorm2d<S>::BatchNorm2d(int channels, double momentum, double eps)
    : c_(channels),
      momentum_(momentum),
      eps_(eps),
      mean_(std::size_t(std::max(channels, 0))),
      invstd_(std::size_t(std::max(channels, 0))),
      coef_(3 * std::size_t(std::max(channels, 0))),
      sums_(2 * std::size_t(std::max(channels, 0))) {
  if (channels < 1) throw std::invalid_argument("BatchNorm2d: channels must be positive");
}

template <class S>
void BatchNorm2d<S>::forward(const BatchNormParams<S>& p, const S* x, std::size_t pixels, S* y, bool train,
                             const S* residual, bool relu) {
  const int C = c_;
  S* scale = coef_.data();
  S* shift = coef_.data() + C;
  if (train) {
    if (pixels < 2)
      throw std::invalid_argument("BatchNorm2d: training needs more than one value per channel (got " +
                                  std::to_string(pixels) + ")");
    double* sum = sums_.data();
    double* mean = sums_.data() + C;
    channel_sums<S>(C, pixels, partial_, sum, [x, C](std::size_t i, S* acc) {
      const S* __restrict xi = x + i * C;
      for (int c = 0; c < C; ++c) acc[c] += xi[c];
    });
    const double M = double(pixels);
    for (int c = 0; c < C; ++c) mean[std::size_t(c)] = sum[std::size_t(c)] / M;
    // Two passes (mean, then squared deviations), as PyTorch's CPU kernel: no cancellation.
    for (int c = 0; c < C; ++c) mean_[std::size_t(c)] = S(mean[std::size_t(c)]);
    const S* mp = mean_.data();
    channel_sums<S>(C, pixels, partial_, sum, [x, C, mp](std::size_t i, S* acc) {
      const S* __restrict xi = x + i * C;
      for (int c = 0; c < C; ++c) {
        const S d = xi[c] - mp[c];
        acc[c] += d * d;
      }
    });
    for (int c = 0; c < C; ++c) {
      const auto u = std::size_t(c);
      const double v = sum[u] / M;
      const double inv = 1.0 / std::sqrt(v + eps_);
      invstd_[u] = S(inv);
      scale[u] = S(double(p.weight[u]) * inv);
      shift[u] = S(double(p.bias[u]) - mean[u] * double(p.weight[u]) * inv);
      if (p.running_mean != nullptr) {
        p.running_mean[u] = S((1.0 - momentum_) * double(p.running_mean[u]) + momentum_ * mean[u]);
        p.running_var[u] = S((1.0 - momentum_) * double(p.running_var[u]) + momentum_ * v * M / (M - 1.0));
      }
    }
  } else {
    for (int c = 0; c < C; ++c) {
      const auto u = std::size_t(c);
      const double inv = 1.0 / std::sqrt(double(p.running_var[u]) + eps_);
      scale[u] = S(double(p.weight[u]) * inv);
      shift[u] = S(double(p.bias[u]) - double(p.running_mean[u]) * double(p.weight[u]) * inv);
    }
  }
  bn_apply<S>(C, pixels, x, scale, shift, residual, relu, y);
}

namespace {

// Pass 1 of the backward over pixels [b, e): per-channel sums of g and g*(x - mean), with
// g = dy masked by the ReLU, and g stored as the residual's gradient. Compile-time variants
// keep the inner loop free of branches so that it vectorizes.
template <class S, bool Relu, bool WriteResidual>
void bn_grad_sums(int C, std::size_t b, std::size_t e, const S* x, const S* y, const S* dy, const S* mean,
                  S* dresidual, S* acc, double* part) {
  S* __restrict ag = acc;
  S* __restrict agx = acc + C;
  for (std::size_t i0 = b; i0 < e; i0 += 256) {
    const std::size_t i1 = std::min(e, i0 + 256);
    std::fill_n(acc, 2 * std::size_t(C), S(0));
    for (std::size_t i = i0; i < i1; ++i) {
      const S* __restrict xi = x + i * C;
      const S* __restrict yi = y + i * C;
      const S* dyi = dy + i * C;
      S* dri = WriteResidual ? dresidual + i * C : nullptr;
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        S g = dyi[c];
        if constexpr (Relu) g = yi[c] > S(0) ? g : S(0);
        ag[c] += g;
        agx[c] += g * (xi[c] - mean[c]);
        if constexpr (WriteResidual) dri[c] = g;
      }
    }
    for (int c = 0; c < 2 * C; ++c) part[c] += double(acc[c]);
  }
}

// Pass 2: dx = a*g + b*x + d per channel.
template <class S, bool Relu>
void bn_grad_apply(int C, std::size_t M, const S* x, const S* y, const S* dy, const S* ca, const S* cb, const S* cd,
                   S* dx) {
  const int T = threads_for(M * std::size_t(C));
#pragma omp parallel for num_threads(T) schedule(static)
  for (std::size_t i = 0; i < M; ++i) {
    const S* __restrict xi = x + i * C;
    const S* __restrict yi = y + i * C;
    const S* dyi = dy + i * C;  // may alias dx: each element is read before it is written
    S* dxi = dx + i * C;
#pragma omp simd
    for (int c = 0; c < C; ++c) {
      S g = dyi[c];
      if constexpr (Relu) g = yi[c] > S(0) ? g : S(0);
      dxi[c] = ca[c] * g + cb[c] * xi[c] + cd[c];
    }
  }
}

}  // namespace

template <class S>
void BatchNorm2d<S>::backward(const S* weight, const S* x, const S* y, const S* dy, std::size_t pixels, S* dweight,
                              S* dbias, S* dx, S* dresidual, bool relu) {
  const int C = c_;
  const S* mp = mean_.data();
  const std::size_t C2 = 2 * std::size_t(C);
  const int T = threads_for(pixels * std::size_t(C));
  if (partial_.size() < std::size_t(T) * C2) partial_.resize(std::size_t(T) * C2);
  std::fill_n(partial_.data(), std::size_t(T) * C2, 0.0);
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    thread_local std::vector<S> acc;
    if (acc.size() < C2) acc.resize(C2);
    double* part = partial_.data() + std::size_t(t) * C2;
    const std::size_t b = split(pixels, t, nt);
    const std::size_t e = split(pixels, t + 1, nt);
    if (relu && dresidual != nullptr)
      bn_grad_sums<S, true, true>(C, b, e, x, y, dy, mp, dresidual, acc.data(), part);
    else if (relu)
      bn_grad_sums<S, true, false>(C, b, e, x, y, dy, mp, dresidual, acc.data(), part);
    else if (dresidual != nullptr)
      bn_grad_sums<S, false, true>(C, b, e, x, y, dy, mp, dresidual, acc.data(), part);
    else
      bn_grad_sums<S, false, false>(C, b, e, x, y, dy, mp, dresidual, acc.data(), part);
  }
  double* sums = sums_.data();  // [sum g | sum g*(x-mean)]
  for (std::size_t c = 0; c < C2; ++c) {
    double s = 0;
    for (int t = 0; t < T; ++t) s += partial_[std::size_t(t) * C2 + c];
    sums[c] = s;
  }
  // dx = gamma*invstd*(g - mean(g) - xhat*mean(g*xhat)) = a*g + b*x + d per channel.
  S* ca = coef_.data();
  S* cb = coef_.data() + C;
  S* cd = coef_.data() + 2 * C;
  const double M = double(pixels);
  for (int c = 0; c < C; ++c) {
    const auto u = std::size_t(c);
    const double inv = double(invstd_[u]);
    const double dbeta = sums[u];
    const double dgamma = sums[C + u] * inv;
    dweight[u] = S(dgamma);
    dbias[u] = S(dbeta);
    const double a = double(weight[u]) * inv;
    const double b = -a * inv * dgamma / M;
    ca[u] = S(a);
    cb[u] = S(b);
    cd[u] = S(-a * dbeta / M - b * double(mp[u]));
  }
  if (relu)
    bn_grad_apply<S, true>(C, pixels, x, y, dy, ca, cb, cd, dx);
  else
    bn_grad_apply<S, false>(C, pixels, x, y, dy, ca, cb, cd, dx);
}

// ------------------------------------------------------------------- elementwise layers

template <class S>
void relu_forward(const S* x, std::size_t n, S* y) {
#pragma omp parallel for num_threads(threads_for(n)) schedule(static)
  for (std::size_t i = 0; i < n; ++i) y[i] = std::max(x[i], S(0));
}

template <class S>
void relu_backward(const S* y, const S* dy, std::size_t n, S* dx) {
#pragma omp parallel for num_threads(threads_for(n)) schedule(static)
  for (std::size_t i = 0; i < n; ++i) dx[i] = y[i] > S(0) ? dy[i] : S(0);
}

template <class S>
void add_forward(const S* a, const S* b, std::size_t n, S* y) {
#pragma omp parallel for num_threads(threads_for(n)) schedule(static)
  for (std::size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

template <class S>
void add_backward(const S* dy, std::size_t n, S* da, S* db, bool accumulate) {
#pragma omp parallel for num_threads(threads_for(n)) schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    const S g = dy[i];
    if (accumulate) {
      if (da != nullptr) da[i] += g;
      if (db != nullptr) db[i] += g;
    } else {
      if (da != nullptr) da[i] = g;
      if (db != nullptr) db[i] = g;
    }
  }
}

template <class S>
void global_avg_pool_forward(const S* x, Shape in, S* y) {
  const std::size_t P = std::size_t(in.h) * in.w;
  const int C = in.c;
  const S inv = S(1) / S(P);
#pragma omp parallel for num_threads(std::min(in.n, threads_for(in.size()))) schedule(static)
  for (int n = 0; n < in.n; ++n) {
    S* __restrict yn = y + std::size_t(n) * C;
    std::fill_n(yn, C, S(0));
    const S* xn = x + std::size_t(n) * P * C;
    for (std::size_t p = 0; p < P; ++p)
      for (int c = 0; c < C; ++c) yn[c] += xn[p * C + c];
    for (int c = 0; c < C; ++c) yn[c] *= inv;
  }
}

template <class S>
void global_avg_pool_backward(const S* dy, Shape in, S* dx) {
  const std::size_t P = std::size_t(in.h) * in.w;
  const int C = in.c;
  const S inv = S(1) / S(P);
#pragma omp parallel for num_threads(std::min(in.n, threads_for(in.size()))) schedule(static)
  for (int n = 0; n < in.n; ++n) {
    const S* dyn = dy + std::size_t(n) * C;
    S* __restrict dxn = dx + std::size_t(n) * P * C;
    for (std::size_t p = 0; p < P; ++p)
      for (int c = 0; c < C; ++c) dxn[p * C + c] = dyn[c] * inv;
  }
}

template <class S>
Shape MaxPool2d<S>::output_shape(Shape in) const noexcept {
  return {in.n, (in.h + 2 * pad_ - k_) / stride_ + 1, (in.w + 2 * pad_ - k_) / stride_ + 1, in.c};
}

template <class S>
void MaxPool2d<S>::forward(const S* x, Shape in, S* y, std::int32_t* argmax) const {
  const Shape out = output_shape(in);
  const std::size_t C = std::size_t(in.c);
#pragma omp parallel for num_threads(std::min(in.n, threads_for(in.size()))) schedule(static)
  for (int n = 0; n < in.n; ++n) {
    const S* xn = x + std::size_t(n) * in.h * in.w * C;
    for (int oy = 0; oy < out.h; ++oy) {
      for (int ox = 0; ox < out.w; ++ox) {
        const std::size_t o = ((std::size_t(n) * out.h + oy) * out.w + ox) * C;
        S* __restrict yo = y + o;
        std::int32_t* __restrict ao = argmax + o;
        std::fill_n(yo, C, -std::numeric_limits<S>::infinity());
        std::fill_n(ao, C, std::int32_t(-1));
        for (int ky = 0; ky < k_; ++ky) {
          const int iy = oy * stride_ - pad_ + ky;
          if (iy < 0 || iy >= in.h) continue;
          for (int kx = 0; kx < k_; ++kx) {
            const int ix = ox * stride_ - pad_ + kx;
            if (ix < 0 || ix >= in.w) continue;
            const auto pix = std::int32_t(iy * in.w + ix);
            const S* __restrict xi = xn + std::size_t(pix) * C;
            for (std::size_t c = 0; c < C; ++c) {
              // The first window cell always wins (argmax -1), so NaNs propagate as in PyTorch.
              if (xi[c] > yo[c] || ao[c] < 0 || std::isnan(xi[c])) {
                yo[c] = xi[c];
                ao[c] = pix;
              }
            }
          }
        }
      }
    }
  }
}

template <class S>
void MaxPool2d<S>::backward(const S* dy, Shape in, const std::int32_t* argmax, S* dx) const {
  const Shape out = output_shape(in);
  const std::size_t C = std::size_t(in.c);
  const std::size_t Pin = std::size_t(in.h) * in.w;
  const std::size_t Pout = std::size_t(out.h) * out.w;
#pragma omp parallel for num_threads(std::min(in.n, threads_for(in.size()))) schedule(static)
  for (int n = 0; n < in.n; ++n) {
    S* dxn = dx + std::size_t(n) * Pin * C;
    std::fill_n(dxn, Pin * C, S(0));
    const S* dyn = dy + std::size_t(n) * Pout * C;
    const std::int32_t* an = argmax + std::size_t(n) * Pout * C;
    for (std::size_t p = 0; p < Pout; ++p)
      for (std::size_t c = 0; c < C; ++c) dxn[std::size_t(an[p * C + c]) * C + c] += dyn[p * C + c];
  }
}

// ----------------------------------------------------------------------- linear, loss

template <class S>
void linear_forward(const S* weight, const S* bias, const S* x, int in_features, int out_features, int batch, S* y) {
  const Eigen::Map<const MatR<S>> W(weight, out_features, in_features);
  const Eigen::Map<const MatC<S>> X(x, in_features, batch);
  Eigen::Map<MatC<S>> Y(y, out_features, batch);
  Y.noalias() = W * X;
  Y.colwise() += Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, 1>>(bias, out_features);
}

template <class S>
void linear_backward(const S* weight, const S* x, const S* dy, int in_features, int out_features, int batch,
                     S* dweight, S* dbias, S* dx) {
  const Eigen::Map<const MatR<S>> W(weight, out_features, in_features);
  const Eigen::Map<const MatC<S>> X(x, in_features, batch);
  const Eigen::Map<const MatC<S>> dY(dy, out_features, batch);
  Eigen::Map<MatR<S>>(dweight, out_features, in_features).noalias() = dY * X.transpose();
  Eigen::Map<Eigen::Matrix<S, Eigen::Dynamic, 1>>(dbias, out_features) = dY.rowwise().sum();
  if (dx != nullptr) Eigen::Map<MatC<S>>(dx, in_features, batch).noalias() = W.transpose() * dY;
}

template <class S>
LossResult softmax_cross_entropy(const S* logits, const std::int32_t* labels, int classes, int batch, S* dlogits) {
  LossResult r;
  for (int n = 0; n < batch; ++n) {
    const std::int32_t label = labels[n];
    if (label < 0 || label >= classes)
      throw std::out_of_range("softmax_cross_entropy: label " + std::to_string(label) + " of sample " +
                              std::to_string(n) + " is outside [0, " + std::to_string(classes) + ")");
    const S* z = logits + std::size_t(n) * classes;
    int best = 0;
    for (int k = 1; k < classes; ++k)
      if (z[k] > z[best]) best = k;
    const double zmax = double(z[best]);
    double sum = 0;
    for (int k = 0; k < classes; ++k) sum += std::exp(double(z[k]) - zmax);
    const double log_sum = std::log(sum);
    r.loss += log_sum + zmax - double(z[label]);
    r.correct += best == label ? 1 : 0;
    if (dlogits != nullptr) {
      S* d = dlogits + std::size_t(n) * classes;
      for (int k = 0; k < classes; ++k)
        d[k] = S((std::exp(double(z[k]) - zmax - log_sum) - (k == label ? 1.0 : 0.0)) / batch);
    }
  }
  r.loss /= batch;
  return r;
}

// ----------------------------------------------------------------------- instantiation

#define RESNET18_INSTANTIATE(S)                                                                             \
  template class Buffer<S>;                                                                                 \
  template class Conv2d<S>;                                                                                 \
  template class BatchNorm2d<S>;                                                                            \
  template class MaxPool2d<S>;                                                                              \
  template void relu_forward<S>(const S*, std::size_t, S*);                                                 \
  template void relu_backward<S>(const S*, const S*, std::size_t, S*);                                      \
  template void add_forward<S>(const S*, const S*, std::size_t, S*);                                        \
  template void add_backward<S>(const S*, std::size_t, S*, S*, bool);                                       \
  template void global_avg_pool_forward<S>(const S*, Shape, S*);                                            \
  template void global_avg_pool_backward<S>(const S*, Shape, S*);                                           \
  template void linear_forward<S>(const S*, const S*, const S*, int, int, int, S*);                         \
  template void linear_backward<S>(const S*, const S*, const S*, int, int, int, S*, S*, S*);                \
  template LossResult softmax_cross_entropy<S>(const S*, const std::int32_t*, int, int, S*);

template class Buffer<std::int32_t>;
RESNET18_INSTANTIATE(float)
RESNET18_INSTANTIATE(double)

}  // namespace resnet18
