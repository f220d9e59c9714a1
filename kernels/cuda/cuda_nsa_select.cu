// NSA's row-wise pieces (MODEL.md §6) in the CPU op's exact arithmetic (kernels/ops/nsa_rows.h):
// pooling, the compressed branch's forward pass, block importance, top-n selection, the gate
// mix. Selection is discrete: a block whose importance is within rounding of the n-th best
// would flip on any difference, so everything it reads (pooled keys, the compressed lse, the
// importance sums) is computed as the CPU computes it: its dot product's order without fused
// multiply-adds (the CPU build has none), every float operation rounded on its own, and the
// float exp / log of <tgmath.h> approximated by the double functions rounded to float. That
// last step is not exact: glibc's expf / logf are not correctly rounded for about 0.06 % /
// 0.3 % of arguments, so a few compressed lse and gate values differ from the CPU's by an ulp
// (tests/gpu/emu/run_nsa.sh counts them) and a selection can flip where two importances tie
// within an ulp. The compressed branch and the importances of head dims up to 64 run in
// cuda_nsa_compressed.cu's kernel, the same arithmetic with its reads from shared memory
// (HYLA_NSA_COMPRESSED=0: the two kernels here, which take every shape).
#include <math.h>

#include <cuda_bf16.h>

#include "cuda_check.h"
#include "cuda_nsa.h"
#include "cuda_nsa_exact.cuh"
#include "cuda_switch.h"

namespace {

using namespace nsa_exact;

// kbar, vbar = the mean of each block's rows: the CPU's sum from the first row, then a division.
__global__ void pool_kernel(float *kbar, float *vbar, const float *k, const float *v, nsa_dims s) {
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)s.B * s.NB * s.Hkv * s.d) return;
    const int x = e % s.d, h = e / s.d % s.Hkv, c = e / ((size_t)s.d * s.Hkv) % s.NB;
    const int b = e / ((size_t)s.d * s.Hkv * s.NB), j0 = c * s.bs, j1 = min(j0 + s.bs, s.L);
    float ks = 0, vs = 0;
    for (int j = j0; j < j1; j++) {
        const size_t i = (((size_t)b * s.L + j) * s.Hkv + h) * s.d + x;
        ks = __fadd_rn(ks, k[i]), vs = __fadd_rn(vs, v[i]);
    }
    kbar[e] = __fdiv_rn(ks, (float)(j1 - j0)), vbar[e] = __fdiv_rn(vs, (float)(j1 - j0));
}

// The compressed branch, a thread per query row: attn_row_fwd over the complete pooled blocks
// c < (t + 1) / b, its running maximum and sum in the CPU's order (o itself needs no exactness).
template <int DP> __global__ void __launch_bounds__(128) cmp_fwd_kernel(nsa_saved sv, const float *q, nsa_dims s) {
    const size_t r = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= (size_t)s.B * s.L * s.Hq) return;
    const int i = r % s.Hq, t = r / s.Hq % s.L, b = r / ((size_t)s.Hq * s.L), h = i / s.G;
    float qr[DP], o[DP];
    load_row<DP>(qr, q + r * s.d, s.d);
#pragma unroll
    for (int e = 0; e < DP; e++) o[e] = 0;
    float m = -INFINITY, l = 0;
    const int ic = (t + 1) / s.bs;
    for (int c = 0; c < ic; c++) {
        const size_t kv = (((size_t)b * s.NB + c) * s.Hkv + h) * s.d;
        const float sc = __fmul_rn(s.scale, dot_exact<DP>(qr, sv.kbar + kv, s.d));
        const float p = online_softmax_step<DP>(sc, m, l, o);
        const float *vb = sv.vbar + kv;
#pragma unroll
        for (int e = 0; e < DP; e++)
            if (e < s.d) o[e] += p * vb[e];
    }
    float *out = sv.o[NSA_CMP] + r * s.d;
    if (l == 0) {
        for (int e = 0; e < s.d; e++) out[e] = 0;
        sv.lse[NSA_CMP][r] = 0;
        return;
    }
#pragma unroll
    for (int e = 0; e < DP; e++)
        if (e < s.d) out[e] = o[e] / l;
    sv.lse[NSA_CMP][r] = __fadd_rn(m, log_c(l));
}

// imp[(b, t, h), c] = block_importance: the group's compressed probabilities of block c, summed
// over heads in order. Only the unforced candidates
// 1 <= c < t / b - 1 are read.
template <int DP>
__global__ void __launch_bounds__(128) importance_kernel(float *imp, nsa_saved sv, const float *q, nsa_dims s) {
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)s.B * s.L * s.Hkv * s.NB) return;
    const int c = e % s.NB, h = e / s.NB % s.Hkv, t = e / ((size_t)s.NB * s.Hkv) % s.L;
    const int b = e / ((size_t)s.NB * s.Hkv * s.L), ic = t / s.bs;
    if (c == 0 || c >= ic - 1) return;
    const float *kb = sv.kbar + (((size_t)b * s.NB + c) * s.Hkv + h) * s.d;
    float kr[DP];
    load_row<DP>(kr, kb, s.d);
    float p = 0;
    for (int i = h * s.G; i < (h + 1) * s.G; i++) {
        const size_t r = ((size_t)b * s.L + t) * s.Hq + i;
        const float sc = __fmul_rn(s.scale, dot_exact<DP>(kr, q + r * s.d, s.d)); // dot is symmetric
        p = __fadd_rn(p, exp_c(__fsub_rn(sc, sv.lse[NSA_CMP][r])));
    }
    imp[e] = p;
}

// select_blocks of nsa_rows.h, a thread per (b, t, kv head): insertion into a list sorted by
// rank, forced blocks {0, IC-1, IC} as +inf, a later block passing only strictly smaller ones.
__global__ void select_kernel(int32_t *block_idx, const float *imp, nsa_dims s) {
    const size_t task = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (task >= (size_t)s.B * s.L * s.Hkv) return;
    const int t = task / s.Hkv % s.L, n = s.nsel, ic = t / s.bs;
    int32_t *idx = block_idx + task * n;
    const float *p_of = imp + task * s.NB;
    float best[64]; // NSA_MAX_SELECT
    int len = 0;
    for (int c = 0; c <= ic; c++) {
        const float p = c == 0 || c >= ic - 1 ? INFINITY : p_of[c];
        int pos = len;
        while (pos > 0 && best[pos - 1] < p) pos--;
        if (pos >= n) continue;
        if (len < n) len++;
        for (int x = len - 1; x > pos; x--) best[x] = best[x - 1], idx[x] = idx[x - 1];
        best[pos] = p, idx[pos] = c;
    }
    for (int x = len; x < n; x++) idx[x] = -1;
}

// nsa_sigmoid: 1 / (1 + exp(-x)) in float.
__device__ inline float sigmoid_c(float x) { return __fdiv_rn(1.0f, __fadd_rn(1.0f, exp_c(-x))); }

// A warp per query row: its three gates (saved), then o = g_slc o_slc + g_cmp o_cmp + g_swa o_swa.
__global__ void mix_kernel(float *o, nsa_saved sv, const float *gate_logits, nsa_dims s) {
    const size_t r = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (r >= (size_t)s.B * s.L * s.Hq) return;
    float g = 0;
    if (lane < 3) g = sigmoid_c(gate_logits[r * 3 + lane]), sv.gate[r * 3 + lane] = g;
    const float gc = __shfl_sync(0xffffffffu, g, NSA_CMP), gs = __shfl_sync(0xffffffffu, g, NSA_SLC);
    const float gw = __shfl_sync(0xffffffffu, g, NSA_SWA);
    for (int x = lane; x < s.d; x += 32) {
        const size_t e = r * s.d + x;
        o[e] = gs * sv.o[NSA_SLC][e] + gc * sv.o[NSA_CMP][e] + gw * sv.o[NSA_SWA][e];
    }
}

__device__ inline float warp_sum(float v) {
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// A warp per query row: dg_x = <dout, o_x>, dgate_logit = dg g (1 - g); D_x = g_x dg_x (the
// softmax backward's row term of branch x); the window branch's dout, scaled by its gate.
__global__ void gate_bwd_kernel(float *dgate, float *delta, float *dout_swa, const float *dout, nsa_saved sv,
                                nsa_dims s) {
    const size_t r = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32, rows = (size_t)s.B * s.L * s.Hq;
    const int lane = threadIdx.x % 32;
    if (r >= rows) return;
    float dg[3] = {0, 0, 0};
    for (int x = lane; x < s.d; x += 32) {
        const size_t e = r * s.d + x;
        const float dy = dout[e];
#pragma unroll
        for (int b = 0; b < 3; b++) dg[b] += dy * sv.o[b][e];
        dout_swa[e] = sv.gate[r * 3 + NSA_SWA] * dy;
    }
#pragma unroll
    for (int b = 0; b < 3; b++) dg[b] = warp_sum(dg[b]);
    if (lane < 3) {
        const float g = sv.gate[r * 3 + lane], d = lane == 0 ? dg[0] : lane == 1 ? dg[1] : dg[2];
        dgate[r * 3 + lane] = d * g * (1.0f - g);
        delta[lane * rows + r] = g * d;
    }
}

// gdo[x][r] = bf16(gate[r][x] dout[r]) for x = CMP, SLC: the tensor-core tiles' g_x dout rows,
// rounded once per op (the product and the rounding the tiles made per load before).
__global__ void scale_dout_kernel(__nv_bfloat16 *gdo, const float *dout, const float *gate, size_t rows, int d) {
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x, n = rows * d;
    if (e >= n) return;
    const size_t r = e / d;
    const float y = dout[e];
    gdo[e] = __float2bfloat16(y * gate[r * 3 + NSA_CMP]);
    gdo[n + e] = __float2bfloat16(y * gate[r * 3 + NSA_SLC]);
}

// The compressed branch (its lse first: the importances read it), then the importances unless
// imp is NULL.
template <int DP> void launch_cmp_importance(const nsa_saved &sv, float *imp, const float *q, const nsa_dims &s) {
    cmp_fwd_kernel<DP><<<blocks_for((size_t)s.B * s.L * s.Hq, 128), 128>>>(sv, q, s);
    CUDA_LAUNCH_CHECK();
    if (!imp) return;
    importance_kernel<DP><<<blocks_for((size_t)s.B * s.L * s.Hkv * s.NB, 128), 128>>>(imp, sv, q, s);
    CUDA_LAUNCH_CHECK();
}

} // namespace

void nsa_pool(const nsa_saved &sv, const float *k, const float *v, const nsa_dims &s) {
    pool_kernel<<<blocks_for((size_t)s.B * s.NB * s.Hkv * s.d, 256), 256>>>(sv.kbar, sv.vbar, k, v, s);
    CUDA_LAUNCH_CHECK();
}

void nsa_compressed_select(const nsa_saved &sv, int32_t *block_idx, const float *q, const nsa_dims &s) {
    static const bool fused = cuda_switch("HYLA_NSA_COMPRESSED", true);
    float *imp = NULL; // [B, L, Hkv, NB] importances of the unforced candidates
    if (block_idx) CUDA_CHECK(cudaMallocAsync((void **)&imp, sizeof(float) * ((size_t)s.B * s.L * s.Hkv * s.NB + 1), 0));
    if (fused && nsa_compressed_supported(s)) nsa_compressed(sv, imp, q, s);
    else if (s.d <= 16) launch_cmp_importance<16>(sv, imp, q, s);
    else if (s.d <= 32) launch_cmp_importance<32>(sv, imp, q, s);
    else if (s.d <= 64) launch_cmp_importance<64>(sv, imp, q, s);
    else launch_cmp_importance<128>(sv, imp, q, s);
    if (!block_idx) return;
    select_kernel<<<blocks_for((size_t)s.B * s.L * s.Hkv, 128), 128>>>(block_idx, imp, s);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(imp, 0));
}

void nsa_mix(float *o, const nsa_saved &sv, const float *gate_logits, const nsa_dims &s) {
    mix_kernel<<<blocks_for((size_t)s.B * s.L * s.Hq * 32, 256), 256>>>(o, sv, gate_logits, s);
    CUDA_LAUNCH_CHECK();
}

uint16_t *nsa_scaled_dout(const float *dout, const nsa_saved &sv, const nsa_dims &s) {
    const size_t nq = (size_t)s.B * s.L * s.Hq * s.d;
    __nv_bfloat16 *gdo;
    CUDA_CHECK(cudaMallocAsync((void **)&gdo, sizeof(__nv_bfloat16) * 2 * nq, 0));
    scale_dout_kernel<<<blocks_for(nq, 256), 256>>>(gdo, dout, sv.gate, nq / s.d, s.d);
    CUDA_LAUNCH_CHECK();
    return (uint16_t *)gdo;
}

void nsa_gate_bwd(float *dgate_logits, float *delta, float *dout_swa, const float *dout, const nsa_saved &sv,
                  const nsa_dims &s) {
    gate_bwd_kernel<<<blocks_for((size_t)s.B * s.L * s.Hq * 32, 256), 256>>>(dgate_logits, delta, dout_swa, dout,
                                                                             sv, s);
    CUDA_LAUNCH_CHECK();
}
