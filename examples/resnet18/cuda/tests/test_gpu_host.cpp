// Host-side tests of the GPU trainer (no GPU needed): formats, permutations, algorithm choice, batch records, error mapping, CLI.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "augment.hpp"
#include "cli.hpp"
#include "cuda_backend.hpp"
#include "cuda_check.hpp"
#include "data.hpp"
#include "plan.hpp"

using namespace resnet18;
using namespace resnet18::gpu;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

Dataset small_dataset(std::size_t n) {
  SyntheticOptions o;
  o.count = n;
  o.channels = 3;
  o.size = 8;
  return make_synthetic(o);
}

}  // namespace

TEST_CASE("memory formats parse, print and give the strides cuDNN expects") {
  CHECK(parse_layout("nchw") == Layout::nchw);
  CHECK(parse_layout("nhwc") == Layout::nhwc);
  CHECK(parse_layout("channels_last") == Layout::nhwc);
  CHECK_THROWS_WITH_AS(static_cast<void>(parse_layout("chwn")), doctest::Contains("chwn"), std::invalid_argument);
  CHECK(std::string(to_string(Layout::nchw)) == "nchw");
  CHECK(parse_algo_search("heuristic") == AlgoSearch::heuristic);
  CHECK_THROWS_AS(static_cast<void>(parse_algo_search("fastest")), std::invalid_argument);

  const Shape s{1, 5, 7, 3};  // h 5, w 7, c 3
  const Dims4 a = dims_of(s, 2, Layout::nchw);
  CHECK(a.n == 2);
  CHECK(!a.nhwc);
  CHECK(a.sw == 1);
  CHECK(a.sh == 7);
  CHECK(a.sc == 35);
  CHECK(a.sn == 105);
  CHECK(a.size() == 210);
  const Dims4 b = dims_of(s, 2, Layout::nhwc);
  CHECK(b.nhwc);
  CHECK(b.sc == 1);
  CHECK(b.sw == 3);
  CHECK(b.sh == 21);
  CHECK(b.sn == 105);
}

TEST_CASE("conv weight permutations between [o][kh][kw][i] and [o][i][kh][kw] are inverse and place each element") {
  const int O = 3, K = 2, I = 5;
  std::vector<float> ohwi(std::size_t(O * K * K * I));
  std::iota(ohwi.begin(), ohwi.end(), 0.0f);
  std::vector<float> oihw(ohwi.size()), back(ohwi.size());
  ohwi_to_oihw(ohwi.data(), oihw.data(), O, K, I);
  for (int o = 0; o < O; ++o)
    for (int i = 0; i < I; ++i)
      for (int p = 0; p < K * K; ++p)
        CHECK(oihw[std::size_t((o * I + i) * K * K + p)] == ohwi[std::size_t((o * K * K + p) * I + i)]);
  oihw_to_ohwi(oihw.data(), back.data(), O, K, I);
  CHECK(back == ohwi);
}

TEST_CASE("algorithm choice takes the first admissible candidate in cuDNN's order") {
  const std::vector<AlgoCandidate> c = {
      {0, false, 0.1f, 0, true, false},               // failed
      {1, true, 0.2f, std::size_t(4) << 30, true, false},  // too much workspace
      {2, true, 0.3f, 1024, false, false},            // nondeterministic
      {3, true, 0.4f, 1024, true, true},              // tensor cores
      {4, true, 0.5f, 0, true, false},
  };
  AlgoPolicy p;
  CHECK(choose_algo(c, p) == 2);
  p.deterministic_only = true;
  CHECK(choose_algo(c, p) == 3);
  p.allow_tensor_op = false;
  CHECK(choose_algo(c, p) == 4);
  p.workspace_limit = std::size_t(8) << 30;
  p.deterministic_only = false;
  CHECK(choose_algo(c, p) == 1);
  CHECK(choose_algo(std::span<const AlgoCandidate>(c.data(), 1), p) == -1);
  CHECK(choose_algo({}, p) == -1);
}

TEST_CASE("conv keys tell shapes apart and hash equal keys alike") {
  const ConvKey a{512, 64, 32, 32, 64, 3, 1, 1, Layout::nhwc, true};
  ConvKey b = a;
  CHECK(a == b);
  CHECK(ConvKeyHash{}(a) == ConvKeyHash{}(b));
  b.n = 336;  // the last, smaller batch of a CIFAR epoch searches again
  CHECK(!(a == b));
  b = a;
  b.layout = Layout::nchw;
  CHECK(!(a == b));
  b = a;
  b.tensor_op = false;
  CHECK(!(a == b));
}

TEST_CASE("batch records are the Batcher's indices and augmentation draws, batch after batch") {
  const Dataset d = small_dataset(40);
  BatcherOptions o;
  o.batch_size = 16;
  o.seed = 7;
  o.fill_images = false;
  Batcher b(d, o);
  b.start_epoch(3);
  std::vector<AugmentRecord> rec(16);
  std::size_t position = 0;
  bool any_flip = false, any_shift = false;
  while (const std::size_t n = b.next()) {
    fill_augment_records(b, rec);
    for (std::size_t i = 0; i < n; ++i) {
      const AugmentParams a = b.augmentation(3, position + i);
      CHECK(rec[i].index == int(b.order()[position + i]));
      CHECK(rec[i].dy == a.dy);
      CHECK(rec[i].dx == a.dx);
      CHECK(rec[i].flip == (a.flip ? 1 : 0));
      any_flip = any_flip || a.flip;
      any_shift = any_shift || a.dx != 0 || a.dy != 0;
    }
    position += n;
  }
  CHECK(position == 40);
  CHECK(any_flip);
  CHECK(any_shift);

  BatcherOptions e = o;
  e.train = false;
  Batcher eval(d, e);
  REQUIRE(eval.next() == 16);
  fill_augment_records(eval, rec);
  for (int i = 0; i < 16; ++i) {
    CHECK(rec[std::size_t(i)].index == i);
    CHECK(rec[std::size_t(i)].dx == 0);
    CHECK(rec[std::size_t(i)].dy == 0);
    CHECK(rec[std::size_t(i)].flip == 0);
  }
  std::vector<AugmentRecord> small(3);
  CHECK_THROWS_AS(fill_augment_records(eval, small), std::invalid_argument);
}

TEST_CASE("a Batcher that leaves images to the device still hands out labels") {
  const Dataset d = small_dataset(20);
  BatcherOptions o;
  o.batch_size = 8;
  o.fill_images = false;
  Batcher b(d, o);
  REQUIRE(b.next() == 8);
  for (std::size_t i = 0; i < 8; ++i) CHECK(b.labels()[i] == d.labels[b.indices()[i]]);
}

TEST_CASE("normalization constants reproduce augment_image's values bit for bit") {
  const std::vector<float> mean = {0.4914f, 0.4822f, 0.4465f}, stddev = {0.2470f, 0.2435f, 0.2616f};
  std::vector<float> scale, shift;
  normalization_constants(mean, stddev, scale, shift);
  // A 3 x 1 x 2 image, shifted one column so that one output pixel is padding.
  const std::vector<float> src = {0.25f, 0.7f, 0.1f, 0.9f, 0.33f, 0.0f};
  std::vector<float> dst(6);
  augment_image(src.data(), dst.data(), 3, 1, 2, AugmentParams{0, 1, false}, mean.data(), stddev.data());
  for (int c = 0; c < 3; ++c) {
    const float inside = src[std::size_t(c * 2 + 1)] * scale[std::size_t(c)] + shift[std::size_t(c)];
    CHECK(std::memcmp(&dst[std::size_t(c * 2)], &inside, sizeof(float)) == 0);
    CHECK(std::memcmp(&dst[std::size_t(c * 2 + 1)], &shift[std::size_t(c)], sizeof(float)) == 0);
  }
  CHECK_THROWS_AS(normalization_constants(mean, std::vector<float>{1.0f}, scale, shift), std::invalid_argument);
}

TEST_CASE("cuDNN, cuBLAS and CUDA statuses become exceptions naming the call, the status and a hint") {
  CHECK_NOTHROW(check(CUDNN_STATUS_SUCCESS, "cudnnFoo(x)"));
  CHECK_NOTHROW(check(CUBLAS_STATUS_SUCCESS, "cublasFoo(x)"));
  CHECK_NOTHROW(check(cudaSuccess, "cudaFoo(x)"));

  const std::string d = describe(CUDNN_STATUS_NOT_SUPPORTED, "cudnnConvolutionForward(h, ...)");
  CHECK(contains(d, "cudnnConvolutionForward(h, ...) failed"));
  CHECK(contains(d, "CUDNN_STATUS_NOT_SUPPORTED"));
  CHECK(contains(d, "(3000)"));
  CHECK(contains(d, "--cuda-layout"));
  CHECK(contains(describe(CUDNN_STATUS_BAD_PARAM, "f"), "CUDNN_STATUS_BAD_PARAM"));
  CHECK(contains(describe(CUDNN_STATUS_NOT_INITIALIZED, "cudnnCreate"), "is a GPU present"));
  try {
    check(CUDNN_STATUS_EXECUTION_FAILED, "cudnnBatchNormalizationBackward(...)");
    FAIL("no exception");
  } catch (const GpuError& e) {
    CHECK(e.library() == Library::cudnn);
    CHECK(e.code() == int(CUDNN_STATUS_EXECUTION_FAILED));
    CHECK(contains(e.what(), "cudnnBatchNormalizationBackward"));
  }

  CHECK(contains(describe(CUBLAS_STATUS_INVALID_VALUE, "cublasSgemm(...)"), "CUBLAS_STATUS_INVALID_VALUE"));
  CHECK(contains(describe(CUBLAS_STATUS_ALLOC_FAILED, "cublasCreate"), "--batch-size"));
  try {
    check(CUBLAS_STATUS_EXECUTION_FAILED, "cublasSgemm(...)");
    FAIL("no exception");
  } catch (const GpuError& e) {
    CHECK(e.library() == Library::cublas);
  }

  const std::string m = describe(cudaErrorMemoryAllocation, "cudaMalloc(&p, n)");
  CHECK(contains(m, "cudaErrorMemoryAllocation"));
  CHECK(contains(m, "--batch-size"));
  CHECK(contains(describe(cudaErrorNoDevice, "cudaSetDevice(0)"), "--device cpu"));
  CHECK_THROWS_AS(check(cudaErrorInvalidValue, "cudaMemcpy(...)"), GpuError);
}

TEST_CASE("GPU model options are checked before any device is touched") {
  GpuModelOptions o;
  CHECK_NOTHROW(validate(o));
  o.workspace_limit = 0;
  CHECK_THROWS_WITH_AS(validate(o), doctest::Contains("workspace_limit"), std::invalid_argument);
  o = {};
  o.device = -1;
  CHECK_THROWS_WITH_AS(validate(o), doctest::Contains("device"), std::invalid_argument);
}

TEST_CASE("without a usable GPU the backend fails with the CUDA runtime's reason") {
  std::string why;
  if (cuda_device_available(&why)) {
    MESSAGE("a CUDA device is present: the GPU tests (label gpu) cover the backend");
    return;
  }
  CHECK(!why.empty());
  CudaBackendOptions o;
  o.model.width = 4;
  o.model.image_size = 8;
  CHECK_THROWS_AS(CudaBackend{o}, GpuError);
}

TEST_CASE("the command line selects the GPU and its memory format") {
  const RunSetup r = parse_command_line({"--device", "cuda", "--cuda-layout", "nchw", "--no-tf32", "--cuda-algo",
                                         "heuristic"});
  CHECK(r.cli.device == "cuda");
  CHECK(r.cli.cuda_layout == "nchw");
  CHECK(r.cli.no_tf32);
  CHECK(r.cli.cuda_algo == "heuristic");
  const RunSetup d = parse_command_line({});
  CHECK(d.cli.cuda_layout == "nhwc");
  CHECK(!d.cli.no_tf32);
  CHECK_THROWS(parse_command_line({"--cuda-layout", "chwn"}));
}
