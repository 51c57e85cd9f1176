// Whole-model tests: layout and counts, shapes of both stems, whole-network gradients, eval mode, checkpoints.
#include <doctest/doctest.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include <omp.h>

#include "gradcheck.hpp"
#include "resnet.hpp"

using namespace resnet18;
using namespace resnet18::testing;

TEST_CASE("full-width CIFAR ResNet-18: 11,173,962 parameters in 62 tensors, torchvision names and order") {
  ResNet18<float> model;  // width 64, 3 channels, 32x32, 10 classes
  CHECK(model.num_parameters() == 11173962);
  const auto& info = model.parameter_info();
  REQUIRE(info.size() == 62);
  CHECK(model.parameters().size() == 62);
  CHECK(model.gradients().size() == 62);
  CHECK(info[0].name == "conv1.weight");
  CHECK(info[0].shape == std::vector<int>{64, 3, 3, 3});
  CHECK(info[1].name == "bn1.weight");
  CHECK(info[2].name == "bn1.bias");
  CHECK(info[3].name == "layer1.0.conv1.weight");
  CHECK(info[15].name == "layer2.0.conv1.weight");
  CHECK(info[21].name == "layer2.0.downsample.0.weight");
  CHECK(info[21].shape == std::vector<int>{128, 1, 1, 64});
  CHECK(info[23].name == "layer2.0.downsample.1.bias");
  CHECK(info[60].name == "fc.weight");
  CHECK(info[60].shape == std::vector<int>{10, 512});
  CHECK(info[61].name == "fc.bias");
  CHECK(model.buffer_info().size() == 40);  // running mean and var of 20 batch norms

  // No weight decay exactly for batch-norm tensors and the fc bias.
  const std::vector<bool> nwd = model.no_weight_decay();
  int no_decay = 0;
  for (std::size_t i = 0; i < info.size(); ++i) {
    const bool is_bn = info[i].name.find("bn") != std::string::npos || info[i].name.find("downsample.1") != std::string::npos;
    CHECK(nwd[i] == (is_bn || info[i].name == "fc.bias"));
    CHECK(info[i].no_weight_decay == nwd[i]);
    no_decay += nwd[i] ? 1 : 0;
    CHECK(info[i].offset % 16 == 0);  // 64-byte aligned floats
  }
  CHECK(no_decay == 41);
  // The views alias the model's storage.
  auto p = model.parameters();
  auto flat = model.flat_parameters();
  CHECK(p[5].data() == flat.data() + info[5].offset);
  CHECK(model.forward_flop_per_image() == doctest::Approx(1.1115e9).epsilon(1e-3));
}

TEST_CASE("initialization: torchvision's rules, deterministic in the seed") {
  ModelConfig narrow;
  narrow.width = 8;
  ResNet18<float> x(narrow);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);  // the draw must not depend on the thread count
  ResNet18<float> y(narrow);
  omp_set_num_threads(threads);
  narrow.seed = 7;
  ResNet18<float> z(narrow);
  CHECK(x.flat_parameters() == y.flat_parameters());
  CHECK(x.flat_parameters() != z.flat_parameters());

  ResNet18<float> a;
  const auto& info = a.parameter_info();
  auto p = a.parameters();
  // layer3.0.conv2: 256 x 3 x 3 x 256, std sqrt(2 / (256*9)) (fan_out)
  const std::size_t k = 33;
  REQUIRE(info[k].name == "layer3.0.conv2.weight");
  const double n = double(p[k].size());
  const double mean = double(p[k].sum()) / n;
  const double std = std::sqrt(double(p[k].squaredNorm()) / n - mean * mean);
  CHECK(std::abs(mean) < 1e-3);
  CHECK(std == doctest::Approx(std::sqrt(2.0 / (256 * 9))).epsilon(0.01));
  CHECK((p[1].array() == 1.0f).all());  // bn1.weight
  CHECK((p[2].array() == 0.0f).all());  // bn1.bias
  const float bound = 1.0f / std::sqrt(512.0f);
  CHECK(p[60].cwiseAbs().maxCoeff() <= bound);
  CHECK(p[60].cwiseAbs().maxCoeff() > 0.9f * bound);
  CHECK(p[61].cwiseAbs().maxCoeff() <= bound);
  for (std::size_t i = 0; i < a.buffer_info().size(); ++i) {
    const float want = a.buffer_info()[i].name.ends_with("running_var") ? 1.0f : 0.0f;
    CHECK((a.buffers()[i].array() == want).all());
  }
}

TEST_CASE("stage shapes of both stems") {
  ResNet18<float> cifar;
  const auto s = cifar.stage_shapes();
  REQUIRE(s.size() == 7);
  CHECK(s[0].first == "conv1");
  CHECK(s[0].second == Shape{1, 32, 32, 64});
  CHECK(s[1].second == Shape{1, 32, 32, 64});
  CHECK(s[2].second == Shape{1, 16, 16, 128});
  CHECK(s[3].second == Shape{1, 8, 8, 256});
  CHECK(s[4].first == "layer4");
  CHECK(s[4].second == Shape{1, 4, 4, 512});
  CHECK(s[5].second == Shape{1, 1, 1, 512});
  CHECK(s[6].second == Shape{1, 1, 1, 10});

  ModelConfig im;
  im.stem = Stem::imagenet;
  im.image_size = 224;
  ResNet18<float> imagenet(im);
  const auto t = imagenet.stage_shapes();
  REQUIRE(t.size() == 8);
  CHECK(t[0].second == Shape{1, 112, 112, 64});
  CHECK(t[1].first == "maxpool");
  CHECK(t[1].second == Shape{1, 56, 56, 64});
  CHECK(t[2].second == Shape{1, 56, 56, 64});
  CHECK(t[5].second == Shape{1, 7, 7, 512});
  CHECK(imagenet.parameter_info()[0].shape == std::vector<int>{64, 7, 7, 3});
  CHECK(imagenet.num_parameters() == 11181642);  // torchvision resnet18(num_classes=10)

  ModelConfig fm;  // Fashion-MNIST: 1 channel, 28x28
  fm.in_channels = 1;
  fm.image_size = 28;
  fm.width = 4;
  ResNet18<float> small(fm);
  CHECK(small.stage_shapes()[4].second == Shape{1, 4, 4, 32});
  std::vector<float> images(3 * 28 * 28, 0.5f);
  const auto logits = small.forward(images.data(), 3, false);
  CHECK(logits.rows() == 10);
  CHECK(logits.cols() == 3);
  fm.stem = Stem::imagenet;
  ResNet18<float> small_im(fm);
  CHECK(small_im.stage_shapes()[5].second == Shape{1, 1, 1, 32});
  const auto logits2 = small_im.forward(images.data(), 3, false);
  CHECK(logits2.rows() == 10);
  CHECK(logits2.cols() == 3);
  CHECK(logits2.allFinite());

  ModelConfig bad;
  bad.image_size = 0;
  CHECK_THROWS_AS(ResNet18<float>{bad}, std::invalid_argument);
}

namespace {

struct NetCase {
  ModelConfig config;
  int batch;
};

void check_network_gradients(const NetCase& nc) {
  CAPTURE(nc.config.image_size);
  ResNet18<double> model(nc.config);
  const ModelConfig& c = nc.config;
  const int batch = nc.batch;
  const auto images = random_vector(std::size_t(batch) * c.in_channels * c.image_size * c.image_size, 40);
  const std::vector<std::int32_t> labels = {3, 7, 1, 0, 9};
  model.train_step(images.data(), labels.data(), batch);
  std::vector<std::vector<double>> analytic;
  for (const auto& g : model.gradients()) analytic.emplace_back(g.data(), g.data() + g.size());

  auto loss = [&] {
    model.forward(images.data(), batch, true);
    return model.loss(labels.data()).loss;
  };
  auto params = model.parameters();
  const auto& info = model.parameter_info();
  Rng rng(41);
  int checked = 0;
  double worst = 0;
  std::string worst_name;
  for (std::size_t t = 0; t < params.size(); ++t) {
    std::vector<double> a, f;
    for (int k = 0; k < 3; ++k) {
      const auto i = std::size_t(rng.below(std::uint64_t(params[t].size())));
      a.push_back(analytic[t][i]);
      // A width-2 net with batch norm over 3 values is strongly curved (the O(h^2) term of
      // central differences reaches 1e-3 relative at h = 1e-5); h = 1e-7 is still far
      // above the rounding floor (1e-16 * loss / h ~ 1e-9).
      f.push_back(numeric_gradient(loss, params[t].data() + i, 1, 1e-7)[0]);
    }
    // Entry-wise against the tensor's scale: an error on one sampled entry shows.
    double scale = 1e-12;
    for (double v : analytic[t]) scale = std::max(scale, std::abs(v));
    for (std::size_t j = 0; j < a.size(); ++j) {
      const double e = std::abs(a[j] - f[j]) / scale;
      if (e > worst) worst = e, worst_name = info[t].name;
    }
    ++checked;
  }
  CAPTURE(worst_name);
  CHECK(checked == 62);
  CHECK(worst < 1e-5);
}

}  // namespace

TEST_CASE("whole network: backward matches finite differences (double, width 2)") {
  SUBCASE("CIFAR stem, 8x8, batch 3") {
    ModelConfig c;
    c.width = 2;
    c.image_size = 8;
    c.seed = 5;
    check_network_gradients({c, 3});
  }
  SUBCASE("ImageNet stem, 1 channel, 16x16, batch 3") {
    ModelConfig c;
    c.width = 2;
    c.image_size = 16;
    c.in_channels = 1;
    c.stem = Stem::imagenet;
    c.seed = 6;
    check_network_gradients({c, 3});
  }
}

TEST_CASE("eval mode: each image's output is independent of its batch, training updates the running stats") {
  ModelConfig c;
  c.width = 4;
  c.image_size = 8;
  ResNet18<double> model(c);
  const auto images = random_vector(4 * 3 * 64, 50);
  const std::vector<std::int32_t> labels = {1, 2, 3, 4};
  model.train_step(images.data(), labels.data(), 4);
  model.train_step(images.data(), labels.data(), 4);
  const auto running = model.buffers();
  CHECK(running[0].cwiseAbs().maxCoeff() > 0);  // bn1.running_mean moved off 0

  const Eigen::MatrixXd all = model.forward(images.data(), 4, false);
  const Eigen::MatrixXd one = model.forward(images.data() + 3 * 64, 1, false);  // image 1 alone
  CHECK((all.col(1) - one.col(0)).cwiseAbs().maxCoeff() < 1e-12);
  // Training mode normalizes with batch statistics: the same image gives other logits.
  const Eigen::MatrixXd train = model.forward(images.data(), 4, true);
  CHECK((train - all).cwiseAbs().maxCoeff() > 1e-6);
  const BatchResult r = model.evaluate(images.data(), labels.data(), 4);
  CHECK(r.batch == 4);
  CHECK(std::isfinite(r.loss));
  CHECK_THROWS_AS(model.backward(labels.data()), std::logic_error);  // last forward was eval
  CHECK_THROWS_AS(model.forward(images.data(), 1, true), std::invalid_argument);
}

TEST_CASE("a few SGD steps on a fixed batch drive the loss down") {
  ModelConfig c;
  c.width = 4;
  c.image_size = 8;
  ResNet18<float> model(c);
  const auto d = random_vector(8 * 3 * 64, 60);
  const std::vector<float> images(d.begin(), d.end());
  const std::vector<std::int32_t> labels = {0, 1, 2, 3, 4, 5, 6, 7};
  const double first = model.train_step(images.data(), labels.data(), 8).loss;
  auto p = model.parameters();
  auto g = model.gradients();
  BatchResult r;
  for (int step = 0; step < 30; ++step) {
    for (std::size_t i = 0; i < p.size(); ++i) p[i] -= 0.05f * g[i];
    r = model.train_step(images.data(), labels.data(), 8);
  }
  CHECK(r.loss < 0.5 * first);
  CHECK(r.correct >= 6);
}

TEST_CASE("checkpoints: round trip, and clear errors that leave the model untouched") {
  ModelConfig c;
  c.width = 2;
  c.image_size = 8;
  ResNet18<float> a(c);
  const auto d = random_vector(4 * 3 * 64, 70);
  const std::vector<float> images(d.begin(), d.end());
  const std::vector<std::int32_t> labels = {1, 0, 1, 0};
  a.train_step(images.data(), labels.data(), 4);  // running statistics move
  std::stringstream ss;
  a.save(ss);
  const std::string bytes = ss.str();
  CHECK(bytes.size() == a.checkpoint_bytes());

  c.seed = 99;
  ResNet18<float> b(c);
  CHECK(b.flat_parameters() != a.flat_parameters());
  std::istringstream in(bytes);
  b.load(in);
  CHECK(b.flat_parameters() == a.flat_parameters());
  for (std::size_t i = 0; i < a.buffers().size(); ++i) CHECK(b.buffers()[i] == a.buffers()[i]);
  const Eigen::MatrixXf la = a.forward(images.data(), 4, false);
  const Eigen::MatrixXf lb = b.forward(images.data(), 4, false);
  CHECK(la == lb);

  auto expect_error = [&](ResNet18<float>& m, const std::string& data, const std::string& fragment) {
    const Eigen::VectorXf before = m.flat_parameters();
    std::istringstream is(data);
    try {
      m.load(is);
      FAIL("load accepted a bad checkpoint");
    } catch (const CheckpointError& e) {
      CAPTURE(e.what());
      CHECK(std::string(e.what()).find(fragment) != std::string::npos);
    }
    CHECK(m.flat_parameters() == before);
  };
  ResNet18<float> fresh(c);
  expect_error(fresh, bytes.substr(0, bytes.size() - 10), "truncated");
  expect_error(fresh, bytes.substr(0, 10), "truncated");
  expect_error(fresh, "garbage garbage garbage garbage", "magic");
  std::string renamed = bytes;
  renamed[renamed.find("layer1.0.bn1.bias")] = 'X';
  expect_error(fresh, renamed, "Xayer1.0.bn1.bias");

  ModelConfig wider = c;
  wider.width = 4;
  ResNet18<float> w(wider);
  expect_error(w, bytes, "width is 2 in the file, 4 in this model");
  ResNet18<double> dbl(c);
  std::istringstream is(bytes);
  CHECK_THROWS_WITH_AS(dbl.load(is), doctest::Contains("4-byte scalars"), CheckpointError);
}
