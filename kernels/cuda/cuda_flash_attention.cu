// CUDA: tiled ("flash") softmax attention, forward and backward, for head dims up to 128:
// causal, sliding window, GQA and LTE's window ∪ selected keys, with the semantics of
// cuda_attention.cu's row kernels (MODEL.md §4, §5.4) and no L x L matrix in memory.
//
// The keys a query t sees come in two disjoint segments:
//   A  the window: positions j with j <= t and t - j <= wl (every j <= t when wl < 0);
//   B  (LTE) the selected keys before the window: t - j > wl and selected[j]. Selection is per
//      key, so the selected positions of each (batch, kv head) are compacted once into a
//      sorted list; a query sees a prefix of it. Work follows the kept keys, not the causal
//      triangle.
// Tiles are 64 queries x 64 keys; 256 threads hold a 4 x 4 block of scores each (rows
// ty + 16 r, columns tx + 16 c), rows reduce across the 16 lanes of a half-warp. fp32 on the
// CUDA cores; tensor cores and bf16 are the next step. The backward pass is FlashAttention-2's:
// dq per query tile over its key tiles; dk, dv per key tile over the query tiles that see it
// (window keys written, then the selected keys' later queries added by a second launch):
// no atomics, the same bits every run.
#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_flash_attention.h"
#include "cuda_flash_common.cuh"
#include "cuda_flash_tiles.cuh"

namespace {

using namespace flash;

template <int DP>
__global__ void __launch_bounds__(THREADS) flash_fwd_kernel(float *o, float *lse, const float *q, const float *k,
                                                            const float *v, flash_shape s) {
    extern __shared__ float sh[];
    float *Qs = sh, *Ks = Qs + TILE * tile_row<DP>::stride, *Vs = Ks + TILE * tile_row<DP>::stride;
    float *Ps = Vs + TILE * tile_row<DP>::stride;
    __shared__ int qpos[TILE], kpos[TILE];
    const int t0 = blockIdx.x * TILE, hq = blockIdx.y % s.Hq, b = blockIdx.y / s.Hq, hk = hq / (s.Hq / s.Hkv);
    const int t1 = min(s.L - 1, t0 + TILE - 1), bk = b * s.Hkv + hk, ty = threadIdx.x / SIDE, tx = threadIdx.x % SIDE;
    if (threadIdx.x < TILE) qpos[threadIdx.x] = t0 + (int)threadIdx.x <= t1 ? t0 + (int)threadIdx.x : -1;
    __syncthreads();
    load_rows<DP>(Qs, q, qpos, b, s.L, s.Hq, hq, s.d);
    const key_tiles kt = keys_of_query_tile(s, bk, t0, t1);
    float m[PER], l[PER], acc[PER][DP / SIDE];
#pragma unroll
    for (int r = 0; r < PER; r++) {
        m[r] = -INFINITY, l[r] = 0;
#pragma unroll
        for (int c = 0; c < DP / SIDE; c++) acc[r][c] = 0;
    }
    for (int tile = 0; tile < kt.a_tiles + kt.b_tiles; tile++) {
        __syncthreads(); // the previous tile's Ks, Vs, Ps are no longer read
        if (threadIdx.x < TILE) kpos[threadIdx.x] = key_position(s, kt, bk, t1, tile, threadIdx.x);
        __syncthreads();
        load_rows<DP>(Ks, k, kpos, b, s.L, s.Hkv, hk, s.d);
        load_rows<DP>(Vs, v, kpos, b, s.L, s.Hkv, hk, s.d);
        __syncthreads();
        float sc[PER][PER];
        tile_dots<DP>(sc, Qs, Ks);
        const bool seg_a = tile < kt.a_tiles;
#pragma unroll
        for (int r = 0; r < PER; r++) {
            const int t = t0 + ty + SIDE * r;
            float mx = -INFINITY;
#pragma unroll
            for (int c = 0; c < PER; c++) {
                const int j = kpos[tx + SIDE * c];
                const bool vis = seg_a ? visible_a(t, j, s.wl) : visible_b(t, j, s.wl);
                sc[r][c] = vis ? sc[r][c] * s.scale : -INFINITY;
                mx = fmaxf(mx, sc[r][c]);
            }
            const float m_new = fmaxf(m[r], row_max(mx));
            const float corr = m_new == -INFINITY ? 1.0f : expf(m[r] - m_new);
            float psum = 0;
#pragma unroll
            for (int c = 0; c < PER; c++) {
                const float p = m_new == -INFINITY ? 0.0f : expf(sc[r][c] - m_new);
                Ps[(ty + SIDE * r) * (TILE + 1) + tx + SIDE * c] = p;
                psum += p;
            }
            l[r] = l[r] * corr + row_sum(psum);
            m[r] = m_new;
#pragma unroll
            for (int c = 0; c < DP / SIDE; c++) acc[r][c] *= corr;
        }
        __syncthreads();
        tile_pv<DP>(acc, Ps, Vs);
    }
#pragma unroll
    for (int r = 0; r < PER; r++) {
        const int t = t0 + ty + SIDE * r;
        if (t > t1) continue;
        const size_t row = ((size_t)b * s.L + t) * s.Hq + hq;
        const float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
#pragma unroll
        for (int c = 0; c < DP / SIDE; c++)
            if (tx + SIDE * c < s.d) o[row * s.d + tx + SIDE * c] = acc[r][c] * inv;
        if (tx == 0) lse[row] = m[r] + logf(l[r]);
    }
}

// dq of a query tile: scale * sum over its visible keys of P (dO.v - delta) k.
template <int DP>
__global__ void __launch_bounds__(THREADS) flash_dq_kernel(float *dq, const float *dout, const float *q, const float *k,
                                                           const float *v, const float *lse, const float *delta,
                                                           flash_shape s) {
    extern __shared__ float sh[];
    float *Qs = sh, *dOs = Qs + TILE * tile_row<DP>::stride, *Ks = dOs + TILE * tile_row<DP>::stride;
    float *Vs = Ks + TILE * tile_row<DP>::stride, *Ps = Vs + TILE * tile_row<DP>::stride;
    __shared__ int qpos[TILE], kpos[TILE];
    const int t0 = blockIdx.x * TILE, hq = blockIdx.y % s.Hq, b = blockIdx.y / s.Hq, hk = hq / (s.Hq / s.Hkv);
    const int t1 = min(s.L - 1, t0 + TILE - 1), bk = b * s.Hkv + hk, ty = threadIdx.x / SIDE, tx = threadIdx.x % SIDE;
    if (threadIdx.x < TILE) qpos[threadIdx.x] = t0 + (int)threadIdx.x <= t1 ? t0 + (int)threadIdx.x : -1;
    __syncthreads();
    load_rows<DP>(Qs, q, qpos, b, s.L, s.Hq, hq, s.d);
    load_rows<DP>(dOs, dout, qpos, b, s.L, s.Hq, hq, s.d);
    float row_lse[PER], row_delta[PER], acc[PER][DP / SIDE];
#pragma unroll
    for (int r = 0; r < PER; r++) {
        const int t = t0 + ty + SIDE * r;
        const size_t row = ((size_t)b * s.L + min(t, t1)) * s.Hq + hq;
        row_lse[r] = lse[row], row_delta[r] = delta[row];
#pragma unroll
        for (int c = 0; c < DP / SIDE; c++) acc[r][c] = 0;
    }
    const key_tiles kt = keys_of_query_tile(s, bk, t0, t1);
    for (int tile = 0; tile < kt.a_tiles + kt.b_tiles; tile++) {
        __syncthreads();
        if (threadIdx.x < TILE) kpos[threadIdx.x] = key_position(s, kt, bk, t1, tile, threadIdx.x);
        __syncthreads();
        load_rows<DP>(Ks, k, kpos, b, s.L, s.Hkv, hk, s.d);
        load_rows<DP>(Vs, v, kpos, b, s.L, s.Hkv, hk, s.d);
        __syncthreads();
        float sc[PER][PER], dp[PER][PER];
        tile_dots<DP>(sc, Qs, Ks);
        tile_dots<DP>(dp, dOs, Vs);
        const bool seg_a = tile < kt.a_tiles;
#pragma unroll
        for (int r = 0; r < PER; r++) {
            const int t = t0 + ty + SIDE * r;
#pragma unroll
            for (int c = 0; c < PER; c++) {
                const int j = kpos[tx + SIDE * c];
                const bool vis = t <= t1 && (seg_a ? visible_a(t, j, s.wl) : visible_b(t, j, s.wl));
                const float p = vis ? expf(sc[r][c] * s.scale - row_lse[r]) : 0.0f;
                Ps[(ty + SIDE * r) * (TILE + 1) + tx + SIDE * c] = p * (dp[r][c] - row_delta[r]);
            }
        }
        __syncthreads();
        tile_pv<DP>(acc, Ps, Ks);
    }
#pragma unroll
    for (int r = 0; r < PER; r++) {
        const int t = t0 + ty + SIDE * r;
        if (t > t1) continue;
        const size_t row = ((size_t)b * s.L + t) * s.Hq + hq;
#pragma unroll
        for (int c = 0; c < DP / SIDE; c++)
            if (tx + SIDE * c < s.d) dq[row * s.d + tx + SIDE * c] = s.scale * acc[r][c];
    }
}

// dk, dv of a key tile of one (batch, kv head): over the group's query heads and the query
// tiles that see it. selected_pass = 0: window keys (positions blockIdx.x * 64 + kk),
// written; 1: the list's entries, their later queries' share added.
template <int DP>
__global__ void __launch_bounds__(THREADS) flash_dkdv_kernel(float *dk, float *dv, const float *dout, const float *q,
                                                             const float *k, const float *v, const float *lse,
                                                             const float *delta, flash_shape s, int selected_pass) {
    extern __shared__ float sh[];
    float *Ks = sh, *Vs = Ks + TILE * tile_row<DP>::stride, *Qs = Vs + TILE * tile_row<DP>::stride;
    float *dOs = Qs + TILE * tile_row<DP>::stride, *Ps = dOs + TILE * tile_row<DP>::stride;
    __shared__ int kpos[TILE], qpos[TILE];
    __shared__ float qlse[TILE], qdelta[TILE];
    const int hk = blockIdx.y % s.Hkv, b = blockIdx.y / s.Hkv, bk = b * s.Hkv + hk, G = s.Hq / s.Hkv;
    const int ty = threadIdx.x / SIDE, tx = threadIdx.x % SIDE;
    int first_query;
    const int n_keys = dkdv_block_keys(s, bk, selected_pass, kpos, &first_query);
    if (n_keys == 0) return; // the whole block leaves together
    __syncthreads();
    const int last_query = dkdv_last_query(s, selected_pass, kpos[n_keys - 1]);
    load_rows<DP>(Ks, k, kpos, b, s.L, s.Hkv, hk, s.d);
    load_rows<DP>(Vs, v, kpos, b, s.L, s.Hkv, hk, s.d);
    float adk[PER][DP / SIDE], adv[PER][DP / SIDE];
#pragma unroll
    for (int r = 0; r < PER; r++)
#pragma unroll
        for (int c = 0; c < DP / SIDE; c++) adk[r][c] = adv[r][c] = 0;
    for (int g = 0; g < G; g++) {
        const int hq = hk * G + g;
        for (int t0 = first_query; t0 <= last_query; t0 += TILE) {
            __syncthreads();
            if (threadIdx.x < TILE) {
                const int t = t0 + threadIdx.x;
                qpos[threadIdx.x] = t <= last_query ? t : -1;
                const size_t row = ((size_t)b * s.L + min(t, last_query)) * s.Hq + hq;
                qlse[threadIdx.x] = lse[row], qdelta[threadIdx.x] = delta[row];
            }
            __syncthreads();
            load_rows<DP>(Qs, q, qpos, b, s.L, s.Hq, hq, s.d);
            load_rows<DP>(dOs, dout, qpos, b, s.L, s.Hq, hq, s.d);
            __syncthreads();
            // transposed tile: rows are keys (ty + 16 r), columns queries (tx + 16 c)
            float sc[PER][PER], dp[PER][PER], p[PER][PER];
            tile_dots<DP>(sc, Ks, Qs);
            tile_dots<DP>(dp, Vs, dOs);
#pragma unroll
            for (int r = 0; r < PER; r++) {
                const int j = kpos[ty + SIDE * r];
#pragma unroll
                for (int c = 0; c < PER; c++) {
                    const int t = qpos[tx + SIDE * c];
                    const bool vis = t >= 0 && (selected_pass ? visible_b(t, j, s.wl) : visible_a(t, j, s.wl));
                    p[r][c] = vis ? expf(sc[r][c] * s.scale - qlse[tx + SIDE * c]) : 0.0f;
                    Ps[(ty + SIDE * r) * (TILE + 1) + tx + SIDE * c] = p[r][c];
                }
            }
            __syncthreads();
            tile_pv<DP>(adv, Ps, dOs); // dv += P^T dO
            __syncthreads();
#pragma unroll
            for (int r = 0; r < PER; r++)
#pragma unroll
                for (int c = 0; c < PER; c++)
                    Ps[(ty + SIDE * r) * (TILE + 1) + tx + SIDE * c] = p[r][c] * (dp[r][c] - qdelta[tx + SIDE * c]);
            __syncthreads();
            tile_pv<DP>(adk, Ps, Qs); // dk += dS^T q (scaled below)
        }
    }
#pragma unroll
    for (int r = 0; r < PER; r++) {
        const int j = kpos[ty + SIDE * r];
        if (j < 0) continue;
        const size_t row = (((size_t)b * s.L + j) * s.Hkv + hk) * s.d;
#pragma unroll
        for (int c = 0; c < DP / SIDE; c++) {
            const int col = tx + SIDE * c;
            if (col >= s.d) continue;
            if (selected_pass) dk[row + col] += s.scale * adk[r][c], dv[row + col] += adv[r][c];
            else dk[row + col] = s.scale * adk[r][c], dv[row + col] = adv[r][c];
        }
    }
}

// The selected positions of each (batch, kv head), in order: one block per (b, kv head);
// a warp ballot and a scan of the 32 warps' counts per 1024 positions.
__global__ void compact_selected_kernel(int *list, int *count, const uint8_t *selected, int L, int Hkv) {
    __shared__ int warp_count[32], warp_offset[32], total;
    const int bk = blockIdx.x, b = bk / Hkv, hk = bk % Hkv, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int n = 0;
    for (int base = 0; base < L; base += 1024) {
        const int j = base + threadIdx.x;
        const bool f = j < L && selected[((size_t)b * L + j) * Hkv + hk];
        const unsigned ballot = __ballot_sync(0xffffffffu, f);
        if (lane == 0) warp_count[warp] = __popc(ballot);
        __syncthreads();
        if (threadIdx.x == 0) {
            int run = 0;
            for (int w = 0; w < 32; w++) warp_offset[w] = run, run += warp_count[w];
            total = run;
        }
        __syncthreads();
        if (f) list[(size_t)bk * L + n + warp_offset[warp] + __popc(ballot & ((1u << lane) - 1))] = j;
        n += total;
        __syncthreads();
    }
    if (threadIdx.x == 0) count[bk] = n;
}

template <int DP> size_t shared_bytes(int tiles) {
    return sizeof(float) * ((size_t)tiles * TILE * tile_row<DP>::stride + (size_t)TILE * (TILE + 1));
}

template <int DP> void set_shared(const void *kernel, size_t bytes) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// The compacted lists (when LTE selects), in stream-ordered scratch freed by the caller.
flash_shape make_shape(int B, int L, int Hq, int Hkv, int d, int wl, float scale, const uint8_t *selected,
                       int **scratch) {
    flash_shape s{B, L, Hq, Hkv, d, wl, scale, NULL, NULL};
    *scratch = NULL;
    if (selected && wl >= 0) {
        CUDA_CHECK(cudaMallocAsync((void **)scratch, sizeof(int) * (size_t)B * Hkv * (L + 1), 0));
        int *list = *scratch, *count = list + (size_t)B * Hkv * L;
        compact_selected_kernel<<<B * Hkv, 1024>>>(list, count, selected, L, Hkv);
        CUDA_LAUNCH_CHECK();
        s.list = list, s.count = count;
    }
    return s;
}

template <int DP> void fwd(float *o, float *lse, const float *q, const float *k, const float *v, const flash_shape &s) {
    const size_t bytes = shared_bytes<DP>(3);
    set_shared<DP>((const void *)flash_fwd_kernel<DP>, bytes);
    flash_fwd_kernel<DP><<<dim3((s.L + TILE - 1) / TILE, s.B * s.Hq), THREADS, bytes>>>(o, lse, q, k, v, s);
    CUDA_LAUNCH_CHECK();
}

template <int DP>
void bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
         const float *lse, const float *delta, const flash_shape &s) {
    const size_t bytes = shared_bytes<DP>(4);
    set_shared<DP>((const void *)flash_dq_kernel<DP>, bytes);
    set_shared<DP>((const void *)flash_dkdv_kernel<DP>, bytes);
    const int tiles = (s.L + TILE - 1) / TILE;
    flash_dq_kernel<DP><<<dim3(tiles, s.B * s.Hq), THREADS, bytes>>>(dq, dout, q, k, v, lse, delta, s);
    CUDA_LAUNCH_CHECK();
    flash_dkdv_kernel<DP><<<dim3(tiles, s.B * s.Hkv), THREADS, bytes>>>(dk, dv, dout, q, k, v, lse, delta, s, 0);
    CUDA_LAUNCH_CHECK();
    if (s.list) { // after the window pass (same stream): the selected keys' later queries
        flash_dkdv_kernel<DP><<<dim3(tiles, s.B * s.Hkv), THREADS, bytes>>>(dk, dv, dout, q, k, v, lse, delta, s, 1);
        CUDA_LAUNCH_CHECK();
    }
}

} // namespace

extern "C" int flash_attention_supported(int d) { return d >= 1 && d <= 128; }

extern "C" void flash_attention_fwd(float *o, float *lse, const float *q, const float *k, const float *v,
                                    const uint8_t *selected, int B, int L, int Hq, int Hkv, int d, int wl,
                                    float scale) {
    if (B * L * Hq == 0) return;
    int *scratch;
    const flash_shape s = make_shape(B, L, Hq, Hkv, d, wl, scale, selected, &scratch);
    if (cuda_matmul_bf16() && bf16_supported(d)) bf16_fwd(o, lse, q, k, v, s);
    else if (d <= 32) fwd<32>(o, lse, q, k, v, s);
    else if (d <= 64) fwd<64>(o, lse, q, k, v, s);
    else fwd<128>(o, lse, q, k, v, s);
    if (scratch) CUDA_CHECK(cudaFreeAsync(scratch, 0));
}

extern "C" void flash_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                    const float *k, const float *v, const float *lse, const float *delta,
                                    const uint8_t *selected, int B, int L, int Hq, int Hkv, int d, int wl,
                                    float scale) {
    if (B * L * Hq == 0) return;
    int *scratch;
    const flash_shape s = make_shape(B, L, Hq, Hkv, d, wl, scale, selected, &scratch);
    if (cuda_matmul_bf16() && bf16_supported(d)) bf16_bwd(dq, dk, dv, dout, q, k, v, lse, delta, s);
    else if (d <= 32) bwd<32>(dq, dk, dv, dout, q, k, v, lse, delta, s);
    else if (d <= 64) bwd<64>(dq, dk, dv, dout, q, k, v, lse, delta, s);
    else bwd<128>(dq, dk, dv, dout, q, k, v, lse, delta, s);
    if (scratch) CUDA_CHECK(cudaFreeAsync(scratch, 0));
}
