// CUDA: matrix products (the table's gemm), linear layers and projections of one input, with
// the CPU twins' semantics (kernels/cpu/op_linear.c); SwiGLU and the MLP are in cuda_mlp.cu.
//
// In bf16 mode a large product runs on bf16 copies of its operands (cuda_gemm_bf16.cu), and
// making a copy costs a pass over an fp32 activation (45 µs for [16384 x 1024] on an H100):
// 14% of a laLTE step when every product copied its own operands (Nsight Compute,
// 2026-12-07). So each op keeps its copies (op_copies) and every product of the op that reads
// the same operand reuses the copy: a linear backward's dy feeds dx and dW, an MLP's input
// feeds the gate and up projections, projections_fwd / _bwd's input feeds all of q, k, v.
// On by default since its GPU run (H100, 2026-12-07, docs/gpu-runs/2026-12-07c-h100/);
// HYLA_GEMM_SHARED_COPIES=0 makes every product make its own copies and free them after it.
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_column_sum.cuh"
#include "cuda_products.cuh"
#include "cuda_switch.h"

namespace {

// ---- linear -------------------------------------------------------------------------------
__global__ void add_bias_kernel(float *y, const float *b, int n, int out) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < (size_t)n * out) y[i] += b[i % out];
}
// The bias gradient: a column sum of dy over the rows, in parallel over row blocks.
struct bias_grad_term {
    const float *dy;
    int out;
    __device__ float operator()(int row, int col) const { return dy[(size_t)row * out + col]; }
};

} // namespace

namespace products {

constexpr bool SHARED_BY_DEFAULT = true;
bool shared_copies() {
    static const bool on = cuda_switch("HYLA_GEMM_SHARED_COPIES", SHARED_BY_DEFAULT);
    return on;
}

// Row-major C = alpha op(A) op(B) + beta C (cuda_products.cuh).
void gemm_h(op_copies &op, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
            const __nv_bfloat16 *a_h, const float *b, int ldb, const __nv_bfloat16 *b_h, float beta, float *c, int ldc) {
    op_copies own;
    op_copies &copies = shared_copies() ? op : own;
    if (!a_h) a_h = copies.of(a, ta ? k : m, ta ? m : k, lda);
    if (!b_h) b_h = copies.of(b, tb ? n : k, tb ? k : n, ldb);
    cuda_gemm_bf16(cuda_cublas(), ta, tb, m, n, k, alpha, a_h, b_h, beta, c, ldc);
}
// HYLA_GEMM_THIN_TWINS=1: a product below the copies' threshold (the delta rule's gate
// projections, 1024 -> 8: bound by reading their wide operand) takes bf16 operands anyway where
// one of them already has a bf16 twin (h, held by the model; a weight in its FSDP unit) and the
// other is small enough to copy (at most THIN_COPY_MAX values, e.g. [16384 x 8]): the twin
// reads half the bytes of the fp32 values. The same rounding (to nearest even) as cuBLAS's
// own in bf16 mode. On by default since its H100 run (2026-12-07 ~22:25,
// docs/gpu-runs/2026-12-07l-h100: laLTE 191.3 -> 191.1 ms a step alone).
constexpr bool THIN_BY_DEFAULT = true;
constexpr size_t THIN_COPY_MAX = 1u << 20;
bool thin_twins_wanted() {
    static const bool on = cuda_switch("HYLA_GEMM_THIN_TWINS", THIN_BY_DEFAULT);
    return on;
}
// The values a row-major [rows][cols] operand with row stride ld spans.
size_t extent(int rows, int cols, int ld) { return rows > 0 && cols > 0 ? (size_t)(rows - 1) * ld + cols : 0; }
bool thin_reads_twin(int ta, int tb, int m, int n, int k, const float *a, int lda, const float *b, int ldb) {
    if (!cuda_matmul_bf16() || !thin_twins_wanted()) return false;
    const size_t ea = extent(ta ? k : m, ta ? m : k, lda), eb = extent(tb ? n : k, tb ? k : n, ldb);
    const bool twin_a = cuda_bf16_twin_of(a, ea) != nullptr, twin_b = cuda_bf16_twin_of(b, eb) != nullptr;
    return (twin_a || twin_b) && (twin_a || ea <= THIN_COPY_MAX) && (twin_b || eb <= THIN_COPY_MAX);
}

void gemm(op_copies &op, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
          int ldb, float beta, float *c, int ldc) {
    if (cuda_gemm_takes_copies(m, n, k) || thin_reads_twin(ta, tb, m, n, k, a, lda, b, ldb))
        gemm_h(op, ta, tb, m, n, k, alpha, a, lda, nullptr, b, ldb, nullptr, beta, c, ldc);
    else cuda_gemm_fp32_operands(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void linear_fwd(op_copies &copies, float *y, const float *x, const float *w, const float *b, int n, int in,
                int out) {
    gemm(copies, 0, 1, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
    if (!b) return;
    add_bias_kernel<<<blocks_for((size_t)n * out, 256), 256>>>(y, b, n, out);
    CUDA_LAUNCH_CHECK();
}
// dx = dy W (or += when accumulate; none when dx is NULL); dw += dy^T x; db += column sums of dy.
void linear_bwd(op_copies &copies, float *dx, bool accumulate, float *dw, float *db, const float *dy,
                const float *x, const float *w, int n, int in, int out) {
    if (dx) gemm(copies, 0, 0, n, in, out, 1.0f, dy, out, w, in, accumulate ? 1.0f : 0.0f, dx, in);
    gemm(copies, 1, 0, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
    if (!db) return;
    column_sum_add(db, n, out, bias_grad_term{dy, out});
}

} // namespace products

using namespace products;
namespace {

void cuda_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
               float beta, float *c, int ldc) {
    op_copies copies;
    gemm(copies, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cuda_linear_fwd(float *y, const float *x, const float *w, const float *b, int n, int in, int out) {
    op_copies copies;
    linear_fwd(copies, y, x, w, b, n, in, out);
}
void cuda_linear_bwd(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int n, int in,
                     int out) {
    op_copies copies;
    linear_bwd(copies, dx, false, dw, db, dy, x, w, n, in, out);
}
void cuda_linear_bwd_accumulate(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                                int n, int in, int out) {
    op_copies copies;
    linear_bwd(copies, dx, true, dw, db, dy, x, w, n, in, out);
}
void cuda_projections_fwd(int count, float *const *ys, const float *x, const float *const *ws, const int *outs,
                          int n, int in) {
    op_copies copies;
    for (int i = 0; i < count; i++) linear_fwd(copies, ys[i], x, ws[i], NULL, n, in, outs[i]);
}
void cuda_projections_bwd(int count, float *dx, int accumulate, float *const *dws, const float *const *dys,
                          const float *x, const float *const *ws, const int *outs, int n, int in) {
    op_copies copies;
    for (int i = 0; i < count; i++)
        linear_bwd(copies, dx, accumulate || i > 0, dws[i], NULL, dys[i], x, ws[i], n, in, outs[i]);
}

} // namespace

extern "C" void cuda_register_linear(struct hyla_backend *t) {
    t->gemm = cuda_gemm;
    t->linear_fwd = cuda_linear_fwd, t->linear_bwd = cuda_linear_bwd;
    t->linear_bwd_accumulate = cuda_linear_bwd_accumulate;
    t->projections_fwd = cuda_projections_fwd, t->projections_bwd = cuda_projections_bwd;
}
