// The 64 x 64 tile arithmetic of the fp32 attention kernels (cuda_flash_attention.cu), shared
// with NSA's key-side kernels (cuda_nsa_keys.cu): 256 threads hold a 4 x 4 block of a tile each
// (rows ty + 16 r, columns tx + 16 c); a row reduces across the 16 lanes of a half-warp.
#ifndef HYLA_CUDA_FLASH_TILES_CUH
#define HYLA_CUDA_FLASH_TILES_CUH

#include "cuda_flash_common.cuh"

namespace flash {

constexpr int THREADS = 256, SIDE = 16, PER = TILE / SIDE; // PER x PER scores per thread

// Shared-memory tiles: rows of DP (padded head dim) + 1 floats, so that lanes reading the
// same column of different rows hit different banks.
template <int DP> struct tile_row {
    static constexpr int stride = DP + 1;
};

// rows (b, pos, head) of a [B, L, H, d] tensor into sh[TILE][DP+1]; pos[r] < 0: zeros.
template <int DP>
__device__ inline void load_rows(float *sh, const float *x, const int *pos, int b, int L, int H, int head, int d) {
    for (int e = threadIdx.x; e < TILE * DP; e += THREADS) {
        const int r = e / DP, c = e % DP, p = pos[r];
        sh[r * tile_row<DP>::stride + c] = (p >= 0 && c < d) ? x[(((size_t)b * L + p) * H + head) * d + c] : 0.0f;
    }
}

// s[r][c] = <A row (ty + 16 r), B row (tx + 16 c)> over DP columns (zero padded).
template <int DP> __device__ inline void tile_dots(float (&s)[PER][PER], const float *A, const float *Bm) {
    const int ty = threadIdx.x / SIDE, tx = threadIdx.x % SIDE;
#pragma unroll
    for (int r = 0; r < PER; r++)
#pragma unroll
        for (int c = 0; c < PER; c++) s[r][c] = 0;
#pragma unroll 8
    for (int e = 0; e < DP; e++) {
        float a[PER], bv[PER];
#pragma unroll
        for (int r = 0; r < PER; r++) a[r] = A[(ty + SIDE * r) * tile_row<DP>::stride + e];
#pragma unroll
        for (int c = 0; c < PER; c++) bv[c] = Bm[(tx + SIDE * c) * tile_row<DP>::stride + e];
#pragma unroll
        for (int r = 0; r < PER; r++)
#pragma unroll
            for (int c = 0; c < PER; c++) s[r][c] += a[r] * bv[c];
    }
}

// acc[r][c] += sum_k P[ty + 16 r][k] * X[k][tx + 16 c] (P: TILE x TILE, stride TILE + 1).
template <int DP> __device__ inline void tile_pv(float (&acc)[PER][DP / SIDE], const float *P, const float *X) {
    const int ty = threadIdx.x / SIDE, tx = threadIdx.x % SIDE;
#pragma unroll 4
    for (int kk = 0; kk < TILE; kk++) {
        float p[PER];
#pragma unroll
        for (int r = 0; r < PER; r++) p[r] = P[(ty + SIDE * r) * (TILE + 1) + kk];
#pragma unroll
        for (int c = 0; c < DP / SIDE; c++) {
            const float x = X[kk * tile_row<DP>::stride + tx + SIDE * c];
#pragma unroll
            for (int r = 0; r < PER; r++) acc[r][c] += p[r] * x;
        }
    }
}

// Sum / max over the 16 lanes of a half-warp (one score row).
__device__ inline float row_sum(float v) {
    for (int o = SIDE / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ inline float row_max(float v) {
    for (int o = SIDE / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

} // namespace flash

#endif
