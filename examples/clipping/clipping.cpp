// Gradient clipping: torch's clip_grad_norm_ as a base-optimizer option, and as a free function before the step.
#include <nestla/nestla.hpp>

#include <cstdio>
#include <vector>

using Set = std::vector<std::vector<float>>;

// Gradient of the loss sum(w^2) / 2, with a spike (x1000) every 50 steps.
Set gradient(const Set& w, int step) {
  Set g = w;
  for (auto& t : g)
    for (auto& x : t) x *= step % 50 == 0 ? 1000.0f : 1.0f;
  return g;
}

int main() {
  Set w{{0.5f, -1.0f, 2.0f}, {3.0f}}, v = w;  // two copies of a model

  // The option: every base step (here under Lookahead) sees gradients of total
  // L2 norm at most 1. Your gradients are only read.
  auto opt = nestla::nested<1>(nestla::Adam<>{{.lr = 0.05}}, {{.k = 5}});
  opt.base().set_clip_grad_norm({.max_norm = 1.0});

  // torch's way: clip the gradients in place, then step.
  auto plain = nestla::nested<1>(nestla::Adam<>{{.lr = 0.05}}, {{.k = 5}});

  for (int step = 0; step < 300; ++step) {
    const Set g = gradient(w, step);
    opt.step(w, g);
    if (step % 50 == 0) std::printf("step %3d: gradient norm %8.2f, clipped to 1\n", step, opt.base().last_grad_norm());

    Set gv = gradient(v, step);
    nestla::clip_grad_norm(gv, 1.0);  // returns the norm before clipping
    plain.step(v, gv);
  }
  std::printf("w = %.4f %.4f %.4f %.4f\n", w[0][0], w[0][1], w[0][2], w[1][0]);
  // Both ways give the same bits.
  return w == v && std::abs(w[1][0]) < 0.1f ? 0 : 1;
}
