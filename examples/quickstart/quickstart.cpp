// Quick start: Nested Lookahead over Adam on plain std::vector<float> tensors.
#include <nestla/nestla.hpp>

#include <cstdio>
#include <vector>

int main() {
  // A "model" with two weight tensors, and the gradients your code computes.
  std::vector<std::vector<float>> weights{{0.5f, -1.0f, 2.0f}, {3.0f}};
  std::vector<std::vector<float>> grads{{0.0f, 0.0f, 0.0f}, {0.0f}};

  // Adam moves the fast weights; every 5 steps the inner Lookahead pulls its
  // slow weights halfway toward them; every 5 of those syncs the outer one does.
  nestla::Lookahead<nestla::Lookahead<nestla::Adam<>>> opt{
      nestla::Lookahead{nestla::Adam<>{{.lr = 0.1}}, {.k = 5, .alpha = 0.5}},
      {.k = 5, .alpha = 0.5, .momentum = nestla::Momentum::pullback}};

  for (int step = 0; step < 500; ++step) {
    // Gradient of the loss sum(w^2) / 2.
    for (std::size_t t = 0; t < weights.size(); ++t)
      for (std::size_t i = 0; i < weights[t].size(); ++i) grads[t][i] = weights[t][i];
    const bool outer_synced = opt.step(weights, grads);
    if (outer_synced && opt.syncs() % 5 == 0) std::printf("step %3d: w[1] = %.5f\n", step + 1, weights[1][0]);
  }
  return std::abs(weights[1][0]) < 0.05f ? 0 : 1;
}
