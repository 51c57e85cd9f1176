// nested<D>(base, {...}) compiles with exactly D level options only (CMake builds each NESTLA_CASE; 0 must compile).
#include <nestla/nestla.hpp>

#include <vector>

int main() {
  std::vector<float> w{1.0f}, g{0.5f};
#if NESTLA_CASE == 0
  auto opt = nestla::nested<2>(nestla::Adam<>{}, {{.k = 5}, {.k = 5}});
  nestla::LookaheadOptions three[3] = {{.k = 2}, {.k = 2}, {.k = 2}};
  auto deep = nestla::nested<3>(nestla::SGD<>{}, three);
  deep.step(w, g);
#elif NESTLA_CASE == 1
  auto opt = nestla::nested<2>(nestla::Adam<>{}, {{.k = 5}});  // one level for two
#elif NESTLA_CASE == 2
  auto opt = nestla::nested<2>(nestla::Adam<>{}, {{.k = 5}, {.k = 5}, {.k = 5}});  // three levels for two
#elif NESTLA_CASE == 3
  nestla::LookaheadOptions one[1] = {{.k = 5}};
  auto opt = nestla::nested<2>(nestla::Adam<>{}, one);  // an array of one level for two
#endif
  return opt.step(w, g) ? 0 : 1;
}
