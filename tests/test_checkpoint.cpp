// Checkpoints: bit-identical resumption mid-cycle, and every damaged or mismatched checkpoint rejected with nothing changed.
#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "reference.hpp"

using nestla::Momentum;

namespace {

using Opt = nestla::nested_t<2, nestla::Adam<float>>;

Opt make() {
  auto o = nestla::nested<2>(nestla::Adam<float>({.lr = 0.01, .amsgrad = true}),
                             {{.k = 3, .alpha = 0.5, .momentum = Momentum::pullback},
                              {.k = 2, .alpha = 0.8, .momentum = Momentum::pullback}});
  o.base().add_param_group({1}, {.weight_decay = 0.0});
  return o;
}

std::string bytes(const auto& opt) {
  std::ostringstream os;
  opt.save(os);
  return os.str();
}

struct run {
  std::vector<std::vector<float>> p{std::vector<float>(41, 0.5f), std::vector<float>(7, -0.25f)};
  std::vector<std::vector<float>> g{std::vector<float>(41), std::vector<float>(7)};
  ref::grad_source src;
  template <class O>
  void steps(O& opt, int n) {
    for (int s = 0; s < n; ++s) {
      for (auto& t : g)
        for (auto& x : t) x = static_cast<float>(src.next());
      opt.step(p, g);
    }
  }
};

}  // namespace

TEST_CASE("resuming from a checkpoint taken mid-cycle is bit-identical to never stopping") {
  run a, b;
  Opt straight = make(), first = make();
  a.steps(straight, 25);
  b.steps(first, 10);  // 10 = mid inner cycle (3) and mid outer cycle (6)
  std::stringstream ss;
  first.save(ss);
  Opt resumed = make();
  resumed.base().set_lr(0.5);  // everything, options included, comes from the checkpoint
  resumed.load(ss);
  CHECK(resumed.base().options().lr == 0.01);
  CHECK(bytes(resumed) == bytes(first));
  b.steps(resumed, 15);
  CHECK(a.p == b.p);
  CHECK(bytes(resumed) == bytes(straight));
}

TEST_CASE("a checkpoint of a fresh optimizer round-trips") {
  Opt a = make(), b = make();
  b.inner().set_alpha(0.3);
  std::stringstream ss;
  a.save(ss);
  b.load(ss);
  CHECK(b.inner().options().alpha == 0.5);
  CHECK(!b.base().initialized());
}

// Found by fuzz_checkpoint: over tensors with no elements every state buffer
// is empty and saved as absent, which the loader took for a missing state.
TEST_CASE("an optimizer over tensors without elements round-trips") {
  for (std::size_t tensors : {0, 1, 3}) {
    CAPTURE(tensors);
    std::vector<std::vector<float>> p(tensors), g(tensors);
    Opt a = make();
    auto sgd = nestla::Lookahead(nestla::SGD<float>({.lr = 0.1, .momentum = 0.9}), {.momentum = Momentum::pullback});
    if (tensors < 2) {
      a = nestla::nested<2>(nestla::Adam<float>({.amsgrad = true}), {{.momentum = Momentum::pullback}, {}});
    }
    for (int s = 0; s < 3; ++s) {
      a.step(p, g);
      sgd.step(p, g);
    }
    Opt b = make();
    std::stringstream ss(bytes(a));
    b.load(ss);
    CHECK(bytes(b) == bytes(a));
    auto sgd2 = nestla::Lookahead(nestla::SGD<float>(), {});
    std::stringstream ss2(bytes(sgd));
    sgd2.load(ss2);
    CHECK(bytes(sgd2) == bytes(sgd));
  }
}

TEST_CASE("damaged and mismatched checkpoints are rejected and change nothing") {
  run r;
  Opt opt = make();
  r.steps(opt, 4);
  const std::string good = bytes(opt);
  const std::string before = good;

  auto rejects = [&](auto& target, const std::string& data, const std::string& needle) {
    const std::string was = bytes(target);
    std::istringstream is(data);
    std::string message;
    try {
      target.load(is);
    } catch (const nestla::checkpoint_error& e) {
      message = e.what();
    }
    CAPTURE(message);
    CHECK(message.find(needle) != std::string::npos);
    CHECK(bytes(target) == was);
  };

  SUBCASE("truncated") {
    rejects(opt, good.substr(0, good.size() / 2), "truncated while reading");
    rejects(opt, good.substr(0, good.size() - 1), "truncated while reading 'checksum'");
    rejects(opt, good.substr(0, 3), "truncated");
    rejects(opt, "", "empty");
  }
  SUBCASE("one flipped byte in the state") {
    std::string bad = good;
    bad[bad.size() / 2] ^= 0x10;
    rejects(opt, bad, "checksum mismatch");
  }
  SUBCASE("not a checkpoint") {
    std::string bad = good;
    bad[0] = 'X';
    rejects(opt, bad, "bad magic");
  }
  SUBCASE("other optimizer type") {
    auto sgd = nestla::nested<2>(nestla::SGD<float>({.lr = 0.1}), {{.k = 3}, {.k = 2}});
    run r2;
    r2.steps(sgd, 2);
    rejects(opt, bytes(sgd), "checkpoint is for optimizer Lookahead<Lookahead<SGD>>");
    rejects(sgd, good, "this optimizer is Lookahead<Lookahead<SGD>>");
  }
  SUBCASE("other depth") {
    nestla::Lookahead one(nestla::Adam<float>({.lr = 0.01}), {.k = 3});
    rejects(opt, bytes(one), "Lookahead<Adam>");
  }
  SUBCASE("other scalar type") {
    auto dbl = nestla::nested<2>(nestla::Adam<double>({.lr = 0.01, .amsgrad = true}), {{.k = 3}, {.k = 2}});
    rejects(dbl, good, "float32");
  }
  SUBCASE("other tensor sizes") {
    Opt other = make();
    std::vector<std::vector<float>> p{std::vector<float>(40, 0.5f), std::vector<float>(7)}, g = p;
    other.step(p, g);
    rejects(other, good, "tensor 0 has 41 elements in the checkpoint, 40 here");
    rejects(opt, bytes(other), "tensor 0 has 40 elements in the checkpoint, 41 here");
  }
  SUBCASE("a failing stream") {
    std::istringstream is(good);
    is.setstate(std::ios::badbit);
    CHECK_THROWS_AS(opt.load(is), nestla::checkpoint_error);
    CHECK(bytes(opt) == before);
  }
}

TEST_CASE("outer momentum is checkpointed: resuming mid-cycle is bit-identical to never stopping") {
  auto make_outer = [] {
    return nestla::nested<2>(nestla::AdamW<float>({.lr = 0.01}),
                             {{.k = 3, .alpha = 0.5, .momentum = Momentum::pullback, .outer_momentum = 0.9},
                              {.k = 2, .alpha = 0.7, .outer_momentum = 0.9, .outer_nesterov = true}});
  };
  run a, b;
  auto straight = make_outer(), first = make_outer();
  a.steps(straight, 29);
  b.steps(first, 14);  // after the outer level's first sync (u started) and mid-cycle
  CHECK(!first.outer_momentum_buffer().empty());
  std::stringstream ss;
  first.save(ss);
  auto resumed = nestla::nested<2>(nestla::AdamW<float>({.lr = 0.01}), {{.k = 3}, {.k = 2}});
  resumed.load(ss);
  CHECK(resumed.options().outer_nesterov);
  CHECK(resumed.inner().options().outer_momentum == 0.9);
  CHECK(bytes(resumed) == bytes(first));
  b.steps(resumed, 15);
  CHECK(a.p == b.p);
  CHECK(bytes(resumed) == bytes(straight));
}

// tests/data/checkpoint_v2.bin was written by nestla before outer momentum
// (format version 2, commit a56c759) after exactly the 7 steps below.
TEST_CASE("a version-2 checkpoint (before outer momentum) loads with no outer momentum") {
  auto make1 = [] {
    return nestla::nested<2>(nestla::Adam<double>({.lr = 0.01}),
                             {{.k = 3, .alpha = 0.5, .momentum = Momentum::pullback}, {.k = 2, .alpha = 0.8}});
  };
  auto straight = make1();
  std::vector<double> p{0.5, -1.0, 2.0, 0.25, 3.0}, g(5);
  auto grads = [&](int s, std::vector<double>& q) {
    for (std::size_t i = 0; i < q.size(); ++i) g[i] = q[i] * 0.5 + 0.1 * double(s) - 0.2 * double(i);
  };
  for (int s = 0; s < 7; ++s) grads(s, p), straight.step(p, g);
  std::ifstream in(std::string(NESTLA_TEST_DATA_DIR) + "/checkpoint_v2.bin", std::ios::binary);
  REQUIRE(in);
  auto loaded = nestla::nested<2>(nestla::Adam<double>({.lr = 0.5}),
                                  {{.k = 1, .outer_momentum = 0.9}, {.k = 1, .outer_momentum = 0.5}});
  loaded.load(in);
  CHECK(loaded.options().outer_momentum == 0);
  CHECK(loaded.inner().options().outer_momentum == 0);
  CHECK(bytes(loaded) == bytes(straight));
  auto q = p;
  for (int s = 7; s < 20; ++s) {
    grads(s, p), straight.step(p, g);
    grads(s, q), loaded.step(q, g);
  }
  CHECK(p == q);
}
