// A fixed workload for instruction counts under callgrind: the step code of Adam, AdamW, SGD and nested<2> Adam, compared across versions.
//
//   g++ -std=c++20 -O2 -Iinclude benchmarks/callgrind_driver.cpp -o driver
//   valgrind --tool=callgrind ./driver nested      # adam | adamw | sgd | nested
//
// valgrind hides AVX-512, so the xsimd path (SSE2 at plain -O2) is what gets counted (RESULTS.md, "Misses", 5).
#include <nestla/nestla.hpp>
#include <cstdio>
#include <cstring>
#include <vector>
template <class Opt> void run(Opt opt, int steps) {
  std::vector<std::vector<float>> p{std::vector<float>(1 << 20, 0.5f), std::vector<float>(12345, 0.25f)}, g = p;
  for (auto& t : g) for (std::size_t i = 0; i < t.size(); ++i) t[i] = float(i % 7) * 0.01f - 0.03f;
  for (int s = 0; s < steps; ++s) opt.step(p, g);
  std::printf("%g\n", p[0][3]);
}
int main(int argc, char** argv) {
  const char* w = argv[1];
  if (!std::strcmp(w, "adam")) run(nestla::Adam<float>({.lr = 1e-3}), 20);
  if (!std::strcmp(w, "adamw")) run(nestla::AdamW<float>({.lr = 1e-3}), 20);
  if (!std::strcmp(w, "sgd")) run(nestla::SGD<float>({.lr = 1e-3, .momentum = 0.9}), 20);
  if (!std::strcmp(w, "nested")) run(nestla::nested<2>(nestla::Adam<float>({.lr = 1e-3}), {{.k = 5}, {.k = 5}}), 25);
}
