// The update-rule policy: state buffers a variant uses, fresh states, host scalars, groups, checkpoints of a user rule.
#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <array>
#include <cmath>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

namespace {

// Three states; the variants use {0}, {0, 2} and {0, 1, 2}: not a prefix, so
// the library must hand each functor its states at their own indices.
struct gappy_rule {
  struct options {
    double lr = 0.1;
    int mode = 0;  // 0: state a only, 1: a and c, 2: all three
    double weight_decay = 0;
  };
  static constexpr const char* name = "Gappy";
  static constexpr std::array<const char*, 3> states{"a", "b", "c"};
  static constexpr int first_moment = 2;
  static void validate(const options& o, const nestla::option_check& check) {
    check(o.lr >= 0, "lr", o.lr, "must be >= 0");
    check(o.mode >= 0 && o.mode <= 2, "mode", o.mode, "must be 0, 1 or 2");
  }
  static void fields(auto& o, auto&& f) {
    f("lr", o.lr);
    f("mode", o.mode);
    f("weight_decay", o.weight_decay);
  }
  template <class T, unsigned Uses>
  struct update {
    static constexpr unsigned uses = Uses;
    T lr, wd;
    bool first_c;  // c is new at this step
    template <class V>
    NESTLA_HOST_DEVICE void operator()(V& p, V g, V* s) const {
      g = g + V(wd) * p;
      s[0] = s[0] * V(T(0.5)) + g;
      if constexpr ((Uses & 4u) != 0) s[2] = first_c ? g * V(T(3)) : s[2] * V(T(0.25)) + g;
      if constexpr ((Uses & 2u) != 0) s[1] = s[1] + g * g;
      V d = s[0];
      if constexpr ((Uses & 4u) != 0) d = d + s[2];
      if constexpr ((Uses & 2u) != 0) d = d / (nestla::ops::sqrt(s[1]) + V(T(1)));
      p = p - V(lr) * d;
    }
  };
  template <class T>
  using variants = std::variant<update<T, 0b001>, update<T, 0b101>, update<T, 0b111>>;
  template <class T>
  static variants<T> prepare(const options& o, const nestla::step_context& c) {
    const T lr(c.lr), wd(c.weight_decay);
    if (o.mode == 0) return update<T, 0b001>{lr, wd, false};
    if (o.mode == 1) return update<T, 0b101>{lr, wd, c.is_fresh(2)};
    return update<T, 0b111>{lr, wd, c.is_fresh(2)};
  }
};

// A host scalar carried across steps: lr shrinks by a running product.
struct decaying_rule {
  struct options {
    double lr = 1;
    double decay = 0.5;
  };
  struct scalars {
    double product = 1;
  };
  static constexpr const char* name = "Decaying";
  static constexpr std::array<const char*, 0> states{};
  static constexpr int first_moment = -1;
  static void validate(const options&, const nestla::option_check&) {}
  static void fields(auto& o, auto&& f) {
    f("lr", o.lr);
    f("decay", o.decay);
  }
  static void scalar_fields(auto& s, auto&& f) { f("product", s.product); }
  static void advance(const options& o, scalars& s, const nestla::step_context&) { s.product *= o.decay; }
  template <class T>
  struct update {
    T step;
    template <class V>
    NESTLA_HOST_DEVICE void operator()(V& p, V g, V*) const {
      p = p - V(step) * g;
    }
  };
  template <class T>
  static update<T> prepare(const options&, const nestla::step_context& c, const scalars& s) {
    return {T(c.lr * s.product)};
  }
};

template <class O>
std::string bytes(const O& o) {
  std::ostringstream os;
  o.save(os);
  return os.str();
}

}  // namespace

static_assert(nestla::UpdateRule<gappy_rule>);
static_assert(nestla::UpdateRule<decaying_rule>);
static_assert(nestla::UpdateRule<nestla::sgd_rule> && nestla::UpdateRule<nestla::adam_rule<true>>);

TEST_CASE("each variant gets its states at their own indices, unused states are never created") {
  using Opt = nestla::BaseOptimizer<gappy_rule, double>;
  Opt opt({.lr = 0.1, .mode = 1});
  std::vector<double> p{1.0, -2.0, 0.5}, g{0.3, 0.1, -0.2};
  // By hand: mode 1 on the first step (c new), then mode 2 (b new).
  std::vector<double> a(3, 0), b(3, 0), c(3, 0), q = p;
  opt.step(p, g);
  for (int i = 0; i < 3; ++i) {
    a[i] = a[i] * 0.5 + g[i];
    c[i] = g[i] * 3;
    q[i] -= 0.1 * (a[i] + c[i]);
  }
  CHECK(p == q);
  CHECK(opt.state("b").empty());
  CHECK(opt.state(2).size() >= 3);
  CHECK(opt.has_first_moment());
  opt.set_options({.lr = 0.1, .mode = 2});
  opt.step(p, g);
  for (int i = 0; i < 3; ++i) {
    a[i] = a[i] * 0.5 + g[i];
    c[i] = c[i] * 0.25 + g[i];
    b[i] = b[i] + g[i] * g[i];
    q[i] -= 0.1 * ((a[i] + c[i]) / (std::sqrt(b[i]) + 1));
  }
  CHECK(p == q);
  CHECK(!opt.state("b").empty());
  opt.set_options({.lr = 0.1, .mode = 0});
  CHECK(!opt.has_first_moment());
  CHECK_THROWS_AS(opt.state("nope"), std::out_of_range);
}

TEST_CASE("SGD: momentum switched on later starts its buffer from the gradient, as torch's first momentum step") {
  nestla::SGD<double> sgd({.lr = 0.1});
  std::vector<double> w{1.0};
  sgd.step(w, std::vector<double>{2.0});
  CHECK(sgd.state("momentum_buffer").empty());
  CHECK(!sgd.has_first_moment());
  sgd.set_options({.lr = 0.1, .momentum = 0.9, .dampening = 0.5});
  CHECK(sgd.has_first_moment());
  sgd.step(w, std::vector<double>{4.0});  // b <- g = 4 (no dampening on the first momentum step)
  CHECK(w[0] == doctest::Approx(1.0 - 0.2 - 0.4).epsilon(1e-15));
  sgd.step(w, std::vector<double>{2.0});  // b <- 0.9 * 4 + 0.5 * 2 = 4.6
  CHECK(w[0] == doctest::Approx(0.4 - 0.46).epsilon(1e-15));
}

TEST_CASE("maximize ascends: SGD and Adam with maximize equal the minimizing step on -g") {
  std::vector<double> a{1.0, 2.0}, b = a;
  nestla::Adam<double> up({.lr = 0.1, .weight_decay = 0.1, .maximize = true}), down({.lr = 0.1, .weight_decay = 0.1});
  nestla::SGD<double> sup({.lr = 0.1, .momentum = 0.9, .maximize = true}), sdown({.lr = 0.1, .momentum = 0.9});
  for (int s = 0; s < 5; ++s) {
    up.step(a, std::vector<double>{0.5, -0.25});
    down.step(b, std::vector<double>{-0.5, 0.25});
    sup.step(a, std::vector<double>{0.1, 0.3});
    sdown.step(b, std::vector<double>{-0.1, -0.3});
  }
  CHECK(a == b);
}

TEST_CASE("host scalars advance once per taken step, are skipped with the step, and are checkpointed") {
  using Opt = nestla::BaseOptimizer<decaying_rule, double>;
  Opt opt({.lr = 1, .decay = 0.5});
  opt.set_skip_nonfinite(true);
  std::vector<double> p{0.0}, g{1.0};
  opt.step(p, g);  // lr 0.5
  CHECK(p[0] == -0.5);
  CHECK(!opt.step(p, std::vector<double>{NAN}));
  opt.step(p, g);  // lr 0.25
  CHECK(p[0] == -0.75);
  std::stringstream ss;
  opt.save(ss);
  Opt back({.lr = 3, .decay = 0.9});
  back.load(ss);
  std::vector<double> p2 = p;
  opt.step(p, g);
  back.step(p2, g);
  CHECK(p[0] == -0.875);
  CHECK(p2 == p);
  CHECK(bytes(back) == bytes(opt));
}

TEST_CASE("a user rule round-trips through a checkpoint mid-run, nested, bit for bit") {
  auto make = [] {
    return nestla::nested<2>(nestla::BaseOptimizer<gappy_rule, float>({.lr = 0.05, .mode = 2}),
                             {{.k = 2, .momentum = nestla::Momentum::pullback}, {.k = 3}});
  };
  auto a = make(), b = make();
  std::vector<float> pa(37, 0.5f), pb = pa, g(37);
  for (int s = 0; s < 7; ++s) {
    for (int i = 0; i < 37; ++i) g[i] = std::sin(float(i + s));
    a.step(pa, g);
    b.step(pb, g);
  }
  std::stringstream ss;
  b.save(ss);
  auto c = make();
  c.load(ss);
  for (int s = 7; s < 20; ++s) {
    for (int i = 0; i < 37; ++i) g[i] = std::sin(float(i + s));
    a.step(pa, g);
    c.step(pb, g);
  }
  CHECK(pa == pb);
  CHECK(bytes(a) == bytes(c));
}

TEST_CASE("rule errors: options validated with the rule's name, groups need the rule's weight_decay") {
  using Opt = nestla::BaseOptimizer<gappy_rule, float>;
  std::string msg;
  try {
    Opt bad({.lr = 0.1, .mode = 7});
  } catch (const nestla::invalid_option& e) {
    msg = e.what();
  }
  CHECK(msg == "nestla: Gappy: mode = 7 is invalid (must be 0, 1 or 2)");
  nestla::BaseOptimizer<decaying_rule, float> d;
  CHECK_THROWS_WITH_AS(d.add_param_group({0}, {.weight_decay = 0.1}),
                       "nestla: Decaying: a parameter group sets weight_decay, which Decaying does not have",
                       nestla::invalid_option);
  CHECK_NOTHROW(d.add_param_group({0}, {.lr = 0.1}));
}

TEST_CASE("parameter groups of a user rule get their own lr and weight decay") {
  nestla::BaseOptimizer<gappy_rule, double> opt({.lr = 0.1, .mode = 0});
  opt.add_param_group({1}, {.lr = 0.5, .weight_decay = 0.2});
  std::vector<std::vector<double>> p{{1.0}, {1.0}}, g{{1.0}, {1.0}};
  opt.step(p, g);
  CHECK(p[0][0] == 1.0 - 0.1 * 1.0);
  CHECK(p[1][0] == 1.0 - 0.5 * (1.0 + 0.2));
}

namespace {
// Chooses its variant from the group's lr: not allowed (one pass runs one variant).
struct split_rule {
  struct options {
    double lr = 0.1;
  };
  static constexpr const char* name = "Split";
  static constexpr std::array<const char*, 0> states{};
  static constexpr int first_moment = -1;
  static void validate(const options&, const nestla::option_check&) {}
  static void fields(auto& o, auto&& f) { f("lr", o.lr); }
  template <class T, int N>
  struct update {
    T lr;
    template <class V>
    void operator()(V& p, V g, V*) const {
      p = p - V(lr) * g;
    }
  };
  template <class T>
  static std::variant<update<T, 0>, update<T, 1>> prepare(const options&, const nestla::step_context& c) {
    if (c.lr > 0.2) return update<T, 1>{T(c.lr)};
    return update<T, 0>{T(c.lr)};
  }
};
}  // namespace

TEST_CASE("a rule that picks different variants for two groups of one step is an error, before any change") {
  nestla::BaseOptimizer<split_rule, double> opt;
  opt.add_param_group({1}, {.lr = 0.5});
  std::vector<std::vector<double>> p{{1.0}, {1.0}}, g{{1.0}, {1.0}};
  CHECK_THROWS_AS(opt.step(p, g), std::logic_error);
  CHECK(p[0][0] == 1.0);
  CHECK(p[1][0] == 1.0);
}
