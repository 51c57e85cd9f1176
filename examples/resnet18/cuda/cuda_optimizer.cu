// The one nvcc translation unit that instantiates every nestla optimizer type the GPU trainer can build.
#include <nestla/cuda.hpp>

#include "cuda_optimizer.hpp"

namespace resnet18::gpu {

std::unique_ptr<AnyOptimizer<DeviceParams>> make_device_optimizer(const OptimizerSpec& spec) {
  return make_optimizer<DeviceParams, float, nestla::cuda::device>(spec);
}

}  // namespace resnet18::gpu
