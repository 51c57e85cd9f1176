// nestla::ops on every host vector type (xsimd batches wrapped, the AVX-512 dispatch vector) against the scalar ops, bit for bit,
// and a rule using every operation run through the optimizer against a scalar loop. Built with several -march flags.
#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace ops = nestla::ops;

namespace {

template <class T>
std::vector<T> special_values() {
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> v{T(0), -T(0), T(1), T(-1), T(2.5), T(-3.75), T(1e-30), T(-1e-30), inf, -inf, nan, T(0.1),
                   T(-0.1), T(1e30), std::numeric_limits<T>::denorm_min(), T(7), T(-7), T(0.5)};
  for (int i = 0; v.size() < 64; ++i) v.push_back(T(std::sin(i * 1.3) * 4));
  return v;
}

// Same bits, or both NaN (NaN payloads are not specified).
template <class T>
bool same(T a, T b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// Applies f lane by lane through vector type V (width W) and checks every lane
// against f on scalars.
template <class V, class T, std::size_t W, class Load, class Store, class F>
void check_binary(const char* what, Load load, Store store, F f) {
  const auto xs = special_values<T>();
  std::vector<T> ys(xs.rbegin(), xs.rend());
  for (std::size_t shift = 0; shift < 3; ++shift) {
    std::rotate(ys.begin(), ys.begin() + 1, ys.end());
    for (std::size_t i = 0; i + W <= xs.size(); i += W) {
      const V a = load(&xs[i]), b = load(&ys[i]);
      T out[W];
      store(f(a, b), out);
      for (std::size_t l = 0; l < W; ++l) {
        const T expect = f(xs[i + l], ys[i + l]);
        const std::string op = what;
        CAPTURE(op);
        CAPTURE(xs[i + l]);
        CAPTURE(ys[i + l]);
        CHECK(same(out[l], expect));
      }
    }
  }
}

template <class V, class T, std::size_t W, class Load, class Store>
void check_all_ops(Load load, Store store) {
  auto c = [&](const char* what, auto f) { check_binary<V, T, W>(what, load, store, f); };
  c("sqrt", [](auto a, auto) { return ops::sqrt(a); });
  c("abs", [](auto a, auto) { return ops::abs(a); });
  c("sign", [](auto a, auto) { return ops::sign(a); });
  c("unary minus", [](auto a, auto) { return -a; });
  c("max", [](auto a, auto b) { return ops::max(a, b); });
  c("min", [](auto a, auto b) { return ops::min(a, b); });
  c("reciprocal", [](auto a, auto) { return ops::reciprocal(a); });
  c("clamp", [](auto a, auto b) {
    using X = decltype(a);
    return ops::clamp(a, X(T(-2)), X(T(3))) + b * X(T(0));
  });
  c("select <", [](auto a, auto b) { return ops::select(a < b, a, b); });
  c("select <=", [](auto a, auto b) { return ops::select(a <= b, b, a); });
  c("select >", [](auto a, auto b) { return ops::select(a > b, a, -b); });
  c("select >=", [](auto a, auto b) { return ops::select(a >= b, a, b); });
  c("select ==", [](auto a, auto b) { return ops::select(a == b, a, b + a); });
  c("select !=", [](auto a, auto b) { return ops::select(a != b, a - b, b); });
  c("arithmetic with scalars", [](auto a, auto b) { return T(2) * a - b / T(3) + T(1); });
}

}  // namespace

TEST_CASE_TEMPLATE("nestla::ops on the host's SIMD vectors (xsimd) match the scalar ops bit for bit", T, float, double) {
  using B = nestla::detail::simd<T>;
  check_all_ops<B, T, B::size>([](const T* p) { return B::load_unaligned(p); },
                               [](const B& v, T* out) { v.store_unaligned(out); });
}

#if defined(NESTLA_HOST_AVX512_DISPATCH)
TEST_CASE_TEMPLATE("nestla::ops on the AVX-512 dispatch vector match the scalar ops bit for bit", T, float, double) {
  if (!nestla::detail::wide::avx512_usable()) return;
  using W = nestla::detail::wide::vec512<T>;
  check_all_ops<W, T, W::size>([](const T* p) { return W::load_unaligned(p); },
                               [](const W& v, T* out) { v.store_unaligned(out); });
}
#endif

namespace {

// A rule whose update uses every element operation: run through the
// optimizer (SIMD bodies, dispatch, scalar tails) it must give the bits of the
// same functor applied to scalars in a plain loop.
struct every_op_rule {
  struct options {
    double lr = 0.01;
  };
  static constexpr const char* name = "EveryOp";
  static constexpr std::array<const char*, 2> states{"a", "b"};
  static constexpr int first_moment = 0;
  static void validate(const options& o, const nestla::option_check& check) { check(o.lr >= 0, "lr", o.lr, ">= 0"); }
  // (prepare ignores the options: the group's lr arrives in the context)
  static void fields(auto& o, auto&& f) { f("lr", o.lr); }
  template <class T>
  struct update {
    T lr;
    template <class V>
    NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
      const V one(T(1));
      s[0] = ops::max(s[0] * V(T(0.9)), ops::abs(g)) + ops::min(g, -g) * V(T(0.01));
      s[1] = ops::select(g * s[1] > V(T(0)), s[1] * V(T(1.2)), ops::select(g * s[1] < V(T(0)), s[1] * V(T(0.5)), s[1]));
      s[1] = ops::clamp(s[1] + V(T(1e-3)), V(T(1e-6)), V(T(50)));
      p = p - V(lr) * ops::sign(g) * ops::sqrt(s[0] + one) * ops::reciprocal(one + s[1]);
    }
  };
  template <class T>
  static update<T> prepare(const options&, const nestla::step_context& c) {
    return {T(c.lr)};
  }
};

}  // namespace

static_assert(nestla::UpdateRule<every_op_rule>);

TEST_CASE_TEMPLATE("a rule using every element operation matches its scalar loop bit for bit", T, float, double) {
  // 131 elements: SIMD bodies and a scalar tail; a second tensor of 5 is all tail.
  std::vector<std::vector<T>> p{std::vector<T>(131), std::vector<T>(5)}, g = p;
  auto q = p;
  std::vector<std::vector<T>> sa{std::vector<T>(131), std::vector<T>(5)}, sb = sa;
  for (std::size_t t = 0; t < p.size(); ++t)
    for (std::size_t i = 0; i < p[t].size(); ++i) p[t][i] = q[t][i] = T(std::cos(double(i) + t));
  nestla::BaseOptimizer<every_op_rule, T> opt({.lr = 0.05});
  const typename every_op_rule::update<T> op{T(0.05)};
  for (int step = 0; step < 20; ++step) {
    for (std::size_t t = 0; t < p.size(); ++t)
      for (std::size_t i = 0; i < p[t].size(); ++i) g[t][i] = T(std::sin(double(i * 7 + step * 3 + t))) - T(0.1) * p[t][i];
    opt.step(p, g);
    for (std::size_t t = 0; t < q.size(); ++t)
      for (std::size_t i = 0; i < q[t].size(); ++i) {
        T s[2] = {sa[t][i], sb[t][i]};
        const T gi = T(std::sin(double(i * 7 + step * 3 + t))) - T(0.1) * q[t][i];
        op(q[t][i], gi, s);
        sa[t][i] = s[0];
        sb[t][i] = s[1];
      }
  }
  CHECK(p == q);
}
