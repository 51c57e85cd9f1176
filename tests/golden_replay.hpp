// Replays a golden trajectory file (tools/make_golden*.py) through nestla optimizers and compares every step.
//
// A case records the gradient fed at every step, so nestla gets exactly the
// same gradients and only the optimizer is compared. After every step and for
// every parameter element:
//     |nestla - golden| <= kRelTol * max(|golden|, kAbsFloor)
// a relative error of at most 1e-12 for |golden| >= 1e-2 and an absolute one
// of at most 1e-14 below (tests/test_golden.cpp explains the choice). Also
// checked: step()'s return value equals the recorded "cycle" of the top level.
// Set NESTLA_GOLDEN_VERBOSE=1 to print the largest error seen per case.
#pragma once

#include <doctest/doctest.h>

#include <nestla/nestla.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
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

namespace golden {

using json = nlohmann::json;
using Set = std::vector<std::vector<double>>;

constexpr double kRelTol = 1e-12;
constexpr double kAbsFloor = 1e-2;

inline json load(const std::string& file) {
  const std::string path = std::string(NESTLA_TEST_DATA_DIR) + "/" + file;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return json::parse(in);
}

inline nestla::LookaheadOptions to_level(const json& j) {
  const std::string m = j.at("momentum").get<std::string>();
  const auto policy = m == "keep"    ? nestla::Momentum::keep
                      : m == "reset" ? nestla::Momentum::reset
                      : m == "pullback" ? nestla::Momentum::pullback
                                        : throw std::runtime_error("unknown momentum policy " + m);
  return {.k = j.at("k").get<int>(), .alpha = j.at("alpha").get<double>(), .momentum = policy};
}

// The largest error seen in one case, and the first violation.
struct Result {
  double max_rel = 0;
  double max_abs = 0;
  int failures = 0;
  int cycle_mismatches = 0;
  std::string first_failure;
};

template <class Opt>
Result run(Opt& opt, const json& c) {
  Result r;
  Set params = c.at("init").get<Set>();
  const auto& steps = c.at("steps");
  for (std::size_t s = 0; s < steps.size(); ++s) {
    const auto& st = steps[s];
    const Set grads = st.at("grad").get<Set>();
    const Set want = st.at("params").get<Set>();
    const bool cycle = opt.step(params, grads);
    if (cycle != st.at("cycle").get<bool>() && r.cycle_mismatches++ == 0 && r.first_failure.empty())
      r.first_failure = "step " + std::to_string(s + 1) + ": step() returned " + (cycle ? "true" : "false");
    for (std::size_t i = 0; i < want.size(); ++i)
      for (std::size_t j = 0; j < want[i].size(); ++j) {
        const double a = params.at(i).at(j), b = want[i][j];
        const double err = std::abs(a - b), rel = err / std::max(std::abs(b), kAbsFloor);
        r.max_abs = std::max(r.max_abs, err);
        r.max_rel = std::max(r.max_rel, std::isnan(rel) ? INFINITY : rel);
        if (!(rel <= kRelTol) && r.failures++ == 0 && r.first_failure.empty()) {
          std::ostringstream os;
          os.precision(17);
          os << "step " << s + 1 << ", tensor " << i << ", element " << j << ": nestla " << a << ", golden " << b
             << " (error " << rel << ")";
          r.first_failure = os.str();
        }
      }
  }
  return r;
}

// The case's parameter groups ("groups": tensors with their own lr and
// weight_decay), then its Lookahead levels (innermost first, depth 0 to 3).
template <class Base>
Result run_nested(Base base, const json& c) {
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

// Runs every case that `select` accepts through run_case(case) -> Result,
// with a doctest check per case. Returns how many ran.
template <class Select, class RunCase>
int check_cases(const json& cases, Select&& select, RunCase&& run_case) {
  int n = 0;
  double worst = 0;
  for (const auto& c : cases) {
    if (!select(c)) continue;
    const std::string name = c.at("name").get<std::string>();
    INFO("case ", name);
    const Result r = run_case(c);
    ++n;
    worst = std::max(worst, r.max_rel);
    if (verbose()) std::printf("  %-52s max rel %.3e  max abs %.3e\n", name.c_str(), r.max_rel, r.max_abs);
    CHECK_MESSAGE(r.failures == 0, r.failures, " elements out of tolerance; first: ", r.first_failure);
    CHECK_MESSAGE(r.cycle_mismatches == 0, r.cycle_mismatches, " wrong step() results; first: ", r.first_failure);
  }
  if (verbose()) std::printf("  %d cases, max rel %.3e\n", n, worst);
  return n;
}

}  // namespace golden
