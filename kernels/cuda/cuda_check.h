// Checked CUDA / cuBLAS calls: a failure names the call, the cause and where.
#ifndef HYLA_CUDA_CHECK_H
#define HYLA_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CUDA_CHECK(call)                                                                                   \
    do {                                                                                                   \
        cudaError_t e_ = (call);                                                                           \
        if (e_ != cudaSuccess) {                                                                           \
            fprintf(stderr, "hyla: error: %s failed at %s:%d: %s; check the GPU and the driver\n", #call,  \
                    __FILE__, __LINE__, cudaGetErrorString(e_));                                            \
            exit(1);                                                                                       \
        }                                                                                                  \
    } while (0)

#define CUBLAS_CHECK(call)                                                                                 \
    do {                                                                                                   \
        cublasStatus_t s_ = (call);                                                                        \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                 \
            fprintf(stderr, "hyla: error: %s failed at %s:%d: cuBLAS status %d\n", #call, __FILE__,        \
                    __LINE__, (int)s_);                                                                    \
            exit(1);                                                                                       \
        }                                                                                                  \
    } while (0)

// Launch-time errors (bad configuration) surface here; execution errors at the next sync.
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

static inline unsigned blocks_for(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

#endif
