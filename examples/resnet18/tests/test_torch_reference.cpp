// The full-width model against PyTorch float64 results (tests/data/torch_reference.txt, from make_torch_reference.py).
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "resnet.hpp"

using namespace resnet18;

namespace {

using Reference = std::map<std::string, std::vector<double>>;

Reference read_reference() {
  const std::string path = std::string(RESNET18_TEST_DATA_DIR) + "/torch_reference.txt";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  Reference ref;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string key;
    std::size_t n = 0;
    ls >> key >> n;
    std::vector<double> v(n);
    for (double& x : v) ls >> x;
    REQUIRE_MESSAGE(!ls.fail(), "bad line for " << key);
    ref[key] = std::move(v);
  }
  return ref;
}

// The formulas of make_torch_reference.py, in the model's layout.
double pattern(std::size_t j, std::size_t t, double phase) { return std::sin(1.3 * double(j) + 0.7 * double(t) + phase); }

void set_weights(ResNet18<double>& model) {
  auto params = model.parameters();
  const auto& info = model.parameter_info();
  for (std::size_t t = 0; t < params.size(); ++t) {
    const ParameterInfo& p = info[t];
    const bool conv_or_fc = p.shape.size() == 4 || p.name == "fc.weight";
    const double fan_in = double(p.size) / p.shape[0];
    for (std::size_t j = 0; j < p.size; ++j) {
      const double s = pattern(j, t, 0.1);
      double w;
      if (conv_or_fc)
        w = s / std::sqrt(fan_in);
      else if (p.name == "fc.bias")
        w = 0.1 * s;
      else if (p.name.ends_with(".weight"))
        w = 1.0 + 0.2 * s;
      else
        w = 0.2 * s;
      params[t][Eigen::Index(j)] = w;
    }
  }
}

// Norm and pattern dot product, as the reference stores them; the dot product is checked
// against the scale Cauchy-Schwarz allows, so cancellation does not make it flaky.
void check_summary(const std::string& key, const Reference& ref, const Eigen::Ref<const Eigen::VectorXd>& v,
                   std::size_t t) {
  CAPTURE(key);
  const auto it = ref.find(key);
  REQUIRE(it != ref.end());
  const double norm = v.norm();
  double dot = 0;
  for (Eigen::Index j = 0; j < v.size(); ++j) dot += v[j] * pattern(std::size_t(j), t, 0.9);
  CHECK(norm == doctest::Approx(it->second[0]).epsilon(1e-9));
  CHECK(std::abs(dot - it->second[1]) <= 1e-9 * it->second[0] * std::sqrt(double(v.size())));
}

void check_logits(const std::vector<double>& want, const Eigen::MatrixXd& got) {
  REQUIRE(want.size() == std::size_t(got.size()));
  const double scale = got.cwiseAbs().maxCoeff();
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(std::abs(got.data()[i] - want[i]) <= 1e-10 * scale);
}

void run_case(const std::string& tag, const ModelConfig& config, int batch) {
  const Reference ref = read_reference();
  ResNet18<double> model(config);
  set_weights(model);
  const std::size_t n_img = std::size_t(batch) * config.in_channels * config.image_size * config.image_size;
  std::vector<double> images(n_img);
  for (std::size_t i = 0; i < n_img; ++i) images[i] = std::sin(0.37 * double(i) + 0.5);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
  for (int i = 0; i < batch; ++i) labels[std::size_t(i)] = (3 * i + 1) % 10;

  const Eigen::MatrixXd train_logits = model.forward(images.data(), batch, true);
  const BatchResult r = model.backward(labels.data());
  check_logits(ref.at(tag + ".train_logits"), train_logits);
  CHECK(r.loss == doctest::Approx(ref.at(tag + ".loss")[0]).epsilon(1e-11));
  const auto grads = model.gradients();
  for (std::size_t t = 0; t < grads.size(); ++t)
    check_summary(tag + ".grad." + model.parameter_info()[t].name, ref, grads[t], t);
  const auto bufs = model.buffers();
  for (std::size_t t = 0; t < bufs.size(); ++t)
    check_summary(tag + ".buffer." + model.buffer_info()[t].name, ref, bufs[t], t);
  const Eigen::MatrixXd eval_logits = model.forward(images.data(), batch, false);
  check_logits(ref.at(tag + ".eval_logits"), eval_logits);
}

}  // namespace

TEST_CASE("matches PyTorch: CIFAR stem, width 64, 16x16x3, batch 2 (train logits, loss, all gradients, running stats, eval)") {
  ModelConfig c;
  c.image_size = 16;
  run_case("cifar", c, 2);
}

TEST_CASE("matches PyTorch: torchvision ImageNet stem, width 64, 32x32x1, batch 3") {
  ModelConfig c;
  c.image_size = 32;
  c.in_channels = 1;
  c.stem = Stem::imagenet;
  run_case("imagenet", c, 3);
}
