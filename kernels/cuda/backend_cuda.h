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

/* Inside the CUDA backend: a product with both operands rounded to bf16 copies first and fp32
 * sums (cuda_gemm_bf16.cu; cuda_gemm's contract), for large products in bf16 mode. */
#include <cublas_v2.h>
void cuda_gemm_bf16_operands(cublasHandle_t handle, int trans_a, int trans_b, int m, int n, int k, float alpha,
                             const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
/* Inside the CUDA backend: whether train.precision = bf16 is in force (set_matmul_precision). */
bool cuda_matmul_bf16(void);
/* Inside the CUDA backend: `batch` row-major products C_j = alpha op(A_j) op(B_j) + beta C_j,
 * A_j = a + j stride_a (and so on), in the backend's matmul precision (backend_cuda.cu). */
void cuda_gemm_batched(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                       long long stride_a, const float *b, int ldb, long long stride_b, float beta, float *c, int ldc,
                       long long stride_c, int batch);
#endif

#endif
