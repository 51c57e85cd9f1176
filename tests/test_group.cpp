// The distributed step without MPI: a group of one worker that always communicates gives the single-process bits; groups are checked before anything changes.
#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "reference.hpp"
#include "single_worker_group.hpp"

using nestla::LookaheadOptions;
using nestla::Momentum;
using nestla_test::single_worker_group;

namespace {

std::string bytes(const auto& opt) {
  std::ostringstream os;
  opt.save(os);
  return os.str();
}

// Gives every level (base included) its own one-worker group.
template <class Opt>
void give_groups(Opt& opt) {
  opt.base().set_group(std::make_shared<single_worker_group>());
  if constexpr (Opt::depth > 0) opt.for_each_level([](auto& level) { level.set_group(std::make_shared<single_worker_group>()); });
}

template <class Opt>
void same_as_single_process(Opt plain, int steps, unsigned threads = 1) {
  Opt dist = plain;
  give_groups(dist);
  plain.base().set_threads(threads);
  dist.base().set_threads(threads);
  std::vector<std::vector<double>> p{std::vector<double>(37), std::vector<double>(3), std::vector<double>(100001)};
  for (auto& t : p)
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = 0.01 * double(i % 89) - 0.4;
  auto q = p;
  std::vector<std::vector<double>> g = p;
  ref::grad_source src;
  for (int s = 0; s < steps; ++s) {
    for (std::size_t t = 0; t < g.size(); ++t) src.fill(p[t], g[t]);
    REQUIRE(plain.step(p, g) == dist.step(q, g));
    REQUIRE(p == q);
  }
  CHECK(bytes(plain) == bytes(dist));
}

}  // namespace

TEST_CASE("one worker through the distributed step gives the single-process bits, at every depth and policy") {
  same_as_single_process(nestla::SGD<double>({.lr = 0.05, .momentum = 0.9, .nesterov = true}), 7);
  same_as_single_process(nestla::Adam<double>({.lr = 0.01}), 7, 2);
  for (Momentum pin : {Momentum::keep, Momentum::reset, Momentum::pullback})
    for (Momentum pout : {Momentum::keep, Momentum::pullback}) {
      INFO("policies ", nestla::to_string(pin), "/", nestla::to_string(pout));
      same_as_single_process(nestla::nested<2>(nestla::AdamW<double>({.lr = 0.01}),
                                               {{.k = 2, .alpha = 0.5, .momentum = pin, .outer_momentum = 0.9},
                                                {.k = 3, .alpha = 0.8, .momentum = pout}}),
                             20);
      same_as_single_process(nestla::nested<3>(nestla::SGD<double>({.lr = 0.05, .momentum = 0.9}),
                                               {{.k = 2, .alpha = 0.5, .momentum = pin},
                                                {.k = 2, .alpha = 0.7, .momentum = pout, .outer_momentum = 0.5,
                                                 .outer_nesterov = true},
                                                {.k = 2, .alpha = 1.0, .momentum = pin}}),
                             20, 3);
    }
}

TEST_CASE("a level without a group between levels with one: the local sync runs in the same pass") {
  auto plain = nestla::nested<3>(nestla::Adam<double>({.lr = 0.01}),
                                 {{.k = 2, .momentum = Momentum::pullback}, {.k = 2}, {.k = 2, .outer_momentum = 0.9}});
  auto dist = plain;
  dist.inner().inner().set_group(std::make_shared<single_worker_group>());  // level 1
  dist.set_group(std::make_shared<single_worker_group>());                  // level 3; level 2 has none
  std::vector<double> p(50, 0.3), q = p, g(50);
  ref::grad_source src;
  for (int s = 0; s < 24; ++s) {
    src.fill(p, g);
    plain.step(p, g);
    dist.step(q, g);
    REQUIRE(p == q);
  }
}

TEST_CASE("groups are counted: collectives and bytes per step") {
  auto opt = nestla::nested<2>(nestla::SGD<float>({.lr = 0.1}), {{.k = 2}, {.k = 3, .momentum = Momentum::reset}});
  auto g0 = std::make_shared<single_worker_group>(), g1 = std::make_shared<single_worker_group>(),
       g2 = std::make_shared<single_worker_group>();
  opt.base().set_group(g0);
  opt.inner().set_group(g1);
  opt.set_group(g2);
  std::vector<float> p(100, 1.0f), g(100, 0.5f);  // layout: 112 floats (padded to 64 bytes)
  for (int s = 0; s < 12; ++s) opt.step(p, g);
  // level 0: one sum a step over the gradients and 3 count slots
  CHECK(g0->stats().collectives == 12);
  CHECK(g0->stats().bytes == 12 * (112 + 3) * sizeof(float));
  CHECK(g1->stats().collectives == 6);
  // outermost: the check (allgather) and the broadcast of the first step, then 2 syncs;
  // only pullback sends first moments: reset sends none
  CHECK(g2->stats().collectives == 1 + 1 + 2);
  CHECK(g2->stats().bytes == 8 * (8 + 2 * (nestla::max_depth + 1)) + 112 * sizeof(float) + 2 * (112 + 3) * sizeof(float));
  CHECK(g2->stats().bytes_sent == 0);  // one worker sends nothing
}

TEST_CASE("groups that do not fit are rejected before anything changes") {
  SUBCASE("a device-memory group on a host optimizer") {
    nestla::Lookahead opt(nestla::Adam<float>(), {.k = 2});
    std::string m;
    try {
      opt.set_group(std::make_shared<single_worker_group>(nestla::memory_space::device));
    } catch (const nestla::invalid_option& e) {
      m = e.what();
    }
    CHECK(m.find("device memory") != std::string::npos);
    CHECK(opt.group() == nullptr);
  }
  SUBCASE("an inner level with a group, the outermost without") {
    auto opt = nestla::nested<2>(nestla::Adam<double>(), {{.k = 2}, {.k = 2}});
    opt.inner().set_group(std::make_shared<single_worker_group>());
    std::vector<double> p{1.0, 2.0}, g{0.1, 0.1};
    std::string m;
    try {
      opt.step(p, g);
    } catch (const nestla::comm_error& e) {
      m = e.what();
    }
    CAPTURE(m);
    CHECK(m.find("outermost level (2) has none") != std::string::npos);
    CHECK(!opt.base().initialized());
    CHECK(p == std::vector<double>{1.0, 2.0});
  }
  SUBCASE("a group that does not list this worker at its rank") {
    auto opt = nestla::nested<1>(nestla::Adam<double>(), {{.k = 2}});
    opt.base().set_group(std::make_shared<single_worker_group>(nestla::memory_space::host, 5));
    opt.set_group(std::make_shared<single_worker_group>(nestla::memory_space::host, 7));
    std::vector<double> p{1.0}, g{0.1};
    CHECK_THROWS_AS(opt.step(p, g), nestla::comm_error);
    CHECK(!opt.base().initialized());
  }
}
