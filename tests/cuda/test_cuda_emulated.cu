// The CUDA kernels' bodies, run on the host by tests/cuda/emulated_device.hpp, give the host backend's bits at every depth and policy.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "../single_worker_group.hpp"
#include "emulated_device.hpp"

using nestla::LookaheadOptions;
using nestla::Momentum;
using Emu = nestla_test::emulated_device;

namespace {

double noise(std::uint64_t seed, std::uint64_t a, std::uint64_t b, std::uint64_t c) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ a * 0xBF58476D1CE4E5B9ull ^ b * 0x94D049BB133111EBull ^ c;
  x ^= x >> 31;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 32;
  return double(x >> 11) / double(1ull << 53) * 2 - 1;
}

// Parameters and gradients twice: plain vectors for the host backend, spans
// into one arena for the emulated device, shifted by a few elements to make
// pointers misaligned for vector loads.
template <class T>
struct twin_set {
  std::vector<std::vector<T>> hp, hg;
  std::vector<T> arena_p, arena_g;
  std::vector<std::span<T>> ep;
  std::vector<std::span<const T>> eg;

  twin_set(const std::vector<std::size_t>& sizes, std::uint64_t seed, std::size_t pshift = 0, std::size_t gshift = 0) {
    std::size_t total = 0;
    for (auto n : sizes) total += (n + 64) / 64 * 64 + 8;
    arena_p.assign(total + 16, T(0));
    arena_g.assign(total + 16, T(0));
    // Start on a 64-byte boundary so that the shifts alone decide alignment.
    auto aligned = [](std::vector<T>& v) {
      std::size_t k = 0;
      while (reinterpret_cast<std::uintptr_t>(v.data() + k) % 64) ++k;
      return k;
    };
    std::size_t ap = aligned(arena_p), ag = aligned(arena_g);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      hp.emplace_back(sizes[i]);
      hg.emplace_back(sizes[i]);
      for (std::size_t j = 0; j < sizes[i]; ++j) hp[i][j] = T(noise(seed, 0, i, j));
      T* p = arena_p.data() + ap + pshift;
      std::copy(hp[i].begin(), hp[i].end(), p);
      ep.emplace_back(p, sizes[i]);
      eg.emplace_back(arena_g.data() + ag + gshift, sizes[i]);
      const std::size_t step = (sizes[i] + 8 + 15) / 16 * 16;
      ap += step;
      ag += step;
    }
  }
  void make_grads(int step) {
    for (std::size_t i = 0; i < hg.size(); ++i)
      for (std::size_t j = 0; j < hg[i].size(); ++j) {
        hg[i][j] = T(noise(17, std::uint64_t(step) + 1, i, j) * std::pow(10.0, double((i + j) % 4) - 1));
        const_cast<T&>(eg[i][j]) = hg[i][j];
      }
  }
  bool same_params() const {
    for (std::size_t i = 0; i < hp.size(); ++i)
      if (std::memcmp(hp[i].data(), ep[i].data(), hp[i].size() * sizeof(T)) != 0) return false;
    return true;
  }
};

template <class Opt>
std::string checkpoint(const Opt& o) {
  std::ostringstream os;
  o.save(os);
  return os.str();
}

const std::vector<std::size_t> sizes{1, 3, 4, 5, 7, 13, 17, 64, 100, 1000, 4099, 9001};

template <class H, class E>
void run_and_compare(H& h, E& e, twin_set<float>& set, int steps) {
  for (int s = 0; s < steps; ++s) {
    set.make_grads(s);
    const bool a = h.step(set.hp, set.hg);
    const bool b = e.step(set.ep, set.eg);
    REQUIRE(a == b);
  }
  CHECK(set.same_params());
  CHECK(checkpoint(h) == checkpoint(e));
}

template <int D, class HB, class EB>
void check_depth(const char* name, HB hb, EB eb, const std::array<LookaheadOptions, 3>& lv, bool groups,
                 nestla::GroupOptions group = {.lr = 0.002, .weight_decay = 0.5}) {
  auto make = [&](auto base) {
    if constexpr (D == 0) return base;
    else return nestla::nested<D>(base, std::span<const LookaheadOptions>(lv.data(), D));
  };
  auto h = make(hb);
  auto e = make(eb);
  if (groups) {
    h.base().add_param_group({0, 9}, group);
    e.base().add_param_group({0, 9}, group);
  }
  twin_set<float> set(sizes, 3 + D);
  INFO(name, " at depth ", D, ", policies ", nestla::to_string(lv[0].momentum), "/", nestla::to_string(lv[1].momentum),
       "/", nestla::to_string(lv[2].momentum));
  run_and_compare(h, e, set, 40);
}

template <class HB, class EB>
void check_all(const char* name, HB hb, EB eb) {
  auto lv = [](Momentum a, Momentum b, Momentum c) {
    return std::array<LookaheadOptions, 3>{LookaheadOptions{.k = 3, .alpha = 0.5, .momentum = a},
                                           LookaheadOptions{.k = 2, .alpha = 0.8, .momentum = b},
                                           LookaheadOptions{.k = 2, .alpha = 0.6, .momentum = c}};
  };
  check_depth<0>(name, hb, eb, lv(Momentum::keep, Momentum::keep, Momentum::keep), true);
  using M3 = std::array<Momentum, 3>;
  for (const M3& p : {M3{Momentum::keep, Momentum::keep, Momentum::keep},
                      M3{Momentum::reset, Momentum::reset, Momentum::reset},
                      M3{Momentum::pullback, Momentum::pullback, Momentum::pullback},
                      M3{Momentum::pullback, Momentum::reset, Momentum::pullback}}) {
    // pullback needs a first moment (plain SGD has none: construction refuses it).
    if (!hb.has_first_moment() && (p[0] == Momentum::pullback || p[1] == Momentum::pullback || p[2] == Momentum::pullback)) continue;
    check_depth<1>(name, hb, eb, lv(p[0], p[1], p[2]), false);
    check_depth<2>(name, hb, eb, lv(p[0], p[1], p[2]), false);
    check_depth<3>(name, hb, eb, lv(p[0], p[1], p[2]), true);
  }
}

}  // namespace

TEST_CASE("emulated kernels: SGD at every depth and policy, bit for bit") {
  check_all("SGD", nestla::SGD<float>({.lr = 0.05}), nestla::SGD<float, Emu>({.lr = 0.05}));
  const nestla::SGDOptions m{.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 1e-3};
  check_all("SGD momentum", nestla::SGD<float>(m), nestla::SGD<float, Emu>(m));
  const nestla::SGDOptions n{.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-2, .nesterov = true};
  check_all("SGD nesterov", nestla::SGD<float>(n), nestla::SGD<float, Emu>(n));
}

TEST_CASE("emulated kernels: Adam and AdamW at every depth and policy, bit for bit") {
  const nestla::AdamOptions a{.lr = 1e-2, .weight_decay = 1e-2};
  check_all("Adam", nestla::Adam<float>(a), nestla::Adam<float, Emu>(a));
  const nestla::AdamOptions ams{.lr = 1e-2, .amsgrad = true};
  check_all("Adam amsgrad", nestla::Adam<float>(ams), nestla::Adam<float, Emu>(ams));
  const nestla::AdamWOptions w{.lr = 1e-2, .weight_decay = 0.1, .amsgrad = true};
  check_all("AdamW amsgrad", nestla::AdamW<float>(w), nestla::AdamW<float, Emu>(w));
}

TEST_CASE("emulated kernels: RAdam, NAdam, Adamax and Lion at every depth and policy, bit for bit") {
  // Each in both RAdam phases (rho_t > 5 from step 6) and with its options on.
  const nestla::RAdamOptions r{.lr = 1e-2, .weight_decay = 1e-2, .decoupled_weight_decay = true, .maximize = true};
  check_all("RAdam", nestla::RAdam<float>(r), nestla::RAdam<float, Emu>(r));
  const nestla::NAdamOptions n{.lr = 1e-2, .beta1 = 0.3, .weight_decay = 1e-2, .momentum_decay = 0.05};
  check_all("NAdam", nestla::NAdam<float>(n), nestla::NAdam<float, Emu>(n));
  const nestla::AdamaxOptions x{.lr = 1e-2, .weight_decay = 1e-2};
  check_all("Adamax", nestla::Adamax<float>(x), nestla::Adamax<float, Emu>(x));
  const nestla::LionOptions l{.lr = 1e-3, .weight_decay = 0.1};
  check_all("Lion", nestla::Lion<float>(l), nestla::Lion<float, Emu>(l));
}

// --- Adagrad, RMSprop, Adadelta, Rprop ---------------------------------------
namespace {
// A base without a first moment: every depth with the keep policy (the only
// one that applies), a parameter group at depths 0 and 3.
template <class HB, class EB>
void check_keep(const char* name, HB hb, EB eb, nestla::GroupOptions group) {
  const std::array<LookaheadOptions, 3> lv{LookaheadOptions{.k = 3, .alpha = 0.5}, LookaheadOptions{.k = 2, .alpha = 0.8},
                                           LookaheadOptions{.k = 2, .alpha = 0.6}};
  check_depth<0>(name, hb, eb, lv, true, group);
  check_depth<1>(name, hb, eb, lv, false, group);
  check_depth<2>(name, hb, eb, lv, false, group);
  check_depth<3>(name, hb, eb, lv, true, group);
}
}  // namespace

TEST_CASE("emulated kernels: Adagrad, RMSprop, Adadelta and Rprop, bit for bit") {
  const nestla::GroupOptions with_wd{.lr = 0.002, .weight_decay = 0.5};
  const nestla::AdagradOptions a{.lr = 0.05, .lr_decay = 0.01, .weight_decay = 1e-3, .initial_accumulator_value = 0.1};
  check_keep("Adagrad", nestla::Adagrad<float>(a), nestla::Adagrad<float, Emu>(a), with_wd);
  const nestla::AdadeltaOptions d{.lr = 0.5, .rho = 0.8, .weight_decay = 1e-3, .maximize = true};
  check_keep("Adadelta", nestla::Adadelta<float>(d), nestla::Adadelta<float, Emu>(d), with_wd);
  const nestla::RpropOptions r{.lr = 0.02, .etaminus = 0.4, .etaplus = 1.3, .step_size_min = 1e-3, .step_size_max = 0.1};
  check_keep("Rprop", nestla::Rprop<float>(r), nestla::Rprop<float, Emu>(r), {.lr = 0.002});
  const nestla::RMSpropOptions plain{.lr = 0.01, .centered = true};
  check_keep("RMSprop centered", nestla::RMSprop<float>(plain), nestla::RMSprop<float, Emu>(plain), with_wd);
  // With momentum its buffer is the first moment: every policy.
  const nestla::RMSpropOptions m{.lr = 0.01, .alpha = 0.9, .weight_decay = 1e-3, .momentum = 0.9};
  check_all("RMSprop momentum", nestla::RMSprop<float>(m), nestla::RMSprop<float, Emu>(m));
  const nestla::RMSpropOptions mc{.lr = 0.01, .alpha = 0.3, .momentum = 0.5, .centered = true, .maximize = true};
  check_all("RMSprop momentum centered", nestla::RMSprop<float>(mc), nestla::RMSprop<float, Emu>(mc));
}
// --- end of Adagrad, RMSprop, Adadelta, Rprop ------------------------------------

TEST_CASE("emulated kernels: outer momentum (heavy ball and Nesterov) at depths 1 to 3, bit for bit") {
  for (bool nesterov : {false, true}) {
    const std::array<LookaheadOptions, 3> lv{
        LookaheadOptions{.k = 3, .alpha = 0.5, .momentum = Momentum::pullback, .outer_momentum = 0.9, .outer_nesterov = nesterov},
        LookaheadOptions{.k = 2, .alpha = 0.8, .momentum = Momentum::reset},
        LookaheadOptions{.k = 2, .alpha = 1.0, .momentum = Momentum::pullback, .outer_momentum = 0.7, .outer_nesterov = !nesterov}};
    const nestla::AdamWOptions w{.lr = 1e-2, .weight_decay = 0.1};
    check_depth<1>("AdamW outer", nestla::AdamW<float>(w), nestla::AdamW<float, Emu>(w), lv, false);
    check_depth<3>("AdamW outer", nestla::AdamW<float>(w), nestla::AdamW<float, Emu>(w), lv, true);
    const nestla::SGDOptions m{.lr = 0.05, .momentum = 0.9};
    check_depth<2>("SGD outer", nestla::SGD<float>(m), nestla::SGD<float, Emu>(m), lv, false);
  }
}

TEST_CASE("emulated kernels: the distributed step's passes (gradient mean, pack, sync pass) give the host's bits") {
  // One worker that always communicates: every pass of the distributed step runs, and must give the plain step's bits.
  auto one = [] { return std::make_shared<nestla_test::single_worker_group>(); };
  const std::array<LookaheadOptions, 3> lv{
      LookaheadOptions{.k = 2, .alpha = 0.5, .momentum = Momentum::pullback, .outer_momentum = 0.9},
      LookaheadOptions{.k = 2, .alpha = 0.8, .momentum = Momentum::reset},
      LookaheadOptions{.k = 2, .alpha = 0.6, .momentum = Momentum::pullback, .outer_momentum = 0.5, .outer_nesterov = true}};
  auto h = nestla::nested<3>(nestla::Adam<float>({.lr = 1e-2}), std::span<const LookaheadOptions>(lv.data(), 3));
  auto e = nestla::nested<3>(nestla::Adam<float, Emu>({.lr = 1e-2}), std::span<const LookaheadOptions>(lv.data(), 3));
  e.base().set_group(one());
  e.inner().inner().set_group(one());
  e.set_group(one());  // level 2 has none: its sync runs locally in level 1's sync pass
  twin_set<float> set(sizes, 12, 1, 2);
  run_and_compare(h, e, set, 24);
}

TEST_CASE("emulated kernels: misaligned pointers, every tier, odd chunking") {
  for (auto [ps, gs] : {std::pair<std::size_t, std::size_t>{1, 0}, {0, 3}, {2, 2}, {4, 8}}) {
    for (auto tier : {nestla::cuda::detail::tier::small_params, nestla::cuda::detail::tier::large_params, nestla::cuda::detail::tier::device_blob}) {
      auto h = nestla::nested<2>(nestla::Adam<float>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::pullback}, {.k = 2}});
      auto e = nestla::nested<2>(nestla::Adam<float, Emu>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::pullback}, {.k = 2}});
      e.base().context().force_tier = tier;
      e.base().context().vectors_per_thread = 3;
      e.base().context().max_blocks = 2;
      twin_set<float> set(sizes, 5, ps, gs);
      INFO("parameter shift ", ps, ", gradient shift ", gs, ", tier ", nestla::cuda::detail::to_string(tier));
      run_and_compare(h, e, set, 9);
      CHECK(e.base().context().last_tier == tier);
    }
  }
}

TEST_CASE("emulated kernels: float64, and thousands of tensors through the device tier") {
  {
    auto h = nestla::nested<1>(nestla::Adam<double>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::pullback}});
    auto e = nestla::nested<1>(nestla::Adam<double, Emu>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::pullback}});
    std::vector<std::vector<double>> hp{std::vector<double>(1001, 0.5), std::vector<double>(3, -0.25)};
    std::vector<std::vector<double>> ep = hp, g{std::vector<double>(1001), std::vector<double>(3)};
    for (int s = 0; s < 7; ++s) {
      for (auto& t : g)
        for (std::size_t j = 0; j < t.size(); ++j) t[j] = noise(9, s, t.size(), j);
      h.step(hp, g);
      e.step(ep, g);
    }
    CHECK(hp == ep);
  }
  std::vector<std::size_t> many;
  for (std::size_t i = 0; i < 1200; ++i) many.push_back(1 + (i * 37) % 50);
  auto h = nestla::nested<1>(nestla::AdamW<float>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::reset}});
  auto e = nestla::nested<1>(nestla::AdamW<float, Emu>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::reset}});
  twin_set<float> set(many, 8);
  run_and_compare(h, e, set, 5);
  CHECK(e.base().context().last_tier == nestla::cuda::detail::tier::device_blob);
}

TEST_CASE("emulated kernels: the finiteness check finds NaN and infinity on every path") {
  nestla::Adam<float, Emu> e({.lr = 0.1});
  e.set_skip_nonfinite(true);
  twin_set<float> set({4099, 5, 64}, 4, 1, 0);
  set.make_grads(0);
  CHECK(e.step(set.ep, set.eg));
  for (auto [tensor, index, value] : {std::tuple<int, int, float>{1, 4, NAN}, {0, 100, INFINITY}, {0, 4098, -INFINITY},
                                      {2, 63, NAN}}) {
    set.make_grads(1);
    const_cast<float&>(set.eg[tensor][index]) = value;
    CHECK_FALSE(e.step(set.ep, set.eg));
  }
  CHECK(e.skipped_steps() == 4);
}

namespace {

template <class H, class E>
void check_clipping(H h, E e, int steps, const std::vector<std::size_t>& shape = sizes) {
  twin_set<float> set(shape, 6, 1, 3);
  for (int s = 0; s < steps; ++s) {
    set.make_grads(s);
    const std::vector<std::vector<float>> given = set.hg;
    REQUIRE(h.step(set.hp, set.hg) == e.step(set.ep, set.eg));
    const double a = h.base().last_grad_norm(), b = e.base().last_grad_norm();
    CHECK(std::memcmp(&a, &b, sizeof a) == 0);
    for (std::size_t i = 0; i < given.size(); ++i)  // the gradients are only read
      CHECK(std::memcmp(given[i].data(), set.eg[i].data(), given[i].size() * sizeof(float)) == 0);
  }
  CHECK(set.same_params());
  CHECK(checkpoint(h) == checkpoint(e));
}

}  // namespace

TEST_CASE("emulated kernels: gradient clipping by norm and by value, bit for bit, the coefficient read on the device") {
  for (double p : {2.0, 1.0, double(INFINITY), 3.0})
    for (double max_norm : {0.5, 1e9}) {
      for (bool guard : {false, true}) {  // with the guard, the norm is also copied to the host
        INFO("norm_type ", p, ", max_norm ", max_norm, ", guard ", guard);
        auto h = nestla::nested<2>(nestla::Adam<float>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::pullback}, {.k = 2}});
        auto e = nestla::nested<2>(nestla::Adam<float, Emu>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::pullback}, {.k = 2}});
        h.base().set_clip_grad_norm({.max_norm = max_norm, .norm_type = p});
        e.base().set_clip_grad_norm({.max_norm = max_norm, .norm_type = p});
        h.base().set_skip_nonfinite(guard);
        e.base().set_skip_nonfinite(guard);
        e.base().context().max_blocks = 2;
        check_clipping(std::move(h), std::move(e), 6);
      }
    }
  auto h = nestla::SGD<float>({.lr = 0.05, .momentum = 0.9});
  auto e = nestla::SGD<float, Emu>({.lr = 0.05, .momentum = 0.9});
  h.set_clip_grad_value(0.3);
  e.set_clip_grad_value(0.3);
  check_clipping(std::move(h), std::move(e), 4);

  // maximize: the kernel multiplies the coefficient it reads into the scale's sign.
  for (double max_norm : {0.5, 1e9}) {
    auto hm = nestla::Adam<float>({.lr = 1e-2, .maximize = true});
    auto em = nestla::Adam<float, Emu>({.lr = 1e-2, .maximize = true});
    hm.set_clip_grad_norm({.max_norm = max_norm});
    em.set_clip_grad_norm({.max_norm = max_norm});
    check_clipping(std::move(hm), std::move(em), 4);
  }

  // From norm to value clipping: the value step must not read the last norm's coefficient.
  auto h2 = nestla::Adam<float>({.lr = 1e-2});
  auto e2 = nestla::Adam<float, Emu>({.lr = 1e-2});
  twin_set<float> set(sizes, 8, 2, 1);
  for (int s = 0; s < 4; ++s) {
    if (s % 2 == 0) {
      h2.set_clip_grad_norm({.max_norm = 0.5});
      e2.set_clip_grad_norm({.max_norm = 0.5});
    } else {
      h2.set_clip_grad_value(0.05);
      e2.set_clip_grad_value(0.05);
    }
    set.make_grads(s);
    h2.step(set.hp, set.hg);
    e2.step(set.ep, set.eg);
  }
  CHECK(set.same_params());
}

TEST_CASE("emulated kernels: the gradient norm in float64, many tensors, and the non-finite paths") {
  std::vector<std::vector<double>> hp{std::vector<double>(9000, 0.5), std::vector<double>(3, -0.25), {}},
      ep = hp, g{std::vector<double>(9000), std::vector<double>(3), {}};
  nestla::AdamW<double> h({.lr = 1e-2});
  nestla::AdamW<double, Emu> e({.lr = 1e-2});
  h.set_clip_grad_norm({.max_norm = 2.0, .norm_type = 3.0});
  e.set_clip_grad_norm({.max_norm = 2.0, .norm_type = 3.0});
  for (int s = 0; s < 4; ++s) {
    for (auto& t : g)
      for (std::size_t j = 0; j < t.size(); ++j) t[j] = noise(11, s, t.size(), j);
    h.step(hp, g);
    e.step(ep, g);
    CHECK(h.last_grad_norm() == e.last_grad_norm());
  }
  CHECK(hp == ep);

  // Thousands of tensors: the metadata travels through the device tier.
  std::vector<std::size_t> many;
  for (std::size_t i = 0; i < 1200; ++i) many.push_back(1 + (i * 37) % 50);
  auto hm = nestla::Adam<float>({.lr = 1e-2});
  auto em = nestla::Adam<float, Emu>({.lr = 1e-2});
  hm.set_clip_grad_norm({.max_norm = 1.0});
  em.set_clip_grad_norm({.max_norm = 1.0});
  check_clipping(std::move(hm), std::move(em), 3, many);

  // error_if_nonfinite needs the norm on the host; a NaN gradient throws and changes nothing.
  nestla::Adam<float, Emu> x({.lr = 1e-2});
  x.set_clip_grad_norm({.max_norm = 1.0, .error_if_nonfinite = true});
  twin_set<float> set({4099, 5}, 4);
  set.make_grads(0);
  CHECK(x.step(set.ep, set.eg));
  set.make_grads(1);
  const_cast<float&>(set.eg[0][4000]) = NAN;
  const std::string before = checkpoint(x);
  CHECK_THROWS_AS(x.step(set.ep, set.eg), nestla::nonfinite_norm_error);
  CHECK(checkpoint(x) == before);
  CHECK(std::isnan(x.last_grad_norm()));
}

