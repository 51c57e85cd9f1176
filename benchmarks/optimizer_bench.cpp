// nestla optimizer steps (every base optimizer, Ranger, Lookahead nested 1-3 deep, Adam with gradient clipping) on ResNet-18-sized sets, three containers, against the memory roofline.
#include <benchmark/benchmark.h>

#include <nestla/eigen.hpp>
#include <nestla/nestla.hpp>
#include <nestla/xtensor.hpp>

#include <Eigen/Core>
#include <xsimd/xsimd.hpp>
#include <xtensor/xarray.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include "filler.hpp"
#include "roofline.hpp"

#ifndef NESTLA_BENCH_SHAPES
#error "NESTLA_BENCH_SHAPES must name benchmarks/resnet18_shapes.txt"
#endif

namespace {

using Shape = std::vector<std::size_t>;

std::size_t numel(const Shape& s) {
  std::size_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

// One shape list shared with torch_optim_bench.py, so both sides step the same tensors.
std::vector<Shape> resnet18_shapes() {
  std::ifstream in(NESTLA_BENCH_SHAPES);
  if (!in) throw std::runtime_error("cannot open " NESTLA_BENCH_SHAPES);
  std::vector<Shape> shapes;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string name;
    ls >> name;
    Shape s;
    for (std::size_t d; ls >> d;) s.push_back(d);
    shapes.push_back(s);
  }
  return shapes;
}

constexpr std::size_t resnet18_numel = 11173962;

using bench::filler;

// --- containers: how each kind makes a tensor of a given shape ---------------
struct vector_kind {
  static constexpr const char* name = "vector";
  using type = std::vector<float>;
  static type make(const Shape& s) { return type(numel(s)); }
  static float* data(type& t) { return t.data(); }
};
struct eigen_kind {
  static constexpr const char* name = "eigen";
  using type = Eigen::MatrixXf;
  // A conv weight (out, in, kh, kw) as the out x (in*kh*kw) matrix a GEMM uses.
  static type make(const Shape& s) {
    const auto rows = static_cast<Eigen::Index>(s[0]);
    return type(rows, static_cast<Eigen::Index>(numel(s)) / rows);
  }
  static float* data(type& t) { return t.data(); }
};
struct xtensor_kind {
  static constexpr const char* name = "xtensor";
  using type = xt::xarray<float>;
  static type make(const Shape& s) { return type::from_shape(s); }
  static float* data(type& t) { return t.data(); }
};

// Parameters and gradients of one benchmark case: one tensor, or the ResNet-18 list.
template <class Kind>
struct tensor_set {
  std::vector<typename Kind::type> params, grads;
  explicit tensor_set(const std::vector<Shape>& shapes) {
    filler f;
    for (const auto& s : shapes) {
      params.push_back(Kind::make(s));
      grads.push_back(Kind::make(s));
      // Every page is touched here, outside the timed region.
      float* p = Kind::data(params.back());
      float* g = Kind::data(grads.back());
      for (std::size_t i = 0, n = numel(s); i < n; ++i) {
        p[i] = f.next(0.01f, 0.1f);
        g[i] = f.next(1e-3f, 1e-2f);
      }
    }
  }
};

// --- the optimizers ---------------------------------------------------------
nestla::SGD<float> make_sgd() { return nestla::SGD<float>({.lr = 1e-3, .momentum = 0.9}); }
nestla::Adam<float> make_adam() { return nestla::Adam<float>({.lr = 1e-3}); }
nestla::AdamW<float> make_adamw() { return nestla::AdamW<float>({.lr = 1e-3}); }
nestla::RAdam<float> make_radam() { return nestla::RAdam<float>({.lr = 1e-3}); }
nestla::NAdam<float> make_nadam() { return nestla::NAdam<float>({.lr = 1e-3}); }
nestla::Adamax<float> make_adamax() { return nestla::Adamax<float>({.lr = 1e-3}); }
nestla::Lion<float> make_lion() { return nestla::Lion<float>({.lr = 1e-3}); }
nestla::Ranger<float> make_ranger() { return nestla::ranger<float>({.lr = 1e-3}); }

// --- Adagrad, RMSprop, Adadelta, Rprop: torch.optim's defaults ------------------
// Bytes each must move per element (floats; a read and a write of p and of
// each state it uses, a read of g): Adagrad 20 (sum), RMSprop 20 (square_avg),
// RMSprop with momentum and centered 36 (+ momentum_buffer, grad_avg),
// Adadelta 28 (square_avg, acc_delta), Rprop 28 (prev, step_size).
nestla::Adagrad<float> make_adagrad() { return nestla::Adagrad<float>({.lr = 1e-2}); }
nestla::RMSprop<float> make_rmsprop() { return nestla::RMSprop<float>({.lr = 1e-2}); }
nestla::RMSprop<float> make_rmsprop_mc() {
  return nestla::RMSprop<float>({.lr = 1e-2, .momentum = 0.9, .centered = true});
}
nestla::Adadelta<float> make_adadelta() { return nestla::Adadelta<float>({.lr = 1.0}); }
nestla::Rprop<float> make_rprop() { return nestla::Rprop<float>({.lr = 1e-2}); }
// --- end of Adagrad, RMSprop, Adadelta, Rprop -------------------------------------

constexpr int lookahead_k = 5;
template <int D, class Base>
auto make_nested(Base base) {
  nestla::LookaheadOptions levels[D];
  for (auto& l : levels) l = {.k = lookahead_k, .alpha = 0.5};
  return nestla::nested<D>(std::move(base), levels);
}

// A live case: something that runs n steps (an optimizer on its tensors, or
// a roofline loop). Cases are kept across Google Benchmark's calls and
// repetitions of one benchmark: state is created and pages touched once.
struct live_case {
  virtual ~live_case() = default;
  virtual void steps(std::size_t n) = 0;
};

template <class Opt, class Kind>
struct step_case final : live_case {
  Opt opt;
  tensor_set<Kind> set;
  bool single;
  step_case(Opt o, const std::vector<Shape>& shapes, unsigned threads)
      : opt(std::move(o)), set(shapes), single(shapes.size() == 1) {
    opt.base().set_threads(threads);
  }
  void steps(std::size_t n) override {
    // One tensor is passed as that container itself, the list as a range of them.
    if (single)
      for (std::size_t i = 0; i < n; ++i) opt.step(set.params[0], set.grads[0]);
    else
      for (std::size_t i = 0; i < n; ++i) opt.step(set.params, set.grads);
  }
};

// Adam on the ResNet-18 set with gradient clipping, the ways a user can do it.
enum class clip_way {
  none,          // plain Adam
  option_norm,   // opt.set_clip_grad_norm, coefficient below 1 (the update pass multiplies)
  option_norm1,  // the same with a max_norm above the norm: coefficient 1, the plain update pass
  option_value,  // opt.set_clip_grad_value
  free_norm,     // nestla::grad_norm + clip_grads_with_norm in place, then the step: torch's clip_grad_norm_ + step
};
struct clip_case final : live_case {
  nestla::Adam<float> opt{{.lr = 1e-3}};
  tensor_set<vector_kind> set;
  clip_way way;
  clip_case(clip_way w, const std::vector<Shape>& shapes, unsigned threads) : set(shapes), way(w) {
    opt.set_threads(threads);
    if (w == clip_way::option_norm) opt.set_clip_grad_norm({.max_norm = 1.0});
    if (w == clip_way::option_norm1) opt.set_clip_grad_norm({.max_norm = 1e9});
    if (w == clip_way::option_value) opt.set_clip_grad_value(5e-3);
  }
  void steps(std::size_t n) override {
    for (std::size_t i = 0; i < n; ++i) {
      if (way == clip_way::free_norm) {
        // A max_norm just below the norm: every call multiplies (as torch
        // always does), and the gradients shrink by only 1e-5 per step.
        const float total = nestla::grad_norm(set.grads);
        nestla::clip_grads_with_norm(set.grads, 0.99999 * total, total);
      }
      opt.step(set.params, set.grads);
    }
  }
};

// --- the roofline -------------------------------------------------------------
struct roofline_arrays {
  nestla::detail::host_buffer<float> p, g, m, v;
  explicit roofline_arrays(std::size_t n) : p(n), g(n), m(n), v(n) {
    filler f;
    for (std::size_t i = 0; i < n; ++i) {
      p.data()[i] = f.next(0.01f, 0.1f);
      g.data()[i] = f.next(1e-3f, 1e-2f);
    }
  }
};

roofline_arrays& arrays() {
  static roofline_arrays a(resnet18_numel);
  return a;
}

struct roofline_case final : live_case {
  nestla::detail::pool_handle pool;
  bool copy;
  roofline_case(bool copy_loop, unsigned threads) : copy(copy_loop) { pool.set_threads(threads); }
  void steps(std::size_t n) override {
    auto& a = arrays();
    for (std::size_t i = 0; i < n; ++i)
      if (copy) bench::roofline_copy(pool, a.m.data(), a.p.data(), resnet18_numel);
      else bench::roofline_adam_shaped(pool, a.p.data(), a.g.data(), a.m.data(), a.v.data(), resnet18_numel);
  }
};

// Adam over N floats with the update loop nestla had before its AVX-512
// dispatch: xsimd's batch for this build's flags (SSE2 under plain -O2) and
// a scalar tail, split over threads as host::fused_step splits. Timed next to
// the library's step, it shows what the dispatch buys under these flags.
struct xsimd_adam_case final : live_case {
  nestla::detail::host_buffer<float> p{resnet18_numel}, g{resnet18_numel}, m{resnet18_numel}, v{resnet18_numel};
  nestla::detail::pool_handle pool;
  std::uint64_t t = 0;
  explicit xsimd_adam_case(unsigned threads) {
    filler f;
    for (std::size_t i = 0; i < resnet18_numel; ++i) {
      p.data()[i] = f.next(0.01f, 0.1f);
      g.data()[i] = f.next(1e-3f, 1e-2f);
    }
    pool.set_threads(threads);
  }
  void steps(std::size_t n) override {
    for (std::size_t s = 0; s < n; ++s) {
      ++t;
      const double bc1 = 1 - std::pow(0.9, static_cast<double>(t));
      const double bc2_sqrt = std::sqrt(1 - std::pow(0.999, static_cast<double>(t)));
      const nestla::detail::adam_update<float, false, false> op{
          0.9f, 0.1f, 0.999f, 0.001f, static_cast<float>(-(1e-3 / bc1)), static_cast<float>(bc2_sqrt), 1e-8f, 0.f, 1.f};
      auto part = [&](unsigned k, unsigned parts) {
        constexpr std::size_t pad = 16;
        const std::size_t chunk = (resnet18_numel + parts - 1) / parts;
        const std::size_t lo = std::min(resnet18_numel, (chunk * k + pad - 1) / pad * pad);
        const std::size_t hi =
            k + 1 == parts ? resnet18_numel : std::min(resnet18_numel, (chunk * (k + 1) + pad - 1) / pad * pad);
        using B = nestla::detail::simd<float>;  // xsimd's batch for these flags, as rules see it
        float *pp = p.data(), *mm = m.data(), *vv = v.data();
        const float* gg = g.data();
        std::size_t i = lo;
        for (; i + B::size <= hi; i += B::size) {
          B pv = B::load_unaligned(pp + i);
          B sv[2] = {B::load_unaligned(mm + i), B::load_unaligned(vv + i)};
          op(pv, B::load_unaligned(gg + i), sv);
          pv.store_unaligned(pp + i);
          sv[0].store_unaligned(mm + i);
          sv[1].store_unaligned(vv + i);
        }
        for (; i < hi; ++i) {
          float sv[2] = {mm[i], vv[i]};
          op(pp[i], gg[i], sv);
          mm[i] = sv[0];
          vv[i] = sv[1];
        }
      };
      pool.run(part);
    }
  }
};

// --- groups: several cases timed in rotation ----------------------------------
// Two cases measured minutes apart on a shared machine differ by more than the
// effects wanted here (2%, 1%). A group runs its members in turn, one block of
// whole cycles each per rotation, and times every step. Ratios are taken
// within a rotation (same seconds of the same run), then their median over
// the rotations. Other jobs only ever add time, so each member also keeps the
// fastest time seen at every step position of its cycle: their sum is its
// least disturbed cycle.
struct member {
  std::string name;
  std::size_t block;          // steps per turn: whole outer cycles of this member
  double bytes_per_step;      // counted, see opt_spec
  std::function<std::unique_ptr<live_case>()> make;
};

struct group {
  std::vector<std::unique_ptr<live_case>> cases;
  std::vector<std::vector<double>> per_step;  // [member][rotation]: mean seconds per step in that turn
  std::vector<std::vector<double>> best;      // [member][position in block]: fastest step seen there
};

std::string cached_key;
std::unique_ptr<group> cached;

group& get_group(const std::string& key, const std::vector<member>& members) {
  if (key != cached_key) {
    cached.reset();  // free the previous group's memory before allocating this one
    cached_key.clear();
    auto g = std::make_unique<group>();
    for (const auto& m : members) {
      g->cases.push_back(m.make());
      // The first step allocates the state; SGD's second is its first with
      // momentum. Warming up past both on whole cycles keeps turns aligned.
      g->cases.back()->steps(m.block >= 3 ? m.block : 3 * m.block);
      g->best.emplace_back(m.block, 1e300);
    }
    g->per_step.resize(members.size());
    cached = std::move(g);
    cached_key = key;
  }
  return *cached;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Counters (one Google Benchmark repetition; samples pile up over all of
// Google Benchmark's calls, its iteration-count probes included):
//   s_per_step:M       median over rotations of M's seconds per step
//   best_s_per_step:M  sum over M's cycle of the fastest step at each position, per step
//   ratio0:M, ratio1:M median over rotations of M's time per step over member 0's, member 1's
//   bytes_per_step:M, GBps:M (from s_per_step), rotations
void run_group(benchmark::State& state, const std::string& key, const std::vector<member>& members) {
  auto& g = get_group(key, members);
  for (auto _ : state) {
    for (std::size_t k = 0; k < members.size(); ++k) {
      double total = 0;
      for (std::size_t i = 0; i < members[k].block; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        g.cases[k]->steps(1);
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        total += dt;
        g.best[k][i] = std::min(g.best[k][i], dt);
      }
      g.per_step[k].push_back(total / static_cast<double>(members[k].block));
    }
  }
  const std::size_t rotations = g.per_step[0].size();
  for (std::size_t k = 0; k < members.size(); ++k) {
    const std::string& m = members[k].name;
    const double per_step = median(g.per_step[k]);
    double best = 0;
    for (double b : g.best[k]) best += b;
    std::vector<double> r0, r1;
    for (std::size_t r = 0; r < rotations; ++r) {
      r0.push_back(g.per_step[k][r] / g.per_step[0][r]);
      if (members.size() > 1) r1.push_back(g.per_step[k][r] / g.per_step[1][r]);
    }
    state.counters["s_per_step:" + m] = per_step;
    state.counters["best_s_per_step:" + m] = best / static_cast<double>(members[k].block);
    state.counters["ratio0:" + m] = median(r0);
    if (members.size() > 1) state.counters["ratio1:" + m] = median(r1);
    state.counters["bytes_per_step:" + m] = members[k].bytes_per_step;
    state.counters["GBps:" + m] = members[k].bytes_per_step / per_step * 1e-9;
  }
  state.counters["rotations"] = static_cast<double>(rotations);
}

// --- optimizer specs ------------------------------------------------------------
struct opt_spec {
  std::string name;
  double base_bytes;  // per element, the base update's: 4 bytes for each of p, g and every state read, p and every
                      // state written (Adam 28: reads p g m v, writes p m v; SGD momentum 20: reads p g b, writes p b)
  int depth;          // Lookahead levels, each with this k
  std::function<std::unique_ptr<live_case>(const std::string& kind, const std::vector<Shape>&, unsigned)> make;
  int k = lookahead_k;
};

// One whole cycle of the outermost level, so a timed turn always holds the
// same mix of plain and syncing steps.
std::size_t cycle_steps(int depth, int k = lookahead_k) {
  std::size_t p = 1;
  for (int i = 0; i < depth; ++i) p *= static_cast<std::size_t>(k);
  return p;
}

// Bytes per step, amortized over a cycle: the base update's, plus a read and a
// write of a level's slow copy at each of that level's syncs.
double bytes_per_step(const opt_spec& o, std::size_t elems) {
  const std::size_t steps = cycle_steps(o.depth, o.k);
  double b = static_cast<double>(steps) * o.base_bytes;
  for (int level = 0; level < o.depth; ++level) b += static_cast<double>(steps / cycle_steps(level + 1, o.k)) * 8.0;
  return b * static_cast<double>(elems) / static_cast<double>(steps);
}

template <class Opt>
std::unique_ptr<live_case> make_case(Opt opt, const std::string& kind, const std::vector<Shape>& shapes,
                                     unsigned threads) {
  if (kind == "vector") return std::make_unique<step_case<Opt, vector_kind>>(std::move(opt), shapes, threads);
  if (kind == "eigen") return std::make_unique<step_case<Opt, eigen_kind>>(std::move(opt), shapes, threads);
  return std::make_unique<step_case<Opt, xtensor_kind>>(std::move(opt), shapes, threads);
}

template <class F>
opt_spec spec(std::string name, double bytes, int depth, F factory, int k = lookahead_k) {
  return {std::move(name), bytes, depth,
          [factory](const std::string& kind, const std::vector<Shape>& shapes, unsigned threads) {
            return make_case(factory(), kind, shapes, threads);
          },
          k};
}

void set_counters(benchmark::State& state, double bytes_per_iter, double steps_per_iter, double bytes_per_step) {
  using C = benchmark::Counter;
  state.counters["GBps"] = C(bytes_per_iter, C::kIsIterationInvariantRate, C::OneK::kIs1000);
  state.counters["s_per_step"] = C(steps_per_iter, C::kIsIterationInvariantRate | C::kInvert);
  state.counters["bytes_per_step"] = C(bytes_per_step);
}

// A rule's update on data that stays in the L1 cache: the library's own loop,
// under this flavour's flags, with the memory traffic taken away. Its time per
// N elements is the floor that the arithmetic alone sets (sqrt, division).
// One thread: a block this small is below host::min_parallel. The functor is
// the one the rule prepares late in training (t = 1000).
template <class Rule>
struct compute_case {
  static constexpr std::size_t block = 2048;  // p, g and up to 3 states: 40 KiB
  static constexpr std::size_t states = Rule::states.size();
  typename Rule::options options;
  nestla::detail::host_buffer<float> p{block}, g{block};
  std::array<nestla::detail::host_buffer<float>, states> s;
  std::vector<nestla::TensorRef<float>> refs;
  nestla::host::context ctx;
  explicit compute_case(typename Rule::options o) : options(o) {
    filler f;
    for (std::size_t i = 0; i < block; ++i) {
      p.data()[i] = f.next(0.01f, 0.1f);
      g.data()[i] = f.next(1e-3f, 1e-2f);
    }
    for (auto& b : s) {
      b = nestla::detail::host_buffer<float>(block);
      for (std::size_t i = 0; i < block; ++i) b.data()[i] = std::abs(f.next(1e-4f, 1e-3f));  // second moments > 0
    }
    // Every "tensor" is the same block, so N elements of work stay in the L1 cache.
    for (std::size_t done = 0; done < resnet18_numel; done += block) refs.push_back({p.data(), g.data(), block, 0});
  }
  std::size_t elements() const { return refs.size() * block; }
  void run() {
    const nestla::StepPlan<float> plan;
    const nestla::step_context c{.t = 1000, .lr = options.lr, .weight_decay = nestla::detail::weight_decay_option(options)};
    nestla::detail::rule_scalars_t<Rule> scalars{};
    using Prepared = std::remove_cvref_t<decltype(nestla::detail::call_prepare<Rule, float>(options, c, &scalars))>;
    const typename nestla::detail::as_variant<Prepared>::type prepared(
        nestla::detail::call_prepare<Rule, float>(options, c, &scalars));
    std::visit(
        [&](const auto& op) {
          using Op = std::remove_cvref_t<decltype(op)>;
          constexpr unsigned mask = nestla::detail::uses_mask<Op, states>();
          constexpr std::size_t S = static_cast<std::size_t>(std::popcount(mask));
          std::array<float*, S> ptrs{};
          std::size_t j = 0;
          for (std::size_t k = 0; k < states; ++k)
            if ((mask >> k) & 1u) ptrs[j++] = s[k].data();
          auto make = [&](std::size_t) {
            if constexpr (S == states) return op;
            else return nestla::detail::masked_update<Op, states, mask>{op};
          };
          nestla::host::fused_step<float, S>(ctx, std::span<const nestla::TensorRef<float>>(refs), block, ptrs, 0,
                                             plan, make);
        },
        prepared);
  }
};

template <class Rule>
void register_compute(const char* name, typename Rule::options o, double bytes) {
  const double n = static_cast<double>(resnet18_numel);
  benchmark::RegisterBenchmark((std::string("compute/") + name + "/t1").c_str(), [=](benchmark::State& state) {
    compute_case<Rule> c(o);
    c.run();
    for (auto _ : state) c.run();
    // Scaled to N elements, so its s_per_step compares with a step's.
    set_counters(state, bytes * n, n / static_cast<double>(c.elements()), bytes * n);
  })->UseRealTime()->Unit(benchmark::kMillisecond);
}

// Rotations per group, from the steps one rotation takes: at least 2, and
// about --group_steps=S steps in all (S = 400 by default: 10 to 20 seconds of
// steps on the development machine).
std::size_t group_steps = 400;
benchmark::IterationCount rotations_for(std::size_t steps_per_rotation) {
  return static_cast<benchmark::IterationCount>(std::max<std::size_t>(2, group_steps / steps_per_rotation));
}

void register_all() {
  const std::vector<Shape> single{{resnet18_numel}};
  const std::vector<Shape> resnet = resnet18_shapes();
  std::size_t total = 0;
  for (const auto& s : resnet) total += numel(s);
  if (total != resnet18_numel || resnet.size() != 62)
    throw std::runtime_error("resnet18_shapes.txt does not hold the 62 tensors of ResNet-18");
  const double n = static_cast<double>(resnet18_numel);

  // Alone: the STREAM-style roofline and the compute floor.
  for (unsigned threads : {1u, 2u}) {
    const std::string t = "/t" + std::to_string(threads);
    for (bool copy : {true, false})
      benchmark::RegisterBenchmark(((copy ? "roofline/copy" : "roofline/adam_shaped") + t).c_str(),
                                   [=](benchmark::State& state) {
                                     roofline_case c(copy, threads);
                                     c.steps(1);
                                     for (auto _ : state) c.steps(1);
                                     const double b = (copy ? 8.0 : 28.0) * n;
                                     set_counters(state, b, 1, b);
                                   })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
  }
  register_compute<nestla::adam_rule<false>>("Adam", {.lr = 1e-3}, 28);
  register_compute<nestla::radam_rule>("RAdam", {.lr = 1e-3}, 28);
  register_compute<nestla::nadam_rule>("NAdam", {.lr = 1e-3}, 28);
  register_compute<nestla::adamax_rule>("Adamax", {.lr = 1e-3}, 28);
  register_compute<nestla::lion_rule>("Lion", {.lr = 1e-3}, 20);

  const opt_spec sgd = spec("SGD", 20, 0, make_sgd), adam = spec("Adam", 28, 0, make_adam);
  // Every base optimizer (bytes per element as counted in opt_spec), then presets and nestings.
  const std::vector<opt_spec> opts{
      sgd,
      adam,
      spec("AdamW", 28, 0, make_adamw),
      spec("RAdam", 28, 0, make_radam),    // reads p g m v, writes p m v
      spec("NAdam", 28, 0, make_nadam),    // reads p g m v, writes p m v
      spec("Adamax", 28, 0, make_adamax),  // reads p g m u, writes p m u
      spec("Lion", 20, 0, make_lion),      // reads p g m, writes p m
      spec("Ranger", 28, 1, make_ranger, 6),
      spec("LA1-Adam", 28, 1, [] { return make_nested<1>(make_adam()); }),
      spec("LA2-Adam", 28, 2, [] { return make_nested<2>(make_adam()); }),
      spec("LA3-Adam", 28, 3, [] { return make_nested<3>(make_adam()); }),
      spec("LA1-SGD", 20, 1, [] { return make_nested<1>(make_sgd()); }),
      spec("LA2-SGD", 20, 2, [] { return make_nested<2>(make_sgd()); }),
      spec("LA3-SGD", 20, 3, [] { return make_nested<3>(make_sgd()); }),
      // Adagrad, RMSprop, Adadelta, Rprop (bytes: see make_adagrad)
      spec("Adagrad", 20, 0, make_adagrad),
      spec("RMSprop", 20, 0, make_rmsprop),
      spec("RMSprop-mc", 36, 0, make_rmsprop_mc),
      spec("Adadelta", 28, 0, make_adadelta),
      spec("Rprop", 28, 0, make_rprop),
      spec("LA1-RMSprop-mc", 36, 1, [] { return make_nested<1>(make_rmsprop_mc()); }),
  };
  struct set_spec {
    const char* name;
    std::vector<Shape> shapes;
  };
  const std::vector<set_spec> sets{{"single", single}, {"resnet18", resnet}};

  for (const auto& s : sets)
    for (unsigned threads : {1u, 2u}) {
      const std::string where = "/" + std::string(s.name) + "/t" + std::to_string(threads);
      auto shapes = s.shapes;
      // Each optimizer against the Adam-shaped roofline, through the three containers.
      for (const auto& o : opts) {
        const std::size_t block = cycle_steps(o.depth, o.k);
        // The roofline member only needs enough passes to pair with each turn.
        std::vector<member> members{{"roofline", std::min<std::size_t>(block, 25), 28.0 * n, [=] {
                                       return std::unique_ptr<live_case>(new roofline_case(false, threads));
                                     }}};
        for (const char* kind : {"vector", "eigen", "xtensor"})
          members.push_back({kind, block, bytes_per_step(o, resnet18_numel),
                             [=, k = std::string(kind)] { return o.make(k, shapes, threads); }});
        const std::string key = "steps/" + o.name + where;
        benchmark::RegisterBenchmark(key.c_str(), [=](benchmark::State& st) { run_group(st, key, members); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond)
            ->Repetitions(1)
            ->Iterations(rotations_for(4 * block));
      }
      // The library's Adam step against the loop it had before the AVX-512 dispatch.
      if (std::string(s.name) == "single") {
        const opt_spec& o = opts[1];
        std::vector<member> members{
            {"roofline", 1, 28.0 * n, [=] { return std::unique_ptr<live_case>(new roofline_case(false, threads)); }},
            {"vector", 1, 28.0 * n, [=] { return o.make("vector", shapes, threads); }},
            {"xsimd_only", 1, 28.0 * n, [=] { return std::unique_ptr<live_case>(new xsimd_adam_case(threads)); }}};
        const std::string key = "dispatch/Adam" + where;
        benchmark::RegisterBenchmark(key.c_str(), [=](benchmark::State& st) { run_group(st, key, members); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond)
            ->Repetitions(1)
            ->Iterations(rotations_for(3));
      }
      // The cost of gradient clipping: Adam with and without it, in rotation.
      // Bytes per element: Adam 28; clipping by norm reads g once more (32);
      // torch's way (norm, then g *= c in place, then the step) 28 + 4 + 8.
      if (std::string(s.name) == "resnet18") {
        std::vector<member> members;
        for (auto [name, way, bytes] : {std::tuple{"Adam", clip_way::none, 28.0},
                                        {"clip_norm", clip_way::option_norm, 32.0},
                                        {"clip_norm_coef1", clip_way::option_norm1, 32.0},
                                        {"clip_value", clip_way::option_value, 28.0},
                                        {"torch_way", clip_way::free_norm, 40.0}})
          members.push_back({name, 1, bytes * n, [=, w = way] {
                               return std::unique_ptr<live_case>(new clip_case(w, shapes, threads));
                             }});
        const std::string key = "clip/Adam" + where;
        benchmark::RegisterBenchmark(key.c_str(), [=](benchmark::State& st) { run_group(st, key, members); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond)
            ->Repetitions(1)
            ->Iterations(rotations_for(5));
      }
      // Amortized nesting cost: depth 0-3 in rotation, std::vector.
      for (const auto& base : {adam, sgd}) {
        std::vector<member> members;
        for (int d = 0; d <= 3; ++d) {
          const std::string name = d == 0 ? base.name : "LA" + std::to_string(d) + "-" + base.name;
          const opt_spec& o = *std::find_if(opts.begin(), opts.end(), [&](const opt_spec& x) { return x.name == name; });
          members.push_back({d == 0 ? o.name : "LA" + std::to_string(d), std::max<std::size_t>(cycle_steps(d), 25),
                             bytes_per_step(o, resnet18_numel), [=] { return o.make("vector", shapes, threads); }});
        }
        const std::string key = "nesting/" + base.name + where;
        benchmark::RegisterBenchmark(key.c_str(), [=](benchmark::State& st) { run_group(st, key, members); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond)
            ->Repetitions(1)
            ->Iterations(rotations_for(100));
      }
    }
}

}  // namespace

int main(int argc, char** argv) {
  // Our own flag, taken out before Google Benchmark reads the rest.
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--group_steps=", 0) == 0) group_steps = std::stoul(a.substr(14));
    else argv[kept++] = argv[i];
  }
  argc = kept;
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
