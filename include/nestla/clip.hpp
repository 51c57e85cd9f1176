// Gradient clipping as torch.nn.utils.clip_grad_norm_ and clip_grad_value_: the settings a base optimizer takes, and free functions over a gradient set.
//
// As an option of a base optimizer (the gradients are only read):
//   opt.base().set_clip_grad_norm({.max_norm = 1.0});                  // norm_type 2
//   opt.base().set_clip_grad_norm({.max_norm = 1.0, .norm_type = INFINITY, .error_if_nonfinite = true});
//   opt.base().set_clip_grad_value(0.5);
// As free functions, in place like torch (host memory):
//   float n = nestla::clip_grad_norm(grads, 1.0);   // returns the total norm
//   nestla::clip_grad_value(grads, 0.5);
//
// The total norm is the p-norm of the per-tensor p-norms, the coefficient
// min(max_norm / (total + 1e-6), 1) computed in the gradients' scalar type as
// torch does, and every gradient is multiplied by it (a coefficient of exactly
// 1 changes no bit). The norm is summed in one fixed order
// (detail/grad_norm.hpp), so it has the same bits for any number of threads,
// on the CUDA backend and through these functions.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "nestla/backend/host.hpp"
#include "nestla/detail/grad_norm.hpp"
#include "nestla/detail/simd.hpp"
#include "nestla/error.hpp"
#include "nestla/parameter_set.hpp"
#include "nestla/rule.hpp"
#include "nestla/step_plan.hpp"

namespace nestla {

// clip_grad_norm_'s arguments.
struct ClipGradNorm {
  double max_norm = 0;             // > 0, finite (no default: 0 is refused)
  double norm_type = 2;            // p > 0, or INFINITY
  bool error_if_nonfinite = false; // throw nonfinite_norm_error instead of scaling by a NaN or infinite norm
};

// A base optimizer's clipping: none, by norm, or by value (one at a time).
struct GradClip {
  enum class Mode : std::uint8_t { none, norm, value };
  Mode mode = Mode::none;
  ClipGradNorm norm{};    // mode == norm
  double clip_value = 0;  // mode == value: gradients clamped to [-clip_value, clip_value]
};

namespace detail {

inline void validate_clip_norm(const ClipGradNorm& c, const char* who) {
  check_option(c.max_norm > 0 && std::isfinite(c.max_norm), who, "max_norm", c.max_norm, "must be finite and > 0");
  check_option(c.norm_type > 0 && (std::isfinite(c.norm_type) || c.norm_type == INFINITY), who, "norm_type",
               c.norm_type, "must be > 0, or INFINITY");
}
inline void validate_clip_value(double v, const char* who) {
  check_option(v > 0 && std::isfinite(v), who, "clip_value", v, "must be finite and > 0");
}

[[noreturn]] inline void fail_nonfinite_norm(const char* who, double norm_type, double norm) {
  fail<nonfinite_norm_error>("nestla: ", who, ": the total norm of order ", norm_type, " of the gradients is ", norm,
                             ", so they cannot be clipped; nothing was changed (with error_if_nonfinite = false the "
                             "gradients are scaled by it anyway, as in torch)");
}

// The gradient set's tensors as the host backend's views, laid out as an
// optimizer's state would be (so the norm's pieces, and bits, are the same).
template <class T>
struct grad_views {
  std::vector<TensorRef<T>> refs;
  std::vector<T*> writable;  // null where the set's tensor is read-only
};

template <class G>
void check_writable(G& grads) {
  for_each_tensor(grads, [](auto& tensor) {
    using Tr = tensor_traits<std::remove_cvref_t<decltype(tensor)>>;
    static_assert(!std::is_const_v<std::remove_pointer_t<decltype(Tr::data(tensor))>>,
                  "nestla: clipping in place needs writable gradients (a const container or std::span<const T> was "
                  "given)");
  });
}
template <class G>
auto make_grad_views(G& grads) {
  using T = set_scalar_t<G>;
  grad_views<T> v;
  std::vector<std::size_t> sizes;
  for_each_tensor(grads, [&](auto& tensor) {
    using Tr = tensor_traits<std::remove_cvref_t<decltype(tensor)>>;
    auto* data = Tr::data(tensor);
    sizes.push_back(static_cast<std::size_t>(Tr::size(tensor)));
    v.refs.push_back(TensorRef<T>{nullptr, data, sizes.back(), 0});
    if constexpr (std::is_const_v<std::remove_pointer_t<decltype(data)>>) v.writable.push_back(nullptr);
    else v.writable.push_back(data);
  });
  const Layout l = Layout::of<T>(sizes);
  for (std::size_t i = 0; i < v.refs.size(); ++i) v.refs[i].offset = l.offsets[i];
  return v;
}

template <class G>
constexpr void check_grad_set() {
  static_assert(ParameterSet<G>,
                "nestla: not a gradient set: expected a tensor, or a range or tuple of tensors (see ParameterSet)");
}

// g <- f(g) over n elements, SIMD body and scalar tail alike.
template <class T, class F>
void map_in_place(T* g, std::size_t n, F f) {
  std::size_t i = 0;
#if !defined(__CUDA_ARCH__)  // nvcc's device pass: host SIMD vectors have no device form
  using B = simd<T>;
  for (; i + B::size <= n; i += B::size) f(B::load_unaligned(g + i)).store_unaligned(g + i);
#endif
  for (; i < n; ++i) g[i] = f(g[i]);
}

}  // namespace detail

// torch.nn.utils.get_total_norm: the norm_type-norm of the gradients (the
// norm of the per-tensor norms), in their scalar type.
template <class G>
set_scalar_t<G> grad_norm(const G& grads, double norm_type = 2) {
  detail::check_grad_set<G>();
  using T = set_scalar_t<G>;
  detail::validate_clip_norm({.max_norm = 1, .norm_type = norm_type}, "grad_norm");
  auto v = detail::make_grad_views(grads);
  host::context ctx;
  return host::grad_norm<T>(ctx, v.refs, detail::norm_spec::of(norm_type), T(1)).norm;
}

// torch.nn.utils.clip_grads_with_norm_: multiplies every gradient by
// min(max_norm / (total_norm + 1e-6), 1).
template <class G>
void clip_grads_with_norm(G&& grads, double max_norm, set_scalar_t<G> total_norm) {
  detail::check_grad_set<G>();
  using T = set_scalar_t<G>;
  detail::validate_clip_norm({.max_norm = max_norm}, "clip_grads_with_norm");
  const T c = detail::clip_coefficient<detail::plain_arith>(total_norm, T(max_norm));
  if (c == T(1)) return;  // g * 1 == g for every g
  detail::check_writable(grads);
  for_each_tensor(grads, [&](auto& tensor) {
    using Tr = tensor_traits<std::remove_cvref_t<decltype(tensor)>>;
    detail::map_in_place(Tr::data(tensor), static_cast<std::size_t>(Tr::size(tensor)),
                         [c](auto g) { return g * decltype(g)(c); });
  });
}

// torch.nn.utils.clip_grad_norm_: clips the gradients in place to a total
// norm of at most max_norm and returns their total norm before clipping.
// With error_if_nonfinite, a NaN or infinite norm throws
// nonfinite_norm_error and leaves the gradients as they were.
template <class G>
set_scalar_t<G> clip_grad_norm(G&& grads, double max_norm, double norm_type = 2, bool error_if_nonfinite = false) {
  detail::check_grad_set<G>();
  using T = set_scalar_t<G>;
  detail::validate_clip_norm({max_norm, norm_type, error_if_nonfinite}, "clip_grad_norm");
  detail::check_writable(grads);
  auto v = detail::make_grad_views(grads);
  host::context ctx;
  const auto r = host::grad_norm<T>(ctx, v.refs, detail::norm_spec::of(norm_type), T(max_norm));
  if (error_if_nonfinite && !std::isfinite(r.norm)) detail::fail_nonfinite_norm("clip_grad_norm", norm_type, r.norm);
  if (r.coef != T(1))
    for (std::size_t i = 0; i < v.refs.size(); ++i)
      detail::map_in_place(v.writable[i], v.refs[i].size, [c = r.coef](auto g) { return g * decltype(g)(c); });
  return r.norm;
}

// torch.nn.utils.clip_grad_value_: clamps every gradient to
// [-clip_value, clip_value] in place (a NaN stays NaN).
template <class G>
void clip_grad_value(G&& grads, double clip_value) {
  detail::check_grad_set<G>();
  using T = set_scalar_t<G>;
  detail::validate_clip_value(clip_value, "clip_grad_value");
  detail::check_writable(grads);
  const T lo(-clip_value), hi(clip_value);
  for_each_tensor(grads, [&](auto& tensor) {
    using Tr = tensor_traits<std::remove_cvref_t<decltype(tensor)>>;
    detail::map_in_place(Tr::data(tensor), static_cast<std::size_t>(Tr::size(tensor)), [lo, hi](auto g) {
      using V = decltype(g);
      g = ops::select(g < V(lo), V(lo), g);
      return ops::select(g > V(hi), V(hi), g);
    });
  });
}

}  // namespace nestla
