// nestla on CUDA: include this (compiled by nvcc) for optimizers whose parameters, gradients and state live in device memory.
//
//   nestla::Adam<float, nestla::cuda::device> opt;
//   std::vector<nestla::cuda::device_span<float>> params = ..., grads = ...;
//   opt.base().context().stream = stream;   // optional: the stream steps run on
//   opt.step(params, grads);                // one kernel launch, no wait for the GPU
#pragma once

#include "nestla/nestla.hpp"

#include "nestla/cuda/backend.hpp"
#include "nestla/cuda/device_buffer.hpp"
#include "nestla/cuda/device_span.hpp"
#include "nestla/cuda/error.hpp"
