// CUDA: RMSNorm and the fused residual add + RMSNorm (MODEL.md §1.1), with the CPU twin's
// semantics (kernels/cpu/op_norm.c). Memory-bound: a row is read once into registers, its sum
// of squares reduced there, and written once. A row group of 32 to 256 threads owns a row,
// each thread ITEMS units of W floats (W = 4: float4 accesses where the width is a multiple of
// 4 and the pointers aligned; W = 1 otherwise), unit j of a thread being j * group + (its place
// in the group), so every load of the group is coalesced. Rows wider than the registers hold
// (more than 2048 units) take a block per row that reads the row twice. Sums are per thread in
// unit order, then a fixed shuffle tree, then the group's warps in order: the same bits every
// run. The weight gradient is a column sum in a fixed order (cuda_column_sum.cuh): a second pass
// over dy and x, or (HYLA_NORM_FUSED_DW=1) partial sums added by the dx row kernel itself.
// Where the model holds the output (the forward's y, the backward's dx: backend.h's
// expect_bf16_copy), the kernels write its bf16 copy beside it (y_h, dx_h; NULL: none).
#include "backend_cuda.h"
#include "cuda_bf16_convert.cuh"
#include "cuda_check.h"
#include "cuda_column_sum.cuh"
#include "cuda_reduce.cuh"
#include "cuda_vec.cuh"

enum { THREADS = 256, MAX_ITEMS = 8 };

__device__ static inline float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v; // the same bits in every lane
}
// The sum of v over this thread's row group (group: 32, 64, 128 or 256 threads, the same for
// the whole block, so every thread of the block reaches the barriers).
__device__ static float group_sum(float v, int group, float *warp_sums) {
    v = warp_sum(v);
    if (group == 32) return v;
    __syncthreads(); // warp_sums may still be read by an earlier call
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
    __syncthreads();
    const int first = threadIdx.x / group * (group / 32);
    float s = 0;
    for (int k = 0; k < group / 32; k++) s += warp_sums[first + k];
    return s;
}

// The row group's shape for a row of `units` units: the smallest group whose threads need at
// most 4 units each (registers for more rows in flight), else 256 threads with up to
// MAX_ITEMS; items 0: too wide for the registers.
struct row_shape {
    int group, items;
};
static row_shape row_shape_for(int units) {
    int group = 32;
    while (group < THREADS && (units + group - 1) / group > 4) group *= 2;
    int items = (units + group - 1) / group;
    if (items == 0) items = 1;
    if (items > 4 && items <= MAX_ITEMS) items = MAX_ITEMS; // instantiated: 1, 2, 3, 4, 8
    return {group, items > MAX_ITEMS ? 0 : items};
}
static unsigned group_blocks(int n, int group) {
    const int rows_per_block = THREADS / group;
    return (unsigned)((n + rows_per_block - 1) / rows_per_block);
}

// ---- forward: y = v r w, r = 1 / sqrt(mean(v^2) + eps), v = x (+ residual, written to sum) --------
template <int ITEMS, int W>
__global__ void rmsnorm_fwd_rows_kernel(float *sum, float *y, __nv_bfloat16 *y_h, float *rstd, const float *x,
                                        const float *residual, const float *w, int n, int dim, int group, float eps) {
    __shared__ float warp_sums[THREADS / 32];
    const int g = threadIdx.x % group, units = dim / W;
    const int row = blockIdx.x * (THREADS / group) + threadIdx.x / group;
    const bool live = row < n; // rows past n still reach group_sum's barriers
    const size_t off = live ? (size_t)row * dim : 0;
    floats<W> v[ITEMS];
    float ss = 0;
#pragma unroll
    for (int j = 0; j < ITEMS; j++) {
        const int u = j * group + g;
        v[j] = zero_unit<W>();
        if (!live || u >= units) continue;
        v[j] = load_unit<W>(x + off, u);
        if (residual) {
            const floats<W> b = load_unit<W>(residual + off, u);
#pragma unroll
            for (int k = 0; k < W; k++) v[j].v[k] += b.v[k];
            store_unit<W>(sum + off, u, v[j]);
        }
#pragma unroll
        for (int k = 0; k < W; k++) ss += v[j].v[k] * v[j].v[k];
    }
    const float r = rsqrtf(group_sum(ss, group, warp_sums) / dim + eps);
    if (!live) return;
    if (g == 0) rstd[row] = r;
#pragma unroll
    for (int j = 0; j < ITEMS; j++) {
        const int u = j * group + g;
        if (u >= units) continue;
        const floats<W> wu = load_unit<W>(w, u);
        floats<W> o;
#pragma unroll
        for (int k = 0; k < W; k++) o.v[k] = v[j].v[k] * r * wu.v[k];
        store_unit<W>(y + off, u, o);
        if (y_h) store_unit_bf16<W>(y_h + off, u, o);
    }
}

// Wide rows: one block per row, the row read twice (sum: x + residual written first).
__global__ void rmsnorm_fwd_kernel(float *sum, float *y, __nv_bfloat16 *y_h, float *rstd, const float *x,
                                   const float *residual, const float *w, int dim, float eps) {
    __shared__ float shared[THREADS];
    const size_t off = (size_t)blockIdx.x * dim;
    float ss = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = residual ? x[off + i] + residual[off + i] : x[off + i];
        if (sum) sum[off + i] = v;
        ss += v * v;
    }
    const float r = rsqrtf(block_sum(ss, shared) / dim + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = residual ? x[off + i] + residual[off + i] : x[off + i];
        y[off + i] = v * r * w[i];
        if (y_h) y_h[off + i] = __float2bfloat16(y[off + i]);
    }
}

template <int I, int W>
static void fwd_rows(int group, float *sum, float *y, __nv_bfloat16 *y_h, float *rstd, const float *x,
                     const float *residual, const float *w, int n, int dim, float eps) {
    rmsnorm_fwd_rows_kernel<I, W><<<group_blocks(n, group), THREADS>>>(sum, y, y_h, rstd, x, residual, w, n, dim,
                                                                        group, eps);
    CUDA_LAUNCH_CHECK();
}
// The instantiation for s.items.
template <int W>
static void fwd_rows(const row_shape &s, float *sum, float *y, __nv_bfloat16 *y_h, float *rstd, const float *x,
                     const float *residual, const float *w, int n, int dim, float eps) {
    auto *f = s.items == 1   ? fwd_rows<1, W>
              : s.items == 2 ? fwd_rows<2, W>
              : s.items == 3 ? fwd_rows<3, W>
              : s.items == 4 ? fwd_rows<4, W>
                             : fwd_rows<MAX_ITEMS, W>;
    f(s.group, sum, y, y_h, rstd, x, residual, w, n, dim, eps);
}
static void rmsnorm_fwd(float *sum, float *y, float *rstd, const float *x, const float *residual, const float *w, int n,
                        int dim, float eps) {
    if (n <= 0) return; // an empty grid is a launch error
    __nv_bfloat16 *y_h = cuda_bf16_copy_target(y, (size_t)n * dim);
    const bool vec4 = dim % 4 == 0 && aligned16(sum) && aligned16(y) && aligned16(x) && aligned16(residual) &&
                      aligned16(w) && aligned8(y_h);
    const row_shape s = row_shape_for(vec4 ? dim / 4 : dim);
    if (s.items == 0) {
        rmsnorm_fwd_kernel<<<n, THREADS>>>(sum, y, y_h, rstd, x, residual, w, dim, eps);
        CUDA_LAUNCH_CHECK();
    } else if (vec4) fwd_rows<4>(s, sum, y, y_h, rstd, x, residual, w, n, dim, eps);
    else fwd_rows<1>(s, sum, y, y_h, rstd, x, residual, w, n, dim, eps);
}
static void cuda_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int n, int dim, float eps) {
    rmsnorm_fwd(NULL, y, rstd, x, NULL, w, n, dim, eps);
}
static void cuda_add_rmsnorm_fwd(float *sum, float *y, float *rstd, const float *x, const float *residual,
                                 const float *w, int n, int dim, float eps) {
    rmsnorm_fwd(sum, y, rstd, x, residual, w, n, dim, eps);
}

// ---- backward: dx = r (dy w - xh mean(dy w xh)) (+ dsum), xh = x r -----------------------------
// dsum's unit is read before dx's is written, by the same thread: dx may alias dsum. It is
// loaded with dy and x, before the row's sum: one wait for memory a row, not two (the kernel
// is bound by the bytes it has in flight).
// One row's dx by its row group (rows past n: only group_sum's barriers); with DW, its weight
// gradient terms dy x r (the CPU twin's rmsnorm_dweight term) added into acc, the thread's
// own columns, as the loads arrive.
template <int ITEMS, int W, bool DW>
__device__ static void dx_row(float *dx, __nv_bfloat16 *dx_h, const float *dy, const float *x, const float *w,
                              const float *rstd, const float *dsum, int n, int dim, int group, int row,
                              floats<W> *acc, float *warp_sums) {
    const int g = threadIdx.x % group, units = dim / W;
    const bool live = row < n;
    const size_t off = live ? (size_t)row * dim : 0;
    const float r = live ? rstd[row] : 0;
    floats<W> dyv[ITEMS], xv[ITEMS], dsv[ITEMS];
    float c = 0;
#pragma unroll
    for (int j = 0; j < ITEMS; j++) {
        const int u = j * group + g;
        dyv[j] = xv[j] = dsv[j] = zero_unit<W>();
        if (!live || u >= units) continue;
        dyv[j] = load_unit<W>(dy + off, u), xv[j] = load_unit<W>(x + off, u);
        if (dsum) dsv[j] = load_unit<W>(dsum + off, u);
        const floats<W> wu = load_unit<W>(w, u);
#pragma unroll
        for (int k = 0; k < W; k++) {
            c += dyv[j].v[k] * wu.v[k] * xv[j].v[k] * r;
            if (DW) acc[j].v[k] += dyv[j].v[k] * xv[j].v[k] * r;
        }
    }
    c = group_sum(c, group, warp_sums) / dim;
    if (!live) return;
#pragma unroll
    for (int j = 0; j < ITEMS; j++) {
        const int u = j * group + g;
        if (u >= units) continue;
        const floats<W> wu = load_unit<W>(w, u);
        floats<W> o;
#pragma unroll
        for (int k = 0; k < W; k++) {
            const float gk = r * (dyv[j].v[k] * wu.v[k] - xv[j].v[k] * r * c);
            o.v[k] = dsum ? dsv[j].v[k] + gk : gk;
        }
        store_unit<W>(dx + off, u, o);
        if (dx_h) store_unit_bf16<W>(dx_h + off, u, o);
    }
}
template <int ITEMS, int W>
__global__ void rmsnorm_dx_rows_kernel(float *dx, __nv_bfloat16 *dx_h, const float *dy, const float *x, const float *w,
                                       const float *rstd, const float *dsum, int n, int dim, int group) {
    __shared__ float warp_sums[THREADS / 32];
    const int row = blockIdx.x * (THREADS / group) + threadIdx.x / group;
    dx_row<ITEMS, W, false>(dx, dx_h, dy, x, w, rstd, dsum, n, dim, group, row, NULL, warp_sums);
}
// dx as above, and the weight gradient's partial sums (HYLA_NORM_FUSED_DW, cuda_column_sum.cuh):
// the grid (a function of the shape) strides over blocks of rows, each row group summing the
// rows it takes in registers; then the block's row groups in order into partial row blockIdx.x.
// Every thread takes the same number of steps: the barriers match.
template <int ITEMS, int W>
__global__ void rmsnorm_dx_dw_rows_kernel(float *partial, float *dx, __nv_bfloat16 *dx_h, const float *dy,
                                          const float *x, const float *w, const float *rstd, const float *dsum, int n,
                                          int dim, int group, int steps) {
    __shared__ float warp_sums[THREADS / 32];
    extern __shared__ float cols[]; // THREADS / group rows of dim: the row groups' sums
    const int per_block = THREADS / group;
    floats<W> acc[ITEMS];
#pragma unroll
    for (int j = 0; j < ITEMS; j++) acc[j] = zero_unit<W>();
    for (int step = 0; step < steps; step++) {
        const int row = (step * gridDim.x + blockIdx.x) * per_block + threadIdx.x / group;
        dx_row<ITEMS, W, true>(dx, dx_h, dy, x, w, rstd, dsum, n, dim, group, row, acc, warp_sums);
    }
    column_sum::block_partial<ITEMS, W>(partial + (size_t)blockIdx.x * dim, acc, cols, dim, group);
}

// Wide rows: one block per row.
__global__ void rmsnorm_dx_kernel(float *dx, __nv_bfloat16 *dx_h, const float *dy, const float *x, const float *w,
                                  const float *rstd, const float *dsum, int dim) {
    __shared__ float shared[THREADS];
    const size_t off = (size_t)blockIdx.x * dim;
    const float r = rstd[blockIdx.x];
    float c = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) c += dy[off + i] * w[i] * x[off + i] * r;
    c = block_sum(c, shared) / dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float g = r * (dy[off + i] * w[i] - x[off + i] * r * c);
        const float o = dsum ? dsum[off + i] + g : g;
        dx[off + i] = o;
        if (dx_h) dx_h[off + i] = __float2bfloat16(o);
    }
}

// dw: NULL, dx only; else dx and dw += the weight gradient (rmsnorm_dx_dw_rows_kernel).
template <int I, int W>
static void dx_rows(int group, float *dx, __nv_bfloat16 *dx_h, float *dw, const float *dy, const float *x,
                    const float *w, const float *rstd, const float *dsum, int n, int dim) {
    if (!dw) {
        rmsnorm_dx_rows_kernel<I, W><<<group_blocks(n, group), THREADS>>>(dx, dx_h, dy, x, w, rstd, dsum, n, dim,
                                                                           group);
        CUDA_LAUNCH_CHECK();
        return;
    }
    const int per_block = THREADS / group;
    const unsigned blocks = column_sum::fused_blocks(n, per_block);
    const int steps = (int)((group_blocks(n, group) + blocks - 1) / blocks);
    const size_t smem = sizeof(float) * per_block * dim; // at most THREADS MAX_ITEMS 4 floats: 32 KB
    column_sum_fused(dw, blocks, dim, [&](float *partial) {
        rmsnorm_dx_dw_rows_kernel<I, W><<<blocks, THREADS, smem>>>(partial, dx, dx_h, dy, x, w, rstd, dsum, n, dim,
                                                                    group, steps);
        CUDA_LAUNCH_CHECK();
    });
}
template <int W>
static void dx_rows(const row_shape &s, float *dx, __nv_bfloat16 *dx_h, float *dw, const float *dy, const float *x,
                    const float *w, const float *rstd, const float *dsum, int n, int dim) {
    auto *f = s.items == 1   ? dx_rows<1, W>
              : s.items == 2 ? dx_rows<2, W>
              : s.items == 3 ? dx_rows<3, W>
              : s.items == 4 ? dx_rows<4, W>
                             : dx_rows<MAX_ITEMS, W>;
    f(s.group, dx, dx_h, dw, dy, x, w, rstd, dsum, n, dim);
}

// dweight[i] += sum over rows of dy x r (cuda_column_sum.cuh: parallel, fixed order).
struct rmsnorm_dw_term {
    const float *dy, *x, *rstd;
    int dim;
    __device__ float operator()(int row, int i) const {
        const size_t e = (size_t)row * dim + i;
        return dy[e] * x[e] * rstd[row];
    }
};

// dx, and dw += sum over rows of dy x r: with HYLA_NORM_FUSED_DW the row kernels add dw's
// partial sums as they read dy and x; else (and for rows too wide for the registers) a column
// sum reads them again. dw first there: it reads dy and x only, so dx may alias dsum.
static void rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                        const float *dsum, int n, int dim) {
    if (n <= 0) return;
    __nv_bfloat16 *dx_h = cuda_bf16_copy_target(dx, (size_t)n * dim);
    const bool vec4 = dim % 4 == 0 && aligned16(dx) && aligned16(dy) && aligned16(x) && aligned16(w) &&
                      aligned16(dsum) && aligned8(dx_h);
    const row_shape s = row_shape_for(vec4 ? dim / 4 : dim);
    float *fused_dw = s.items != 0 && column_sum::fused_dw() ? dw : NULL;
    if (!fused_dw) column_sum_add(dw, n, dim, rmsnorm_dw_term{dy, x, rstd, dim});
    if (s.items == 0) {
        rmsnorm_dx_kernel<<<n, THREADS>>>(dx, dx_h, dy, x, w, rstd, dsum, dim);
        CUDA_LAUNCH_CHECK();
    } else if (vec4) dx_rows<4>(s, dx, dx_h, fused_dw, dy, x, w, rstd, dsum, n, dim);
    else dx_rows<1>(s, dx, dx_h, fused_dw, dy, x, w, rstd, dsum, n, dim);
}
static void cuda_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                             int n, int dim) {
    rmsnorm_bwd(dx, dw, dy, x, w, rstd, NULL, n, dim);
}
static void cuda_add_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *dsum, const float *sum,
                                 const float *w, const float *rstd, int n, int dim) {
    rmsnorm_bwd(dx, dw, dy, sum, w, rstd, dsum, n, dim);
}

extern "C" void cuda_register_rmsnorm(struct hyla_backend *t) {
    t->rmsnorm_fwd = cuda_rmsnorm_fwd, t->rmsnorm_bwd = cuda_rmsnorm_bwd;
    t->add_rmsnorm_fwd = cuda_add_rmsnorm_fwd, t->add_rmsnorm_bwd = cuda_add_rmsnorm_bwd;
}
