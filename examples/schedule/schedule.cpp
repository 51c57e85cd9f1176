// Schedules: PyTorch's lr schedules as functions of the step, for the lr, the momentum and a Lookahead level's alpha.
#include <nestla/nestla.hpp>
#include <nestla/schedule.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  std::vector<float> w{0.5f, -1.0f, 2.0f}, g(3);
  auto gradient = [&] { for (std::size_t i = 0; i < w.size(); ++i) g[i] = w[i]; };  // of sum(w^2) / 2

  // Nested Lookahead over Adam: 50 steps of linear warmup, then cosine annealing
  // to 1e-3 at step 500, on the lr; the outer level's alpha rises from 0.5 to 0.8
  // over its first 10 syncs (steps 25 ... 250), then stays.
  auto opt = nestla::nested<2>(nestla::Adam<>{{.lr = 0.05}}, {{.k = 5, .alpha = 0.5}, {.k = 5, .alpha = 0.5}});
  const nestla::SequentialLR lr({nestla::LinearLR({.base_lr = 0.05, .start_factor = 0.1, .total_iters = 50}),
                                 nestla::CosineAnnealingLR({.base_lr = 0.05, .T_max = 450, .eta_min = 1e-3})},
                                {50});
  const nestla::LinearLR alpha({.base_lr = 0.8, .start_factor = 0.625, .end_factor = 1.0, .total_iters = 10});
  for (std::int64_t t = 0; t < 500; ++t) {
    opt.base().set_lr(lr(t));
    opt.set_alpha(alpha(opt.syncs()));  // takes effect at the level's next sync
    gradient();
    opt.step(w, g);
  }
  std::printf("warmup + cosine: lr %.4g, outer alpha %.3g, |w| = %.2e\n", opt.base().options().lr, opt.options().alpha,
              std::hypot(w[0], w[1], w[2]));

  // OneCycleLR over SGD with momentum: the lr and the momentum cycle inversely
  // (for Adam, set beta1 from one_cycle.momentum(t) the same way).
  std::vector<float> v{0.5f, -1.0f, 2.0f};
  nestla::SGD<> sgd;
  const nestla::OneCycleLR one_cycle({.max_lr = 0.1, .total_steps = 300});
  for (std::int64_t t = 0; t < 300; ++t) {
    auto o = sgd.options();
    o.lr = one_cycle(t);
    o.momentum = one_cycle.momentum(t);
    sgd.set_options(o);
    for (std::size_t i = 0; i < v.size(); ++i) g[i] = v[i];
    sgd.step(v, g);
  }
  std::printf("one cycle: lr %.3g, momentum %.3g, |v| = %.2e\n", sgd.options().lr, sgd.options().momentum,
              std::hypot(v[0], v[1], v[2]));
  // From |w| = 2.3: both converge; the schedules ended where they should.
  const bool ok = std::hypot(w[0], w[1], w[2]) < 0.1 && std::hypot(v[0], v[1], v[2]) < 1e-3 &&
                  opt.options().alpha == 0.8 && std::fabs(opt.base().options().lr - 1e-3) < 1e-5;
  return ok ? 0 : 1;
}
