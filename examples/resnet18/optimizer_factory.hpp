// The trainer's runtime optimizer choice, dispatched to compile-time nestla types behind one small interface.
#pragma once

// A command line picks a base (SGD, Adam, AdamW) and a nesting depth at run time, while
// nestla's optimizers are compile-time types (Lookahead<Lookahead<Adam<float>>>). The
// factory instantiates nestla::nested_t<D, Base> for every base and D in 0..max_depth and
// hides them behind AnyOptimizer<Params>, so the training loop calls one virtual step per
// batch and nestla's fused update runs unchanged inside. The parameter-set type and the
// nestla backend are template parameters: the CPU trainer uses Eigen maps over the
// model's storage and nestla::host; a GPU model plugs in its own set and backend.

#include <algorithm>
#include <cstdint>
#include <istream>
#include <memory>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <nestla/eigen.hpp>
#include <nestla/nestla.hpp>

namespace resnet18 {

enum class BaseKind { sgd, adam, adamw };

// One Lookahead level: sync after every k-th cycle of the level below, with step alpha.
struct LevelSpec {
  int k = 5;
  double alpha = 0.5;
  nestla::Momentum momentum = nestla::Momentum::keep;
  double outer_momentum = 0;    // the sync's momentum (DiLoCo's outer Nesterov SGD: 0.9)
  bool outer_nesterov = false;
};

// Depths the factory compiles. nestla itself nests deeper; every extra depth is three
// more instantiations of the whole optimizer, so the trainer stops at the paper's needs.
inline constexpr int max_factory_depth = 3;

struct OptimizerSpec {
  BaseKind base = BaseKind::adam;
  std::vector<LevelSpec> levels;  // innermost first; empty: the base optimizer alone
  double lr = 1e-3;
  double momentum = 0.9;  // SGD only
  bool nesterov = false;  // SGD only
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Adam and AdamW
  double weight_decay = 0;  // L2 in the gradient (SGD, Adam); decoupled (AdamW)
  // Tensors (indices in the parameter set) put in a parameter group with weight decay 0.
  std::vector<std::size_t> no_decay_tensors;

  [[nodiscard]] int depth() const noexcept { return static_cast<int>(levels.size()); }
};

const char* to_string(BaseKind b) noexcept;

// The optimizer as the training loop sees it.
template <class Params>
class AnyOptimizer {
 public:
  virtual ~AnyOptimizer() = default;

  // One step on the parameters with their gradients; true when the outermost level
  // completed a cycle (for a base optimizer: always, as nestla's step()).
  virtual bool step(Params& params, Params& grads) = 0;
  // The base optimizer's lr (schedules call this every step); groups without their own lr follow it.
  virtual void set_lr(double lr) = 0;
  [[nodiscard]] virtual double lr() const = 0;
  virtual void set_threads(unsigned threads) = 0;

  // nestla's checkpoint of the whole nested state (format, checksum and checks are nestla's).
  virtual void save(std::ostream& out) const = 0;
  virtual void load(std::istream& in) = 0;

  // Distributed training: the group of workers of every level, level 0 (the base:
  // gradient averaging) first, depth() + 1 of them; a null entry is the worker alone.
  virtual void set_groups(const std::vector<std::shared_ptr<nestla::worker_group>>& groups) = 0;
  // What this worker's collectives moved so far, summed over its distinct groups.
  [[nodiscard]] virtual nestla::comm_stats comm_stats() const = 0;

  // Exchanges the parameters with the outermost Lookahead level's slow weights: once to
  // evaluate there, once more to return. Needs depth >= 1 and at least one step.
  virtual void swap_slow(Params& params) = 0;
  [[nodiscard]] virtual bool has_slow_weights() const = 0;

  [[nodiscard]] virtual int depth() const = 0;
  [[nodiscard]] virtual std::uint64_t steps() const = 0;
  // Syncs of every Lookahead level so far, innermost first.
  [[nodiscard]] virtual std::vector<std::uint64_t> syncs() const = 0;
  // nestla's type name, e.g. "Lookahead<Lookahead<Adam>>".
  [[nodiscard]] virtual std::string type_name() const = 0;
  // The composition with every level's live options, outermost first, and the nestla type.
  [[nodiscard]] virtual std::string describe() const = 0;
  // typeid of the nestla optimizer inside, so tests can check the dispatch exactly.
  [[nodiscard]] virtual const std::type_info& type() const noexcept = 0;
};

namespace detail {

template <class T, class Backend>
std::string describe_base(const nestla::SGD<T, Backend>& o) {
  const auto& p = o.options();
  std::ostringstream s;
  s << "SGD(lr=" << p.lr << ", momentum=" << p.momentum << (p.nesterov ? ", nesterov" : "")
    << ", weight_decay=" << p.weight_decay;
  return s.str();
}
template <class T, bool Decoupled, class Backend>
std::string describe_base(const nestla::BaseOptimizer<nestla::adam_rule<Decoupled>, T, Backend>& o) {
  const auto& p = o.options();
  std::ostringstream s;
  s << (Decoupled ? "AdamW" : "Adam") << "(lr=" << p.lr << ", betas=(" << p.beta1 << ", " << p.beta2
    << "), eps=" << p.eps << ", weight_decay=" << p.weight_decay;
  return s.str();
}

template <class Opt>
std::string describe_levels(const Opt& o) {
  if constexpr (Opt::depth == 0) {
    std::string s = describe_base(o);
    if (!o.param_groups().empty()) {
      std::size_t n = 0;
      for (const auto& g : o.param_groups()) n += g.tensors.size();
      s += ", " + std::to_string(n) + " tensors without weight decay";
    }
    return s + ")";
  } else {
    const auto& p = o.options();
    std::ostringstream s;
    s << "Lookahead(k=" << p.k << ", alpha=" << p.alpha << ", momentum=" << nestla::to_string(p.momentum);
    if (p.outer_momentum != 0) s << ", outer_momentum=" << p.outer_momentum << (p.outer_nesterov ? " nesterov" : "");
    s << ") o " << describe_levels(o.inner());
    return s.str();
  }
}

template <class Opt>
void collect_syncs(const Opt& o, std::vector<std::uint64_t>& out) {
  if constexpr (Opt::depth >= 1) {
    collect_syncs(o.inner(), out);
    out.push_back(o.syncs());
  }
}

template <class Opt, class Params>
class OptimizerModel final : public AnyOptimizer<Params> {
 public:
  explicit OptimizerModel(Opt opt) : opt_(std::move(opt)) {}

  bool step(Params& params, Params& grads) override { return opt_.step(params, grads); }
  void set_lr(double lr) override { opt_.base().set_lr(lr); }
  double lr() const override { return opt_.base().options().lr; }
  void set_threads(unsigned threads) override {
    // Only host backends have worker threads; a device backend (nestla::cuda::device) has none to set.
    if constexpr (requires(typename Opt::backend_type::context& c) { c.pool; }) opt_.base().set_threads(threads);
    else (void)threads;
  }
  void save(std::ostream& out) const override { opt_.save(out); }
  void load(std::istream& in) override { opt_.load(in); }
  void set_groups(const std::vector<std::shared_ptr<nestla::worker_group>>& groups) override {
    if (!groups.empty() && groups.size() != static_cast<std::size_t>(Opt::depth + 1))
      throw std::invalid_argument("set_groups: " + std::to_string(groups.size()) + " groups for " +
                                  std::to_string(Opt::depth + 1) + " levels (base and Lookahead levels)");
    auto at = [&](std::size_t l) { return groups.empty() ? nullptr : groups[l]; };
    opt_.base().set_group(at(0));
    if constexpr (Opt::depth >= 1) {
      std::size_t l = 1;
      opt_.for_each_level([&](auto& level) { level.set_group(at(l++)); });
    }
  }
  nestla::comm_stats comm_stats() const override {
    std::vector<const nestla::worker_group*> seen;
    nestla::comm_stats sum;
    auto add = [&](const std::shared_ptr<nestla::worker_group>& g) {
      if (!g || std::find(seen.begin(), seen.end(), g.get()) != seen.end()) return;
      seen.push_back(g.get());
      sum.collectives += g->stats().collectives;
      sum.bytes += g->stats().bytes;
      sum.bytes_sent += g->stats().bytes_sent;
    };
    add(opt_.base().group());
    if constexpr (Opt::depth >= 1) opt_.for_each_level([&](const auto& level) { add(level.group()); });
    return sum;
  }
  void swap_slow(Params& params) override {
    if constexpr (Opt::depth >= 1) opt_.swap_slow_weights(params);
    else throw std::logic_error("swap_slow: " + Opt::type_name() + " has no slow weights (depth 0)");
  }
  bool has_slow_weights() const override { return Opt::depth >= 1 && opt_.base().initialized(); }
  int depth() const override { return Opt::depth; }
  std::uint64_t steps() const override { return opt_.base().step_count(); }
  std::vector<std::uint64_t> syncs() const override {
    std::vector<std::uint64_t> out;
    collect_syncs(opt_, out);
    return out;
  }
  std::string type_name() const override { return Opt::type_name(); }
  std::string describe() const override { return describe_levels(opt_) + "  [nestla " + Opt::type_name() + "]"; }
  const std::type_info& type() const noexcept override { return typeid(Opt); }

 private:
  Opt opt_;
};

template <class Params, class Base>
std::unique_ptr<AnyOptimizer<Params>> wrap_levels(Base base, const OptimizerSpec& spec) {
  if (!spec.no_decay_tensors.empty()) base.add_param_group(spec.no_decay_tensors, {.weight_decay = 0.0});
  std::vector<nestla::LookaheadOptions> lv;
  for (const LevelSpec& l : spec.levels)
    lv.push_back({.k = l.k,
                  .alpha = l.alpha,
                  .momentum = l.momentum,
                  .outer_momentum = l.outer_momentum,
                  .outer_nesterov = l.outer_nesterov});
  const std::span<const nestla::LookaheadOptions> levels(lv);
  auto make = [&]<int D>() -> std::unique_ptr<AnyOptimizer<Params>> {
    using Opt = nestla::nested_t<D, Base>;
    if constexpr (D == 0) return std::make_unique<OptimizerModel<Opt, Params>>(std::move(base));
    else return std::make_unique<OptimizerModel<Opt, Params>>(nestla::nested<D>(std::move(base), levels));
  };
  static_assert(max_factory_depth == 3, "add the new depths to the switch below");
  switch (spec.depth()) {
    case 0: return make.template operator()<0>();
    case 1: return make.template operator()<1>();
    case 2: return make.template operator()<2>();
    case 3: return make.template operator()<3>();
    default:
      throw std::invalid_argument("optimizer: nesting depth " + std::to_string(spec.depth()) +
                                  " is not compiled into this trainer (0 to " + std::to_string(max_factory_depth) +
                                  ")");
  }
}

}  // namespace detail

// Builds nestla::nested_t<spec.depth(), Base<T, Backend>> with the spec's options.
// nestla validates every value and throws nestla::invalid_option naming the bad one.
template <class Params, class T = float, class Backend = nestla::host>
std::unique_ptr<AnyOptimizer<Params>> make_optimizer(const OptimizerSpec& spec) {
  switch (spec.base) {
    case BaseKind::sgd:
      return detail::wrap_levels<Params>(
          nestla::SGD<T, Backend>({.lr = spec.lr, .momentum = spec.momentum, .weight_decay = spec.weight_decay,
                                   .nesterov = spec.nesterov}),
          spec);
    case BaseKind::adam:
      return detail::wrap_levels<Params>(nestla::Adam<T, Backend>({.lr = spec.lr, .beta1 = spec.beta1,
                                                                   .beta2 = spec.beta2, .eps = spec.eps,
                                                                   .weight_decay = spec.weight_decay}),
                                         spec);
    case BaseKind::adamw:
      return detail::wrap_levels<Params>(nestla::AdamW<T, Backend>({.lr = spec.lr, .beta1 = spec.beta1,
                                                                    .beta2 = spec.beta2, .eps = spec.eps,
                                                                    .weight_decay = spec.weight_decay}),
                                         spec);
  }
  throw std::invalid_argument("optimizer: unknown base optimizer");
}

// The CPU model's parameter set: Eigen maps over its flat storage (no copies).
using EigenParams = std::vector<Eigen::Map<Eigen::VectorXf>>;

// Compiled once in optimizer_factory.cpp: the twelve nestla types are heavy to instantiate.
extern template std::unique_ptr<AnyOptimizer<EigenParams>> make_optimizer<EigenParams, float, nestla::host>(
    const OptimizerSpec&);

}  // namespace resnet18
