// The CUDA backend on a GPU: the host backend's results at every depth and policy, checkpoints, streams, tiers, odd sizes and pointers.
// Without a GPU it prints why and exits with 77, which CTest reports as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <nestla/cuda.hpp>
#if defined(NESTLA_TEST_NCCL)
#include <nestla/nccl.hpp>
#endif

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

using nestla::LookaheadOptions;
using nestla::Momentum;
using Dev = nestla::cuda::device;
template <class T>
using dspan = nestla::cuda::device_span<T>;

namespace {

void ok(cudaError_t e) { NESTLA_CUDA_CHECK(e); }

// Deterministic values in [-1, 1): a hash of (seed, step, tensor, index).
double noise(std::uint64_t seed, std::uint64_t a, std::uint64_t b, std::uint64_t c) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ a * 0xBF58476D1CE4E5B9ull ^ b * 0x94D049BB133111EBull ^ c;
  x ^= x >> 31;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 32;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 32;
  return double(x >> 11) / double(1ull << 53) * 2 - 1;
}

// A parameter set on the host and its copy on the GPU. Device tensors sit in
// one allocation each for parameters and gradients, 256-byte aligned plus the
// given element shifts (to test misaligned pointers).
template <class T>
struct twin_set {
  std::vector<std::size_t> sizes;
  std::vector<std::vector<T>> hp, hg;
  T* dparams = nullptr;
  T* dgrads = nullptr;
  std::vector<dspan<T>> dp;
  std::vector<dspan<const T>> dg;
  std::uint64_t seed;

  twin_set(std::vector<std::size_t> s, std::uint64_t seed_, std::size_t pshift = 0, std::size_t gshift = 0)
      : sizes(std::move(s)), seed(seed_) {
    std::vector<std::size_t> at_p, at_g;
    std::size_t np = 0, ng = 0;
    for (auto n : sizes) {
      at_p.push_back(np + pshift);
      at_g.push_back(ng + gshift);
      const std::size_t span = (n + pshift + gshift + 64) / 64 * 64;
      np += span;
      ng += span;
    }
    ok(cudaMalloc(&dparams, std::max<std::size_t>(np, 1) * sizeof(T)));
    ok(cudaMalloc(&dgrads, std::max<std::size_t>(ng, 1) * sizeof(T)));
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      hp.emplace_back(sizes[i]);
      hg.emplace_back(sizes[i]);
      for (std::size_t j = 0; j < sizes[i]; ++j) hp[i][j] = T(noise(seed, 0, i, j));
      dp.emplace_back(dparams + at_p[i], sizes[i]);
      dg.emplace_back(dgrads + at_g[i], sizes[i]);
    }
    upload_params();
  }
  twin_set(const twin_set&) = delete;
  ~twin_set() {
    cudaFree(dparams);
    cudaFree(dgrads);
  }

  void upload_params() {
    for (std::size_t i = 0; i < sizes.size(); ++i)
      ok(cudaMemcpy(dp[i].data(), hp[i].data(), sizes[i] * sizeof(T), cudaMemcpyHostToDevice));
  }
  // Gradients of step s, with magnitudes spread over three decades.
  void make_grads(int step) {
    double scale[97];
    for (int k = 0; k < 97; ++k) scale[k] = std::pow(10.0, 3 * noise(seed + 7, k, 0, 0) - 1);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      for (std::size_t j = 0; j < sizes[i]; ++j)
        hg[i][j] = T(noise(seed, std::uint64_t(step) + 1, i, j) * scale[(i * 31 + j) % 97]);
      ok(cudaMemcpy(const_cast<T*>(dg[i].data()), hg[i].data(), sizes[i] * sizeof(T), cudaMemcpyHostToDevice));
    }
  }
  std::vector<std::vector<T>> device_params() const {
    ok(cudaDeviceSynchronize());
    std::vector<std::vector<T>> out;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      out.emplace_back(sizes[i]);
      ok(cudaMemcpy(out.back().data(), dp[i].data(), sizes[i] * sizeof(T), cudaMemcpyDeviceToHost));
    }
    return out;
  }
};

struct comparison {
  double rel = 0;        // max |gpu - cpu| / max |cpu|, over all tensors
  bool identical = true;  // every bit
};

template <class T>
comparison compare(const std::vector<std::vector<T>>& gpu, const std::vector<std::vector<T>>& cpu) {
  comparison c;
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < cpu.size(); ++i)
    for (std::size_t j = 0; j < cpu[i].size(); ++j) {
      diff = std::max(diff, std::abs(double(gpu[i][j]) - double(cpu[i][j])));
      scale = std::max(scale, std::abs(double(cpu[i][j])));
      if (std::memcmp(&gpu[i][j], &cpu[i][j], sizeof(T)) != 0) c.identical = false;
    }
  c.rel = scale > 0 ? diff / scale : diff;
  if (std::isnan(diff)) c.rel = 1e300;
  return c;
}

template <class Opt>
std::string checkpoint(const Opt& o) {
  std::ostringstream os;
  o.save(os);
  return os.str();
}

template <class HostOpt, class DevOpt, class T>
comparison run_twins(HostOpt& h, DevOpt& d, twin_set<T>& set, int steps, bool* checkpoints_equal = nullptr) {
  for (int s = 0; s < steps; ++s) {
    set.make_grads(s);
    const bool a = h.step(set.hp, set.hg);
    const bool b = d.step(set.dp, set.dg);
    REQUIRE(a == b);
  }
  const auto c = compare(set.device_params(), set.hp);
  if (checkpoints_equal) *checkpoints_equal = checkpoint(h) == checkpoint(d);
  return c;
}

const std::vector<std::size_t> mixed_sizes{1, 3, 4, 5, 7, 13, 17, 64, 100, 1000, 4099, 30001};

const std::array<LookaheadOptions, 3> levels_for(Momentum a, Momentum b, Momentum c) {
  return {LookaheadOptions{.k = 3, .alpha = 0.5, .momentum = a}, LookaheadOptions{.k = 2, .alpha = 0.8, .momentum = b},
          LookaheadOptions{.k = 2, .alpha = 0.6, .momentum = c}};
}

template <int D, class HostBase, class DevBase>
void check_depth(const char* name, HostBase hb, DevBase db, const std::array<LookaheadOptions, 3>& levels,
                 const char* policy, bool groups) {
  auto h = [&] {
    if constexpr (D == 0) return hb;
    else return nestla::nested<D>(hb, std::span<const LookaheadOptions>(levels.data(), D));
  }();
  auto d = [&] {
    if constexpr (D == 0) return db;
    else return nestla::nested<D>(db, std::span<const LookaheadOptions>(levels.data(), D));
  }();
  if (groups) {
    h.base().add_param_group({1, 9}, {.lr = 0.002});
    d.base().add_param_group({1, 9}, {.lr = 0.002});
  }
  twin_set<float> set(mixed_sizes, 11 + D);
  bool same_state = false;
  const auto c = run_twins(h, d, set, 100, &same_state);
  // doctest prints a const char* as its address: strings, so that the names reach the log
  // (benchmarks/gpu/device_check.sh reads these lines).
  INFO(std::string(name), " depth ", D, " policy ", std::string(policy), std::string(groups ? " with a param group" : ""));
  CHECK(c.rel < 1e-6);
  MESSAGE(std::string(name), " depth ", D, " ", std::string(policy), ": max rel err ", c.rel,
          std::string(c.identical ? ", parameters bit-identical" : ""),
          std::string(same_state ? ", whole state bit-identical" : ", state differs in some bits"));
}

template <class HostBase, class DevBase>
void check_all_depths(const char* name, HostBase hb, DevBase db) {
  check_depth<0>(name, hb, db, levels_for(Momentum::keep, Momentum::keep, Momentum::keep), "-", false);
  check_depth<0>(name, hb, db, levels_for(Momentum::keep, Momentum::keep, Momentum::keep), "-", true);
  const std::array<std::pair<const char*, std::array<Momentum, 3>>, 4> policies{{
      {"keep", {Momentum::keep, Momentum::keep, Momentum::keep}},
      {"reset", {Momentum::reset, Momentum::reset, Momentum::reset}},
      {"pullback", {Momentum::pullback, Momentum::pullback, Momentum::pullback}},
      {"mixed", {Momentum::pullback, Momentum::reset, Momentum::pullback}},
  }};
  for (const auto& [pname, p] : policies) {
    // pullback needs a first moment (plain SGD has none: construction refuses it).
    if (!hb.has_first_moment() && (p[0] == Momentum::pullback || p[1] == Momentum::pullback || p[2] == Momentum::pullback)) continue;
    const auto lv = levels_for(p[0], p[1], p[2]);
    check_depth<1>(name, hb, db, lv, pname, false);
    check_depth<2>(name, hb, db, lv, pname, false);
    check_depth<3>(name, hb, db, lv, pname, pname == std::string("mixed"));
  }
}

__device__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Keeps the stream busy for ns nanoseconds, then writes the gradients.
__global__ void spin_then_fill(float* g, std::size_t n, float value, unsigned long long ns) {
  const unsigned long long start = global_ns();
  while (global_ns() - start < ns) {
  }
  for (std::size_t i = threadIdx.x; i < n; i += blockDim.x) g[i] = value;
}

}  // namespace

TEST_CASE("SGD on the GPU matches the host at every depth and policy") {
  check_all_depths("SGD", nestla::SGD<float>({.lr = 0.05}), nestla::SGD<float, Dev>({.lr = 0.05}));
  const nestla::SGDOptions mom{.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 1e-3};
  check_all_depths("SGD momentum", nestla::SGD<float>(mom), nestla::SGD<float, Dev>(mom));
  const nestla::SGDOptions nes{.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-2, .nesterov = true};
  check_all_depths("SGD nesterov", nestla::SGD<float>(nes), nestla::SGD<float, Dev>(nes));
}

TEST_CASE("Adam and AdamW on the GPU match the host at every depth and policy") {
  const nestla::AdamOptions a{.lr = 1e-2, .weight_decay = 1e-2};
  check_all_depths("Adam", nestla::Adam<float>(a), nestla::Adam<float, Dev>(a));
  const nestla::AdamOptions ams{.lr = 1e-2, .amsgrad = true};
  check_all_depths("Adam amsgrad", nestla::Adam<float>(ams), nestla::Adam<float, Dev>(ams));
  const nestla::AdamWOptions w{.lr = 1e-2, .weight_decay = 0.1};
  check_all_depths("AdamW", nestla::AdamW<float>(w), nestla::AdamW<float, Dev>(w));
  const nestla::AdamWOptions wa{.lr = 1e-2, .weight_decay = 0.1, .amsgrad = true};
  check_all_depths("AdamW amsgrad", nestla::AdamW<float>(wa), nestla::AdamW<float, Dev>(wa));
}

TEST_CASE("RAdam, NAdam, Adamax and Lion on the GPU match the host at every depth and policy") {
  const nestla::RAdamOptions r{.lr = 1e-2, .weight_decay = 1e-2, .decoupled_weight_decay = true, .maximize = true};
  check_all_depths("RAdam", nestla::RAdam<float>(r), nestla::RAdam<float, Dev>(r));
  const nestla::NAdamOptions n{.lr = 1e-2, .beta1 = 0.3, .weight_decay = 1e-2, .momentum_decay = 0.05};
  check_all_depths("NAdam", nestla::NAdam<float>(n), nestla::NAdam<float, Dev>(n));
  const nestla::AdamaxOptions x{.lr = 1e-2, .weight_decay = 1e-2};
  check_all_depths("Adamax", nestla::Adamax<float>(x), nestla::Adamax<float, Dev>(x));
  const nestla::LionOptions l{.lr = 1e-3, .weight_decay = 0.1};
  check_all_depths("Lion", nestla::Lion<float>(l), nestla::Lion<float, Dev>(l));
}

// --- Adagrad, RMSprop, Adadelta, Rprop ---------------------------------------
namespace {
// A base without a first moment: the keep policy (the only one that applies) at every depth.
template <class HostBase, class DevBase>
void check_keep_depths(const char* name, HostBase hb, DevBase db) {
  const auto lv = levels_for(Momentum::keep, Momentum::keep, Momentum::keep);
  check_depth<0>(name, hb, db, lv, "-", true);
  check_depth<1>(name, hb, db, lv, "keep", false);
  check_depth<2>(name, hb, db, lv, "keep", false);
  check_depth<3>(name, hb, db, lv, "keep", true);
}
}  // namespace

TEST_CASE("Adagrad, RMSprop, Adadelta and Rprop on the GPU match the host") {
  const nestla::AdagradOptions a{.lr = 0.05, .lr_decay = 0.01, .weight_decay = 1e-3, .initial_accumulator_value = 0.1};
  check_keep_depths("Adagrad", nestla::Adagrad<float>(a), nestla::Adagrad<float, Dev>(a));
  const nestla::AdadeltaOptions d{.lr = 0.5, .rho = 0.8, .weight_decay = 1e-3};
  check_keep_depths("Adadelta", nestla::Adadelta<float>(d), nestla::Adadelta<float, Dev>(d));
  const nestla::RpropOptions r{.lr = 0.02, .etaminus = 0.4, .etaplus = 1.3, .step_size_min = 1e-3, .step_size_max = 0.1};
  check_keep_depths("Rprop", nestla::Rprop<float>(r), nestla::Rprop<float, Dev>(r));
  const nestla::RMSpropOptions c{.lr = 0.01, .centered = true};
  check_keep_depths("RMSprop centered", nestla::RMSprop<float>(c), nestla::RMSprop<float, Dev>(c));
  const nestla::RMSpropOptions m{.lr = 0.01, .alpha = 0.3, .weight_decay = 1e-3, .momentum = 0.9, .centered = true};
  check_all_depths("RMSprop momentum centered", nestla::RMSprop<float>(m), nestla::RMSprop<float, Dev>(m));
}
// --- end of Adagrad, RMSprop, Adadelta, Rprop ------------------------------------


TEST_CASE("outer momentum (heavy ball, Nesterov) on the GPU matches the host") {
  const std::array<LookaheadOptions, 3> lv{
      LookaheadOptions{.k = 3, .alpha = 0.5, .momentum = Momentum::pullback, .outer_momentum = 0.9},
      LookaheadOptions{.k = 2, .alpha = 0.8, .momentum = Momentum::reset},
      LookaheadOptions{.k = 2, .alpha = 1.0, .outer_momentum = 0.9, .outer_nesterov = true}};
  const nestla::AdamWOptions w{.lr = 1e-2, .weight_decay = 0.1};
  check_depth<1>("AdamW outer", nestla::AdamW<float>(w), nestla::AdamW<float, Dev>(w), lv, "outer", false);
  check_depth<3>("AdamW outer", nestla::AdamW<float>(w), nestla::AdamW<float, Dev>(w), lv, "outer", true);
}

TEST_CASE("float64 on the GPU matches the host") {
  auto h = nestla::nested<2>(nestla::Adam<double>({.lr = 1e-2, .amsgrad = true}),
                             {{.k = 2, .momentum = Momentum::pullback}, {.k = 3, .momentum = Momentum::reset}});
  auto d = nestla::nested<2>(nestla::Adam<double, Dev>({.lr = 1e-2, .amsgrad = true}),
                             {{.k = 2, .momentum = Momentum::pullback}, {.k = 3, .momentum = Momentum::reset}});
  twin_set<double> set(mixed_sizes, 5);
  const auto c = run_twins(h, d, set, 60);
  CHECK(c.rel < 1e-12);
}

TEST_CASE("misaligned pointers and odd sizes take the element path with the same results") {
  for (auto [ps, gs] : {std::pair<std::size_t, std::size_t>{1, 0}, {0, 3}, {2, 2}, {1, 1}}) {
    auto h = nestla::nested<2>(nestla::Adam<float>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::pullback}, {.k = 2}});
    auto d = nestla::nested<2>(nestla::Adam<float, Dev>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::pullback}, {.k = 2}});
    twin_set<float> set(mixed_sizes, 21, ps, gs);
    const auto c = run_twins(h, d, set, 30);
    INFO("parameter shift ", ps, ", gradient shift ", gs);
    CHECK(c.rel < 1e-6);
  }
}

TEST_CASE("every tier and tuning gives the same bits") {
  std::vector<std::vector<std::vector<float>>> results;
  struct setting {
    std::optional<nestla::cuda::detail::tier> tier;
    unsigned vectors, blocks_per_sm;
  };
  for (const setting st : {setting{std::nullopt, 2, 0}, setting{nestla::cuda::detail::tier::large_params, 2, 0},
                           setting{nestla::cuda::detail::tier::device_blob, 2, 0}, setting{std::nullopt, 1, 1},
                           setting{std::nullopt, 8, 0}, setting{nestla::cuda::detail::tier::device_blob, 3, 1}}) {
    auto d = nestla::nested<2>(nestla::Adam<float, Dev>({.lr = 1e-2}),
                               {{.k = 2, .momentum = Momentum::pullback}, {.k = 2, .momentum = Momentum::reset}});
    auto& ctx = d.base().context();
    ctx.force_tier = st.tier;
    ctx.vectors_per_thread = st.vectors;
    ctx.blocks_per_sm = st.blocks_per_sm;
    twin_set<float> set({3, 5000, 1, 3000000, 77, 129}, 3);
    for (int s = 0; s < 12; ++s) {
      set.make_grads(s);
      d.step(set.dp, set.dg);
    }
    if (st.tier) CHECK(ctx.last_launch().tier == *st.tier);
    else CHECK(ctx.last_launch().tier == nestla::cuda::detail::tier::small_params);
    results.push_back(set.device_params());
  }
  for (std::size_t i = 1; i < results.size(); ++i) CHECK(compare(results[i], results[0]).identical);
}

TEST_CASE("thousands of tensors go through device memory and match the host") {
  std::vector<std::size_t> sizes;
  for (std::size_t i = 0; i < 3000; ++i) sizes.push_back(1 + (i * 37) % 50);
  auto h = nestla::nested<1>(nestla::AdamW<float>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::pullback}});
  auto d = nestla::nested<1>(nestla::AdamW<float, Dev>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::pullback}});
  twin_set<float> set(sizes, 9);
  const auto c = run_twins(h, d, set, 10);
  CHECK(d.base().context().last_launch().tier == nestla::cuda::detail::tier::device_blob);
  CHECK(c.rel < 1e-6);
}

TEST_CASE("a tuple parameter set works as on the host") {
  twin_set<float> set({10, 20}, 4);
  nestla::Adam<float> h({.lr = 0.1});
  nestla::Adam<float, Dev> d({.lr = 0.1});
  for (int s = 0; s < 5; ++s) {
    set.make_grads(s);
    h.step(std::tie(set.hp[0], set.hp[1]), std::tie(set.hg[0], set.hg[1]));
    d.step(std::make_tuple(set.dp[0], set.dp[1]), std::make_tuple(set.dg[0], set.dg[1]));
  }
  CHECK(compare(set.device_params(), set.hp).rel < 1e-6);
}

TEST_CASE("checkpoints round-trip bit for bit, and move between the GPU and the host") {
  auto make_dev = [] {
    return nestla::nested<2>(nestla::Adam<float, Dev>({.lr = 1e-2, .amsgrad = true}),
                             {{.k = 3, .momentum = Momentum::pullback}, {.k = 2, .momentum = Momentum::reset}});
  };
  twin_set<float> set(mixed_sizes, 31);
  auto a = make_dev();
  for (int s = 0; s < 23; ++s) {
    set.make_grads(s);
    a.step(set.dp, set.dg);
  }
  const std::string saved = checkpoint(a);
  const auto params_at_save = set.device_params();
  for (int s = 23; s < 40; ++s) {
    set.make_grads(s);
    a.step(set.dp, set.dg);
  }
  const auto params_a = set.device_params();
  const std::string final_a = checkpoint(a);

  // Reload on the GPU and continue from the saved parameters.
  auto b = make_dev();
  std::istringstream is(saved);
  b.load(is);
  CHECK(checkpoint(b) == saved);
  set.hp = params_at_save;
  set.upload_params();
  for (int s = 23; s < 40; ++s) {
    set.make_grads(s);
    b.step(set.dp, set.dg);
  }
  CHECK(compare(set.device_params(), params_a).identical);
  CHECK(checkpoint(b) == final_a);

  // The same checkpoint continues on the host backend.
  auto h = nestla::nested<2>(nestla::Adam<float>({.lr = 1e-2, .amsgrad = true}),
                             {{.k = 3, .momentum = Momentum::pullback}, {.k = 2, .momentum = Momentum::reset}});
  std::istringstream is2(saved);
  h.load(is2);
  set.hp = params_at_save;
  for (int s = 23; s < 40; ++s) {
    set.make_grads(s);
    h.step(set.hp, set.hg);
  }
  CHECK(compare(params_a, set.hp).rel < 1e-6);
}

TEST_CASE("slow weights swap and copy as on the host") {
  auto h = nestla::nested<2>(nestla::SGD<float>({.lr = 0.1, .momentum = 0.5}), {{.k = 2}, {.k = 2}});
  auto d = nestla::nested<2>(nestla::SGD<float, Dev>({.lr = 0.1, .momentum = 0.5}), {{.k = 2}, {.k = 2}});
  twin_set<float> set(mixed_sizes, 41);
  run_twins(h, d, set, 7);
  h.swap_slow_weights(set.hp);
  d.swap_slow_weights(set.dp);
  CHECK(compare(set.device_params(), set.hp).identical);
  h.swap_slow_weights(set.hp);
  d.swap_slow_weights(set.dp);
  h.inner().copy_slow_weights_to(set.hp);
  d.inner().copy_slow_weights_to(set.dp);
  CHECK(compare(set.device_params(), set.hp).identical);
}

TEST_CASE("the non-finite guard skips a step on the GPU as on the host") {
  nestla::Adam<float, Dev> d({.lr = 0.1});
  d.set_skip_nonfinite(true);
  twin_set<float> set({4099, 5}, 51);
  set.make_grads(0);
  CHECK(d.step(set.dp, set.dg));
  const auto before = set.device_params();
  for (auto [tensor, index, value] : {std::tuple<int, int, float>{1, 4, NAN}, {0, 100, INFINITY}, {0, 4098, -INFINITY}}) {
    set.make_grads(1);
    set.hg[tensor][index] = value;
    ok(cudaMemcpy(const_cast<float*>(set.dg[tensor].data()), set.hg[tensor].data(), set.hg[tensor].size() * sizeof(float),
                  cudaMemcpyHostToDevice));
    CHECK_FALSE(d.step(set.dp, set.dg));
    CHECK(compare(set.device_params(), before).identical);
  }
  CHECK(d.skipped_steps() == 3);
  CHECK(d.step_count() == 1);
  set.make_grads(2);
  CHECK(d.step(set.dp, set.dg));
}

TEST_CASE("gradient clipping on the GPU: the host's bits, the coefficient read on the device") {
  for (double p : {2.0, 1.0, double(INFINITY), 3.0})
    for (double max_norm : {0.5, 1e9}) {
      INFO("norm_type ", p, ", max_norm ", max_norm);
      auto h = nestla::nested<1>(nestla::Adam<float>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::pullback}});
      auto d = nestla::nested<1>(nestla::Adam<float, Dev>({.lr = 1e-2}), {{.k = 2, .momentum = Momentum::pullback}});
      h.base().set_clip_grad_norm({.max_norm = max_norm, .norm_type = p});
      d.base().set_clip_grad_norm({.max_norm = max_norm, .norm_type = p});
      twin_set<float> set(mixed_sizes, 81);
      for (int s = 0; s < 5; ++s) {
        set.make_grads(s);
        h.step(set.hp, set.hg);
        d.step(set.dp, set.dg);
        const double a = h.base().last_grad_norm(), b = d.base().last_grad_norm();
        // CUDA's pow is not glibc's: other p may differ in the last bits.
        if (p == 3.0) CHECK(std::abs(a - b) <= 1e-6 * a);
        else CHECK(std::memcmp(&a, &b, sizeof a) == 0);
      }
      const auto c = compare(set.device_params(), set.hp);
      if (p == 3.0) CHECK(c.rel < 1e-5);
      else CHECK(c.identical);
    }
  nestla::SGD<double> h({.lr = 0.05, .momentum = 0.9});
  nestla::SGD<double, Dev> d({.lr = 0.05, .momentum = 0.9});
  h.set_clip_grad_value(0.3);
  d.set_clip_grad_value(0.3);
  twin_set<double> set(mixed_sizes, 82);
  CHECK(run_twins(h, d, set, 4).identical);
}

TEST_CASE("clipping by norm does not wait for the GPU; error_if_nonfinite does, and throws") {
  cudaStream_t s;
  ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  twin_set<float> set({1000, 33}, 83);
  nestla::Adam<float, Dev> d({.lr = 0.1});
  d.context().stream = s;
  d.set_clip_grad_norm({.max_norm = 1.0});
  set.make_grads(0);
  d.step(set.dp, set.dg);
  ok(cudaStreamSynchronize(s));
  spin_then_fill<<<1, 256, 0, s>>>(const_cast<float*>(set.dg[0].data()), set.sizes[0], 0.5f, 300'000'000ull);
  const auto t0 = std::chrono::steady_clock::now();
  d.step(set.dp, set.dg);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  CHECK(ms < 100);
  CHECK(cudaStreamQuery(s) == cudaErrorNotReady);
  MESSAGE("a clipped step returned after ", ms, " ms while the stream was busy");
  ok(cudaStreamSynchronize(s));
  d.set_clip_grad_norm({.max_norm = 1.0, .error_if_nonfinite = true});
  set.hg[1][3] = NAN;
  ok(cudaMemcpy(const_cast<float*>(set.dg[1].data()), set.hg[1].data(), set.hg[1].size() * sizeof(float),
                cudaMemcpyHostToDevice));
  const auto before = set.device_params();
  CHECK_THROWS_AS(d.step(set.dp, set.dg), nestla::nonfinite_norm_error);
  CHECK(compare(set.device_params(), before).identical);
  CHECK(d.step_count() == 2);
  ok(cudaStreamDestroy(s));
}

TEST_CASE("host memory is refused before anything changes") {
  int pageable = 0;
  ok(cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess, 0));
  if (pageable) {
    MESSAGE("this GPU reads pageable host memory (HMM or ATS): host pointers are accepted, nothing to refuse");
    return;
  }
  nestla::Adam<float, Dev> d;
  std::vector<float> p(10), g(10);
  CHECK_THROWS_WITH_AS(d.step(p, g), doctest::Contains("is host memory the GPU cannot read"), nestla::layout_error);
  CHECK(!d.initialized());
  twin_set<float> set({10}, 1);
  std::vector<dspan<float>> dp{set.dp[0]};
  std::vector<dspan<const float>> hg{dspan<const float>(g.data(), g.size())};
  CHECK_THROWS_WITH_AS(d.step(dp, hg), doctest::Contains("gradient tensor 0"), nestla::layout_error);
  CHECK(!d.initialized());
}

TEST_CASE("steps run on the user's stream, in order, without waiting for the GPU") {
  cudaStream_t s;
  ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (auto tier : {std::optional<nestla::cuda::detail::tier>{}, std::optional{nestla::cuda::detail::tier::device_blob}}) {
    twin_set<float> set({1000, 33}, 61);
    nestla::Adam<float> h({.lr = 0.1});
    nestla::Adam<float, Dev> d({.lr = 0.1});
    d.base().context().stream = s;
    d.base().context().force_tier = tier;
    set.make_grads(0);
    h.step(set.hp, set.hg);
    d.step(set.dp, set.dg);  // the first step allocates, and waits for that
    ok(cudaStreamSynchronize(s));
    // The gradients are written on the stream after a long wait; a step that
    // did not run after that writer would read the old gradients.
    for (std::size_t i = 0; i < 2; ++i) {
      spin_then_fill<<<1, 256, 0, s>>>(const_cast<float*>(set.dg[i].data()), set.sizes[i], 0.5f,
                                       i == 0 ? 300'000'000ull : 0ull);
      std::fill(set.hg[i].begin(), set.hg[i].end(), 0.5f);
    }
    if (const cudaError_t e = cudaGetLastError(); e != cudaErrorNotReady) ok(e);  // NotReady: the query below, last round
    const auto t0 = std::chrono::steady_clock::now();
    d.step(set.dp, set.dg);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    CHECK(ms < 100);  // the GPU is busy for 300 ms: the step did not wait for it
    CHECK(cudaStreamQuery(s) == cudaErrorNotReady);
    h.step(set.hp, set.hg);
    ok(cudaStreamSynchronize(s));
    CHECK(compare(set.device_params(), set.hp).identical);
    MESSAGE("step() returned after ", ms, " ms while the stream was busy (", std::string(tier ? "device_blob" : "small_params"), ")");
  }
  ok(cudaStreamDestroy(s));
}

TEST_CASE("a step is one kernel and no synchronization: it can be captured into a CUDA graph") {
  cudaStream_t s;
  ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  twin_set<float> set(mixed_sizes, 71);
  auto d = nestla::nested<2>(nestla::Adam<float, Dev>({.lr = 1e-2}), {{.k = 1}, {.k = 2, .momentum = Momentum::reset}});
  d.base().context().stream = s;
  set.make_grads(0);
  d.step(set.dp, set.dg);
  ok(cudaStreamSynchronize(s));
  for (int i = 0; i < 2; ++i) {  // a step syncing level 1, then one syncing both
    cudaGraph_t graph;
    ok(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    d.step(set.dp, set.dg);
    ok(cudaStreamEndCapture(s, &graph));
    std::size_t nodes = 0;
    ok(cudaGraphGetNodes(graph, nullptr, &nodes));
    CHECK(nodes == 1);
    cudaGraphNode_t node;
    std::size_t one = 1;
    ok(cudaGraphGetNodes(graph, &node, &one));
    cudaGraphNodeType type;
    ok(cudaGraphNodeGetType(node, &type));
    CHECK(type == cudaGraphNodeTypeKernel);
    ok(cudaGraphDestroy(graph));
  }
  ok(cudaStreamDestroy(s));
}

TEST_CASE("the ResNet-18 parameter set fits one launch with parameters inline") {
  const std::vector<std::size_t> sizes{1728, 64, 64, 36864, 64, 64, 36864, 64, 64, 36864, 64, 64, 36864, 64, 64};
  auto d = nestla::nested<2>(nestla::Adam<float, Dev>(), {{.k = 5}, {.k = 5}});
  twin_set<float> set(sizes, 81);
  set.make_grads(0);
  d.step(set.dp, set.dg);
  const auto& info = d.base().context().last_launch();
  CHECK(info.tier == nestla::cuda::detail::tier::small_params);
  CHECK(info.functors == 1);
  CHECK(info.blocks >= 1);
}

#if defined(NESTLA_TEST_NCCL)
TEST_CASE("NCCL, one worker: the distributed step on the GPU gives the single-process bits") {
  // A GPU holds one NCCL rank, so the group has one worker, told to communicate anyway:
  // every pass of the distributed step and every NCCL call runs.
  int dev = 0;
  ok(cudaGetDevice(&dev));
  ncclComm_t comm = nullptr;
  REQUIRE(ncclCommInitAll(&comm, 1, &dev) == ncclSuccess);
  {
    auto g = nestla::nccl::group::create(comm, 0);
    CHECK(g->size() == 1);
    CHECK(g->members() == std::vector<std::int64_t>{0});
    g->set_always_communicate(true);
    const std::array<LookaheadOptions, 2> lv{
        LookaheadOptions{.k = 2, .alpha = 0.5, .momentum = Momentum::pullback, .outer_momentum = 0.9},
        LookaheadOptions{.k = 3, .alpha = 0.8, .momentum = Momentum::reset, .outer_momentum = 0.9, .outer_nesterov = true}};
    auto plain = nestla::nested<2>(nestla::AdamW<float, Dev>({.lr = 1e-2}), std::span<const LookaheadOptions>(lv.data(), 2));
    auto dist = plain;
    dist.base().set_group(g);
    dist.inner().set_group(g);
    dist.set_group(g);
    twin_set<float> a(mixed_sizes, 21), b(mixed_sizes, 21);
    for (int s = 0; s < 30; ++s) {
      a.make_grads(s);
      b.make_grads(s);
      REQUIRE(plain.step(a.dp, a.dg) == dist.step(b.dp, b.dg));
    }
    const auto c = compare(b.device_params(), a.device_params());
    CHECK(c.identical);
    CHECK(checkpoint(plain) == checkpoint(dist));
    CHECK(g->stats().collectives > 30);
  }
  ncclCommDestroy(comm);
}
#endif

int main(int argc, char** argv) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::printf("SKIPPED: no CUDA device (%s); the GPU tests need one\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0 devices");
    return 77;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
    std::printf("GPU: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
