// Golden trajectories of RAdam, NAdam, Adamax (torch.optim 2.x, foreach=False, float64), Lion (optax's published
// lion) and Ranger (lessw2020's), bare, in parameter groups and under Lookahead with every momentum policy.
//
// The data, tests/data/golden_optim.json, comes from tools/make_golden_optim.py
// (its header documents the schema and the references); golden_replay.hpp
// replays it and states the tolerance.
#include <doctest/doctest.h>

#include <array>
#include <set>
#include <string>

#include "golden_replay.hpp"

namespace {

using golden::json;

const json& data() {
  static const json d = golden::load("golden_optim.json");
  return d;
}
const json& cases() { return data().at("cases"); }

std::array<double, 2> betas(const json& o) { return o.at("betas").get<std::array<double, 2>>(); }

golden::Result run_case(const json& c) {
  const std::string kind = c.at("optimizer").get<std::string>();
  const auto& o = c.at("options");
  const double lr = o.at("lr").get<double>(), wd = o.at("weight_decay").get<double>();
  if (kind == "radam") {
    const nestla::RAdamOptions opts{.lr = lr,
                                    .beta1 = betas(o)[0],
                                    .beta2 = betas(o)[1],
                                    .eps = o.at("eps").get<double>(),
                                    .weight_decay = wd,
                                    .decoupled_weight_decay = o.at("decoupled_weight_decay").get<bool>(),
                                    .maximize = o.at("maximize").get<bool>()};
    return golden::run_nested(nestla::RAdam<double>(opts), c);
  }
  if (kind == "nadam") {
    const nestla::NAdamOptions opts{.lr = lr,
                                    .beta1 = betas(o)[0],
                                    .beta2 = betas(o)[1],
                                    .eps = o.at("eps").get<double>(),
                                    .weight_decay = wd,
                                    .momentum_decay = o.at("momentum_decay").get<double>(),
                                    .decoupled_weight_decay = o.at("decoupled_weight_decay").get<bool>(),
                                    .maximize = o.at("maximize").get<bool>()};
    return golden::run_nested(nestla::NAdam<double>(opts), c);
  }
  if (kind == "adamax") {
    const nestla::AdamaxOptions opts{.lr = lr,
                                     .beta1 = betas(o)[0],
                                     .beta2 = betas(o)[1],
                                     .eps = o.at("eps").get<double>(),
                                     .weight_decay = wd,
                                     .maximize = o.at("maximize").get<bool>()};
    return golden::run_nested(nestla::Adamax<double>(opts), c);
  }
  if (kind == "lion") {
    const nestla::LionOptions opts{.lr = lr, .beta1 = betas(o)[0], .beta2 = betas(o)[1], .weight_decay = wd};
    return golden::run_nested(nestla::Lion<double>(opts), c);
  }
  if (kind == "ranger") {
    // Ranger is a Lookahead already: the case has no further levels.
    REQUIRE(c.at("lookahead").empty());
    auto opt = nestla::ranger<double>({.lr = lr,
                                       .beta1 = betas(o)[0],
                                       .beta2 = betas(o)[1],
                                       .eps = o.at("eps").get<double>(),
                                       .weight_decay = wd,
                                       .k = o.at("k").get<int>(),
                                       .alpha = o.at("alpha").get<double>()});
    return golden::run(opt, c);
  }
  throw std::runtime_error("unknown optimizer " + kind);
}

int check(const std::string& kind, std::size_t depth) {
  return golden::check_cases(
      cases(),
      [&](const json& c) { return c.at("optimizer") == kind && c.at("lookahead").size() == depth; }, run_case);
}

}  // namespace

TEST_CASE("golden_optim data names its PyTorch and has the expected cases") {
  const auto& d = data();
  CHECK(d.at("torch").get<std::string>().rfind("2.", 0) == 0);
  REQUIRE(cases().is_array());
  CHECK(cases().size() == 39);
  std::set<std::string> names;
  for (const auto& c : cases()) {
    INFO("case ", c.at("name").get<std::string>());
    CHECK(names.insert(c.at("name").get<std::string>()).second);
    CHECK(c.at("shapes") == json::array({7, 12, 1}));
    CHECK(c.at("steps").size() >= 60);
  }
}

TEST_CASE("golden: RAdam matches torch.optim.RAdam, every option") { CHECK(check("radam", 0) == 7); }
TEST_CASE("golden: NAdam matches torch.optim.NAdam, every option") { CHECK(check("nadam", 0) == 7); }
TEST_CASE("golden: Adamax matches torch.optim.Adamax, every option") { CHECK(check("adamax", 0) == 5); }
TEST_CASE("golden: Lion matches optax's lion") { CHECK(check("lion", 0) == 4); }
TEST_CASE("golden: Ranger matches lessw2020's Ranger (use_gc=False)") { CHECK(check("ranger", 0) == 2); }

TEST_CASE("golden: Lookahead over RAdam, NAdam, Adamax, Lion with every momentum policy") {
  for (const char* kind : {"radam", "nadam", "adamax", "lion"}) {
    CAPTURE(kind);
    CHECK(check(kind, 1) == 3);
  }
}

TEST_CASE("golden: nested Lookahead depth 2 over RAdam and NAdam") {
  CHECK(check("radam", 2) == 1);
  CHECK(check("nadam", 2) == 1);
}
