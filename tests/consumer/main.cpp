// Builds against the installed package and checks one Lookahead<Adam> step by hand.
#include <nestla/nestla.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  std::vector<float> w{1.0f, -2.0f}, g{0.5f, -0.25f};
  nestla::Lookahead opt{nestla::Adam<>{{.lr = 0.1}}, {.k = 1, .alpha = 0.5}};
  opt.step(w, g);
  // Adam's first step moves each weight by lr * sign(g); the sync halves it.
  const bool ok = std::fabs(w[0] - 0.95f) < 1e-6f && std::fabs(w[1] + 1.95f) < 1e-6f;
  std::printf("consumer: w = %g %g: %s\n", w[0], w[1], ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
