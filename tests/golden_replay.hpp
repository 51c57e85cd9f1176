// Replays golden trajectories (tools/make_golden*.py -> tests/data/*.json) through nestla and compares every step.
//
// A case records the gradient fed at each step, so nestla gets exactly the
// same gradients and only the optimizer is compared. Check, after every step
// and for every parameter element:
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
#pragma once

#include <doctest/doctest.h>

#include <nestla/nestla.hpp>
#include <nlohmann/json.hpp>

#include "golden_json.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#ifndef NESTLA_TEST_DATA_DIR
#error "NESTLA_TEST_DATA_DIR must be defined (tests/CMakeLists.txt sets it)"
#endif

namespace golden {

using json = nlohmann::json;
using Set = std::vector<std::vector<double>>;

constexpr double kRelTol = 1e-12;
constexpr double kAbsFloor = 1e-2;

// The file and the levels as the generators spell them (shared with the MPI tests).
using golden_json::load;
using golden_json::to_level;

inline Set to_set(const json& j) { return j.get<Set>(); }

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

// The case's parameter groups ("groups": tensors with their own lr and
// weight_decay) on `base`, then its Lookahead levels (innermost first) around
// it, depth 0 to 3. Depth 1 is a plain Lookahead; depth >= 2 goes through
// nestla::nested<N>; with `composed`, depth 2 is built by hand as
// Lookahead(Lookahead(base)) instead, which must behave identically.
template <class Base>
Result run_nested(Base base, const json& c, bool composed = false) {
  if (c.contains("groups"))
    for (const auto& g : c.at("groups")) {
      nestla::GroupOptions o;
      if (g.contains("lr")) o.lr = g.at("lr").get<double>();
      if (g.contains("weight_decay")) o.weight_decay = g.at("weight_decay").get<double>();
      base.add_param_group(g.at("tensors").get<std::vector<std::size_t>>(), o);
    }
  const auto& lv = c.at("lookahead");
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
}

inline bool verbose() {
  const char* v = std::getenv("NESTLA_GOLDEN_VERBOSE");
  return v && *v && std::string(v) != "0";
}

// Runs run_case(c) on every case that `select` accepts, checks each result
// and returns how many ran.
template <class Select, class RunCase>
int check_cases(const json& cases, Select&& select, RunCase&& run_case, const std::string& label = "") {
  int n = 0;
  double group_rel = 0;
  for (const auto& c : cases) {
    if (!select(c)) continue;
    const std::string name = c.at("name").get<std::string>() + label;
    INFO("case ", name);
    const Result r = run_case(c);
    ++n;
    group_rel = std::max(group_rel, r.max_rel);
    if (verbose()) std::printf("  %-48s max rel %.3e  max abs %.3e\n", name.c_str(), r.max_rel, r.max_abs);
    CHECK_MESSAGE(r.failures == 0, r.failures, " elements out of tolerance; first: ", r.first_failure);
    CHECK_MESSAGE(r.cycle_mismatches == 0, r.cycle_mismatches, " wrong step() results; first: ", r.first_failure);
  }
  if (verbose()) std::printf("  %d cases, max rel %.3e\n", n, group_rel);
  return n;
}

}  // namespace golden
