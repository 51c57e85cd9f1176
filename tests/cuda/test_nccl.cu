// nestla::nccl::group without a GPU: what it refuses before any NCCL call, and that CUDA optimizers take it while host ones do not.
#include <doctest/doctest.h>

#include <nestla/cuda.hpp>
#include <nestla/nccl.hpp>

#include <memory>
#include <string>

#include "../single_worker_group.hpp"

TEST_CASE("a null communicator is refused with a clear error") {
  std::string m;
  try {
    nestla::nccl::group::create(nullptr, 0);
  } catch (const nestla::comm_error& e) {
    m = e.what();
  }
  CHECK(m.find("communicator is null") != std::string::npos);
}

TEST_CASE("device-memory groups go to CUDA optimizers, host-memory groups to host ones") {
  auto device_group = std::make_shared<nestla_test::single_worker_group>(nestla::memory_space::device);
  auto host_group = std::make_shared<nestla_test::single_worker_group>(nestla::memory_space::host);
  nestla::Lookahead<nestla::Adam<float, nestla::cuda::device>> gpu(nestla::Adam<float, nestla::cuda::device>(), {.k = 2});
  gpu.set_group(device_group);
  gpu.base().set_group(device_group);
  CHECK(gpu.group() == device_group);
  CHECK_THROWS_AS(gpu.set_group(host_group), nestla::invalid_option);
  nestla::Lookahead<nestla::Adam<float>> cpu(nestla::Adam<float>(), {.k = 2});
  CHECK_THROWS_AS(cpu.set_group(device_group), nestla::invalid_option);
  CHECK(cpu.group() == nullptr);
}
