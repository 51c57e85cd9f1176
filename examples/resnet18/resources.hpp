// Lower bounds of the memory a CPU run needs, by the option that asks for it, against what the machine can ever give.
#pragma once

// A huge --width or --batch-size used to end in a bare std::bad_alloc naming nothing, or,
// under Linux's overcommit, in the OOM killer minutes later. The counts here follow
// resnet.cpp's construction exactly (checked against the model by the tests), and only
// buffers that certainly exist are counted, so a refusal is never wrong; what they miss
// (allocator slack, scratch, oneDNN's copies) is caught as std::bad_alloc and reported
// with the option's name by allocation_for().

#include <cstddef>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>

#include "optimizer_factory.hpp"
#include "resnet.hpp"
#include "util.hpp"

namespace resnet18 {

// Parameters of ResNet18<S>(m): the sum of its tensors' sizes (num_parameters()).
std::uint64_t resnet18_parameter_count(const ModelConfig& m);
// Elements of the activations the model keeps per image (its buffers hold batch x this).
std::uint64_t resnet18_activations_per_image(const ModelConfig& m);

struct CpuMemoryNeed {
  std::uint64_t model = 0;  // parameters, gradients and the optimizer's state (bytes)
  std::uint64_t step = 0;   // activations and the batch's images at the larger batch size (bytes)
};
CpuMemoryNeed cpu_memory_need(const ModelConfig& model, const OptimizerSpec& optimizer, std::size_t batch_size,
                              std::size_t eval_batch_size);

// Bytes this process could ever get: RAM + swap, or less under RLIMIT_AS / RLIMIT_DATA.
std::uint64_t memory_limit_bytes();

// RefusedError naming --width (model alone too large) or --batch-size / --eval-batch-size
// when model + step + data_bytes exceeds `limit`.
void check_cpu_memory(const ModelConfig& model, const OptimizerSpec& optimizer, std::size_t batch_size,
                      std::size_t eval_batch_size, std::uint64_t data_bytes, std::uint64_t limit);

// "1.5 GiB", "512 MiB", "12 KiB" for messages.
std::string format_bytes(std::uint64_t bytes);

// Runs f(); std::bad_alloc or std::length_error from it become a RefusedError that names
// the option that asked for the memory, e.g. allocation_for("--width 4096", ...).
template <class F>
decltype(auto) allocation_for(const std::string& option, F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    throw RefusedError(option + ": more memory than can be allocated here (std::bad_alloc); use a smaller value");
  } catch (const std::length_error&) {
    throw RefusedError(option + ": a size larger than can be allocated (std::length_error); use a smaller value");
  }
}

}  // namespace resnet18
