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
#include "cuda_check.h"
#include "cuda_lte_router.cuh"

namespace fixed {

constexpr int THREADS = 256, WARPS = THREADS / 32;
constexpr int D = 64, N_CONVS = 3, TAPS = 3, DIL = 2, REACH = DIL * (TAPS - 1) / 2; // 2 each side
// Channels of conv l's input (l = 0 .. 3): 128 64 32 16.
__host__ __device__ constexpr int chan(int l) { return (2 * D) >> l; }
constexpr int ROWS = 128;                    // output rows of each conv's product
constexpr int IN_ROWS = ROWS + 2 * REACH;    // 132 input rows each conv reads
constexpr int T = ROWS - 2 * REACH * (N_CONVS - 1); // 120 own tokens a tile
constexpr int FRAG = 128;                    // floats of a (tap, k-step, n-tile)'s B fragments
__host__ __device__ constexpr int stride(int c) { return (c + 7) / 8 * 8 + 4; } // as row_stride
// Tokens before the tile's first of conv l's output rows (l = 0: its input's): 6, 4, 2, 0.
__host__ __device__ constexpr int before(int l) { return REACH * (N_CONVS - l); }
// Floats of conv l's staged weights for one head: taps x k-steps x n-tiles B fragments.
__host__ __device__ constexpr int w_floats(int l) { return TAPS * (chan(l) / 16) * (chan(l + 1) / 8) * FRAG; }
__host__ __device__ constexpr int w_at(int l) { return l == 0 ? 0 : w_at(l - 1) + w_floats(l - 1); }
constexpr int W_HEAD = w_at(N_CONVS);        // 32,256 floats: 126 KB
constexpr int X_FLOATS = IN_ROWS * stride(chan(0));
constexpr size_t SMEM = sizeof(float) * (size_t)(W_HEAD + X_FLOATS);

// Whether the shape is this kernel's.
static bool matches(const router_dims &r) {
    if (r.d != D || r.n != N_CONVS || r.B > ROUTER_ROWS) return false;
    for (int l = 0; l < N_CONVS; l++)
        if (r.kernel[l] != TAPS || r.dilation[l] != DIL || r.c[l] != chan(l) || r.c[l + 1] != chan(l + 1)) return false;
    return true;
}

// Every head's weights as tf32 B fragments, [head][conv][tap][k-step][n-tile][lane][4]: register
// q of lane 4 g + tig is the weight of output channel 8 n-tile + g, input channel 16 k-step +
// 4 tig + q (stage_weights_mma_kernel's order, cuda_lte_router_fused.cu).
__global__ void stage_kernel(uint32_t *wt, const float *params, const __grid_constant__ router_dims r) {
    const size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)r.H * W_HEAD) return;
    const int h = (int)(e / W_HEAD);
    int rest = (int)(e % W_HEAD), l = 0;
    while (l + 1 < N_CONVS && rest >= w_at(l + 1)) l++;
    rest -= w_at(l);
    const int ntt = chan(l + 1) / 8, steps = chan(l) / 16;
    const int q = rest % 4, lane = rest / 4 % 32, nt = rest / FRAG % ntt, ks = rest / FRAG / ntt % steps;
    const int i = rest / FRAG / ntt / steps;
    const int co = nt * 8 + lane / 4, ci = ks * 16 + 4 * (lane % 4) + q, cin = chan(l), cout = chan(l + 1);
    wt[e] = hyla_mma::to_tf32(params[r.w[l] + (((size_t)h * cout + co) * cin + ci) * TAPS + i]);
}

// Conv 0's dropped-out input (k then v of each token, zero outside the sequence) as tf32 values
// into X, rows 0 .. IN_ROWS - 1 = tokens t0 - 6 .. t0 + 125.
__device__ void load_input(float *X, const router_dims &r, int b, int h, int t0, const float *k, const float *v) {
    constexpr int QUADS = chan(0) / 4;
#pragma unroll 4
    for (int e = threadIdx.x; e < IN_ROWS * QUADS; e += THREADS) {
        const int row = e / QUADS, c0 = 4 * (e % QUADS), t = t0 - before(0) + row;
        float x[4] = {0, 0, 0, 0};
        if (t >= 0 && t < r.L) {
            const size_t pos = token_pos(r, b, t, h);
            const float4 u = load4(c0 < D ? k + pos * D + c0 : v + pos * D + c0 - D);
            x[0] = u.x, x[1] = u.y, x[2] = u.z, x[3] = u.w;
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
    using namespace hyla_mma;
    constexpr int K = chan(L), N = chan(L + 1), KS = K / 16, NTT = N / 8, CBW = NTT / NT, SX = stride(K), SO = stride(N);
    static_assert(CBW * NT == NTT && (WARPS / CBW) * 16 * MT == ROWS, "warp tiles cover the product");
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
    const int nt0 = warp % CBW * NT, row0 = warp / CBW * 16 * MT;
    float acc[MT][NT][4];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int n = 0; n < NT; n++) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0;
#pragma unroll
    for (int i = 0; i < TAPS; i++) {
        const float *a_lo[MT], *a_hi[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) {
            const int row = row0 + 16 * m + mma_row(g) + DIL * i;
            a_lo[m] = X + row * SX + 4 * tig, a_hi[m] = a_lo[m] + 8 * SX;
        }
        const float *w = W + w_at(L) + (i * KS * NTT + nt0) * FRAG + 4 * lane;
#pragma unroll 2
        for (int s = 0; s < KS; s++) {
            uint32_t bf[NT][4];
#pragma unroll
            for (int n = 0; n < NT; n++) {
                const uint4 u = *reinterpret_cast<const uint4 *>(w + (s * NTT + n) * FRAG);
                bf[n][0] = u.x, bf[n][1] = u.y, bf[n][2] = u.z, bf[n][3] = u.w;
            }
#pragma unroll
            for (int m = 0; m < MT; m++) {
                const float4 x = load4(a_lo[m] + 16 * s), y = load4(a_hi[m] + 16 * s);
                const uint32_t a0[4] = {__float_as_uint(x.x), __float_as_uint(y.x), __float_as_uint(x.y),
                                        __float_as_uint(y.y)};
                const uint32_t a1[4] = {__float_as_uint(x.z), __float_as_uint(y.z), __float_as_uint(x.w),
                                        __float_as_uint(y.w)};
#pragma unroll
                for (int n = 0; n < NT; n++) mma_tf32(acc[m][n], a0, bf[n][0], bf[n][1]), mma_tf32(acc[m][n], a1, bf[n][2], bf[n][3]);
            }
        }
    }
    __syncthreads(); // every warp has read X: the output goes over it
    // Rows of this conv's output that the next step's kept outputs read (conv 0: all 128, conv
    // 1: 124, conv 2: the tile's own 120); the rest, and rows outside the sequence, are zero.
    constexpr int NEEDED = ROWS - 2 * REACH * L;
    const bool odd = lane & 1;
    const float *bias = params + r.b[L] + (size_t)h * N;
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const float *c = acc[m][n];
            const float x = __shfl_xor_sync(0xffffffffu, odd ? c[0] : c[2], 1);
            const float y = __shfl_xor_sync(0xffffffffu, odd ? c[1] : c[3], 1);
            const float a[4] = {odd ? x : c[0], odd ? y : c[1], odd ? c[2] : x, odd ? c[3] : y};
            const int row = row0 + 16 * m + mma_row(g) + (odd ? 8 : 0), n0 = 8 * (nt0 + n) + 4 * (tig / 2);
            const int t = t0 - before(L + 1) + row;
            float u[4] = {0, 0, 0, 0};
            if (row < NEEDED && t >= 0 && t < r.L) {
                float pre[4];
#pragma unroll
                for (int q = 0; q < 4; q++) pre[q] = a[q] + bias[n0 + q], u[q] = silu(pre[q]);
                if (L + 1 < N_CONVS) {
                    keep_quad(u, r, L + 1, b, t, h, n0, 4);
#pragma unroll
                    for (int q = 0; q < 4; q++) u[q] = __uint_as_float(to_tf32(u[q]));
                }
                if (t >= t0 && t < t0 + T) store4(acts + act_of(r, L + 1, b, t, h) + n0, pre);
            }
            store4(X + row * SO + n0, u);
        }
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
    const float *wh = wt + (size_t)h * W_HEAD;
    for (int f = threadIdx.x; f < W_HEAD / 4; f += THREADS) __pipeline_memcpy_async(W + 4 * f, wh + 4 * f, 16);
    __pipeline_commit();
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

static int sm_count(void) {
    int dev = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n > 0 ? n : 1;
}

bool forward(float *score, float *acts, const float *k, const float *v, const float *params, const router_dims &r) {
    if (r.B < 1 || r.L < 1 || !matches(r)) return false;
    const size_t staged = (size_t)r.H * W_HEAD;
    uint32_t *wt = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&wt, staged * sizeof(uint32_t), 0));
    stage_kernel<<<blocks_for(staged, 256), 256>>>(wt, params, r);
    CUDA_LAUNCH_CHECK();
    // one block an SM (its shared memory), the SMs shared out among the heads
    const int tiles = (r.L + T - 1) / T, jobs = r.B * tiles;
    int per_head = sm_count() / r.H;
    per_head = per_head < 1 ? 1 : per_head > jobs ? jobs : per_head;
    CUDA_CHECK(cudaFuncSetAttribute(fwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMEM));
    fwd_kernel<<<dim3(per_head, r.H), THREADS, SMEM>>>(score, acts, k, v, params, (const float *)wt, r, tiles);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(wt, 0));
    return true;
}

} // namespace fixed
