// resnet18_gpu_bench: images/s of the GPU trainer's whole step (device augmentation, forward, backward, nestla step) on synthetic CIFAR-sized data.
//
//   resnet18_gpu_bench [--batch 512] [--steps 40] [--warmup 8] [--width 64] [--layout nhwc|nchw]
//                      [--no-tf32] [--bn-persistent] [--algo find|heuristic] [--optimizer adam|sgd] [--depth 0..3]
//                      [--images 8192] [--label NAME, default trainer_<layout>_<tf32|fp32>] [--profile]
//
// The step is TrainingBackend::train_batch, exactly what the trainer's loop calls (it
// waits for the loss of each batch, as the loop does). Prints RESULT <label>_ips and
// RESULT <label>_ms lines for scripts.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include <cuda_runtime_api.h>

#include "augment.hpp"
#include "cuda_backend.hpp"
#include "cuda_check.hpp"
#include "data.hpp"
#include "gpu_resnet.hpp"

using namespace resnet18;

int main(int argc, char** argv) {
  int batch = 512, steps = 40, warmup = 8, width = 64, depth = 0;
  std::size_t images = 8192;
  std::string layout = "nhwc", algo = "find", opt = "adam", label;
  bool tf32 = true, profile = false, bn_persistent = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "resnet18_gpu_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--batch") batch = std::stoi(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--warmup") warmup = std::stoi(next());
    else if (a == "--width") width = std::stoi(next());
    else if (a == "--layout") layout = next();
    else if (a == "--algo") algo = next();
    else if (a == "--optimizer") opt = next();
    else if (a == "--depth") depth = std::stoi(next());
    else if (a == "--images") images = std::stoul(next());
    else if (a == "--label") label = next();
    else if (a == "--no-tf32") tf32 = false;
    else if (a == "--bn-persistent") bn_persistent = true;
    else if (a == "--profile") profile = true;
    else {
      std::fprintf(stderr, "resnet18_gpu_bench: unknown argument %s (see the header of bench_gpu_trainer.cpp)\n", a.c_str());
      return 2;
    }
  }
  try {
    std::string why;
    if (!cuda_device_available(&why)) {
      std::printf("resnet18_gpu_bench: SKIPPED, no CUDA device: %s\n", why.c_str());
      return 77;
    }
    SyntheticOptions so;
    so.count = images;
    so.channels = 3;
    so.size = 32;
    const Dataset data = make_synthetic(so);

    CudaBackendOptions o;
    o.model.width = width;
    o.model.seed = 1;
    o.optimizer.base = opt == "sgd" ? BaseKind::sgd : BaseKind::adam;
    o.optimizer.lr = opt == "sgd" ? 0.05 : 1e-3;
    for (int d = 0; d < depth; ++d) o.optimizer.levels.push_back(LevelSpec{5, 0.5, nestla::Momentum::keep});
    o.gpu.layout = gpu::parse_layout(layout);
    o.gpu.tf32 = tf32;
    o.gpu.algo_search = gpu::parse_algo_search(algo);
    o.gpu.bn_persistent = bn_persistent;
    o.profile = profile;
    CudaBackend backend(o);
    if (label.empty()) label = "trainer_" + layout + (tf32 ? "_tf32" : "_fp32") + (bn_persistent ? "_bnp" : "");
    std::printf("backend: %s\n", backend.describe().c_str());

    BatcherOptions bo;
    bo.batch_size = std::size_t(batch);
    bo.drop_last = true;  // every timed step has the full batch
    bo.fill_images = false;
    Batcher batcher(data, bo);
    std::uint64_t epoch = 0;
    auto step = [&] {
      if (batcher.next() == 0) {
        batcher.start_epoch(++epoch);
        batcher.next();
      }
      return backend.train_batch(batcher);
    };
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < warmup; ++i) step();
    GPU_CHECK(cudaDeviceSynchronize());
    const double warm_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto t1 = std::chrono::steady_clock::now();
    double loss = 0;
    for (int i = 0; i < steps; ++i) loss = step().loss;
    GPU_CHECK(cudaDeviceSynchronize());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    std::printf("warm-up: %d steps in %.2f s (algorithm search included); last loss %.4f\n", warmup, warm_s, loss);
    std::printf("%s: batch %d, %.0f images/s (%.2f ms/step over %d steps)\n", label.c_str(), batch,
                double(steps) * batch / s, 1e3 * s / steps, steps);
    // "RESULT key value" lines for benchmarks/gpu/device_check.sh.
    std::printf("RESULT %s_ips %.1f\nRESULT %s_ms %.4f\n", label.c_str(), double(steps) * batch / s, label.c_str(),
                1e3 * s / steps);
    if (profile) backend.print_profile(std::cout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "resnet18_gpu_bench: error: %s\n", e.what());
    return 1;
  }
}
