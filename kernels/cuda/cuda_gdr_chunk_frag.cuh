// CUDA: what the chunked delta rule's register-fragment kernels share (cuda_gdr_chunk_state3.cu,
// _out3.cu, _local2.cu): a warp's 16 rows of a chunk of an fp32 activation straight from device
// memory into bf16 A fragments, C fragments handed over as A fragments, and the two products
// of a warp's 16 rows with a shared [64][LDH] bf16 tile (cuda_mma.cuh's layouts).
#ifndef HYLA_CUDA_GDR_CHUNK_FRAG_CUH
#define HYLA_CUDA_GDR_CHUNK_FRAG_CUH

#include <stdint.h>

#include "cuda_gdr_chunk.cuh"
#include "cuda_mma.cuh"

namespace gdrc {

// Columns i, i + 1 (i even) of row r of a chunk (element (r, i) at rows[r stride + i]), zeros at
// rows >= c and columns >= width, packed to bf16 (round to nearest, as __float2bfloat16): one
// 8-byte load where width is even (then a pair is wholly inside or wholly outside, and aligned
// when every row starts 8-byte aligned), two loads otherwise.
__device__ inline uint32_t pair_bf16(const float *rows, size_t stride, int r, int i, int c, int width) {
    float x0 = 0.0f, x1 = 0.0f;
    if (r < c) {
        const float *p = rows + (size_t)r * stride + i;
        if (width % 2 == 0) {
            if (i < width) {
                const float2 x = *(const float2 *)p;
                x0 = x.x, x1 = x.y;
            }
        } else {
            if (i < width) x0 = p[0];
            if (i + 1 < width) x1 = p[1];
        }
    }
    return hyla_mma::pack(x0, x1);
}

// The A fragments of rows r0 .. r0 + 15 over the first kt k-steps (16 columns each; KS the most).
template <int KS>
__device__ inline void rows_to_a(uint32_t (&a)[KS][4], const float *rows, size_t stride, int r0, int c, int width,
                                 int kt) {
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        if (ks >= kt) break;
        const int i = 16 * ks + 2 * t;
        a[ks][0] = pair_bf16(rows, stride, r0 + g, i, c, width);
        a[ks][1] = pair_bf16(rows, stride, r0 + g + 8, i, c, width);
        a[ks][2] = pair_bf16(rows, stride, r0 + g, i + 8, c, width);
        a[ks][3] = pair_bf16(rows, stride, r0 + g + 8, i + 8, c, width);
    }
}

// A fragments (bf16) of values f(n-tile, e) laid out as 16-row C fragments (lane 4 g + t holds
// row g + 8 (e / 2), column 8 n-tile + 2 t + e % 2): k-step ks = n-tiles 2 ks, 2 ks + 1, the
// C-to-A handover of FlashAttention-2's P (cuda_mma.cuh).
template <int KS, typename F> __device__ inline void pack_a(uint32_t (&a)[KS][4], F f) {
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        a[ks][0] = hyla_mma::pack(f(2 * ks, 0), f(2 * ks, 1));
        a[ks][1] = hyla_mma::pack(f(2 * ks, 2), f(2 * ks, 3));
        a[ks][2] = hyla_mma::pack(f(2 * ks + 1, 0), f(2 * ks + 1, 1));
        a[ks][3] = hyla_mma::pack(f(2 * ks + 1, 2), f(2 * ks + 1, 3));
    }
}

// out (16 x 64) = A (16 x 16 kt, fragments) X^T, X a shared [64][LDH] tile (out's columns are its
// rows): B[k][n] = X[n][k] by ldmatrix; from zero, k ascending (KS: the most k-steps).
template <int KS>
__device__ inline void product_xt(float (&out)[8][4], const uint32_t (&a)[KS][4], const bf16 *X, int kt) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) out[nt][0] = out[nt][1] = out[nt][2] = out[nt][3] = 0.0f;
    const bf16 *p = X + ((lane & 7) + 8 * (lane >> 4)) * LDH + 8 * ((lane >> 3) & 1);
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        if (ks >= kt) break;
#pragma unroll
        for (int np = 0; np < 4; np++) { // n-tiles 2 np, 2 np + 1: X's rows 16 np ..
            uint32_t b0, b1, b2, b3;
            hyla_mma::ldsm_x4(b0, b1, b2, b3, p + 16 * np * LDH + 16 * ks);
            hyla_mma::mma(out[2 * np], a[ks], b0, b1);
            hyla_mma::mma(out[2 * np + 1], a[ks], b2, b3);
        }
    }
}

// out (16 x 8 N) = A (16 x 64, fragments) X[:, col0 .. col0 + 8 N), X a shared [64][LDH] tile read
// as [k = its rows][n = its columns] (transposed by ldmatrix); from zero, k ascending. N even.
template <int N>
__device__ inline void product_x(float (&out)[N][4], const uint32_t (&a)[4][4], const bf16 *X, int col0) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int nt = 0; nt < N; nt++) out[nt][0] = out[nt][1] = out[nt][2] = out[nt][3] = 0.0f;
    const bf16 *base = X + (lane & 15) * LDH + 8 * (lane >> 4) + col0;
#pragma unroll
    for (int ks = 0; ks < 4; ks++)
#pragma unroll
        for (int nn = 0; nn < N / 2; nn++) {
            uint32_t b0, b1, b2, b3;
            hyla_mma::ldsm_x4_trans(b0, b1, b2, b3, base + 16 * ks * LDH + 16 * nn);
            hyla_mma::mma(out[2 * nn], a[ks], b0, b1);
            hyla_mma::mma(out[2 * nn + 1], a[ks], b2, b3);
        }
}

} // namespace gdrc

#endif
