// CUDA: matrix products with bf16 operands for train.precision = bf16, where activations and
// gathered parameters are stored in fp32: dense bf16 copies of the operands and the product
// bf16 x bf16 -> fp32 on them (cuda_linear.cu decides which products take copies and shares
// them within an op). Handing cuBLAS the fp32 matrices with CUBLAS_COMPUTE_32F_FAST_16BF (it
// rounds the operands itself) ran far below the bf16 rate; with copies laLTE trained 21%
// faster on an H100 (2026-12-07). The rounding is the same round-to-nearest-even, so the
// results are those of the fused path up to the order of the sums.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include "backend_cuda.h"
#include "cuda_bf16_convert.cuh"
#include "cuda_check.h"

namespace {

// dst[r][c] = bf16(src[r * ld + c]) for a row-major [rows][cols] matrix inside a wider one.
__global__ void strided_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, int rows, int cols, long long ld) {
    const size_t count = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / cols, c = i % cols;
        dst[i] = __float2bfloat16(src[r * ld + c]);
    }
}
unsigned grid_for(size_t count) {
    const size_t blocks = (count + 255) / 256;
    return (unsigned)(blocks < 4096 ? (blocks ? blocks : 1) : 4096);
}

} // namespace

// A dense bf16 copy of a row-major [rows][cols] matrix with row stride ld (stream-ordered
// scratch, freed by the caller with cudaFreeAsync).
__nv_bfloat16 *cuda_bf16_matrix(const float *src, int rows, int cols, int ld) {
    __nv_bfloat16 *dst = NULL;
    const size_t count = (size_t)rows * cols;
    CUDA_CHECK(cudaMallocAsync((void **)&dst, count * sizeof(__nv_bfloat16), 0));
    if (ld == cols) {
        cuda_to_bf16(dst, src, count); // dense: vectorised (cuda_bf16_convert.cu)
        return dst;
    }
    strided_to_bf16_kernel<<<grid_for(count), 256>>>(dst, src, rows, cols, ld);
    CUDA_LAUNCH_CHECK();
    return dst;
}

// Row-major C = alpha op(A) op(B) + beta C from dense bf16 copies of A and B (their leading
// dimensions are their column counts), fp32 C and sums (the column-major call computes
// C^T = op(B)^T op(A)^T).
void cuda_gemm_bf16(cublasHandle_t handle, int trans_a, int trans_b, int m, int n, int k, float alpha,
                    const __nv_bfloat16 *a, const __nv_bfloat16 *b, float beta, float *c, int ldc) {
    const int a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
    CUBLAS_CHECK(cublasGemmEx(handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m,
                              k, &alpha, b, CUDA_R_16BF, b_cols, a, CUDA_R_16BF, a_cols, &beta, c, CUDA_R_32F, ldc,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The same product written to a bf16 C (declared in cuda_products.cuh): fp32 sums, each output
// rounded once to bf16 (round to nearest even) as cuBLAS stores it, nothing added onto C (beta
// 0). For outputs that only bf16-reading kernels consume (the MLP's gate, up and dz with
// HYLA_MLP_BF16_ACTS, cuda_mlp.cu): half the write, and half the read behind it.
void cuda_gemm_bf16_out(cublasHandle_t handle, int trans_a, int trans_b, int m, int n, int k, float alpha,
                        const __nv_bfloat16 *a, const __nv_bfloat16 *b, __nv_bfloat16 *c, int ldc) {
    const int a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
    const float beta = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m,
                              k, &alpha, b, CUDA_R_16BF, b_cols, a, CUDA_R_16BF, a_cols, &beta, c, CUDA_R_16BF, ldc,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
