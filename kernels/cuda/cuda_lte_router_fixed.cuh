// CUDA: what the LTE router's fixed-shape kernels share (cuda_lte_router_fixed.cu, forward;
// cuda_lte_router_fixed_bwd.cu, backward): the papers' router shape (MODEL.md §5.2: head dim 64,
// convs 128 -> 64 -> 32 -> 16, kernel 3, dilation 2) as constants, the weights staged as tf32 B
// fragments for a block to keep in shared memory, and a conv as a warp tile's tf32 product on
// the tensor cores in the fused kernels' fragment orders (cuda_lte_router_fused.cu,
// accumulate_mma and run_product_mma: the same operands and order of sums, so the same bits).
#ifndef HYLA_CUDA_LTE_ROUTER_FIXED_CUH
#define HYLA_CUDA_LTE_ROUTER_FIXED_CUH

#include <cuda_pipeline.h>

#include "cuda_check.h"
#include "cuda_lte_router.cuh"

namespace fixed {

constexpr int THREADS = 256, WARPS = THREADS / 32;
constexpr int D = 64, N_CONVS = 3, TAPS = 3, DIL = 2, REACH = DIL * (TAPS - 1) / 2; // 2 each side
// Channels of conv l's input (l = 0 .. 3): 128 64 32 16.
__host__ __device__ constexpr int chan(int l) { return (2 * D) >> l; }
constexpr int FRAG = 128; // floats of a (tap, k-step, n-tile)'s B fragments: 32 lanes x 4
__host__ __device__ constexpr int stride(int c) { return (c + 7) / 8 * 8 + 4; } // as row_stride
// Floats of conv l's staged weights for one head: taps x k-steps x n-tiles B fragments (the
// same count both ways: the backward's reduction runs over conv l's output channels).
__host__ __device__ constexpr int w_floats(int l) { return TAPS * (chan(l) / 16) * (chan(l + 1) / 8) * FRAG; }
__host__ __device__ constexpr int w_at(int l) { return l == 0 ? 0 : w_at(l - 1) + w_floats(l - 1); }
constexpr int W_HEAD = w_at(N_CONVS); // 32,256 floats: 126 KB

// Whether the shape is these kernels'.
static inline bool matches(const router_dims &r) {
    if (r.d != D || r.n != N_CONVS || r.B > ROUTER_ROWS) return false;
    for (int l = 0; l < N_CONVS; l++)
        if (r.kernel[l] != TAPS || r.dilation[l] != DIL || r.c[l] != chan(l) || r.c[l + 1] != chan(l + 1)) return false;
    return true;
}

// Every head's weights as tf32 B fragments, [head][conv][tap][k-step][n-tile][lane][4]: register
// q of lane 4 g + tig takes the weight of n-channel 8 n-tile + g and reduction channel 16 k-step
// + 4 tig + q (stage_weights_mma_kernel's order, cuda_lte_router_fused.cu). Forward (BWD false):
// n = output channel, reduction = input channel; backward (the input gradient): the other way.
template <bool BWD> __global__ void stage_kernel(uint32_t *wt, const float *params, const __grid_constant__ router_dims r) {
    const size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)r.H * W_HEAD) return;
    const int h = (int)(e / W_HEAD);
    int rest = (int)(e % W_HEAD), l = 0;
    while (l + 1 < N_CONVS && rest >= w_at(l + 1)) l++;
    rest -= w_at(l);
    const int cin = chan(l), cout = chan(l + 1), ntt = (BWD ? cin : cout) / 8, steps = (BWD ? cout : cin) / 16;
    const int q = rest % 4, lane = rest / 4 % 32, nt = rest / FRAG % ntt, ks = rest / FRAG / ntt % steps;
    const int i = rest / FRAG / ntt / steps;
    const int nn = nt * 8 + lane / 4, kk = ks * 16 + 4 * (lane % 4) + q;
    const int co = BWD ? kk : nn, ci = BWD ? nn : kk;
    wt[e] = hyla_mma::to_tf32(params[r.w[l] + (((size_t)h * cout + co) * cin + ci) * TAPS + i]);
}
// Stream-ordered scratch with every head's staged weights (cudaFreeAsync it).
template <bool BWD> static inline float *staged(const float *params, const router_dims &r) {
    const size_t n = (size_t)r.H * W_HEAD;
    uint32_t *wt = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&wt, n * sizeof(uint32_t), 0));
    stage_kernel<BWD><<<blocks_for(n, 256), 256>>>(wt, params, r);
    CUDA_LAUNCH_CHECK();
    return (float *)wt;
}
// Head h's staged weights into W (shared memory) by cp.async, one group (the caller waits).
__device__ inline void load_weights(float *W, const float *wt, int h) {
    const float *wh = wt + (size_t)h * W_HEAD;
    for (int f = threadIdx.x; f < W_HEAD / 4; f += THREADS) __pipeline_memcpy_async(W + 4 * f, wh + 4 * f, 16);
    __pipeline_commit();
}

// acc = the warp tile (rows row0 + 16 m + fragment row, n-tiles nt0 + n) of a conv as a product:
// sum over taps i and K reduction channels of A[row + shift_i] Wl_i, shift_i = DIL i (forward)
// or DIL (TAPS - 1 - i) (REVERSE: the backward's input gradient). A: fp32 rows of stride SA,
// tf32 values already (A_TF32) or rounded here; Wl: the conv's staged B fragments (NTT n-tiles).
template <int K, int NTT, int SA, int MT, int NT, bool REVERSE, bool A_TF32>
__device__ inline void warp_product(float (&acc)[MT][NT][4], const float *A, const float *Wl, int row0, int nt0) {
    using namespace hyla_mma;
    constexpr int KS = K / 16;
    const int lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
    auto operand = [](float x) { return A_TF32 ? __float_as_uint(x) : to_tf32(x); };
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int n = 0; n < NT; n++) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0;
#pragma unroll
    for (int i = 0; i < TAPS; i++) {
        const int shift = DIL * (REVERSE ? TAPS - 1 - i : i);
        const float *a_lo[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) a_lo[m] = A + (row0 + 16 * m + mma_row(g) + shift) * SA + 4 * tig;
        const float *w = Wl + (i * KS * NTT + nt0) * FRAG + 4 * lane;
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
                const float4 x = load4(a_lo[m] + 16 * s), y = load4(a_lo[m] + 8 * SA + 16 * s);
                const uint32_t a0[4] = {operand(x.x), operand(y.x), operand(x.y), operand(y.y)};
                const uint32_t a1[4] = {operand(x.z), operand(y.z), operand(x.w), operand(y.w)};
#pragma unroll
                for (int n = 0; n < NT; n++)
                    mma_tf32(acc[m][n], a0, bf[n][0], bf[n][1]), mma_tf32(acc[m][n], a1, bf[n][2], bf[n][3]);
            }
        }
    }
}
// The warp tile's C fragments 4 neighbouring channels of a row at a time: f(i, row, n0, a[4]),
// i = m NT + n (a constant once unrolled: for the caller's per-quad registers). In a C fragment
// lane 4 g + tig holds channels 2 tig, 2 tig + 1 of rows g and g + 8; the lanes of a pair swap
// halves (run_product_mma's epilogue). The channels of quad n: quad_col(nt0 + n).
__device__ inline int quad_col(int nt) { return 8 * nt + 4 * (threadIdx.x % 4 / 2); }
template <int MT, int NT, class F>
__device__ inline void for_each_quad(const float (&acc)[MT][NT][4], int row0, int nt0, F f) {
    const int lane = threadIdx.x % 32, g = lane / 4;
    const bool odd = lane & 1;
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const float *c = acc[m][n];
            const float x = __shfl_xor_sync(0xffffffffu, odd ? c[0] : c[2], 1);
            const float y = __shfl_xor_sync(0xffffffffu, odd ? c[1] : c[3], 1);
            const float a[4] = {odd ? x : c[0], odd ? y : c[1], odd ? c[2] : x, odd ? c[3] : y};
            f(m * NT + n, row0 + 16 * m + mma_row(g) + (odd ? 8 : 0), quad_col(nt0 + n), a);
        }
}

static inline int sm_count(void) {
    int dev = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n > 0 ? n : 1;
}

} // namespace fixed

#endif
