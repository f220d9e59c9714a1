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
/* How many bf16 copies ops have written beside their outputs so far (backend.h's
 * expect_bf16_copy with HYLA_COPIES_AT_SOURCE on; cuda_bf16_twins.cu), and whether it is on
 * (the switch or its default): for the tests. */
unsigned long hyla_cuda_copies_at_source(void);
int hyla_cuda_copies_at_source_on(void);

#ifdef __cplusplus
}

/* Inside the CUDA backend: bf16 products (cuda_gemm_bf16.cu). A dense bf16 copy of a row-major
 * [rows][cols] fp32 matrix with row stride ld (stream-ordered scratch: cudaFreeAsync it), and
 * row-major C = alpha op(A) op(B) + beta C from such copies, fp32 C and sums. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
__nv_bfloat16 *cuda_bf16_matrix(const float *src, int rows, int cols, int ld);
void cuda_gemm_bf16(cublasHandle_t handle, int trans_a, int trans_b, int m, int n, int k, float alpha,
                    const __nv_bfloat16 *a, const __nv_bfloat16 *b, float beta, float *c, int ldc);
/* Inside the CUDA backend (backend_cuda.cu): the process's cuBLAS handle (default stream);
 * whether an m x n x k product takes bf16 copies of its operands (bf16 mode, large, not
 * switched off by HYLA_GEMM_BF16_COPIES=0); the product on fp32 operands in the backend's
 * precision (cuBLAS rounds them itself in bf16 mode). */
cublasHandle_t cuda_cublas(void);
bool cuda_gemm_takes_copies(int m, int n, int k);
void cuda_gemm_fp32_operands(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                             const float *b, int ldb, float beta, float *c, int ldc);
/* Inside the CUDA backend: whether train.precision = bf16 is in force (set_matmul_precision). */
bool cuda_matmul_bf16(void);
/* Inside the CUDA backend: `batch` row-major products C_j = alpha op(A_j) op(B_j) + beta C_j,
 * A_j = a + j stride_a (and so on), in the backend's matmul precision (backend_cuda.cu). */
void cuda_gemm_batched(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                       long long stride_a, const float *b, int ldb, long long stride_b, float beta, float *c, int ldc,
                       long long stride_c, int batch);
/* Inside the CUDA backend: l2norm_bwd (cuda_gdn_parts.cu); dx may be dy. */
void cuda_l2norm_bwd(float *dx, const float *dy, const float *y, const float *rstd, int rows, int dim);
#endif

#endif
