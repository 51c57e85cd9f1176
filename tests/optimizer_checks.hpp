// Checks every base optimizer should pass: Lookahead and nesting against the reference loops at every policy, checkpoints, groups, float vs double.
#pragma once

#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "reference.hpp"

namespace checks {

template <class O>
std::string bytes(const O& o) {
  std::ostringstream os;
  o.save(os);
  return os.str();
}

// Runs nestla's optimizer and a reference (ref::nested) side by side from
// ref::initial<T>(n) with ref::grad_source's gradients: every parameter and
// every returned cycle flag must agree exactly, and some step must complete a
// cycle.
template <class T, class Opt, class Ref>
void steps_match(Opt& opt, Ref& r, int steps, std::size_t n = 37) {
  auto p = ref::initial<T>(n), q = p;
  std::vector<T> g;
  ref::grad_source src;
  int cycles = 0;
  for (int s = 0; s < steps; ++s) {
    src.fill(p, g);
    const bool a = opt.step(p, g);
    REQUIRE(a == r.step(q, g));
    cycles += a;
    REQUIRE(p == q);
  }
  CHECK(cycles > 0);
}

constexpr nestla::Momentum policies[] = {nestla::Momentum::keep, nestla::Momentum::reset, nestla::Momentum::pullback};

// `base` alone, under Lookahead with each policy and nested twice with every
// policy pair, equals ref::nested over `ref_step` (a base step of
// reference.hpp's shape) bit for bit, parameters and cycle flags.
template <class Base, class RefStep>
void matches_reference_at_every_policy(const Base& base, RefStep ref_step, int steps = 24) {
  using T = typename Base::scalar_type;
  auto compare = [&](auto opt, const std::vector<nestla::LookaheadOptions>& levels) {
    ref::nested<T, RefStep> r{ref_step, {}, {}};
    for (const auto& l : levels) r.levels.push_back({l, {}, {}, 0});
    steps_match<T>(opt, r, steps);
  };
  compare(base, {});
  for (auto m : policies) {
    CAPTURE(nestla::to_string(m));
    const nestla::LookaheadOptions l{.k = 5, .alpha = 0.5, .momentum = m};
    compare(nestla::Lookahead(base, l), {l});
    for (auto m2 : policies) {
      CAPTURE(nestla::to_string(m2));
      const nestla::LookaheadOptions inner{.k = 3, .alpha = 0.5, .momentum = m},
          outer{.k = 2, .alpha = 0.8, .momentum = m2};
      compare(nestla::nested<2>(base, {inner, outer}), {inner, outer});
    }
  }
}

// A nested run saved mid-cycle and resumed in a fresh optimizer (with other
// options, which the checkpoint replaces) continues bit for bit, and its
// checkpoint bytes equal the uninterrupted run's.
template <class Base>
void checkpoint_resumes_bit_for_bit(const Base& base, const Base& other) {
  using T = typename Base::scalar_type;
  auto make = [](const Base& b) {
    return nestla::nested<2>(b, {{.k = 3, .alpha = 0.5, .momentum = nestla::Momentum::pullback},
                                 {.k = 2, .alpha = 0.8, .momentum = nestla::Momentum::reset}});
  };
  auto straight = make(base), first = make(base);
  std::vector<std::vector<T>> pa{ref::initial<T>(41), ref::initial<T>(7)}, pb = pa, g(2);
  ref::grad_source sa, sb;
  auto fill = [](ref::grad_source& src, const std::vector<std::vector<T>>& p, std::vector<std::vector<T>>& grads) {
    for (std::size_t i = 0; i < p.size(); ++i) src.fill(p[i], grads[i]);
  };
  for (int s = 0; s < 10; ++s) {  // 10: mid inner cycle (3) and mid outer cycle (6)
    fill(sa, pa, g);
    straight.step(pa, g);
    fill(sb, pb, g);
    first.step(pb, g);
  }
  std::stringstream ss;
  first.save(ss);
  auto resumed = make(other);
  resumed.load(ss);
  CHECK(bytes(resumed) == bytes(first));
  for (int s = 0; s < 15; ++s) {
    fill(sa, pa, g);
    straight.step(pa, g);
    fill(sb, pb, g);
    resumed.step(pb, g);
  }
  CHECK(pa == pb);
  CHECK(bytes(resumed) == bytes(straight));
}

// A tensor in a parameter group with its own lr and weight decay moves
// exactly as under a separate optimizer with those options; the others as
// under the optimizer's own.
template <template <class, class> class Opt, class Options>
void group_moves_as_separate_optimizer(const Options& o, double group_lr, double group_wd) {
  Opt<double, nestla::host> grouped(o);
  grouped.add_param_group({1}, {.lr = group_lr, .weight_decay = group_wd});
  Options alone = o;
  alone.lr = group_lr;
  alone.weight_decay = group_wd;
  Opt<double, nestla::host> rest(o), one(alone);
  std::vector<std::vector<double>> p{ref::initial<double>(9), ref::initial<double>(5)}, g(2);
  std::vector<double> a = p[0], b = p[1];
  ref::grad_source src;
  for (int s = 0; s < 12; ++s) {
    src.fill(p[0], g[0]);
    src.fill(p[1], g[1]);
    grouped.step(p, g);
    rest.step(a, g[0]);
    one.step(b, g[1]);
  }
  CHECK(p[0] == a);
  CHECK(p[1] == b);
}

// float and double follow the same rule: after `steps` steps the float
// trajectory is within `tol` (relative to max(|x|, 1)) of the double one.
template <template <class, class> class Opt, class Options>
void float_follows_double(const Options& o, int steps, double tol) {
  Opt<float, nestla::host> f(o);
  Opt<double, nestla::host> d(o);
  std::vector<double> pd = ref::initial<double>(33), gd;
  std::vector<float> pf(pd.begin(), pd.end()), gf;
  ref::grad_source src;
  double worst = 0;
  for (int s = 0; s < steps; ++s) {
    src.fill(pd, gd);
    gf.assign(gd.begin(), gd.end());
    d.step(pd, gd);
    f.step(pf, gf);
    for (std::size_t i = 0; i < pd.size(); ++i)
      worst = std::max(worst, std::abs(double(pf[i]) - pd[i]) / std::max(std::abs(pd[i]), 1.0));
  }
  CHECK(worst < tol);
  CHECK(worst > 0);  // float really ran in float
}

}  // namespace checks
