// Shared harness: a container kind must give bit-identical results to std::vector on the same data.
#pragma once

#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <vector>

#include "reference.hpp"

namespace check {

template <class T>
using tensors = std::vector<std::vector<T>>;

template <class T>
struct trajectory {
  tensors<T> init;
  std::vector<tensors<T>> grads;  // per step
};

// Sizes that exercise the SIMD body, the scalar tail and tensors smaller than one SIMD batch.
inline const std::vector<std::size_t> default_sizes{37, 12, 1, 64, 5};

template <class T>
trajectory<T> make(const std::vector<std::size_t>& sizes = default_sizes, int steps = 13) {
  trajectory<T> tr;
  ref::grad_source src;
  for (auto n : sizes) {
    std::vector<T> p(n);
    for (auto& x : p) x = static_cast<T>(src.next());
    tr.init.push_back(p);
  }
  for (int s = 0; s < steps; ++s) {
    tensors<T> g;
    for (auto n : sizes) {
      std::vector<T> x(n);
      for (auto& v : x) v = static_cast<T>(src.next());
      g.push_back(x);
    }
    tr.grads.push_back(g);
  }
  return tr;
}

// Nested Lookahead over AMSGrad with pullback and reset: every state buffer and
// both fused sync paths are used within 13 steps.
template <class T>
auto make_optimizer() {
  return nestla::nested<2>(nestla::Adam<T>({.lr = 0.01, .weight_decay = 0.01, .amsgrad = true}),
                           {{.k = 3, .alpha = 0.5, .momentum = nestla::Momentum::pullback},
                            {.k = 2, .alpha = 0.8, .momentum = nestla::Momentum::reset}});
}

template <class T>
tensors<T> run_vector(const trajectory<T>& tr) {
  auto opt = make_optimizer<T>();
  auto p = tr.init;
  for (auto& g : tr.grads) opt.step(p, g);
  return p;
}

// params: the container-held parameters, initialized from tr.init by the caller.
// set_grads(step): puts tr.grads[step] into the container-held gradients.
// read(): the parameters back as std::vector tensors.
template <class T, class P, class G, class SetGrads, class Read>
void same_as_vector(const trajectory<T>& tr, P&& params, G&& grads, SetGrads set_grads, Read read) {
  auto opt = make_optimizer<T>();
  for (std::size_t s = 0; s < tr.grads.size(); ++s) {
    set_grads(s);
    opt.step(params, grads);
  }
  const auto expected = run_vector(tr);
  const auto got = read();
  REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == expected[i]);
  }
}

}  // namespace check
