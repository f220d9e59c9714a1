// The tensor-core pieces of NSA's bf16 tiles (cuda_nsa_mma.cu, cuda_nsa_keys.cu) on the
// register fragments of cuda_mma.cuh (mma.m16n8k16, bf16 operands, fp32 accumulation).
#ifndef HYLA_CUDA_NSA_MMA_CUH
#define HYLA_CUDA_NSA_MMA_CUH

#include <cuda_bf16.h>
#include <cuda_pipeline.h>
#include <stdint.h>

#include "cuda_mma.cuh"

namespace nsa_mma {

typedef __nv_bfloat16 bf16;
constexpr int KT = 64; // keys (or query rows) per tile
// The softmax runs in base 2 (hyla_mma::exp2_approx of scores scaled by scale LOG2E); lse is
// kept in base e, as the branches' contract says.
using hyla_mma::LOG2E;
using hyla_mma::LN2;

using hyla_mma::ldsm_x4;
using hyla_mma::ldsm_x4_trans;
using hyla_mma::mma;
using hyla_mma::pack;
using hyla_mma::quad_max;
using hyla_mma::quad_sum;

// A fragments of a 16 x D fp32 matrix whose row g of this lane is at rows[0] and row g + 8 at
// rows[1] (NULL: zeros), rounded to bf16.
template <int D> __device__ inline void load_a(uint32_t (&a)[D / 16][4], const float *const (&rows)[2]) {
    const int tig = threadIdx.x % 4;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++)
#pragma unroll
        for (int half = 0; half < 2; half++) { // columns 16 ks + 8 half + 2 tig, + 1
#pragma unroll
            for (int rr = 0; rr < 2; rr++) {
                float2 v = make_float2(0, 0);
                if (rows[rr]) v = *(const float2 *)(rows[rr] + 16 * ks + 8 * half + 2 * tig);
                a[ks][2 * half + rr] = pack(v.x, v.y);
            }
        }
}

// Rows j0 .. j0 + 63 of kv head h of a bf16 [B, n, Hkv, D] tensor into sh[64][D + 8] by
// cp.async, 16 bytes a copy (not committed: the caller commits, waits and __syncwarp()s); rows
// at or past j1 are zeros. One warp.
template <int D>
__device__ inline void load_tile_async(bf16 *sh, const bf16 *x, int b, int n, int Hkv, int h, int j0, int j1) {
    const int lane = threadIdx.x % 32;
    constexpr int PER_ROW = D / 8;
    for (int e = lane; e < KT * PER_ROW; e += 32) {
        const int r = e / PER_ROW, c = e % PER_ROW * 8, j = j0 + r;
        bf16 *dst = sh + r * (D + 8) + c;
        if (j < j1) __pipeline_memcpy_async(dst, x + (((size_t)b * n + j) * Hkv + h) * D + c, 16);
        else *(uint4 *)dst = make_uint4(0, 0, 0, 0);
    }
}

// s[n] = A B^T for the 8 key columns of n-tile n: B rows (keys) of sh[64][D + 8]. One ldmatrix
// gives the B fragments of two n-tiles at a k-step (rows 8 n .. 8 n + 15; each n-tile's sum
// over the k-steps in order, as one 32-bit load per fragment register gave them).
template <int D> __device__ inline void scores(float (&s)[KT / 8][4], const uint32_t (&a)[D / 16][4], const bf16 *sh) {
    const int lane = threadIdx.x % 32;
    const bf16 *p = sh + ((lane & 7) + 8 * (lane >> 4)) * (D + 8) + 8 * ((lane >> 3) & 1);
#pragma unroll
    for (int n = 0; n < KT / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0;
#pragma unroll
    for (int np = 0; np < KT / 16; np++) // n-tiles 2 np and 2 np + 1
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4(b0, b1, b2, b3, p + 16 * np * (D + 8) + 16 * ks);
            mma(s[2 * np], a[ks], b0, b1);
            mma(s[2 * np + 1], a[ks], b2, b3);
        }
}

// acc += P X: P's C fragments (16 x 64) as A fragments, X = sh[64][D + 8] (keys x columns).
template <int D> __device__ inline void times_rows(float (&acc)[D / 8][4], const float (&p)[KT / 8][4], const bf16 *sh) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int ks = 0; ks < KT / 16; ks++) {
        const uint32_t a[4] = {pack(p[2 * ks][0], p[2 * ks][1]), pack(p[2 * ks][2], p[2 * ks][3]),
                               pack(p[2 * ks + 1][0], p[2 * ks + 1][1]), pack(p[2 * ks + 1][2], p[2 * ks + 1][3])};
#pragma unroll
        for (int nn = 0; nn < D / 16; nn++) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4_trans(b0, b1, b2, b3, sh + (16 * ks + (lane & 15)) * (D + 8) + 16 * nn + 8 * (lane >> 4));
            mma(acc[2 * nn], a, b0, b1);
            mma(acc[2 * nn + 1], a, b2, b3);
        }
    }
}

} // namespace nsa_mma

#endif
