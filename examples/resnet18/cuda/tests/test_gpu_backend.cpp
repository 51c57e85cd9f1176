// The GPU backend against the CPU backend: same batches, same optimizer trajectory, interchangeable checkpoints, the trainer's loop.
#include <doctest/doctest.h>

#include <filesystem>
#include <sstream>
#include <unistd.h>

#include "cpu_backend.hpp"
#include "cuda_backend.hpp"
#include "gpu_test_util.hpp"
#include "trainer.hpp"

using namespace resnet18;
using namespace resnet18::gpu;
using namespace resnet18::gpu::test;

namespace {

struct Setup {
  Dataset train_set, test_set;
  ModelConfig model;
  OptimizerSpec optimizer;
};

Setup make_setup() {
  Setup s;
  SyntheticOptions so;
  so.count = 96;
  so.size = 16;
  so.seed = 2;
  so.sample_seed = 3;
  s.train_set = make_synthetic(so);
  so.count = 40;
  so.sample_seed = 4;
  s.test_set = make_synthetic(so);
  s.model.width = 8;
  s.model.image_size = 16;
  s.model.seed = 3;
  // SGD is linear in the gradients, so tiny float32 differences stay tiny; Adam's first
  // steps are sign-like and would amplify them where a gradient is near zero.
  s.optimizer.base = BaseKind::sgd;
  s.optimizer.lr = 0.05;
  s.optimizer.momentum = 0.9;
  s.optimizer.weight_decay = 1e-4;
  s.optimizer.levels = {LevelSpec{2, 0.5, nestla::Momentum::keep}};
  return s;
}

CpuBackendOptions cpu_options(const Setup& s) {
  CpuBackendOptions o;
  o.model = s.model;
  o.optimizer = s.optimizer;
  o.no_decay_bn_bias = true;
  return o;
}

CudaBackendOptions gpu_options(const Setup& s, Layout layout) {
  CudaBackendOptions o;
  o.model = s.model;
  o.optimizer = s.optimizer;
  o.no_decay_bn_bias = true;
  o.gpu.layout = layout;
  o.gpu.tf32 = false;
  return o;
}

// The next batch, starting the next epoch when one is over.
std::size_t next_batch(Batcher& b) {
  if (const std::size_t n = b.next()) return n;
  b.start_epoch(b.epoch() + 1);
  return b.next();
}

double parameter_error(CpuBackend& cpu, CudaBackend& gpu) {
  gpu.model().download_to_host();
  auto a = gpu.model().host().parameters();
  auto b = cpu.model().parameters();
  double worst = 0;
  for (std::size_t t = 0; t < a.size(); ++t)
    worst = std::max(worst, relative_error(a[t].data(), b[t].data(), std::size_t(a[t].size())));
  return worst;
}

}  // namespace

TEST_CASE("the GPU backend follows the CPU backend's trajectory: same batches, SGD under Lookahead") {
  const Setup s = make_setup();
  for (Layout layout : {Layout::nhwc, Layout::nchw}) {
    INFO(to_string(layout));
    CpuBackend cpu(cpu_options(s));
    CudaBackend gpu(gpu_options(s, layout));
    BatcherOptions bo;
    bo.batch_size = 32;
    bo.seed = 4;
    Batcher b(s.train_set, bo);
    for (int step = 0; step < 3; ++step) {
      REQUIRE(b.next() == 32);
      const BatchResult rc = cpu.train_batch(b);
      const BatchResult rg = gpu.train_batch(b);
      CHECK(rg.batch == 32);
      CHECK(rg.loss == doctest::Approx(rc.loss).epsilon(1e-4));
      CHECK(std::abs(rg.correct - rc.correct) <= 1);
    }
    CHECK(parameter_error(cpu, gpu) < 1e-4);
    CHECK(gpu.optimizer_metrics() == cpu.optimizer_metrics());
    CHECK(gpu.has_slow_weights());
    CHECK(gpu.datasets_on_device() == 1);

    BatcherOptions eo;
    eo.batch_size = 16;
    eo.train = false;
    Batcher e(s.test_set, eo);
    while (e.next() != 0) {
      const BatchResult rc = cpu.evaluate_batch(e);
      const BatchResult rg = gpu.evaluate_batch(e);
      CHECK(rg.loss == doctest::Approx(rc.loss).epsilon(1e-4));
    }
    CHECK(gpu.datasets_on_device() == 2);

    // Host images (the default path of train_step) give the same step as device batches.
    REQUIRE(next_batch(b) == 32);
    const BatchResult rc = cpu.train_step(b.images().data(), b.labels().data(), 32);
    const BatchResult rg = gpu.train_step(b.images().data(), b.labels().data(), 32);
    CHECK(rg.loss == doctest::Approx(rc.loss).epsilon(1e-4));
    CHECK(parameter_error(cpu, gpu) < 1e-4);
  }
}

TEST_CASE("slow-weight swaps are exact and reversible on the GPU") {
  const Setup s = make_setup();
  CudaBackend gpu(gpu_options(s, Layout::nhwc));
  BatcherOptions bo;
  bo.batch_size = 32;
  Batcher b(s.train_set, bo);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(b.next() != 0);
    gpu.train_batch(b);
  }
  gpu.model().download_to_host();
  const std::vector<float> before(gpu.model().host().flat_parameters().data(),
                                  gpu.model().host().flat_parameters().data() + gpu.model().host().flat_parameters().size());
  gpu.swap_slow_weights();
  gpu.model().download_to_host();
  auto mid = gpu.model().host().flat_parameters();
  CHECK(std::memcmp(mid.data(), before.data(), before.size() * 4) != 0);
  gpu.swap_slow_weights();
  gpu.model().download_to_host();
  auto after = gpu.model().host().flat_parameters();
  CHECK(std::memcmp(after.data(), before.data(), before.size() * 4) == 0);
}

TEST_CASE("checkpoints move between the GPU and the CPU backends in both directions") {
  const Setup s = make_setup();
  BatcherOptions bo;
  bo.batch_size = 32;
  bo.seed = 8;
  Batcher b(s.train_set, bo);
  CudaBackend gpu(gpu_options(s, Layout::nchw));
  for (int i = 0; i < 2; ++i) {
    REQUIRE(b.next() != 0);
    gpu.train_batch(b);
  }
  std::stringstream model, opt;
  gpu.save_model(model);
  gpu.save_optimizer(opt);

  CpuBackend cpu(cpu_options(s));
  cpu.load_model(model);
  cpu.load_optimizer(opt);
  CHECK(parameter_error(cpu, gpu) == 0.0);
  REQUIRE(next_batch(b) != 0);
  const BatchResult rc = cpu.train_batch(b);
  const BatchResult rg = gpu.train_batch(b);
  CHECK(rg.loss == doctest::Approx(rc.loss).epsilon(1e-4));
  CHECK(parameter_error(cpu, gpu) < 1e-4);

  // And back: a CPU checkpoint into a fresh GPU backend.
  std::stringstream m2, o2;
  cpu.save_model(m2);
  cpu.save_optimizer(o2);
  CudaBackend gpu2(gpu_options(s, Layout::nhwc));
  gpu2.load_model(m2);
  gpu2.load_optimizer(o2);
  CHECK(parameter_error(cpu, gpu2) == 0.0);
  REQUIRE(next_batch(b) != 0);
  CHECK(gpu2.train_batch(b).loss == doctest::Approx(cpu.train_batch(b).loss).epsilon(1e-4));

  // A damaged model checkpoint changes nothing.
  std::stringstream bad("not a checkpoint");
  gpu2.model().download_to_host();
  CHECK_THROWS_AS(gpu2.load_model(bad), CheckpointError);
  CHECK(parameter_error(cpu, gpu2) < 1e-4);
}

TEST_CASE("the trainer's loop runs on the GPU backend, and its checkpoint resumes on the CPU") {
  const Setup s = make_setup();
  const auto dir = std::filesystem::temp_directory_path() / ("resnet18_gpu_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  TrainerOptions o;
  o.epochs = 1;
  o.batch_size = 32;
  o.progress = TrainerOptions::Progress::none;
  o.schedule.lr = 0.05;
  o.checkpoint = dir / "run.ckpt";
  o.metrics = dir / "metrics.jsonl";
  std::ostringstream log;
  CudaBackend gpu(gpu_options(s, Layout::nhwc));
  const TrainSummary r = train(gpu, s.train_set, s.test_set, o, log);
  CHECK(r.epochs_done == 1);
  CHECK(r.steps == 3);
  REQUIRE(r.final_test_acc.has_value());
  CHECK(std::isfinite(*r.final_test_loss));
  CHECK(gpu.datasets_on_device() == 2);

  o.epochs = 2;
  o.resume = o.checkpoint;
  CpuBackend cpu(cpu_options(s));
  const TrainSummary r2 = train(cpu, s.train_set, s.test_set, o, log);
  CHECK(r2.epochs_done == 2);
  CHECK(r2.steps == 6);
  std::filesystem::remove_all(dir);
}

TEST_CASE("datasets that do not fit the model are refused with the reason") {
  const Setup s = make_setup();
  CudaBackend gpu(gpu_options(s, Layout::nhwc));
  SyntheticOptions so;
  so.count = 8;
  so.size = 16;
  so.channels = 1;
  const Dataset gray = make_synthetic(so);
  BatcherOptions bo;
  bo.batch_size = 4;
  Batcher b(gray, bo);
  REQUIRE(b.next() == 4);
  CHECK_THROWS_WITH_AS(gpu.train_batch(b), doctest::Contains("1x16x16"), std::invalid_argument);
  std::vector<float> images(4 * 3 * 16 * 16, 0.0f);
  std::vector<std::int32_t> labels = {0, 1, 10, 2};
  CHECK_THROWS_AS(gpu.train_step(images.data(), labels.data(), 4), std::out_of_range);
}
