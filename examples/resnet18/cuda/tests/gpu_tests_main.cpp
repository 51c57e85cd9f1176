// doctest main of the GPU tests: exits with 77 (CTest's "skipped") and a reason when no CUDA device is usable.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "cuda_backend.hpp"

int main(int argc, char** argv) {
  std::string why;
  if (!resnet18::cuda_device_available(&why)) {
    std::printf("resnet18_gpu_tests: SKIPPED, no CUDA device: %s\n", why.c_str());
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
