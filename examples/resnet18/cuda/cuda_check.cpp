// Status-to-exception mapping of the GPU trainer (see cuda_check.hpp).
#include "cuda_check.hpp"

#include <cstdio>

namespace resnet18::gpu {
namespace {

std::string base(const char* call, const char* name, int code, const char* reason) {
  std::string s = call ? call : "(call)";
  s += " failed: ";
  s += name ? name : "unknown status";
  s += " (" + std::to_string(code) + ")";
  if (reason && *reason) {
    s += ": ";
    s += reason;
  }
  return s;
}

}  // namespace

std::string describe(cudaError_t e, const char* call) {
  std::string s = base(call, cudaGetErrorName(e), static_cast<int>(e), cudaGetErrorString(e));
  switch (e) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
      s += "; no usable CUDA device: train with --device cpu, or check the driver (nvidia-smi)";
      break;
    case cudaErrorMemoryAllocation:
      s += "; the GPU is out of memory: lower --batch-size (the dataset is held on the GPU too)";
      break;
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
      s += "; the binary has no code for this GPU: rebuild with -DCMAKE_CUDA_ARCHITECTURES=<its compute capability>";
      break;
    default:
      break;
  }
  return s;
}

std::string describe(cudnnStatus_t st, const char* call) {
  // cuDNN 9 keeps a thread-local detail of the last failure; it names the offending argument.
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof detail);
  std::string s = base(call, cudnnGetErrorString(st), static_cast<int>(st), detail);
  // cuDNN 9 codes are category * 1000 + sub-code; the category decides the hint.
  const int category = static_cast<int>(st) / 1000;
  if (category == CUDNN_STATUS_NOT_SUPPORTED / 1000)
    s += "; this cuDNN has no kernel for the combination (try --cuda-layout nchw, or another cuDNN)";
  else if (st == CUDNN_STATUS_NOT_INITIALIZED)
    s += "; cuDNN could not start: is a GPU present and is libcudnn's version matching the headers?";
  else if (category == CUDNN_STATUS_BAD_PARAM / 1000)
    s += "; an argument was rejected (a bug in the GPU trainer: please report the call)";
  return s;
}

std::string describe(cublasStatus_t st, const char* call) {
  std::string s = base(call, cublasGetStatusName(st), static_cast<int>(st), cublasGetStatusString(st));
  if (st == CUBLAS_STATUS_NOT_INITIALIZED) s += "; cuBLAS could not start: is a GPU present?";
  if (st == CUBLAS_STATUS_ALLOC_FAILED) s += "; the GPU is out of memory: lower --batch-size";
  return s;
}

void check(cudaError_t e, const char* call) {
  if (e != cudaSuccess) throw GpuError(Library::cuda, static_cast<int>(e), describe(e, call));
}

void check(cudnnStatus_t s, const char* call) {
  if (s != CUDNN_STATUS_SUCCESS) throw GpuError(Library::cudnn, static_cast<int>(s), describe(s, call));
}

void check(cublasStatus_t s, const char* call) {
  if (s != CUBLAS_STATUS_SUCCESS) throw GpuError(Library::cublas, static_cast<int>(s), describe(s, call));
}

void check_launch(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw GpuError(Library::cuda, static_cast<int>(e), describe(e, kernel));
}

}  // namespace resnet18::gpu
