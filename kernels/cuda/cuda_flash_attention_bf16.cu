// CUDA: tiled attention on the tensor cores, for train.precision = bf16 and head dims 64 and
// 128 — the same tiles, segments and masks as the fp32 kernels (cuda_flash_attention.cu,
// cuda_flash_common.cuh), laid out as FlashAttention-2 does: each warp owns 16 rows of a
// 64-row tile and keeps them in registers (cuda_mma.cuh's fragments) through every product of
// a tile, so scores, probabilities and dS never touch shared memory: Q K^T lands in C
// fragments, the online softmax runs on them, and packed to bf16 they are the A operand of
// P V. Key (or query) tiles stream through two shared buffers filled by cp.async while the
// previous tile is worked on. Softmax runs in base 2 (ex2 of scores scaled by
// scale * log2 e); lse is stored in base e as the contract says. No atomics.
#include <stdlib.h>

#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_pipeline.h>

#include "cuda_bf16_operand.cuh"
#include "cuda_check.h"
#include "cuda_flash_common.cuh"
#include "cuda_mma.cuh"
#include "cuda_switch.h"

namespace flash {
namespace {

using namespace hyla_mma;

constexpr int WARPS = 4, THREADS = 32 * WARPS; // warp w: rows 16 w .. 16 w + 15 of a tile
// Row stride (elements) of a shared bf16 [64][D] tile: 16-byte rows whose 8-row groups fall in
// distinct bank groups (ldmatrix without conflicts).
template <int D> constexpr int LD = D + 8;
template <int D> constexpr int TILE_ELEMS = TILE * LD<D>;

// Rows (b, pos[r], head) of a bf16 [B, L, H, D] tensor into sh[ROWS][LD] by cp.async (16 bytes
// a copy); pos < 0: zeros. The caller commits and waits.
template <int D, int ROWS = TILE>
__device__ void load_rows_async(bf16 *sh, const bf16 *x, const int *pos, int b, int L, int H, int head) {
    constexpr int PER_ROW = D / 8;
    for (int e = threadIdx.x; e < ROWS * PER_ROW; e += THREADS) {
        const int r = e / PER_ROW, c = (e % PER_ROW) * 8, p = pos[r];
        bf16 *dst = sh + r * LD<D> + c;
        if (p >= 0) __pipeline_memcpy_async(dst, x + (((size_t)b * L + p) * H + head) * D + c, 16);
        else *(uint4 *)dst = make_uint4(0, 0, 0, 0);
    }
}

// A fragments of rows r0 .. r0 + 15 of a shared [64][LD] tile, k-steps of 16 columns.
template <int D> __device__ void load_a(uint32_t (&a)[D / 16][4], const bf16 *sh, int r0) {
    const int lane = threadIdx.x % 32;
    const bf16 *p = sh + (r0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * LD<D> + 8 * (lane >> 4);
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) ldsm_x4(a[ks][0], a[ks][1], a[ks][2], a[ks][3], p + 16 * ks);
}

// s = A X^T for this warp's M m-tiles of 16 rows: A as fragments, X a shared [64][LD] tile
// (its rows are s's 64 columns, n-tiles of 8). Each B fragment loaded from X serves all M
// m-tiles: more rows per warp, fewer shared-memory loads per product.
template <int D, int M>
__device__ void products_abt(float (&s)[M][8][4], const uint32_t (&a)[M][D / 16][4], const bf16 *X) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int mt = 0; mt < M; mt++)
#pragma unroll
        for (int n = 0; n < 8; n++) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
    const bf16 *p = X + ((lane & 7) + 8 * (lane >> 4)) * LD<D> + 8 * ((lane >> 3) & 1);
#pragma unroll
    for (int np = 0; np < 4; np++) // n-tiles 2 np and 2 np + 1
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4(b0, b1, b2, b3, p + 16 * np * LD<D> + 16 * ks);
#pragma unroll
            for (int mt = 0; mt < M; mt++) {
                mma(s[mt][2 * np], a[mt][ks], b0, b1);
                mma(s[mt][2 * np + 1], a[mt][ks], b2, b3);
            }
        }
}
// The same with A's fragments read from shared rows r0 .. r0 + 16 M - 1 one k-step at a time
// (for kernels whose registers are taken by accumulators); N n-tiles: X's first 8 N rows.
template <int D, int M, int N = 8>
__device__ void products_abt_rows(float (&s)[M][N][4], const bf16 *A, int r0, const bf16 *X) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int mt = 0; mt < M; mt++)
#pragma unroll
        for (int n = 0; n < N; n++) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
    const bf16 *pa = A + (r0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * LD<D> + 8 * (lane >> 4);
    const bf16 *p = X + ((lane & 7) + 8 * (lane >> 4)) * LD<D> + 8 * ((lane >> 3) & 1);
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
        uint32_t a[M][4];
#pragma unroll
        for (int mt = 0; mt < M; mt++) ldsm_x4(a[mt][0], a[mt][1], a[mt][2], a[mt][3], pa + 16 * mt * LD<D> + 16 * ks);
#pragma unroll
        for (int np = 0; np < N / 2; np++) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4(b0, b1, b2, b3, p + 16 * np * LD<D> + 16 * ks);
#pragma unroll
            for (int mt = 0; mt < M; mt++) {
                mma(s[mt][2 * np], a[mt], b0, b1);
                mma(s[mt][2 * np + 1], a[mt], b2, b3);
            }
        }
    }
}

// acc += P X for this warp's M m-tiles: P as 16 x 8 N C fragments each (packed to bf16 as A
// fragments), X a shared [8 N][LD] tile read as [k = its rows][n = its columns].
template <int D, int M, int N = 8>
__device__ void products_px(float (&acc)[M][D / 8][4], const float (&p)[M][N][4], const bf16 *X) {
    const int lane = threadIdx.x % 32;
    const bf16 *base = X + (lane & 15) * LD<D> + 8 * (lane >> 4);
#pragma unroll
    for (int ks = 0; ks < N / 2; ks++) {
        uint32_t a[M][4];
#pragma unroll
        for (int mt = 0; mt < M; mt++) {
            a[mt][0] = pack(p[mt][2 * ks][0], p[mt][2 * ks][1]), a[mt][1] = pack(p[mt][2 * ks][2], p[mt][2 * ks][3]);
            a[mt][2] = pack(p[mt][2 * ks + 1][0], p[mt][2 * ks + 1][1]);
            a[mt][3] = pack(p[mt][2 * ks + 1][2], p[mt][2 * ks + 1][3]);
        }
#pragma unroll
        for (int nn = 0; nn < D / 16; nn++) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4_trans(b0, b1, b2, b3, base + 16 * ks * LD<D> + 16 * nn);
#pragma unroll
            for (int mt = 0; mt < M; mt++) {
                mma(acc[mt][2 * nn], a[mt], b0, b1);
                mma(acc[mt][2 * nn + 1], a[mt], b2, b3);
            }
        }
    }
}

// Column of element e (0..3) of n-tile n of this lane's C fragments; its row is g (e < 2) or
// g + 8.
__device__ inline int frag_col(int n, int e) { return 8 * n + 2 * (threadIdx.x % 4) + (e & 1); }

// 1 when every (query, key) pair of the tile pair is visible: no per-element masks needed.
// Queries q0 .. q1 (all valid), keys k0 .. k1 (all valid, sorted); seg_b: the selected segment.
__device__ inline bool all_visible(int q0, int q1, int k0, int k1, bool seg_b, int wl) {
    if (seg_b) return q0 - k1 > wl;
    return k1 <= q0 && (wl < 0 || q1 - k0 <= wl);
}

// M m-tiles of 16 rows per warp in the forward and dq kernels: queries per block. Two (128
// queries a block; each K / V fragment loaded from shared memory serves twice the rows) fit
// the registers at head dim 64 only, where they are the default since their GPU run (H100,
// 2026-12-07); HYLA_ATTN_TWO_MTILES=0 gives one m-tile (two_mtiles below).
template <int M> constexpr int QROWS = 16 * WARPS * M;

// A forward or dq block: QROWS queries of one (batch, query head), their kv head and key tiles.
struct query_block {
    int t0, t1, hq, b, hk, bk, tiles;
    key_tiles kt;
};
__device__ inline query_block query_block_of(const flash_shape &s, int rows) {
    query_block qb;
    qb.t0 = (gridDim.x - 1 - blockIdx.x) * rows; // the causal mask's longest tiles first
    qb.hq = blockIdx.y % s.Hq, qb.b = blockIdx.y / s.Hq, qb.hk = qb.hq / (s.Hq / s.Hkv);
    qb.t1 = min(s.L - 1, qb.t0 + rows - 1), qb.bk = qb.b * s.Hkv + qb.hk;
    qb.kt = keys_of_query_tile(s, qb.bk, qb.t0, qb.t1);
    qb.tiles = qb.kt.a_tiles + qb.kt.b_tiles;
    return qb;
}
// The key and value rows of a query block's key tile into buffer buf (positions into
// kpos[buf] for the masks, rows by cp.async, not yet committed). Every thread calls it. Each
// thread works out the positions of the rows it copies itself rather than reading kpos, so no
// barrier stands between kpos's writes and the copies (kpos[buf] is read after the barrier
// that follows the copies' wait).
template <int D>
__device__ void stage_keys(int (*kpos)[TILE], bf16 *Kb, bf16 *Vb, const bf16 *k, const bf16 *v, const flash_shape &s,
                           const query_block &qb, int tile, int buf) {
    if (threadIdx.x < TILE) kpos[buf][threadIdx.x] = key_position(s, qb.kt, qb.bk, qb.t1, tile, threadIdx.x);
    constexpr int PER_ROW = D / 8;
    for (int e = threadIdx.x; e < TILE * PER_ROW; e += THREADS) {
        const int r = e / PER_ROW, c = (e % PER_ROW) * 8, p = key_position(s, qb.kt, qb.bk, qb.t1, tile, r);
        bf16 *dk = Kb + buf * TILE_ELEMS<D> + r * LD<D> + c, *dv = Vb + buf * TILE_ELEMS<D> + r * LD<D> + c;
        if (p >= 0) {
            const size_t i = (((size_t)qb.b * s.L + p) * s.Hkv + qb.hk) * D + c;
            __pipeline_memcpy_async(dk, k + i, 16);
            __pipeline_memcpy_async(dv, v + i, 16);
        } else {
            *(uint4 *)dk = make_uint4(0, 0, 0, 0), *(uint4 *)dv = make_uint4(0, 0, 0, 0);
        }
    }
}
// Start of key tile `tile`'s turn: the next tile's copies start (its buffer was last read a
// tile ago), and this tile's have landed for every thread.
template <int D>
__device__ void next_keys(int (*kpos)[TILE], bf16 *Kb, bf16 *Vb, const bf16 *k, const bf16 *v, const flash_shape &s,
                          const query_block &qb, int tile) {
    if (tile + 1 < qb.tiles) stage_keys<D>(kpos, Kb, Vb, k, v, s, qb, tile + 1, (tile + 1) & 1);
    __pipeline_commit();
    __pipeline_wait_prior(1);
    __syncthreads();
}
// The block's queries into qpos, key tile 0 staged, the query-side rows X[i] (Q, and dO for
// dq) loaded: all landed when it returns.
template <int D, int M, int NX>
__device__ void start_query_block(int *qpos, int (*kpos)[TILE], bf16 *Kb, bf16 *Vb, bf16 *const (&Xs)[NX],
                                  const bf16 *const (&x)[NX], const bf16 *k, const bf16 *v, const flash_shape &s,
                                  const query_block &qb) {
    for (int r = threadIdx.x; r < QROWS<M>; r += THREADS) qpos[r] = qb.t0 + r <= qb.t1 ? qb.t0 + r : -1;
    if (qb.tiles > 0) stage_keys<D>(kpos, Kb, Vb, k, v, s, qb, 0, 0);
    __syncthreads(); // qpos (and kpos[0]) for every thread
#pragma unroll
    for (int i = 0; i < NX; i++) load_rows_async<D, QROWS<M>>(Xs[i], x[i], qpos, qb.b, s.L, s.Hq, qb.hq);
    __pipeline_commit();
    __pipeline_wait_prior(0);
    __syncthreads();
}
// 1 unless the tile needs per-element masks (keys missing, or some pair not visible).
__device__ inline bool tile_all_visible(const query_block &qb, const int *kp, bool seg_b, int wl) {
    return kp[TILE - 1] >= 0 && all_visible(qb.t0, qb.t1, kp[0], kp[TILE - 1], seg_b, wl);
}

template <int D, int M> constexpr size_t query_rows_bytes() { return sizeof(bf16) * QROWS<M> * LD<D>; }
template <int D, int M> constexpr size_t fwd_smem_bytes() {
    return query_rows_bytes<D, M>() + sizeof(bf16) * 4 * TILE_ELEMS<D>;
}

// Lazy rescaling (LAZY): a row keeps its reference maximum m until a tile's maximum exceeds it
// by more than LAZY_SLACK (in log2 units: probabilities up to 2^8, which fp32 sums and bf16 P
// hold without loss: bf16's precision is relative), so the accumulator's rescale by corr, 64
// multiplies a thread and tile, runs only when some row's maximum jumps by 256x — after a row's
// first tiles, almost never. Any reference gives the same O = sum p v / sum p and lse = m +
// log2 l; only the roundings move.
constexpr float LAZY_SLACK = 8.0f;

// O and lse of QROWS queries (one head) over their key tiles (cuda_flash_common.cuh); o_h: O's
// bf16 copy beside it where the model holds O (the output projection's operand), else NULL.
template <int D, int M, bool LAZY>
__global__ void __launch_bounds__(THREADS) mma_fwd_kernel(float *o, bf16 *o_h, float *lse, const bf16 *q,
                                                          const bf16 *k, const bf16 *v, flash_shape s) {
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *Qs = (bf16 *)smem, *Kb = Qs + QROWS<M> * LD<D>, *Vb = Kb + 2 * TILE_ELEMS<D>;
    __shared__ int qpos[QROWS<M>], kpos[2][TILE];
    const query_block qb = query_block_of(s, QROWS<M>);
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4;
    start_query_block<D, M, 1>(qpos, kpos, Kb, Vb, {Qs}, {q}, k, v, s, qb);
    uint32_t qa[M][D / 16][4];
    int row_t[M][2]; // this lane's query rows: g and g + 8 of each m-tile
#pragma unroll
    for (int mt = 0; mt < M; mt++) {
        load_a<D>(qa[mt], Qs, 16 * (M * warp + mt));
        row_t[mt][0] = qb.t0 + 16 * (M * warp + mt) + g, row_t[mt][1] = row_t[mt][0] + 8;
    }
    const float c = s.scale * LOG2E;
    float m[M][2], l[M][2], acc[M][D / 8][4];
#pragma unroll
    for (int mt = 0; mt < M; mt++) {
        m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;
#pragma unroll
        for (int n = 0; n < D / 8; n++) acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.0f;
    }
    for (int tile = 0; tile < qb.tiles; tile++) {
        const int cur = tile & 1;
        next_keys<D>(kpos, Kb, Vb, k, v, s, qb, tile);
        float sc[M][8][4];
        products_abt<D, M>(sc, qa, Kb + cur * TILE_ELEMS<D>);
        const int *kp = kpos[cur];
        const bool seg_b = tile >= qb.kt.a_tiles, full = tile_all_visible(qb, kp, seg_b, s.wl);
        // Online softmax on the raw scores (masked ones -inf): the running maximum m is kept
        // scaled (c > 0: max then scale is scale then max), and each probability is one fused
        // multiply-add and one ex2; the accumulator's rescale by corr is skipped when no row of
        // the warp has a new maximum (corr exactly 1), most tiles once a row has seen its keys.
        float corr[M][2];
#pragma unroll
        for (int mt = 0; mt < M; mt++) {
            if (!full)
#pragma unroll
                for (int n = 0; n < 8; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int t = row_t[mt][e >> 1], key = kp[frag_col(n, e)];
                        if (!(seg_b ? visible_b(t, key, s.wl) : visible_a(t, key, s.wl))) sc[mt][n][e] = -INFINITY;
                    }
#pragma unroll
            for (int r = 0; r < 2; r++) { // row g (r = 0) and g + 8 (r = 1)
                float mx = -INFINITY;
#pragma unroll
                for (int n = 0; n < 8; n++) mx = fmaxf(mx, fmaxf(sc[mt][n][2 * r], sc[mt][n][2 * r + 1]));
                const float tile_max = quad_max(mx) * c;
                const float m_new = LAZY && tile_max <= m[mt][r] + LAZY_SLACK ? m[mt][r] : fmaxf(m[mt][r], tile_max);
                const float base = m_new == -INFINITY ? 0.0f : m_new; // a row with nothing visible yet
                corr[mt][r] = exp2_approx(m[mt][r] - base);          // 0 while m was -inf
                float sum = 0.0f;
#pragma unroll
                for (int n = 0; n < 8; n++) {
                    sc[mt][n][2 * r] = exp2_approx(fmaf(sc[mt][n][2 * r], c, -base));
                    sc[mt][n][2 * r + 1] = exp2_approx(fmaf(sc[mt][n][2 * r + 1], c, -base));
                    sum += sc[mt][n][2 * r] + sc[mt][n][2 * r + 1];
                }
                l[mt][r] = l[mt][r] * corr[mt][r] + sum; // this lane's columns; the quad's sum at the end
                m[mt][r] = m_new;
            }
        }
        bool rescale = false;
#pragma unroll
        for (int mt = 0; mt < M; mt++) rescale |= corr[mt][0] != 1.0f || corr[mt][1] != 1.0f;
        if (__any_sync(0xffffffffu, rescale))
#pragma unroll
            for (int mt = 0; mt < M; mt++)
#pragma unroll
                for (int n = 0; n < D / 8; n++) {
                    acc[mt][n][0] *= corr[mt][0], acc[mt][n][1] *= corr[mt][0];
                    acc[mt][n][2] *= corr[mt][1], acc[mt][n][3] *= corr[mt][1];
                }
        products_px<D, M>(acc, sc, Vb + cur * TILE_ELEMS<D>);
        __syncthreads(); // every warp is done with buffer cur before the tile after next fills it
    }
#pragma unroll
    for (int mt = 0; mt < M; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int t = row_t[mt][r];
            const float lr = quad_sum(l[mt][r]);
            if (t > qb.t1) continue;
            const size_t out_row = ((size_t)qb.b * s.L + t) * s.Hq + qb.hq;
            const float inv = lr > 0 ? 1.0f / lr : 0.0f;
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                const float x0 = acc[mt][n][2 * r] * inv, x1 = acc[mt][n][2 * r + 1] * inv;
                *(float2 *)(o + out_row * D + frag_col(n, 0)) = make_float2(x0, x1);
                if (o_h) *(uint32_t *)(o_h + out_row * D + frag_col(n, 0)) = pack(x0, x1);
            }
            if (threadIdx.x % 4 == 0) lse[out_row] = lr > 0 ? (m[mt][r] + log2f(lr)) * LN2 : -INFINITY;
        }
}

template <int D, int M> constexpr size_t dq_smem_bytes() {
    return 2 * query_rows_bytes<D, M>() + sizeof(bf16) * 4 * TILE_ELEMS<D>;
}

// KP keys at a time in the dq kernel: 64, the whole key tile (S and dP of 64 keys live beside
// dq: ~255 registers, two blocks an SM), or 32 (HYLA_ATTN_DQ2: half the S and dP registers, at
// most 168 a thread so that three blocks share an SM; the same products in the same order,
// the same bits).
template <int D, int KP> constexpr int DQ_MIN_BLOCKS = D == 64 && KP == 32 ? 3 : 1; // (at 128: shared memory for 2)

// dq of QROWS queries: scale * sum over visible keys of P (dP - delta) k, dP = dO v. Q and dO
// fragments are read from shared memory per product (registers hold dq, S and dP).
template <int D, int M, int KP>
__global__ void __launch_bounds__(THREADS, DQ_MIN_BLOCKS<D, KP>)
    mma_dq_kernel(float *dq, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
                  const float *delta, flash_shape s) {
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *Qs = (bf16 *)smem, *dOs = Qs + QROWS<M> * LD<D>, *Kb = dOs + QROWS<M> * LD<D>, *Vb = Kb + 2 * TILE_ELEMS<D>;
    __shared__ int qpos[QROWS<M>], kpos[2][TILE];
    const query_block qb = query_block_of(s, QROWS<M>);
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, r0 = 16 * M * warp;
    start_query_block<D, M, 2>(qpos, kpos, Kb, Vb, {Qs, dOs}, {q, dout}, k, v, s, qb);
    auto row_t = [&](int mt, int r) { return qb.t0 + r0 + 16 * mt + g + 8 * r; }; // this lane's query rows
    float row_lse[M][2], row_delta[M][2], acc[M][D / 8][4];
#pragma unroll
    for (int mt = 0; mt < M; mt++) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const size_t i = ((size_t)qb.b * s.L + min(row_t(mt, r), qb.t1)) * s.Hq + qb.hq;
            row_lse[mt][r] = lse[i] * LOG2E, row_delta[mt][r] = delta[i];
        }
#pragma unroll
        for (int n = 0; n < D / 8; n++) acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.0f;
    }
    const float c = s.scale * LOG2E;
    for (int tile = 0; tile < qb.tiles; tile++) {
        const int cur = tile & 1;
        next_keys<D>(kpos, Kb, Vb, k, v, s, qb, tile);
        const int *kp = kpos[cur];
        const bool seg_b = tile >= qb.kt.a_tiles, full = tile_all_visible(qb, kp, seg_b, s.wl);
#pragma unroll 1
        for (int part = 0; part < TILE / KP; part++) { // keys KP part .. KP part + KP - 1 of the tile
            const bf16 *Ks = Kb + cur * TILE_ELEMS<D> + KP * part * LD<D>, *Vs = Vb + cur * TILE_ELEMS<D> + KP * part * LD<D>;
            float sc[M][KP / 8][4], dp[M][KP / 8][4];
            products_abt_rows<D, M, KP / 8>(sc, Qs, r0, Ks);
            products_abt_rows<D, M, KP / 8>(dp, dOs, r0, Vs);
#pragma unroll
            for (int mt = 0; mt < M; mt++)
#pragma unroll
                for (int n = 0; n < KP / 8; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int r = e >> 1;
                        bool vis = true;
                        if (!full) {
                            const int t = row_t(mt, r), key = kp[KP * part + frag_col(n, e)];
                            vis = t <= qb.t1 && (seg_b ? visible_b(t, key, s.wl) : visible_a(t, key, s.wl));
                        }
                        const float p = vis ? exp2_approx(fmaf(sc[mt][n][e], c, -row_lse[mt][r])) : 0.0f;
                        sc[mt][n][e] = p * (dp[mt][n][e] - row_delta[mt][r]); // dS
                    }
            products_px<D, M, KP / 8>(acc, sc, Ks);
        }
        __syncthreads();
    }
#pragma unroll
    for (int mt = 0; mt < M; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int t = row_t(mt, r);
            if (t > qb.t1) continue;
            float *out = dq + (((size_t)qb.b * s.L + t) * s.Hq + qb.hq) * D;
#pragma unroll
            for (int n = 0; n < D / 8; n++)
                *(float2 *)(out + frag_col(n, 0)) =
                    make_float2(s.scale * acc[mt][n][2 * r], s.scale * acc[mt][n][2 * r + 1]);
        }
}

template <int D> constexpr size_t dkdv_smem_bytes() { return sizeof(bf16) * 6 * TILE_ELEMS<D>; } // K, V, 2 x (Q, dO)

// dk, dv of 64 keys over the group's query heads and the query tiles that see them (each warp
// 16 keys); selected_pass as in the fp32 kernel (0: window keys written, 1: selected keys
// added). Query tiles stream through two buffers.
template <int D>
__global__ void __launch_bounds__(THREADS) mma_dkdv_kernel(float *dk, float *dv, const bf16 *dout, const bf16 *q,
                                                           const bf16 *k, const bf16 *v, const float *lse,
                                                           const float *delta, flash_shape s, int selected_pass) {
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *Ks = (bf16 *)smem, *Vs = Ks + TILE_ELEMS<D>, *Qb = Vs + TILE_ELEMS<D>, *dOb = Qb + 2 * TILE_ELEMS<D>;
    __shared__ int kpos[TILE], qpos[2][TILE];
    __shared__ float qlse[2][TILE], qdelta[2][TILE];
    const int hk = blockIdx.y % s.Hkv, b = blockIdx.y / s.Hkv, bk = b * s.Hkv + hk, G = s.Hq / s.Hkv;
    int first_query;
    const int n_keys = dkdv_block_keys(s, bk, selected_pass, kpos, &first_query);
    if (n_keys == 0) return; // the whole block leaves together
    __syncthreads();
    const int k0 = kpos[0], k1 = kpos[n_keys - 1];
    const int last_query = dkdv_last_query(s, selected_pass, k1);
    const int qtiles = first_query <= last_query ? (last_query - first_query + TILE) / TILE : 0;
    const int steps = G * qtiles; // (query head, query tile) pairs
    // queries of step i: head hk G + i / qtiles, positions from first_query + (i % qtiles) 64
    auto stage = [&](int i, int buf) {
        const int hq = hk * G + i / qtiles, t0 = first_query + (i % qtiles) * TILE;
        if (threadIdx.x < TILE) {
            const int t = t0 + (int)threadIdx.x;
            qpos[buf][threadIdx.x] = t <= last_query ? t : -1;
            const size_t r = ((size_t)b * s.L + min(t, last_query)) * s.Hq + hq;
            qlse[buf][threadIdx.x] = lse[r] * LOG2E, qdelta[buf][threadIdx.x] = delta[r];
        }
        __syncthreads();
        load_rows_async<D>(Qb + buf * TILE_ELEMS<D>, q, qpos[buf], b, s.L, s.Hq, hq);
        load_rows_async<D>(dOb + buf * TILE_ELEMS<D>, dout, qpos[buf], b, s.L, s.Hq, hq);
    };
    load_rows_async<D>(Ks, k, kpos, b, s.L, s.Hkv, hk);
    load_rows_async<D>(Vs, v, kpos, b, s.L, s.Hkv, hk);
    if (steps > 0) stage(0, 0);
    __pipeline_commit();
    __pipeline_wait_prior(0);
    __syncthreads();
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4;
    const int row_key[2] = {kpos[16 * warp + g], kpos[16 * warp + g + 8]}; // this lane's keys (-1: none)
    const float c = s.scale * LOG2E;
    float adk[1][D / 8][4], adv[1][D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) adk[0][n][e] = adv[0][n][e] = 0.0f;
    for (int i = 0; i < steps; i++) {
        const int cur = i & 1, nxt = cur ^ 1;
        if (i + 1 < steps) stage(i + 1, nxt);
        __pipeline_commit();
        __pipeline_wait_prior(1);
        __syncthreads();
        const bf16 *Qs = Qb + cur * TILE_ELEMS<D>, *dOs = dOb + cur * TILE_ELEMS<D>;
        float sc[1][8][4], dp[1][8][4], ds[1][8][4];
        {
            uint32_t a[1][D / 16][4]; // K and V rows as A operands, reloaded per step (registers)
            load_a<D>(a[0], Ks, 16 * warp);
            products_abt<D, 1>(sc, a, Qs); // S^T: rows keys, columns queries
            load_a<D>(a[0], Vs, 16 * warp);
            products_abt<D, 1>(dp, a, dOs); // dP^T
        }
        const int *qp = qpos[cur];
        const bool full = qp[TILE - 1] >= 0 && n_keys == TILE &&
                          all_visible(qp[0], qp[TILE - 1], k0, k1, selected_pass != 0, s.wl);
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int col = frag_col(n, e);
                bool vis = true;
                if (!full) {
                    const int tq = qp[col], key = row_key[e >> 1];
                    vis = tq >= 0 && key >= 0 &&
                          (selected_pass ? visible_b(tq, key, s.wl) : visible_a(tq, key, s.wl));
                }
                const float p = vis ? exp2_approx(fmaf(sc[0][n][e], c, -qlse[cur][col])) : 0.0f;
                sc[0][n][e] = p;
                ds[0][n][e] = p * (dp[0][n][e] - qdelta[cur][col]);
            }
        products_px<D, 1>(adv, sc, dOs); // dv += P^T dO
        products_px<D, 1>(adk, ds, Qs);  // dk += dS^T q (scaled below)
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int j = row_key[r];
        if (j < 0) continue;
        const size_t out = (((size_t)b * s.L + j) * s.Hkv + hk) * D;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            const int col = frag_col(n, 0);
            float2 x = make_float2(adv[0][n][2 * r], adv[0][n][2 * r + 1]);
            float2 y = make_float2(s.scale * adk[0][n][2 * r], s.scale * adk[0][n][2 * r + 1]);
            if (selected_pass) {
                const float2 ox = *(float2 *)(dv + out + col), oy = *(float2 *)(dk + out + col);
                x.x += ox.x, x.y += ox.y, y.x += oy.x, y.y += oy.y;
            }
            *(float2 *)(dv + out + col) = x;
            *(float2 *)(dk + out + col) = y;
        }
    }
}

// dk, dv restructured (HYLA_ATTN_DKDV2, dkdv2 below): KROWS keys a block, 16 M a warp, so each
// Q / dO fragment loaded from shared memory serves M m-tiles (at head dim 64 M = 2: a third less
// ldmatrix traffic per product than mma_dkdv_kernel, half the Q / dO copies per key); a query
// tile's S and dP fragments are formed 32 queries at a time (the registers hold dk and dv of M
// m-tiles beside them). Query tiles — Q, dO rows and their lse, delta — stream through QSTAGES
// buffers by cp.async, no load from global memory on a tile's path, and at head dim 64 one
// barrier a tile (3 buffers: one is refilled two tiles after it was read, and every warp has
// passed the barrier in between; at 128, 2 buffers and a second barrier keep 2 blocks an SM).
// A warp skips the tiles that none of its keys see. Blocks: x the (batch, kv head), y the keys,
// so the selected pass's longest blocks (the first entries of each list) start first.
template <int M> constexpr int KROWS = 16 * WARPS * M;
template <int D> constexpr int QSTAGES = D == 64 ? 3 : 2;
template <int D, int M> constexpr size_t dkdv2_smem_bytes() {
    return sizeof(bf16) * (2 * KROWS<M> + 2 * QSTAGES<D> * TILE) * LD<D>; // K, V; QSTAGES x (Q, dO)
}

// The keys of a dkdv2 block (the blockIdx.y-th ROWS of (batch, kv head) bk) into kpos: window
// positions, or (selected_pass) the list's entries; -1 past the last. Returns how many (0: none,
// the block leaves) and the first query that sees them; the caller's barrier publishes kpos.
template <int ROWS>
__device__ int dkdv2_block_keys(const flash_shape &s, int bk, int selected_pass, int *kpos, int *first_query) {
    const int n0 = blockIdx.y * ROWS, count = selected_pass ? s.count[bk] : s.L;
    if (n0 >= count) return 0;
    const int n = min(ROWS, count - n0);
    const int *list = selected_pass ? s.list + (size_t)bk * s.L + n0 : NULL;
    for (int r = threadIdx.x; r < ROWS; r += THREADS) kpos[r] = r < n ? (list ? list[r] : n0 + r) : -1;
    *first_query = list ? list[0] + s.wl + 1 : n0; // past the window of the first selected key
    return n;
}

template <int D, int M>
__global__ void __launch_bounds__(THREADS) mma_dkdv2_kernel(float *dk, float *dv, const bf16 *dout, const bf16 *q,
                                                            const bf16 *k, const bf16 *v, const float *lse,
                                                            const float *delta, flash_shape s, int selected_pass) {
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *Ks = (bf16 *)smem, *Vs = Ks + KROWS<M> * LD<D>, *Qb = Vs + KROWS<M> * LD<D>;
    bf16 *dOb = Qb + QSTAGES<D> * TILE_ELEMS<D>;
    __shared__ int kpos[KROWS<M>];
    __shared__ float qlse[QSTAGES<D>][TILE], qdelta[QSTAGES<D>][TILE];
    const int hk = blockIdx.x % s.Hkv, b = blockIdx.x / s.Hkv, bk = b * s.Hkv + hk, G = s.Hq / s.Hkv;
    int first_query;
    const int n_keys = dkdv2_block_keys<KROWS<M>>(s, bk, selected_pass, kpos, &first_query);
    if (n_keys == 0) return; // the whole block leaves together
    __syncthreads();
    const int last_query = dkdv_last_query(s, selected_pass, kpos[n_keys - 1]);
    const int qtiles = first_query <= last_query ? (last_query - first_query + TILE) / TILE : 0;
    const int steps = G * qtiles; // (query head, query tile) pairs
    // Step i's queries (head hk G + i / qtiles, positions from first_query + (i % qtiles) 64)
    // into buffer buf: Q, dO rows, lse, delta; rows past last_query repeat it (finite values in
    // columns that are masked). Not committed.
    auto stage = [&](int i, int buf) {
        constexpr int PER_ROW = D / 8;
        const int hq = hk * G + i / qtiles, t0 = first_query + (i % qtiles) * TILE;
        bf16 *Qs = Qb + buf * TILE_ELEMS<D>, *dOs = dOb + buf * TILE_ELEMS<D>;
        for (int e = threadIdx.x; e < TILE * PER_ROW; e += THREADS) {
            const int r = e / PER_ROW, c = (e % PER_ROW) * 8;
            const size_t at = (((size_t)b * s.L + min(t0 + r, last_query)) * s.Hq + hq) * D + c;
            __pipeline_memcpy_async(Qs + r * LD<D> + c, q + at, 16);
            __pipeline_memcpy_async(dOs + r * LD<D> + c, dout + at, 16);
        }
        static_assert(THREADS == 2 * TILE, "a thread per row of lse, one per row of delta");
        const size_t row = ((size_t)b * s.L + min(t0 + (int)threadIdx.x % TILE, last_query)) * s.Hq + hq;
        if (threadIdx.x < TILE) __pipeline_memcpy_async(&qlse[buf][threadIdx.x], lse + row, 4);
        else __pipeline_memcpy_async(&qdelta[buf][threadIdx.x - TILE], delta + row, 4);
    };
    load_rows_async<D, KROWS<M>>(Ks, k, kpos, b, s.L, s.Hkv, hk);
    load_rows_async<D, KROWS<M>>(Vs, v, kpos, b, s.L, s.Hkv, hk);
    if (steps > 0) stage(0, 0);
    __pipeline_commit(); // waited for at step 0 (or below, when there is none)
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, r0 = 16 * M * warp;
    // the warp's first and last keys (sorted), and whether all its rows hold one
    const bool warp_full = r0 + 16 * M <= n_keys;
    const int wk0 = kpos[r0], wk1 = kpos[max(0, min(r0 + 16 * M, n_keys) - 1)];
    const bool sel = selected_pass != 0;
    const float c = s.scale * LOG2E;
    float adk[M][D / 8][4], adv[M][D / 8][4];
#pragma unroll
    for (int mt = 0; mt < M; mt++)
#pragma unroll
        for (int n = 0; n < D / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) adk[mt][n][e] = adv[mt][n][e] = 0.0f;
    for (int i = 0; i < steps; i++) {
        const int cur = i % QSTAGES<D>;
        if (i + 1 < steps) stage(i + 1, (i + 1) % QSTAGES<D>); // read last at step i + 1 - QSTAGES
        __pipeline_commit();
        __pipeline_wait_prior(1);
        __syncthreads();
        const int t0 = first_query + (i % qtiles) * TILE, t1 = min(t0 + TILE - 1, last_query);
        // none of the warp's keys seen by the tile's queries: the warp waits at the next barrier
        if (wk0 < 0 || (sel ? t1 - wk0 <= s.wl : (t1 < wk0 || (s.wl >= 0 && t0 - wk1 > s.wl)))) {
            if (QSTAGES<D> == 2) __syncthreads();
            continue;
        }
        const bool full = warp_full && t1 == t0 + TILE - 1 && all_visible(t0, t1, wk0, wk1, sel, s.wl);
        const bf16 *Qs = Qb + cur * TILE_ELEMS<D>, *dOs = dOb + cur * TILE_ELEMS<D>;
#pragma unroll 1
        for (int h = 0; h < TILE / 32; h++) { // queries 32 h .. 32 h + 31 of the tile
            const bf16 *Qh = Qs + 32 * h * LD<D>, *dOh = dOs + 32 * h * LD<D>;
            float sc[M][4][4], dp[M][4][4];
            products_abt_rows<D, M, 4>(sc, Ks, r0, Qh); // S^T: rows keys, columns queries
            // lse in base 2 of this lane's columns (as mma_dkdv_kernel stages it: one rounded
            // multiply), shared by its rows
            float lse2[4][2];
#pragma unroll
            for (int n = 0; n < 4; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) lse2[n][e] = __fmul_rn(qlse[cur][32 * h + frag_col(n, e)], LOG2E);
            auto probabilities = [&](auto masks) { // P^T in sc (masks: std::true_type, per element)
                constexpr bool masked = decltype(masks)::value;
#pragma unroll
                for (int mt = 0; mt < M; mt++)
#pragma unroll
                    for (int r = 0; r < 2; r++) { // rows g (r = 0) and g + 8 (r = 1): a key each
                        int lo = 0, hi = TILE - 1; // the columns (queries t0 + col) that see it
                        if constexpr (masked) {
                            const int key = kpos[r0 + 16 * mt + g + 8 * r];
                            lo = (sel ? key + s.wl + 1 : key) - t0;
                            hi = (sel || s.wl < 0 ? last_query : min(last_query, key + s.wl)) - t0;
                            if (key < 0) lo = TILE; // none
                        }
#pragma unroll
                        for (int n = 0; n < 4; n++)
#pragma unroll
                            for (int e = 2 * r; e < 2 * r + 2; e++) {
                                const int col = 32 * h + frag_col(n, e);
                                const float p = exp2_approx(fmaf(sc[mt][n][e], c, -lse2[n][e & 1]));
                                sc[mt][n][e] = !masked || (col >= lo && col <= hi) ? p : 0.0f;
                            }
                    }
            };
            if (full) probabilities(std::false_type());
            else probabilities(std::true_type());
            products_px<D, M, 4>(adv, sc, dOh);          // dv += P^T dO
            products_abt_rows<D, M, 4>(dp, Vs, r0, dOh); // dP^T
#pragma unroll
            for (int mt = 0; mt < M; mt++)
#pragma unroll
                for (int n = 0; n < 4; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) { // dS^T
                        const float d_col = qdelta[cur][32 * h + frag_col(n, e)];
                        dp[mt][n][e] = sc[mt][n][e] * (dp[mt][n][e] - d_col);
                    }
            products_px<D, M, 4>(adk, dp, Qh);  // dk += dS^T q (scaled below)
        }
        if (QSTAGES<D> == 2) __syncthreads(); // every warp is done with buffer cur before it refills
    }
    __pipeline_wait_prior(0); // (no steps: the K, V rows)
#pragma unroll
    for (int mt = 0; mt < M; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int j = kpos[r0 + 16 * mt + g + 8 * r]; // this lane's keys (-1: none)
            if (j < 0) continue;
            const size_t out = (((size_t)b * s.L + j) * s.Hkv + hk) * D;
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                const int col = frag_col(n, 0);
                float2 x = make_float2(adv[mt][n][2 * r], adv[mt][n][2 * r + 1]);
                float2 y = make_float2(s.scale * adk[mt][n][2 * r], s.scale * adk[mt][n][2 * r + 1]);
                if (selected_pass) {
                    const float2 ox = *(float2 *)(dv + out + col), oy = *(float2 *)(dk + out + col);
                    x.x += ox.x, x.y += ox.y, y.x += oy.x, y.y += oy.y;
                }
                *(float2 *)(dv + out + col) = x;
                *(float2 *)(dk + out + col) = y;
            }
        }
}

void allow(const void *kernel, size_t bytes) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// Two m-tiles per warp at head dim 64: HYLA_ATTN_TWO_MTILES=1 / 0, TWO_MTILES_BY_DEFAULT
// otherwise (ctest emu.attn runs both forms on the CPU).
constexpr bool TWO_MTILES_BY_DEFAULT = true;
bool two_mtiles(int d) {
    static const bool on = cuda_switch("HYLA_ATTN_TWO_MTILES", TWO_MTILES_BY_DEFAULT);
    return on && d == 64;
}

// dk, dv by mma_dkdv2_kernel (two m-tiles per warp at head dim 64, one at 128):
// HYLA_ATTN_DKDV2=1 / 0, DKDV2_BY_DEFAULT otherwise (ctest emu.attn runs both forms on the CPU).
constexpr bool DKDV2_BY_DEFAULT = true; // H100 2026-12-07 (docs/gpu-runs/2026-12-07e-h100)
bool dkdv2() {
    static const bool on = cuda_switch("HYLA_ATTN_DKDV2", DKDV2_BY_DEFAULT);
    return on;
}

// The forward's lazy rescaling (mma_fwd_kernel): HYLA_ATTN_LAZY_RESCALE=1 / 0,
// LAZY_RESCALE_BY_DEFAULT otherwise: off until a GPU run has checked and timed it (ctest
// emu.attn runs it on the CPU within the bound).
constexpr bool LAZY_RESCALE_BY_DEFAULT = false;
bool lazy_rescale() { return cuda_switch("HYLA_ATTN_LAZY_RESCALE", LAZY_RESCALE_BY_DEFAULT); }

template <int D, int M, bool LAZY>
void fwd_launch(float *o, bf16 *o_h, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, const flash_shape &s) {
    allow((const void *)mma_fwd_kernel<D, M, LAZY>, fwd_smem_bytes<D, M>());
    mma_fwd_kernel<D, M, LAZY><<<dim3((s.L + QROWS<M> - 1) / QROWS<M>, s.B * s.Hq), THREADS, fwd_smem_bytes<D, M>()>>>(
        o, o_h, lse, q, k, v, s);
    CUDA_LAUNCH_CHECK();
}
template <int D, int M>
void fwd_dm(float *o, bf16 *o_h, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, const flash_shape &s) {
    if (lazy_rescale()) fwd_launch<D, M, true>(o, o_h, lse, q, k, v, s);
    else fwd_launch<D, M, false>(o, o_h, lse, q, k, v, s);
}

template <int D> void fwd_d(float *o, float *lse, const float *q, const float *k, const float *v, const flash_shape &s) {
    const size_t nq = (size_t)s.B * s.L * s.Hq * D, nk = (size_t)s.B * s.L * s.Hkv * D;
    const bf16_operand q_op(q, nq), k_op(k, nk), v_op(v, nk);
    const bf16 *qh = q_op, *kh = k_op, *vh = v_op;
    bf16 *oh = cuda_bf16_copy_target(o, nq); // where the model holds o (backend.h: expect_bf16_copy)
    if constexpr (D == 64) {
        if (two_mtiles(D)) fwd_dm<D, 2>(o, oh, lse, qh, kh, vh, s);
        else fwd_dm<D, 1>(o, oh, lse, qh, kh, vh, s);
    } else {
        fwd_dm<D, 1>(o, oh, lse, qh, kh, vh, s);
    }
}

// dq 32 keys at a time (three blocks an SM): HYLA_ATTN_DQ2=1 / 0, DQ2_BY_DEFAULT otherwise
// (ctest emu.attn requires the same bits both ways).
constexpr bool DQ2_BY_DEFAULT = true; // H100 2026-12-07: dq 13.5 -> 13.0 ms a laLTE step, ops tests passing
bool dq2() {
    static const bool on = cuda_switch("HYLA_ATTN_DQ2", DQ2_BY_DEFAULT);
    return on;
}

template <int D, int M, int KP>
void dq_launch(float *dq, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
               const float *delta, const flash_shape &s) {
    allow((const void *)mma_dq_kernel<D, M, KP>, dq_smem_bytes<D, M>());
    mma_dq_kernel<D, M, KP><<<dim3((s.L + QROWS<M> - 1) / QROWS<M>, s.B * s.Hq), THREADS, dq_smem_bytes<D, M>()>>>(
        dq, dout, q, k, v, lse, delta, s);
    CUDA_LAUNCH_CHECK();
}
template <int D, int M>
void dq_dm(float *dq, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
           const float *delta, const flash_shape &s) {
    if (dq2()) dq_launch<D, M, 32>(dq, dout, q, k, v, lse, delta, s);
    else dq_launch<D, M, TILE>(dq, dout, q, k, v, lse, delta, s);
}

template <int D, int M>
void dkdv2_d(float *dk, float *dv, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
             const float *delta, const flash_shape &s) {
    const size_t bytes = dkdv2_smem_bytes<D, M>();
    allow((const void *)mma_dkdv2_kernel<D, M>, bytes);
    const dim3 grid(s.B * s.Hkv, (s.L + KROWS<M> - 1) / KROWS<M>);
    mma_dkdv2_kernel<D, M><<<grid, THREADS, bytes>>>(dk, dv, dout, q, k, v, lse, delta, s, 0);
    CUDA_LAUNCH_CHECK();
    if (s.list) { // after the window pass (same stream): the selected keys' later queries
        mma_dkdv2_kernel<D, M><<<grid, THREADS, bytes>>>(dk, dv, dout, q, k, v, lse, delta, s, 1);
        CUDA_LAUNCH_CHECK();
    }
}

template <int D>
void bwd_d(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
           const float *lse, const float *delta, const flash_shape &s) {
    const size_t nq = (size_t)s.B * s.L * s.Hq * D, nk = (size_t)s.B * s.L * s.Hkv * D;
    const bf16_operand q_op(q, nq), k_op(k, nk), v_op(v, nk), do_op(dout, nq);
    const bf16 *qh = q_op, *kh = k_op, *vh = v_op, *doh = do_op;
    if constexpr (D == 64) {
        if (two_mtiles(D)) dq_dm<D, 2>(dq, doh, qh, kh, vh, lse, delta, s);
        else dq_dm<D, 1>(dq, doh, qh, kh, vh, lse, delta, s);
    } else {
        dq_dm<D, 1>(dq, doh, qh, kh, vh, lse, delta, s);
    }
    if (dkdv2()) {
        dkdv2_d<D, D == 64 ? 2 : 1>(dk, dv, doh, qh, kh, vh, lse, delta, s);
        return;
    }
    const size_t bytes = dkdv_smem_bytes<D>();
    allow((const void *)mma_dkdv_kernel<D>, bytes);
    const int tiles = (s.L + TILE - 1) / TILE;
    mma_dkdv_kernel<D><<<dim3(tiles, s.B * s.Hkv), THREADS, bytes>>>(dk, dv, doh, qh, kh, vh, lse, delta, s, 0);
    CUDA_LAUNCH_CHECK();
    if (s.list) { // after the window pass (same stream): the selected keys' later queries
        mma_dkdv_kernel<D><<<dim3(tiles, s.B * s.Hkv), THREADS, bytes>>>(dk, dv, doh, qh, kh, vh, lse, delta, s, 1);
        CUDA_LAUNCH_CHECK();
    }
}

} // namespace

bool bf16_supported(int d) { return d == 64 || d == 128; }

void bf16_fwd(float *o, float *lse, const float *q, const float *k, const float *v, const flash_shape &s) {
    if (s.d == 64) fwd_d<64>(o, lse, q, k, v, s);
    else fwd_d<128>(o, lse, q, k, v, s);
}

void bf16_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
              const float *lse, const float *delta, const flash_shape &s) {
    if (s.d == 64) bwd_d<64>(dq, dk, dv, dout, q, k, v, lse, delta, s);
    else bwd_d<128>(dq, dk, dv, dout, q, k, v, lse, delta, s);
}

} // namespace flash
