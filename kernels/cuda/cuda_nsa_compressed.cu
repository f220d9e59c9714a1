// NSA's compressed branch forward and block importance in one kernel, in the CPU op's exact
// arithmetic (cuda_nsa_exact.cuh): the same operations, in the same order, on the same values
// as cmp_fwd_kernel and importance_kernel (cuda_nsa_select.cu), which stay for head dims past
// 64 and groups past 128 heads. Why a kernel of its own: those two read every pooled key and
// value row from global memory by 4-byte loads, a thread a row, at 12.5% occupancy, and
// computed every score twice (1.46 + 1.18 ms a layer at laNSA's 0.4B shape on an H100, 2026-12-07;
// this kernel 1.63 ms at 91b979f, before head dim 64 became a constant here; what bounds it is
// not measured: the exact arithmetic's unfused, dependent steps and double-precision exp are
// the suspects, as its reads are now broadcasts from shared memory).
// Here a block takes one (batch, kv head) and the T_B = 128 / G positions whose G query heads
// fill its 128 threads: their query rows are staged in shared memory once, the pooled rows 64
// at a time, and every thread's reads are broadcasts or conflict-free 16-byte loads.
//   pass 1: a thread a query row: its scores against the pooled keys c < (t + 1) / b, the
//           running maximum and sum in the CPU's order (as cmp_fwd_kernel), o and lse;
//   pass 2: a thread a (position, block c) pair: the group's compressed probabilities of
//           block c summed over heads in order (as importance_kernel), from pass 1's lse and,
//           when the pooled rows are one chunk, pass 1's scores (kept in shared memory).
#include "cuda_check.h"
#include "cuda_nsa.h"
#include "cuda_nsa_exact.cuh"

namespace {

using namespace nsa_exact;

constexpr int THREADS = 128, CK = 64; // threads (query rows) a block; pooled rows staged at a time
constexpr int DP = 64;                // head dims up to 64
constexpr int ST = DP + 4;            // shared row stride: 16-byte rows, 8 lanes' float4 loads on distinct banks
constexpr int SST = CK + 1;           // kept scores' row stride (over the query rows: SST <= ST)
static_assert(SST <= ST, "the kept scores fit where the query rows were");

constexpr size_t smem_bytes() { return sizeof(float) * ((size_t)(THREADS + 2 * CK) * ST + THREADS); }

struct block_rows {
    int b, h, t0, tb, nrows; // rows (t0 + r / G, head h G + r % G) for r < nrows
};
__device__ inline block_rows rows_of(const nsa_dims &s) {
    block_rows w;
    w.tb = THREADS / s.G;
    w.b = blockIdx.y / s.Hkv, w.h = blockIdx.y % s.Hkv, w.t0 = blockIdx.x * w.tb;
    w.nrows = min(w.tb, s.L - w.t0) * s.G;
    return w;
}
// Global row of the block's row r: ((b L + t) Hq + h G + i).
__device__ inline size_t global_row(const nsa_dims &s, const block_rows &w, int r) {
    return ((size_t)w.b * s.L + w.t0 + r / s.G) * s.Hq + (size_t)w.h * s.G + r % s.G;
}

// Rows c0 .. c0 + CK - 1 of pooled x ([B, NB, Hkv, d]) into sh[CK][ST], zeros past NB and d.
__device__ inline void stage_pooled(float *sh, const float *x, const nsa_dims &s, const block_rows &w, int c0) {
    for (int e = threadIdx.x; e < CK * DP; e += THREADS) {
        const int r = e / DP, col = e % DP, c = c0 + r;
        sh[r * ST + col] = c < s.NB && col < s.d ? x[(((size_t)w.b * s.NB + c) * s.Hkv + w.h) * s.d + col] : 0.0f;
    }
}

// A shared row into registers by 16-byte loads (lanes on rows ST apart: no bank conflicts).
__device__ inline void row_to_registers(float (&x)[DP], const float *row) {
#pragma unroll
    for (int e = 0; e < DP; e += 4) {
        const float4 v = *(const float4 *)(row + e);
        x[e] = v.x, x[e + 1] = v.y, x[e + 2] = v.z, x[e + 3] = v.w;
    }
}

// imp: NULL when the selection is reused (pass 2 skipped). FULL: the head dim is DP (d below is
// a constant: no per-element guards, the value rows read as float4).
template <bool FULL>
__global__ void __launch_bounds__(THREADS, 3) compressed_kernel(nsa_saved sv, float *imp, const float *q, nsa_dims s) {
    const int d = FULL ? DP : s.d;
    extern __shared__ __align__(16) float sh[];
    float *Q = sh, *Kc = Q + THREADS * ST, *Vc = Kc + CK * ST, *lse = Vc + CK * ST;
    const block_rows w = rows_of(s);
    for (int e = threadIdx.x; e < THREADS * DP; e += THREADS) { // the block's query rows, contiguous in global
        const int r = e / DP, col = e % DP;
        Q[r * ST + col] = r < w.nrows && col < d ? q[global_row(s, w, r) * d + col] : 0.0f;
    }
    const int last_t = w.t0 + w.nrows / s.G - 1, chunks = ((last_t + 1) / s.bs + CK - 1) / CK;

    // pass 1: thread r's row (cmp_fwd_kernel's loop, the pooled rows from shared memory)
    const int r = threadIdx.x, t = w.t0 + r / s.G, ic = r < w.nrows ? (t + 1) / s.bs : 0;
    __syncthreads();
    float qr[DP], o[DP];
    row_to_registers(qr, Q + r * ST);
#pragma unroll
    for (int e = 0; e < DP; e++) o[e] = 0;
    float m = -INFINITY, l = 0;
    // One chunk of pooled rows (up to 64 blocks: 4096 tokens of block 64): pass 1 leaves its
    // scores in shared memory for pass 2, over the query rows (in registers by then), where pass
    // 2 would compute the same dot products again (the dot is symmetric: the same bits).
    const bool keep = imp && chunks == 1;
    float *S = Q; // [THREADS][SST]
    for (int k = 0; k < chunks; k++) {
        const int c0 = k * CK;
        __syncthreads(); // the previous chunk's rows are read (and every query row is in registers)
        stage_pooled(Kc, sv.kbar, s, w, c0);
        stage_pooled(Vc, sv.vbar, s, w, c0);
        __syncthreads();
        for (int c = c0; c < min(c0 + CK, ic); c++) {
            const float sc = __fmul_rn(s.scale, dot_exact<DP, true>(qr, Kc + (c - c0) * ST, d));
            if (keep) S[r * SST + c] = sc;
            const float p = online_softmax_step<DP>(sc, m, l, o);
            const float *vb = Vc + (c - c0) * ST;
#pragma unroll
            for (int e = 0; e < DP; e += 4) { // (past d: zero rows, o unused there)
                const float4 w4 = *(const float4 *)(vb + e);
                o[e] += p * w4.x, o[e + 1] += p * w4.y, o[e + 2] += p * w4.z, o[e + 3] += p * w4.w;
            }
        }
    }
    if (r < w.nrows) {
        const size_t row = global_row(s, w, r);
        float *out = sv.o[NSA_CMP] + row * d;
        const float row_lse = l == 0 ? 0.0f : __fadd_rn(m, log_c(l));
#pragma unroll
        for (int e = 0; e < DP; e++)
            if (e < d) out[e] = l == 0 ? 0.0f : o[e] / l;
        sv.lse[NSA_CMP][row] = row_lse, lse[r] = row_lse;
    }
    if (!imp) return; // (the whole block)

    // pass 2: (position, block) pairs, block c of position t an unforced candidate 1 <= c < t / b - 1
    for (int k = 0; k < chunks; k++) {
        const int c0 = k * CK;
        __syncthreads(); // pass 1's lse (and kept scores) written, the previous chunk's rows read
        if (!keep) stage_pooled(Kc, sv.kbar, s, w, c0);
        __syncthreads();
        for (int pair = threadIdx.x; pair < w.tb * CK; pair += THREADS) {
            const int tl = pair / CK, c = c0 + pair % CK, tp = w.t0 + tl, icp = tp / s.bs;
            if (tp >= s.L || c == 0 || c >= icp - 1) continue;
            float kr[DP];
            if (!keep) row_to_registers(kr, Kc + (c - c0) * ST);
            float p = 0;
            for (int i = 0; i < s.G; i++) {
                const int qrow = tl * s.G + i;
                const float sc = keep ? S[qrow * SST + c] // (c < t / b - 1 < pass 1's (t + 1) / b)
                                      : __fmul_rn(s.scale, dot_exact<DP, true>(kr, Q + qrow * ST, d));
                p = __fadd_rn(p, exp_c(__fsub_rn(sc, lse[qrow])));
            }
            imp[(((size_t)w.b * s.L + tp) * s.Hkv + w.h) * s.NB + c] = p;
        }
    }
}

} // namespace

bool nsa_compressed_supported(const nsa_dims &s) { return s.d <= DP && s.G <= THREADS; }

void nsa_compressed(const nsa_saved &sv, float *imp, const float *q, const nsa_dims &s) {
    const int tb = THREADS / s.G;
    const dim3 grid((unsigned)((s.L + tb - 1) / tb), (unsigned)(s.B * s.Hkv));
    for (const void *f : {(const void *)compressed_kernel<true>, (const void *)compressed_kernel<false>})
        CUDA_CHECK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_bytes()));
    if (s.d == DP) compressed_kernel<true><<<grid, THREADS, smem_bytes()>>>(sv, imp, q, s);
    else compressed_kernel<false><<<grid, THREADS, smem_bytes()>>>(sv, imp, q, s);
    CUDA_LAUNCH_CHECK();
}
