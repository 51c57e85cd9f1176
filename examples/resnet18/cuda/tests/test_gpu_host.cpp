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

// ---- the kernels' per-element bodies (kernel_math.hpp), run here in plain loops against
// the CPU model's layers: the index arithmetic, tie-breaking and summation order that the
// GPU tests check again on a device.

#include "kernel_math.hpp"
#include "layers.hpp"
#include "rng.hpp"

namespace {

std::vector<float> random_values(std::size_t n, std::uint64_t seed, int levels = 0) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) {
    const double u = rng.uniform();
    // A few levels make ties, which max pooling must break as the CPU does.
    x = levels > 0 ? float(std::floor(u * levels)) : float(2 * u - 1);
  }
  return v;
}

// NHWC (the CPU layers' order) to NCHW.
std::vector<float> to_nchw(const std::vector<float>& x, Shape s) {
  std::vector<float> y(x.size());
  for (int n = 0; n < s.n; ++n)
    for (int yy = 0; yy < s.h; ++yy)
      for (int xx = 0; xx < s.w; ++xx)
        for (int c = 0; c < s.c; ++c)
          y[std::size_t(((n * s.c + c) * s.h + yy) * s.w + xx)] = x[std::size_t(((n * s.h + yy) * s.w + xx) * s.c + c)];
  return y;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("kernel bodies: augmentation equals the Batcher's bits in both formats") {
  SyntheticOptions so;
  so.count = 30;
  so.channels = 3;
  so.size = 10;
  const Dataset d = make_synthetic(so);
  std::vector<float> scale, shift;
  normalization_constants(d.mean, d.stddev, scale, shift);
  for (bool nhwc : {false, true}) {
    BatcherOptions o;
    o.batch_size = 8;
    o.seed = 5;
    o.crop_padding = 6;
    o.channels_last = nhwc;
    Batcher b(d, o);
    b.start_epoch(1);
    std::vector<AugmentRecord> rec(8);
    while (const std::size_t n = b.next()) {
      fill_augment_records(b, rec);
      const Dims4 out = dims_of(Shape{1, d.height, d.width, d.channels}, int(n), nhwc ? Layout::nhwc : Layout::nchw);
      std::vector<float> y(std::size_t(out.size()));
      for (long long i = 0; i < out.size(); ++i)
        y[std::size_t(i)] =
            math::augment_value(d.images.data(), rec.data(), d.height, d.width, scale.data(), shift.data(), out, i);
      CHECK(same_bits(y, std::vector<float>(b.images().begin(), b.images().end())));
    }
  }
}

TEST_CASE("kernel bodies: format conversion, average pooling and its backward match the CPU layers") {
  const Shape s{3, 4, 5, 6};
  const auto x = random_values(s.size(), 1);  // NHWC
  const auto xn = to_nchw(x, s);
  for (Layout l : {Layout::nhwc, Layout::nchw}) {
    const Dims4 d = dims_of(Shape{1, s.h, s.w, s.c}, s.n, l);
    const auto& src = l == Layout::nhwc ? x : xn;
    std::vector<float> conv(src.size());
    for (long long i = 0; i < d.size(); ++i) conv[std::size_t(i)] = math::nchw_value(xn.data(), d, i);
    CHECK(same_bits(conv, src));

    std::vector<float> ref(std::size_t(s.n * s.c)), got(ref.size());
    global_avg_pool_forward<float>(x.data(), s, ref.data());
    for (int n = 0; n < s.n; ++n)
      for (int c = 0; c < s.c; ++c) got[std::size_t(n * s.c + c)] = math::gap_value(src.data(), d, n, c);
    CHECK(same_bits(got, ref));

    std::vector<float> dref(x.size()), dgot(x.size());
    global_avg_pool_backward<float>(ref.data(), s, dref.data());
    for (long long i = 0; i < d.size(); ++i) dgot[std::size_t(i)] = math::gap_backward_value(ref.data(), d, i);
    CHECK(same_bits(dgot, l == Layout::nhwc ? dref : to_nchw(dref, s)));
  }
}

TEST_CASE("kernel bodies: 3x3/2 max pooling and its gathering backward match the CPU layer, ties included") {
  const Shape in{2, 9, 7, 3};
  MaxPool2d<float> pool(3, 2, 1);
  const Shape out = pool.output_shape(in);
  const auto x = random_values(in.size(), 2, 3);
  std::vector<float> y(out.size()), dx(in.size());
  std::vector<std::int32_t> arg(out.size());
  pool.forward(x.data(), in, y.data(), arg.data());
  const auto dy = random_values(out.size(), 3);
  pool.backward(dy.data(), in, arg.data(), dx.data());
  for (Layout l : {Layout::nhwc, Layout::nchw}) {
    INFO(to_string(l));
    const Dims4 di = dims_of(Shape{1, in.h, in.w, in.c}, in.n, l), dout = dims_of(Shape{1, out.h, out.w, out.c}, out.n, l);
    const bool nhwc = l == Layout::nhwc;
    const auto xs = nhwc ? x : to_nchw(x, in);
    const auto dys = nhwc ? dy : to_nchw(dy, out);
    std::vector<float> got(y.size());
    std::vector<std::int32_t> garg(y.size());
    for (long long i = 0; i < dout.size(); ++i)
      got[std::size_t(i)] = math::max_pool_value(xs.data(), di, dout, 3, 2, 1, i, garg[std::size_t(i)]);
    CHECK(same_bits(got, nhwc ? y : to_nchw(y, out)));
    std::vector<float> dgot(dx.size());
    for (long long i = 0; i < di.size(); ++i)
      dgot[std::size_t(i)] = math::max_pool_backward_value(dys.data(), di, dout, 3, 2, 1, garg.data(), i);
    CHECK(same_bits(dgot, nhwc ? dx : to_nchw(dx, in)));
  }
}

TEST_CASE("kernel bodies: softmax cross-entropy per sample matches the CPU loss and gradient") {
  const int K = 10, B = 7;
  auto z = random_values(std::size_t(K * B), 4);
  z[3] = z[5];  // a tie for the argmax
  std::vector<std::int32_t> labels = {0, 9, 3, 5, 1, 1, 7};
  std::vector<float> dref(z.size()), dgot(z.size());
  const LossResult ref = softmax_cross_entropy<float>(z.data(), labels.data(), K, B, dref.data());
  double loss = 0;
  int hits = 0;
  for (int n = 0; n < B; ++n) {
    int hit = 0;
    loss += math::loss_sample(z.data() + n * K, labels[std::size_t(n)], K, B, dgot.data() + n * K, hit);
    hits += hit;
  }
  CHECK(loss / B == doctest::Approx(ref.loss).epsilon(1e-12));
  CHECK(hits == ref.correct);
  CHECK(same_bits(dgot, dref));
  int hit = 1;
  CHECK(std::isnan(math::loss_sample(z.data(), K, K, B, nullptr, hit)));
  CHECK(hit == 0);
}

TEST_CASE("kernel bodies: weight permutations index like the host permutations") {
  const int O = 4, K = 3, I = 5, KK = K * K;
  std::vector<float> w(std::size_t(O * KK * I));
  std::iota(w.begin(), w.end(), 0.0f);
  std::vector<float> ref(w.size()), got(w.size()), back(w.size());
  ohwi_to_oihw(w.data(), ref.data(), O, K, I);
  for (long long j = 0; j < (long long)w.size(); ++j) got[std::size_t(j)] = w[std::size_t(math::oihw_source(j, KK, I))];
  CHECK(got == ref);
  for (long long j = 0; j < (long long)w.size(); ++j) back[std::size_t(j)] = got[std::size_t(math::ohwi_source(j, KK, I))];
  CHECK(back == w);
}
