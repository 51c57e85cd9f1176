// CUDA failures as nestla exceptions: every runtime call is checked, and the message names the call and CUDA's reason.
#pragma once

#include <stdexcept>
#include <string>

#include <cuda_runtime_api.h>

#include "nestla/error.hpp"

namespace nestla {

// A CUDA runtime call failed. what() names the call and cudaGetErrorString's
// text; code() is the error for programs that handle some of them.
struct cuda_error : std::runtime_error {
  cuda_error(cudaError_t code, const std::string& what) : std::runtime_error(what), code_(code) {}
  cudaError_t code() const noexcept { return code_; }

 private:
  cudaError_t code_;
};

namespace cuda::detail {

inline std::string describe(cudaError_t e, const char* call) {
  return nestla::detail::concat("nestla: ", call, " failed: ", cudaGetErrorString(e), " (", cudaGetErrorName(e), ")");
}

inline void check(cudaError_t e, const char* call) {
  if (e != cudaSuccess) throw cuda_error(e, describe(e, call));
}

// After a kernel launch: configuration errors are reported here, faults inside
// the kernel by a later call. cudaErrorNotReady is the answer of an earlier
// query (cudaEventQuery on a busy event), not a failure.
inline void check_launch(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess && e != cudaErrorNotReady) throw cuda_error(e, describe(e, kernel));
}

}  // namespace cuda::detail
}  // namespace nestla

// Checks a CUDA runtime call; the exception quotes the call as written.
#define NESTLA_CUDA_CHECK(call) ::nestla::cuda::detail::check((call), #call)
