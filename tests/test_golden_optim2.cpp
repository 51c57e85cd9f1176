// Golden trajectories of Adagrad, RMSprop, Adadelta and Rprop against torch.optim (foreach=False, float64), every option.
//
// The data, tests/data/golden_optim2.json, comes from tools/make_golden_optim2.py
// (PyTorch 2.x; the file names the version). Tolerances and the replay are
// tests/golden_replay.hpp's. The largest error is about 1.4e-15, from PyTorch
// 2.15's float64 sqrt, which is not always correctly rounded (the generator
// explains); every other operation is in the order of torch's single-tensor
// code (against PyTorch 1.13, whose sqrt is exact, the cases agree bit for bit,
// except centered RMSprop, whose formula 1.13 computed differently).
#include <doctest/doctest.h>

#include "golden_replay.hpp"

#include <array>
#include <string>

namespace {

using golden::json;

const json& data() {
  static const json d = golden::load("golden_optim2.json");
  return d;
}
const json& cases() { return data().at("cases"); }

// The case's base optimizer from its torch options, handed to run_nested.
golden::Result run_case(const json& c) {
  const std::string kind = c.at("optimizer").get<std::string>();
  const auto& o = c.at("options");
  auto d = [&](const char* k) { return o.at(k).get<double>(); };
  auto b = [&](const char* k) { return o.at(k).get<bool>(); };
  if (kind == "adagrad")
    return golden::run_nested(nestla::Adagrad<double>({.lr = d("lr"),
                                                       .lr_decay = d("lr_decay"),
                                                       .weight_decay = d("weight_decay"),
                                                       .initial_accumulator_value = d("initial_accumulator_value"),
                                                       .eps = d("eps"),
                                                       .maximize = b("maximize")}),
                              c);
  if (kind == "rmsprop")
    return golden::run_nested(nestla::RMSprop<double>({.lr = d("lr"),
                                                       .alpha = d("alpha"),
                                                       .eps = d("eps"),
                                                       .weight_decay = d("weight_decay"),
                                                       .momentum = d("momentum"),
                                                       .centered = b("centered"),
                                                       .maximize = b("maximize")}),
                              c);
  if (kind == "adadelta")
    return golden::run_nested(nestla::Adadelta<double>({.lr = d("lr"),
                                                        .rho = d("rho"),
                                                        .eps = d("eps"),
                                                        .weight_decay = d("weight_decay"),
                                                        .maximize = b("maximize")}),
                              c);
  if (kind == "rprop") {
    const auto etas = o.at("etas").get<std::array<double, 2>>();
    const auto sizes = o.at("step_sizes").get<std::array<double, 2>>();
    return golden::run_nested(nestla::Rprop<double>({.lr = d("lr"),
                                                     .etaminus = etas[0],
                                                     .etaplus = etas[1],
                                                     .step_size_min = sizes[0],
                                                     .step_size_max = sizes[1],
                                                     .maximize = b("maximize")}),
                              c);
  }
  throw std::runtime_error("unknown optimizer " + kind);
}

int check(const std::string& kind) {
  return golden::check_cases(
      cases(), [&](const json& c) { return c.at("optimizer") == kind; }, run_case);
}

}  // namespace

TEST_CASE("golden_optim2 data: made with PyTorch 2, every case complete") {
  REQUIRE(data().at("torch").get<std::string>().rfind("2.", 0) == 0);
  CHECK(cases().size() == 44);
  for (const auto& c : cases()) {
    INFO("case ", c.at("name").get<std::string>());
    CHECK(c.at("shapes") == json::array({7, 12, 1}));
    CHECK(c.at("steps").size() == 60);
  }
}

TEST_CASE("golden: Adagrad matches torch.optim.Adagrad") { CHECK(check("adagrad") == 10); }
TEST_CASE("golden: RMSprop matches torch.optim.RMSprop, and under (nested) Lookahead with each policy") {
  CHECK(check("rmsprop") == 20);
}
TEST_CASE("golden: Adadelta matches torch.optim.Adadelta") { CHECK(check("adadelta") == 7); }
TEST_CASE("golden: Rprop matches torch.optim.Rprop") { CHECK(check("rprop") == 7); }
