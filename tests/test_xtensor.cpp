// xt::xarray, xt::xtensor, xt::xtensor_fixed and xt::adapt give results bit-identical to std::vector.
#include <doctest/doctest.h>

#include <nestla/xtensor.hpp>

#include <tuple>
#include <vector>
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xfixed.hpp>
#include <xtensor/xtensor.hpp>

#include "container_check.hpp"

TEST_CASE_TEMPLATE("xtensor containers and a tuple mixing them with std::vector match std::vector", T, float, double) {
  const auto tr = check::make<T>({37, 12, 1, 64, 5});
  auto fill = [](auto& x, const std::vector<T>& v) { std::copy(v.begin(), v.end(), x.data()); };
  xt::xarray<T> p0 = xt::zeros<T>({37});
  xt::xtensor<T, 2> p1 = xt::zeros<T>({3, 4});
  xt::xtensor_fixed<T, xt::xshape<1>> p2;
  std::vector<T> raw3 = tr.init[3];
  auto p3 = xt::adapt(raw3, std::vector<std::size_t>{4, 16});
  std::vector<T> p4 = tr.init[4];
  fill(p0, tr.init[0]);
  fill(p1, tr.init[1]);
  fill(p2, tr.init[2]);
  auto params = std::tie(p0, p1, p2, p3, p4);

  xt::xarray<T> g0 = xt::zeros<T>({37});
  xt::xtensor<T, 2, xt::layout_type::column_major> g1 = xt::zeros<T>({4, 3});
  xt::xtensor_fixed<T, xt::xshape<1>> g2;
  xt::xarray<T> g3 = xt::zeros<T>({64});
  std::vector<T> g4;
  auto grads = std::tie(g0, g1, g2, g3, g4);
  check::same_as_vector(
      tr, params, grads,
      [&](std::size_t s) {
        const auto& g = tr.grads[s];
        fill(g0, g[0]);
        fill(g1, g[1]);
        fill(g2, g[2]);
        fill(g3, g[3]);
        g4 = g[4];
      },
      [&] {
        auto to = [](const auto& e) { return std::vector<T>(e.data(), e.data() + e.size()); };
        return check::tensors<T>{to(p0), to(p1), to(p2), raw3, p4};
      });
}

static_assert(nestla::Tensor<xt::xarray<float>>);
static_assert(nestla::Tensor<xt::xtensor<double, 3>>);
