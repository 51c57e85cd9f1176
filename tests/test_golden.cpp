// Golden trajectories: nestla against PyTorch's torch.optim (foreach=False,
// float64) and an independent Python reference of Lookahead / nested Lookahead.
//
// The data, tests/data/golden.json, comes from tools/make_golden.py (its header
// documents the schema). Every case records the gradient fed at each step, so
// nestla gets exactly the same gradients and only the optimizer is compared.
//
// Check, after every step and for every parameter element:
//     |nestla - golden| <= kRelTol * max(|golden|, kAbsFloor)
// i.e. a relative error of at most 1e-12 for |golden| >= kAbsFloor = 1e-2, and
// an absolute error of at most 1e-14 (about 45 ulp of 1.0) below it. The
// parameters are O(1) (the initial values are standard normal), so rounding
// errors are O(ulp(1)) in absolute terms; when a trajectory passes close to
// zero, a few ulp of it would otherwise be an arbitrarily large relative error
// (a build with fused multiply-adds, which PyTorch's reference run does not
// use, shows absolute differences up to ~1e-15 here). A real error in an
// update rule is orders of magnitude larger than either bound.
// Also checked: step()'s return value equals the recorded "cycle" of the top
// level (true on every step for a base optimizer).
//
// Set NESTLA_GOLDEN_VERBOSE=1 to print the largest error seen per case.

#include <doctest/doctest.h>

#include "golden_json.hpp"

#include <nestla/nestla.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#ifndef NESTLA_TEST_DATA_DIR
#error "NESTLA_TEST_DATA_DIR must be defined (tests/CMakeLists.txt sets it)"
#endif

namespace {

using json = nlohmann::json;
using Set = std::vector<std::vector<double>>;

constexpr double kRelTol = 1e-12;
constexpr double kAbsFloor = 1e-2;

const json& golden() {
  static const json data = golden_json::load("golden.json");
  return data;
}

Set to_set(const json& j) { return j.get<Set>(); }

using golden_json::to_level;

// Does any level of the case have outer momentum (DiLoCo's outer step)?
bool has_outer_momentum(const json& c) {
  for (const auto& l : c.at("lookahead"))
    if (l.value("outer_momentum", 0.0) != 0) return true;
  return false;
}

// Largest error seen in one case, and where the first violation happened.
struct Result {
  double max_rel = 0;   // max |a-b| / max(|b|, kAbsFloor)
  double max_abs = 0;   // max |a-b|
  int failures = 0;     // elements out of tolerance
  int cycle_mismatches = 0;
  std::string first_failure;
};

// Runs one case through `opt` and compares every step.
template <class Opt>
Result run(Opt& opt, const json& c) {
  Result r;
  Set params = to_set(c.at("init"));
  const auto& steps = c.at("steps");
  for (std::size_t s = 0; s < steps.size(); ++s) {
    const auto& st = steps[s];
    const Set grads = to_set(st.at("grad"));
    const Set want = to_set(st.at("params"));
    const bool cycle = opt.step(params, grads);
    if (cycle != st.at("cycle").get<bool>()) {
      if (r.cycle_mismatches++ == 0 && r.first_failure.empty()) {
        std::ostringstream os;
        os << "step " << s + 1 << ": step() returned " << cycle << ", golden cycle is " << !cycle;
        r.first_failure = os.str();
      }
    }
    for (std::size_t i = 0; i < want.size(); ++i) {
      for (std::size_t j = 0; j < want[i].size(); ++j) {
        const double a = params.at(i).at(j), b = want[i][j];
        const double err = std::abs(a - b);
        const double rel = err / std::max(std::abs(b), kAbsFloor);
        r.max_abs = std::max(r.max_abs, err);
        r.max_rel = std::max(r.max_rel, std::isnan(rel) ? INFINITY : rel);
        if (!(rel <= kRelTol)) {
          if (r.failures++ == 0 && r.first_failure.empty()) {
            std::ostringstream os;
            os.precision(17);
            os << "step " << s + 1 << ", tensor " << i << ", element " << j << ": nestla " << a << ", golden "
               << b << " (error " << rel << ")";
            r.first_failure = os.str();
          }
        }
      }
    }
  }
  return r;
}

// Builds the case's base optimizer and hands it to f.
template <class F>
Result with_base(const json& c, F&& f) {
  const std::string kind = c.at("optimizer").get<std::string>();
  const auto& o = c.at("options");
  if (kind == "sgd") {
    return f(nestla::SGD<double>({.lr = o.at("lr").get<double>(),
                                  .momentum = o.at("momentum").get<double>(),
                                  .dampening = o.at("dampening").get<double>(),
                                  .weight_decay = o.at("weight_decay").get<double>(),
                                  .nesterov = o.at("nesterov").get<bool>()}));
  }
  const auto betas = o.at("betas").get<std::array<double, 2>>();
  if (kind == "adam") {
    return f(nestla::Adam<double>({.lr = o.at("lr").get<double>(),
                                   .beta1 = betas[0],
                                   .beta2 = betas[1],
                                   .eps = o.at("eps").get<double>(),
                                   .weight_decay = o.at("weight_decay").get<double>(),
                                   .amsgrad = o.at("amsgrad").get<bool>()}));
  }
  if (kind == "adamw") {
    return f(nestla::AdamW<double>({.lr = o.at("lr").get<double>(),
                                    .beta1 = betas[0],
                                    .beta2 = betas[1],
                                    .eps = o.at("eps").get<double>(),
                                    .weight_decay = o.at("weight_decay").get<double>(),
                                    .amsgrad = o.at("amsgrad").get<bool>()}));
  }
  throw std::runtime_error("unknown optimizer " + kind);
}

// The depth is part of the type: dispatch the case's level list (innermost
// first) to depth 0..3. Depth 1 is a plain Lookahead; depth >= 2 goes through
// nestla::nested<N>; with `composed`, depth 2 is built by hand as
// Lookahead(Lookahead(base)) instead, which must behave identically.
Result run_case(const json& c, bool composed = false) {
  const auto& lv = c.at("lookahead");
  return with_base(c, [&](auto base) -> Result {
    switch (lv.size()) {
      case 0:
        return run(base, c);
      case 1: {
        nestla::Lookahead la(std::move(base), to_level(lv[0]));
        return run(la, c);
      }
      case 2: {
        if (composed) {
          nestla::Lookahead outer(nestla::Lookahead(std::move(base), to_level(lv[0])), to_level(lv[1]));
          return run(outer, c);
        }
        auto nest = nestla::nested<2>(std::move(base), {to_level(lv[0]), to_level(lv[1])});
        return run(nest, c);
      }
      case 3: {
        auto nest = nestla::nested<3>(std::move(base), {to_level(lv[0]), to_level(lv[1]), to_level(lv[2])});
        return run(nest, c);
      }
      default:
        throw std::runtime_error("unsupported depth " + std::to_string(lv.size()));
    }
  });
}

bool verbose() {
  const char* v = std::getenv("NESTLA_GOLDEN_VERBOSE");
  return v && *v && std::string(v) != "0";
}

// Runs every case whose depth is in [lo, hi] and that has outer momentum
// (or has none); returns how many ran.
int check_depths(std::size_t lo, std::size_t hi, bool composed = false, bool outer = false) {
  int n = 0;
  double group_rel = 0;
  for (const auto& c : golden()) {
    const std::size_t depth = c.at("lookahead").size();
    if (depth < lo || depth > hi || has_outer_momentum(c) != outer) continue;
    const std::string name = c.at("name").get<std::string>() + (composed ? " (composed)" : "");
    INFO("case ", name);
    const Result r = run_case(c, composed);
    ++n;
    group_rel = std::max(group_rel, r.max_rel);
    if (verbose()) std::printf("  %-48s max rel %.3e  max abs %.3e\n", name.c_str(), r.max_rel, r.max_abs);
    CHECK_MESSAGE(r.failures == 0, r.failures, " elements out of tolerance; first: ", r.first_failure);
    CHECK_MESSAGE(r.cycle_mismatches == 0, r.cycle_mismatches, " wrong step() results; first: ", r.first_failure);
  }
  if (verbose()) std::printf("  depth %zu..%zu: %d cases, max rel %.3e\n", lo, hi, n, group_rel);
  return n;
}

}  // namespace

TEST_CASE("golden data loads and has the expected cases") {
  const auto& g = golden();
  REQUIRE(g.is_array());
  CHECK(g.size() == 44);
  for (const auto& c : g) {
    INFO("case ", c.at("name").get<std::string>());
    CHECK(c.at("shapes") == json::array({7, 12, 1}));
    CHECK(c.at("steps").size() >= 60);
  }
}

TEST_CASE("golden: base optimizers match torch.optim") { CHECK(check_depths(0, 0) == 11); }

TEST_CASE("golden: Lookahead matches the reference") { CHECK(check_depths(1, 1) == 6); }

TEST_CASE("golden: nested Lookahead depth 2") { CHECK(check_depths(2, 2) == 18); }

TEST_CASE("golden: Lookahead(Lookahead(A)) composed by hand equals nested<2>") {
  CHECK(check_depths(2, 2, /*composed=*/true) == 18);
}

TEST_CASE("golden: nested Lookahead depth 3") { CHECK(check_depths(3, 3) == 2); }

TEST_CASE("golden: outer momentum (heavy ball, Nesterov) matches torch.optim.SGD on the slow weights") {
  CHECK(check_depths(1, 1, false, true) == 3);
  CHECK(check_depths(2, 3, false, true) == 4);
  CHECK(check_depths(2, 2, true, true) == 3);
}
