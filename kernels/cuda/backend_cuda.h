/* The CUDA backend (fp32 for now): the same table as the CPU backend, device pointers. */
#ifndef HYLA_BACKEND_CUDA_H
#define HYLA_BACKEND_CUDA_H

#include "../backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The table; ops not yet implemented on the GPU are NULL (hyla_backend_cuda_missing). */
const struct hyla_backend *hyla_backend_cuda(void);
/* Names of the table's ops that are still NULL; returns how many (writes at most capacity). */
int hyla_backend_cuda_missing(const char **names, int capacity);
/* A copy of `base` that times every op (synchronised) and prints the totals to stderr at
 * exit (kernels/cuda/cuda_profile.cu); used when HYLA_PROFILE_OPS=1. */
const struct hyla_backend *hyla_backend_profiled(const struct hyla_backend *base);

#ifdef __cplusplus
}
#endif

#endif
