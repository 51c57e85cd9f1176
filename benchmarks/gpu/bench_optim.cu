// Optimizer kernel benchmark on the GPU: copy bandwidth, nestla's fused Adam step on the ResNet-18 parameter set, and nested Lookahead's amortized cost.
//
// Bytes that must move per element: a copy 8 (read, write); an Adam step 28
// (read theta, g, m, v; write theta, m, v); each Lookahead level that syncs
// adds 8 (read and write its slow weights). Lookahead(Lookahead(Adam)) at
// k = s = 5 syncs the inner level on 1 step in 5 and both on 1 in 25, so its
// amortized floor is (20*28 + 4*36 + 44) / (25*28) = 1.069 Adam steps.
// Prints a readable report, then "RESULT key value" lines for scripts.
#include <nestla/cuda.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Dev = nestla::cuda::device;

void ok(cudaError_t e) { NESTLA_CUDA_CHECK(e); }

// ResNet-18 with the CIFAR stem (3x3 conv1, no max-pool), 10 classes, in
// torchvision/kuangliu order: 62 tensors, 11,173,962 floats.
const std::vector<std::vector<int>> resnet18_shapes = {
    {64, 3, 3, 3},    {64},  {64},  {64, 64, 3, 3},   {64},  {64},  {64, 64, 3, 3},   {64},  {64},
    {64, 64, 3, 3},   {64},  {64},  {64, 64, 3, 3},   {64},  {64},  {128, 64, 3, 3},  {128}, {128},
    {128, 128, 3, 3}, {128}, {128}, {128, 64, 1, 1},  {128}, {128}, {128, 128, 3, 3}, {128}, {128},
    {128, 128, 3, 3}, {128}, {128}, {256, 128, 3, 3}, {256}, {256}, {256, 256, 3, 3}, {256}, {256},
    {256, 128, 1, 1}, {256}, {256}, {256, 256, 3, 3}, {256}, {256}, {256, 256, 3, 3}, {256}, {256},
    {512, 256, 3, 3}, {512}, {512}, {512, 512, 3, 3}, {512}, {512}, {512, 256, 1, 1}, {512}, {512},
    {512, 512, 3, 3}, {512}, {512}, {512, 512, 3, 3}, {512}, {512}, {10, 512},        {10}};

__global__ void fill(float* p, std::size_t n, float base, float step) {
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
    p[i] = base + step * float(i % 1013);
}

__global__ void copy_kernel(float4* __restrict__ dst, const float4* __restrict__ src, std::size_t n4) {
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += std::size_t(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

struct timer {
  cudaEvent_t a, b;
  timer() {
    ok(cudaEventCreate(&a));
    ok(cudaEventCreate(&b));
  }
  ~timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  // Median over reps of the mean time of one call of f, in milliseconds.
  template <class F>
  double median_ms(int reps, int calls, F&& f) {
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
      ok(cudaEventRecord(a));
      for (int c = 0; c < calls; ++c) f();
      ok(cudaEventRecord(b));
      ok(cudaEventSynchronize(b));
      float ms = 0;
      ok(cudaEventElapsedTime(&ms, a, b));
      t.push_back(double(ms) / calls);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

struct param_set {
  std::vector<float*> p, g;
  std::vector<nestla::cuda::device_span<float>> params;
  std::vector<nestla::cuda::device_span<const float>> grads;
  std::size_t total = 0;

  // One allocation per tensor, as a framework's allocator would give.
  explicit param_set(const std::vector<std::vector<int>>& shapes) {
    for (const auto& s : shapes) {
      std::size_t n = 1;
      for (int d : s) n *= std::size_t(d);
      float *pp, *gg;
      ok(cudaMalloc(&pp, n * sizeof(float)));
      ok(cudaMalloc(&gg, n * sizeof(float)));
      fill<<<256, 256>>>(pp, n, 0.01f, 1e-5f);
      fill<<<256, 256>>>(gg, n, -1e-3f, 2e-6f);
      p.push_back(pp);
      g.push_back(gg);
      params.emplace_back(pp, n);
      grads.emplace_back(gg, n);
      total += n;
    }
    ok(cudaGetLastError());
    ok(cudaDeviceSynchronize());
  }
  ~param_set() {
    for (auto* x : p) cudaFree(x);
    for (auto* x : g) cudaFree(x);
  }
};

template <class Opt>
double step_ms(timer& tm, Opt& opt, param_set& set, int steps, int reps) {
  for (int i = 0; i < 25; ++i) opt.step(set.params, set.grads);  // state created, caches warm
  ok(cudaDeviceSynchronize());
  return tm.median_ms(reps, steps, [&] { opt.step(set.params, set.grads); });
}

void result(const char* key, double v) { std::printf("RESULT %s %.6g\n", key, v); }

}  // namespace

int main(int argc, char** argv) {
  int steps = 200, reps = 7;
  bool probe = false, sweep = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--probe") probe = true;
    else if (a == "--quick") steps = 50, reps = 3, sweep = false;
    else if (a == "--no-sweep") sweep = false;
    else {
      std::fprintf(stderr, "usage: %s [--probe] [--quick] [--no-sweep]\n", argv[0]);
      return 1;
    }
  }
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::printf("no CUDA device: %s\n", e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0");
    return 2;
  }
  cudaDeviceProp prop{};
  ok(cudaGetDeviceProperties(&prop, 0));
  std::printf("GPU: %s, sm_%d%d, %d SMs, %.1f GiB\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
              double(prop.totalGlobalMem) / (1 << 30));
  if (probe) return 0;

  try {
    timer tm;
    param_set set(resnet18_shapes);
    const double n = double(set.total);
    std::printf("parameter set: %zu tensors, %zu floats\n", set.params.size(), set.total);

    // Copy bandwidth over 4 N floats per side (358 MB moved), well past L2.
    const std::size_t cn = set.total * 4;
    float *src, *dst;
    ok(cudaMalloc(&src, cn * sizeof(float)));
    ok(cudaMalloc(&dst, cn * sizeof(float)));
    fill<<<1024, 256>>>(src, cn, 1.0f, 1e-3f);
    ok(cudaDeviceSynchronize());
    const double copy_bytes = 2.0 * double(cn) * sizeof(float);
    const double memcpy_ms = tm.median_ms(reps, 10, [&] { ok(cudaMemcpyAsync(dst, src, cn * sizeof(float), cudaMemcpyDeviceToDevice)); });
    const double kernel_ms = tm.median_ms(reps, 10, [&] {
      copy_kernel<<<prop.multiProcessorCount * 8, 256>>>(reinterpret_cast<float4*>(dst), reinterpret_cast<const float4*>(src), cn / 4);
    });
    ok(cudaGetLastError());
    const double memcpy_gbs = copy_bytes / memcpy_ms * 1e-6, kernel_gbs = copy_bytes / kernel_ms * 1e-6;
    const double copy_gbs = std::max(memcpy_gbs, kernel_gbs);
    // The same at N floats (89 MB moved), the size of one parameter-set array.
    const double small_ms = tm.median_ms(reps, 10, [&] { ok(cudaMemcpyAsync(dst, src, set.total * sizeof(float), cudaMemcpyDeviceToDevice)); });
    std::printf("copy: cudaMemcpy D2D %.0f GB/s, copy kernel %.0f GB/s (%.0f MB moved); at N floats %.0f GB/s\n",
                memcpy_gbs, kernel_gbs, copy_bytes * 1e-6, 2.0 * n * 4 / small_ms * 1e-6);
    ok(cudaFree(src));
    ok(cudaFree(dst));

    const nestla::AdamOptions ao{.lr = 1e-3};
    nestla::Adam<float, Dev> adam(ao);
    const double adam_ms = step_ms(tm, adam, set, steps, reps);
    const double adam_gbs = 28 * n / adam_ms * 1e-6;
    const auto& info = adam.base().context().last_launch();
    std::printf("Adam step: %.4f ms, %.0f GB/s (28 B/element), %.1f%% of copy; %u blocks, metadata %zu bytes in %s\n",
                adam_ms, adam_gbs, 100 * adam_gbs / copy_gbs, info.blocks, info.blob_bytes,
                nestla::cuda::detail::to_string(info.tier));

    auto la1 = nestla::nested<1>(nestla::Adam<float, Dev>(ao), {{.k = 5, .alpha = 0.5}});
    const double la1_ms = step_ms(tm, la1, set, 250, reps);
    auto la2 = nestla::nested<2>(nestla::Adam<float, Dev>(ao), {{.k = 5, .alpha = 0.5}, {.k = 5, .alpha = 0.5}});
    const double la2_ms = step_ms(tm, la2, set, 250, reps);
    const double floor2 = (20 * 28 + 4 * 36 + 44) / (25.0 * 28);
    std::printf("Lookahead(Adam) k=5: %.4f ms (%.3fx Adam, floor %.3fx)\n", la1_ms, la1_ms / adam_ms, (4 * 28 + 36) / (5.0 * 28));
    std::printf("Lookahead(Lookahead(Adam)) k=s=5: %.4f ms amortized (%.3fx Adam, floor %.3fx)\n", la2_ms, la2_ms / adam_ms,
                floor2);
    // Every step syncs both levels: 44 B/element must move.
    auto every = nestla::nested<2>(nestla::Adam<float, Dev>(ao), {{.k = 1, .alpha = 0.5}, {.k = 1, .alpha = 0.5}});
    const double every_ms = step_ms(tm, every, set, steps, reps);
    std::printf("a step syncing both levels: %.4f ms, %.0f GB/s (44 B/element)\n", every_ms, 44 * n / every_ms * 1e-6);

    nestla::AdamW<float, Dev> adamw({.lr = 1e-3});
    const double adamw_ms = step_ms(tm, adamw, set, steps, reps);
    nestla::SGD<float, Dev> sgd({.lr = 1e-2, .momentum = 0.9});
    const double sgd_ms = step_ms(tm, sgd, set, steps, reps);
    std::printf("AdamW step: %.4f ms; SGD momentum step: %.4f ms, %.0f GB/s (20 B/element)\n", adamw_ms, sgd_ms,
                20 * n / sgd_ms * 1e-6);

    // Gradient clipping by norm: one more read of the gradients (32 B/element
    // in all), with the coefficient read on the device; error_if_nonfinite
    // also copies the norm to the host, which waits for the GPU every step.
    nestla::Adam<float, Dev> clipped(ao);
    clipped.set_clip_grad_norm({.max_norm = 1.0});
    const double clip_ms = step_ms(tm, clipped, set, steps, reps);
    nestla::Adam<float, Dev> clipped_sync(ao);
    clipped_sync.set_clip_grad_norm({.max_norm = 1.0, .error_if_nonfinite = true});
    const double clip_sync_ms = step_ms(tm, clipped_sync, set, steps, reps);
    nestla::Adam<float, Dev> value(ao);
    value.set_clip_grad_value(1e-3);
    const double value_ms = step_ms(tm, value, set, steps, reps);
    std::printf("Adam + clip_grad_norm: %.4f ms (%.3fx Adam, bytes %.3fx); with error_if_nonfinite (a wait per step): "
                "%.4f ms (%.3fx); + clip_grad_value: %.4f ms (%.3fx)\n",
                clip_ms, clip_ms / adam_ms, 32.0 / 28, clip_sync_ms, clip_sync_ms / adam_ms, value_ms, value_ms / adam_ms);

    double best_ms = adam_ms;
    unsigned best_v = adam.base().context().vectors_per_thread, best_b = 0;
    if (sweep) {
      std::printf("tuning (Adam ms): vectors/thread x blocks/SM (0: as many as fit)\n");
      for (unsigned v : {1u, 2u, 4u, 8u}) {
        std::printf("  v=%u:", v);
        for (unsigned b : {0u, 2u, 4u, 8u}) {
          nestla::Adam<float, Dev> t(ao);
          t.base().context().vectors_per_thread = v;
          t.base().context().blocks_per_sm = b;
          const double ms = step_ms(tm, t, set, 100, 3);
          std::printf("  b=%u %.4f", b, ms);
          if (ms < best_ms) best_ms = ms, best_v = v, best_b = b;
        }
        std::printf("\n");
      }
    }

    result("copy_memcpy_GBps", memcpy_gbs);
    result("copy_kernel_GBps", kernel_gbs);
    result("copy_GBps", copy_gbs);
    result("adam_ms", adam_ms);
    result("adam_GBps", adam_gbs);
    result("adam_pct_copy", 100 * adam_gbs / copy_gbs);
    result("la1_ms", la1_ms);
    result("la2_ms", la2_ms);
    result("la2_ratio", la2_ms / adam_ms);
    result("la2_floor", floor2);
    result("sync_every_GBps", 44 * n / every_ms * 1e-6);
    result("adamw_ms", adamw_ms);
    result("sgd_momentum_ms", sgd_ms);
    result("adam_clip_norm_ms", clip_ms);
    result("adam_clip_norm_sync_ms", clip_sync_ms);
    result("adam_clip_value_ms", value_ms);
    result("adam_best_ms", best_ms);
    result("adam_best_vectors_per_thread", best_v);
    result("adam_best_blocks_per_sm", best_b);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "bench_optim: %s\n", ex.what());
    return 1;
  }
  return 0;
}
