// CUDA: the Gated DeltaNet's pieces around the delta rule (short convolution + SiLU, L2
// norm, gates, gated RMSNorm) and RoPE, with the CPU twins' semantics. Per-parameter sums
// (conv weights, gate parameters, norm weights) are column sums in a fixed order
// (cuda_column_sum.cuh): deterministic.
#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_column_sum.cuh"

enum { THREADS = 256 };

__device__ static float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ static float silu_(float x) { return x * sigmoid_(x); }
__device__ static float silu_grad_(float x) {
    float s = sigmoid_(x);
    return s * (1.0f + x * (1.0f - s));
}
__device__ static float softplus_(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// ---- short convolution + SiLU ---------------------------------------------------------
// Grid: x over rows (b, t), y over blocks of channels, so a thread finds its (row, channel)
// without 64-bit divisions (they cost more than the arithmetic here).
__device__ static float conv_pre(const float *x, const float *w, size_t b_off, int t, int c, int C, int kw) {
    float acc = 0;
    for (int i = 0; i < kw; i++) {
        int ts = t - kw + 1 + i;
        if (ts >= 0) acc += w[(size_t)c * kw + i] * x[b_off + (size_t)ts * C + c];
    }
    return acc;
}
struct conv_site {
    int c, t;
    size_t e, b_off; // the element (row * C + c) and its sequence's first element
};
// This thread's (row, channel), or c = -1 past the channels.
__device__ static conv_site conv_site_of(int L, int C) {
    conv_site p;
    const int row = blockIdx.x;
    p.c = blockIdx.y * blockDim.x + threadIdx.x;
    p.t = row % L;
    p.e = (size_t)row * C + p.c;
    p.b_off = (size_t)(row - p.t) * C;
    if (p.c >= C) p.c = -1;
    return p;
}
static dim3 conv_grid(int B, int L, int C) { return dim3((unsigned)(B * L), (unsigned)((C + THREADS - 1) / THREADS)); }

__global__ void shortconv_fwd_kernel(float *y, const float *x, const float *w, int L, int C, int kw) {
    const conv_site p = conv_site_of(L, C);
    if (p.c >= 0) y[p.e] = silu_(conv_pre(x, w, p.b_off, p.t, p.c, C, kw));
}
__global__ void shortconv_dpre_kernel(float *dpre, const float *dy, const float *x, const float *w, int L, int C,
                                      int kw) {
    const conv_site p = conv_site_of(L, C);
    if (p.c >= 0) dpre[p.e] = dy[p.e] * silu_grad_(conv_pre(x, w, p.b_off, p.t, p.c, C, kw));
}
// dx[t] = sum_i w[c,i] dpre[t + kw - 1 - i]
__global__ void shortconv_dx_kernel(float *dx, const float *dpre, const float *w, int L, int C, int kw) {
    const conv_site p = conv_site_of(L, C);
    if (p.c < 0) return;
    float acc = 0;
    for (int i = 0; i < kw; i++) {
        int to = p.t + kw - 1 - i;
        if (to < L) acc += w[(size_t)p.c * kw + i] * dpre[p.b_off + (size_t)to * C + p.c];
    }
    dx[p.e] = acc;
}
// dw[c,i] += sum over rows (b, t) of dpre[t] x[t - kw + 1 + i]: a thread owns one channel's kw
// taps (kw <= HYLA_SHORTCONV_MAX_WIDTH, in registers) over a chunk of column_sum::ROWS rows —
// a dpre load and kw x loads per row, each coalesced over the channels, the x rows shared by
// neighbouring rows' taps in cache — then column_sum's finish adds the chunks in order.
__global__ void shortconv_dw_partials_kernel(float *partial, const float *dpre, const float *x, int rows, int L,
                                             int C, int kw) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int r0 = blockIdx.y * column_sum::ROWS, r1 = min(rows, r0 + column_sum::ROWS);
    float acc[HYLA_SHORTCONV_MAX_WIDTH] = {0};
    for (int r = r0, t = r0 % L; r < r1; r++, t = t + 1 == L ? 0 : t + 1) {
        const float d = dpre[(size_t)r * C + c];
#pragma unroll
        for (int i = 0; i < HYLA_SHORTCONV_MAX_WIDTH; i++) {
            const int back = kw - 1 - i; // x's row is `back` rows before r, in the same sequence
            if (i < kw && t >= back) acc[i] += d * x[(size_t)(r - back) * C + c];
        }
    }
    float *out = partial + (size_t)blockIdx.y * C * kw + (size_t)c * kw;
    for (int i = 0; i < kw; i++) out[i] = acc[i];
}
static void cuda_shortconv_silu_fwd(float *y, const float *x, const float *w, int B, int L, int C, int kw) {
    if ((size_t)B * L * C == 0) return;
    shortconv_fwd_kernel<<<conv_grid(B, L, C), THREADS>>>(y, x, w, L, C, kw);
    CUDA_LAUNCH_CHECK();
}
static void cuda_shortconv_silu_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, int B, int L,
                                    int C, int kw) {
    const size_t n = (size_t)B * L * C;
    if (n == 0) return;
    float *dpre = NULL; // stream-ordered scratch: no device-wide synchronisation
    CUDA_CHECK(cudaMallocAsync((void **)&dpre, n * sizeof(float), 0));
    shortconv_dpre_kernel<<<conv_grid(B, L, C), THREADS>>>(dpre, dy, x, w, L, C, kw);
    CUDA_LAUNCH_CHECK();
    shortconv_dx_kernel<<<conv_grid(B, L, C), THREADS>>>(dx, dpre, w, L, C, kw);
    CUDA_LAUNCH_CHECK();
    const int rows = B * L, chunks = (rows + column_sum::ROWS - 1) / column_sum::ROWS;
    float *partial = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&partial, sizeof(float) * (size_t)chunks * C * kw, 0));
    shortconv_dw_partials_kernel<<<dim3(blocks_for((size_t)C, column_sum::THREADS), chunks), column_sum::THREADS>>>(
        partial, dpre, x, rows, L, C, kw);
    CUDA_LAUNCH_CHECK();
    column_sum::finish_kernel<<<blocks_for((size_t)C * kw, column_sum::THREADS), column_sum::THREADS>>>(
        dw, partial, chunks, C * kw);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(partial, 0));
    CUDA_CHECK(cudaFreeAsync(dpre, 0));
}

// ---- L2 norm ------------------------------------------------------------------------------
// The rows here are one head wide (a head dim, 128 at the 0.4B shape): a warp per row, ROW_WARPS
// rows per block, sums by a fixed shuffle tree (warp_sum), where a block per row would leave
// half its threads idle and climb eight barriers of a shared-memory tree.
enum { ROW_WARPS = 8 };
__device__ static inline float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v; // the same bits in every lane
}
// This warp's row, or -1 past the last.
__device__ static inline long long warp_row(int rows) {
    const long long r = (long long)blockIdx.x * ROW_WARPS + threadIdx.x / 32;
    return r < rows ? r : -1;
}
static unsigned row_blocks(int rows) { return (unsigned)((rows + ROW_WARPS - 1) / ROW_WARPS); }

__global__ void l2norm_fwd_kernel(float *y, float *rstd, const float *x, int rows, int dim, float eps) {
    const long long row = warp_row(rows);
    if (row < 0) return; // whole warps leave: no barrier below is skipped by part of one
    const int lane = threadIdx.x % 32;
    const size_t off = (size_t)row * dim;
    float ss = 0;
    for (int i = lane; i < dim; i += 32) ss += x[off + i] * x[off + i];
    const float r = rsqrtf(warp_sum(ss) + eps);
    if (lane == 0) rstd[row] = r;
    for (int i = lane; i < dim; i += 32) y[off + i] = x[off + i] * r;
}
__global__ void l2norm_bwd_kernel(float *dx, const float *dy, const float *y, const float *rstd, int rows, int dim) {
    const long long row = warp_row(rows);
    if (row < 0) return;
    const int lane = threadIdx.x % 32;
    const size_t off = (size_t)row * dim;
    float dot = 0;
    for (int i = lane; i < dim; i += 32) dot += dy[off + i] * y[off + i];
    dot = warp_sum(dot);
    const float r = rstd[row];
    for (int i = lane; i < dim; i += 32) dx[off + i] = r * (dy[off + i] - dot * y[off + i]);
}
static void cuda_l2norm_fwd(float *y, float *rstd, const float *x, int rows, int dim, float eps) {
    if (rows <= 0) return; // an empty grid is a launch error
    l2norm_fwd_kernel<<<row_blocks(rows), 32 * ROW_WARPS>>>(y, rstd, x, rows, dim, eps);
    CUDA_LAUNCH_CHECK();
}
static void cuda_l2norm_bwd(float *dx, const float *dy, const float *y, const float *rstd, int rows, int dim) {
    if (rows <= 0) return;
    l2norm_bwd_kernel<<<row_blocks(rows), 32 * ROW_WARPS>>>(dx, dy, y, rstd, rows, dim);
    CUDA_LAUNCH_CHECK();
}

// ---- gates --------------------------------------------------------------------------------
__global__ void gates_fwd_kernel(float *beta, float *g, const float *bl, const float *al, const float *A_log,
                                 const float *dt_bias, int rows, int H) {
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)rows * H) return;
    int h = (int)(e % H);
    beta[e] = sigmoid_(bl[e]);
    g[e] = -expf(A_log[h]) * softplus_(al[e] + dt_bias[h]);
}
__global__ void gates_bwd_kernel(float *dbl, float *dal, const float *dbeta, const float *dg, const float *bl,
                                 const float *al, const float *A_log, const float *dt_bias, int rows, int H) {
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)rows * H) return;
    int h = (int)(e % H);
    float s = sigmoid_(bl[e]), z = al[e] + dt_bias[h];
    dbl[e] = dbeta[e] * s * (1.0f - s);
    dal[e] = -dg[e] * expf(A_log[h]) * (z > 20.0f ? 1.0f : sigmoid_(z));
}
// per head, summed over rows: ddt_bias += sum da; dA_log += sum dg * g
struct dt_bias_term {
    const float *dal;
    int H;
    __device__ float operator()(int r, int h) const { return dal[(size_t)r * H + h]; }
};
struct A_log_term {
    const float *dg, *al, *A_log, *dt_bias;
    int H;
    __device__ float operator()(int r, int h) const {
        const size_t e = (size_t)r * H + h;
        return dg[e] * (-expf(A_log[h]) * softplus_(al[e] + dt_bias[h]));
    }
};
static void cuda_gdn_gates_fwd(float *beta, float *g, const float *bl, const float *al, const float *A_log,
                               const float *dt_bias, int rows, int H) {
    if ((size_t)rows * H == 0) return;
    gates_fwd_kernel<<<blocks_for((size_t)rows * H, THREADS), THREADS>>>(beta, g, bl, al, A_log, dt_bias, rows, H);
    CUDA_LAUNCH_CHECK();
}
static void cuda_gdn_gates_bwd(float *dbl, float *dal, float *dA_log, float *ddt_bias, const float *dbeta,
                               const float *dg, const float *bl, const float *al, const float *A_log,
                               const float *dt_bias, int rows, int H) {
    if ((size_t)rows * H == 0) return;
    gates_bwd_kernel<<<blocks_for((size_t)rows * H, THREADS), THREADS>>>(dbl, dal, dbeta, dg, bl, al, A_log, dt_bias,
                                                                         rows, H);
    CUDA_LAUNCH_CHECK();
    column_sum_add(ddt_bias, rows, H, dt_bias_term{dal, H});
    column_sum_add(dA_log, rows, H, A_log_term{dg, al, A_log, dt_bias, H});
}

// ---- gated RMSNorm ------------------------------------------------------------------------
// A warp per row, as the L2 norm's.
__global__ void gated_rmsnorm_fwd_kernel(float *y, float *rstd, const float *x, const float *gate, const float *w,
                                         int rows, int dim, float eps) {
    const long long row = warp_row(rows);
    if (row < 0) return;
    const int lane = threadIdx.x % 32;
    const size_t off = (size_t)row * dim;
    float ss = 0;
    for (int i = lane; i < dim; i += 32) ss += x[off + i] * x[off + i];
    const float r = rsqrtf(warp_sum(ss) / dim + eps);
    if (lane == 0) rstd[row] = r;
    for (int i = lane; i < dim; i += 32) y[off + i] = x[off + i] * r * w[i] * silu_(gate[off + i]);
}
__global__ void gated_rmsnorm_bwd_kernel(float *dx, float *dgate, const float *dy, const float *x, const float *gate,
                                         const float *w, const float *rstd, int rows, int dim) {
    const long long row = warp_row(rows);
    if (row < 0) return;
    const int lane = threadIdx.x % 32;
    const size_t off = (size_t)row * dim;
    const float r = rstd[row];
    float c = 0;
    for (int i = lane; i < dim; i += 32) c += dy[off + i] * w[i] * silu_(gate[off + i]) * x[off + i] * r;
    c = warp_sum(c) / dim;
    for (int i = lane; i < dim; i += 32) {
        float n = x[off + i] * r, dn = dy[off + i] * w[i] * silu_(gate[off + i]);
        dx[off + i] = r * (dn - n * c);
        dgate[off + i] = dy[off + i] * w[i] * n * silu_grad_(gate[off + i]);
    }
}
struct gated_rmsnorm_dw_term {
    const float *dy, *x, *gate, *rstd;
    int dim;
    __device__ float operator()(int r, int i) const {
        const size_t e = (size_t)r * dim + i;
        return dy[e] * x[e] * rstd[r] * silu_(gate[e]);
    }
};
static void cuda_gated_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *gate, const float *w, int rows,
                                   int dim, float eps) {
    if (rows <= 0) return;
    gated_rmsnorm_fwd_kernel<<<row_blocks(rows), 32 * ROW_WARPS>>>(y, rstd, x, gate, w, rows, dim, eps);
    CUDA_LAUNCH_CHECK();
}
static void cuda_gated_rmsnorm_bwd(float *dx, float *dgate, float *dw, const float *dy, const float *x,
                                   const float *gate, const float *w, const float *rstd, int rows, int dim) {
    if (rows <= 0) return;
    column_sum_add(dw, rows, dim, gated_rmsnorm_dw_term{dy, x, gate, rstd, dim});
    gated_rmsnorm_bwd_kernel<<<row_blocks(rows), 32 * ROW_WARPS>>>(dx, dgate, dy, x, gate, w, rstd, rows, dim);
    CUDA_LAUNCH_CHECK();
}

// ---- RoPE (rotate-half); sign -1 is the backward pass ---------------------------------------
// A block holds whole (b, t, h) rows, a thread per (row, i < d/2) pair: its position comes from
// one 32-bit division (the 64-bit ones per element cost more than the rotation). Rows fit an
// int: B L H rows of d floats would otherwise exceed any GPU's memory.
__global__ void rope_kernel(float *y, const float *x, int rows, int L, int H, int d, float theta, int pos0,
                            float sign) {
    const int half = d / 2, per_block = blockDim.x / half, local = threadIdx.x / half, i = threadIdx.x % half;
    const int row = blockIdx.x * per_block + local; // (b, t, h)
    if (local >= per_block || row >= rows) return;
    const int t = row / H % L;
    const float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)d);
    const float angle = (float)(pos0 + t) * inv_freq, c = cosf(angle), s = sign * sinf(angle);
    const size_t lo = (size_t)row * d + i, hi = lo + half;
    const float a = x[lo], b = x[hi]; // read both first: y may alias x
    y[lo] = a * c - b * s;
    y[hi] = b * c + a * s;
}
static void rope(float *y, const float *x, int B, int L, int H, int d, float theta, int pos0, float sign) {
    const int rows = B * L * H, half = d / 2;
    if (rows == 0 || half == 0) return;
    const int threads = half <= THREADS ? THREADS : (half + 31) / 32 * 32, per_block = threads / half;
    rope_kernel<<<(rows + per_block - 1) / per_block, threads>>>(y, x, rows, L, H, d, theta, pos0, sign);
    CUDA_LAUNCH_CHECK();
}
static void cuda_rope_fwd(float *y, const float *x, int B, int L, int H, int d, float theta, int pos0) {
    rope(y, x, B, L, H, d, theta, pos0, 1.0f);
}
static void cuda_rope_bwd(float *dx, const float *dy, int B, int L, int H, int d, float theta, int pos0) {
    rope(dx, dy, B, L, H, d, theta, pos0, -1.0f);
}

extern "C" void cuda_register_gdn_parts(struct hyla_backend *t) {
    t->shortconv_silu_fwd = cuda_shortconv_silu_fwd, t->shortconv_silu_bwd = cuda_shortconv_silu_bwd;
    t->l2norm_fwd = cuda_l2norm_fwd, t->l2norm_bwd = cuda_l2norm_bwd;
    t->gdn_gates_fwd = cuda_gdn_gates_fwd, t->gdn_gates_bwd = cuda_gdn_gates_bwd;
    t->gated_rmsnorm_fwd = cuda_gated_rmsnorm_fwd, t->gated_rmsnorm_bwd = cuda_gated_rmsnorm_bwd;
    t->rope_fwd = cuda_rope_fwd, t->rope_bwd = cuda_rope_bwd;
}
