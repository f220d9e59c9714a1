// CUDA: matrix products (the table's gemm), linear layers, projections of one input, SwiGLU
// and the SwiGLU MLP, with the CPU twins' semantics (kernels/cpu/op_linear.c).
//
// In bf16 mode a large product runs on bf16 copies of its operands (cuda_gemm_bf16.cu), and
// making a copy costs a pass over an fp32 activation (45 µs for [16384 x 1024] on an H100):
// 14% of a laLTE step when every product copied its own operands (Nsight Compute,
// 2026-12-07). So each op keeps its copies (op_copies) and every product of the op that reads
// the same operand reuses the copy: a linear backward's dy feeds dx and dW, an MLP's input
// feeds the gate and up projections, projections_fwd / _bwd's input feeds all of q, k, v.
// Switched off until a GPU run has checked it (SHARED_BY_DEFAULT; HYLA_GEMM_SHARED_COPIES=1
// switches it on): until then every product makes its own copies and frees them after it.
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_column_sum.cuh"

namespace {

constexpr bool SHARED_BY_DEFAULT = false;
bool shared_copies() {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("HYLA_GEMM_SHARED_COPIES");
        on = e && *e ? atoi(e) != 0 : SHARED_BY_DEFAULT;
    }
    return on;
}

// The bf16 copies one op has made, each of a row-major [rows][cols] matrix with row stride ld
// at src; freed (in stream order, after the products queued before) when the op returns. An
// op must not write an operand after copying it: its copies live for the op's duration only.
class op_copies {
    struct copy {
        const float *src;
        int rows, cols, ld;
        __nv_bfloat16 *h;
    };
    enum { MAX = 16 };
    copy list[MAX];
    int n = 0;

  public:
    op_copies() = default;
    op_copies(const op_copies &) = delete;
    op_copies &operator=(const op_copies &) = delete;
    const __nv_bfloat16 *of(const float *src, int rows, int cols, int ld) {
        for (int i = 0; i < n; i++)
            if (list[i].src == src && list[i].rows == rows && list[i].cols == cols && list[i].ld == ld)
                return list[i].h;
        __nv_bfloat16 *h = cuda_bf16_matrix(src, rows, cols, ld);
        if (n == MAX) { // more operands than any op has: the last copy makes room (freed in stream order)
            CUDA_CHECK(cudaFreeAsync(list[MAX - 1].h, 0));
            n--;
        }
        list[n++] = copy{src, rows, cols, ld, h};
        return h;
    }
    ~op_copies() {
        for (int i = 0; i < n; i++) CUDA_CHECK(cudaFreeAsync(list[i].h, 0));
    }
};

// Row-major C = alpha op(A) op(B) + beta C: from bf16 copies where the shape takes them — the
// op's (shared_copies) or the product's own, freed right after it — else cuBLAS on the fp32
// operands in the backend's precision.
void gemm(op_copies &op, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
          int ldb, float beta, float *c, int ldc) {
    if (!cuda_gemm_takes_copies(m, n, k)) {
        cuda_gemm_fp32_operands(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    op_copies own;
    op_copies &copies = shared_copies() ? op : own;
    const __nv_bfloat16 *ah = copies.of(a, ta ? k : m, ta ? m : k, lda), *bh = copies.of(b, tb ? n : k, tb ? k : n, ldb);
    cuda_gemm_bf16(cuda_cublas(), ta, tb, m, n, k, alpha, ah, bh, beta, c, ldc);
}

void cuda_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
               float beta, float *c, int ldc) {
    op_copies copies;
    gemm(copies, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

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

// ---- SwiGLU and the MLP ---------------------------------------------------------------------
__device__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void swiglu_fwd_kernel(float *z, const float *gate, const float *up, size_t count) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < count) z[i] = gate[i] * sigmoidf_(gate[i]) * up[i];
}
__global__ void swiglu_bwd_kernel(float *dgate, float *dup, const float *dz, const float *gate, const float *up,
                                  size_t count) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= count) return;
    float d = dz[i], g = gate[i], s = sigmoidf_(g);
    dup[i] = d * g * s;
    dgate[i] = d * up[i] * s * (1.0f + g * (1.0f - s));
}
void cuda_swiglu_fwd(float *z, const float *gate, const float *up, size_t count) {
    swiglu_fwd_kernel<<<blocks_for(count, 256), 256>>>(z, gate, up, count);
    CUDA_LAUNCH_CHECK();
}
void cuda_swiglu_bwd(float *dgate, float *dup, const float *dz, const float *gate, const float *up, size_t count) {
    swiglu_bwd_kernel<<<blocks_for(count, 256), 256>>>(dgate, dup, dz, gate, up, count);
    CUDA_LAUNCH_CHECK();
}
// acts = [gate | up | z], each [n, inter]; x copied once for the gate and up projections. The
// down projection adds onto the residual (copied into y first unless y is it): one pass fewer
// than a separate sum, and the block needs no buffer for the MLP's own output.
void cuda_mlp_fwd(float *y, float *acts, const float *x, const float *residual, const float *wg, const float *wu,
                  const float *wd, int n, int dim, int inter) {
    const size_t size = (size_t)n * inter;
    op_copies copies;
    linear_fwd(copies, acts, x, wg, NULL, n, dim, inter);
    linear_fwd(copies, acts + size, x, wu, NULL, n, dim, inter);
    cuda_swiglu_fwd(acts + 2 * size, acts, acts + size, size);
    if (residual && residual != y)
        CUDA_CHECK(cudaMemcpyAsync(y, residual, (size_t)n * dim * sizeof(float), cudaMemcpyDeviceToDevice, 0));
    gemm(copies, 0, 1, n, dim, inter, 1.0f, acts + 2 * size, inter, wd, inter, residual ? 1.0f : 0.0f, y, dim);
}
// dy copied once for dz and dW_down, x once for dW_gate and dW_up, dz (after the SwiGLU
// backward has written it in place: not copied before) and dup once each.
void cuda_mlp_bwd(float *dx, float *dwg, float *dwu, float *dwd, const float *dy, const float *x, const float *acts,
                  const float *wg, const float *wu, const float *wd, float *scratch, int n, int dim, int inter) {
    const size_t size = (size_t)n * inter;
    float *dz = scratch, *dup = scratch + size;
    op_copies copies;
    linear_bwd(copies, dz, false, dwd, NULL, dy, acts + 2 * size, wd, n, inter, dim);
    cuda_swiglu_bwd(dz, dup, dz, acts, acts + size, size);
    linear_bwd(copies, dx, false, dwg, NULL, dz, x, wg, n, dim, inter);
    linear_bwd(copies, dx, true, dwu, NULL, dup, x, wu, n, dim, inter);
}

} // namespace

extern "C" void cuda_register_linear(struct hyla_backend *t) {
    t->gemm = cuda_gemm;
    t->linear_fwd = cuda_linear_fwd, t->linear_bwd = cuda_linear_bwd;
    t->linear_bwd_accumulate = cuda_linear_bwd_accumulate;
    t->projections_fwd = cuda_projections_fwd, t->projections_bwd = cuda_projections_bwd;
    t->swiglu_fwd = cuda_swiglu_fwd, t->swiglu_bwd = cuda_swiglu_bwd;
    t->mlp_fwd = cuda_mlp_fwd, t->mlp_bwd = cuda_mlp_bwd;
}
