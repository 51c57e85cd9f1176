// A C interface to nestla's optimizers for torch_optim_bench.py: nestla steps tensors torch allocated, timed in one process in rotation with torch's.
//
//   handle = nestla_bench_create(name, threads, count, params, grads, sizes)   (0 on error: nestla_bench_error())
//   nestla_bench_steps(handle, n)       n steps; 0 on success
//   nestla_bench_destroy(handle)
//   nestla_bench_names()                the registered names, comma-separated
//
// Every optimizer runs with the options torch_optim_bench.py gives torch's
// (lr 1e-3, otherwise the defaults; SGD with momentum 0.9; RMSprop-mc with momentum 0.9, centered; Ranger's RAdam
// options and k = 6). To add one: a line in `registry` below and its torch
// counterpart in torch_optim_bench.py's PAIRED list.
#include <nestla/nestla.hpp>

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#define NESTLA_CAPI extern "C" __attribute__((visibility("default")))

namespace {

struct runner {
  virtual ~runner() = default;
  virtual void steps(std::size_t n) = 0;
};

template <class Opt>
struct runner_of final : runner {
  Opt opt;
  std::vector<std::span<float>> params;
  std::vector<std::span<const float>> grads;
  runner_of(Opt o, std::vector<std::span<float>> p, std::vector<std::span<const float>> g)
      : opt(std::move(o)), params(std::move(p)), grads(std::move(g)) {}
  void steps(std::size_t n) override {
    for (std::size_t i = 0; i < n; ++i) opt.step(params, grads);
  }
};

using factory = std::function<std::unique_ptr<runner>(std::vector<std::span<float>>, std::vector<std::span<const float>>,
                                                      unsigned)>;

template <class Make>
factory make(Make m) {
  return [m](std::vector<std::span<float>> p, std::vector<std::span<const float>> g, unsigned threads) {
    auto opt = m();
    opt.base().set_threads(threads);
    return std::unique_ptr<runner>(new runner_of<decltype(opt)>(std::move(opt), std::move(p), std::move(g)));
  };
}

const std::vector<std::pair<std::string, factory>>& registry() {
  static const std::vector<std::pair<std::string, factory>> r{
      {"SGD", make([] { return nestla::SGD<float>({.lr = 1e-3, .momentum = 0.9}); })},
      {"Adam", make([] { return nestla::Adam<float>({.lr = 1e-3}); })},
      {"AdamW", make([] { return nestla::AdamW<float>({.lr = 1e-3}); })},
      {"RAdam", make([] { return nestla::RAdam<float>({.lr = 1e-3}); })},
      {"NAdam", make([] { return nestla::NAdam<float>({.lr = 1e-3}); })},
      {"Adamax", make([] { return nestla::Adamax<float>({.lr = 1e-3}); })},
      {"Lion", make([] { return nestla::Lion<float>({.lr = 1e-3}); })},
      {"Ranger", make([] { return nestla::ranger<float>({.lr = 1e-3}); })},
      {"Adagrad", make([] { return nestla::Adagrad<float>({.lr = 1e-3}); })},
      {"RMSprop", make([] { return nestla::RMSprop<float>({.lr = 1e-3}); })},
      {"RMSprop-mc", make([] { return nestla::RMSprop<float>({.lr = 1e-3, .momentum = 0.9, .centered = true}); })},
      {"Adadelta", make([] { return nestla::Adadelta<float>({.lr = 1e-3}); })},
      {"Rprop", make([] { return nestla::Rprop<float>({.lr = 1e-3}); })},
  };
  return r;
}

std::string last_error;

}  // namespace

NESTLA_CAPI const char* nestla_bench_error() { return last_error.c_str(); }

NESTLA_CAPI const char* nestla_bench_names() {
  static const std::string names = [] {
    std::string s;
    for (const auto& [name, f] : registry()) s += (s.empty() ? "" : ",") + name;
    return s;
  }();
  return names.c_str();
}

NESTLA_CAPI void* nestla_bench_create(const char* name, unsigned threads, std::size_t count, float* const* params,
                                      float* const* grads, const std::size_t* sizes) {
  try {
    for (const auto& [n, f] : registry())
      if (n == name) {
        std::vector<std::span<float>> p;
        std::vector<std::span<const float>> g;
        for (std::size_t i = 0; i < count; ++i) {
          p.emplace_back(params[i], sizes[i]);
          g.emplace_back(grads[i], sizes[i]);
        }
        return f(std::move(p), std::move(g), threads).release();
      }
    last_error = std::string("no optimizer named ") + name;
  } catch (const std::exception& e) {
    last_error = e.what();
  }
  return nullptr;
}

NESTLA_CAPI int nestla_bench_steps(void* handle, std::size_t n) {
  try {
    static_cast<runner*>(handle)->steps(n);
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return 1;
  }
}

NESTLA_CAPI void nestla_bench_destroy(void* handle) { delete static_cast<runner*>(handle); }
