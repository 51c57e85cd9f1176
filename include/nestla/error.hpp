// nestla's exception types: every error names what was wrong and where.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace nestla {

// A hyperparameter out of its domain (lr < 0, beta >= 1, k = 0, ...).
struct invalid_option : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// A parameter set or gradient set that does not match the optimizer's state.
struct layout_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// A checkpoint that is damaged or does not belong to this optimizer.
struct checkpoint_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Gradient clipping by norm with error_if_nonfinite: the gradients' total
// norm is NaN or infinite (torch raises RuntimeError there).
struct nonfinite_norm_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  os.precision(17);
  (os << ... << args);
  return os.str();
}

template <class E = invalid_option, class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw E(concat(args...));
}

}  // namespace detail
}  // namespace nestla
