// SGD with momentum, dampening, weight decay and Nesterov momentum, as torch.optim.SGD.
//
//   g <- g + lambda theta
//   if mu != 0:  b <- g on the first step, else b <- mu b + (1 - tau) g
//                g <- g + mu b (nesterov) or g <- b
//   theta <- theta - lr g
#pragma once

#include <array>
#include <cmath>
#include <string>

#include "nestla/backend/host.hpp"
#include "nestla/optimizer.hpp"

namespace nestla {

struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
};

namespace detail {

inline const SGDOptions& validate(const SGDOptions& o) {
  check_option(o.lr >= 0 && std::isfinite(o.lr), "SGD", "lr", o.lr, "must be finite and >= 0");
  check_option(o.momentum >= 0 && std::isfinite(o.momentum), "SGD", "momentum", o.momentum, "must be finite and >= 0");
  check_option(std::isfinite(o.dampening), "SGD", "dampening", o.dampening, "must be finite");
  check_option(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "SGD", "weight_decay", o.weight_decay,
               "must be finite and >= 0");
  if (o.nesterov) {
    check_option(o.momentum > 0, "SGD", "momentum", o.momentum, "nesterov needs momentum > 0");
    check_option(o.dampening == 0, "SGD", "dampening", o.dampening, "nesterov needs dampening = 0");
  }
  return o;
}

// Mode: 0 no momentum, 1 first momentum step (b <- g), 2 momentum step.
template <class T, int Mode, bool Nesterov>
struct sgd_update {
  static constexpr std::size_t states = Mode == 0 ? 0 : 1;
  T neg_lr, wd, mu, one_minus_tau;

  template <class V>
  NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
    if (wd != T(0)) g = g + V(wd) * p;
    if constexpr (Mode != 0) {
      V& b = s[0];
      if constexpr (Mode == 1) b = g;
      else b = b * V(mu) + V(one_minus_tau) * g;
      if constexpr (Nesterov) g = g + V(mu) * b;
      else g = b;
    }
    p = p + V(neg_lr) * g;
  }
};

}  // namespace detail

template <class T = float, class Backend = host>
class SGD : public BaseOptimizer<SGD<T, Backend>, T, Backend> {

 public:
  using options_type = SGDOptions;

  explicit SGD(SGDOptions options = {}) : opts_(detail::validate(options)) {}

  static std::string type_name() { return "SGD"; }
  const SGDOptions& options() const noexcept { return opts_; }
  void set_options(const SGDOptions& o) {
    detail::validate(o);
    if (o.momentum != 0 && this->initialized() && buf_.empty()) buf_ = typename Backend::template buffer<T>(this->layout().total);
    opts_ = o;
  }
  void set_lr(double lr) {
    auto o = opts_;
    o.lr = lr;
    set_options(o);
  }
  // The momentum buffer b (empty until momentum is used).
  const typename Backend::template buffer<T>& momentum_buffer() const noexcept { return buf_; }
  bool has_first_moment() const noexcept { return opts_.momentum != 0; }
  // The first moment's flat buffer for passes without the update (distributed steps); null: none.
  T* first_moment_data() noexcept { return opts_.momentum != 0 ? buf_.data() : nullptr; }

  // --- protocol (see BaseOptimizer) -----------------------------------------
  void allocate_own(const Layout& l) {
    buf_ = opts_.momentum != 0 ? typename Backend::template buffer<T>(l.total) : typename Backend::template buffer<T>();
  }
  void execute(const StepPlan<T>& plan) {
    if (opts_.momentum == 0) return run<0, false>(plan);
    const bool first = !started_;
    if (opts_.nesterov) first ? run<1, true>(plan) : run<2, true>(plan);
    else first ? run<1, false>(plan) : run<2, false>(plan);
    started_ = true;
  }
  void write_own(detail::checkpoint_writer& w) const {
    w.put<double>(opts_.lr);
    w.put<double>(opts_.momentum);
    w.put<double>(opts_.dampening);
    w.put<double>(opts_.weight_decay);
    w.put<std::uint8_t>(opts_.nesterov);
    w.put<std::uint8_t>(started_);
    w.put<std::uint8_t>(!buf_.empty());
    if (!buf_.empty()) this->write_buffer(w, buf_);
  }
  void read_own(detail::checkpoint_reader& r) {
    SGDOptions o;
    o.lr = r.get<double>("SGD lr");
    o.momentum = r.get<double>("SGD momentum");
    o.dampening = r.get<double>("SGD dampening");
    o.weight_decay = r.get<double>("SGD weight_decay");
    o.nesterov = r.get<std::uint8_t>("SGD nesterov") != 0;
    try {
      detail::validate(o);
    } catch (const invalid_option& e) {
      r.error(e.what());
    }
    opts_ = o;
    started_ = r.get<std::uint8_t>("SGD momentum started") != 0;
    if (r.get<std::uint8_t>("SGD has buffer")) {
      if (!this->initialized()) r.error("momentum buffer present in a checkpoint taken before the first step");
      buf_ = this->read_buffer(r, "SGD momentum buffer");
    } else {
      buf_ = {};
      if (this->initialized() && opts_.momentum != 0) r.error("SGD momentum buffer missing");
    }
  }

 private:
  template <int Mode, bool Nesterov>
  void run(const StepPlan<T>& plan) {
    auto make = [&](std::size_t i) {
      return detail::sgd_update<T, Mode, Nesterov>{T(-this->lr_of(i)), T(this->weight_decay_of(i)), T(opts_.momentum),
                                                   T(1 - opts_.dampening)};
    };
    constexpr std::size_t S = Mode == 0 ? 0 : 1;
    std::array<T*, S> state{};
    if constexpr (S == 1) state[0] = buf_.data();
    this->template fused_step<S>(state, S == 1 ? 0 : -1, plan, make);
  }

  SGDOptions opts_;
  typename Backend::template buffer<T> buf_;
  bool started_ = false;  // the momentum buffer has been created (torch: state has 'momentum_buffer')
};

}  // namespace nestla
