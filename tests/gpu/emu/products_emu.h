// What kernels/cuda/cuda_linear.cu, cuda_mlp.cu and cuda_lm_head_ce.cu take from backend_cuda.h,
// for the CPU emulation (products_emu.cpp): cuBLAS stands in as plain loops, with the same
// contract (row-major C = alpha op(A) op(B) + beta C; bf16 products on bf16 copies in bf16
// mode, with an fp32 or a bf16 C), and a small threshold for taking copies so that small
// shapes exercise both paths.
#pragma once
#include "kernels/backend.h"

typedef void *cublasHandle_t;
extern bool emu_bf16; // train.precision = bf16 (set_matmul_precision)
inline cublasHandle_t cuda_cublas() { return nullptr; }
bool cuda_gemm_takes_copies(int m, int n, int k);
void cuda_gemm_fp32_operands(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                             const float *b, int ldb, float beta, float *c, int ldc);
__nv_bfloat16 *cuda_bf16_matrix(const float *src, int rows, int cols, int ld);
void cuda_gemm_bf16(cublasHandle_t handle, int trans_a, int trans_b, int m, int n, int k, float alpha,
                    const __nv_bfloat16 *a, const __nv_bfloat16 *b, float beta, float *c, int ldc);
// C in bf16, written (cuda_products.cuh): the fp32 sums of cuda_gemm_bf16, each rounded to nearest even.
void cuda_gemm_bf16_out(cublasHandle_t handle, int trans_a, int trans_b, int m, int n, int k, float alpha,
                        const __nv_bfloat16 *a, const __nv_bfloat16 *b, __nv_bfloat16 *c, int ldc);
