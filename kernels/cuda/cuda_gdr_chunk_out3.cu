// CUDA: the chunked gated delta rule's output, F6, with every product on register fragments
// (HYLA_GDR_OUT3; the WMMA form is out2_kernel, cuda_gdr_chunk_fwd.cu):
//   O = Qs H_n + P Delta,   P = scale (Q K^T ⊙ E), causal,
// for one chunk a block. Each of its 4 warps owns 16 rows of the chunk, as FlashAttention-2's
// warps own query rows: Q K^T lands in C fragments, P is formed on them and, packed to bf16,
// is the A fragment of P Delta; the warp's rows of Q and Qs come from device memory straight
// into A fragments. Only the operands every warp reads (K, Delta, H_n) pass through shared
// memory (70 KB: three blocks an SM, against out2's two), and no fp32 tile does: out2 takes
// P and each 16 x 16 output tile through shared staging and a barrier or two per step.
//
// The same bits as out2_kernel: each product starts from zero and sums over k in ascending
// 16-steps (the mma instructions WMMA's tiles are made of, in that order); P is the same
// expression on the same values, rounded to bf16 once; O = (0 + Qs H_n) + P Delta as out2's
// accumulators add them. ctest emu.gdr_chunk compares the bits.
#include "backend_cuda.h"
#include "cuda_gdr_chunk.cuh"
#include "cuda_gdr_chunk_frag.cuh"
#include "cuda_mma.cuh"
#include "cuda_switch.h"

namespace gdrc {
namespace {

constexpr int OWARPS = 4, OTHREADS = 32 * OWARPS; // warp w: rows 16 w .. 16 w + 15 of the chunk
constexpr int KS_MAX = DMAX / 16, NT_MAX = DMAX / 8; // k-steps of a key row, n-tiles of a value row

constexpr size_t OUT3_SMEM = 2 * carve_size(sizeof(bf16) * CH * LDH) + carve_size(sizeof(bf16) * DMAX * LDH) +
                             carve_size(sizeof(float) * CH);

// F6 for chunk blockIdx.x of (b, h) = blockIdx.y.
__global__ void __launch_bounds__(OTHREADS, 3) out3_kernel(float *o, scratch s, const float *q, const float *k, dims d) {
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Kh = sc.take<bf16>(CH * LDH), *Dh = sc.take<bf16>(CH * LDH), *Sh = sc.take<bf16>(DMAX * LDH);
    float *gc = sc.take<float>(CH);
    const int n = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H, tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int t0 = n * CH, c = min(CH, d.L - t0), dkp = d.dkp, dvp = d.dvp, kt = dkp / 16, vt = dvp / 16;
    const size_t cb = (size_t)bh * d.nt + n, row0 = ((size_t)b * d.L + t0) * d.H + h;
    // H_n and Delta by cp.async; K converted to bf16 on its way in (zeros past the chunk and dk)
    copy_async_bf16<OTHREADS>(Sh, LDH, s.states + cb * dkp * dvp, dvp, dkp, dvp);
    copy_async_bf16<OTHREADS>(Dh, LDH, s.delta + cb * CH * dvp, dvp, CH, dvp);
    __pipeline_commit();
    if (tid < CH) gc[tid] = s.gcum[cb * CH + tid];
    load_rows_bf16<OTHREADS>(Kh, LDH, k + row0 * d.dk, (size_t)d.H * d.dk, c, d.dk, dkp);
    // this warp's rows of Q (bf16) and Qs as A fragments, from device memory
    const int r_lo = 16 * warp + g, r_hi = r_lo + 8;
    uint32_t aq[KS_MAX][4], as[KS_MAX][4];
    rows_to_a(aq, q + row0 * d.dk, (size_t)d.H * d.dk, 16 * warp, c, d.dk, kt);
    const bf16 *qs = s.qs + cb * CH * dkp;
#pragma unroll
    for (int ks = 0; ks < KS_MAX; ks++) {
        if (ks >= kt) break;
        const int i = 16 * ks + 2 * t;
        as[ks][0] = *(const uint32_t *)(qs + r_lo * dkp + i), as[ks][1] = *(const uint32_t *)(qs + r_hi * dkp + i);
        as[ks][2] = *(const uint32_t *)(qs + r_lo * dkp + i + 8);
        as[ks][3] = *(const uint32_t *)(qs + r_hi * dkp + i + 8);
    }
    __pipeline_wait_prior(0);
    __syncthreads();
    // S = Q K^T (16 x 64): B[k][n] = K[n][k], K's rows by ldmatrix
    float sc4[8][4];
    product_xt(sc4, aq, Kh, kt);
    // P = scale (Q K^T ⊙ E), causal, as bf16 A fragments (k-step ks: key columns 16 ks ..)
    uint32_t ap[4][4];
    {
        const float g_lo = gc[r_lo], g_hi = gc[r_hi];
        pack_a(ap, [&](int nt, int e) {
            const int r = e < 2 ? r_lo : r_hi, j = 8 * nt + 2 * t + (e & 1);
            return j <= r ? d.scale * sc4[nt][e] * expf((e < 2 ? g_lo : g_hi) - gc[j]) : 0.0f;
        });
    }
    if (s.p) { // P to the forward's `saved` for the backward's local term (as out2 saves it)
        uint32_t *p = (uint32_t *)(s.p + cb * CH * CH);
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            const int j = 16 * ks + 2 * t;
            p[(r_lo * CH + j) / 2] = ap[ks][0], p[(r_hi * CH + j) / 2] = ap[ks][1];
            p[(r_lo * CH + j + 8) / 2] = ap[ks][2], p[(r_hi * CH + j + 8) / 2] = ap[ks][3];
        }
    }
    // Qs H_n (16 x dvp): B from H_n's rows [key][value], transposed by ldmatrix
    float qh[NT_MAX][4];
#pragma unroll
    for (int nt = 0; nt < NT_MAX; nt++) qh[nt][0] = qh[nt][1] = qh[nt][2] = qh[nt][3] = 0.0f;
    const bf16 *ph = Sh + (lane & 15) * LDH + 8 * (lane >> 4);
#pragma unroll
    for (int ks = 0; ks < KS_MAX; ks++) {
        if (ks >= kt) break;
#pragma unroll
        for (int nn = 0; nn < NT_MAX / 2; nn++) {
            if (nn >= vt) break;
            uint32_t b0, b1, b2, b3;
            hyla_mma::ldsm_x4_trans(b0, b1, b2, b3, ph + 16 * ks * LDH + 16 * nn);
            hyla_mma::mma(qh[2 * nn], as[ks], b0, b1);
            hyla_mma::mma(qh[2 * nn + 1], as[ks], b2, b3);
        }
    }
    // P Delta, an n-tile pair at a time, and O = (0 + Qs H_n) + P Delta out
    const bool pairs = d.dv % 2 == 0;
#pragma unroll
    for (int nn = 0; nn < NT_MAX / 2; nn++) {
        if (nn >= vt) break;
        float pv[2][4];
        product_x<2>(pv, ap, Dh, 16 * nn);
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int nt = 2 * nn + half, j = 8 * nt + 2 * t;
#pragma unroll
            for (int rr = 0; rr < 2; rr++) {
                const int r = rr ? r_hi : r_lo;
                if (r >= c) continue;
                const float x0 = (0.0f + qh[nt][2 * rr]) + pv[half][2 * rr];
                const float x1 = (0.0f + qh[nt][2 * rr + 1]) + pv[half][2 * rr + 1];
                float *dst = o + (row0 + (size_t)r * d.H) * d.dv + j;
                if (pairs && j + 1 < d.dv) *(float2 *)dst = make_float2(x0, x1);
                else {
                    if (j < d.dv) dst[0] = x0;
                    if (j + 1 < d.dv) dst[1] = x1;
                }
            }
        }
    }
}

} // namespace

// Off until a GPU run has checked and timed it; HYLA_GDR_OUT3=1 / 0 chooses.
constexpr bool OUT3_BY_DEFAULT = false;
bool use_out3(void) { return cuda_switch("HYLA_GDR_OUT3", OUT3_BY_DEFAULT); }

void launch_out3(float *o, const scratch &s, const float *q, const float *k, const dims &d) {
    static bool ready = false;
    if (!ready) {
        CUDA_CHECK(cudaFuncSetAttribute(out3_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)OUT3_SMEM));
        ready = true;
    }
    out3_kernel<<<dim3(d.nt, d.B * d.H), OTHREADS, OUT3_SMEM>>>(o, s, q, k, d);
    CUDA_LAUNCH_CHECK();
}

} // namespace gdrc
