// Standard containers (vector, array, span, tuples, reference_wrapper) give results bit-identical to std::vector.
#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <new>
#include <span>
#include <tuple>
#include <vector>

#include "container_check.hpp"

TEST_CASE_TEMPLATE("std::array, std::span and a tuple mixing them match std::vector", T, float, double) {
  const auto tr = check::make<T>();  // sizes 37, 12, 1, 64, 5
  std::array<T, 37> a0;
  std::vector<T> a1 = tr.init[1];
  std::array<T, 1> a2;
  std::vector<T> store3 = tr.init[3];
  std::span<T> a3(store3);
  std::vector<T> a4 = tr.init[4];
  std::copy(tr.init[0].begin(), tr.init[0].end(), a0.begin());
  a2[0] = tr.init[2][0];
  auto params = std::tie(a0, a1, a2, a3, a4);

  std::array<T, 37> g0;
  std::vector<T> g1;
  std::array<T, 1> g2;
  std::vector<T> store_g3(64);
  std::span<const T> g3(store_g3);
  std::vector<T> g4;
  auto grads = std::tie(g0, g1, g2, g3, g4);
  check::same_as_vector(
      tr, params, grads,
      [&](std::size_t s) {
        const auto& g = tr.grads[s];
        std::copy(g[0].begin(), g[0].end(), g0.begin());
        g1 = g[1];
        g2[0] = g[2][0];
        std::copy(g[3].begin(), g[3].end(), store_g3.begin());
        g4 = g[4];
      },
      [&] {
        return check::tensors<T>{{a0.begin(), a0.end()}, a1, {a2[0]}, store3, a4};
      });
}

TEST_CASE_TEMPLATE("a vector of spans and a vector of reference_wrappers match std::vector", T, float, double) {
  const auto tr = check::make<T>();
  auto store = tr.init;
  std::vector<std::span<T>> params(store.begin(), store.end());
  check::tensors<T> gstore(tr.init.size());
  std::vector<std::reference_wrapper<std::vector<T>>> grads(gstore.begin(), gstore.end());
  check::same_as_vector(
      tr, params, grads, [&](std::size_t s) { gstore = tr.grads[s]; }, [&] { return store; });
}

TEST_CASE("a single tensor is a parameter set") {
  const auto tr = check::make<double>({100}, 13);
  auto p = tr.init[0];
  std::vector<double> g;
  check::same_as_vector(
      tr, p, g, [&](std::size_t s) { g = tr.grads[s][0]; }, [&] { return check::tensors<double>{p}; });
}

TEST_CASE("a nested collection (vector of tuples) flattens depth first") {
  const auto tr = check::make<float>({3, 4, 5, 6}, 13);
  auto s = tr.init;
  std::vector<std::tuple<std::vector<float>&, std::vector<float>&>> params{{s[0], s[1]}, {s[2], s[3]}};
  check::tensors<float> gs(4);
  std::vector<std::tuple<std::vector<float>&, std::vector<float>&>> grads{{gs[0], gs[1]}, {gs[2], gs[3]}};
  check::same_as_vector(
      tr, params, grads, [&](std::size_t k) { gs = tr.grads[k]; }, [&] { return s; });
}

TEST_CASE_TEMPLATE("std::vector with nestla::huge_page_allocator matches std::vector", T, float, double) {
  const auto tr = check::make<T>();
  using hvec = std::vector<T, nestla::huge_page_allocator<T>>;
  std::vector<hvec> params, grads(tr.init.size());
  for (const auto& t : tr.init) params.emplace_back(t.begin(), t.end());
  check::same_as_vector(
      tr, params, grads,
      [&](std::size_t s) {
        for (std::size_t i = 0; i < grads.size(); ++i) grads[i].assign(tr.grads[s][i].begin(), tr.grads[s][i].end());
      },
      [&] {
        check::tensors<T> out;
        for (const auto& p : params) out.emplace_back(p.begin(), p.end());
        return out;
      });
}

TEST_CASE("huge_page_allocator: cache-line alignment, 2 MiB alignment from 2 MiB, zero-size and overflow requests") {
  nestla::huge_page_allocator<float> a;
  float* small = a.allocate(3);
  CHECK(reinterpret_cast<std::uintptr_t>(small) % 64 == 0);
  a.deallocate(small, 3);
  const std::size_t big_n = (std::size_t(2) << 20) / sizeof(float);
  float* big = a.allocate(big_n);
  CHECK(reinterpret_cast<std::uintptr_t>(big) % (std::size_t(2) << 20) == 0);
  big[0] = 1.0f;
  big[big_n - 1] = 2.0f;  // the whole block is usable
  CHECK(big[0] + big[big_n - 1] == 3.0f);
  a.deallocate(big, big_n);
  float* none = a.allocate(0);
  CHECK(none != nullptr);
  a.deallocate(none, 0);
  CHECK_THROWS_AS((void)a.allocate(std::numeric_limits<std::size_t>::max() / 2), std::bad_array_new_length);
  CHECK(a == nestla::huge_page_allocator<double>());
}

static_assert(nestla::ParameterSet<std::vector<float>>);
static_assert(nestla::ParameterSet<std::vector<std::vector<double>>>);
static_assert(nestla::ParameterSet<std::tuple<std::vector<float>&, std::array<float, 3>>>);
static_assert(!nestla::ParameterSet<std::tuple<std::vector<float>, std::vector<double>>>);  // mixed scalars
static_assert(!nestla::ParameterSet<std::vector<int>>);
static_assert(!nestla::ParameterSet<int>);
