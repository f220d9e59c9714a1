// NSA's query-side tiles on the tensor cores (train.precision = bf16, head dims 64 and 128):
// the selected branch's forward pass and dq of the compressed and selected branches, with the
// semantics of cuda_nsa_query.cu's fp32 tiles. A warp owns one token x 16 heads of a kv group,
// which is exactly the 16 rows of an mma.m16n8k16: Q (and dO) stay in registers as A fragments,
// a 64-key block of K and V (rounded to bf16 once per op, or the held bf16 copies) is copied
// into the warp's shared memory by cp.async, the next block's K (V) copy running while this
// block's V (K) is worked on; the scores come out in
// C fragments whose layout is the next product's A fragment (FlashAttention-2's register
// reuse), so probabilities never touch shared memory. Products take bf16 operands with fp32
// accumulation; softmax statistics stay fp32. Four warps per block, each on its own token: no
// block-wide synchronisation.
#include "cuda_bf16_operand.cuh"
#include "cuda_check.h"
#include "cuda_nsa.h"
#include "cuda_nsa_mma.cuh"

namespace {

using namespace nsa_mma;
constexpr int WARPS = 4; // tokens per block

// The warp's task: (b, t, kv head h), heads g0 .. g0 + nrows - 1 of the group (grid.y chunks).
struct wtask {
    int b, t, h, nrows;
    size_t row0;
};
__device__ inline bool task_of(const nsa_dims &s, wtask &w) {
    const size_t task = (size_t)blockIdx.x * WARPS + threadIdx.x / 32;
    if (task >= (size_t)s.B * s.L * s.Hkv) return false;
    const int g0 = blockIdx.y * 16;
    w.h = task % s.Hkv, w.t = task / s.Hkv % s.L, w.b = task / ((size_t)s.Hkv * s.L), w.nrows = min(16, s.G - g0);
    w.row0 = ((size_t)w.b * s.L + w.t) * s.Hq + (size_t)w.h * s.G + g0;
    return true;
}

// The task's 16 query rows of x as A fragments (rows past nrows zero).
template <int D> __device__ inline void task_rows(uint32_t (&a)[D / 16][4], const float *x, const wtask &w) {
    const int g = threadIdx.x % 32 / 4;
    const float *rows[2] = {g < w.nrows ? x + (w.row0 + g) * D : NULL,
                            g + 8 < w.nrows ? x + (w.row0 + g + 8) * D : NULL};
    load_a<D>(a, rows);
}

// The task's 16 rows of a bf16 [B L Hq][D] x as A fragments (rows past nrows zero).
template <int D> __device__ inline void task_rows_bf16(uint32_t (&a)[D / 16][4], const bf16 *x, const wtask &w) {
    const int g = threadIdx.x % 32 / 4, tig = threadIdx.x % 4;
    const bf16 *rows[2] = {g < w.nrows ? x + (w.row0 + g) * D : NULL, g + 8 < w.nrows ? x + (w.row0 + g + 8) * D : NULL};
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++)
#pragma unroll
        for (int half = 0; half < 2; half++) // columns 16 ks + 8 half + 2 tig, + 1
#pragma unroll
            for (int rr = 0; rr < 2; rr++)
                a[ks][2 * half + rr] = rows[rr] ? *(const uint32_t *)(rows[rr] + 16 * ks + 8 * half + 2 * tig) : 0u;
}

// The key range of slot `slot` (cuda_nsa_query.cu's slot_range).
__device__ inline void range_of(int x, const int32_t *idx, int slot, int t, const nsa_dims &s, int *j0, int *j1) {
    if (x == NSA_CMP) {
        *j0 = 0, *j1 = (t + 1) / s.bs;
        return;
    }
    const int c = idx[slot];
    *j0 = c < 0 ? 0 : c * s.bs;
    *j1 = c < 0 ? 0 : min(min(*j0 + s.bs, t + 1), s.L);
}

// The task's key tiles of branch x in order: slot by slot, 64 keys at a time over each slot's
// range. Start from tile_cursor{} and seek; after a tile, a += KT and seek again.
struct tile_cursor {
    int slot = -1, a = 0, j1 = 0; // the tile: keys a .. min(a + KT, j1) - 1 of slot `slot`
};
// Moves to the first nonempty tile at or after the cursor; false when none is left.
__device__ inline bool seek(tile_cursor &c, int x, const int32_t *idx, int slots, int t, const nsa_dims &s) {
    while (c.a >= c.j1) {
        if (++c.slot >= slots) return false;
        range_of(x, idx, c.slot, t, s, &c.a, &c.j1);
    }
    return true;
}
__device__ inline tile_cursor after(tile_cursor c) {
    c.a += KT;
    return c;
}

template <int D>
__global__ void __launch_bounds__(WARPS * 32) slc_fwd_mma_kernel(nsa_saved sv, const float *q, const bf16 *k,
                                                                  const bf16 *v, const int32_t *block_idx,
                                                                  nsa_dims s) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
    bf16 *Ks = (bf16 *)smem + (threadIdx.x / 32) * 2 * KT * (D + 8), *Vs = Ks + KT * (D + 8);
    wtask w;
    if (!task_of(s, w)) return; // a whole warp; nothing below synchronises the block
    const int32_t *idx = block_idx + (((size_t)w.b * s.L + w.t) * s.Hkv + w.h) * s.nsel;
    tile_cursor cur;
    bool have = seek(cur, NSA_SLC, idx, s.nsel, w.t, s);
    if (have) { // copy groups in flight: K, V of this tile
        load_tile_async<D>(Ks, k, w.b, s.L, s.Hkv, w.h, cur.a, cur.j1);
        __pipeline_commit();
        load_tile_async<D>(Vs, v, w.b, s.L, s.Hkv, w.h, cur.a, cur.j1);
        __pipeline_commit();
    }
    uint32_t qa[D / 16][4];
    task_rows<D>(qa, q, w);
    float o[D / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0}; // m: scaled (base 2)
    const float c2 = s.scale * LOG2E;
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0;
    while (have) {
        tile_cursor next = after(cur);
        const bool more = seek(next, NSA_SLC, idx, s.nsel, w.t, s);
        __pipeline_wait_prior(1); // this tile's K (its V may be in flight)
        __syncwarp();
        float sc[KT / 8][4];
        scores<D>(sc, qa, Ks);
        __syncwarp(); // every lane is done with Ks: the next tile's K goes there
        if (more) load_tile_async<D>(Ks, k, w.b, s.L, s.Hkv, w.h, next.a, next.j1);
        __pipeline_commit();
        // the softmax in base 2 on the raw scores (m kept scaled by c2; max then scale is scale
        // then max): a probability is one fused multiply-add and one ex2
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < KT / 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const bool in = cur.a + 8 * n + 2 * tig + (i & 1) < cur.j1;
                if (!in) sc[n][i] = -INFINITY;
                mx[i / 2] = fmaxf(mx[i / 2], sc[n][i]);
            }
        float corr[2];
#pragma unroll
        for (int r = 0; r < 2; r++) { // key a is always in: the maximum is finite
            const float m_new = fmaxf(m[r], quad_max(mx[r]) * c2);
            corr[r] = hyla_mma::exp2_approx(m[r] - m_new), m[r] = m_new, l[r] *= corr[r];
        }
#pragma unroll
        for (int n = 0; n < KT / 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) sc[n][i] = hyla_mma::exp2_approx(fmaf(sc[n][i], c2, -m[i / 2])), l[i / 2] += sc[n][i];
#pragma unroll
        for (int n = 0; n < D / 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) o[n][i] *= corr[i / 2];
        __pipeline_wait_prior(1); // this tile's V (the next K may be in flight)
        __syncwarp();
        times_rows<D>(o, sc, Vs);
        __syncwarp(); // every lane is done with Vs
        if (more) load_tile_async<D>(Vs, v, w.b, s.L, s.Hkv, w.h, next.a, next.j1);
        __pipeline_commit();
        cur = next, have = more;
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const float lr = quad_sum(l[r]);
        const int row = g + 8 * r;
        if (row >= w.nrows) continue;
        const size_t R = w.row0 + row;
        const float inv = lr > 0 ? 1.0f / lr : 0.0f; // no key: o = 0, lse = 0
#pragma unroll
        for (int n = 0; n < D / 8; n++)
            *(float2 *)(sv.o[NSA_SLC] + R * D + 8 * n + 2 * tig) = make_float2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
        if (tig == 0) sv.lse[NSA_SLC][R] = lr > 0 ? (m[r] + log2f(lr)) * LN2 : 0.0f; // base e, as the contract says
    }
}

// dq += scale sum_j dS_j k_j, dS = P (g_x dO V^T - D_x), over the compressed then the selected
// branch. dO's A fragments carry g_x (reloaded per branch).
// (at head dim 64: three blocks an SM, as the shared memory allows, ~170 registers)
template <int D>
__global__ void __launch_bounds__(WARPS * 32, D == 64 ? 3 : 1) dq_mma_kernel(float *dq, const bf16 *gdo, nsa_saved sv,
                                                             const float *delta, const float *q, const bf16 *k,
                                                             const bf16 *v, const bf16 *kbar, const bf16 *vbar,
                                                             const int32_t *block_idx, nsa_dims s) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
    bf16 *Ks = (bf16 *)smem + (threadIdx.x / 32) * 2 * KT * (D + 8), *Vs = Ks + KT * (D + 8);
    wtask w;
    if (!task_of(s, w)) return;
    const size_t rows = (size_t)s.B * s.L * s.Hq;
    const float c2 = s.scale * LOG2E;
    uint32_t qa[D / 16][4], da[D / 16][4];
    task_rows<D>(qa, q, w);
    float acc[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0;
    const int32_t *idx = block_idx + (((size_t)w.b * s.L + w.t) * s.Hkv + w.h) * s.nsel;
#pragma unroll
    for (int x = NSA_CMP; x <= NSA_SLC; x++) {
        const bf16 *K = x == NSA_CMP ? kbar : k, *V = x == NSA_CMP ? vbar : v;
        const int n_rows = x == NSA_CMP ? s.NB : s.L, slots = x == NSA_CMP ? 1 : s.nsel;
        tile_cursor cur;
        bool have = seek(cur, x, idx, slots, w.t, s);
        if (have) { // copy groups in flight: V, K of this tile (dP, from V, comes first)
            load_tile_async<D>(Vs, V, w.b, n_rows, s.Hkv, w.h, cur.a, cur.j1);
            __pipeline_commit();
            load_tile_async<D>(Ks, K, w.b, n_rows, s.Hkv, w.h, cur.a, cur.j1);
            __pipeline_commit();
        }
        float lse[2], Dx[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const size_t R = w.row0 + (g + 8 * r < w.nrows ? g + 8 * r : 0);
            lse[r] = sv.lse[x][R] * LOG2E, Dx[r] = delta[x * rows + R]; // lse in base 2
        }
        task_rows_bf16<D>(da, gdo + x * rows * D, w); // g_x dout: dP = <g_x dout, v>
        while (have) {
            tile_cursor next = after(cur);
            const bool more = seek(next, x, idx, slots, w.t, s);
            __pipeline_wait_prior(1); // this tile's V (its K may be in flight)
            __syncwarp();
            float sc[KT / 8][4], dp[KT / 8][4];
            scores<D>(dp, da, Vs);
            __syncwarp(); // every lane is done with Vs: the next tile's V goes there
            if (more) load_tile_async<D>(Vs, V, w.b, n_rows, s.Hkv, w.h, next.a, next.j1);
            __pipeline_commit();
            __pipeline_wait_prior(1); // this tile's K (the next V may be in flight)
            __syncwarp();
            scores<D>(sc, qa, Ks);
#pragma unroll
            for (int n = 0; n < KT / 8; n++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const bool in = cur.a + 8 * n + 2 * tig + (i & 1) < cur.j1 && g + 8 * (i / 2) < w.nrows;
                    const float p = in ? hyla_mma::exp2_approx(fmaf(sc[n][i], c2, -lse[i / 2])) : 0.0f;
                    sc[n][i] = p * (dp[n][i] - Dx[i / 2]);
                }
            times_rows<D>(acc, sc, Ks);
            __syncwarp(); // every lane is done with Ks
            if (more) load_tile_async<D>(Ks, K, w.b, n_rows, s.Hkv, w.h, next.a, next.j1);
            __pipeline_commit();
            cur = next, have = more;
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = g + 8 * r;
        if (row >= w.nrows) continue;
        float *dst = dq + (w.row0 + row) * D;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            float2 *p = (float2 *)(dst + 8 * n + 2 * tig), cur = *p;
            *p = make_float2(cur.x + s.scale * acc[n][2 * r], cur.y + s.scale * acc[n][2 * r + 1]);
        }
    }
}

template <int D> size_t smem_bytes() { return sizeof(bf16) * WARPS * 2 * KT * (D + 8); }
dim3 grid_of(const nsa_dims &s) {
    return dim3((unsigned)(((size_t)s.B * s.L * s.Hkv + WARPS - 1) / WARPS), (unsigned)((s.G + 15) / 16));
}

template <int D>
void fwd(const nsa_saved &sv, const float *q, const bf16 *k, const bf16 *v, const int32_t *idx, const nsa_dims &s) {
    CUDA_CHECK(cudaFuncSetAttribute((const void *)slc_fwd_mma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)smem_bytes<D>()));
    slc_fwd_mma_kernel<D><<<grid_of(s), WARPS * 32, smem_bytes<D>()>>>(sv, q, k, v, idx, s);
    CUDA_LAUNCH_CHECK();
}
template <int D>
void dq_run(float *dq, const bf16 *gdo, const nsa_saved &sv, const float *delta, const float *q, const bf16 *k,
            const bf16 *v, const bf16 *kbar, const bf16 *vbar, const int32_t *idx, const nsa_dims &s) {
    CUDA_CHECK(cudaFuncSetAttribute((const void *)dq_mma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)smem_bytes<D>()));
    dq_mma_kernel<D><<<grid_of(s), WARPS * 32, smem_bytes<D>()>>>(dq, gdo, sv, delta, q, k, v, kbar, vbar, idx, s);
    CUDA_LAUNCH_CHECK();
}

} // namespace

bool nsa_mma_supported(const nsa_dims &s) { return s.d == 64 || s.d == 128; }

void nsa_slc_fwd_bf16(const nsa_saved &sv, const float *q, const float *k, const float *v, const int32_t *block_idx,
                      const nsa_dims &s) {
    const size_t nk = (size_t)s.B * s.L * s.Hkv * s.d;
    const bf16_operand kb(k, nk), vb(v, nk);
    if (s.d == 64) fwd<64>(sv, q, kb, vb, block_idx, s);
    else fwd<128>(sv, q, kb, vb, block_idx, s);
}

void nsa_dq_bf16(float *dq, const uint16_t *gdo, const nsa_saved &sv, const float *delta, const float *q,
                 const float *k, const float *v, const int32_t *block_idx, const nsa_dims &s) {
    const size_t nk = (size_t)s.B * s.L * s.Hkv * s.d, npool = (size_t)s.B * s.NB * s.Hkv * s.d;
    const bf16_operand kb(k, nk), vb(v, nk), kbar(sv.kbar, npool), vbar(sv.vbar, npool);
    if (s.d == 64) dq_run<64>(dq, (const bf16 *)gdo, sv, delta, q, kb, vb, kbar, vbar, block_idx, s);
    else dq_run<128>(dq, (const bf16 *)gdo, sv, delta, q, kb, vb, kbar, vbar, block_idx, s);
}
