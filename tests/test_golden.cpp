// Golden trajectories: nestla against PyTorch's torch.optim (foreach=False,
// float64) and an independent Python reference of Lookahead / nested Lookahead.
//
// The data, tests/data/golden.json, comes from tools/make_golden.py (its header
// documents the schema); golden_replay.hpp replays it and states the tolerance.
#include <doctest/doctest.h>

#include <array>
#include <string>

#include "golden_replay.hpp"

namespace {

using golden::json;

const json& data() {
  static const json d = golden::load("golden.json");
  return d;
}

// The case's base optimizer, wrapped in its Lookahead levels.
golden::Result run_case(const json& c, bool composed = false) {
  const std::string kind = c.at("optimizer").get<std::string>();
  const auto& o = c.at("options");
  if (kind == "sgd") {
    return golden::run_nested(nestla::SGD<double>({.lr = o.at("lr").get<double>(),
                                                   .momentum = o.at("momentum").get<double>(),
                                                   .dampening = o.at("dampening").get<double>(),
                                                   .weight_decay = o.at("weight_decay").get<double>(),
                                                   .nesterov = o.at("nesterov").get<bool>()}),
                              c, composed);
  }
  const auto betas = o.at("betas").get<std::array<double, 2>>();
  if (kind == "adam") {
    return golden::run_nested(nestla::Adam<double>({.lr = o.at("lr").get<double>(),
                                                    .beta1 = betas[0],
                                                    .beta2 = betas[1],
                                                    .eps = o.at("eps").get<double>(),
                                                    .weight_decay = o.at("weight_decay").get<double>(),
                                                    .amsgrad = o.at("amsgrad").get<bool>()}),
                              c, composed);
  }
  if (kind == "adamw") {
    return golden::run_nested(nestla::AdamW<double>({.lr = o.at("lr").get<double>(),
                                                     .beta1 = betas[0],
                                                     .beta2 = betas[1],
                                                     .eps = o.at("eps").get<double>(),
                                                     .weight_decay = o.at("weight_decay").get<double>(),
                                                     .amsgrad = o.at("amsgrad").get<bool>()}),
                              c, composed);
  }
  throw std::runtime_error("unknown optimizer " + kind);
}

// Does any level of the case have outer momentum (DiLoCo's outer step)?
bool has_outer_momentum(const json& c) {
  for (const auto& l : c.at("lookahead"))
    if (l.value("outer_momentum", 0.0) != 0) return true;
  return false;
}

// Runs every case whose depth is in [lo, hi] and that has outer momentum (or
// has none); returns how many ran.
int check_depths(std::size_t lo, std::size_t hi, bool composed = false, bool outer = false) {
  return golden::check_cases(
      data(),
      [&](const json& c) {
        const std::size_t depth = c.at("lookahead").size();
        return depth >= lo && depth <= hi && has_outer_momentum(c) == outer;
      },
      [&](const json& c) { return run_case(c, composed); }, composed ? " (composed)" : "");
}

}  // namespace

TEST_CASE("golden data loads and has the expected cases") {
  const auto& g = data();
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
