// Gradient clipping (nestla/clip.hpp): the free functions and the base-optimizer option against torch.nn.utils, the
// norm's fixed order, threads, the non-finite guard, error_if_nonfinite, validation and checkpoints.
//
// Goldens: tests/data/golden_clip.json from tools/make_golden_clip.py (PyTorch 2.15.0). float64 results must agree to
//     |nestla - torch| <= 1e-12 * max(|torch|, 1e-2)
// (PyTorch sums the norm in another order, so the coefficient may differ in its last bits); float32 ones to 1e-5
// relative (PyTorch accumulates each tensor's norm in float32 in its own order). Clamping is exact.
#include <doctest/doctest.h>

#include <nestla/nestla.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef NESTLA_TEST_DATA_DIR
#error "NESTLA_TEST_DATA_DIR must be defined (tests/CMakeLists.txt sets it)"
#endif

namespace {

using json = nlohmann::json;
template <class T>
using Set = std::vector<std::vector<T>>;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

const json& golden() {
  static const json data = [] {
    const std::string path = std::string(NESTLA_TEST_DATA_DIR) + "/golden_clip.json";
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path);
    return json::parse(in);
  }();
  return data;
}

// As tools/make_golden_clip.py: exact in double, rounded to nearest for float.
double noise(std::uint64_t seed, std::uint64_t t, std::uint64_t j) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ t * 0xBF58476D1CE4E5B9ull ^ j * 0x94D049BB133111EBull;
  x ^= x >> 31;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 32;
  return double(x >> 11) / double(1ull << 53) * 2 - 1;
}
double grad_value(std::uint64_t seed, std::uint64_t t, std::uint64_t j) {
  return noise(seed, t, j) * std::ldexp(1.0, int((t + j) % 5) - 2);
}
template <class T>
Set<T> grads_for(std::uint64_t seed, const std::vector<std::size_t>& sizes) {
  Set<T> g;
  for (std::size_t t = 0; t < sizes.size(); ++t) {
    g.emplace_back(sizes[t]);
    for (std::size_t j = 0; j < sizes[t]; ++j) g[t][j] = static_cast<T>(grad_value(seed, t, j));
  }
  return g;
}

double norm_type_of(const json& j) { return j.is_string() ? kInf : j.get<double>(); }

bool close(double x, double want, double rel, double floor) {
  return std::abs(x - want) <= rel * std::max(std::abs(want), floor);
}

template <class T>
bool same_bits(const Set<T>& a, const Set<T>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].size() != b[i].size() || std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(T)) != 0) return false;
  return true;
}
template <class T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

template <class O>
std::string bytes(const O& opt) {
  std::ostringstream os;
  opt.save(os);
  return os.str();
}

template <class T>
void check_function_case(const json& c) {
  const double rel = std::is_same_v<T, double> ? 1e-12 : 1e-5;
  const auto sizes = c["sizes"].get<std::vector<std::size_t>>();
  Set<T> g = grads_for<T>(c["seed"].get<std::uint64_t>(), sizes);
  INFO(c["name"].get<std::string>());
  if (c["kind"] == "norm") {
    const double p = norm_type_of(c["norm_type"]);
    const T before = nestla::grad_norm(g, p);
    const T total = nestla::clip_grad_norm(g, c["max_norm"].get<double>(), p);
    CHECK(same_bits(before, total));
    CHECK(close(total, c["total_norm"].get<double>(), rel, 0));
  } else {
    nestla::clip_grad_value(g, c["clip_value"].get<double>());
  }
  const auto stride = c["stride"].get<std::size_t>();
  const auto& want = c["clipped"];
  std::size_t bad = 0;
  for (std::size_t t = 0; t < sizes.size(); ++t)
    for (std::size_t j = 0, k = 0; j < sizes[t]; j += stride, ++k) {
      const double w = want[t][k].get<double>();
      const bool ok = c["kind"] == "value" ? double(g[t][j]) == w : close(g[t][j], w, rel, 1e-2);
      if (!ok && bad++ < 5) FAIL_CHECK("tensor ", t, " element ", j, ": ", double(g[t][j]), " != ", w);
    }
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("clip_grad_norm, grad_norm and clip_grad_value match torch.nn.utils") {
  int n64 = 0, n32 = 0;
  for (const auto& c : golden()["functions"]) {
    if (c["dtype"] == "float64") {
      check_function_case<double>(c);
      ++n64;
    } else {
      check_function_case<float>(c);
      ++n32;
    }
  }
  CHECK(n64 == 12);
  CHECK(n32 == 12);
}

namespace {

template <class O>
void run_step_case(O opt, const json& c) {
  const auto sizes = c["sizes"].get<std::vector<std::size_t>>();
  const auto& clip = c["clip"];
  const bool by_norm = clip["kind"] == "norm";
  if (by_norm) {
    opt.set_clip_grad_norm({.max_norm = clip["max_norm"].get<double>(), .norm_type = norm_type_of(clip["norm_type"])});
  } else {
    opt.set_clip_grad_value(clip["clip_value"].get<double>());
  }
  Set<double> p;
  for (std::size_t t = 0; t < sizes.size(); ++t) {
    p.emplace_back(sizes[t]);
    for (std::size_t j = 0; j < sizes[t]; ++j) p[t][j] = noise(c["init_seed"].get<std::uint64_t>(), t, j);
  }
  auto check_params = [&](const json& want, const char* when) {
    std::size_t bad = 0;
    for (std::size_t t = 0; t < sizes.size(); ++t)
      for (std::size_t j = 0; j < sizes[t]; ++j)
        if (!close(p[t][j], want[t][j].get<double>(), 1e-12, 1e-2) && bad++ < 5)
          FAIL_CHECK(when, ": tensor ", t, " element ", j, ": ", p[t][j], " != ", want[t][j].get<double>());
    CHECK(bad == 0);
  };
  const int steps = c["steps"].get<int>();
  for (int s = 0; s < steps; ++s) {
    Set<double> g = grads_for<double>(100 + std::uint64_t(s), sizes);
    const Set<double> given = g;
    CHECK(opt.step(p, g));
    CHECK(same_bits(g, given));  // the user's gradients are only read
    if (by_norm) CHECK(close(opt.last_grad_norm(), c["total_norms"][s].get<double>(), 1e-12, 0));
    if (s == 0) check_params(c["params_first"], "after the first step");
  }
  check_params(c["params_last"], "after the last step");
}

}  // namespace

TEST_CASE("clipping as a base-optimizer option matches torch's clip-then-step (float64)") {
  int n = 0;
  for (const auto& c : golden()["steps"]) {
    INFO(c["name"].get<std::string>());
    const auto& o = c["options"];
    if (c["optimizer"] == "sgd") {
      run_step_case(nestla::SGD<double>({.lr = o["lr"], .momentum = o["momentum"], .dampening = o["dampening"],
                                         .weight_decay = o["weight_decay"], .nesterov = o["nesterov"]}),
                    c);
    } else if (c["optimizer"] == "adam") {
      run_step_case(nestla::Adam<double>({.lr = o["lr"], .beta1 = o["betas"][0], .beta2 = o["betas"][1], .eps = o["eps"],
                                          .weight_decay = o["weight_decay"], .amsgrad = o["amsgrad"]}),
                    c);
    } else {
      run_step_case(nestla::AdamW<double>({.lr = o["lr"], .beta1 = o["betas"][0], .beta2 = o["betas"][1],
                                           .eps = o["eps"], .weight_decay = o["weight_decay"], .amsgrad = o["amsgrad"]}),
                    c);
    }
    ++n;
  }
  CHECK(n == 7);
}

namespace {

// The documented order (detail/grad_norm.hpp), written out plainly: chunks of
// 4096 flat elements, 256 lanes per piece, the halving tree, double sums.
template <class T>
T reference_norm(const Set<T>& g, double p) {
  constexpr std::size_t C = 4096, L = 256;
  std::vector<std::size_t> sizes;
  for (const auto& t : g) sizes.push_back(t.size());
  const nestla::Layout layout = nestla::Layout::of<T>(sizes);
  auto accumulate = [p](T acc, T x) -> T {
    if (p == 2) return acc + x * x;
    if (p == 1) return acc + std::abs(x);
    if (std::isinf(p)) return std::isnan(acc) ? acc : (std::abs(x) <= acc ? acc : std::abs(x));
    return acc + std::pow(std::abs(x), T(p));
  };
  auto combine = [p](auto a, auto b) {
    if (!std::isinf(p)) return a + b;
    return std::isnan(a) ? a : (b <= a ? a : b);
  };
  auto finish = [p](double acc) -> T {
    if (p == 2) return T(std::sqrt(acc));
    if (p == 1 || std::isinf(p)) return T(acc);
    return T(std::pow(acc, 1 / p));
  };
  double total = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    double acc = 0;
    const std::size_t off = layout.offsets[i], n = sizes[i];
    for (std::size_t c = off / C; n > 0 && c * C < off + n; ++c) {
      const std::size_t a = std::max(c * C, off) - off, b = std::min((c + 1) * C, off + n) - off;
      T lanes[L] = {};
      for (std::size_t j = a; j < b; ++j) lanes[(j - a) % L] = accumulate(lanes[(j - a) % L], g[i][j]);
      for (std::size_t s = L / 2; s > 0; s /= 2)
        for (std::size_t l = 0; l < s; ++l) lanes[l] = combine(lanes[l], lanes[l + s]);
      acc = combine(acc, double(lanes[0]));
    }
    const double norm = finish(acc);
    if (p == 2) total = total + norm * norm;
    else if (p == 1) total = total + norm;
    else if (std::isinf(p)) total = combine(total, norm);
    else total = total + std::pow(norm, p);
  }
  return finish(total);
}

template <class T>
void check_reference_order() {
  // Sizes around the chunk and lane edges; empty tensors; tensors crossing chunks.
  const std::vector<std::size_t> sizes{0, 1, 255, 256, 257, 4095, 4096, 4097, 0, 9001, 17, 12289, 3};
  for (double p : {2.0, 1.0, kInf, 3.0, 0.5}) {
    CAPTURE(p);
    for (std::uint64_t seed : {1u, 2u}) {
      Set<T> g = grads_for<T>(seed, sizes);
      g[9][77] = T(-1e-30);  // tiny values and exact zeros are ordinary too
      g[11][0] = T(0);
      const T want = reference_norm(g, p);
      CHECK(same_bits(nestla::grad_norm(g, p), want));
      // Misaligned tensors (views into an arena at odd offsets) give the same bits.
      std::vector<T> arena(1);
      for (const auto& t : g) arena.insert(arena.end(), t.begin(), t.end());
      std::vector<std::span<const T>> views;
      std::size_t at = 1;
      for (const auto& t : g) {
        views.emplace_back(arena.data() + at, t.size());
        at += t.size();
      }
      CHECK(same_bits(nestla::grad_norm(views, p), want));
    }
  }
}

}  // namespace

TEST_CASE("the norm is summed in the documented order: an independent reference, bit for bit") {
  check_reference_order<double>();
  check_reference_order<float>();
}

namespace {

// Clipping as an option equals clipping the gradients with the free function
// and stepping an unclipped optimizer: every bit, at any depth and with groups.
template <class T, class Make>
void check_option_is_function(Make make, const nestla::GradClip& clip, int steps) {
  const std::vector<std::size_t> sizes{5, 4099, 64, 1, 300};
  auto a = make();
  auto b = make();
  if (clip.mode == nestla::GradClip::Mode::norm) a.base().set_clip_grad_norm(clip.norm);
  else a.base().set_clip_grad_value(clip.clip_value);
  Set<T> pa = grads_for<T>(7, sizes), pb = pa;
  for (int s = 0; s < steps; ++s) {
    const Set<T> g = grads_for<T>(50 + std::uint64_t(s), sizes);
    Set<T> gb = g;
    if (clip.mode == nestla::GradClip::Mode::norm) {
      const T n = nestla::clip_grad_norm(gb, clip.norm.max_norm, clip.norm.norm_type);
      a.step(pa, g);
      CHECK(same_bits(T(a.base().last_grad_norm()), n));
    } else {
      nestla::clip_grad_value(gb, clip.clip_value);
      a.step(pa, g);
    }
    b.step(pb, gb);
    REQUIRE(same_bits(pa, pb));
  }
}

template <class T>
void check_option_is_function_all() {
  using nestla::GradClip;
  std::vector<GradClip> clips;
  for (double p : {2.0, 1.0, kInf, 3.0})
    for (double m : {0.5, 1e6})  // clipping, and a coefficient of 1 (no multiply)
      clips.push_back({GradClip::Mode::norm, {.max_norm = m, .norm_type = p}, 0});
  clips.push_back({GradClip::Mode::value, {}, 0.3});
  for (const auto& c : clips) {
    CAPTURE(int(c.mode));
    CAPTURE(c.norm.norm_type);
    CAPTURE(c.norm.max_norm);
    check_option_is_function<T>([] { return nestla::Adam<T>({.lr = 1e-2}); }, c, 3);
    check_option_is_function<T>(
        [] {
          auto o = nestla::nested<2>(nestla::Adam<T>({.lr = 1e-2, .amsgrad = true}),
                                     {{.k = 2, .momentum = nestla::Momentum::pullback}, {.k = 2}});
          o.base().add_param_group({1, 3}, {.lr = 0.003, .weight_decay = 0.1});
          return o;
        },
        c, 9);
    check_option_is_function<T>([] { return nestla::SGD<T>({.lr = 0.1, .momentum = 0.9, .nesterov = true}); }, c, 3);
    // maximize: torch clips the gradient, then the optimizer negates it.
    check_option_is_function<T>([] { return nestla::AdamW<T>({.lr = 1e-2, .maximize = true}); }, c, 3);
  }
}

}  // namespace

TEST_CASE("the option is the free function followed by an unclipped step, bit for bit (float, double, nested)") {
  check_option_is_function_all<float>();
  check_option_is_function_all<double>();
}

TEST_CASE("switching the clipping mode between steps") {
  const std::vector<std::size_t> sizes{300, 5000};
  nestla::Adam<double> a({.lr = 1e-2}), b({.lr = 1e-2});
  Set<double> pa = grads_for<double>(5, sizes), pb = pa;
  for (int s = 0; s < 6; ++s) {
    const Set<double> g = grads_for<double>(90 + std::uint64_t(s), sizes);
    Set<double> gb = g;
    if (s % 3 == 0) {
      a.set_clip_grad_norm({.max_norm = 0.5});
      nestla::clip_grad_norm(gb, 0.5);
    } else if (s % 3 == 1) {
      a.set_clip_grad_value(0.1);
      nestla::clip_grad_value(gb, 0.1);
    } else {
      a.clear_clip_grad();
    }
    a.step(pa, g);
    b.step(pb, gb);
    REQUIRE(same_bits(pa, pb));
  }
}

TEST_CASE("a coefficient of 1 changes no bit: a step with a large max_norm is an unclipped step") {
  const std::vector<std::size_t> sizes{300, 5000};
  nestla::Adam<float> a({.lr = 1e-2}), b({.lr = 1e-2});
  a.set_clip_grad_norm({.max_norm = 1e9});
  Set<float> pa = grads_for<float>(3, sizes), pb = pa;
  for (int s = 0; s < 4; ++s) {
    const Set<float> g = grads_for<float>(60 + std::uint64_t(s), sizes);
    a.step(pa, g);
    b.step(pb, g);
  }
  CHECK(same_bits(pa, pb));
  CHECK(a.last_grad_norm() > 0);
}

namespace {

template <class T>
void check_threads() {
  // Over host::min_parallel elements, so the pool splits the norm and the pass.
  const std::vector<std::size_t> sizes{70001, 4097, 30000, 5, 12288};
  std::vector<Set<T>> results;
  std::vector<double> norms;
  for (unsigned threads : {1u, 2u, 3u}) {
    auto opt = nestla::nested<1>(nestla::Adam<T>({.lr = 1e-3}), {{.k = 2}});
    opt.base().set_threads(threads);
    opt.base().set_clip_grad_norm({.max_norm = 10.0});
    Set<T> p = grads_for<T>(9, sizes);
    for (int s = 0; s < 3; ++s) opt.step(p, grads_for<T>(70 + std::uint64_t(s), sizes));
    results.push_back(p);
    norms.push_back(opt.base().last_grad_norm());
    CHECK(same_bits(T(norms.back()), nestla::grad_norm(grads_for<T>(72, sizes))));
  }
  CHECK(same_bits(results[0], results[1]));
  CHECK(same_bits(results[0], results[2]));
  CHECK(same_bits(norms[0], norms[1]));
  CHECK(same_bits(norms[0], norms[2]));
}

}  // namespace

TEST_CASE("threads: the norm and the clipped steps are bit-identical for 1, 2 and 3 threads") {
  check_threads<float>();
  check_threads<double>();
}

TEST_CASE("non-finite gradients: the guard decides first, error_if_nonfinite, NaN propagation as in torch") {
  const std::vector<std::size_t> sizes{40, 5000};
  auto fresh = [&] {
    nestla::Adam<double> o({.lr = 1e-2});
    Set<double> p = grads_for<double>(1, sizes);
    o.step(p, grads_for<double>(2, sizes));  // state exists
    return std::pair{o, p};
  };
  auto with = [&](double value, std::size_t t, std::size_t j) {
    Set<double> g = grads_for<double>(3, sizes);
    g[t][j] = value;
    return g;
  };

  SUBCASE("guard on: NaN or infinite gradients skip the step, also with error_if_nonfinite") {
    for (const double bad : {kNaN, kInf, -kInf})
      for (const bool error : {false, true}) {
        CAPTURE(bad);
        auto [o, p] = fresh();
        o.set_skip_nonfinite(true);
        o.set_clip_grad_norm({.max_norm = 1.0, .error_if_nonfinite = error});
        const auto m = o.state(0), v = o.state(1);
        const Set<double> before = p;
        CHECK_FALSE(o.step(p, with(bad, 1, 4097)));
        CHECK(o.skipped_steps() == 1);
        CHECK(o.last_step_skipped());
        CHECK(o.step_count() == 1);
        CHECK(same_bits(p, before));
        CHECK(std::memcmp(o.state(0).data(), m.data(), m.size() * sizeof(double)) == 0);
        CHECK(std::memcmp(o.state(1).data(), v.data(), v.size() * sizeof(double)) == 0);
        CHECK_FALSE(std::isfinite(o.last_grad_norm()));
      }
  }
  SUBCASE("guard on: finite gradients whose norm overflows are not skipped; the coefficient is 0, as in torch") {
    auto [o, p] = fresh();
    auto [ref, q] = fresh();
    o.set_skip_nonfinite(true);
    o.set_clip_grad_norm({.max_norm = 1.0});
    const Set<double> g = with(1e200, 0, 3);
    Set<double> gt = g;
    CHECK(nestla::clip_grad_norm(gt, 1.0) == kInf);
    CHECK(gt[1][5] == 0.0);
    CHECK(o.step(p, g));
    CHECK(o.skipped_steps() == 0);
    CHECK(o.last_grad_norm() == kInf);
    ref.step(q, gt);
    CHECK(same_bits(p, q));
  }
  SUBCASE("error_if_nonfinite: a NaN or infinite norm throws and changes nothing") {
    for (const bool guard : {false, true}) {
      CAPTURE(guard);
      auto [o, p] = fresh();
      o.set_skip_nonfinite(guard);
      // Without the guard, NaN gradients throw; with it, they are skipped, and
      // only a norm that overflows (1e200^3) reaches the check.
      o.set_clip_grad_norm({.max_norm = 1.0, .norm_type = guard ? 3.0 : kInf, .error_if_nonfinite = true});
      const std::string state = bytes(o);
      const Set<double> before = p;
      std::string message;
      try {
        o.step(p, guard ? with(1e200, 1, 7) : with(kNaN, 1, 7));
      } catch (const nestla::nonfinite_norm_error& e) {
        message = e.what();
      }
      CAPTURE(message);
      CHECK(message.find("nestla: step: the total norm of order") != std::string::npos);
      CHECK(message.find("nothing was changed") != std::string::npos);
      CHECK(same_bits(p, before));
      CHECK(o.step_count() == 1);
      CHECK(o.skipped_steps() == 0);
      CHECK(bytes(o) == state);
    }
  }
  SUBCASE("guard and error off: a NaN norm scales every gradient by NaN, as torch does") {
    for (const double p_type : {2.0, kInf}) {
      auto [o, p] = fresh();
      o.set_clip_grad_norm({.max_norm = 1.0, .norm_type = p_type});
      const Set<double> g = with(kNaN, 0, 11);
      Set<double> gt = g;
      CHECK(std::isnan(nestla::clip_grad_norm(gt, 1.0, p_type)));
      CHECK(std::all_of(gt[1].begin(), gt[1].end(), [](double x) { return std::isnan(x); }));
      CHECK(o.step(p, g));
      CHECK(std::isnan(o.last_grad_norm()));
      for (const auto& t : p) CHECK(std::all_of(t.begin(), t.end(), [](double x) { return std::isnan(x); }));
    }
  }
  SUBCASE("the free functions: error_if_nonfinite leaves the gradients alone; clip_grad_value keeps NaN") {
    Set<double> g = with(kInf, 1, 9);
    const Set<double> before = g;
    CHECK_THROWS_AS(nestla::clip_grad_norm(g, 1.0, 2.0, true), nestla::nonfinite_norm_error);
    CHECK(same_bits(g, before));
    g = with(kNaN, 0, 2);
    g[1][0] = kInf;
    g[1][1] = -kInf;
    nestla::clip_grad_value(g, 0.5);
    CHECK(std::isnan(g[0][2]));
    CHECK(g[1][0] == 0.5);
    CHECK(g[1][1] == -0.5);
  }
}

TEST_CASE("empty sets and empty tensors") {
  Set<float> none;
  CHECK(nestla::grad_norm(none) == 0.0f);
  CHECK(nestla::clip_grad_norm(none, 1.0) == 0.0f);
  Set<float> g{{}, {3.0f, 4.0f}, {}};
  CHECK(nestla::grad_norm(g) == 5.0f);
  CHECK(nestla::grad_norm(g, kInf) == 4.0f);
  CHECK(nestla::grad_norm(g, 1.0) == 7.0f);
  nestla::Adam<float> o;
  o.set_clip_grad_norm({.max_norm = 1.0});
  Set<float> p{{}, {1.0f, 1.0f}, {}};
  o.step(p, g);
  CHECK(o.last_grad_norm() == 5.0);
}

TEST_CASE("clipping settings are validated, and a bad value changes nothing") {
  nestla::Adam<float> o;
  o.set_clip_grad_norm({.max_norm = 2.0, .norm_type = kInf, .error_if_nonfinite = true});
  auto refused = [&](auto set, const char* needle) {
    std::string message;
    try {
      set();
    } catch (const nestla::invalid_option& e) {
      message = e.what();
    }
    CAPTURE(message);
    CHECK(message.find(needle) != std::string::npos);
    CHECK(o.clip_grad().mode == nestla::GradClip::Mode::norm);
    CHECK(o.clip_grad().norm.max_norm == 2.0);
  };
  for (double bad : {0.0, -1.0, kNaN, kInf})
    refused([&] { o.set_clip_grad_norm({.max_norm = bad}); }, "set_clip_grad_norm: max_norm");
  for (double bad : {0.0, -2.0, kNaN, -kInf})
    refused([&] { o.set_clip_grad_norm({.max_norm = 1.0, .norm_type = bad}); }, "set_clip_grad_norm: norm_type");
  for (double bad : {0.0, -1.0, kNaN, kInf})
    refused([&] { o.set_clip_grad_value(bad); }, "set_clip_grad_value: clip_value");
  Set<float> g{{1.0f}};
  CHECK_THROWS_AS(nestla::clip_grad_norm(g, -1.0), nestla::invalid_option);
  CHECK_THROWS_AS(nestla::clip_grad_norm(g, 1.0, 0.0), nestla::invalid_option);
  CHECK_THROWS_AS(nestla::clip_grad_value(g, -1.0), nestla::invalid_option);
  CHECK(g[0][0] == 1.0f);
  o.set_clip_grad_value(0.5);
  CHECK(o.clip_grad().mode == nestla::GradClip::Mode::value);
  CHECK(o.clip_grad().clip_value == 0.5);
  o.clear_clip_grad();
  CHECK(o.clip_grad().mode == nestla::GradClip::Mode::none);
}

TEST_CASE("checkpoints keep the clipping settings; resuming is bit-identical; a bad clip block is refused") {
  const std::vector<std::size_t> sizes{33, 4100};
  auto make = [] { return nestla::nested<1>(nestla::AdamW<float>({.lr = 1e-2}), {{.k = 3}}); };
  auto whole = make();
  whole.base().set_clip_grad_norm({.max_norm = 3.0, .norm_type = 1.0, .error_if_nonfinite = true});
  Set<float> p = grads_for<float>(4, sizes);
  for (int s = 0; s < 4; ++s) whole.step(p, grads_for<float>(80 + std::uint64_t(s), sizes));
  const std::string saved = bytes(whole);
  Set<float> q = p;
  for (int s = 4; s < 8; ++s) whole.step(p, grads_for<float>(80 + std::uint64_t(s), sizes));

  auto resumed = make();  // no clipping set: the checkpoint brings it
  std::istringstream is(saved);
  resumed.load(is);
  const auto& c = resumed.base().clip_grad();
  CHECK(c.mode == nestla::GradClip::Mode::norm);
  CHECK(c.norm.max_norm == 3.0);
  CHECK(c.norm.norm_type == 1.0);
  CHECK(c.norm.error_if_nonfinite);
  for (int s = 4; s < 8; ++s) resumed.step(q, grads_for<float>(80 + std::uint64_t(s), sizes));
  CHECK(same_bits(p, q));

  // A checkpoint without clipping clears it; value clipping round-trips.
  auto plain = make();
  Set<float> r = grads_for<float>(4, sizes);
  plain.step(r, grads_for<float>(80, sizes));
  std::istringstream is2(bytes(plain));
  resumed.load(is2);
  CHECK(resumed.base().clip_grad().mode == nestla::GradClip::Mode::none);
  plain.base().set_clip_grad_value(0.25);
  std::istringstream is3(bytes(plain));
  resumed.load(is3);
  CHECK(resumed.base().clip_grad().mode == nestla::GradClip::Mode::value);
  CHECK(resumed.base().clip_grad().clip_value == 0.25);

  // The clip block ends a base optimizer's checkpoint: mode (1 byte), max_norm,
  // norm_type (8 each), error_if_nonfinite (1), clip_value (8), then the CRC.
  nestla::Adam<double> base;
  base.set_clip_grad_norm({.max_norm = 1.0});
  const std::string good = bytes(base);
  auto patched = [&](std::size_t from_end, const void* value, std::size_t n) {
    std::string b = good;
    std::memcpy(b.data() + b.size() - 4 - from_end, value, n);
    const std::uint32_t crc = nestla::detail::crc32(b.data(), b.size() - 4);
    std::memcpy(b.data() + b.size() - 4, &crc, 4);
    return b;
  };
  auto rejects = [&](const std::string& data, const char* needle) {
    nestla::Adam<double> target;
    target.set_clip_grad_value(0.5);
    const std::string was = bytes(target);
    std::string message;
    try {
      std::istringstream in(data);
      target.load(in);
    } catch (const nestla::checkpoint_error& e) {
      message = e.what();
    }
    CAPTURE(message);
    CHECK(message.find(needle) != std::string::npos);
    CHECK(bytes(target) == was);
  };
  const std::uint8_t mode = 3, flag = 2;
  const double negative = -1.0, value = 0.5;
  rejects(patched(26, &mode, 1), "clip mode");
  rejects(patched(25, &negative, 8), "max_norm");
  rejects(patched(17, &negative, 8), "norm_type");
  rejects(patched(9, &flag, 1), "clip error_if_nonfinite");
  rejects(patched(8, &value, 8), "does not use");
  {
    std::istringstream in(patched(0, &mode, 0));  // unchanged bytes load
    nestla::Adam<double> target;
    target.load(in);
    CHECK(target.clip_grad().mode == nestla::GradClip::Mode::norm);
  }
}
