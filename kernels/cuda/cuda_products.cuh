// CUDA, inside the backend: the products of one op (cuda_linear.cu, cuda_mlp.cu, cuda_lm_head_ce.cu) and the bf16
// copies of their operands that the op's products share (op_copies; why: cuda_linear.cu).
#ifndef HYLA_CUDA_PRODUCTS_CUH
#define HYLA_CUDA_PRODUCTS_CUH

#include <cuda_bf16.h>

#include <vector>

#include "backend_cuda.h"
#include "cuda_bf16_convert.cuh"
#include "cuda_check.h"

// Row-major C = alpha op(A) op(B) from dense bf16 copies as cuda_gemm_bf16 (backend_cuda.h), but
// C in bf16: fp32 sums, each output rounded once to nearest even, C written (no beta)
// (cuda_gemm_bf16.cu).
void cuda_gemm_bf16_out(cublasHandle_t handle, int trans_a, int trans_b, int m, int n, int k, float alpha,
                        const __nv_bfloat16 *a, const __nv_bfloat16 *b, __nv_bfloat16 *c, int ldc);

// Row-major D = alpha op(A) op(B) + beta C with fp32 C and D apart (same shape, row stride ldd),
// from dense bf16 A and B (cuBLASLt, cuda_gemm_lt.cu): a product onto a matrix it must not
// overwrite, without copying that matrix into D first.
void cuda_gemm_bf16_onto(int trans_a, int trans_b, int m, int n, int k, float alpha, const __nv_bfloat16 *a,
                         const __nv_bfloat16 *b, float beta, const float *c, float *d, int ldd);

namespace products {

// The bf16 copies one op has made, each of a row-major [rows][cols] matrix with row stride ld
// at src; freed (in stream order, after the products queued before) when the op returns. An
// op must not write an operand after copying it: its copies live for the op's duration only.
class op_copies {
    struct copy {
        const float *src;
        int rows, cols, ld;
        __nv_bfloat16 *h;
    };
    std::vector<copy> list; // every copy lives to the op's end: one a product uses is never freed under it

  public:
    op_copies() = default;
    op_copies(const op_copies &) = delete;
    op_copies &operator=(const op_copies &) = delete;
    const __nv_bfloat16 *of(const float *src, int rows, int cols, int ld) {
        for (const copy &c : list)
            if (c.src == src && c.rows == rows && c.cols == cols && c.ld == ld) return c.h;
        if (rows > 0 && cols > 0)
            if (const __nv_bfloat16 *twin = cuda_bf16_twin_of(src, (size_t)(rows - 1) * ld + cols)) return twin;
        list.push_back(copy{src, rows, cols, ld, cuda_bf16_matrix(src, rows, cols, ld)});
        return list.back().h;
    }
    ~op_copies() {
        for (const copy &c : list) CUDA_CHECK(cudaFreeAsync(c.h, 0));
    }
};

// Whether an op's products share its copies (HYLA_GEMM_SHARED_COPIES; cuda_linear.cu).
bool shared_copies();

// Row-major C = alpha op(A) op(B) + beta C: from bf16 copies where the shape takes them — the
// op's (shared_copies) or the product's own, freed right after it — else cuBLAS on the fp32
// operands in the backend's precision.
void gemm(op_copies &op, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
          int ldb, float beta, float *c, int ldc);
// The same where the shape takes copies (cuda_gemm_takes_copies, checked by the caller), with
// either operand given as a dense bf16 matrix an op's kernel wrote itself (a_h / b_h; the fp32
// pointer is then unused): no copy for it.
void gemm_h(op_copies &op, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
            const __nv_bfloat16 *a_h, const float *b, int ldb, const __nv_bfloat16 *b_h, float beta, float *c, int ldc);
// y = x W^T (+ b); dx = dy W (or += when accumulate; none when dx is NULL), dw += dy^T x,
// db += column sums of dy.
void linear_fwd(op_copies &copies, float *y, const float *x, const float *w, const float *b, int n, int in, int out);
void linear_bwd(op_copies &copies, float *dx, bool accumulate, float *dw, float *db, const float *dy, const float *x,
                const float *w, int n, int in, int out);

} // namespace products

#endif
