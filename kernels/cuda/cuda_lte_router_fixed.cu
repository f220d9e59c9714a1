// CUDA: the LTE router's forward at the papers' shape (MODEL.md §5.2: head dim 64, convs
// 128 -> 64 -> 32 -> 16, kernel 3, dilation 2), in bf16 mode, its products on the tensor cores
// in tf32 as the fused kernels' tensor-core form does (cuda_lte_router_fused.cu): the same
// operands, fragments and order of sums, so the same bits. HYLA_ROUTER_FIXED picks it
// (cuda_lte_router.cu).
//
// Why a kernel of its own: Nsight Compute (H100, 2026-12-07) counted 301 M warp instructions for
// the fused forward of a 0.4B layer (B 4, L 4096), 3% of them tensor-core products and a quarter
// integer multiply-adds: its tiles, products, passes and weight chunks are planned at run time
// for any shape, so every index is worked out from a plan in constant memory, and every tile
// streams its head's 129 KB of weights through two 12 KB chunks with a barrier each. Here every
// dimension is a constant, and a block keeps one head's weights in shared memory for all the
// tiles it does (persistent blocks: H x blocks_per_head of them, a tile = one row's 120 tokens).
//
// A tile: conv 0's input (132 rows: tokens t0 - 6 .. t0 + 125, dropped out, tf32) into X; then
// each conv is a product over 128 output rows whose output (bias, SiLU, the next conv's dropout,
// tf32) overwrites its input in X after a barrier, the pre-activations of the tile's own tokens
// going to `acts`. Conv l's output row i is token t0 - before_l + i (before = 4, 2, 0); rows past
// the sequence, and past the rows a later conv needs, are zero. The projection then gives z and
// the score of the 120 own tokens.
#include <cuda_pipeline.h>

#include "backend_cuda.h"
#include "cuda_lte_router_fixed.cuh"

namespace fixed {

constexpr int ROWS = 128;                           // output rows of each conv's product
constexpr int IN_ROWS = ROWS + 2 * REACH;           // 132 input rows each conv reads
constexpr int T = ROWS - 2 * REACH * (N_CONVS - 1); // 120 own tokens a tile
// Tokens before the tile's first of conv l's output rows (l = 0: its input's): 6, 4, 2, 0.
__host__ __device__ constexpr int before(int l) { return REACH * (N_CONVS - l); }
constexpr int X_FLOATS = IN_ROWS * stride(chan(0));
constexpr size_t SMEM = sizeof(float) * (size_t)(W_HEAD + X_FLOATS);

// Conv 0's dropped-out input (k then v of each token, zero outside the sequence) as tf32 values
// into X, rows 0 .. IN_ROWS - 1 = tokens t0 - 6 .. t0 + 125.
__device__ void load_input(float *X, const router_dims &r, int b, int h, int t0, const float *k, const float *v) {
    constexpr int QUADS = chan(0) / 4, PER = (IN_ROWS * QUADS + THREADS - 1) / THREADS;
    // every load of the thread first (~17 float4 in flight: the masks' draws wait for none)
    float4 u[PER];
#pragma unroll
    for (int j = 0; j < PER; j++) {
        const int e = threadIdx.x + j * THREADS, row = e / QUADS, c0 = 4 * (e % QUADS), t = t0 - before(0) + row;
        u[j] = make_float4(0, 0, 0, 0);
        if (e < IN_ROWS * QUADS && t >= 0 && t < r.L) {
            const size_t pos = token_pos(r, b, t, h);
            u[j] = load4(c0 < D ? k + pos * D + c0 : v + pos * D + c0 - D);
        }
    }
#pragma unroll
    for (int j = 0; j < PER; j++) {
        const int e = threadIdx.x + j * THREADS, row = e / QUADS, c0 = 4 * (e % QUADS), t = t0 - before(0) + row;
        if (e >= IN_ROWS * QUADS) break;
        float x[4] = {u[j].x, u[j].y, u[j].z, u[j].w};
        if (t >= 0 && t < r.L) {
            keep_quad(x, r, 0, b, t, h, c0, 4);
            for (int q = 0; q < 4; q++) x[q] = __uint_as_float(hyla_mma::to_tf32(x[q]));
        }
        store4(X + row * stride(chan(0)) + c0, x);
    }
}

// Conv l as a product over the tile: acc = sum over taps i and input channels of X[row + 2 i]
// W_i, warp tiles of MT m-tiles (16 rows) x NT n-tiles (8 channels), the warps CBW across the
// channels by WARPS / CBW down the rows; then (after a barrier: the output overwrites X) the
// epilogue on 4 neighbouring channels of a row at a time (accumulate_mma's and
// run_product_mma's fragment orders, cuda_lte_router_fused.cu).
template <int L, int MT, int NT>
__device__ void conv(float *X, const float *W, float *acts, const float *params, const router_dims &r, int b, int h,
                     int t0) {
    constexpr int K = chan(L), N = chan(L + 1), NTT = N / 8, CBW = NTT / NT, SO = stride(N);
    static_assert(CBW * NT == NTT && (WARPS / CBW) * 16 * MT == ROWS, "warp tiles cover the product");
    const int warp = threadIdx.x / 32, nt0 = warp % CBW * NT, row0 = warp / CBW * 16 * MT;
    const float *bias = params + r.b[L] + (size_t)h * N;
    float4 bias4[NT]; // this thread's channels' biases, loaded while the product runs
#pragma unroll
    for (int n = 0; n < NT; n++) bias4[n] = load4(bias + quad_col(nt0 + n));
    float acc[MT][NT][4];
    warp_product<K, NTT, stride(K), MT, NT, false, true>(acc, X, W + w_at(L), row0, nt0);
    __syncthreads(); // every warp has read X: the output goes over it
    // Rows of this conv's output that the next step's kept outputs read (conv 0: all 128, conv
    // 1: 124, conv 2: the tile's own 120); the rest, and rows outside the sequence, are zero.
    constexpr int NEEDED = ROWS - 2 * REACH * L;
    for_each_quad(acc, row0, nt0, [&](int i, int row, int n0, const float (&a)[4]) {
        const int t = t0 - before(L + 1) + row;
        float u[4] = {0, 0, 0, 0};
        if (row < NEEDED && t >= 0 && t < r.L) {
            const float4 bq = bias4[i % NT];
            const float bb[4] = {bq.x, bq.y, bq.z, bq.w};
            float pre[4];
#pragma unroll
            for (int q = 0; q < 4; q++) pre[q] = a[q] + bb[q], u[q] = silu(pre[q]);
            if (L + 1 < N_CONVS) {
                keep_quad(u, r, L + 1, b, t, h, n0, 4);
#pragma unroll
                for (int q = 0; q < 4; q++) u[q] = __uint_as_float(hyla_mma::to_tf32(u[q]));
            }
            if (t >= t0 && t < t0 + T) store4(acts + act_of(r, L + 1, b, t, h) + n0, pre);
        }
        store4(X + row * SO + n0, u);
    });
    // rows ROWS .. IN_ROWS - 1 of the next conv's input: zero (the product above covers ROWS)
    for (int e = threadIdx.x; e < 2 * REACH * SO; e += THREADS) X[ROWS * SO + e] = 0.0f;
    __syncthreads();
}

// z and the score of the tile's own tokens from u_3 in X (fused::project's order of sums).
__device__ void project(float *score, float *acts, const float *X, const float *params, const router_dims &r, int b,
                        int h, int t0) {
    constexpr int CN = chan(N_CONVS);
    const float *w = params + r.pw + (size_t)h * CN;
    const float bias = params[r.pb + h];
    for (int i = threadIdx.x; i < T && t0 + i < r.L; i += THREADS) {
        float z = bias;
        for (int j = 0; j < CN; j++) z += w[j] * X[i * stride(CN) + j];
        acts[act_of(r, N_CONVS + 1, b, t0 + i, h)] = z;
        score[token_pos(r, b, t0 + i, h)] = sig(z) - 0.5f;
    }
}

// Blocks (j, h): head h's tiles j, j + gridDim.x, ... of its r.B x tiles (row-major).
__global__ void __launch_bounds__(THREADS, 1)
    fwd_kernel(float *score, float *acts, const float *k, const float *v, const float *params, const float *wt,
               const __grid_constant__ router_dims r, int tiles) {
    extern __shared__ __align__(16) float smem[];
    float *W = smem, *X = smem + W_HEAD;
    const int h = blockIdx.y;
    load_weights(W, wt, h);
    for (int job = blockIdx.x; job < r.B * tiles; job += gridDim.x) {
        const int b = job / tiles, t0 = job % tiles * T;
        __syncthreads(); // the previous tile's projection has read X
        load_input(X, r, b, h, t0, k, v);
        __pipeline_wait_prior(0); // the weights (first tile)
        __syncthreads();
        conv<0, 2, 4>(X, W, acts, params, r, b, h, t0);
        conv<1, 1, 4>(X, W, acts, params, r, b, h, t0);
        conv<2, 1, 2>(X, W, acts, params, r, b, h, t0);
        project(score, acts, X, params, r, b, h, t0);
    }
}

bool forward(float *score, float *acts, const float *k, const float *v, const float *params, const router_dims &r) {
    if (r.B < 1 || r.L < 1 || !matches(r)) return false;
    float *wt = staged<false>(params, r);
    // one block an SM (its shared memory), the SMs shared out among the heads
    const int tiles = (r.L + T - 1) / T, jobs = r.B * tiles;
    int per_head = sm_count() / r.H;
    per_head = per_head < 1 ? 1 : per_head > jobs ? jobs : per_head;
    CUDA_CHECK(cudaFuncSetAttribute(fwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMEM));
    fwd_kernel<<<dim3(per_head, r.H), THREADS, SMEM>>>(score, acts, k, v, params, wt, r, tiles);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(wt, 0));
    return true;
}

} // namespace fixed
