// NSA's key-side tiles (MODEL.md §6): dk, dv of the selected and compressed branches, the
// FlashAttention-2 way (a tile of keys against the query rows that see them, probabilities
// recomputed from the saved lse) on cuda_flash_tiles.cuh's 64 x 64 tiles, rows = keys.
//
// Selected branch: which queries chose block c of (b, kv head h) is an inverted index built on
// the GPU in query order (a warp per block: count, scan, fill), so the query rows of a key tile
// are (listed token, head of the group). Block 0 and the latest blocks are chosen by nearly every
// query, so one block's rows are cut into work items of SEG_ROWS; each item writes its partial
// dk, dv and a second kernel adds the items of a block in order.
// Compressed branch: pooled block c is seen by every query t >= (c + 1) b - 1; a work item is
// (b, h, 64 tokens) against 64 pooled blocks, a partial per item, summed over the items in order
// and spread over the block's rows by the mean-pool backward (÷ its length).
// In bf16 mode the tiles' products run on the tensor cores. No atomics: the same bits every run.
#include "cuda_bf16_operand.cuh"
#include "cuda_check.h"
#include "cuda_flash_tiles.cuh"
#include "cuda_nsa.h"
#include "cuda_nsa_mma.cuh"

namespace {

using namespace flash; // TILE, THREADS, SIDE, PER, tile_row, load_rows, tile_dots, tile_pv

constexpr int SEG_ROWS = 4096; // query rows of one selected-branch work item (64 tiles)
constexpr int TCH = 64;        // tokens of one compressed-branch work item

struct nsa_index {
    int *cnt, *off, *item_off; // per (b, h, block): queries, first list entry, first work item
    int *list;                 // the queries of each block, ascending
};

__device__ inline int items_of(int cnt, int G) { return (cnt * G + SEG_ROWS - 1) / SEG_ROWS; }

// A warp per (b, h, block c) walks the queries t >= c b in order; fill = 0 counts those that
// chose c, 1 writes them at the block's offset (ballot + prefix count keeps the order). There
// are only B Hkv NB warps (512 at laNSA's 0.4B shape, four an SM), so each loads the rows of
// WALK x 32 queries before it ballots any of them: WALK loads in flight, not one.
constexpr int WALK = 4;
__global__ void index_kernel(nsa_index ix, const int32_t *block_idx, nsa_dims s, int fill) {
    const size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (w >= (size_t)s.B * s.Hkv * s.NB) return; // whole warps leave
    const int c = w % s.NB, h = w / s.NB % s.Hkv, b = w / ((size_t)s.NB * s.Hkv);
    int n = 0;
    for (int t0 = c * s.bs; t0 < s.L; t0 += 32 * WALK) {
        bool f[WALK];
#pragma unroll
        for (int u = 0; u < WALK; u++) {
            const int t = t0 + 32 * u + lane;
            f[u] = false;
            if (t < s.L) {
                const int32_t *idx = block_idx + (((size_t)b * s.L + t) * s.Hkv + h) * s.nsel;
                for (int x = 0; x < s.nsel; x++) f[u] |= idx[x] == c;
            }
        }
#pragma unroll
        for (int u = 0; u < WALK; u++) { // in query order
            const unsigned ballot = __ballot_sync(0xffffffffu, f[u]);
            if (fill && f[u]) ix.list[ix.off[w] + n + __popc(ballot & ((1u << lane) - 1))] = t0 + 32 * u + lane;
            n += __popc(ballot);
        }
    }
    if (!fill && lane == 0) ix.cnt[w] = n;
}

// Exclusive prefix sums of the counts and of the work items, one block of 1024 threads: each
// thread sums a contiguous run, thread 0 scans the 1024 run totals, each run is then written.
__global__ void scan_kernel(nsa_index ix, int n, int G) {
    __shared__ int run_e[1024], run_i[1024];
    const int tid = threadIdx.x, per = (n + 1023) / 1024, a = min(n, tid * per), e = min(n, a + per);
    int ce = 0, ci = 0;
    for (int i = a; i < e; i++) ce += ix.cnt[i], ci += items_of(ix.cnt[i], G);
    run_e[tid] = ce, run_i[tid] = ci;
    __syncthreads();
    if (tid == 0) {
        int se = 0, si = 0;
        for (int r = 0; r < 1024; r++) {
            const int xe = run_e[r], xi = run_i[r];
            run_e[r] = se, run_i[r] = si, se += xe, si += xi;
        }
        ix.off[n] = se, ix.item_off[n] = si;
    }
    __syncthreads();
    int be = run_e[tid], bi = run_i[tid];
    for (int i = a; i < e; i++) {
        ix.off[i] = be, ix.item_off[i] = bi;
        be += ix.cnt[i], bi += items_of(ix.cnt[i], G);
    }
}

// A work item: keys kpos[] (a 64-key tile: selected, the grid.y-th 64 keys of block c; compressed,
// pooled blocks 64 grid.y ...), batch b, kv head h, query rows [n0, n1) (n = entry * G + head of
// the group; entries are the block's listed queries, or tokens t_base ...), where the partial
// dk, dv go. false: nothing to do (the whole block leaves).
struct work {
    int b, h, n0, n1, t_base;
    const int *tok;
    size_t out;
};
template <bool CMP> __device__ inline bool item_of(const nsa_index &ix, const nsa_dims &s, int *kpos, work &wk) {
    const int tid = threadIdx.x;
    wk.t_base = 0, wk.tok = NULL;
    if (CMP) {
        const int nch = (s.L + TCH - 1) / TCH, bh = blockIdx.x / nch, ch = blockIdx.x % nch, c0 = blockIdx.y * TILE;
        wk.b = bh / s.Hkv, wk.h = bh % s.Hkv;
        if (tid < TILE) kpos[tid] = c0 + tid < s.NB ? c0 + tid : -1;
        wk.t_base = ch * TCH;
        const int t_end = min(s.L, wk.t_base + TCH), t_vis = (c0 + 1) * s.bs - 1; // first query seeing c0
        wk.n0 = max(0, t_vis - wk.t_base) * s.G, wk.n1 = (t_end - wk.t_base) * s.G;
        wk.out = (size_t)blockIdx.x * s.NB * s.d; // [b, h, chunk][pooled block][d]
        return true;
    }
    const int nbhc = s.B * s.Hkv * s.NB, item = blockIdx.x;
    if (item >= ix.item_off[nbhc]) return false;
    int lo = 0, hi = nbhc; // the block w with item_off[w] <= item < item_off[w + 1]
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (ix.item_off[mid] <= item) lo = mid;
        else hi = mid;
    }
    const int w = lo, c = w % s.NB;
    wk.h = w / s.NB % s.Hkv, wk.b = w / (s.NB * s.Hkv);
    wk.n0 = (item - ix.item_off[w]) * SEG_ROWS, wk.n1 = min(wk.n0 + SEG_ROWS, ix.cnt[w] * s.G);
    wk.tok = ix.list + ix.off[w];
    const int j0 = c * s.bs + blockIdx.y * TILE, j1 = min(c * s.bs + s.bs, s.L);
    if (j0 >= j1) return false;
    if (tid < TILE) kpos[tid] = j0 + tid < j1 ? j0 + tid : -1;
    wk.out = ((size_t)item * gridDim.y + blockIdx.y) * TILE * s.d; // [item][64-key part][key][d]
    return true;
}

// The query rows [base, base + 64) of a work item: token, row index, lse, D and (qg not NULL)
// gate of branch x.
template <bool CMP>
__device__ inline void query_rows(int *qt, long long *qrow, float *qlse, float *qdelta, float *qg, const work &wk,
                                  int base, int x, const nsa_saved &sv, const float *delta, const nsa_dims &s,
                                  float lse_scale = 1.0f) {
    const int tid = threadIdx.x;
    if (tid >= TILE) return;
    const int n = base + tid;
    int t = -1;
    size_t R = 0;
    if (n < wk.n1) {
        t = CMP ? wk.t_base + n / s.G : wk.tok[n / s.G];
        R = ((size_t)wk.b * s.L + t) * s.Hq + (size_t)wk.h * s.G + n % s.G;
    }
    qt[tid] = t, qrow[tid] = (long long)R;
    qlse[tid] = sv.lse[x][R] * lse_scale, qdelta[tid] = delta[(size_t)x * s.B * s.L * s.Hq + R];
    if (qg) qg[tid] = sv.gate[R * 3 + x];
}

// A work item on the CUDA cores (fp32), partial dk (unscaled), dv written to pdk, pdv.
template <int DP, bool CMP>
__global__ void __launch_bounds__(THREADS) dkdv_kernel(float *pdk, float *pdv, nsa_index ix, const float *dout,
                                                       nsa_saved sv, const float *delta, const float *q,
                                                       const float *k, const float *v, nsa_dims s) {
    extern __shared__ float sh[];
    constexpr int ST = tile_row<DP>::stride;
    float *Ks = sh, *Vs = Ks + TILE * ST, *Qs = Vs + TILE * ST, *dOs = Qs + TILE * ST, *Ps = dOs + TILE * ST;
    __shared__ int kpos[TILE], qt[TILE];
    __shared__ long long qrow[TILE];
    __shared__ float qlse[TILE], qdelta[TILE], qg[TILE];
    const int x = CMP ? NSA_CMP : NSA_SLC, tid = threadIdx.x, ty = tid / SIDE, tx = tid % SIDE;
    work wk;
    if (!item_of<CMP>(ix, s, kpos, wk)) return;
    const int b = wk.b, h = wk.h;
    __syncthreads();
    load_rows<DP>(Ks, CMP ? sv.kbar : k, kpos, b, CMP ? s.NB : s.L, s.Hkv, h, s.d);
    load_rows<DP>(Vs, CMP ? sv.vbar : v, kpos, b, CMP ? s.NB : s.L, s.Hkv, h, s.d);
    float adk[PER][DP / SIDE], adv[PER][DP / SIDE];
#pragma unroll
    for (int r = 0; r < PER; r++)
#pragma unroll
        for (int c = 0; c < DP / SIDE; c++) adk[r][c] = adv[r][c] = 0;
    for (int base = wk.n0; base < wk.n1; base += TILE) {
        __syncthreads(); // the previous tile's rows are no longer read
        query_rows<CMP>(qt, qrow, qlse, qdelta, qg, wk, base, x, sv, delta, s);
        __syncthreads();
        for (int e = tid; e < TILE * DP; e += THREADS) { // q and g_x dout of the rows
            const int r = e / DP, c = e % DP;
            const bool in = qt[r] >= 0 && c < s.d;
            const size_t i = (size_t)qrow[r] * s.d + c;
            Qs[r * ST + c] = in ? q[i] : 0.0f;
            dOs[r * ST + c] = in ? qg[r] * dout[i] : 0.0f;
        }
        __syncthreads();
        // rows are keys (ty + 16 r), columns query rows (tx + 16 c)
        float sc[PER][PER], dp[PER][PER], p[PER][PER];
        tile_dots<DP>(sc, Ks, Qs);
        tile_dots<DP>(dp, Vs, dOs);
#pragma unroll
        for (int r = 0; r < PER; r++) {
            const int j = kpos[ty + SIDE * r];
#pragma unroll
            for (int c = 0; c < PER; c++) {
                const int col = tx + SIDE * c, t = qt[col];
                const bool vis = j >= 0 && t >= 0 && (CMP ? (j + 1) * s.bs <= t + 1 : j <= t);
                p[r][c] = vis ? expf(sc[r][c] * s.scale - qlse[col]) : 0.0f;
                Ps[(ty + SIDE * r) * (TILE + 1) + col] = p[r][c];
            }
        }
        __syncthreads();
        tile_pv<DP>(adv, Ps, dOs); // dv += P^T (g dout)
        __syncthreads();
#pragma unroll
        for (int r = 0; r < PER; r++)
#pragma unroll
            for (int c = 0; c < PER; c++)
                Ps[(ty + SIDE * r) * (TILE + 1) + tx + SIDE * c] = p[r][c] * (dp[r][c] - qdelta[tx + SIDE * c]);
        __syncthreads();
        tile_pv<DP>(adk, Ps, Qs); // dk += dS^T q (scaled when added up)
    }
#pragma unroll
    for (int r = 0; r < PER; r++) {
        const int kk = ty + SIDE * r, j = kpos[kk];
        if (j < 0) continue;
        const size_t o = wk.out + (size_t)(CMP ? j : kk) * s.d;
#pragma unroll
        for (int c = 0; c < DP / SIDE; c++) {
            const int col = tx + SIDE * c;
            if (col < s.d) pdk[o + col] = adk[r][c], pdv[o + col] = adv[r][c];
        }
    }
}

// A work item on the tensor cores (bf16 operands, fp32 accumulation; head dims 64, 128): warp w
// owns keys 16 w .. 16 w + 15 of the tile, their k and v rows held as A fragments for the whole
// item; per 64 query rows (bf16 in shared memory) S^T = K Q^T and dP^T = V (g dO)^T, then
// dv += P^T (g dO) and dk += dS^T Q with P^T, dS^T straight from the score fragments. The query
// rows come from bf16 copies (q, and g_x dout rounded once per op: gdo) by cp.async into two
// buffers: the next 64 rows' copies run while this 64's products do.
template <int D, bool CMP>
__global__ void __launch_bounds__(128) dkdv_mma_kernel(float *pdk, float *pdv, nsa_index ix, const nsa_mma::bf16 *gdo,
                                                       nsa_saved sv, const float *delta, const nsa_mma::bf16 *q,
                                                       const float *k, const float *v, nsa_dims s) {
    using namespace nsa_mma;
    constexpr int TE = TILE * (D + 8); // a buffer's elements
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *Qb = (bf16 *)smem, *dOb = Qb + 2 * TE; // [2][TILE][D + 8] each
    __shared__ int kpos[TILE], qt[2][TILE];
    __shared__ long long qrow[2][TILE];
    __shared__ float qlse[2][TILE], qdelta[2][TILE];
    const int x = CMP ? NSA_CMP : NSA_SLC, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, tig = lane % 4;
    const float c2 = s.scale * LOG2E; // scores to base 2
    work wk;
    if (!item_of<CMP>(ix, s, kpos, wk)) return;
    // The rows of the tile at `base` into buffer `buf`: their metadata, a barrier, their copies
    // (not committed). Every thread calls it.
    auto stage = [&](int base, int buf) {
        query_rows<CMP>(qt[buf], qrow[buf], qlse[buf], qdelta[buf], NULL, wk, base, x, sv, delta, s, LOG2E); // (gdo: gated; lse in base 2)
        __syncthreads();
        for (int e = tid; e < TILE * D / 8; e += 128) {
            const int r = e / (D / 8), c = e % (D / 8) * 8;
            bf16 *dq_ = Qb + buf * TE + r * (D + 8) + c, *dd = dOb + buf * TE + r * (D + 8) + c;
            if (qt[buf][r] >= 0) {
                const size_t i = (size_t)qrow[buf][r] * D + c;
                __pipeline_memcpy_async(dq_, q + i, 16);
                __pipeline_memcpy_async(dd, gdo + i, 16);
            } else {
                *(uint4 *)dq_ = make_uint4(0, 0, 0, 0), *(uint4 *)dd = make_uint4(0, 0, 0, 0);
            }
        }
    };
    if (wk.n0 < wk.n1) stage(wk.n0, 0); // (its barrier also publishes kpos)
    __pipeline_commit();
    __syncthreads();
    uint32_t ka[D / 16][4], va[D / 16][4];
    {
        const float *K = CMP ? sv.kbar : k, *V = CMP ? sv.vbar : v;
        const int nk = CMP ? s.NB : s.L, j[2] = {kpos[16 * warp + g], kpos[16 * warp + g + 8]};
        const float *kr[2], *vr[2];
        for (int r = 0; r < 2; r++) {
            const size_t o = (((size_t)wk.b * nk + (j[r] < 0 ? 0 : j[r])) * s.Hkv + wk.h) * D;
            kr[r] = j[r] < 0 ? NULL : K + o, vr[r] = j[r] < 0 ? NULL : V + o;
        }
        load_a<D>(ka, kr);
        load_a<D>(va, vr);
    }
    float adk[D / 8][4], adv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) adk[n][i] = adv[n][i] = 0;
    int buf = 0;
    for (int base = wk.n0; base < wk.n1; base += TILE, buf ^= 1) {
        if (base + TILE < wk.n1) stage(base + TILE, buf ^ 1); // (buffer buf ^ 1 was last read a tile ago)
        __pipeline_commit();
        __pipeline_wait_prior(1); // this tile's rows
        __syncthreads();          // ... for every thread
        const bf16 *Qs = Qb + buf * TE, *dOs = dOb + buf * TE;
        float st[TILE / 8][4], dpt[TILE / 8][4]; // rows: this warp's keys; columns: query rows
        scores<D>(st, ka, Qs);
        scores<D>(dpt, va, dOs);
#pragma unroll
        for (int n = 0; n < TILE / 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int j = kpos[16 * warp + g + 8 * (i / 2)], col = 8 * n + 2 * tig + (i & 1), t = qt[buf][col];
                const bool vis = j >= 0 && t >= 0 && (CMP ? (j + 1) * s.bs <= t + 1 : j <= t);
                const float p = vis ? hyla_mma::exp2_approx(fmaf(st[n][i], c2, -qlse[buf][col])) : 0.0f;
                st[n][i] = p, dpt[n][i] = p * (dpt[n][i] - qdelta[buf][col]);
            }
        times_rows<D>(adv, st, dOs);
        times_rows<D>(adk, dpt, Qs);
        __syncthreads(); // every warp is done with buffer buf before the tile after next fills it
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int kk = 16 * warp + g + 8 * r, j = kpos[kk];
        if (j < 0) continue;
        const size_t o = wk.out + (size_t)(CMP ? j : kk) * D;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            *(float2 *)(pdk + o + 8 * n + 2 * tig) = make_float2(adk[n][2 * r], adk[n][2 * r + 1]);
            *(float2 *)(pdv + o + 8 * n + 2 * tig) = make_float2(adv[n][2 * r], adv[n][2 * r + 1]);
        }
    }
}

// dk, dv of key j of block c += the block's work items, in order (a thread per element).
__global__ void slc_sum_kernel(float *dk, float *dv, const float *pdk, const float *pdv, nsa_index ix, nsa_dims s,
                               int parts) {
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)s.B * s.Hkv * s.NB * s.bs * s.d) return;
    const int x = e % s.d, r = e / s.d % s.bs;
    const size_t w = e / ((size_t)s.d * s.bs);
    const int c = w % s.NB, h = w / s.NB % s.Hkv, b = w / ((size_t)s.NB * s.Hkv), j = c * s.bs + r;
    if (j >= s.L) return;
    float sk = 0, sv = 0;
    for (int it = ix.item_off[w]; it < ix.item_off[w + 1]; it++) {
        const size_t i = (((size_t)it * parts + r / TILE) * TILE + r % TILE) * s.d + x;
        sk += pdk[i], sv += pdv[i];
    }
    const size_t o = (((size_t)b * s.L + j) * s.Hkv + h) * s.d + x;
    dk[o] += s.scale * sk, dv[o] += sv;
}

// dkbar_c, dvbar_c = the chunks' partials in order; each row of block c gets dkbar_c / n_c.
__global__ void cmp_sum_kernel(float *dk, float *dv, const float *pdk, const float *pdv, nsa_dims s) {
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)s.B * s.Hkv * s.NB * s.d) return;
    const int x = e % s.d, c = e / s.d % s.NB, bh = e / ((size_t)s.d * s.NB), nch = (s.L + TCH - 1) / TCH;
    const int b = bh / s.Hkv, h = bh % s.Hkv, j0 = c * s.bs, n = min(s.bs, s.L - j0);
    float sk = 0, sv = 0;
    for (int ch = 0; ch < nch; ch++) {
        const size_t i = (((size_t)bh * nch + ch) * s.NB + c) * s.d + x;
        sk += pdk[i], sv += pdv[i];
    }
    sk = s.scale * sk / (float)n, sv = sv / (float)n;
    for (int j = j0; j < j0 + n; j++) {
        const size_t o = (((size_t)b * s.L + j) * s.Hkv + h) * s.d + x;
        dk[o] += sk, dv[o] += sv;
    }
}

template <int DP> size_t tile_bytes() {
    return sizeof(float) * (4 * (size_t)TILE * tile_row<DP>::stride + (size_t)TILE * (TILE + 1));
}

template <int DP, bool CMP>
void launch(dim3 grid, float *pdk, float *pdv, const nsa_index &ix, const float *dout, const nsa_saved &sv,
            const float *delta, const float *q, const float *k, const float *v, const nsa_dims &s) {
    const size_t sb = tile_bytes<DP>();
    CUDA_CHECK(cudaFuncSetAttribute((const void *)dkdv_kernel<DP, CMP>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)sb));
    dkdv_kernel<DP, CMP><<<grid, THREADS, sb>>>(pdk, pdv, ix, dout, sv, delta, q, k, v, s);
    CUDA_LAUNCH_CHECK();
}

template <int D, bool CMP>
void launch_mma(dim3 grid, float *pdk, float *pdv, const nsa_index &ix, const nsa_mma::bf16 *gdo, const nsa_saved &sv,
                const float *delta, const nsa_mma::bf16 *q, const float *k, const float *v, const nsa_dims &s) {
    const size_t sb = sizeof(nsa_mma::bf16) * 4 * TILE * (D + 8);
    CUDA_CHECK(cudaFuncSetAttribute((const void *)dkdv_mma_kernel<D, CMP>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sb));
    dkdv_mma_kernel<D, CMP><<<grid, 128, sb>>>(pdk, pdv, ix, gdo, sv, delta, q, k, v, s);
    CUDA_LAUNCH_CHECK();
}

// The tensor cores' operands (bf16 mode, head dims 64 and 128): q, and g_x dout of both
// branches (gdo: nsa_scaled_dout's). NULL: the fp32 tiles.
struct mma_operands {
    const nsa_mma::bf16 *q, *gdo;
};

// bf16 mode: the tensor cores; otherwise fp32 on the CUDA cores.
template <bool CMP>
void run_tiles(dim3 grid, float *pdk, float *pdv, const nsa_index &ix, const float *dout, const nsa_saved &sv,
               const float *delta, const float *q, const float *k, const float *v, const nsa_dims &s,
               const mma_operands &mo) {
    const nsa_mma::bf16 *gdo = mo.gdo ? mo.gdo + (CMP ? 0 : (size_t)s.B * s.L * s.Hq * s.d) : NULL;
    if (mo.q && s.d == 64) launch_mma<64, CMP>(grid, pdk, pdv, ix, gdo, sv, delta, mo.q, k, v, s);
    else if (mo.q) launch_mma<128, CMP>(grid, pdk, pdv, ix, gdo, sv, delta, mo.q, k, v, s);
    else if (s.d <= 16) launch<16, CMP>(grid, pdk, pdv, ix, dout, sv, delta, q, k, v, s);
    else if (s.d <= 32) launch<32, CMP>(grid, pdk, pdv, ix, dout, sv, delta, q, k, v, s);
    else if (s.d <= 64) launch<64, CMP>(grid, pdk, pdv, ix, dout, sv, delta, q, k, v, s);
    else launch<128, CMP>(grid, pdk, pdv, ix, dout, sv, delta, q, k, v, s);
}

} // namespace

void nsa_dkdv(float *dk, float *dv, const float *dout, const uint16_t *gdo, const nsa_saved &sv, const float *delta,
              const float *q, const float *k, const float *v, const int32_t *block_idx, const nsa_dims &s) {
    const int nbhc = s.B * s.Hkv * s.NB, parts = (s.bs + TILE - 1) / TILE, nch = (s.L + TCH - 1) / TCH;
    const size_t entries = (size_t)s.B * s.L * s.Hkv * s.nsel;
    // work items: sum over blocks of ceil(rows / SEG_ROWS) <= all rows / SEG_ROWS + blocks
    const size_t items = entries * s.G / SEG_ROWS + nbhc + 1;
    nsa_index ix;
    CUDA_CHECK(cudaMallocAsync((void **)&ix.cnt, sizeof(int) * (3 * (size_t)nbhc + 2 + entries), 0));
    ix.off = ix.cnt + nbhc, ix.item_off = ix.off + nbhc + 1, ix.list = ix.item_off + nbhc + 1;
    const unsigned warps_blocks = blocks_for((size_t)nbhc * 32, 256);
    index_kernel<<<warps_blocks, 256>>>(ix, block_idx, s, 0);
    CUDA_LAUNCH_CHECK();
    scan_kernel<<<1, 1024>>>(ix, nbhc, s.G);
    CUDA_LAUNCH_CHECK();
    index_kernel<<<warps_blocks, 256>>>(ix, block_idx, s, 1);
    CUDA_LAUNCH_CHECK();

    const size_t nq = (size_t)s.B * s.L * s.Hq * s.d;
    const bf16_operand *q16 = gdo ? new bf16_operand(q, nq) : NULL;
    const mma_operands mo = {q16 ? (const nsa_mma::bf16 *)*q16 : NULL, (const nsa_mma::bf16 *)gdo};

    float *part;
    const size_t slc_part = items * parts * TILE * s.d, cmp_part = (size_t)s.B * s.Hkv * nch * s.NB * s.d;
    CUDA_CHECK(cudaMallocAsync((void **)&part, sizeof(float) * 2 * (slc_part > cmp_part ? slc_part : cmp_part), 0));
    run_tiles<false>(dim3((unsigned)items, parts), part, part + slc_part, ix, dout, sv, delta, q, k, v, s, mo);
    slc_sum_kernel<<<blocks_for((size_t)nbhc * s.bs * s.d, 256), 256>>>(dk, dv, part, part + slc_part, ix, s, parts);
    CUDA_LAUNCH_CHECK();
    run_tiles<true>(dim3((unsigned)(s.B * s.Hkv * nch), (unsigned)((s.NB + TILE - 1) / TILE)), part, part + cmp_part,
                    ix, dout, sv, delta, q, k, v, s, mo);
    cmp_sum_kernel<<<blocks_for((size_t)nbhc * s.d, 256), 256>>>(dk, dv, part, part + cmp_part, s);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(part, 0));
    CUDA_CHECK(cudaFreeAsync(ix.cnt, 0));
    delete q16;
}
