// What nestla::EnsmallenOptimizer does per batch, written as the loop one would write by hand around nestla.
//
// Batches of up to `batch` points in order, the function's summed gradient
// divided by the batch size, one step per batch, a shuffle at every epoch's
// end. No callbacks, no tolerance test. The tests use it as the reference for
// the adaptor; the benchmark times the adaptor against it.
#pragma once

#include <algorithm>
#include <cstddef>

namespace example {

template <class Optimizer, class Function, class Mat>
void train_plain(Optimizer& opt, Function& f, Mat& w, std::size_t batch, std::size_t points) {
  Mat g(w.n_rows, w.n_cols);
  const std::size_t n = f.NumFunctions();
  std::size_t current = 0;
  for (std::size_t done = 0; done < points;) {
    const std::size_t b = std::min({batch, points - done, n - current});
    f.EvaluateWithGradient(w, current, g, b);
    if (b != 1) g /= static_cast<typename Mat::elem_type>(b);
    opt.step(w, g);
    done += b;
    current += b;
    if (current == n) {
      current = 0;
      f.Shuffle();
    }
  }
}

}  // namespace example
