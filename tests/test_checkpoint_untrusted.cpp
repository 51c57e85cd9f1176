// Checkpoints as an attacker writes them: crafted files with valid checksums are refused with a checkpoint_error naming the field, without large allocations, and change nothing.
#include <doctest/doctest.h>

#include <nestla/nestla.hpp>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>
#include <streambuf>
#include <string>
#include <vector>

// Records the largest single allocation, and can refuse the large ones, so
// tests see what a load asks for before it fails. (GCC takes the inlined
// new[] and free below for a mismatch; both are ours.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
std::atomic<std::size_t> largest_request{0};
std::atomic<std::size_t> refuse_above{~std::size_t(0)};
}  // namespace

void* operator new(std::size_t n) {
  std::size_t seen = largest_request.load();
  while (n > seen && !largest_request.compare_exchange_weak(seen, n)) {
  }
  if (n > refuse_above.load()) throw std::bad_alloc();
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
// new[] too: sanitizer runtimes do not route it through operator new.
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

using nestla::Momentum;
using u64 = std::uint64_t;
constexpr u64 p62 = u64(1) << 62;

// A checkpoint written field by field, independently of the library's writer
// (the first test checks both agree), with the CRC-32 recomputed.
class crafted {
 public:
  template <class V>
  crafted& put(V v) {
    char raw[sizeof(V)];
    std::memcpy(raw, &v, sizeof(V));
    body_.append(raw, sizeof(V));
    return *this;
  }
  crafted& u8(unsigned v) { return put<std::uint8_t>(static_cast<std::uint8_t>(v)); }
  crafted& str(const std::string& s) {
    put<u64>(s.size());
    body_ += s;
    return *this;
  }
  // One state buffer: per tensor, its count and `size` values.
  template <class T>
  crafted& buffer(const std::vector<u64>& sizes, T value = T(0)) {
    for (auto n : sizes) {
      put<u64>(n);
      for (u64 i = 0; i < n; ++i) put<T>(value);
    }
    return *this;
  }
  // The format version header() wrote: version 3 added the fields of
  // gradient clipping (base) and outer momentum (levels).
  std::uint32_t version = 3;
  std::string bytes() const {
    std::string out = body_;
    const std::uint32_t crc = nestla::detail::crc32(body_.data(), body_.size());
    out.append(reinterpret_cast<const char*>(&crc), sizeof crc);
    return out;
  }

 private:
  std::string body_;
};

struct header_fields {
  std::string type = "Adam";
  std::uint32_t depth = 0;
  std::string scalar = "float32";
  unsigned initialized = 0;
  std::vector<u64> sizes{};
  std::uint32_t version = 3;
};
crafted header(const header_fields& h) {
  crafted c;
  c.version = h.version;
  for (char ch : {'N', 'E', 'S', 'T', 'L', 'A', 'C', 'K'}) c.put<char>(ch);
  c.put<std::uint32_t>(h.version).put<std::uint32_t>(0x01020304u).str(h.type).put<std::uint32_t>(h.depth).str(h.scalar);
  c.u8(h.initialized).put<u64>(h.sizes.size());
  for (auto n : h.sizes) c.put<u64>(n);
  return c;
}

struct level_fields {
  std::int64_t k = 2;
  double alpha = 0.5;
  unsigned momentum = 0;
  u64 cycles = 0, syncs = 0;
  unsigned swapped = 0;
};
// A Lookahead level; with sizes, also its slow weights and (has_slow_m) slow momenta.
template <class T>
void level(crafted& c, const level_fields& f, const std::vector<u64>* sizes = nullptr, unsigned has_slow_m = 0) {
  c.put<std::int64_t>(f.k).put<double>(f.alpha).u8(f.momentum).put<u64>(f.cycles).put<u64>(f.syncs).u8(f.swapped);
  if (sizes) {
    c.buffer<T>(*sizes, T(0.5));
    c.u8(has_slow_m);
    if (has_slow_m) c.buffer<T>(*sizes);
  }
  // Outer momentum 0, not Nesterov, not started, no buffer.
  if (c.version >= 3) c.put<double>(0).u8(0).u8(0).u8(0);
}

// A base optimizer's clipping fields (version 3); by default mode none, zeros.
struct clip_fields {
  unsigned mode = 0;
  double max_norm = 0, norm_type = 0;
  unsigned error_if_nonfinite = 0;
  double clip_value = 0;
};
void clip(crafted& c, const clip_fields& f) {
  if (c.version >= 3)
    c.u8(f.mode).put<double>(f.max_norm).put<double>(f.norm_type).u8(f.error_if_nonfinite).put<double>(f.clip_value);
}

struct group_fields {
  std::vector<u64> tensors;
  unsigned lr_set = 0;
  double lr = 0;
  unsigned wd_set = 0;
  double wd = 0;
};
void counters(crafted& c, u64 t, u64 skipped = 0, const std::vector<group_fields>& groups = {}) {
  c.put<u64>(t).put<u64>(skipped).put<u64>(groups.size());
  for (auto& g : groups) {
    c.put<u64>(g.tensors.size());
    for (auto i : g.tensors) c.put<u64>(i);
    c.u8(g.lr_set).put<double>(g.lr).u8(g.wd_set).put<double>(g.wd);
  }
}

// A base optimizer: its options, which states were never updated (fresh),
// then per state a presence flag and, when present, the buffer.
struct adam_fields {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, wd = 0;
  unsigned amsgrad = 0, maximize = 0;
  std::uint32_t fresh = 7;  // before the first step: all three
  unsigned present = 0;     // bit k: states[k] is in the file
};
constexpr adam_fields adam_stepped{.fresh = 4, .present = 3};  // exp_avg and exp_avg_sq, no AMSGrad
void adam_head(crafted& c, const adam_fields& f) {
  c.put<double>(f.lr).put<double>(f.beta1).put<double>(f.beta2).put<double>(f.eps).put<double>(f.wd);
  c.u8(f.amsgrad).u8(f.maximize).put<std::uint32_t>(f.fresh);
}
template <class T>
void adam(crafted& c, const adam_fields& f, const std::vector<u64>* sizes = nullptr, const clip_fields& cf = {}) {
  adam_head(c, f);
  for (unsigned k = 0; k < 3; ++k) {
    c.u8((f.present >> k) & 1u);
    if (((f.present >> k) & 1u) && sizes) c.buffer<T>(*sizes);
  }
  clip(c, cf);
}

struct sgd_fields {
  double lr = 1e-3, momentum = 0, dampening = 0, wd = 0;
  unsigned nesterov = 0, maximize = 0;
  std::uint32_t fresh = 1;
  unsigned has_buffer = 0;
};
template <class T>
void sgd(crafted& c, const sgd_fields& f, const std::vector<u64>* sizes = nullptr) {
  c.put<double>(f.lr).put<double>(f.momentum).put<double>(f.dampening).put<double>(f.wd);
  c.u8(f.nesterov).u8(f.maximize).put<std::uint32_t>(f.fresh).u8(f.has_buffer);
  if (f.has_buffer && sizes) c.buffer<T>(*sizes);
  clip(c, {});
}

std::string bytes(const auto& opt) {
  std::ostringstream os;
  opt.save(os);
  return os.str();
}

// Loads `data` into opt, expecting a checkpoint_error whose message holds
// `needle`, and the optimizer byte-identical afterwards.
template <class O>
void refused(O& opt, const std::string& data, const std::string& needle) {
  const std::string was = bytes(opt);
  std::istringstream is(data);
  std::string message = "(no exception)";
  try {
    opt.load(is);
  } catch (const nestla::checkpoint_error& e) {
    message = e.what();
  } catch (const std::exception& e) {
    message = std::string("wrong exception type: ") + e.what();
  }
  CAPTURE(message);
  CHECK(message.find(needle) != std::string::npos);
  CHECK(message.find("nestla: load: ") == 0);
  CHECK(bytes(opt) == was);
}

using LA = nestla::Lookahead<nestla::Adam<float>>;
LA fresh_lookahead_adam() { return LA(nestla::Adam<float>(), {.k = 2, .alpha = 0.5}); }

// A host backend whose buffers report their sizes and can be made to fail.
std::atomic<std::size_t> buffers_made{0};
std::atomic<bool> buffers_fail{false};
struct probe : nestla::host {
  template <class T>
  class buffer {
   public:
    buffer() = default;
    explicit buffer(std::size_t n) : b_(make(n)) {}
    T* data() noexcept { return b_.data(); }
    const T* data() const noexcept { return b_.data(); }
    std::size_t size() const noexcept { return b_.size(); }
    bool empty() const noexcept { return b_.empty(); }

   private:
    static nestla::detail::host_buffer<T> make(std::size_t n) {
      if (n && buffers_fail) throw std::bad_alloc();
      buffers_made += n;
      return nestla::detail::host_buffer<T>(n);
    }
    nestla::detail::host_buffer<T> b_;
  };
};

}  // namespace

TEST_CASE("the crafting helper writes what the library writes") {
  auto opt = fresh_lookahead_adam();
  crafted c = header({.type = "Lookahead<Adam>", .depth = 1});
  level<float>(c, {});
  counters(c, 0);
  adam<float>(c, {});
  CHECK(c.bytes() == bytes(opt));

  std::vector<std::vector<float>> p{std::vector<float>(3, 0.5f)}, g{std::vector<float>(3, 0.0f)};
  auto stepped = nestla::Lookahead(nestla::SGD<double>({.lr = 0.1, .momentum = 0.9}), {.k = 3});
  std::vector<std::vector<double>> pd{std::vector<double>(3, 0.5)}, gd{std::vector<double>(3, 0.0)};
  stepped.step(pd, gd);
  const std::vector<u64> sizes{3};
  crafted s = header({.type = "Lookahead<SGD>", .depth = 1, .scalar = "float64", .initialized = 1, .sizes = sizes});
  level<double>(s, {.k = 3, .cycles = 1}, &sizes);
  counters(s, 1);
  sgd<double>(s, {.lr = 0.1, .momentum = 0.9, .fresh = 0, .has_buffer = 1}, &sizes);
  CHECK(s.bytes() == bytes(stepped));

  // Clipping by norm, then by value, as the library writes them.
  auto norm = fresh_lookahead_adam();
  norm.base().set_clip_grad_norm({.max_norm = 2.5, .norm_type = 1, .error_if_nonfinite = true});
  crafted cn = header({.type = "Lookahead<Adam>", .depth = 1});
  level<float>(cn, {});
  counters(cn, 0);
  adam<float>(cn, {}, nullptr, {.mode = 1, .max_norm = 2.5, .norm_type = 1, .error_if_nonfinite = 1});
  CHECK(cn.bytes() == bytes(norm));
  auto value = fresh_lookahead_adam();
  value.base().set_clip_grad_value(0.25);
  crafted cv = header({.type = "Lookahead<Adam>", .depth = 1});
  level<float>(cv, {});
  counters(cv, 0);
  adam<float>(cv, {}, nullptr, {.mode = 2, .clip_value = 0.25});
  CHECK(cv.bytes() == bytes(value));
}

TEST_CASE("format 2, from before clipping and outer momentum, loads as an optimizer without either") {
  crafted v2 = header({.type = "Lookahead<Adam>", .depth = 1, .version = 2});
  level<float>(v2, {});
  counters(v2, 0);
  adam<float>(v2, {});
  auto opt = nestla::Lookahead(nestla::Adam<float>(), {.k = 2, .alpha = 0.5, .outer_momentum = 0.9});
  opt.base().set_clip_grad_value(0.5);
  std::istringstream is(v2.bytes());
  opt.load(is);
  CHECK(opt.base().clip_grad().mode == nestla::GradClip::Mode::none);
  CHECK(opt.options().outer_momentum == 0);
  CHECK(bytes(opt) == bytes(fresh_lookahead_adam()));
}

// Before: the padded total, the byte count and the bounds check wrapped; a
// 64-byte buffer was allocated and hundreds of bytes written into it.
TEST_CASE("tensor sizes near 2^62 whose padded total wraps are refused") {
  for (const auto& sizes : {std::vector<u64>{p62, 16}, std::vector<u64>{p62 - 16, 48}, std::vector<u64>{16, p62},
                            std::vector<u64>{p62 / 2, p62 / 2, p62 / 2, p62 / 2, 16}}) {
    CAPTURE(sizes[0]);
    auto opt = fresh_lookahead_adam();
    crafted c = header({.type = "Lookahead<Adam>", .depth = 1, .initialized = 1, .sizes = sizes});
    level<float>(c, {});
    counters(c, 1);
    adam<float>(c, {});
    for (int i = 0; i < 100; ++i) c.put<float>(1.0f);  // what a wrapped copy would have written
    refused(opt, c.bytes(), "field 'tensor size'");
  }
  // double: 8-byte values wrap at 2^61.
  auto dbl = nestla::SGD<double>({.momentum = 0.9});
  crafted c = header({.type = "SGD", .scalar = "float64", .initialized = 1, .sizes = {u64(1) << 61, 8}});
  counters(c, 1);
  sgd<double>(c, {.momentum = 0.9, .fresh = 0, .has_buffer = 1});
  refused(dbl, c.bytes(), "field 'tensor size'");
}

// Before: the 2 MiB rounding wrapped to 0 and the whole size was zeroed.
TEST_CASE("tensor sizes near 2^64 are refused") {
  for (u64 n : {~u64(0), ~u64(0) - 15, ~u64(0) - (u64(2) << 20)}) {
    auto opt = nestla::Adam<float>();
    crafted c = header({.initialized = 1, .sizes = {n}});
    counters(c, 1);
    adam<float>(c, {});
    refused(opt, c.bytes(), "field 'tensor size'");
  }
}

// Before: get_array's byte count wrapped to 0, so no data was needed and the load succeeded.
TEST_CASE("a huge tensor with no data is refused as truncated") {
  auto opt = nestla::Adam<float>();
  crafted c = header({.initialized = 1, .sizes = {p62}});
  counters(c, 1);
  adam<float>(c, {});
  c.put<u64>(p62);
  refused(opt, c.bytes(), "field 'tensor size'");

  auto dbl = nestla::Adam<double>();
  crafted d = header({.scalar = "float64", .initialized = 1, .sizes = {u64(1) << 59}});
  counters(d, 1);
  adam_head(d, adam_stepped);
  d.u8(1).put<u64>(u64(1) << 59);
  refused(dbl, d.bytes(), "truncated while reading 'exp_avg'");
}

// Before: a 121-byte file took 4.2 GB and 5.5 s, and larger declarations let
// std::bad_alloc escape load().
TEST_CASE("a tiny file declaring huge sizes fails without allocating for them") {
  using PA = nestla::Lookahead<nestla::Adam<float, probe>>;
  for (u64 n : {u64(1) << 30, u64(1) << 40, u64(1) << 58}) {
    CAPTURE(n);
    PA opt(nestla::Adam<float, probe>(), {.k = 2, .alpha = 0.5});
    crafted c = header({.type = "Lookahead<Adam>", .depth = 1, .initialized = 1, .sizes = {n}});
    level<float>(c, {});
    c.put<u64>(n).put<float>(1.0f);
    const std::string data = c.bytes();
    CHECK(data.size() < 150);
    buffers_made = 0;
    largest_request = 0;
    refused(opt, data, "truncated while reading 'Lookahead slow weights'");
    CHECK(buffers_made == 0);
    CHECK(largest_request < (std::size_t(1) << 20));
  }
}

TEST_CASE("a file with some data declaring more allocates in proportion to what it holds") {
  auto opt = nestla::Adam<float, probe>();
  const u64 declared = u64(1) << 32, present = u64(1) << 18;  // 1 MiB of floats
  crafted c = header({.initialized = 1, .sizes = {declared}});
  counters(c, 1);
  adam_head(c, adam_stepped);
  c.u8(1).put<u64>(declared);
  for (u64 i = 0; i < present; ++i) c.put<float>(0.0f);
  buffers_made = 0;
  largest_request = 0;
  refused(opt, c.bytes(), "truncated while reading 'exp_avg'");
  CHECK(buffers_made == 0);
  CHECK(largest_request <= 2 * present * sizeof(float) + (std::size_t(64) << 10));
}

TEST_CASE("running out of memory during a load is a checkpoint_error naming the field, and changes nothing") {
  auto good = nestla::Lookahead(nestla::Adam<float, probe>({.amsgrad = true}), {.k = 2});
  std::vector<std::vector<float>> p{std::vector<float>(300000, 0.5f)}, g{std::vector<float>(300000, 0.01f)};
  good.step(p, g);
  const std::string data = bytes(good);

  auto target = nestla::Lookahead(nestla::Adam<float, probe>(), {.k = 5});
  buffers_fail = true;
  refused(target, data, "not enough memory to read field 'Lookahead slow weights'");
  buffers_fail = false;
  // Nor the reader's own buffer (1.2 MB for each state buffer).
  const std::string was = bytes(target);
  std::istringstream tight(data);
  std::string message;
  refuse_above = std::size_t(1) << 20;
  try {
    target.load(tight);
  } catch (const nestla::checkpoint_error& e) {
    message = e.what();
  }
  refuse_above = ~std::size_t(0);
  CHECK(message.find("not enough memory to read field 'Lookahead slow weights'") != std::string::npos);
  CHECK(bytes(target) == was);
  std::istringstream is(data);
  target.load(is);
  CHECK(bytes(target) == data);
}

// Before: it loaded, and swapping back zeroed the user's parameters.
TEST_CASE("a fresh checkpoint with the slow weights swapped in is refused") {
  auto opt = fresh_lookahead_adam();
  crafted c = header({.type = "Lookahead<Adam>", .depth = 1});
  level<float>(c, {.swapped = 1});
  counters(c, 0);
  adam<float>(c, {});
  refused(opt, c.bytes(), "field 'Lookahead swapped' is set in a checkpoint taken before the first step");
}

TEST_CASE("one tensor in two groups, or twice in one, is refused") {
  auto opt = nestla::Adam<float>();
  const std::vector<u64> sizes{4, 4, 4};
  auto with_groups = [&](const std::vector<group_fields>& groups) {
    crafted c = header({.initialized = 1, .sizes = sizes});
    counters(c, 1, 0, groups);
    adam<float>(c, adam_stepped, &sizes);
    return c.bytes();
  };
  refused(opt, with_groups({{.tensors = {0, 2}, .lr_set = 1, .lr = 0.1}, {.tensors = {1, 2}}}),
          "tensor 2 is in groups 0 and 1");
  refused(opt, with_groups({{.tensors = {1, 1}}}), "tensor 1 is listed twice in group 0");
  refused(opt, with_groups({{.tensors = {3}}}), "names tensor 3, but the parameter set has 3 tensors");
  // Before the first step, indices are checked against the tensors at the first step, as add_param_group does.
  crafted fresh = header({});
  counters(fresh, 0, 0, {{.tensors = {7, 7}}});
  adam<float>(fresh, {});
  refused(opt, fresh.bytes(), "tensor 7 is listed twice in group 0");
  // A valid set loads.
  std::istringstream is(with_groups({{.tensors = {2, 0}, .wd_set = 1, .wd = 0.5}, {.tensors = {}}}));
  opt.load(is);
  CHECK(opt.weight_decay_of(0) == 0.5);
  CHECK(opt.param_groups().size() == 2);
}

TEST_CASE("a cycle count at or above k, or more syncs than inner cycles, is refused") {
  using L2 = nestla::nested_t<2, nestla::SGD<float>>;
  auto make = [] { return nestla::nested<2>(nestla::SGD<float>({.lr = 0.1}), {{.k = 3}, {.k = 2}}); };
  const std::vector<u64> sizes{5};
  auto file = [&](level_fields outer, level_fields inner, u64 t) {
    crafted c = header({.type = "Lookahead<Lookahead<SGD>>", .depth = 2, .initialized = 1, .sizes = sizes});
    level<float>(c, outer, &sizes);
    level<float>(c, inner, &sizes);
    counters(c, t);
    sgd<float>(c, {.lr = 0.1});
    return c.bytes();
  };
  L2 opt = make();
  refused(opt, file({.k = 2, .cycles = 2}, {.k = 3}, 100), "field 'Lookahead cycles' = 2 is not below k = 2");
  refused(opt, file({.k = 2}, {.k = 3, .cycles = 7}, 100), "field 'Lookahead cycles' = 7 is not below k = 3");
  // 10 steps complete 10 base cycles: 9 syncs of the inner level and 2 cycles since need 11.
  refused(opt, file({.k = 2}, {.k = 3, .cycles = 2, .syncs = 9}, 10), "exceed the 10 cycles the inner level completed");
  refused(opt, file({.k = 2, .cycles = 1, .syncs = 3}, {.k = 3, .syncs = 3}, 10),
          "exceed the 3 cycles the inner level completed");
  refused(opt, file({.k = 2}, {.k = 3}, u64(1) << 60), "field 'step count' = 1152921504606846976 is implausible");
  refused(opt, file({.k = std::int64_t(1) << 40}, {.k = 3}, 10), "Lookahead k = 1099511627776 is invalid");
  // The same counters, consistent, load.
  std::istringstream is(file({.k = 2, .cycles = 1, .syncs = 1}, {.k = 3, .cycles = 2, .syncs = 3}, 11));
  opt.load(is);
  CHECK(opt.syncs() == 1);
  CHECK(opt.inner().syncs() == 3);
}

TEST_CASE("set_options with a smaller k keeps cycles below k and the same syncs") {
  auto a = nestla::Lookahead(nestla::SGD<float>({.lr = 0.1}), {.k = 5});
  std::vector<std::vector<float>> p{std::vector<float>(4, 1.0f)}, g{std::vector<float>(4, 0.5f)};
  for (int i = 0; i < 4; ++i) a.step(p, g);
  CHECK(a.cycles_since_sync() == 4);
  a.set_options({.k = 2});
  CHECK(a.cycles_since_sync() == 1);
  std::stringstream ss;
  a.save(ss);
  auto b = nestla::Lookahead(nestla::SGD<float>({.lr = 0.1}), {.k = 5});
  b.load(ss);  // the saved state is valid
  CHECK(b.step(p, g));  // the next cycle syncs, as it did before the clamp
  CHECK(b.syncs() == 1);
}

TEST_CASE("other broken invariants are refused, each naming its field") {
  auto opt = fresh_lookahead_adam();
  const std::vector<u64> sizes{3};
  auto stepped = [&](level_fields lf, unsigned has_slow_m, adam_fields af, u64 t = 1) {
    crafted c = header({.type = "Lookahead<Adam>", .depth = 1, .initialized = 1, .sizes = sizes});
    level<float>(c, lf, &sizes, has_slow_m);
    counters(c, t);
    adam<float>(c, af, &sizes);
    return c;
  };
  refused(opt, stepped({.momentum = 2}, 0, adam_stepped).bytes(), "pullback level without slow momenta");
  refused(opt, stepped({.momentum = 3}, 0, adam_stepped).bytes(), "momentum = 3 is invalid");
  refused(opt, stepped({}, 2, adam_stepped).bytes(), "field 'Lookahead has slow momenta' is 2, expected 0 or 1");
  refused(opt, stepped({.swapped = 5}, 0, adam_stepped).bytes(), "field 'Lookahead swapped' is 5");
  refused(opt, stepped({}, 0, {.beta1 = 1.0, .fresh = 4, .present = 3}).bytes(), "beta1 = 1 is invalid");
  refused(opt, stepped({}, 0, {.maximize = 2, .fresh = 4, .present = 3}).bytes(), "field 'maximize' is 2");
  refused(opt, stepped({}, 0, adam_stepped, u64(1) << 54).bytes(), "field 'step count'");
  // A state a step has updated must be there; AMSGrad's maximum may still be fresh (created at the next step).
  refused(opt, stepped({}, 0, {.amsgrad = 1, .fresh = 0, .present = 3}).bytes(),
          "state 'max_exp_avg_sq' is missing but marked as updated");
  refused(opt, stepped({}, 0, {.fresh = 8 | 4, .present = 3}).bytes(), "fresh-state flags name states Adam does not have");
  {
    std::istringstream is(stepped({}, 0, {.amsgrad = 1, .fresh = 4, .present = 3}).bytes());
    opt.load(is);
    CHECK(opt.base().options().amsgrad);
    opt = fresh_lookahead_adam();
  }

  // Fields the clip mode does not use are +0.0 exactly: -0.0 would load and save as other bytes (found by
  // fuzz_checkpoint).
  {
    crafted c = header({.type = "Lookahead<Adam>", .depth = 1});
    level<float>(c, {});
    counters(c, 0);
    adam<float>(c, {}, nullptr, {.mode = 0, .max_norm = -0.0});
    refused(opt, c.bytes(), "clipping fields are set that the clip mode does not use");
    crafted v = header({.type = "Lookahead<Adam>", .depth = 1});
    level<float>(v, {});
    counters(v, 0);
    adam<float>(v, {}, nullptr, {.mode = 2, .norm_type = -0.0, .clip_value = 0.5});
    refused(opt, v.bytes(), "clipping fields are set that the clip mode does not use");
  }

  // Over tensors without elements every buffer is empty, saved as absent (found by fuzz_checkpoint).
  const std::vector<u64> empty{0, 0};
  crafted none = header({.type = "Lookahead<Adam>", .depth = 1, .initialized = 1, .sizes = empty});
  level<float>(none, {}, &empty, 1);
  refused(opt, none.bytes(), "field 'Lookahead has slow momenta' is set, but the tensors hold no elements");
  crafted none2 = header({.type = "Lookahead<Adam>", .depth = 1, .initialized = 1, .sizes = empty});
  level<float>(none2, {.momentum = 2}, &empty, 0);
  counters(none2, 1);
  adam<float>(none2, {.fresh = 4, .present = 1}, &empty);
  refused(opt, none2.bytes(), "state 'exp_avg' is stored, but the tensors hold no elements");
  {
    crafted ok = header({.type = "Lookahead<Adam>", .depth = 1, .initialized = 1, .sizes = empty});
    level<float>(ok, {.momentum = 2}, &empty, 0);
    counters(ok, 1);
    adam<float>(ok, {.fresh = 0, .present = 0}, &empty);
    std::istringstream is(ok.bytes());
    opt.load(is);
    CHECK(bytes(opt) == ok.bytes());
    opt = fresh_lookahead_adam();
  }

  // Before the first step: no tensors, no steps, no buffers.
  crafted t = header({.type = "Lookahead<Adam>", .depth = 1, .sizes = {3}});
  refused(opt, t.bytes(), "a checkpoint taken before the first step declares 1 tensors");
  crafted steps = header({.type = "Lookahead<Adam>", .depth = 1});
  level<float>(steps, {});
  counters(steps, 4);
  adam<float>(steps, {});
  refused(opt, steps.bytes(), "field 'step count' is 4 in a checkpoint taken before the first step");
  crafted flag = header({.type = "Lookahead<Adam>", .depth = 1, .initialized = 2});
  refused(opt, flag.bytes(), "field 'initialized' is 2");
  crafted early = header({.type = "Lookahead<Adam>", .depth = 1});
  level<float>(early, {});
  counters(early, 0);
  adam<float>(early, {.present = 1});
  refused(opt, early.bytes(), "state 'exp_avg' present in a checkpoint taken before the first step");

  // Group options: a value without its flag, a negative lr.
  crafted grp = header({.type = "Lookahead<Adam>", .depth = 1});
  level<float>(grp, {});
  counters(grp, 0, 0, {{.tensors = {0}, .lr_set = 0, .lr = 0.25}});
  adam<float>(grp, {});
  refused(opt, grp.bytes(), "field 'group lr' is set but its flag is not");
  crafted neg = header({.type = "Lookahead<Adam>", .depth = 1});
  level<float>(neg, {});
  counters(neg, 0, 0, {{.tensors = {0}, .lr_set = 1, .lr = -1}});
  adam<float>(neg, {});
  refused(opt, neg.bytes(), "group lr = -1 is invalid");
  crafted many = header({.type = "Lookahead<Adam>", .depth = 1});
  level<float>(many, {});
  many.put<u64>(0).put<u64>(0).put<u64>(u64(1) << 40);
  refused(opt, many.bytes(), "group count 1099511627776 is implausible");

  // SGD: a momentum step happened (the buffer is not fresh), so the buffer must be there.
  auto s = nestla::SGD<float>({.momentum = 0.9});
  crafted started = header({.type = "SGD", .initialized = 1, .sizes = sizes});
  counters(started, 1);
  sgd<float>(started, {.momentum = 0.9, .fresh = 0, .has_buffer = 0}, &sizes);
  refused(s, started.bytes(), "state 'momentum_buffer' is missing but marked as updated");
  crafted fresh_started = header({.type = "SGD"});
  counters(fresh_started, 0);
  sgd<float>(fresh_started, {.fresh = 0});
  refused(s, fresh_started.bytes(), "state 'momentum_buffer' is missing but marked as updated");
  crafted flag2 = header({.type = "SGD", .initialized = 1, .sizes = sizes});
  counters(flag2, 1);
  sgd<float>(flag2, {.momentum = 0.9, .fresh = 0, .has_buffer = 2}, &sizes);
  refused(s, flag2.bytes(), "field 'momentum_buffer' is 2, expected 0 or 1");
}

// A stream that never ends: zeros, or a valid header followed by endless data.
class endless : public std::streambuf {
 public:
  explicit endless(std::string prefix) : prefix_(std::move(prefix)) {}
  std::size_t delivered = 0;

 protected:
  int_type underflow() override {
    if (at_ < prefix_.size()) {
      const std::size_t n = std::min(prefix_.size() - at_, sizeof chunk_);
      std::memcpy(chunk_, prefix_.data() + at_, n);
      at_ += n;
      setg(chunk_, chunk_, chunk_ + n);
    } else {
      std::memset(chunk_, 0, sizeof chunk_);
      setg(chunk_, chunk_, chunk_ + sizeof chunk_);
    }
    delivered += static_cast<std::size_t>(egptr() - eback());
    return traits_type::to_int_type(chunk_[0]);
  }

 private:
  std::string prefix_;
  std::size_t at_ = 0;
  char chunk_[4096];
};

TEST_CASE("an endless stream fails at once, or at the limit given to load") {
  auto opt = fresh_lookahead_adam();
  const std::string was = bytes(opt);
  endless zeros("");
  std::istream z(&zeros);
  CHECK_THROWS_WITH_AS(opt.load(z), doctest::Contains("bad magic"), nestla::checkpoint_error);
  CHECK(zeros.delivered <= 4096);

  // A well-formed start declaring 2^34 floats, then zeros forever: the declared
  // size bounds what is read; the caller's limit stops it far earlier.
  crafted c = header({.type = "Lookahead<Adam>", .depth = 1, .initialized = 1, .sizes = {u64(1) << 34}});
  level<float>(c, {});
  std::string prefix = c.bytes();
  prefix.resize(prefix.size() - 4);  // the body only: the stream continues
  endless data(prefix);
  std::istream d(&data);
  largest_request = 0;
  CHECK_THROWS_WITH_AS(opt.load(d, 1 << 20), doctest::Contains("beyond the limit of 1048576 bytes given to load"),
                       nestla::checkpoint_error);
  CHECK(data.delivered <= prefix.size() + 4096);
  CHECK(largest_request < (std::size_t(1) << 20));
  CHECK(bytes(opt) == was);
}

TEST_CASE("load reads one record and leaves the stream after it; the limit may equal its size") {
  auto a = fresh_lookahead_adam(), b = nestla::Lookahead(nestla::Adam<float>(), {.k = 7, .alpha = 0.25});
  std::stringstream ss;
  a.save(ss);
  b.save(ss);
  ss << "tail";
  const std::size_t first = bytes(a).size();
  auto x = nestla::Lookahead(nestla::Adam<float>(), {.k = 3});
  CHECK_THROWS_WITH_AS(x.load(ss, first - 1), doctest::Contains("beyond the limit"), nestla::checkpoint_error);
  ss.clear();
  ss.seekg(0);
  x.load(ss, first);
  CHECK(x.options().k == 2);
  CHECK(static_cast<std::size_t>(ss.tellg()) == first);
  x.load(ss);
  CHECK(x.options().k == 7);
  std::string rest;
  ss >> rest;
  CHECK(rest == "tail");
}

TEST_CASE("a stream that throws on end of data still gives a checkpoint_error") {
  auto opt = fresh_lookahead_adam();
  const std::string good = bytes(opt);
  std::istringstream is(good.substr(0, good.size() - 3));
  is.exceptions(std::ios::failbit | std::ios::badbit | std::ios::eofbit);
  CHECK_THROWS_WITH_AS(opt.load(is), doctest::Contains("truncated while reading 'checksum'"), nestla::checkpoint_error);
}
