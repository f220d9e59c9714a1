// CUDA: tiled attention on the tensor cores, for train.precision = bf16 and head dims 64 and
// 128 — the same tiles, segments and masks as the fp32 kernels (cuda_flash_attention.cu), with
// the three products of a tile (Q K^T, dO V^T, then P V or dS K, ...) as bf16 WMMA products
// with fp32 accumulation. Softmax statistics, masks and dS stay fp32 in shared memory.
//
// Per 64 x 64 tile: 8 warps, each owning two 16 x 16 blocks of the scores; the output tile
// (64 x D) is accumulated in fp32 in shared memory in the forward pass (its rows are rescaled
// by the online softmax, which WMMA's opaque fragment layout cannot do in registers), and in
// fragments in the backward passes (dq, dk, dv need no rescaling). No atomics.
#include <cuda_bf16.h>
#include <mma.h>

#include "cuda_check.h"
#include "cuda_flash_common.cuh"

using namespace nvcuda;

namespace flash {
namespace {

constexpr int WARPS = 8, THREADS = 32 * WARPS;
typedef __nv_bfloat16 bf16;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> frag_bt; // b(k, n) = M[n][k]
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> frag_b;  // b(k, n) = M[k][n]
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_c;

// Row strides (elements) of the shared tiles: padded against bank conflicts, multiples of 8
// (bf16) and 4 (fp32) as WMMA needs.
template <int D> struct ld {
    static constexpr int h = D + 8;     // bf16 [64][D] tiles: Q, K, V, dO
    static constexpr int s = TILE + 4;  // fp32 [64][64]: scores, dP
    static constexpr int p = TILE + 8;  // bf16 [64][64]: P, dS
    static constexpr int o = D + 4;     // fp32 [64][D]: the forward's output accumulator, staging
};

// rows (b, pos[r], head) of a bf16 [B, L, H, D] tensor into sh[64][D]; pos < 0: zeros. 16-byte
// copies (8 values): D is a multiple of 8 and the rows of both sides are 16-byte aligned.
template <int D>
__device__ void load_rows_bf16(bf16 *sh, const bf16 *x, const int *pos, int b, int L, int H, int head) {
    constexpr int VEC = 8, PER_ROW = D / VEC;
    for (int e = threadIdx.x; e < TILE * PER_ROW; e += THREADS) {
        const int r = e / PER_ROW, c = (e % PER_ROW) * VEC, p = pos[r];
        uint4 v = make_uint4(0, 0, 0, 0);
        if (p >= 0) v = *(const uint4 *)(x + (((size_t)b * L + p) * H + head) * D + c);
        *(uint4 *)(sh + r * ld<D>::h + c) = v;
    }
}

// dst[i] = bf16(src[i]): the operands are rounded once per op, not once per tile load.
__global__ void to_bf16_kernel(bf16 *dst, const float *src, size_t count) {
    const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < count) dst[i] = __float2bfloat16(src[i]);
}
bf16 *bf16_copy(const float *src, size_t count) { // stream-ordered scratch, freed by the caller
    bf16 *dst = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&dst, count * sizeof(bf16), 0));
    to_bf16_kernel<<<blocks_for(count, 256), 256>>>(dst, src, count);
    CUDA_LAUNCH_CHECK();
    return dst;
}

// C[64][64] (fp32) = A[64][D] B[64][D]^T; warp w computes blocks 2w and 2w + 1 of the 4 x 4.
template <int D> __device__ void products_abt(float *C, const bf16 *A, const bf16 *B) {
    const int warp = threadIdx.x / 32;
#pragma unroll
    for (int f = 0; f < 2; f++) {
        const int blk = 2 * warp + f, rb = blk / 4, cb = blk % 4;
        frag_c acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int k = 0; k < D; k += 16) {
            frag_a a;
            frag_bt bt;
            wmma::load_matrix_sync(a, A + rb * 16 * ld<D>::h + k, ld<D>::h);
            wmma::load_matrix_sync(bt, B + cb * 16 * ld<D>::h + k, ld<D>::h);
            wmma::mma_sync(acc, a, bt, acc);
        }
        wmma::store_matrix_sync(C + rb * 16 * ld<D>::s + cb * 16, acc, ld<D>::s, wmma::mem_row_major);
    }
}

// The output blocks of a 64 x D product that warp w owns: D / 32 of the 4 x D / 16.
template <int D> __host__ __device__ constexpr int out_blocks() { return D / 32; }
template <int D> __device__ void out_block(int f, int &rb, int &cb) {
    const int blk = (threadIdx.x / 32) * out_blocks<D>() + f;
    rb = blk / (D / 16), cb = blk % (D / 16);
}

// acc[f] += P[64][64] X[64][D] for this warp's output blocks.
template <int D> __device__ void products_px(frag_c (&acc)[out_blocks<D>()], const bf16 *P, const bf16 *X) {
#pragma unroll
    for (int f = 0; f < out_blocks<D>(); f++) {
        int rb, cb;
        out_block<D>(f, rb, cb);
#pragma unroll
        for (int k = 0; k < TILE; k += 16) {
            frag_a a;
            frag_b bm;
            wmma::load_matrix_sync(a, P + rb * 16 * ld<D>::p + k, ld<D>::p);
            wmma::load_matrix_sync(bm, X + k * ld<D>::h + cb * 16, ld<D>::h);
            wmma::mma_sync(acc[f], a, bm, acc[f]);
        }
    }
}

// This warp's output blocks into stage[64][D] (fp32).
template <int D> __device__ void stage_out(float *stage, frag_c (&acc)[out_blocks<D>()]) {
#pragma unroll
    for (int f = 0; f < out_blocks<D>(); f++) {
        int rb, cb;
        out_block<D>(f, rb, cb);
        wmma::store_matrix_sync(stage + rb * 16 * ld<D>::o + cb * 16, acc[f], ld<D>::o, wmma::mem_row_major);
    }
}

// Four threads per score row (row = tid / 4), each 16 columns (c = 4 j + tid % 4).
__device__ inline int my_row() { return threadIdx.x / 4; }
__device__ inline int my_col(int j) { return 4 * j + threadIdx.x % 4; }
__device__ inline float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ inline float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <int D> struct fwd_smem {
    static constexpr size_t bytes = sizeof(bf16) * 3 * TILE * ld<D>::h + sizeof(float) * TILE * ld<D>::s +
                                    sizeof(bf16) * TILE * ld<D>::p + sizeof(float) * TILE * ld<D>::o;
};

template <int D>
__global__ void __launch_bounds__(THREADS) bf16_fwd_kernel(float *o, float *lse, const bf16 *q, const bf16 *k,
                                                           const bf16 *v, flash_shape s) {
    extern __shared__ __align__(32) unsigned char smem[];
    bf16 *Qs = (bf16 *)smem, *Ks = Qs + TILE * ld<D>::h, *Vs = Ks + TILE * ld<D>::h;
    float *Ss = (float *)(Vs + TILE * ld<D>::h);
    bf16 *Ps = (bf16 *)(Ss + TILE * ld<D>::s);
    float *Os = (float *)(Ps + TILE * ld<D>::p);
    __shared__ int qpos[TILE], kpos[TILE];
    const int t0 = blockIdx.x * TILE, hq = blockIdx.y % s.Hq, b = blockIdx.y / s.Hq, hk = hq / (s.Hq / s.Hkv);
    const int t1 = min(s.L - 1, t0 + TILE - 1), bk = b * s.Hkv + hk;
    if (threadIdx.x < TILE) qpos[threadIdx.x] = t0 + (int)threadIdx.x <= t1 ? t0 + (int)threadIdx.x : -1;
    for (int e = threadIdx.x; e < TILE * ld<D>::o; e += THREADS) Os[e] = 0.0f;
    __syncthreads();
    load_rows_bf16<D>(Qs, q, qpos, b, s.L, s.Hq, hq);
    const key_tiles kt = keys_of_query_tile(s, bk, t0, t1);
    const int row = my_row(), t = t0 + row;
    float m = -INFINITY, l = 0;
    for (int tile = 0; tile < kt.a_tiles + kt.b_tiles; tile++) {
        __syncthreads(); // the previous tile's K, V, P are no longer read
        if (threadIdx.x < TILE) kpos[threadIdx.x] = key_position(s, kt, bk, t1, tile, threadIdx.x);
        __syncthreads();
        load_rows_bf16<D>(Ks, k, kpos, b, s.L, s.Hkv, hk);
        load_rows_bf16<D>(Vs, v, kpos, b, s.L, s.Hkv, hk);
        __syncthreads();
        products_abt<D>(Ss, Qs, Ks);
        __syncthreads();
        const bool seg_a = tile < kt.a_tiles;
        float sc[TILE / 4], mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < TILE / 4; j++) {
            const int key = kpos[my_col(j)];
            const bool vis = seg_a ? visible_a(t, key, s.wl) : visible_b(t, key, s.wl);
            sc[j] = vis ? Ss[row * ld<D>::s + my_col(j)] * s.scale : -INFINITY;
            mx = fmaxf(mx, sc[j]);
        }
        const float m_new = fmaxf(m, quad_max(mx));
        const float corr = m_new == -INFINITY ? 1.0f : expf(m - m_new);
        float psum = 0;
#pragma unroll
        for (int j = 0; j < TILE / 4; j++) {
            const float p = m_new == -INFINITY ? 0.0f : expf(sc[j] - m_new);
            Ps[row * ld<D>::p + my_col(j)] = __float2bfloat16(p);
            psum += p;
        }
        l = l * corr + quad_sum(psum);
        m = m_new;
        for (int c = threadIdx.x % 4; c < D; c += 4) Os[row * ld<D>::o + c] *= corr;
        __syncthreads();
        // O += P V, accumulated in the shared fp32 tile
#pragma unroll
        for (int f = 0; f < out_blocks<D>(); f++) {
            int rb, cb;
            out_block<D>(f, rb, cb);
            frag_c acc;
            wmma::load_matrix_sync(acc, Os + rb * 16 * ld<D>::o + cb * 16, ld<D>::o, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < TILE; kk += 16) {
                frag_a a;
                frag_b bm;
                wmma::load_matrix_sync(a, Ps + rb * 16 * ld<D>::p + kk, ld<D>::p);
                wmma::load_matrix_sync(bm, Vs + kk * ld<D>::h + cb * 16, ld<D>::h);
                wmma::mma_sync(acc, a, bm, acc);
            }
            wmma::store_matrix_sync(Os + rb * 16 * ld<D>::o + cb * 16, acc, ld<D>::o, wmma::mem_row_major);
        }
    }
    __syncthreads();
    if (t <= t1) {
        const size_t out_row = ((size_t)b * s.L + t) * s.Hq + hq;
        const float inv = l > 0 ? 1.0f / l : 0.0f;
        for (int c = threadIdx.x % 4; c < D; c += 4) o[out_row * D + c] = Os[row * ld<D>::o + c] * inv;
        if (threadIdx.x % 4 == 0) lse[out_row] = m + logf(l);
    }
}

template <int D> struct bwd_smem {
    static constexpr size_t bytes =
        sizeof(bf16) * 4 * TILE * ld<D>::h + sizeof(float) * 2 * TILE * ld<D>::s + sizeof(bf16) * 2 * TILE * ld<D>::p;
    static_assert(2 * TILE * ld<D>::s >= TILE * ld<D>::o, "the output staging reuses the score tiles");
};

// dq of a query tile: scale * sum over visible keys of P (dP - delta) k, dP = dO v.
template <int D>
__global__ void __launch_bounds__(THREADS) bf16_dq_kernel(float *dq, const bf16 *dout, const bf16 *q, const bf16 *k,
                                                          const bf16 *v, const float *lse, const float *delta,
                                                          flash_shape s) {
    extern __shared__ __align__(32) unsigned char smem[];
    bf16 *Qs = (bf16 *)smem, *dOs = Qs + TILE * ld<D>::h, *Ks = dOs + TILE * ld<D>::h, *Vs = Ks + TILE * ld<D>::h;
    float *Ss = (float *)(Vs + TILE * ld<D>::h), *dPs = Ss + TILE * ld<D>::s;
    bf16 *dSs = (bf16 *)(dPs + TILE * ld<D>::s);
    __shared__ int qpos[TILE], kpos[TILE];
    const int t0 = blockIdx.x * TILE, hq = blockIdx.y % s.Hq, b = blockIdx.y / s.Hq, hk = hq / (s.Hq / s.Hkv);
    const int t1 = min(s.L - 1, t0 + TILE - 1), bk = b * s.Hkv + hk;
    if (threadIdx.x < TILE) qpos[threadIdx.x] = t0 + (int)threadIdx.x <= t1 ? t0 + (int)threadIdx.x : -1;
    __syncthreads();
    load_rows_bf16<D>(Qs, q, qpos, b, s.L, s.Hq, hq);
    load_rows_bf16<D>(dOs, dout, qpos, b, s.L, s.Hq, hq);
    const int row = my_row(), t = t0 + row;
    const size_t my_row_index = ((size_t)b * s.L + min(t, t1)) * s.Hq + hq;
    const float row_lse = lse[my_row_index], row_delta = delta[my_row_index];
    frag_c acc[out_blocks<D>()];
#pragma unroll
    for (int f = 0; f < out_blocks<D>(); f++) wmma::fill_fragment(acc[f], 0.0f);
    const key_tiles kt = keys_of_query_tile(s, bk, t0, t1);
    for (int tile = 0; tile < kt.a_tiles + kt.b_tiles; tile++) {
        __syncthreads();
        if (threadIdx.x < TILE) kpos[threadIdx.x] = key_position(s, kt, bk, t1, tile, threadIdx.x);
        __syncthreads();
        load_rows_bf16<D>(Ks, k, kpos, b, s.L, s.Hkv, hk);
        load_rows_bf16<D>(Vs, v, kpos, b, s.L, s.Hkv, hk);
        __syncthreads();
        products_abt<D>(Ss, Qs, Ks);
        products_abt<D>(dPs, dOs, Vs);
        __syncthreads();
        const bool seg_a = tile < kt.a_tiles;
#pragma unroll
        for (int j = 0; j < TILE / 4; j++) {
            const int c = my_col(j), key = kpos[c];
            const bool vis = t <= t1 && (seg_a ? visible_a(t, key, s.wl) : visible_b(t, key, s.wl));
            const float p = vis ? expf(Ss[row * ld<D>::s + c] * s.scale - row_lse) : 0.0f;
            dSs[row * ld<D>::p + c] = __float2bfloat16(p * (dPs[row * ld<D>::s + c] - row_delta));
        }
        __syncthreads();
        products_px<D>(acc, dSs, Ks);
    }
    __syncthreads();
    float *stage = Ss; // the score tiles are free now
    stage_out<D>(stage, acc);
    __syncthreads();
    if (t <= t1)
        for (int c = threadIdx.x % 4; c < D; c += 4)
            dq[(((size_t)b * s.L + t) * s.Hq + hq) * D + c] = s.scale * stage[row * ld<D>::o + c];
}

// dk, dv of a key tile over the group's query heads and the query tiles that see it;
// selected_pass as in the fp32 kernel (0: window keys written, 1: selected keys added).
template <int D>
__global__ void __launch_bounds__(THREADS) bf16_dkdv_kernel(float *dk, float *dv, const bf16 *dout, const bf16 *q,
                                                            const bf16 *k, const bf16 *v, const float *lse,
                                                            const float *delta, flash_shape s, int selected_pass) {
    extern __shared__ __align__(32) unsigned char smem[];
    bf16 *Ks = (bf16 *)smem, *Vs = Ks + TILE * ld<D>::h, *Qs = Vs + TILE * ld<D>::h, *dOs = Qs + TILE * ld<D>::h;
    float *Ss = (float *)(dOs + TILE * ld<D>::h), *dPs = Ss + TILE * ld<D>::s;
    bf16 *Ps = (bf16 *)(dPs + TILE * ld<D>::s), *dSs = Ps + TILE * ld<D>::p;
    __shared__ int kpos[TILE], qpos[TILE];
    __shared__ float qlse[TILE], qdelta[TILE];
    const int hk = blockIdx.y % s.Hkv, b = blockIdx.y / s.Hkv, bk = b * s.Hkv + hk, G = s.Hq / s.Hkv;
    int first_query, n_keys;
    if (!selected_pass) {
        const int j0 = blockIdx.x * TILE;
        n_keys = min(TILE, s.L - j0);
        if (threadIdx.x < TILE) kpos[threadIdx.x] = (int)threadIdx.x < n_keys ? j0 + (int)threadIdx.x : -1;
        first_query = j0;
    } else {
        const int n0 = blockIdx.x * TILE, count = s.count[bk];
        if (n0 >= count) return; // the whole block leaves together
        n_keys = min(TILE, count - n0);
        if (threadIdx.x < TILE)
            kpos[threadIdx.x] = (int)threadIdx.x < n_keys ? s.list[(size_t)bk * s.L + n0 + threadIdx.x] : -1;
        first_query = s.list[(size_t)bk * s.L + n0] + s.wl + 1;
    }
    __syncthreads();
    const int last_key = kpos[n_keys - 1];
    const int last_query = (selected_pass || s.wl < 0) ? s.L - 1 : min(s.L - 1, last_key + s.wl);
    load_rows_bf16<D>(Ks, k, kpos, b, s.L, s.Hkv, hk);
    load_rows_bf16<D>(Vs, v, kpos, b, s.L, s.Hkv, hk);
    frag_c adk[out_blocks<D>()], adv[out_blocks<D>()];
#pragma unroll
    for (int f = 0; f < out_blocks<D>(); f++) wmma::fill_fragment(adk[f], 0.0f), wmma::fill_fragment(adv[f], 0.0f);
    const int row = my_row(); // a key of the tile
    for (int g = 0; g < G; g++) {
        const int hq = hk * G + g;
        for (int t0 = first_query; t0 <= last_query; t0 += TILE) {
            __syncthreads();
            if (threadIdx.x < TILE) {
                const int t = t0 + threadIdx.x;
                qpos[threadIdx.x] = t <= last_query ? t : -1;
                const size_t r = ((size_t)b * s.L + min(t, last_query)) * s.Hq + hq;
                qlse[threadIdx.x] = lse[r], qdelta[threadIdx.x] = delta[r];
            }
            __syncthreads();
            load_rows_bf16<D>(Qs, q, qpos, b, s.L, s.Hq, hq);
            load_rows_bf16<D>(dOs, dout, qpos, b, s.L, s.Hq, hq);
            __syncthreads();
            products_abt<D>(Ss, Ks, Qs);   // S^T: rows keys, columns queries
            products_abt<D>(dPs, Vs, dOs); // dP^T
            __syncthreads();
            const int key = kpos[row];
#pragma unroll
            for (int j = 0; j < TILE / 4; j++) {
                const int c = my_col(j), tq = qpos[c];
                const bool vis = tq >= 0 && (selected_pass ? visible_b(tq, key, s.wl) : visible_a(tq, key, s.wl));
                const float p = vis ? expf(Ss[row * ld<D>::s + c] * s.scale - qlse[c]) : 0.0f;
                Ps[row * ld<D>::p + c] = __float2bfloat16(p);
                dSs[row * ld<D>::p + c] = __float2bfloat16(p * (dPs[row * ld<D>::s + c] - qdelta[c]));
            }
            __syncthreads();
            products_px<D>(adv, Ps, dOs); // dv += P^T dO
            products_px<D>(adk, dSs, Qs); // dk += dS^T q (scaled below)
        }
    }
    __syncthreads();
    float *stage = Ss;
    const int j = kpos[row];
    const size_t out = (((size_t)b * s.L + (j < 0 ? 0 : j)) * s.Hkv + hk) * D;
    stage_out<D>(stage, adv);
    __syncthreads();
    if (j >= 0)
        for (int c = threadIdx.x % 4; c < D; c += 4) {
            const float x = stage[row * ld<D>::o + c];
            if (selected_pass) dv[out + c] += x;
            else dv[out + c] = x;
        }
    __syncthreads();
    stage_out<D>(stage, adk);
    __syncthreads();
    if (j >= 0)
        for (int c = threadIdx.x % 4; c < D; c += 4) {
            const float x = s.scale * stage[row * ld<D>::o + c];
            if (selected_pass) dk[out + c] += x;
            else dk[out + c] = x;
        }
}

void allow(const void *kernel, size_t bytes) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

template <int D> void fwd_d(float *o, float *lse, const float *q, const float *k, const float *v, const flash_shape &s) {
    const size_t nq = (size_t)s.B * s.L * s.Hq * D, nk = (size_t)s.B * s.L * s.Hkv * D;
    bf16 *qh = bf16_copy(q, nq), *kh = bf16_copy(k, nk), *vh = bf16_copy(v, nk);
    allow((const void *)bf16_fwd_kernel<D>, fwd_smem<D>::bytes);
    bf16_fwd_kernel<D><<<dim3((s.L + TILE - 1) / TILE, s.B * s.Hq), THREADS, fwd_smem<D>::bytes>>>(o, lse, qh, kh, vh, s);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(qh, 0));
    CUDA_CHECK(cudaFreeAsync(kh, 0));
    CUDA_CHECK(cudaFreeAsync(vh, 0));
}

template <int D>
void bwd_d(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
           const float *lse, const float *delta, const flash_shape &s) {
    const size_t nq = (size_t)s.B * s.L * s.Hq * D, nk = (size_t)s.B * s.L * s.Hkv * D;
    bf16 *qh = bf16_copy(q, nq), *kh = bf16_copy(k, nk), *vh = bf16_copy(v, nk), *doh = bf16_copy(dout, nq);
    const size_t bytes = bwd_smem<D>::bytes;
    allow((const void *)bf16_dq_kernel<D>, bytes);
    allow((const void *)bf16_dkdv_kernel<D>, bytes);
    const int tiles = (s.L + TILE - 1) / TILE;
    bf16_dq_kernel<D><<<dim3(tiles, s.B * s.Hq), THREADS, bytes>>>(dq, doh, qh, kh, vh, lse, delta, s);
    CUDA_LAUNCH_CHECK();
    bf16_dkdv_kernel<D><<<dim3(tiles, s.B * s.Hkv), THREADS, bytes>>>(dk, dv, doh, qh, kh, vh, lse, delta, s, 0);
    CUDA_LAUNCH_CHECK();
    if (s.list) {
        bf16_dkdv_kernel<D><<<dim3(tiles, s.B * s.Hkv), THREADS, bytes>>>(dk, dv, doh, qh, kh, vh, lse, delta, s, 1);
        CUDA_LAUNCH_CHECK();
    }
    for (bf16 *p : {qh, kh, vh, doh}) CUDA_CHECK(cudaFreeAsync(p, 0));
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
