// NSA's query-side tiles (MODEL.md §6): the selected branch's forward pass and dq of the
// compressed and selected branches. The heads of a kv group share their key set (the selected
// blocks are chosen per group, the pooled keys are the group's), so a tile is one token x 16
// heads of a group against 64 keys: each key row is loaded once for the group. Flash-style:
// online softmax in the forward pass, probabilities recomputed from the saved lse in the
// backward pass. fp32 on the CUDA cores; 128 threads, thread (ty, tx) holds rows ty, ty + 8 and
// keys (or value columns) tx + 16 c; a row reduces across the 16 lanes of a half-warp.
#include "cuda_check.h"
#include "cuda_flash_tiles.cuh"
#include "cuda_nsa.h"

namespace {

using flash::row_max;
using flash::row_sum;
constexpr int QR = 16, KT = 64, QT = 128, RPT = QR / 8, CPT = KT / 16;

// The tile's (b, t, kv head h) and its heads g0 .. g0 + nrows - 1 of the group (grid.y
// chunks groups wider than 16); row0 = query row of the first.
struct qtile {
    int b, t, h, nrows;
    size_t row0;
};
__device__ inline qtile tile_of(const nsa_dims &s) {
    qtile p;
    const int task = blockIdx.x, g0 = blockIdx.y * QR;
    p.h = task % s.Hkv, p.t = task / s.Hkv % s.L, p.b = task / (s.Hkv * s.L), p.nrows = min(QR, s.G - g0);
    p.row0 = ((size_t)p.b * s.L + p.t) * s.Hq + (size_t)p.h * s.G + g0;
    return p;
}

// Shared rows of DP + 1 floats (lanes reading one column of different rows: different banks).
template <int DP> __device__ inline void load_qrows(float *sh, const float *x, const qtile &p, int d) {
    for (int e = threadIdx.x; e < QR * DP; e += QT) {
        const int r = e / DP, c = e % DP;
        sh[r * (DP + 1) + c] = r < p.nrows && c < d ? x[(p.row0 + r) * d + c] : 0.0f;
    }
}
// rows kpos[] (< 0: zeros) of kv head h of a [B, n, Hkv, d] tensor.
template <int DP>
__device__ inline void load_keys(float *sh, const float *x, const int *kpos, int b, int n, int Hkv, int h, int d) {
    for (int e = threadIdx.x; e < KT * DP; e += QT) {
        const int r = e / DP, c = e % DP, j = kpos[r];
        sh[r * (DP + 1) + c] = j >= 0 && c < d ? x[(((size_t)b * n + j) * Hkv + h) * d + c] : 0.0f;
    }
}

// sc[r][c] = <A row ty + 8 r, B row tx + 16 c>.
template <int DP> __device__ inline void qk(float (&sc)[RPT][CPT], const float *A, const float *Bm) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
    for (int r = 0; r < RPT; r++)
#pragma unroll
        for (int c = 0; c < CPT; c++) sc[r][c] = 0;
#pragma unroll 8
    for (int e = 0; e < DP; e++) {
        float a[RPT], bv[CPT];
#pragma unroll
        for (int r = 0; r < RPT; r++) a[r] = A[(ty + 8 * r) * (DP + 1) + e];
#pragma unroll
        for (int c = 0; c < CPT; c++) bv[c] = Bm[(tx + 16 * c) * (DP + 1) + e];
#pragma unroll
        for (int r = 0; r < RPT; r++)
#pragma unroll
            for (int c = 0; c < CPT; c++) sc[r][c] += a[r] * bv[c];
    }
}

// acc[r][c] += sum_kk P[ty + 8 r][kk] X[kk][tx + 16 c] (P: QR x KT, stride KT + 1).
template <int DP> __device__ inline void pv(float (&acc)[RPT][DP / 16], const float *P, const float *X) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll 4
    for (int kk = 0; kk < KT; kk++) {
        float p[RPT];
#pragma unroll
        for (int r = 0; r < RPT; r++) p[r] = P[(ty + 8 * r) * (KT + 1) + kk];
#pragma unroll
        for (int c = 0; c < DP / 16; c++) {
            const float x = X[kk * (DP + 1) + tx + 16 * c];
#pragma unroll
            for (int r = 0; r < RPT; r++) acc[r][c] += p[r] * x;
        }
    }
}

// Key range [j0, j1) of slot `slot` of a tile's key set: the selected branch's block
// block_idx[slot] cut to keys <= t (empty when -1), or the compressed branch's complete pooled
// blocks c < (t + 1) / b (one slot).
__device__ inline void slot_range(int x, const int32_t *idx, int slot, int t, const nsa_dims &s, int *j0, int *j1) {
    if (x == NSA_CMP) {
        *j0 = 0, *j1 = (t + 1) / s.bs;
        return;
    }
    const int c = idx[slot];
    *j0 = c < 0 ? 0 : c * s.bs;
    *j1 = c < 0 ? 0 : min(min(*j0 + s.bs, t + 1), s.L);
}

template <int DP>
__global__ void __launch_bounds__(QT) slc_fwd_kernel(nsa_saved sv, const float *q, const float *k, const float *v,
                                                     const int32_t *block_idx, nsa_dims s) {
    extern __shared__ float sh[];
    float *Qs = sh, *Ks = Qs + QR * (DP + 1), *Vs = Ks + KT * (DP + 1), *Ps = Vs + KT * (DP + 1);
    __shared__ int kpos[KT];
    const qtile p = tile_of(s);
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    load_qrows<DP>(Qs, q, p, s.d);
    float m[RPT], l[RPT], acc[RPT][DP / 16];
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        m[r] = -INFINITY, l[r] = 0;
#pragma unroll
        for (int c = 0; c < DP / 16; c++) acc[r][c] = 0;
    }
    const int32_t *idx = block_idx + (((size_t)p.b * s.L + p.t) * s.Hkv + p.h) * s.nsel;
    for (int slot = 0; slot < s.nsel; slot++) {
        int j0, j1;
        slot_range(NSA_SLC, idx, slot, p.t, s, &j0, &j1);
        for (int a = j0; a < j1; a += KT) {
            __syncthreads(); // the previous tile's kpos, Ks, Vs, Ps are no longer read
            if (threadIdx.x < KT) kpos[threadIdx.x] = a + (int)threadIdx.x < j1 ? a + (int)threadIdx.x : -1;
            __syncthreads();
            load_keys<DP>(Ks, k, kpos, p.b, s.L, s.Hkv, p.h, s.d);
            load_keys<DP>(Vs, v, kpos, p.b, s.L, s.Hkv, p.h, s.d);
            __syncthreads();
            float sc[RPT][CPT];
            qk<DP>(sc, Qs, Ks);
#pragma unroll
            for (int r = 0; r < RPT; r++) {
                float mx = -INFINITY;
#pragma unroll
                for (int c = 0; c < CPT; c++) {
                    sc[r][c] = kpos[tx + 16 * c] >= 0 ? sc[r][c] * s.scale : -INFINITY;
                    mx = fmaxf(mx, sc[r][c]);
                }
                const float m_new = fmaxf(m[r], row_max(mx));
                const float corr = m_new == -INFINITY ? 1.0f : expf(m[r] - m_new);
                float psum = 0;
#pragma unroll
                for (int c = 0; c < CPT; c++) {
                    const float pr = m_new == -INFINITY ? 0.0f : expf(sc[r][c] - m_new);
                    Ps[(ty + 8 * r) * (KT + 1) + tx + 16 * c] = pr;
                    psum += pr;
                }
                l[r] = l[r] * corr + row_sum(psum);
                m[r] = m_new;
#pragma unroll
                for (int c = 0; c < DP / 16; c++) acc[r][c] *= corr;
            }
            __syncthreads();
            pv<DP>(acc, Ps, Vs);
        }
    }
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        const int row = ty + 8 * r;
        if (row >= p.nrows) continue;
        const size_t R = p.row0 + row;
        const float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f; // no key: o = 0, lse = 0 (the CPU's)
#pragma unroll
        for (int c = 0; c < DP / 16; c++)
            if (tx + 16 * c < s.d) sv.o[NSA_SLC][R * s.d + tx + 16 * c] = acc[r][c] * inv;
        if (tx == 0) sv.lse[NSA_SLC][R] = l[r] > 0 ? m[r] + logf(l[r]) : 0.0f;
    }
}

// dq += scale sum_j dS_j k_j over the compressed branch's pooled keys, then the selected
// blocks; branch x enters the output as g_x o_x: dP_j = g_x <dout, v_j>, dS_j = P_j (dP_j - D_x).
template <int DP>
__global__ void __launch_bounds__(QT) dq_kernel(float *dq, const float *dout, nsa_saved sv, const float *delta,
                                                const float *q, const float *k, const float *v,
                                                const int32_t *block_idx, nsa_dims s) {
    extern __shared__ float sh[];
    float *Qs = sh, *dOs = Qs + QR * (DP + 1), *Ks = dOs + QR * (DP + 1), *Vs = Ks + KT * (DP + 1);
    float *Ps = Vs + KT * (DP + 1);
    __shared__ int kpos[KT];
    const qtile p = tile_of(s);
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    const size_t rows = (size_t)s.B * s.L * s.Hq;
    load_qrows<DP>(Qs, q, p, s.d);
    load_qrows<DP>(dOs, dout, p, s.d);
    float acc[RPT][DP / 16];
#pragma unroll
    for (int r = 0; r < RPT; r++)
#pragma unroll
        for (int c = 0; c < DP / 16; c++) acc[r][c] = 0;
    const int32_t *idx = block_idx + (((size_t)p.b * s.L + p.t) * s.Hkv + p.h) * s.nsel;
#pragma unroll
    for (int x = NSA_CMP; x <= NSA_SLC; x++) { // unrolled: sv's arrays indexed by constants
        float lse[RPT], D[RPT], g[RPT];
#pragma unroll
        for (int r = 0; r < RPT; r++) {
            const bool valid = ty + 8 * r < p.nrows;
            const size_t R = p.row0 + (valid ? ty + 8 * r : 0);
            lse[r] = sv.lse[x][R], D[r] = delta[x * rows + R], g[r] = valid ? sv.gate[R * 3 + x] : 0.0f;
        }
        const float *K = x == NSA_CMP ? sv.kbar : k, *V = x == NSA_CMP ? sv.vbar : v;
        const int n = x == NSA_CMP ? s.NB : s.L, slots = x == NSA_CMP ? 1 : s.nsel;
        for (int slot = 0; slot < slots; slot++) {
            int j0, j1;
            slot_range(x, idx, slot, p.t, s, &j0, &j1);
            for (int a = j0; a < j1; a += KT) {
                __syncthreads();
                if (threadIdx.x < KT) kpos[threadIdx.x] = a + (int)threadIdx.x < j1 ? a + (int)threadIdx.x : -1;
                __syncthreads();
                load_keys<DP>(Ks, K, kpos, p.b, n, s.Hkv, p.h, s.d);
                load_keys<DP>(Vs, V, kpos, p.b, n, s.Hkv, p.h, s.d);
                __syncthreads();
                float sc[RPT][CPT], dp[RPT][CPT];
                qk<DP>(sc, Qs, Ks);
                qk<DP>(dp, dOs, Vs);
#pragma unroll
                for (int r = 0; r < RPT; r++)
#pragma unroll
                    for (int c = 0; c < CPT; c++) {
                        const bool vis = kpos[tx + 16 * c] >= 0 && ty + 8 * r < p.nrows;
                        const float pr = vis ? expf(sc[r][c] * s.scale - lse[r]) : 0.0f;
                        Ps[(ty + 8 * r) * (KT + 1) + tx + 16 * c] = pr * (g[r] * dp[r][c] - D[r]);
                    }
                __syncthreads();
                pv<DP>(acc, Ps, Ks);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RPT; r++) {
        const int row = ty + 8 * r;
        if (row >= p.nrows) continue;
        const size_t R = p.row0 + row;
#pragma unroll
        for (int c = 0; c < DP / 16; c++)
            if (tx + 16 * c < s.d) dq[R * s.d + tx + 16 * c] += s.scale * acc[r][c];
    }
}

template <int DP> size_t bytes(int q_tiles) {
    return sizeof(float) * ((size_t)(q_tiles * QR + 2 * KT) * (DP + 1) + (size_t)QR * (KT + 1));
}

template <int DP>
void slc_fwd(const nsa_saved &sv, const float *q, const float *k, const float *v, const int32_t *block_idx,
             const nsa_dims &s) {
    const size_t sb = bytes<DP>(1);
    CUDA_CHECK(cudaFuncSetAttribute((const void *)slc_fwd_kernel<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)sb));
    const dim3 grid((unsigned)((size_t)s.B * s.L * s.Hkv), (unsigned)((s.G + QR - 1) / QR));
    slc_fwd_kernel<DP><<<grid, QT, sb>>>(sv, q, k, v, block_idx, s);
    CUDA_LAUNCH_CHECK();
}

template <int DP>
void dq_launch(float *dq, const float *dout, const nsa_saved &sv, const float *delta, const float *q, const float *k,
               const float *v, const int32_t *block_idx, const nsa_dims &s) {
    const size_t sb = bytes<DP>(2);
    CUDA_CHECK(
        cudaFuncSetAttribute((const void *)dq_kernel<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sb));
    const dim3 grid((unsigned)((size_t)s.B * s.L * s.Hkv), (unsigned)((s.G + QR - 1) / QR));
    dq_kernel<DP><<<grid, QT, sb>>>(dq, dout, sv, delta, q, k, v, block_idx, s);
    CUDA_LAUNCH_CHECK();
}

} // namespace

void nsa_slc_fwd(const nsa_saved &sv, const float *q, const float *k, const float *v, const int32_t *block_idx,
                 const nsa_dims &s) {
    if (s.d <= 16) slc_fwd<16>(sv, q, k, v, block_idx, s);
    else if (s.d <= 32) slc_fwd<32>(sv, q, k, v, block_idx, s);
    else if (s.d <= 64) slc_fwd<64>(sv, q, k, v, block_idx, s);
    else slc_fwd<128>(sv, q, k, v, block_idx, s);
}

void nsa_dq(float *dq, const float *dout, const nsa_saved &sv, const float *delta, const float *q, const float *k,
            const float *v, const int32_t *block_idx, const nsa_dims &s) {
    if (s.d <= 16) dq_launch<16>(dq, dout, sv, delta, q, k, v, block_idx, s);
    else if (s.d <= 32) dq_launch<32>(dq, dout, sv, delta, q, k, v, block_idx, s);
    else if (s.d <= 64) dq_launch<64>(dq, dout, sv, delta, q, k, v, block_idx, s);
    else dq_launch<128>(dq, dout, sv, delta, q, k, v, block_idx, s);
}
