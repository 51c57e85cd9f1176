// Reading the committed golden files of tools/ (tests/data/*.json): the file, and a Lookahead level as they spell it.
#pragma once

#include <nestla/nestla.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <stdexcept>
#include <string>

namespace golden_json {

// tests/data/NAME, parsed (NESTLA_TEST_DATA_DIR is set by the test's CMake target).
inline nlohmann::json load(const std::string& name) {
  const std::string path = std::string(NESTLA_TEST_DATA_DIR) + "/" + name;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return nlohmann::json::parse(in);
}

inline nestla::Momentum to_policy(const std::string& s) {
  if (s == "keep") return nestla::Momentum::keep;
  if (s == "reset") return nestla::Momentum::reset;
  if (s == "pullback") return nestla::Momentum::pullback;
  throw std::runtime_error("unknown momentum policy " + s);
}

// {"k", "alpha", "momentum", optional "outer_momentum", "outer_nesterov"}.
inline nestla::LookaheadOptions to_level(const nlohmann::json& j) {
  return {.k = j.at("k").get<int>(),
          .alpha = j.at("alpha").get<double>(),
          .momentum = to_policy(j.at("momentum").get<std::string>()),
          .outer_momentum = j.value("outer_momentum", 0.0),
          .outer_nesterov = j.value("outer_nesterov", false)};
}

}  // namespace golden_json
