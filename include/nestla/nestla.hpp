// nestla: header-only Lookahead and Nested Lookahead optimizers over your own tensors. Include this one header.
//
// Containers from the standard library work out of the box; include
// <nestla/eigen.hpp>, <nestla/xtensor.hpp> or <nestla/armadillo.hpp> for those
// libraries' tensors, <nestla/cuda.hpp> (with nvcc) for device memory, and
// <nestla/ensmallen.hpp> to use any optimizer where mlpack or ensmallen expect one.
#pragma once

#define NESTLA_VERSION_MAJOR 0
#define NESTLA_VERSION_MINOR 1
#define NESTLA_VERSION_PATCH 0

#include "nestla/adam.hpp"
#include "nestla/backend/host.hpp"
#include "nestla/error.hpp"
#include "nestla/huge_page_allocator.hpp"
#include "nestla/lookahead.hpp"
#include "nestla/optimizer.hpp"
#include "nestla/parameter_set.hpp"
#include "nestla/sgd.hpp"
#include "nestla/step_plan.hpp"
#include "nestla/tensor_traits.hpp"
