// CUDA: the LTE router's backward at the papers' shape (cuda_lte_router_fixed.cuh), in bf16 mode:
// the fused kernels' tensor-core backward (cuda_lte_router_fused.cu, bwd_kernel<true>) with every
// dimension a constant and one head's weights (staged for the input gradients) kept in shared
// memory by a block for all its tiles. The input-gradient products take the same tf32 operands
// in the same order of sums, so dk and dv are the fused form's bits; the weight gradients take
// the same bf16 operands over other tiles (another order of sums).
//
// A block does a segment of consecutive 64-token tiles of one (row, head). A tile, from the
// projection down: dz and da_3 (the gradient at conv 2's pre-activation) for the tile's tokens
// and the backward halo (76 rows: tokens t0 - 6 .. t0 + 69), then per conv l = 2, 1, 0 the input
// gradient as a product over 80, 80, 64 rows (times the dropout mask and silu'(a_l), it is
// da_l; for conv 0, times the mask, it is added onto dk, dv for the tile's own tokens), and the
// weight gradient over the tile's own rows (da_{l+1} (x) conv l's dropped-out input, both as
// bf16 copies, ldmatrix .trans and m16n8k16 products). Parameter gradients go into the block's
// slot of a stream-ordered scratch (the first tile writes, the next ones add; no atomics);
// reduce_kernel adds the slots of a head in a fixed order into dparams. Each conv input's dropout
// masks are drawn once a tile (draw_masks) for both of their uses, and each thread issues a
// step's global loads (acts, k, v, dk / dv) together before their element steps.
#include <cuda_pipeline.h>

#include "backend_cuda.h"
#include "cuda_lte_router_fixed.cuh"

namespace fixed {

using hyla_mma::bf16;

constexpr int BT = 64;                 // own tokens a backward tile
constexpr int PROWS = 80;              // rows of conv 2's and conv 1's input-gradient products (>= BT + 8)
// da_l (l = 1 .. 3): its row j is token t0 - first(l) + j; the rows the next product's kept
// outputs read are valid(l) (76, 72, 68); the rest are zero.
__host__ __device__ constexpr int first(int l) { return REACH * l; }
__host__ __device__ constexpr int valid(int l) { return BT + 2 * first(l); }
// Rows held of da_3, da_2 (what an 80-row product reads: + 4) and da_1 (what conv 1's writes).
constexpr int HELD3 = PROWS + 2 * REACH, HELD2 = PROWS + 2 * REACH, HELD1 = PROWS;
constexpr int XROWS = BT + 2 * REACH;  // rows of a conv's input that its weight gradient reads
__host__ __device__ constexpr int bstride(int c) { return (c + 15) / 16 * 16 + 8; } // bf16 rows (bf16_stride)

// Shared memory (floats): W | da_3 | da_2 | da_1 | dz | G (the projection weight's terms) |
// Pb, Xb (bf16 operands of a weight gradient) | the masks (bytes, below).
constexpr int AT_D3 = W_HEAD, AT_D2 = AT_D3 + HELD3 * stride(chan(3)), AT_D1 = AT_D2 + HELD2 * stride(chan(2));
constexpr int AT_DZ = AT_D1 + HELD1 * stride(chan(1)), AT_G = AT_DZ + HELD3, AT_PB = AT_G + BT * stride(chan(3));
constexpr int AT_XB = AT_PB + BT * bstride(chan(1)) / 2, AT_M = AT_XB + XROWS * bstride(chan(0)) / 2;

// Conv l's input dropout masks, worked out once a tile for both of their uses (the input
// gradient's epilogue and the weight gradient's operand: each draw is ~20 instructions, and
// the two cover the same tokens but for the halos): a byte each (1 kept) for tokens t0 -
// mfirst(l) on, mrows(l) rows (the union of both uses' rows), channels chan(l).
__host__ __device__ constexpr int mfirst(int l) { return REACH * (l > 1 ? l : 1); }
__host__ __device__ constexpr int mrows(int l) { return BT + 2 * mfirst(l); }
__host__ __device__ constexpr int m_at(int l) { return l == 0 ? 0 : m_at(l - 1) + mrows(l - 1) * chan(l - 1) / 4; }
constexpr int BWD_FLOATS = AT_M + m_at(N_CONVS);
constexpr size_t BWD_SMEM = sizeof(float) * (size_t)BWD_FLOATS;
static_assert(BWD_SMEM <= 227 * 1024, "one block an SM");

// Conv L's masks into M (rows outside the sequence are never read).
template <int L> __device__ void draw_masks(uint8_t *M, const router_dims &r, int b, int h, int t0) {
    constexpr int C = chan(L);
    for (int e = threadIdx.x; e < mrows(L) * (C / 4); e += THREADS) {
        const int row = e / (C / 4), c0 = 4 * (e % (C / 4)), t = t0 - mfirst(L) + row;
        if (t < 0 || t >= r.L) continue;
        uint64_t z = hyla_rng_counter(r.key[b][L], drop_index(r, L, t, h, c0));
        uint32_t m = 0;
#pragma unroll
        for (int q = 0; q < 4; q++, z += HYLA_RNG_STEP) m |= (uint32_t)kept(z, r.keep_min) << 8 * q;
        *reinterpret_cast<uint32_t *>(M + row * C + c0) = m;
    }
}
// x times its masks (keep_quad's factors: 1 / (1 - p) kept, 0 dropped; nothing without dropout).
__device__ inline void apply_masks(float (&x)[4], const uint8_t *m, const router_dims &r) {
    if (!(r.p > 0)) return;
    const uint32_t bits = *reinterpret_cast<const uint32_t *>(m);
#pragma unroll
    for (int q = 0; q < 4; q++) x[q] *= (bits >> 8 * q & 0xff) ? r.keep_scale : 0.0f;
}

// A block's slot: conv l's weight gradient as warp tiles of 2 m-tiles (16 output channels) x 4
// n-tiles (8 input channels) of one tap, C fragments in order ((m 4 + n) 32 + lane) 4 + element;
// then the biases, the projection's weights and bias.
constexpr int DW_MT = 2, DW_NT = 4, DW_TILE = DW_MT * DW_NT * 128;
__host__ __device__ constexpr int m_tiles(int l) { return (chan(l + 1) + 15) / 16; }
__host__ __device__ constexpr int m_blocks(int l) { return (m_tiles(l) + DW_MT - 1) / DW_MT; }
__host__ __device__ constexpr int n_blocks(int l) { return chan(l) / 8 / DW_NT; }
__host__ __device__ constexpr int dw_tiles(int l) { return TAPS * m_blocks(l) * n_blocks(l); }
__host__ __device__ constexpr int slot_w(int l) { return l == 0 ? 0 : slot_w(l - 1) + dw_tiles(l - 1) * DW_TILE; }
__host__ __device__ constexpr int slot_b(int l) { return l == 0 ? slot_w(N_CONVS) : slot_b(l - 1) + chan(l); }
constexpr int SLOT_PW = slot_b(N_CONVS), SLOT_PB = SLOT_PW + chan(N_CONVS), SLOT = SLOT_PB + 4;

// dz and da_3 for tokens t0 - 6 .. t0 + 69 (rows past them zero), the projection's weight terms
// dz silu(a_3) of the own rows into G (fused::projection_backward).
__device__ void projection_backward(float *D3, float *G, float *dz, const router_dims &r, const float *dscore,
                                    const float *acts, const float *params, int b, int h, int t0) {
    constexpr int C3 = chan(3), S3 = stride(C3);
    for (int i = threadIdx.x; i < HELD3; i += THREADS) {
        const int t = t0 - first(3) + i;
        float g = 0;
        if (i < valid(3) && t >= 0 && t < r.L) {
            const float s = sig(acts[act_of(r, N_CONVS + 1, b, t, h)]);
            g = dscore[token_pos(r, b, t, h)] * s * (1.0f - s);
        }
        dz[i] = g;
    }
    __syncthreads();
    const float *w = params + r.pw + (size_t)h * C3;
    for (int e = threadIdx.x; e < HELD3 * (C3 / 4); e += THREADS) {
        const int i = e / (C3 / 4), c0 = 4 * (e % (C3 / 4)), t = t0 - first(3) + i;
        float da[4] = {0, 0, 0, 0}, gw[4] = {0, 0, 0, 0};
        if (i < valid(3) && t >= 0 && t < r.L) {
            const float4 a4 = load4(acts + act_of(r, N_CONVS, b, t, h) + c0);
            const float a[4] = {a4.x, a4.y, a4.z, a4.w};
#pragma unroll
            for (int q = 0; q < 4; q++) da[q] = dz[i] * w[c0 + q] * silu_grad(a[q]), gw[q] = dz[i] * silu(a[q]);
        }
        store4(D3 + i * S3 + c0, da);
        if (i >= first(3) && i < first(3) + BT) store4(G + (i - first(3)) * S3 + c0, gw);
    }
}

// Conv l's input gradient over the rows of da_l (l >= 1: times conv l's dropout mask and silu'(a_l)
// into Dl, rows past valid(l) zero; l = 0: times the mask, added onto dk, dv for the tile's own
// tokens), from A = da_{l+1}: warp tiles of MT m-tiles x NT n-tiles, WM warps down the rows.
template <int L, int MT, int NT, int WM>
__device__ void input_gradient(float *Dl, float *dk, float *dv, const float *A, const float *W, const uint8_t *M,
                               const float *acts, const router_dims &r, int b, int h, int t0) {
    constexpr int K = chan(L + 1), N = chan(L), NTT = N / 8, WN = NTT / NT;
    static_assert(WN * NT == NTT && WM * WN <= WARPS, "warp tiles cover the channels");
    const int warp = threadIdx.x / 32;
    if (warp >= WM * WN) return; // (whole warps: no barrier below)
    const int row0 = warp / WN * 16 * MT, nt0 = warp % WN * NT;
    float acc[MT][NT][4];
    warp_product<K, NTT, stride(K), MT, NT, true, false>(acc, A, W + w_at(L), row0, nt0);
    // the quads' gradients and places first, then every load (a_l, or dk / dv's values) at once,
    // then the element steps: the loads wait for memory together
    constexpr int Q = MT * NT;
    float gq[Q][4];
    int rows[Q], cols[Q];
    for_each_quad(acc, row0, nt0, [&](int i, int row, int n0, const float (&g)[4]) {
        rows[i] = row, cols[i] = n0;
#pragma unroll
        for (int q = 0; q < 4; q++) gq[i][q] = g[q];
    });
    float4 in[Q];
#pragma unroll
    for (int i = 0; i < Q; i++) {
        const int t = t0 - first(L) + rows[i];
        in[i] = make_float4(0, 0, 0, 0);
        if (L == 0) {
            if (t < r.L) {
                const size_t pos = token_pos(r, b, t, h);
                in[i] = load4(cols[i] < D ? dk + pos * D + cols[i] : dv + pos * D + cols[i] - D);
            }
        } else if (rows[i] < valid(L) && t >= 0 && t < r.L) {
            in[i] = load4(acts + act_of(r, L, b, t, h) + cols[i]);
        }
    }
#pragma unroll
    for (int i = 0; i < Q; i++) {
        const int row = rows[i], n0 = cols[i], t = t0 - first(L) + row;
        float *x = gq[i];
        if (L == 0) { // rows = the tile's own tokens
            if (t >= r.L) continue;
            apply_masks(gq[i], M + (t - t0 + mfirst(0)) * N + n0, r);
            const size_t pos = token_pos(r, b, t, h);
            float *p = n0 < D ? dk + pos * D + n0 : dv + pos * D + n0 - D;
            const float s[4] = {in[i].x + x[0], in[i].y + x[1], in[i].z + x[2], in[i].w + x[3]};
            store4(p, s);
            continue;
        }
        float da[4] = {0, 0, 0, 0};
        if (row < valid(L) && t >= 0 && t < r.L) {
            const float a[4] = {in[i].x, in[i].y, in[i].z, in[i].w};
            apply_masks(gq[i], M + (t - t0 + mfirst(L)) * N + n0, r);
#pragma unroll
            for (int q = 0; q < 4; q++) da[q] = x[q] * silu_grad(a[q]);
        }
        store4(Dl + row * stride(N) + n0, da);
    }
}

// The bf16 operands of conv l's weight gradient: da_{l+1}'s own rows (from Dn) into Pb, conv l's
// dropped-out input at tokens t0 - 2 .. t0 + 65 (k, v or silu(a_l), zero outside the sequence)
// into Xb (fused::load_input_bf16 and rows_to_bf16).
template <int L>
__device__ void stage_operands(bf16 *Pb, bf16 *Xb, const float *Dn, const uint8_t *M, const router_dims &r, int b, int h,
                               int t0, const float *k, const float *v, const float *acts) {
    constexpr int CO = chan(L + 1), CI = chan(L);
    for (int e = threadIdx.x; e < BT * (CO / 4); e += THREADS) {
        const int row = e / (CO / 4), c0 = 4 * (e % (CO / 4));
        const float4 p = load4(Dn + (first(L + 1) + row) * stride(CO) + c0);
        store_bf16x4(Pb + row * bstride(CO) + c0, {p.x, p.y, p.z, p.w});
    }
    constexpr int PER = (XROWS * (CI / 4) + THREADS - 1) / THREADS;
    float4 u[PER]; // every load of the thread first, then the element steps
#pragma unroll
    for (int j = 0; j < PER; j++) {
        const int e = threadIdx.x + j * THREADS, row = e / (CI / 4), c0 = 4 * (e % (CI / 4)), t = t0 - REACH + row;
        u[j] = make_float4(0, 0, 0, 0);
        if (e < XROWS * (CI / 4) && t >= 0 && t < r.L) {
            const size_t pos = token_pos(r, b, t, h);
            u[j] = load4(L > 0 ? acts + act_of(r, L, b, t, h) + c0 : c0 < D ? k + pos * D + c0 : v + pos * D + c0 - D);
        }
    }
#pragma unroll
    for (int j = 0; j < PER; j++) {
        const int e = threadIdx.x + j * THREADS, row = e / (CI / 4), c0 = 4 * (e % (CI / 4)), t = t0 - REACH + row;
        if (e >= XROWS * (CI / 4)) break;
        float x[4] = {0, 0, 0, 0};
        if (t >= 0 && t < r.L) {
            x[0] = u[j].x, x[1] = u[j].y, x[2] = u[j].z, x[3] = u[j].w;
            if (L > 0)
#pragma unroll
                for (int q = 0; q < 4; q++) x[q] = silu(x[q]);
            apply_masks(x, M + (t - t0 + mfirst(L)) * CI + c0, r);
        }
        store_bf16x4(Xb + row * bstride(CI) + c0, x);
    }
}

// Conv l's weight and bias gradients over the tile's own rows into the slot (fused::
// weight_partials_mma and bias_partials): dW[co][ci][i] = sum over rows of Pb[row][co]
// Xb[row + DIL i][ci], a warp tile (tap, m-block, n-block) at a time.
template <int L>
__device__ void weight_partials(float *slot, const bf16 *Pb, const bf16 *Xb, const float *Dn, bool first_tile) {
    using namespace hyla_mma;
    constexpr int CO = chan(L + 1), CI = chan(L), MT = m_tiles(L), MB = m_blocks(L), NB = n_blocks(L);
    constexpr int PS = bstride(CO), XS = bstride(CI);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int a_row = (lane & 7) + 8 * (lane >> 4), a_col = 8 * ((lane >> 3) & 1), b_row = lane & 15, b_col = 8 * (lane >> 4);
    for (int wt = warp; wt < dw_tiles(L); wt += WARPS) {
        const int i = wt / (MB * NB), mt0 = wt / NB % MB * DW_MT, nt0 = wt % NB * DW_NT;
        float acc[DW_MT][DW_NT][4];
#pragma unroll
        for (int m = 0; m < DW_MT; m++)
#pragma unroll
            for (int n = 0; n < DW_NT; n++) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0;
        const bf16 *pa = Pb + a_row * PS + 16 * mt0 + a_col, *xb = Xb + (DIL * i + b_row) * XS + 8 * nt0 + b_col;
#pragma unroll
        for (int s = 0; s < BT / 16; s++) {
            uint32_t a[DW_MT][4];
#pragma unroll
            for (int m = 0; m < DW_MT; m++)
                if (mt0 + m < MT) ldsm_x4_trans(a[m][0], a[m][1], a[m][2], a[m][3], pa + 16 * s * PS + 16 * m);
#pragma unroll
            for (int np = 0; np < DW_NT / 2; np++) {
                uint32_t b0, b1, b2, b3;
                ldsm_x4_trans(b0, b1, b2, b3, xb + 16 * s * XS + 16 * np);
#pragma unroll
                for (int m = 0; m < DW_MT; m++)
                    if (mt0 + m < MT) mma(acc[m][2 * np], a[m], b0, b1), mma(acc[m][2 * np + 1], a[m], b2, b3);
            }
        }
        float4 *out = reinterpret_cast<float4 *>(slot + slot_w(L) + wt * DW_TILE) + lane;
#pragma unroll
        for (int m = 0; m < DW_MT; m++)
#pragma unroll
            for (int n = 0; n < DW_NT; n++) {
                float4 o = first_tile ? make_float4(0, 0, 0, 0) : out[(m * DW_NT + n) * 32];
                o.x += acc[m][n][0], o.y += acc[m][n][1], o.z += acc[m][n][2], o.w += acc[m][n][3];
                out[(m * DW_NT + n) * 32] = o;
            }
    }
    for (int co = threadIdx.x; co < CO; co += THREADS)
        add_partial(slot + slot_b(L) + co, column_total(Dn + first(L + 1) * stride(CO) + co, stride(CO), BT), first_tile);
}

// Blocks (segment, head, row): tiles seg tps .. of the row's tiles.
__global__ void __launch_bounds__(THREADS, 1)
    bwd_kernel(float *dk, float *dv, float *partial, const float *dscore, const float *k, const float *v,
               const float *params, const float *acts, const float *wt, const __grid_constant__ router_dims r, int tps,
               int segs) {
    extern __shared__ __align__(16) float smem[];
    float *W = smem, *D3 = smem + AT_D3, *D2 = smem + AT_D2, *D1 = smem + AT_D1, *dz = smem + AT_DZ, *G = smem + AT_G;
    bf16 *Pb = reinterpret_cast<bf16 *>(smem + AT_PB), *Xb = reinterpret_cast<bf16 *>(smem + AT_XB);
    uint8_t *M[N_CONVS];
    for (int l = 0; l < N_CONVS; l++) M[l] = reinterpret_cast<uint8_t *>(smem + AT_M + m_at(l));
    const int seg = blockIdx.x, h = blockIdx.y, b = blockIdx.z, tiles = (r.L + BT - 1) / BT;
    float *slot = partial + (((size_t)b * r.H + h) * segs + seg) * SLOT;
    const bool dropout = r.p > 0;
    load_weights(W, wt, h);
    for (int tile = seg * tps; tile < min(tiles, (seg + 1) * tps); tile++) {
        const bool first_tile = tile == seg * tps;
        const int t0 = tile * BT;
        __syncthreads(); // the previous tile is done with every buffer
        if (dropout) draw_masks<2>(M[2], r, b, h, t0), draw_masks<1>(M[1], r, b, h, t0);
        projection_backward(D3, G, dz, r, dscore, acts, params, b, h, t0);
        __pipeline_wait_prior(0); // the weights (first tile)
        __syncthreads();
        for (int j = threadIdx.x; j <= chan(3); j += THREADS) // the projection's weight and bias
            add_partial(slot + (j < chan(3) ? SLOT_PW + j : SLOT_PB),
                        j < chan(3) ? column_total(G + j, stride(chan(3)), BT) : column_total(dz + first(3), 1, BT), first_tile);
        for (int e = threadIdx.x; e < 2 * REACH * stride(chan(2)); e += THREADS) D2[PROWS * stride(chan(2)) + e] = 0.0f;
        input_gradient<2, 1, 4, 5>(D2, dk, dv, D3, W, M[2], acts, r, b, h, t0);
        stage_operands<2>(Pb, Xb, D3, M[2], r, b, h, t0, k, v, acts);
        __syncthreads();
        weight_partials<2>(slot, Pb, Xb, D3, first_tile);
        input_gradient<1, 5, 1, 1>(D1, dk, dv, D2, W, M[1], acts, r, b, h, t0);
        __syncthreads();
        stage_operands<1>(Pb, Xb, D2, M[1], r, b, h, t0, k, v, acts);
        if (dropout) draw_masks<0>(M[0], r, b, h, t0);
        __syncthreads();
        weight_partials<1>(slot, Pb, Xb, D2, first_tile);
        input_gradient<0, 2, 4, 2>(nullptr, dk, dv, D1, W, M[0], acts, r, b, h, t0);
        __syncthreads();
        stage_operands<0>(Pb, Xb, D1, M[0], r, b, h, t0, k, v, acts);
        __syncthreads();
        weight_partials<0>(slot, Pb, Xb, D1, first_tile);
    }
}

// The parameter that slot entry o of head h sums, or -1 (padding of the warp tiles).
__device__ long long slot_param(const router_dims &r, int o, int h) {
    for (int l = 0; l < N_CONVS; l++) {
        const int cout = chan(l + 1), cin = chan(l);
        if (o >= slot_w(l) && o < slot_w(l) + dw_tiles(l) * DW_TILE) {
            const int rel = o - slot_w(l), wt = rel / DW_TILE, mn = rel % DW_TILE / 128, lane = rel % 128 / 4, e = rel % 4;
            const int i = wt / (m_blocks(l) * n_blocks(l)), mb = wt / n_blocks(l) % m_blocks(l), nb = wt % n_blocks(l);
            const int co = (mb * DW_MT + mn / DW_NT) * 16 + lane / 4 + 8 * (e / 2);
            const int ci = (nb * DW_NT + mn % DW_NT) * 8 + 2 * (lane % 4) + e % 2;
            if (co >= cout) return -1;
            return (long long)(r.w[l] + (((size_t)h * cout + co) * cin + ci) * TAPS + i);
        }
        if (o >= slot_b(l) && o < slot_b(l) + cout) return (long long)(r.b[l] + (size_t)h * cout + (o - slot_b(l)));
    }
    if (o >= SLOT_PW && o < SLOT_PW + chan(N_CONVS)) return (long long)(r.pw + (size_t)h * chan(N_CONVS) + (o - SLOT_PW));
    return o == SLOT_PB ? (long long)(r.pb + h) : -1;
}

// dparams += the slots of head h, summed over row and segment in that order.
__global__ void reduce_kernel(float *dparams, const float *partial, const __grid_constant__ router_dims r, int segs) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y;
    if (o >= SLOT) return;
    const long long at = slot_param(r, o, h);
    if (at < 0) return;
    float s = 0;
    for (int b = 0; b < r.B; b++)
        for (int seg = 0; seg < segs; seg++) s += partial[(((size_t)b * r.H + h) * segs + seg) * SLOT + o];
    dparams[at] += s;
}

bwd_stage::~bwd_stage() {
    if (wt) CUDA_CHECK(cudaFreeAsync(wt, 0)); // after the launches queued
}

bool backward(float *dk, float *dv, float *dparams, const float *dscore, const float *k, const float *v,
              const float *params, const float *acts, const router_dims &r, bwd_stage &stage) {
    if (r.B < 1 || r.L < 1 || !matches(r)) return false;
    if (!stage.wt) stage.wt = staged<true>(params, r);
    const float *wt = stage.wt;
    // about one block an SM (its shared memory): segments of consecutive tiles
    const int tiles = (r.L + BT - 1) / BT, want = sm_count() / (r.H * r.B);
    const int tps = (tiles + (want < 1 ? 1 : want) - 1) / (want < 1 ? 1 : want), segs = (tiles + tps - 1) / tps;
    float *partial = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&partial, sizeof(float) * (size_t)SLOT * r.B * r.H * segs, 0));
    CUDA_CHECK(cudaFuncSetAttribute(bwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)BWD_SMEM));
    bwd_kernel<<<dim3(segs, r.H, r.B), THREADS, BWD_SMEM>>>(dk, dv, partial, dscore, k, v, params, acts, wt, r, tps, segs);
    CUDA_LAUNCH_CHECK();
    reduce_kernel<<<dim3(blocks_for(SLOT, 256), r.H), 256>>>(dparams, partial, r, segs);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(partial, 0));
    return true;
}

} // namespace fixed
