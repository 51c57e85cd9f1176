// The trainer's optimizer factory for parameters in GPU memory: the same runtime dispatch, with nestla's CUDA backend.
#pragma once

#include <memory>
#include <vector>

#include <nestla/cuda/device_span.hpp>

#include "optimizer_factory.hpp"

namespace resnet18::gpu {

// One view per parameter tensor of the GPU model, in the CPU model's order.
using DeviceParams = std::vector<nestla::cuda::device_span<float>>;

// make_optimizer<DeviceParams, float, nestla::cuda::device>, compiled once by nvcc in
// cuda_optimizer.cu so that the rest of the trainer builds with the C++ compiler.
// Steps run on the default stream, where the GPU model queues its work.
std::unique_ptr<AnyOptimizer<DeviceParams>> make_device_optimizer(const OptimizerSpec& spec);

}  // namespace resnet18::gpu
