// Writing a base optimizer: Signum (Bernstein et al. 2018), m <- beta m + (1 - beta) g; theta <- theta - lr sign(m).
#include <nestla/nestla.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

struct SignumRule {
  struct options {
    double lr = 1e-3;
    double beta = 0.9;
  };
  static constexpr const char* name = "Signum";
  static void validate(const options& o, const nestla::option_check& check) {
    check(o.lr >= 0, "lr", o.lr, "must be >= 0");
    check(o.beta >= 0 && o.beta < 1, "beta", o.beta, "must be in [0, 1)");
  }
  static void fields(auto& o, auto&& f) { f("lr", o.lr); f("beta", o.beta); }  // checkpoint fields
  static constexpr std::array<const char*, 1> states{"momentum"};  // zero at the first step
  static constexpr int first_moment = 0;  // what Lookahead's reset and pullback act on

  template <class T>
  struct update {
    T lr, beta, one_minus_beta;
    template <class V>  // a scalar, a CPU SIMD vector or a CUDA kernel's lanes
    NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
      s[0] = s[0] * V(beta) + V(one_minus_beta) * g;
      p = p - V(lr) * nestla::ops::sign(s[0]);
    }
  };
  template <class T>  // on the host, once per step and parameter group
  static update<T> prepare(const options& o, const nestla::step_context& c) {
    return {T(c.lr), T(o.beta), T(1 - o.beta)};
  }
};
template <class T = float, class Backend = nestla::host>
using Signum = nestla::BaseOptimizer<SignumRule, T, Backend>;

int main() {
  std::vector<float> w{2.0f, -3.0f}, g(2);
  // Nested Lookahead, threads, checkpoints and groups come with it.
  auto opt = nestla::nested<2>(Signum<>({.lr = 0.01}), {{.k = 5, .momentum = nestla::Momentum::pullback}, {.k = 4}});
  for (int step = 0; step < 2000; ++step) {
    for (int i = 0; i < 2; ++i) g[i] = 2 * w[i];  // gradient of |w|^2
    opt.step(w, g);
  }
  std::printf("w = %.4f %.4f after %llu outer syncs\n", w[0], w[1], (unsigned long long)opt.syncs());
  return std::abs(w[0]) < 0.05f && std::abs(w[1]) < 0.05f ? 0 : 1;
}
