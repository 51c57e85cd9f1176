// Host-side logic of the CUDA backend, checked without a GPU: metadata packing, tiers, work split, lane arithmetic, errors, traits.
#include <doctest/doctest.h>

#include <nestla/cuda.hpp>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

namespace cd = nestla::cuda::detail;
using nestla::TensorRef;

namespace {

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

template <class T>
std::vector<TensorRef<T>> refs_for(const std::vector<std::size_t>& sizes, T* param_base, const T* grad_base) {
  const auto l = nestla::Layout::of<T>(sizes);
  std::vector<TensorRef<T>> r;
  for (std::size_t i = 0; i < sizes.size(); ++i)
    r.push_back({param_base + l.offsets[i], grad_base + l.offsets[i], sizes[i], l.offsets[i]});
  return r;
}

template <class T>
cd::tensor_meta<T> meta_at(const std::vector<unsigned char>& blob, std::size_t i) {
  cd::tensor_meta<T> m;
  std::memcpy(&m, blob.data() + i * sizeof(m), sizeof(m));
  return m;
}

}  // namespace

TEST_CASE("tensor metadata is 40 bytes and argument structs respect the parameter limits") {
  static_assert(sizeof(cd::tensor_meta<float>) == 40 && sizeof(cd::tensor_meta<double>) == 40);
  using HF = cd::step_header<float, 3>;
  using HD = cd::step_header<double, 2>;
  static_assert(sizeof(cd::inline_args<HF, cd::small_param_limit>) <= cd::small_param_limit);
  static_assert(sizeof(cd::inline_args<HF, cd::large_param_limit>) <= cd::large_param_limit);
  static_assert(sizeof(cd::inline_args<HD, cd::large_param_limit>) <= cd::large_param_limit);
  static_assert(sizeof(cd::inline_args<cd::finite_header, cd::small_param_limit>) <= cd::small_param_limit);
  CHECK(cd::inline_args<HF, cd::small_param_limit>::capacity > 3000);
  CHECK(cd::inline_args<HF, cd::large_param_limit>::capacity > 32000);
}

TEST_CASE("pack writes one record per tensor and shares equal functors") {
  alignas(64) static float params[4096], grads[4096];
  const std::vector<std::size_t> sizes{5, 0, 64, 17, 1000};
  const auto refs = refs_for<float>(sizes, params, grads);
  // Tensors 3 and 4 are a parameter group with its own lr.
  auto make = [](std::size_t i) {
    return nestla::detail::adam_update<float, false, false>{0.9f, 0.1f, 0.999f, 0.001f, i >= 3 ? -0.5f : -0.1f,
                                                           1.0f, 1e-8f, 0.0f, 1.0f};
  };
  std::vector<unsigned char> blob;
  const auto pk = cd::pack<float>(blob, refs, make);
  using Op = decltype(make(0));
  CHECK(pk.nops == 2);
  CHECK(pk.ops_at == sizes.size() * sizeof(cd::tensor_meta<float>));
  CHECK(pk.bytes == pk.ops_at + 2 * sizeof(Op));
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const auto m = meta_at<float>(blob, i);
    CHECK(m.param == refs[i].param);
    CHECK(m.grad == refs[i].grad);
    CHECK(m.size == sizes[i]);
    CHECK(m.offset == refs[i].offset);
    CHECK(m.op == (i >= 3 ? 1u : 0u));
    CHECK(m.vector == 1u);
  }
  Op second;
  std::memcpy(&second, blob.data() + pk.ops_at + sizeof(Op), sizeof(Op));
  CHECK(second.neg_step_size == -0.5f);

  SUBCASE("a second pack of the same set reuses the buffer") {
    const auto* before = blob.data();
    const auto cap = blob.capacity();
    cd::pack<float>(blob, refs, make);
    CHECK(blob.data() == before);
    CHECK(blob.capacity() == cap);
  }
}

TEST_CASE("misaligned parameters or gradients take the element path") {
  alignas(64) static float params[256], grads[256];
  std::vector<TensorRef<float>> refs{{params, grads, 10, 0},
                                     {params + 17, grads + 16, 10, 16},
                                     {params + 32, grads + 34, 10, 32},
                                     {params + 48, grads + 48, 10, 48}};
  auto make = [](std::size_t) { return nestla::detail::sgd_update<float, 0, false>{-0.1f, 0, 0, 1}; };
  std::vector<unsigned char> blob;
  cd::pack<float>(blob, refs, make);
  CHECK(meta_at<float>(blob, 0).vector == 1u);
  CHECK(meta_at<float>(blob, 1).vector == 0u);
  CHECK(meta_at<float>(blob, 2).vector == 0u);
  CHECK(meta_at<float>(blob, 3).vector == 1u);
}

TEST_CASE("tiers: parameters while they fit, device memory beyond") {
  using H = cd::step_header<float, 2>;
  using Op = nestla::detail::adam_update<float, false, false>;
  auto bytes_for = [](std::size_t tensors) { return tensors * sizeof(cd::tensor_meta<float>) + sizeof(Op); };
  // ResNet-18: 62 tensors travel in a 4 KB parameter.
  CHECK(cd::choose_tier<H>(bytes_for(62), true) == cd::tier::small_params);
  CHECK(cd::choose_tier<H>(bytes_for(300), true) == cd::tier::large_params);
  CHECK(cd::choose_tier<H>(bytes_for(300), false) == cd::tier::device_blob);
  CHECK(cd::choose_tier<H>(bytes_for(2000), true) == cd::tier::device_blob);
  CHECK(std::string(cd::to_string(cd::tier::device_blob)) == "device_blob");
  // The biggest set each inline tier holds.
  const std::size_t small_max = (cd::inline_args<H, cd::small_param_limit>::capacity - sizeof(Op)) / 40;
  const std::size_t large_max = (cd::inline_args<H, cd::large_param_limit>::capacity - sizeof(Op)) / 40;
  CHECK(cd::choose_tier<H>(bytes_for(small_max), true) == cd::tier::small_params);
  CHECK(cd::choose_tier<H>(bytes_for(small_max + 1), true) == cd::tier::large_params);
  CHECK(cd::choose_tier<H>(bytes_for(large_max), true) == cd::tier::large_params);
  CHECK(cd::choose_tier<H>(bytes_for(large_max + 1), true) == cd::tier::device_blob);
  MESSAGE("float Adam: up to ", small_max, " tensors in 4 KB parameters, ", large_max, " in 32 KB");
}

TEST_CASE("first_tensor finds where a chunk starts, across padding and empty tensors") {
  alignas(64) static float params[1024], grads[1024];
  const std::vector<std::size_t> sizes{0, 10, 0, 0, 16, 1, 33};
  const auto refs = refs_for<float>(sizes, params, grads);  // offsets 0 0 16 16 16 32 48
  auto make = [](std::size_t) { return cd::no_op{}; };
  std::vector<unsigned char> blob;
  cd::pack<float>(blob, refs, make);
  const auto* meta = reinterpret_cast<const cd::tensor_meta<float>*>(blob.data());
  const auto n = static_cast<std::uint32_t>(sizes.size());
  CHECK(cd::first_tensor(meta, n, 0) == 1);
  CHECK(cd::first_tensor(meta, n, 12) == 1);  // padding after tensor 1
  CHECK(cd::first_tensor(meta, n, 16) == 4);
  CHECK(cd::first_tensor(meta, n, 31) == 4);
  CHECK(cd::first_tensor(meta, n, 32) == 5);
  CHECK(cd::first_tensor(meta, n, 48) == 6);
  CHECK(cd::first_tensor(meta, n, 1000) == 6);
  CHECK(cd::first_tensor(meta, 1, 5) == 0);
}

TEST_CASE("chunks keep 64-byte edges, and the grid covers the range") {
  CHECK(cd::chunk_elements<float>(2) == 2048);
  CHECK(cd::chunk_elements<double>(2) == 1024);
  CHECK(cd::chunk_elements<float>(0) * sizeof(float) % 64 == 0);
  CHECK(cd::grid_blocks(0, 2048, 100) == 1);
  CHECK(cd::grid_blocks(2049, 2048, 100) == 2);
  CHECK(cd::grid_blocks(11'173'962, 2048, 132 * 3) == 396);
  CHECK(cd::grid_blocks(100, 2048, 0) == 1);
}

TEST_CASE("lanes arithmetic is the scalar arithmetic, lane by lane") {
  using L = cd::lanes<float, 4>;
  L a, b;
  const float xa[4] = {1.5f, -2.25f, 3e-5f, 7.0f}, xb[4] = {0.1f, 4.0f, -1e3f, 3.0f};
  for (int i = 0; i < 4; ++i) a.v[i] = xa[i], b.v[i] = xb[i];
  namespace ops = nestla::ops;
  const L s = a + b, d = a - b, p = a * b, q = a / b, r = ops::sqrt(L(2.0f)), m = ops::max(a, b);
  const L n = -a, mn = ops::min(a, b), ab = ops::abs(b), sg = ops::sign(b), sel = ops::select(a < b, a, b),
          rc = ops::reciprocal(b), cl = ops::clamp(a, L(-1.0f), L(2.0f)), ms = a * 2.0f - 1.0f / b;
  for (int i = 0; i < 4; ++i) {
    CHECK(s.v[i] == xa[i] + xb[i]);
    CHECK(d.v[i] == xa[i] - xb[i]);
    CHECK(p.v[i] == xa[i] * xb[i]);
    CHECK(q.v[i] == xa[i] / xb[i]);
    CHECK(r.v[i] == std::sqrt(2.0f));
    CHECK(m.v[i] == ops::max(xa[i], xb[i]));
    CHECK(n.v[i] == -xa[i]);
    CHECK(mn.v[i] == ops::min(xa[i], xb[i]));
    CHECK(ab.v[i] == std::fabs(xb[i]));
    CHECK(sg.v[i] == ops::sign(xb[i]));
    CHECK(sel.v[i] == (xa[i] < xb[i] ? xa[i] : xb[i]));
    CHECK(rc.v[i] == 1.0f / xb[i]);
    CHECK(cl.v[i] == std::min(std::max(xa[i], -1.0f), 2.0f));
    CHECK(ms.v[i] == xa[i] * 2.0f - 1.0f / xb[i]);
  }
  // The update functors take lanes as they take xsimd batches.
  const nestla::detail::adam_update<float, false, true> op{0.9f, 0.1f, 0.999f, 0.001f, -0.01f, 0.5f, 1e-8f, 0.01f, 1};
  L pl = a, state[3] = {b, L(0.25f), L(0.5f)};
  op(pl, b, state);
  for (int i = 0; i < 4; ++i) {
    float ps = xa[i], ss[3] = {xb[i], 0.25f, 0.5f};
    op(ps, xb[i], ss);
    CHECK(pl.v[i] == ps);
    for (int k = 0; k < 3; ++k) CHECK(state[k].v[i] == ss[k]);
  }
}

TEST_CASE("CUDA failures name the call and CUDA's reason") {
  try {
    NESTLA_CUDA_CHECK(cudaErrorMemoryAllocation);
    FAIL("no exception");
  } catch (const nestla::cuda_error& e) {
    const std::string what = e.what();
    CHECK(what.find("cudaErrorMemoryAllocation failed") != std::string::npos);
    CHECK(what.find(cudaGetErrorString(cudaErrorMemoryAllocation)) != std::string::npos);
    CHECK(e.code() == cudaErrorMemoryAllocation);
  }
  CHECK_NOTHROW(cd::check(cudaSuccess, "cudaFree(p)"));
  CHECK_THROWS_WITH_AS(cd::check(cudaErrorInvalidValue, "cudaMemcpyAsync(dst, src, n, kind, s)"),
                       doctest::Contains("nestla: cudaMemcpyAsync(dst, src, n, kind, s) failed: "), nestla::cuda_error);
}

TEST_CASE("without a GPU, device work fails with the call's name and leaves the optimizer untouched") {
  if (have_gpu()) {
    MESSAGE("a GPU is present: the GPU tests cover this");
    return;
  }
  CHECK_THROWS_WITH_AS(nestla::cuda::device_buffer<float>(16), doctest::Contains("cudaMalloc"), nestla::cuda_error);
  nestla::Adam<float, nestla::cuda::device> opt;
  std::vector<nestla::cuda::device_span<float>> p{{reinterpret_cast<float*>(std::uintptr_t(256)), 4}};
  std::vector<nestla::cuda::device_span<const float>> g{{reinterpret_cast<const float*>(std::uintptr_t(512)), 4}};
  CHECK_THROWS_AS(opt.step(p, g), nestla::cuda_error);
  CHECK(!opt.initialized());
  CHECK(opt.step_count() == 0);
}

TEST_CASE("device spans and buffers are tensors, alone, in ranges and in tuples") {
  using nestla::cuda::device_buffer;
  using nestla::cuda::device_span;
  static_assert(nestla::Tensor<device_span<float>>);
  static_assert(nestla::Tensor<device_span<const double>>);
  static_assert(nestla::Tensor<device_buffer<float>>);
  static_assert(std::is_same_v<nestla::tensor_value_t<device_span<const float>>, float>);
  static_assert(nestla::ParameterSet<std::vector<device_span<float>>>);
  static_assert(nestla::ParameterSet<std::tuple<device_span<float>, std::vector<device_span<float>>>>);
  static_assert(std::is_same_v<nestla::set_scalar_t<std::vector<device_span<double>>>, double>);
  static_assert(std::is_convertible_v<device_span<float>, device_span<const float>>);
  static_assert(!std::is_convertible_v<device_span<const float>, device_span<float>>);
  float* raw = reinterpret_cast<float*>(std::uintptr_t(4096));
  device_span<float> s(raw, 100);
  CHECK(nestla::tensor_traits<device_span<float>>::data(s) == raw);
  CHECK(nestla::tensor_traits<device_span<float>>::size(s) == 100);
  CHECK(s.subspan(10, 5).data() == raw + 10);
  CHECK(s.subspan(10, 5).size() == 5);
  const device_span<const float> c = s;
  CHECK(c.data() == raw);
  device_buffer<float> empty;
  CHECK(empty.empty());
  CHECK(empty.data() == nullptr);
}

TEST_CASE("a copied context keeps the stream and settings, not the launch resources") {
  nestla::cuda::device::context a;
  a.stream = reinterpret_cast<cudaStream_t>(std::uintptr_t(0x1234));
  a.vectors_per_thread = 4;
  a.blocks_per_sm = 2;
  a.force_tier = cd::tier::device_blob;
  a.resources().scratch.resize(100);
  nestla::cuda::device::context b(a);
  CHECK(b.stream == a.stream);
  CHECK(b.vectors_per_thread == 4);
  CHECK(b.blocks_per_sm == 2);
  CHECK(b.force_tier == cd::tier::device_blob);
  CHECK(b.resources().scratch.empty());
  auto* res = &a.resources();
  nestla::cuda::device::context c(std::move(a));
  CHECK(&c.resources() == res);
}

TEST_CASE("CUDA optimizer types of every depth compile, and their options validate as on the host") {
  using Dev = nestla::cuda::device;
  nestla::SGD<float, Dev> sgd({.lr = 0.1, .momentum = 0.9, .nesterov = true});
  nestla::AdamW<double, Dev> adamw({.amsgrad = true});
  auto deep = nestla::nested<3>(nestla::Adam<float, Dev>({.lr = 1e-3}), {{.k = 5}, {.k = 5}, {.k = 2}});
  static_assert(decltype(deep)::depth == 3);
  static_assert(std::is_same_v<decltype(deep)::backend_type, Dev>);
  CHECK(decltype(deep)::type_name() == "Lookahead<Lookahead<Lookahead<Adam>>>");
  using AdamDev = nestla::Adam<float, Dev>;
  CHECK_THROWS_AS(AdamDev({.beta1 = 1.0}), nestla::invalid_option);
  deep.base().context().stream = cudaStreamPerThread;
  CHECK(deep.base().context().stream == cudaStreamPerThread);
}
