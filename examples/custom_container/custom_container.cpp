// Adding a container kind: one nestla::tensor_traits specialization, then it works everywhere.
#include <nestla/nestla.hpp>

#include <cstdio>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

// Your library's tensor: a shape and a contiguous buffer; and a family of
// classes derived from it (as Armadillo's Col and Row derive from Mat).
namespace mylib {
struct Tensor {
  std::vector<int> shape;
  std::unique_ptr<float[]> values;
  std::size_t count() const {
    std::size_t n = 1;
    for (int d : shape) n *= static_cast<std::size_t>(d);
    return n;
  }
};
struct Parameter : Tensor {
  std::string name;
};
}  // namespace mylib

// The whole adaptor: what the scalar is, where the data starts, how many there
// are. The second template argument (Enable) lets one partial specialization
// cover Tensor and every class derived from it.
template <class T>
struct nestla::tensor_traits<T, std::enable_if_t<std::is_base_of_v<mylib::Tensor, T>>> {
  using value_type = float;
  static float* data(mylib::Tensor& t) { return t.values.get(); }
  static const float* data(const mylib::Tensor& t) { return t.values.get(); }
  static std::size_t size(const mylib::Tensor& t) { return t.count(); }
};

int main() {
  mylib::Parameter w{{{2, 3}, std::make_unique<float[]>(6)}, "conv.weight"};
  mylib::Tensor g{{2, 3}, std::make_unique<float[]>(6)};
  std::vector<float> bias{1.0f, 1.0f};
  const std::vector<float> gbias{0.5f, 0.5f};
  for (int i = 0; i < 6; ++i) w.values[i] = 1.0f, g.values[i] = 0.5f;

  nestla::Lookahead opt{nestla::SGD<>{{.lr = 0.1}}, {.k = 2, .alpha = 0.5}};
  // A Parameter with a Tensor gradient, mixed with a std::vector in one parameter set.
  opt.step(std::tie(w, bias), std::tie(g, gbias));
  opt.step(std::tie(w, bias), std::tie(g, gbias));
  // Two SGD steps of 0.05 each, then the sync halves the move: 1 - 0.05 = 0.95.
  std::printf("%s[0] = %g, bias[0] = %g\n", w.name.c_str(), w.values[0], bias[0]);
  return (w.values[0] > 0.9499f && w.values[0] < 0.9501f && bias[0] == w.values[0]) ? 0 : 1;
}
