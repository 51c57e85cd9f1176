// Schedules (nestla/schedule.hpp) against PyTorch's lr_scheduler, their validation, and their use on set_lr / set_alpha.
//
// tests/data/schedule_golden.json comes from tools/make_schedule_golden.py
// (PyTorch 2.15.0; its header documents the schema): the lr, and for
// OneCycleLR the momentum, that PyTorch's optimizer holds after t calls of
// scheduler.step(). nestla's s(t) must agree to 1e-12 relative at every t,
// against the step() values, or against PyTorch's closed form where the case
// says so (CosineAnnealingLR past T_max, where PyTorch's recursion drifts).
// Set NESTLA_GOLDEN_VERBOSE=1 to print the largest error per case.

#include <doctest/doctest.h>

#include <nestla/nestla.hpp>
#include <nestla/schedule.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef NESTLA_TEST_DATA_DIR
#error "NESTLA_TEST_DATA_DIR must be defined (tests/CMakeLists.txt sets it)"
#endif

namespace {

using json = nlohmann::json;
constexpr double kRelTol = 1e-12;

const json& golden() {
  static const json data = [] {
    const std::string path = std::string(NESTLA_TEST_DATA_DIR) + "/schedule_golden.json";
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path);
    return json::parse(in);
  }();
  return data;
}

template <class T>
void set_if(const json& o, const char* key, T& field) {
  if (o.contains(key)) field = o.at(key).get<T>();
}

nestla::OneCycleLR make_one_cycle(const json& o) {
  nestla::OneCycleLROptions opts;
  set_if(o, "max_lr", opts.max_lr);
  set_if(o, "total_steps", opts.total_steps);
  set_if(o, "pct_start", opts.pct_start);
  set_if(o, "base_momentum", opts.base_momentum);
  set_if(o, "max_momentum", opts.max_momentum);
  set_if(o, "div_factor", opts.div_factor);
  set_if(o, "final_div_factor", opts.final_div_factor);
  set_if(o, "three_phase", opts.three_phase);
  if (o.contains("anneal_strategy"))
    opts.anneal_strategy = o.at("anneal_strategy") == "linear" ? nestla::Anneal::linear : nestla::Anneal::cos;
  return nestla::OneCycleLR(opts);
}

std::function<double(std::int64_t)> make(const std::string& name, const json& o) {
  using namespace nestla;
  if (name == "StepLR") {
    StepLROptions s;
    set_if(o, "base_lr", s.base_lr), set_if(o, "step_size", s.step_size), set_if(o, "gamma", s.gamma);
    return StepLR(s);
  }
  if (name == "MultiStepLR") {
    MultiStepLROptions s;
    set_if(o, "base_lr", s.base_lr), set_if(o, "milestones", s.milestones), set_if(o, "gamma", s.gamma);
    return MultiStepLR(s);
  }
  if (name == "ExponentialLR") {
    ExponentialLROptions s;
    set_if(o, "base_lr", s.base_lr), set_if(o, "gamma", s.gamma);
    return ExponentialLR(s);
  }
  if (name == "CosineAnnealingLR") {
    CosineAnnealingLROptions s;
    set_if(o, "base_lr", s.base_lr), set_if(o, "T_max", s.T_max), set_if(o, "eta_min", s.eta_min);
    return CosineAnnealingLR(s);
  }
  if (name == "CosineAnnealingWarmRestarts") {
    CosineAnnealingWarmRestartsOptions s;
    set_if(o, "base_lr", s.base_lr), set_if(o, "T_0", s.T_0), set_if(o, "T_mult", s.T_mult);
    set_if(o, "eta_min", s.eta_min);
    return CosineAnnealingWarmRestarts(s);
  }
  if (name == "LinearLR") {
    LinearLROptions s;
    set_if(o, "base_lr", s.base_lr), set_if(o, "start_factor", s.start_factor);
    set_if(o, "end_factor", s.end_factor), set_if(o, "total_iters", s.total_iters);
    return LinearLR(s);
  }
  if (name == "ConstantLR") {
    ConstantLROptions s;
    set_if(o, "base_lr", s.base_lr), set_if(o, "factor", s.factor), set_if(o, "total_iters", s.total_iters);
    return ConstantLR(s);
  }
  if (name == "PolynomialLR") {
    PolynomialLROptions s;
    set_if(o, "base_lr", s.base_lr), set_if(o, "total_iters", s.total_iters), set_if(o, "power", s.power);
    return PolynomialLR(s);
  }
  if (name == "OneCycleLR") return make_one_cycle(o);
  if (name == "SequentialLR") {
    std::vector<SequentialLR::schedule> parts;
    for (const auto& s : o.at("schedules")) parts.push_back(make(s.at("schedule"), s.at("options")));
    return SequentialLR(parts, o.at("milestones").get<std::vector<std::int64_t>>());
  }
  throw std::runtime_error("unknown schedule " + name);
}

// Largest |x - ref| / |ref| over t (exact agreement required where ref is 0).
double max_rel_error(const std::function<double(std::int64_t)>& s, const json& ref) {
  double worst = 0;
  for (std::size_t t = 0; t < ref.size(); ++t) {
    const double want = ref[t].get<double>(), got = s(static_cast<std::int64_t>(t));
    const double err = want == 0 ? (got == 0 ? 0 : std::numeric_limits<double>::infinity())
                                 : std::fabs(got - want) / std::fabs(want);
    if (err > worst) worst = err;
  }
  return worst;
}

bool verbose() { return std::getenv("NESTLA_GOLDEN_VERBOSE") != nullptr; }

}  // namespace

TEST_CASE("the golden file names its PyTorch and covers every schedule") {
  const auto& g = golden();
  CHECK(g.at("torch_version").get<std::string>().rfind("2.15.0", 0) == 0);
  std::vector<std::string> seen;
  for (const auto& c : g.at("cases")) seen.push_back(c.at("schedule"));
  for (const char* name : {"StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
                           "LinearLR", "ConstantLR", "PolynomialLR", "OneCycleLR", "SequentialLR"})
    CHECK_MESSAGE(std::find(seen.begin(), seen.end(), name) != seen.end(), name);
}

TEST_CASE("every schedule matches PyTorch's values to 1e-12 relative at every step") {
  for (const auto& c : golden().at("cases")) {
    const std::string name = c.at("name");
    CAPTURE(name);
    const auto s = make(c.at("schedule"), c.at("options"));
    const json& lr = c.at("lr");
    REQUIRE(lr.size() == c.at("steps").get<std::size_t>() + 1);
    if (c.at("reference") == "step") {
      const double err = max_rel_error(s, lr);
      if (verbose()) std::printf("%-30s lr  max rel error %.3g\n", name.c_str(), err);
      CHECK(err <= kRelTol);
    } else {
      // PyTorch's own recursion is off its closed form by more than the
      // tolerance here; nestla is the closed form, and no farther from the
      // recursion than the closed form is.
      const double drift = c.at("step_vs_closed_form");
      CHECK(drift > kRelTol);
      const double err = max_rel_error(s, c.at("closed_form"));
      const double err_step = max_rel_error(s, lr);
      if (verbose()) std::printf("%-30s lr  max rel error %.3g (closed form), %.3g (step loop)\n", name.c_str(), err, err_step);
      CHECK(err <= kRelTol);
      CHECK(err_step <= drift * 1.01);
    }
    if (c.contains("momentum")) {
      const auto one = make_one_cycle(c.at("options"));
      const double err = max_rel_error([&](std::int64_t t) { return one.momentum(t); }, c.at("momentum"));
      if (verbose()) std::printf("%-30s mom max rel error %.3g\n", name.c_str(), err);
      CHECK(err <= kRelTol);
    }
  }
}

TEST_CASE("closed forms by hand") {
  using namespace nestla;
  const StepLR step({.base_lr = 1.0, .step_size = 2, .gamma = 0.5});
  CHECK(step(0) == 1.0);
  CHECK(step(1) == 1.0);
  CHECK(step(2) == 0.5);
  CHECK(step(5) == 0.25);
  const MultiStepLR multi({.base_lr = 1.0, .milestones = {1, 3, 3}, .gamma = 0.5});
  CHECK(multi(0) == 1.0);
  CHECK(multi(1) == 0.5);
  CHECK(multi(2) == 0.5);
  CHECK(multi(3) == 0.125);  // a repeated milestone decays twice
  const CosineAnnealingLR cosine({.base_lr = 1.0, .T_max = 4, .eta_min = 0.2});
  CHECK(cosine(0) == 1.0);
  CHECK(cosine(2) == doctest::Approx(0.6));
  CHECK(cosine(4) == doctest::Approx(0.2));
  CHECK(cosine(8) == doctest::Approx(1.0));  // no restart: the cosine goes on
  const CosineAnnealingWarmRestarts sgdr({.base_lr = 1.0, .T_0 = 2, .T_mult = 2});
  // Periods 2, 4, 8: restarts at 2, 6, 14.
  for (std::int64_t t : {0, 2, 6, 14}) CHECK(sgdr(t) == 1.0);
  CHECK(sgdr(4) == doctest::Approx(0.5));   // halfway through the period [2, 6)
  CHECK(sgdr(10) == doctest::Approx(0.5));  // halfway through [6, 14)
  const LinearLR warmup({.base_lr = 0.1, .start_factor = 0.25, .end_factor = 1.0, .total_iters = 3});
  CHECK(warmup(0) == doctest::Approx(0.025));
  CHECK(warmup(3) == doctest::Approx(0.1));
  CHECK(warmup(100) == doctest::Approx(0.1));
  const ConstantLR constant({.base_lr = 0.1, .factor = 0.5, .total_iters = 2});
  CHECK(constant(1) == doctest::Approx(0.05));
  CHECK(constant(2) == doctest::Approx(0.1));
  const PolynomialLR poly({.base_lr = 1.0, .total_iters = 4, .power = 2.0});
  CHECK(poly(2) == doctest::Approx(0.25));
  CHECK(poly(4) == 0.0);
  CHECK(poly(9) == 0.0);
  const OneCycleLR one({.max_lr = 1.0, .total_steps = 11, .pct_start = 0.5, .div_factor = 4, .final_div_factor = 2});
  CHECK(one(0) == doctest::Approx(0.25));
  CHECK(one.momentum(0) == doctest::Approx(0.95));
  CHECK(one(static_cast<std::int64_t>(0.5 * 11 - 1)) < 1.0);
  CHECK(one(10) == doctest::Approx(0.125));  // max_lr / div_factor / final_div_factor at total_steps - 1
  CHECK(one.momentum(10) == doctest::Approx(0.95));
  const SequentialLR seq({[](std::int64_t t) { return 1.0 + static_cast<double>(t); },
                          ExponentialLR({.base_lr = 1.0, .gamma = 0.5})},
                         {3});
  CHECK(seq(2) == 3.0);
  CHECK(seq(3) == 1.0);  // the second schedule starts at its own step 0
  CHECK(seq(5) == 0.25);
}

TEST_CASE("CosineAnnealingWarmRestarts with a period past int64 stays finite") {
  const nestla::CosineAnnealingWarmRestarts s({.base_lr = 1.0, .T_0 = 1, .T_mult = std::int64_t(1) << 40});
  const double v = s(std::numeric_limits<std::int64_t>::max());
  CHECK(std::isfinite(v));
  CHECK(v >= 0.0);
  CHECK(v <= 1.0);
}

TEST_CASE("bad schedule options throw invalid_option naming the option and value") {
  using namespace nestla;
  auto message = [](auto&& build) -> std::string {
    try {
      build();
    } catch (const invalid_option& e) {
      return e.what();
    }
    return "(no exception)";
  };
  CHECK(message([] { StepLR({.step_size = 3}); }) == "nestla: StepLR: base_lr = nan is invalid (must be set, finite and >= 0)");
  CHECK(message([] { StepLR({.base_lr = 0.1}); }) == "nestla: StepLR: step_size = 0 is invalid (must be >= 1)");
  CHECK(message([] { StepLR({.base_lr = 0.1, .step_size = 2, .gamma = -1}); }).find("gamma = -1") != std::string::npos);
  CHECK(message([] { MultiStepLR({.base_lr = 0.1, .milestones = {5, 3}}); }) ==
        "nestla: MultiStepLR: milestones[1] = 3 is invalid (milestones must be non-decreasing; milestones[0] = 5)");
  CHECK(message([] { MultiStepLR({.base_lr = 0.1, .milestones = {-1}}); }).find("milestones[0] = -1") != std::string::npos);
  CHECK(message([] { ExponentialLR({.base_lr = 0.1}); }).find("ExponentialLR: gamma = nan") != std::string::npos);
  CHECK(message([] { CosineAnnealingLR({.base_lr = 0.1}); }).find("T_max = 0") != std::string::npos);
  CHECK(message([] { CosineAnnealingLR({.base_lr = 0.1, .T_max = 5, .eta_min = -1}); }).find("eta_min = -1") !=
        std::string::npos);
  CHECK(message([] { CosineAnnealingWarmRestarts({.base_lr = 0.1, .T_0 = 5, .T_mult = 0}); }).find("T_mult = 0") !=
        std::string::npos);
  CHECK(message([] { LinearLR({.base_lr = 0.1, .start_factor = 0}); }).find("start_factor = 0") != std::string::npos);
  CHECK(message([] { LinearLR({.base_lr = 0.1, .end_factor = 1.5}); }).find("end_factor = 1.5") != std::string::npos);
  CHECK(message([] { LinearLR({.base_lr = 0.1, .total_iters = 0}); }).find("total_iters = 0") != std::string::npos);
  CHECK(message([] { ConstantLR({.base_lr = 0.1, .factor = 2}); }).find("factor = 2") != std::string::npos);
  CHECK(message([] { PolynomialLR({.base_lr = 0.1, .power = -1}); }).find("power = -1") != std::string::npos);
  CHECK(message([] { OneCycleLR({.total_steps = 10}); }).find("max_lr = nan") != std::string::npos);
  CHECK(message([] { OneCycleLR({.max_lr = 0.1}); }).find("total_steps = 0") != std::string::npos);
  CHECK(message([] { OneCycleLR({.max_lr = 0.1, .total_steps = 10, .pct_start = 1.5}); }).find("pct_start = 1.5") !=
        std::string::npos);
  CHECK(message([] { OneCycleLR({.max_lr = 0.1, .total_steps = 10, .div_factor = 0}); }).find("div_factor = 0") !=
        std::string::npos);
  CHECK(message([] { OneCycleLR({.max_lr = 0.1, .total_steps = 10, .pct_start = 0.1}); })
            .find("pct_start = 0.10000000000000001 with total_steps = 10 is invalid") != std::string::npos);
  CHECK(message([] { SequentialLR({}, {}); }).find("no schedules") != std::string::npos);
  CHECK(message([] { SequentialLR({ExponentialLR({.base_lr = 1, .gamma = 1})}, {3}); }) ==
        "nestla: SequentialLR: 1 milestones for 1 schedules (need one fewer milestone than schedules)");
  CHECK(message([] {
          SequentialLR({ExponentialLR({.base_lr = 1, .gamma = 1}), ExponentialLR({.base_lr = 1, .gamma = 1}),
                        ExponentialLR({.base_lr = 1, .gamma = 1})},
                       {4, 4});
        }).find("milestones[1] = 4") != std::string::npos);
  CHECK(message([] { SequentialLR({SequentialLR::schedule{}}, {}); }).find("schedule 0 is empty") != std::string::npos);
}

TEST_CASE("steps outside a schedule throw out_of_range") {
  using namespace nestla;
  CHECK_THROWS_AS(StepLR({.base_lr = 0.1, .step_size = 2})(-1), std::out_of_range);
  const OneCycleLR one({.max_lr = 0.1, .total_steps = 10});
  CHECK_NOTHROW(one(10));  // PyTorch allows step() up to total_steps
  CHECK_THROWS_WITH_AS(one(11), "nestla: OneCycleLR: step 11 is past total_steps = 10", std::out_of_range);
  CHECK_THROWS_AS(one.momentum(11), std::out_of_range);
  // pct_start = 1: the annealing phase has zero length; only step total_steps reaches it.
  const OneCycleLR up({.max_lr = 0.1, .total_steps = 10, .pct_start = 1.0});
  CHECK(up(9) == doctest::Approx(0.1));
  CHECK_THROWS_AS(up(10), std::out_of_range);
}

TEST_CASE("a schedule drives the base optimizer's lr through set_lr") {
  // SGD without momentum and a constant gradient 1: theta_t = -sum_{u<t} lr(u).
  const nestla::CosineAnnealingLR s({.base_lr = 0.1, .T_max = 6, .eta_min = 0.01});
  nestla::SGD<double> opt;
  std::vector<double> w{0.0}, g{1.0};
  double expect = 0;
  for (std::int64_t t = 0; t < 10; ++t) {
    opt.set_lr(s(static_cast<std::int64_t>(opt.step_count())));
    opt.step(w, g);
    expect -= s(t);
  }
  CHECK(w[0] == doctest::Approx(expect).epsilon(1e-14));
  CHECK(opt.options().lr == s(9));
}

TEST_CASE("a schedule drives a Lookahead level's alpha through set_alpha") {
  // Lookahead(k = 2) over SGD, constant gradient 1, lr 1: each cycle moves the
  // fast weights by -2 from the slow weights, and the sync keeps alpha of it.
  const nestla::LinearLR alpha({.base_lr = 1.0, .start_factor = 0.25, .end_factor = 1.0, .total_iters = 3});
  nestla::Lookahead opt{nestla::SGD<double>{{.lr = 1.0}}, {.k = 2, .alpha = 0.5}};
  std::vector<double> w{0.0}, g{1.0};
  double slow = 0;
  for (int step = 0; step < 12; ++step) {
    if (opt.cycles_since_sync() == 0) opt.set_alpha(alpha(static_cast<std::int64_t>(opt.syncs())));
    if (opt.step(w, g)) {
      slow += opt.options().alpha * -2.0;
      CHECK(w[0] == doctest::Approx(slow).epsilon(1e-14));
    }
  }
  CHECK(opt.syncs() == 6);
  CHECK(opt.options().alpha == 1.0);
  CHECK(slow == doctest::Approx(-2.0 * (0.25 + 0.5 + 0.75 + 1 + 1 + 1)));
  // An alpha outside [0, 1] from a schedule is refused like any other.
  CHECK_THROWS_AS(opt.set_alpha(nestla::ExponentialLR({.base_lr = 1.0, .gamma = 2.0})(1)), nestla::invalid_option);
}
