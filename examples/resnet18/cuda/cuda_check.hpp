// Error checks of the GPU trainer: CUDA runtime, cuDNN and cuBLAS statuses become exceptions that name the call, the status and a hint.
#pragma once

#include <stdexcept>
#include <string>

#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

namespace resnet18::gpu {

enum class Library { cuda, cudnn, cublas };

// A failed CUDA, cuDNN or cuBLAS call. what(): "<call> failed: <STATUS_NAME> (<code>): <reason>[; hint]".
class GpuError : public std::runtime_error {
 public:
  GpuError(Library library, int code, const std::string& what) : std::runtime_error(what), library_(library), code_(code) {}
  [[nodiscard]] Library library() const noexcept { return library_; }
  [[nodiscard]] int code() const noexcept { return code_; }

 private:
  Library library_;
  int code_;
};

// The messages, separate from the throw so that tests can read them.
[[nodiscard]] std::string describe(cudaError_t e, const char* call);
[[nodiscard]] std::string describe(cudnnStatus_t s, const char* call);
[[nodiscard]] std::string describe(cublasStatus_t s, const char* call);

void check(cudaError_t e, const char* call);
void check(cudnnStatus_t s, const char* call);
void check(cublasStatus_t s, const char* call);
// After kernel launches: a bad launch configuration surfaces here.
void check_launch(const char* kernel);

}  // namespace resnet18::gpu

#define GPU_CHECK(call) ::resnet18::gpu::check((call), #call)
