// Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019), with AMSGrad, as torch.optim.Adam/AdamW.
//
//   g <- g + lambda theta                 (Adam)   |  theta <- theta (1 - lr lambda)   (AdamW)
//   m <- beta1 m + (1 - beta1) g
//   v <- beta2 v + (1 - beta2) g^2
//   vh <- max(vh, v) (amsgrad) or v
//   theta <- theta - lr / (1 - beta1^t) * m / (sqrt(vh) / sqrt(1 - beta2^t) + eps)
#pragma once

#include <array>
#include <cmath>
#include <string>

#include "nestla/backend/host.hpp"
#include "nestla/detail/math.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  bool amsgrad = false;
};

// AdamW's options: Adam's, with PyTorch's default decoupled weight decay.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
};

namespace detail {

template <class O>
const O& validate_adam(const O& o, const char* who) {
  check_option(o.lr >= 0 && std::isfinite(o.lr), who, "lr", o.lr, "must be finite and >= 0");
  check_option(o.beta1 >= 0 && o.beta1 < 1, who, "beta1", o.beta1, "must be in [0, 1)");
  check_option(o.beta2 >= 0 && o.beta2 < 1, who, "beta2", o.beta2, "must be in [0, 1)");
  check_option(o.eps >= 0 && std::isfinite(o.eps), who, "eps", o.eps, "must be finite and >= 0");
  check_option(o.weight_decay >= 0 && std::isfinite(o.weight_decay), who, "weight_decay", o.weight_decay,
               "must be finite and >= 0");
  return o;
}

template <class T, bool Decoupled, bool Amsgrad>
struct adam_update {
  static constexpr std::size_t states = Amsgrad ? 3 : 2;
  T beta1, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bc2_sqrt, eps, weight_decay, decay;

  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    if constexpr (Decoupled) p = p * V(decay);
    else if (weight_decay != T(0)) g = g + V(weight_decay) * p;
    V& m = s[0];
    V& v = s[1];
    m = m * V(beta1) + V(one_minus_beta1) * g;
    v = v * V(beta2) + V(one_minus_beta2) * g * g;
    V vh = v;
    if constexpr (Amsgrad) {
      s[2] = op_max(s[2], v);
      vh = s[2];
    }
    const V denom = op_sqrt(vh) / V(bc2_sqrt) + V(eps);
    p = p + (V(neg_step_size) * m) / denom;
  }
};

}  // namespace detail

// Adam (Decoupled = false) and AdamW (Decoupled = true): one class, the weight
// decay style is the policy.
template <class T, bool Decoupled, class Backend>
class AdamFamily : public BaseOptimizer<AdamFamily<T, Decoupled, Backend>, T, Backend> {
  using Base = BaseOptimizer<AdamFamily<T, Decoupled, Backend>, T, Backend>;
  using buffer = typename Backend::template buffer<T>;

 public:
  using options_type = std::conditional_t<Decoupled, AdamWOptions, AdamOptions>;

  explicit AdamFamily(options_type options = {}) : opts_(detail::validate_adam(options, name())) {}

  static std::string type_name() { return name(); }
  const options_type& options() const noexcept { return opts_; }
  void set_options(const options_type& o) {
    detail::validate_adam(o, name());
    if (o.amsgrad && this->initialized() && vmax_.empty()) vmax_ = buffer(this->layout().total);
    opts_ = o;
  }
  void set_lr(double lr) {
    auto o = opts_;
    o.lr = lr;
    set_options(o);
  }
  const buffer& exp_avg() const noexcept { return m_; }
  const buffer& exp_avg_sq() const noexcept { return v_; }
  const buffer& max_exp_avg_sq() const noexcept { return vmax_; }
  bool has_first_moment() const noexcept { return true; }
  // The first moment's flat buffer for passes without the update (distributed steps).
  T* first_moment_data() noexcept { return m_.data(); }

  // --- protocol (see BaseOptimizer) -----------------------------------------
  void allocate_own(const Layout& l) {
    buffer m(l.total), v(l.total), vmax;
    if (opts_.amsgrad) vmax = buffer(l.total);
    m_ = std::move(m);
    v_ = std::move(v);
    vmax_ = std::move(vmax);
  }
  void execute(const StepPlan<T>& plan) {
    if (opts_.amsgrad) run<true>(plan);
    else run<false>(plan);
  }
  void write_own(detail::checkpoint_writer& w) const {
    w.put<double>(opts_.lr);
    w.put<double>(opts_.beta1);
    w.put<double>(opts_.beta2);
    w.put<double>(opts_.eps);
    w.put<double>(opts_.weight_decay);
    w.put<std::uint8_t>(opts_.amsgrad);
    if (!this->initialized()) return;
    this->write_buffer(w, m_);
    this->write_buffer(w, v_);
    w.put<std::uint8_t>(!vmax_.empty());
    if (!vmax_.empty()) this->write_buffer(w, vmax_);
  }
  void read_own(detail::checkpoint_reader& r) {
    options_type o;
    o.lr = r.get<double>("lr");
    o.beta1 = r.get<double>("beta1");
    o.beta2 = r.get<double>("beta2");
    o.eps = r.get<double>("eps");
    o.weight_decay = r.get<double>("weight_decay");
    o.amsgrad = r.get<std::uint8_t>("amsgrad") != 0;
    try {
      detail::validate_adam(o, name());
    } catch (const invalid_option& e) {
      r.error(e.what());
    }
    opts_ = o;
    m_ = {};
    v_ = {};
    vmax_ = {};
    if (!this->initialized()) return;
    m_ = this->read_buffer(r, "exp_avg");
    v_ = this->read_buffer(r, "exp_avg_sq");
    if (r.get<std::uint8_t>("has max_exp_avg_sq")) vmax_ = this->read_buffer(r, "max_exp_avg_sq");
    else if (opts_.amsgrad) r.error("amsgrad is on but max_exp_avg_sq is missing");
  }

 private:
  static constexpr const char* name() { return Decoupled ? "AdamW" : "Adam"; }

  template <bool Amsgrad>
  void run(const StepPlan<T>& plan) {
    const double t = static_cast<double>(this->t_ + 1);
    const double bc1 = 1 - std::pow(opts_.beta1, t);
    const double bc2_sqrt = std::sqrt(1 - std::pow(opts_.beta2, t));
    auto make = [&](std::size_t i) {
      const double lr = this->lr_of(i), wd = this->weight_decay_of(i);
      return detail::adam_update<T, Decoupled, Amsgrad>{T(opts_.beta1),     T(1 - opts_.beta1), T(opts_.beta2),
                                                        T(1 - opts_.beta2), T(-(lr / bc1)),     T(bc2_sqrt),
                                                        T(opts_.eps),       T(wd),              T(1 - lr * wd)};
    };
    constexpr std::size_t S = Amsgrad ? 3 : 2;
    std::array<T*, S> state;
    state[0] = m_.data();
    state[1] = v_.data();
    if constexpr (Amsgrad) state[2] = vmax_.data();
    this->template fused_step<S>(state, 0, plan, make);
  }

  options_type opts_;
  buffer m_, v_, vmax_;
};

template <class T = float, class Backend = host>
using Adam = AdamFamily<T, false, Backend>;
template <class T = float, class Backend = host>
using AdamW = AdamFamily<T, true, Backend>;

}  // namespace nestla
