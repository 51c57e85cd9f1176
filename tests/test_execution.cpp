// Worker threads split the fused pass without changing a bit of the result; no allocation after the first step.
#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "reference.hpp"

namespace {
std::atomic<long> allocations{0};
}  // namespace

// The replacements below pair malloc with free; GCC 12 sees a new-expression's
// pointer reach this free through inlining and warns of a mismatch there is not.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

void* operator new(std::size_t n) {
  ++allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

TEST_CASE("two and three threads give the bits of one") {
  // Sizes above the parallel threshold, not multiples of the split granularity.
  const std::vector<std::size_t> sizes{100003, 70001, 3, 150000};
  auto make = [] {
    return nestla::nested<2>(nestla::Adam<float>({.lr = 0.01, .amsgrad = true}),
                             {{.k = 2, .alpha = 0.5, .momentum = nestla::Momentum::pullback, .outer_momentum = 0.9},
                              {.k = 2, .alpha = 0.5, .momentum = nestla::Momentum::reset, .outer_momentum = 0.5,
                               .outer_nesterov = true}});
  };
  std::vector<std::vector<float>> results;
  for (unsigned threads : {1u, 2u, 3u}) {
    auto opt = make();
    opt.base().set_threads(threads);
    CHECK(opt.base().threads() == threads);
    std::vector<std::vector<float>> p, g;
    ref::grad_source src;
    for (auto n : sizes) p.emplace_back(n, 0.25f), g.emplace_back(n);
    for (int s = 0; s < 9; ++s) {
      for (auto& t : g)
        for (auto& x : t) x = static_cast<float>(src.next());
      opt.step(p, g);
    }
    std::vector<float> flat;
    for (auto& t : p) flat.insert(flat.end(), t.begin(), t.end());
    results.push_back(flat);
  }
  CHECK(results[0] == results[1]);
  CHECK(results[0] == results[2]);
}

TEST_CASE("no allocation after the first step, syncing steps included") {
  auto opt = nestla::nested<3>(nestla::Adam<float>({.lr = 0.01}),
                               {{.k = 2, .momentum = nestla::Momentum::pullback}, {.k = 2, .outer_momentum = 0.9}, {.k = 2}});
  std::vector<std::vector<float>> p{std::vector<float>(1000, 1.0f), std::vector<float>(17, 1.0f)};
  const std::vector<std::vector<float>> g{std::vector<float>(1000, 0.1f), std::vector<float>(17, 0.1f)};
  opt.step(p, g);
  const long before = allocations.load();
  for (int s = 0; s < 16; ++s) opt.step(p, g);
  CHECK(allocations.load() == before);
  CHECK(opt.syncs() == 2);
}

TEST_CASE("no allocation after the first step with gradient clipping, threaded") {
  for (int mode = 0; mode < 2; ++mode) {
    auto opt = nestla::nested<1>(nestla::Adam<float>({.lr = 0.01}), {{.k = 2}});
    opt.base().set_threads(2);
    if (mode == 0) opt.base().set_clip_grad_norm({.max_norm = 1.0, .norm_type = 2, .error_if_nonfinite = true});
    else opt.base().set_clip_grad_value(0.05);
    opt.base().set_skip_nonfinite(true);
    std::vector<std::vector<float>> p{std::vector<float>(100003, 1.0f), std::vector<float>(17, 1.0f)};
    const std::vector<std::vector<float>> g{std::vector<float>(100003, 0.1f), std::vector<float>(17, 0.1f)};
    opt.step(p, g);
    const long before = allocations.load();
    for (int s = 0; s < 6; ++s) opt.step(p, g);
    CHECK(allocations.load() == before);
  }
}
