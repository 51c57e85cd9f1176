// Adagrad, RMSprop, Adadelta and Rprop: closed forms, float against double, Lookahead against a reference loop, checkpoints, groups, options.
#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <array>
#include <cmath>
#include <limits>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "reference.hpp"

using doctest::Approx;
using nestla::Momentum;

namespace {

Approx exact(double v) { return Approx(v).epsilon(1e-15); }

template <class O>
std::string bytes(const O& o) {
  std::ostringstream os;
  o.save(os);
  return os.str();
}

// Gradients that do not depend on the parameters: float and double runs see
// the same signs, which Rprop's step sizes depend on discontinuously.
double grad_at(int step, std::size_t i) { return std::sin(0.7 * double(i) + 1.3 * step) * (1.0 + 0.1 * double(i % 5)); }

}  // namespace

// --- closed forms ----------------------------------------------------------

TEST_CASE("Adagrad with a constant gradient: theta_t = theta_0 - sum_k clr_k sign(g) / sqrt(k + s0/g^2)") {
  const double lr = 0.1, decay = 0.25, s0 = 0.5, g = -0.8;
  std::vector<double> w{1.0};
  nestla::Adagrad<double> opt({.lr = lr, .lr_decay = decay, .initial_accumulator_value = s0, .eps = 0});
  double x = 1.0;
  for (int t = 1; t <= 10; ++t) {
    opt.step(w, std::vector<double>{g});
    x -= lr / (1 + (t - 1) * decay) * g / std::sqrt(s0 + t * g * g);
    CHECK(w[0] == exact(x));
  }
  CHECK(opt.state("sum").data()[0] == exact(s0 + 10 * g * g));
}

TEST_CASE("Adagrad: weight decay joins the gradient before the sum; maximize ascends") {
  std::vector<double> w{2.0}, u{2.0};
  nestla::Adagrad<double> opt({.lr = 0.5, .weight_decay = 0.1, .eps = 1e-3});
  opt.step(w, std::vector<double>{0.3});
  const double g = 0.3 + 0.1 * 2.0;
  CHECK(w[0] == exact(2.0 - 0.5 * g / (std::abs(g) + 1e-3)));
  nestla::Adagrad<double> up({.lr = 0.5, .weight_decay = 0.1, .eps = 1e-3, .maximize = true});
  up.step(u, std::vector<double>{-0.3});  // ascending on -g is descending on g, with decay towards zero
  CHECK(u[0] == exact(2.0 - 0.5 * (0.3 + 0.1 * 2.0) / (0.5 + 1e-3)));
}

TEST_CASE("RMSprop first steps: plain, centered, with momentum") {
  const double lr = 0.01, a = 0.9, eps = 1e-8;
  {
    std::vector<double> w{1.0};
    nestla::RMSprop<double> opt({.lr = lr, .alpha = a, .eps = eps});
    opt.step(w, std::vector<double>{2.0});
    CHECK(w[0] == exact(1.0 - lr * 2.0 / (std::sqrt((1 - a) * 4.0) + eps)));
  }
  {
    // gbar = (1 - a) g, v - gbar^2 = a (1 - a) g^2.
    std::vector<double> w{1.0};
    nestla::RMSprop<double> opt({.lr = lr, .alpha = a, .eps = eps, .centered = true});
    opt.step(w, std::vector<double>{2.0});
    CHECK(w[0] == exact(1.0 - lr * 2.0 / (std::sqrt(a * (1 - a) * 4.0) + eps)));
    CHECK(opt.state("grad_avg").data()[0] == exact((1 - a) * 2.0));
  }
  {
    std::vector<double> w{1.0};
    nestla::RMSprop<double> opt({.lr = lr, .alpha = a, .eps = eps, .momentum = 0.5});
    opt.step(w, std::vector<double>{2.0});
    double v = (1 - a) * 4.0, b = 2.0 / (std::sqrt(v) + eps), x = 1.0 - lr * b;
    CHECK(w[0] == exact(x));
    opt.step(w, std::vector<double>{-1.0});
    v = a * v + (1 - a) * 1.0;
    b = 0.5 * b - 1.0 / (std::sqrt(v) + eps);
    x -= lr * b;
    CHECK(w[0] == exact(x));
    CHECK(opt.state("momentum_buffer").data()[0] == exact(b));
  }
}

TEST_CASE("RMSprop: momentum switched on later starts its buffer at zero, and only then is there a first moment") {
  std::vector<double> w{1.0};
  nestla::RMSprop<double> opt({.lr = 0.1, .alpha = 0.5, .eps = 0});
  CHECK(!opt.has_first_moment());
  opt.step(w, std::vector<double>{1.0});
  CHECK(opt.state("momentum_buffer").empty());
  opt.set_options({.lr = 0.1, .alpha = 0.5, .eps = 0, .momentum = 0.9});
  CHECK(opt.has_first_moment());
  const double x = w[0];
  opt.step(w, std::vector<double>{1.0});  // v = 0.5 * 0.5 + 0.5 = 0.75, b = 0.9 * 0 + 1 / sqrt(0.75)
  CHECK(w[0] == exact(x - 0.1 / std::sqrt(0.75)));
}

TEST_CASE("Adadelta first step: delta = sqrt(eps) / sqrt((1 - rho) g^2 + eps) g") {
  const double rho = 0.9, eps = 1e-6, lr = 1.0, g = 0.5;
  std::vector<double> w{1.0};
  nestla::Adadelta<double> opt({.lr = lr, .rho = rho, .eps = eps});
  opt.step(w, std::vector<double>{g});
  const double v = (1 - rho) * g * g, delta = std::sqrt(eps) / std::sqrt(v + eps) * g;
  CHECK(w[0] == exact(1.0 - lr * delta));
  CHECK(opt.state("acc_delta").data()[0] == exact((1 - rho) * delta * delta));
}

TEST_CASE("Rprop: step sizes grow by etaplus while the sign holds, shrink and skip a step when it flips") {
  const double lr = 0.1, up = 1.2, down = 0.5;
  std::vector<double> w{0.0};
  nestla::Rprop<double> opt({.lr = lr, .etaminus = down, .etaplus = up, .step_size_min = 1e-6, .step_size_max = 0.2});
  opt.step(w, std::vector<double>{3.0});  // first step: prev = 0, factor 1
  CHECK(w[0] == -0.1);
  opt.step(w, std::vector<double>{0.5});  // same sign: 0.12
  CHECK(w[0] == exact(-0.22));
  opt.step(w, std::vector<double>{2.0});  // 0.144
  CHECK(w[0] == exact(-0.364));
  opt.step(w, std::vector<double>{-1.0});  // flip: step size 0.072, no move, prev <- 0
  CHECK(w[0] == exact(-0.364));
  CHECK(opt.state("step_size").data()[0] == exact(0.072));
  CHECK(opt.state("prev").data()[0] == 0.0);
  opt.step(w, std::vector<double>{-1.0});  // prev = 0: factor 1, moves up by 0.072
  CHECK(w[0] == exact(-0.292));
  for (int i = 0; i < 10; ++i) opt.step(w, std::vector<double>{-1.0});
  CHECK(opt.state("step_size").data()[0] == 0.2);  // clamped at step_size_max
}

TEST_CASE("Rprop: the step sizes start at the lr of the first step (also per group), later lr changes do nothing") {
  std::vector<std::vector<double>> w{{0.0}, {0.0}};
  const std::vector<std::vector<double>> g{{1.0}, {1.0}};
  nestla::Rprop<double> opt({.lr = 0.1});
  opt.add_param_group({1}, {.lr = 0.01});
  opt.step(w, g);
  CHECK(w[0][0] == -0.1);
  CHECK(w[1][0] == -0.01);
  opt.set_lr(5.0);
  opt.set_param_group(0, {.lr = 7.0});
  opt.step(w, g);
  CHECK(w[0][0] == exact(-0.1 - 0.12));
  CHECK(w[1][0] == exact(-0.01 - 0.012));
  // lr above step_size_max: clamped on the first step already, as torch.
  std::vector<double> u{0.0};
  nestla::Rprop<double> big({.lr = 1.0, .step_size_max = 0.25});
  big.step(u, std::vector<double>{-2.0});
  CHECK(u[0] == 0.25);
}

TEST_CASE("Rprop: a NaN gradient element leaves its parameter and step size alone (torch.sign(NaN) is 0)") {
  std::vector<double> w{1.0, 1.0};
  nestla::Rprop<double> opt({.lr = 0.1});
  opt.step(w, std::vector<double>{1.0, 1.0});
  opt.step(w, std::vector<double>{std::numeric_limits<double>::quiet_NaN(), 1.0});
  CHECK(w[0] == 0.9);
  CHECK(opt.state("step_size").data()[0] == 0.1);
  CHECK(w[1] == exact(0.9 - 0.12));
  opt.step(w, std::vector<double>{1.0, 1.0});  // prev is NaN: factor 1, an ordinary step
  CHECK(w[0] == exact(0.8));
}

// --- maximize, float against double, threads --------------------------------

namespace {

// Runs f(opt_double, opt_float) style checks for each optimizer with all its states in use.
template <class T>
struct all_four {
  nestla::Adagrad<T> adagrad{{.lr = 0.05, .lr_decay = 0.01, .weight_decay = 0.01, .initial_accumulator_value = 0.1}};
  nestla::RMSprop<T> rmsprop{{.lr = 0.01, .alpha = 0.9, .weight_decay = 0.01, .momentum = 0.8, .centered = true}};
  nestla::Adadelta<T> adadelta{{.lr = 0.5, .rho = 0.8, .weight_decay = 0.01}};
  nestla::Rprop<T> rprop{{.lr = 0.02, .etaminus = 0.4, .etaplus = 1.3, .step_size_min = 1e-3, .step_size_max = 0.1}};

  template <class F>
  void each(F&& f) {
    f("Adagrad", adagrad);
    f("RMSprop", rmsprop);
    f("Adadelta", adadelta);
    f("Rprop", rprop);
  }
};

template <class T>
std::vector<T> trajectory(auto& opt, int steps, std::size_t n = 37, double grad_sign = 1.0) {
  std::vector<T> p(n), g(n);
  for (std::size_t i = 0; i < n; ++i) p[i] = T(0.1 * double(i % 7) - 0.3);
  for (int s = 0; s < steps; ++s) {
    for (std::size_t i = 0; i < n; ++i) g[i] = T(grad_sign * grad_at(s, i));
    opt.step(p, g);
  }
  return p;
}

}  // namespace

TEST_CASE("maximize equals minimizing the negated gradient, bit for bit") {
  all_four<float> down, up;
  up.adagrad.set_options([&] { auto o = up.adagrad.options(); o.maximize = true; return o; }());
  up.rmsprop.set_options([&] { auto o = up.rmsprop.options(); o.maximize = true; return o; }());
  up.adadelta.set_options([&] { auto o = up.adadelta.options(); o.maximize = true; return o; }());
  up.rprop.set_options([&] { auto o = up.rprop.options(); o.maximize = true; return o; }());
  CHECK(trajectory<float>(up.adagrad, 20, 37, -1) == trajectory<float>(down.adagrad, 20));
  CHECK(trajectory<float>(up.rmsprop, 20, 37, -1) == trajectory<float>(down.rmsprop, 20));
  CHECK(trajectory<float>(up.adadelta, 20, 37, -1) == trajectory<float>(down.adadelta, 20));
  CHECK(trajectory<float>(up.rprop, 20, 37, -1) == trajectory<float>(down.rprop, 20));
}

TEST_CASE("float and double runs agree to float precision over 40 steps") {
  all_four<double> d;
  all_four<float> f;
  auto check = [](const char* name, const std::vector<double>& a, const std::vector<float>& b) {
    INFO(name);
    REQUIRE(a.size() == b.size());
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i)
      worst = std::max(worst, std::abs(double(b[i]) - a[i]) / std::max(1.0, std::abs(a[i])));
    CHECK(worst < 2e-5);
    CHECK(worst > 0);  // float really ran in float
  };
  check("Adagrad", trajectory<double>(d.adagrad, 40), trajectory<float>(f.adagrad, 40));
  check("RMSprop", trajectory<double>(d.rmsprop, 40), trajectory<float>(f.rmsprop, 40));
  check("Adadelta", trajectory<double>(d.adadelta, 40), trajectory<float>(f.adadelta, 40));
  check("Rprop", trajectory<double>(d.rprop, 40), trajectory<float>(f.rprop, 40));
}

TEST_CASE("two threads give the bits of one") {
  all_four<float> one, two;
  two.each([](const char*, auto& o) { o.set_threads(2); });
  // Above the host backend's parallel threshold.
  CHECK(trajectory<float>(one.adagrad, 5, 300001) == trajectory<float>(two.adagrad, 5, 300001));
  CHECK(trajectory<float>(one.rmsprop, 5, 300001) == trajectory<float>(two.rmsprop, 5, 300001));
  CHECK(trajectory<float>(one.adadelta, 5, 300001) == trajectory<float>(two.adadelta, 5, 300001));
  CHECK(trajectory<float>(one.rprop, 5, 300001) == trajectory<float>(two.rprop, 5, 300001));
}

// --- Lookahead ---------------------------------------------------------------

namespace {

// torch.optim.RMSprop, element by element, with nestla's casts of the
// hyperparameters to T. The momentum buffer is ref's first moment m, the
// square average its v; grad_avg lives outside.
template <class T>
struct rmsprop_ref {
  nestla::RMSpropOptions o;
  std::vector<T>* gbar;
  void operator()(ref::base_state<T>& s, std::vector<T>& p, const std::vector<T>& g) const {
    if (s.m.empty()) s.m.assign(p.size(), T(0)), s.v.assign(p.size(), T(0)), gbar->assign(p.size(), T(0));
    const T w = T(1 - o.alpha), omw = T(1) - w;
    for (std::size_t i = 0; i < p.size(); ++i) {
      T d = o.maximize ? -g[i] : g[i];
      if (o.weight_decay != 0) d = d + T(o.weight_decay) * p[i];
      s.v[i] = s.v[i] * T(o.alpha) + T(1 - o.alpha) * d * d;
      T den;
      if (o.centered) {
        T& b = (*gbar)[i];
        b = std::abs(w) < T(0.5) ? b + w * (d - b) : d - (d - b) * omw;
        den = std::sqrt(s.v[i] - b * b);
      } else {
        den = std::sqrt(s.v[i]);
      }
      den = den + T(o.eps);
      if (o.momentum > 0) {
        s.m[i] = s.m[i] * T(o.momentum) + d / den;
        p[i] = p[i] + T(-o.lr) * s.m[i];
      } else {
        p[i] = p[i] + (T(-o.lr) * d) / den;
      }
    }
    ++s.t;
  }
};

template <int D>
void check_rmsprop_lookahead(const nestla::RMSpropOptions& o, const std::array<nestla::LookaheadOptions, 3>& lv) {
  std::vector<float> gbar;
  ref::nested<float, rmsprop_ref<float>> want{{o, &gbar}, {}, {}};
  for (int d = 0; d < D; ++d) want.levels.push_back({lv[d], {}, {}});
  auto opt = nestla::nested<D>(nestla::RMSprop<float>(o), std::span<const nestla::LookaheadOptions>(lv.data(), D));
  std::vector<float> p(203), q, g;
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = float(0.01 * double(i % 17) - 0.08);
  q = p;
  ref::grad_source src;
  for (int s = 0; s < 40; ++s) {
    src.fill(p, g);
    const bool a = opt.step(p, g);
    const bool b = want.step(q, g);
    REQUIRE(a == b);
  }
  CHECK(p == q);
  CHECK(opt.syncs() > 0);
}

}  // namespace

TEST_CASE("RMSprop with momentum under Lookahead, nested 1 to 3 deep, every policy: the reference loop's bits") {
  using L = nestla::LookaheadOptions;
  for (const nestla::RMSpropOptions& o :
       {nestla::RMSpropOptions{.lr = 0.01, .momentum = 0.9},
        nestla::RMSpropOptions{.lr = 0.01, .momentum = 0.9, .centered = true},
        nestla::RMSpropOptions{.lr = 0.003, .alpha = 0.3, .weight_decay = 0.01, .momentum = 0.5, .centered = true}})
    for (Momentum m : {Momentum::keep, Momentum::reset, Momentum::pullback}) {
      INFO("policy ", nestla::to_string(m), ", centered ", o.centered, ", alpha ", o.alpha);
      const std::array<L, 3> lv{L{.k = 3, .alpha = 0.5, .momentum = m}, L{.k = 2, .alpha = 0.8, .momentum = m},
                                L{.k = 2, .alpha = 0.6, .momentum = Momentum::pullback}};
      check_rmsprop_lookahead<1>(o, lv);
      check_rmsprop_lookahead<2>(o, lv);
      check_rmsprop_lookahead<3>(o, lv);
    }
}

TEST_CASE("first moments: RMSprop's momentum buffer with momentum > 0; Adagrad, Adadelta and Rprop have none") {
  static_assert(nestla::rmsprop_rule::states[nestla::rmsprop_rule::first_moment] == std::string_view("momentum_buffer"));
  static_assert(nestla::adagrad_rule::first_moment == -1 && nestla::adadelta_rule::first_moment == -1 &&
                nestla::rprop_rule::first_moment == -1);
  static_assert(nestla::UpdateRule<nestla::adagrad_rule> && nestla::UpdateRule<nestla::rmsprop_rule> &&
                nestla::UpdateRule<nestla::adadelta_rule> && nestla::UpdateRule<nestla::rprop_rule>);
  CHECK(nestla::RMSprop<float>({.momentum = 0.9}).has_first_moment());
  CHECK(!nestla::RMSprop<float>({.centered = true}).has_first_moment());
  all_four<float> a;
  CHECK(!a.adagrad.has_first_moment());
  CHECK(!a.adadelta.has_first_moment());
  CHECK(!a.rprop.has_first_moment());
}

// --- checkpoints ---------------------------------------------------------------

TEST_CASE("checkpoints mid-run, nested, resume bit for bit; before the first step too (fresh states)") {
  auto run = [](const char* name, auto make) {
    INFO(name);
    for (int at : {0, 1, 7}) {
      INFO("saved after step ", at);
      auto straight = make(), first = make();
      std::vector<std::vector<float>> pa{std::vector<float>(41, 0.5f), std::vector<float>(7, -0.25f)}, pb = pa;
      std::vector<std::vector<float>> g = pa;
      auto fill = [&](int s) {
        for (std::size_t t = 0; t < g.size(); ++t)
          for (std::size_t i = 0; i < g[t].size(); ++i) g[t][i] = float(grad_at(s, i + 50 * t));
      };
      for (int s = 0; s < 20; ++s) fill(s), straight.step(pa, g);
      for (int s = 0; s < at; ++s) fill(s), first.step(pb, g);
      std::stringstream ss;
      first.save(ss);
      auto resumed = make();
      resumed.base().set_lr(0.5);  // the checkpoint's options win
      resumed.load(ss);
      CHECK(bytes(resumed) == bytes(first));
      for (int s = at; s < 20; ++s) fill(s), resumed.step(pb, g);
      CHECK(pa == pb);
      CHECK(bytes(resumed) == bytes(straight));
    }
  };
  auto nest = [](auto base) {
    base.add_param_group({1}, {.lr = 0.003});
    return nestla::nested<2>(std::move(base), {{.k = 3, .alpha = 0.5}, {.k = 2, .alpha = 0.8}});
  };
  run("Adagrad", [&] { return nest(all_four<float>{}.adagrad); });
  run("Adadelta", [&] { return nest(all_four<float>{}.adadelta); });
  run("Rprop", [&] { return nest(all_four<float>{}.rprop); });
  run("RMSprop", [&] {
    auto base = all_four<float>{}.rmsprop;
    base.add_param_group({1}, {.lr = 0.003, .weight_decay = 0.2});
    return nestla::nested<2>(std::move(base), {{.k = 3, .alpha = 0.5, .momentum = Momentum::pullback},
                                               {.k = 2, .alpha = 0.8, .momentum = Momentum::reset}});
  });
}

TEST_CASE("a checkpoint of RMSprop without momentum loads into one that will use it: the buffer starts at zero") {
  nestla::RMSprop<double> a({.lr = 0.1, .alpha = 0.5, .eps = 0});
  std::vector<double> w{1.0};
  a.step(w, std::vector<double>{1.0});
  std::stringstream ss;
  a.save(ss);
  nestla::RMSprop<double> b;
  b.load(ss);
  b.set_options({.lr = 0.1, .alpha = 0.5, .eps = 0, .momentum = 0.9});
  const double x = w[0];
  b.step(w, std::vector<double>{1.0});
  CHECK(w[0] == exact(x - 0.1 / std::sqrt(0.75)));
}

// --- options -------------------------------------------------------------------

namespace {
template <class Opt, class O>
std::string error_of(const O& o) {
  try {
    Opt x(o);
  } catch (const nestla::invalid_option& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_CASE("every option is validated, naming the optimizer, the option and its value") {
  using A = nestla::Adagrad<float>;
  using R = nestla::RMSprop<float>;
  using D = nestla::Adadelta<float>;
  using P = nestla::Rprop<float>;
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  CHECK(error_of<A>(nestla::AdagradOptions{.lr = -1}) == "nestla: Adagrad: lr = -1 is invalid (must be finite and >= 0)");
  CHECK(error_of<A>(nestla::AdagradOptions{.lr_decay = -0.5}) ==
        "nestla: Adagrad: lr_decay = -0.5 is invalid (must be finite and >= 0)");
  CHECK(error_of<A>(nestla::AdagradOptions{.weight_decay = nan}) ==
        "nestla: Adagrad: weight_decay = nan is invalid (must be finite and >= 0)");
  CHECK(error_of<A>(nestla::AdagradOptions{.initial_accumulator_value = -1}) ==
        "nestla: Adagrad: initial_accumulator_value = -1 is invalid (must be finite and >= 0)");
  CHECK(error_of<A>(nestla::AdagradOptions{.eps = inf}) == "nestla: Adagrad: eps = inf is invalid (must be finite and >= 0)");

  CHECK(error_of<R>(nestla::RMSpropOptions{.lr = inf}) == "nestla: RMSprop: lr = inf is invalid (must be finite and >= 0)");
  CHECK(error_of<R>(nestla::RMSpropOptions{.alpha = 1.5}) == "nestla: RMSprop: alpha = 1.5 is invalid (must be in [0, 1])");
  CHECK(error_of<R>(nestla::RMSpropOptions{.eps = -1e-8}) ==
        "nestla: RMSprop: eps = -1e-08 is invalid (must be finite and >= 0)");
  CHECK(error_of<R>(nestla::RMSpropOptions{.weight_decay = -1}) ==
        "nestla: RMSprop: weight_decay = -1 is invalid (must be finite and >= 0)");
  CHECK(error_of<R>(nestla::RMSpropOptions{.momentum = -0.5}) ==
        "nestla: RMSprop: momentum = -0.5 is invalid (must be finite and >= 0)");

  CHECK(error_of<D>(nestla::AdadeltaOptions{.lr = -2}) == "nestla: Adadelta: lr = -2 is invalid (must be finite and >= 0)");
  CHECK(error_of<D>(nestla::AdadeltaOptions{.rho = 1.01}) == "nestla: Adadelta: rho = 1.01 is invalid (must be in [0, 1])");
  CHECK(error_of<D>(nestla::AdadeltaOptions{.eps = nan}) == "nestla: Adadelta: eps = nan is invalid (must be finite and >= 0)");
  CHECK(error_of<D>(nestla::AdadeltaOptions{.weight_decay = inf}) ==
        "nestla: Adadelta: weight_decay = inf is invalid (must be finite and >= 0)");

  CHECK(error_of<P>(nestla::RpropOptions{.lr = -0.01}) == "nestla: Rprop: lr = -0.01 is invalid (must be finite and >= 0)");
  CHECK(error_of<P>(nestla::RpropOptions{.etaminus = 1}) == "nestla: Rprop: etaminus = 1 is invalid (must be in (0, 1))");
  CHECK(error_of<P>(nestla::RpropOptions{.etaminus = 0}) == "nestla: Rprop: etaminus = 0 is invalid (must be in (0, 1))");
  CHECK(error_of<P>(nestla::RpropOptions{.etaplus = 1}) == "nestla: Rprop: etaplus = 1 is invalid (must be finite and > 1)");
  CHECK(error_of<P>(nestla::RpropOptions{.step_size_min = -1}) ==
        "nestla: Rprop: step_size_min = -1 is invalid (must be finite and >= 0)");
  CHECK(error_of<P>(nestla::RpropOptions{.step_size_min = 1, .step_size_max = 0.5}) ==
        "nestla: Rprop: step_size_max = 0.5 is invalid (must be >= step_size_min)");
  CHECK(error_of<P>(nestla::RpropOptions{.step_size_max = nan}) ==
        "nestla: Rprop: step_size_max = nan is invalid (must be >= step_size_min)");
  CHECK(error_of<P>(nestla::RpropOptions{.step_size_max = inf}) == "(no error)");  // no upper bound

  // Rprop has no weight decay: a group cannot set one. A rejected option changes nothing.
  P rprop({.lr = 0.1});
  CHECK_THROWS_WITH_AS(rprop.add_param_group({0}, {.weight_decay = 0.1}),
                       "nestla: Rprop: a parameter group sets weight_decay, which Rprop does not have",
                       nestla::invalid_option);
  CHECK_THROWS_AS(rprop.set_options({.lr = 0.1, .etaplus = 0.9}), nestla::invalid_option);
  CHECK(rprop.options().etaplus == 1.2);
}

TEST_CASE("the defaults are torch.optim's") {
  const nestla::AdagradOptions a;
  CHECK((a.lr == 1e-2 && a.lr_decay == 0 && a.weight_decay == 0 && a.initial_accumulator_value == 0 && a.eps == 1e-10 &&
         !a.maximize));
  const nestla::RMSpropOptions r;
  CHECK((r.lr == 1e-2 && r.alpha == 0.99 && r.eps == 1e-8 && r.weight_decay == 0 && r.momentum == 0 && !r.centered &&
         !r.maximize));
  const nestla::AdadeltaOptions d;
  CHECK((d.lr == 1.0 && d.rho == 0.9 && d.eps == 1e-6 && d.weight_decay == 0 && !d.maximize));
  const nestla::RpropOptions p;
  CHECK((p.lr == 1e-2 && p.etaminus == 0.5 && p.etaplus == 1.2 && p.step_size_min == 1e-6 && p.step_size_max == 50 &&
         !p.maximize));
}
