// The optimizers the checkpoint fuzz target loads into (base and nested, float and double), shared with the seed generator.
#pragma once

#include <nestla/nestla.hpp>

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace nestla_fuzz {

using nestla::Momentum;

// An input's first byte: which optimizer (low 4 bits), whether the target has
// stepped before the load (bit 4), and whether the input carries its own
// trailing CRC-32 (bit 7); otherwise the harness appends the right one, so
// mutations reach the parser instead of dying at the checksum.
inline constexpr unsigned variant_count = 16;
inline constexpr unsigned stepped_target_bit = 0x10;
inline constexpr unsigned raw_crc_bit = 0x80;

// The tensors of every variant: mixed sizes, an empty one, a tail past the SIMD width.
inline const std::vector<std::size_t>& default_sizes() {
  static const std::vector<std::size_t> sizes{5, 17, 0, 3};
  return sizes;
}

// Calls f(make) with a function that builds variant i.
template <class F>
void with_variant(unsigned i, F&& f) {
  switch (i % variant_count) {
    case 0: return f([] { return nestla::SGD<float>({.lr = 0.05}); });
    case 1: return f([] { return nestla::SGD<double>({.lr = 0.05, .momentum = 0.9, .nesterov = true}); });
    case 2: return f([] { return nestla::Adam<float>({.lr = 0.01}); });
    case 3: return f([] { return nestla::AdamW<double>({.lr = 0.01, .amsgrad = true}); });
    case 4:
      return f([] {
        return nestla::Lookahead(nestla::SGD<float>({.lr = 0.05, .momentum = 0.5, .dampening = 0.1}),
                                 {.k = 3, .alpha = 0.5, .momentum = Momentum::pullback});
      });
    case 5:
      return f([] {
        return nestla::Lookahead(nestla::Adam<double>({.lr = 0.01, .weight_decay = 0.1}),
                                 {.k = 2, .alpha = 0.8, .momentum = Momentum::reset});
      });
    case 6:
      return f([] {
        auto o = nestla::nested<2>(nestla::Adam<float>({.lr = 0.01, .amsgrad = true}),
                                   {{.k = 2, .momentum = Momentum::pullback}, {.k = 3, .momentum = Momentum::keep}});
        o.base().add_param_group({1, 3}, {.lr = 0.5});
        o.base().add_param_group({0}, {.weight_decay = 0.25});
        return o;
      });
    case 7:
      return f([] {
        return nestla::nested<2>(nestla::SGD<double>({.lr = 0.05, .momentum = 0.9}),
                                 {{.k = 2, .momentum = Momentum::keep}, {.k = 2, .momentum = Momentum::pullback}});
      });
    case 8:
      return f([] {
        return nestla::nested<3>(nestla::AdamW<float>({.lr = 0.01}), {{.k = 2, .momentum = Momentum::pullback},
                                                                      {.k = 2, .momentum = Momentum::reset},
                                                                      {.k = 2, .momentum = Momentum::keep}});
      });
    case 9:
      return f([] { return nestla::nested<3>(nestla::SGD<float>({.lr = 0.05}), {{.k = 2}, {.k = 3}, {.k = 2}}); });
    // The other update rules: each reads its own options and scalars (NAdam's
    // mu_product, Adagrad's and Rprop's state starting values).
    case 10: return f([] { return nestla::NAdam<double>({.lr = 0.01, .decoupled_weight_decay = true}); });
    case 11: return f([] { return nestla::ranger<float>({.lr = 0.01, .k = 2}); });
    case 12:
      return f([] {
        return nestla::Lookahead(nestla::RMSprop<float>({.lr = 0.01, .momentum = 0.9, .centered = true}),
                                 {.k = 2, .momentum = Momentum::pullback});
      });
    case 13: return f([] { return nestla::Adagrad<double>({.lr = 0.05, .initial_accumulator_value = 0.1}); });
    case 14: return f([] { return nestla::Lookahead(nestla::Rprop<float>({.lr = 0.02}), {.k = 3}); });
    default:
      return f([] { return nestla::Lookahead(nestla::Lion<float>({.lr = 1e-3}), {.k = 2, .momentum = Momentum::reset}); });
  }
}

// Deterministic tensors and gradients of the given sizes.
template <class T>
struct tensors {
  std::vector<std::vector<T>> p, g;
  std::uint64_t state = 0x9E3779B97F4A7C15ull;

  explicit tensors(const std::vector<std::size_t>& sizes) {
    for (auto n : sizes) {
      p.emplace_back(n);
      g.emplace_back(n);
      for (auto& x : p.back()) x = T(next());
    }
  }
  double next() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(state >> 11) / 9007199254740992.0 - 0.5;
  }
  template <class O>
  void step(O& opt, int n) {
    for (int s = 0; s < n; ++s) {
      for (auto& t : g)
        for (auto& x : t) x = T(next());
      opt.step(p, g);
    }
  }
};

template <class O>
std::string save_bytes(const O& opt) {
  std::ostringstream os;
  opt.save(os);
  return std::move(os).str();
}

// The state a target or seed starts from: fresh, or after 7 steps (mid-cycle for every level).
template <class Make>
auto make_state(Make make, bool stepped) {
  auto opt = make();
  if (stepped) {
    tensors<typename decltype(opt)::scalar_type> t(default_sizes());
    t.step(opt, 7);
  }
  return opt;
}

}  // namespace nestla_fuzz
