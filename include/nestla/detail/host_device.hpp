// NESTLA_HOST_DEVICE: marks what runs both on the host and in CUDA kernels (the update rules, the syncs).
#pragma once

#if defined(__CUDACC__)
#define NESTLA_HOST_DEVICE __host__ __device__
#else
#define NESTLA_HOST_DEVICE
#endif
