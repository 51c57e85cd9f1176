// nestla's optimizer steps behind a C interface, so that torch_paired_bench.py times them in one process, in rotation with torch.optim's.
//
//   void* nestla_steps_make(const char* optimizer, const size_t* sizes, size_t count, unsigned threads);
//   int   nestla_steps_run(void* h, size_t n);   // n steps; 0 on success
//   void  nestla_steps_free(void* h);
//   const char* nestla_steps_error(void);        // why make returned null
//
// The optimizer names and options are torch_paired_bench.py's (torch.optim's
// defaults); the tensors are std::vector<float> of the given sizes, with
// optimizer_bench.cpp's values.
#include <nestla/nestla.hpp>

#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "filler.hpp"

namespace {

struct runner {
  virtual ~runner() = default;
  virtual void steps(std::size_t n) = 0;
};

template <class Opt>
struct runner_for final : runner {
  Opt opt;
  std::vector<std::vector<float>> p, g;
  runner_for(Opt o, const std::size_t* sizes, std::size_t count, unsigned threads) : opt(std::move(o)) {
    bench::filler f;
    for (std::size_t t = 0; t < count; ++t) {
      p.emplace_back(sizes[t]);
      g.emplace_back(sizes[t]);
      for (std::size_t i = 0; i < sizes[t]; ++i) {
        p.back()[i] = f.next(0.01f, 0.1f);
        g.back()[i] = f.next(1e-3f, 1e-2f);
      }
    }
    opt.base().set_threads(threads);
  }
  void steps(std::size_t n) override {
    for (std::size_t i = 0; i < n; ++i) opt.step(p, g);
  }
};

template <class Opt>
std::unique_ptr<runner> make(Opt o, const std::size_t* sizes, std::size_t count, unsigned threads) {
  return std::make_unique<runner_for<Opt>>(std::move(o), sizes, count, threads);
}

std::string last_error;

}  // namespace

extern "C" {

void* nestla_steps_make(const char* optimizer, const std::size_t* sizes, std::size_t count, unsigned threads) {
  try {
    const std::string name(optimizer);
    std::unique_ptr<runner> r;
    if (name == "SGD") r = make(nestla::SGD<float>({.lr = 1e-3, .momentum = 0.9}), sizes, count, threads);
    else if (name == "Adam") r = make(nestla::Adam<float>({.lr = 1e-3}), sizes, count, threads);
    else if (name == "AdamW") r = make(nestla::AdamW<float>({.lr = 1e-3}), sizes, count, threads);
    // --- Adagrad, RMSprop, Adadelta, Rprop ---
    else if (name == "Adagrad") r = make(nestla::Adagrad<float>({.lr = 1e-2}), sizes, count, threads);
    else if (name == "RMSprop") r = make(nestla::RMSprop<float>({.lr = 1e-2}), sizes, count, threads);
    else if (name == "RMSprop-mc")
      r = make(nestla::RMSprop<float>({.lr = 1e-2, .momentum = 0.9, .centered = true}), sizes, count, threads);
    else if (name == "Adadelta") r = make(nestla::Adadelta<float>({.lr = 1.0}), sizes, count, threads);
    else if (name == "Rprop") r = make(nestla::Rprop<float>({.lr = 1e-2}), sizes, count, threads);
    // --- end of Adagrad, RMSprop, Adadelta, Rprop ---
    else {
      last_error = "unknown optimizer " + name;
      return nullptr;
    }
    return r.release();
  } catch (const std::exception& e) {
    last_error = e.what();
    return nullptr;
  }
}

int nestla_steps_run(void* h, std::size_t n) {
  try {
    static_cast<runner*>(h)->steps(n);
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return 1;
  }
}

void nestla_steps_free(void* h) { delete static_cast<runner*>(h); }

const char* nestla_steps_error(void) { return last_error.c_str(); }

}  // extern "C"
