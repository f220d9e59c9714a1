// CUDA: the gated delta rule (MODEL.md §3.2 step 5) as its token-by-token recurrence,
// parallel over the state's value columns.
//
// S_t = a_t S_{t-1} + k_t delta_t^T with delta_t = beta_t (v_t - a_t S_{t-1}^T k_t) and
// o_t = scale S_t^T q_t: every column j of S (one value channel) evolves on its own, reading
// only k_t, q_t, a_t, beta_t and v_t[j]. So a warp owns COLS columns of one (batch, head), its
// lanes hold the rows i = lane + 32 r of those columns in registers, and the only
// communication is a warp shuffle sum over the rows. The grid covers (batch x head, column
// blocks), which gives the GPU B x H x dv / COLS independent warps instead of B x H blocks.
//
// The backward pass runs in reverse over the stored states (the forward is recomputed with
// `states` kept, layout [B*H, L, dv, dk] so that a warp's loads are coalesced). Its column
// sums — dq, dk, dbeta, dg add up over all value columns — are written per column block and
// added in a fixed order by a second kernel: deterministic, no atomics. `gdr_chunk_*` run this
// recurrence in fp32 mode; in bf16 mode with HYLA_GDR_CHUNKED=1, the chunked tensor-core form
// (cuda_gdr_chunk_*.cu; off by default until it has passed test_cuda_ops on a GPU).
#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_switch.h"

namespace {

constexpr int COLS = 2;                     // value columns per warp
constexpr int WARPS = 8;                    // warps per block
constexpr int BLOCK_COLS = COLS * WARPS;    // value columns per block

struct gdr_dims {
    int B, L, H, dk, dv;
    float scale;
};

template <int N> __device__ inline void warp_sum(float (&x)[N]) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2)
#pragma unroll
        for (int n = 0; n < N; n++) x[n] += __shfl_xor_sync(0xffffffffu, x[n], off);
}

// One token's inputs as a warp reads them: this lane's rows of k and q, the warp's columns
// of v (or of dO in the backward pass), beta and the log-decay g.
template <int R> struct token_in {
    float k[R], q[R], v[COLS], beta, g;
    __device__ inline void load(const float *q_, const float *k_, const float *v_, const float *beta_,
                                const float *g_, size_t row, int lane, int j0, int dk, int dv, bool active) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int i = lane + 32 * r;
            k[r] = i < dk ? k_[row * dk + i] : 0.0f;
            q[r] = i < dk ? q_[row * dk + i] : 0.0f;
        }
#pragma unroll
        for (int c = 0; c < COLS; c++) v[c] = active && j0 + c < dv ? v_[row * dv + j0 + c] : 0.0f;
        beta = beta_[row], g = g_[row];
    }
};

// How many tokens ahead the loops load their inputs (registers: a global load takes several
// tokens' worth of arithmetic to arrive).
constexpr int AHEAD = 3;

// This warp's first value column, and the (batch, head) of the block.
__device__ inline int first_column() { return blockIdx.y * BLOCK_COLS + (threadIdx.x / 32) * COLS; }

// R = rows per lane (dk <= 32 R).
template <int R>
__global__ void __launch_bounds__(WARPS * 32) gdr_fwd_kernel(float *o, float *final_state, float *states,
                                                             const float *q, const float *k, const float *v,
                                                             const float *beta, const float *g, const float *S0,
                                                             gdr_dims d) {
    const int bh = blockIdx.x, b = bh / d.H, h = bh % d.H, lane = threadIdx.x % 32, j0 = first_column();
    if (j0 >= d.dv) return; // whole warp outside dv: no barrier below, so it may leave
    const size_t s_size = (size_t)d.dk * d.dv;
    float S[R][COLS];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int c = 0; c < COLS; c++) {
            const int i = lane + 32 * r, j = j0 + c;
            S[r][c] = (S0 && i < d.dk && j < d.dv) ? S0[(size_t)bh * s_size + (size_t)i * d.dv + j] : 0.0f;
        }
    // inputs are loaded AHEAD tokens before use: the loop's chain is then arithmetic and
    // shuffles, not memory latency
    token_in<R> ahead[AHEAD];
    auto row_of = [&](int t) { return ((size_t)b * d.L + t) * d.H + h; };
#pragma unroll
    for (int s = 0; s < AHEAD; s++)
        if (s < d.L) ahead[s].load(q, k, v, beta, g, row_of(s), lane, j0, d.dk, d.dv, true);
    auto token = [&](const token_in<R> &cur, int t) {
        const size_t row = row_of(t);
        const float(&kr)[R] = cur.k, (&qr)[R] = cur.q, (&vc)[COLS] = cur.v;
        const float a = expf(cur.g), bt = cur.beta;
        float u[COLS];
#pragma unroll
        for (int c = 0; c < COLS; c++) {
            u[c] = 0;
#pragma unroll
            for (int r = 0; r < R; r++) u[c] += S[r][c] * kr[r];
        }
        warp_sum(u);
        float out[COLS];
#pragma unroll
        for (int c = 0; c < COLS; c++) {
            const float delta = bt * (vc[c] - a * u[c]);
            out[c] = 0;
#pragma unroll
            for (int r = 0; r < R; r++) {
                S[r][c] = a * S[r][c] + kr[r] * delta;
                out[c] += S[r][c] * qr[r];
            }
        }
        if (states) {
            float *st = states + (((size_t)bh * d.L + t) * d.dv + j0) * d.dk;
#pragma unroll
            for (int c = 0; c < COLS; c++)
#pragma unroll
                for (int r = 0; r < R; r++)
                    if (j0 + c < d.dv && lane + 32 * r < d.dk) st[(size_t)c * d.dk + lane + 32 * r] = S[r][c];
        }
        warp_sum(out);
        if (lane < COLS && j0 + lane < d.dv) {
            float mine = out[0];
#pragma unroll
            for (int c = 1; c < COLS; c++)
                if (lane == c) mine = out[c];
            o[row * d.dv + j0 + lane] = d.scale * mine;
        }
    };
    // unrolled by AHEAD so that each buffer is refilled right after use and read AHEAD tokens later
    for (int t0 = 0; t0 < d.L; t0 += AHEAD)
#pragma unroll
        for (int s = 0; s < AHEAD; s++) {
            const int t = t0 + s;
            if (t >= d.L) break;
            const token_in<R> cur = ahead[s];
            if (t + AHEAD < d.L) ahead[s].load(q, k, v, beta, g, row_of(t + AHEAD), lane, j0, d.dk, d.dv, true);
            token(cur, t);
        }
    if (final_state)
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int c = 0; c < COLS; c++) {
                const int i = lane + 32 * r, j = j0 + c;
                if (i < d.dk && j < d.dv) final_state[(size_t)bh * s_size + (size_t)i * d.dv + j] = S[r][c];
            }
}

// Per token t (in reverse), for each column: G = dL/dS_t gets the output's term, then
//   u = S_{t-1}^T k, ddelta = G^T k, w = v - a u, dw = beta ddelta, du = -a dw,
//   dv = dw, dbeta += ddelta w, da += G.S_{t-1} - dw u,
//   dq = scale S_t do, dk = G delta + S_{t-1} du, and G <- a G + k du^T.
// dq, dk, dbeta, da sum over all columns: this block's share goes to part_qk [blockIdx.y,
// row, 2 dk] and part_ba [blockIdx.y, row, 2] (summed over its warps in order).
template <int R>
__global__ void __launch_bounds__(WARPS * 32) gdr_bwd_kernel(float *dv, float *dS0, float *part_qk, float *part_ba,
                                                             const float *dout, const float *dS_final,
                                                             const float *states, const float *q, const float *k,
                                                             const float *v, const float *beta, const float *g,
                                                             const float *S0, gdr_dims d) {
    __shared__ float share_qk[2][WARPS][2 * 32 * R]; // double-buffered by token parity: one barrier per token
    __shared__ float share_ba[2][WARPS][2];
    const int bh = blockIdx.x, b = bh / d.H, h = bh % d.H, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int j0 = first_column();
    const bool active = j0 < d.dv; // inactive warps still meet every barrier, contributing zeros
    const size_t s_size = (size_t)d.dk * d.dv, n_rows = (size_t)d.B * d.L * d.H;
    float G[R][COLS], St[R][COLS], Sp[R][COLS];
    auto load_state = [&](float (&S)[R][COLS], int t) { // S_t (t = -1: the initial state)
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int c = 0; c < COLS; c++) {
                const int i = lane + 32 * r, j = j0 + c;
                float s = 0.0f;
                if (active && i < d.dk && j < d.dv) {
                    if (t >= 0) s = states[(((size_t)bh * d.L + t) * d.dv + j) * d.dk + i];
                    else if (S0) s = S0[(size_t)bh * s_size + (size_t)i * d.dv + j];
                }
                S[r][c] = s;
            }
    };
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int c = 0; c < COLS; c++) {
            const int i = lane + 32 * r, j = j0 + c;
            G[r][c] = (dS_final && active && i < d.dk && j < d.dv) ? dS_final[(size_t)bh * s_size + (size_t)i * d.dv + j]
                                                                   : 0.0f;
        }
    // each token's inputs, dO and the state S_{t-1} before it, loaded AHEAD tokens before use
    struct bwd_in {
        token_in<R> in;
        float dO[COLS], Sp[R][COLS];
    };
    auto row_of = [&](int t) { return ((size_t)b * d.L + t) * d.H + h; };
    auto load = [&](bwd_in &x, int t) {
        const size_t row = row_of(t);
        x.in.load(q, k, v, beta, g, row, lane, j0, d.dk, d.dv, active);
#pragma unroll
        for (int c = 0; c < COLS; c++) x.dO[c] = active && j0 + c < d.dv ? dout[row * d.dv + j0 + c] : 0.0f;
        load_state(x.Sp, t - 1);
    };
    bwd_in ahead[AHEAD];
    load_state(St, d.L - 1);
#pragma unroll
    for (int s = 0; s < AHEAD; s++)
        if (s < d.L) load(ahead[s], d.L - 1 - s);
    auto token = [&](const bwd_in &cur, int t) {
        const size_t row = row_of(t);
        float dd[COLS];
#pragma unroll
        for (int c = 0; c < COLS; c++) dd[c] = cur.dO[c];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int c = 0; c < COLS; c++) Sp[r][c] = cur.Sp[r][c];
        const float(&kr)[R] = cur.in.k, (&qr)[R] = cur.in.q, (&vc)[COLS] = cur.in.v;
        const float a = expf(cur.in.g), bt = cur.in.beta;
        float sums[3 * COLS]; // u, ddelta, G.S_{t-1} per column
#pragma unroll
        for (int c = 0; c < COLS; c++) {
            float u = 0, ddelta = 0, gs = 0;
#pragma unroll
            for (int r = 0; r < R; r++) {
                G[r][c] += d.scale * qr[r] * dd[c];
                u += Sp[r][c] * kr[r];
                ddelta += G[r][c] * kr[r];
                gs += G[r][c] * Sp[r][c];
            }
            sums[3 * c] = u, sums[3 * c + 1] = ddelta, sums[3 * c + 2] = gs;
        }
        warp_sum(sums);
        float delta[COLS], du[COLS], dbeta_part = 0, dalpha_part = 0;
#pragma unroll
        for (int c = 0; c < COLS; c++) {
            const float u = sums[3 * c], ddelta = sums[3 * c + 1], gs = sums[3 * c + 2];
            const float w = vc[c] - a * u, dw = bt * ddelta;
            delta[c] = bt * w;
            du[c] = -a * dw;
            dbeta_part += ddelta * w;
            dalpha_part += gs - dw * u;
            if (active && lane == c && j0 + c < d.dv) dv[row * d.dv + j0 + c] = dw;
        }
        // this warp's share of dq and dk for its rows, then the block's sum over warps in order
        float *sq = share_qk[t & 1][warp];
#pragma unroll
        for (int r = 0; r < R; r++) {
            float dqi = 0, dki = 0;
#pragma unroll
            for (int c = 0; c < COLS; c++) {
                dqi += St[r][c] * dd[c];
                dki += G[r][c] * delta[c] + Sp[r][c] * du[c];
            }
            sq[lane + 32 * r] = dqi, sq[32 * R + lane + 32 * r] = dki;
        }
        if (lane == 0) share_ba[t & 1][warp][0] = dbeta_part, share_ba[t & 1][warp][1] = dalpha_part;
        __syncthreads();
        float *pqk = part_qk + ((size_t)blockIdx.y * n_rows + row) * 2 * d.dk;
        for (int e = threadIdx.x; e < 2 * d.dk; e += blockDim.x) {
            const int slot = e < d.dk ? e : 32 * R + (e - d.dk);
            float s = 0;
            for (int w = 0; w < WARPS; w++) s += share_qk[t & 1][w][slot];
            pqk[e] = s;
        }
        if (threadIdx.x < 2) {
            float s = 0;
            for (int w = 0; w < WARPS; w++) s += share_ba[t & 1][w][threadIdx.x];
            part_ba[((size_t)blockIdx.y * n_rows + row) * 2 + threadIdx.x] = s;
        }
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int c = 0; c < COLS; c++) {
                G[r][c] = a * G[r][c] + kr[r] * du[c];
                St[r][c] = Sp[r][c];
            }
    };
    // in reverse, unrolled by AHEAD (every thread runs the same steps: the barrier inside is safe)
    for (int s0 = 0; s0 < d.L; s0 += AHEAD)
#pragma unroll
        for (int s = 0; s < AHEAD; s++) {
            const int t = d.L - 1 - (s0 + s);
            if (t < 0) break;
            const bwd_in cur = ahead[s];
            if (t - AHEAD >= 0) load(ahead[s], t - AHEAD);
            token(cur, t);
        }
    if (dS0 && active)
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int c = 0; c < COLS; c++) {
                const int i = lane + 32 * r, j = j0 + c;
                if (i < d.dk && j < d.dv) dS0[(size_t)bh * s_size + (size_t)i * d.dv + j] = G[r][c];
            }
}

// dq, dk, dbeta, dg from the column blocks' shares, added in block order.
__global__ void gdr_bwd_finish_kernel(float *dq, float *dk, float *dbeta, float *dg, const float *part_qk,
                                      const float *part_ba, const float *g, int blocks, size_t n_rows, int dkd,
                                      float scale) {
    const size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x, per_row = (size_t)2 * dkd + 2;
    if (e >= n_rows * per_row) return;
    const size_t row = e / per_row;
    const int slot = (int)(e % per_row);
    float s = 0;
    if (slot < 2 * dkd) {
        for (int cb = 0; cb < blocks; cb++) s += part_qk[((size_t)cb * n_rows + row) * 2 * dkd + slot];
        if (slot < dkd) dq[row * dkd + slot] = scale * s;
        else dk[row * dkd + slot - dkd] = s;
    } else {
        for (int cb = 0; cb < blocks; cb++) s += part_ba[((size_t)cb * n_rows + row) * 2 + slot - 2 * dkd];
        if (slot == 2 * dkd) dbeta[row] = s;
        else dg[row] = s * expf(g[row]); // d/dg = d/da * a
    }
}

int rows_per_lane(int dk) {
    if (dk <= 32) return 1;
    if (dk <= 64) return 2;
    if (dk <= 128) return 4;
    if (dk <= 256) return 8;
    fprintf(stderr, "hyla: error: the CUDA gated delta rule supports key head dims up to 256, got %d\n", dk);
    exit(1);
}

void launch_fwd(float *o, float *final_state, float *states, const float *q, const float *k, const float *v,
                const float *beta, const float *g, const float *S0, gdr_dims d) {
    const dim3 grid(d.B * d.H, (d.dv + BLOCK_COLS - 1) / BLOCK_COLS);
    switch (rows_per_lane(d.dk)) {
    case 1: gdr_fwd_kernel<1><<<grid, WARPS * 32>>>(o, final_state, states, q, k, v, beta, g, S0, d); break;
    case 2: gdr_fwd_kernel<2><<<grid, WARPS * 32>>>(o, final_state, states, q, k, v, beta, g, S0, d); break;
    case 4: gdr_fwd_kernel<4><<<grid, WARPS * 32>>>(o, final_state, states, q, k, v, beta, g, S0, d); break;
    default: gdr_fwd_kernel<8><<<grid, WARPS * 32>>>(o, final_state, states, q, k, v, beta, g, S0, d); break;
    }
    CUDA_LAUNCH_CHECK();
}

void cuda_gdr_fwd(float *o, float *final_state, const float *q, const float *k, const float *v, const float *beta,
                  const float *g, const float *S0, float scale, int B, int L, int H, int dk, int dv) {
    if (B * L * H == 0) return;
    launch_fwd(o, final_state, NULL, q, k, v, beta, g, S0, gdr_dims{B, L, H, dk, dv, scale});
}

void cuda_gdr_bwd(float *dq, float *dk, float *dv, float *dbeta, float *dg, float *dS0, const float *dout,
                  const float *dS_final, const float *q, const float *k, const float *v, const float *beta,
                  const float *g, const float *S0, float scale, int B, int L, int H, int dkd, int dvd) {
    if (B * L * H == 0) return;
    const gdr_dims d{B, L, H, dkd, dvd, scale};
    const int blocks = (dvd + BLOCK_COLS - 1) / BLOCK_COLS;
    const size_t n_rows = (size_t)B * L * H;
    float *states = NULL, *o = NULL, *part_qk = NULL, *part_ba = NULL; // recompute the forward, keeping every state
    CUDA_CHECK(cudaMallocAsync((void **)&states, sizeof(float) * (size_t)B * H * L * dkd * dvd, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&o, sizeof(float) * n_rows * dvd, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&part_qk, sizeof(float) * blocks * n_rows * 2 * dkd, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&part_ba, sizeof(float) * blocks * n_rows * 2, 0));
    launch_fwd(o, NULL, states, q, k, v, beta, g, S0, d);
    const dim3 grid(B * H, blocks);
    switch (rows_per_lane(dkd)) {
    case 1: gdr_bwd_kernel<1><<<grid, WARPS * 32>>>(dv, dS0, part_qk, part_ba, dout, dS_final, states, q, k, v, beta, g, S0, d); break;
    case 2: gdr_bwd_kernel<2><<<grid, WARPS * 32>>>(dv, dS0, part_qk, part_ba, dout, dS_final, states, q, k, v, beta, g, S0, d); break;
    case 4: gdr_bwd_kernel<4><<<grid, WARPS * 32>>>(dv, dS0, part_qk, part_ba, dout, dS_final, states, q, k, v, beta, g, S0, d); break;
    default: gdr_bwd_kernel<8><<<grid, WARPS * 32>>>(dv, dS0, part_qk, part_ba, dout, dS_final, states, q, k, v, beta, g, S0, d); break;
    }
    CUDA_LAUNCH_CHECK();
    const size_t finish = n_rows * (2 * (size_t)dkd + 2);
    gdr_bwd_finish_kernel<<<blocks_for(finish, 256), 256>>>(dq, dk, dbeta, dg, part_qk, part_ba, g, blocks, n_rows, dkd,
                                                            scale);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(states, 0));
    CUDA_CHECK(cudaFreeAsync(o, 0));
    CUDA_CHECK(cudaFreeAsync(part_qk, 0));
    CUDA_CHECK(cudaFreeAsync(part_ba, 0));
}

} // namespace

// The chunked form on the tensor cores (cuda_gdr_chunk_*.cu): bf16 operands, so bf16 mode only.
void cuda_gdr_chunk_fwd_bf16(float *o, float *final_state, const float *q, const float *k, const float *v,
                             const float *beta, const float *g, const float *S0, float scale, int B, int L, int H,
                             int dk, int dv, float *saved);
void cuda_gdr_chunk_bwd_bf16(float *dq, float *dk, float *dv, float *dbeta, float *dg, float *dS0, const float *dout,
                             const float *dS_final, const float *q, const float *k, const float *v, const float *beta,
                             const float *g, const float *S0, float scale, int B, int L, int H, int dkd, int dvd,
                             const float *saved, const float *rq, const float *rk);
bool cuda_gdr_chunk_l2norm_fusable(void);
size_t cuda_gdr_chunk_saved_floats_bf16(int B, int L, int H, int dk, int dv);

namespace {

// gdr_chunk_*: the chunked tensor-core kernels in bf16 mode for head dims up to 128; the fp32
// recurrence otherwise (fp32 mode keeps its 1e-5 agreement with the CPU). HYLA_GDR_CHUNKED=0
// or 1 overrides the default (CHUNKED_BY_DEFAULT), read once.
constexpr bool CHUNKED_BY_DEFAULT = true; // test_cuda_ops on an H200, 2026-12-06 (docs/gpu-runs/)
bool use_chunked(int dk, int dv) {
    static const bool enabled = cuda_switch("HYLA_GDR_CHUNKED", CHUNKED_BY_DEFAULT);
    return enabled && cuda_matmul_bf16() && dk <= 128 && dv <= 128;
}

// `saved` (the forward's chunk quantities for the backward) where the chunked form runs and
// the caller gave room for it. On by default since its GPU run (H100, 2026-12-07, docs/gpu-runs/2026-12-07c-h100/: test_cuda_ops,
// memcheck, racecheck; emu.gdr_chunk finds the same bits with and without it); HYLA_GDR_SAVED=0
// / 1 overrides.
constexpr bool SAVED_BY_DEFAULT = true;
bool use_saved(void) {
    static const bool enabled = cuda_switch("HYLA_GDR_SAVED", SAVED_BY_DEFAULT);
    return enabled;
}
size_t gdr_chunk_saved_floats(int B, int L, int H, int dk, int dv) {
    return use_chunked(dk, dv) && use_saved() ? cuda_gdr_chunk_saved_floats_bf16(B, L, H, dk, dv) : 0;
}

void gdr_chunk_fwd(float *o, float *final_state, const float *q, const float *k, const float *v, const float *beta,
                   const float *g, const float *S0, float scale, int B, int L, int H, int dk, int dv, float *saved) {
    if (use_chunked(dk, dv))
        cuda_gdr_chunk_fwd_bf16(o, final_state, q, k, v, beta, g, S0, scale, B, L, H, dk, dv,
                                use_saved() ? saved : NULL);
    else cuda_gdr_fwd(o, final_state, q, k, v, beta, g, S0, scale, B, L, H, dk, dv);
}

void gdr_chunk_bwd(float *dq, float *dk, float *dv, float *dbeta, float *dg, float *dS0, const float *dout,
                   const float *dS_final, const float *q, const float *k, const float *v, const float *beta,
                   const float *g, const float *S0, float scale, int B, int L, int H, int dkd, int dvd,
                   const float *saved) {
    if (use_chunked(dkd, dvd))
        cuda_gdr_chunk_bwd_bf16(dq, dk, dv, dbeta, dg, dS0, dout, dS_final, q, k, v, beta, g, S0, scale, B, L, H, dkd,
                                dvd, use_saved() ? saved : NULL, NULL, NULL);
    else cuda_gdr_bwd(dq, dk, dv, dbeta, dg, dS0, dout, dS_final, q, k, v, beta, g, S0, scale, B, L, H, dkd, dvd);
}

// HYLA_GDR_L2_FUSED=1: the chunked backward's last kernels (grads_dq, grads_dk2) take q's and
// k's L2-norm backward into their final row passes, l2norm_bwd's operations in its order (the
// same bits), so that the norms' own pass (read dq, q, write dq; the same for k: ~384 MB a
// layer at the 0.4B shape) goes. Off until a GPU run has checked and timed it; off, or where
// the kernels cannot (the recurrence, the older grads forms), the three ops run.
constexpr bool L2_FUSED_BY_DEFAULT = false;
void gdr_chunk_l2norm_bwd(float *dq, float *dk, float *dv, float *dbeta, float *dg, float *dS0, const float *dout,
                          const float *dS_final, const float *q, const float *k, const float *v, const float *beta,
                          const float *g, const float *S0, float scale, int B, int L, int H, int dkd, int dvd,
                          const float *saved, const float *q_rstd, const float *k_rstd) {
    if (use_chunked(dkd, dvd) && cuda_switch("HYLA_GDR_L2_FUSED", L2_FUSED_BY_DEFAULT) &&
        cuda_gdr_chunk_l2norm_fusable()) {
        cuda_gdr_chunk_bwd_bf16(dq, dk, dv, dbeta, dg, dS0, dout, dS_final, q, k, v, beta, g, S0, scale, B, L, H, dkd,
                                dvd, use_saved() ? saved : NULL, q_rstd, k_rstd);
        return;
    }
    gdr_chunk_bwd(dq, dk, dv, dbeta, dg, dS0, dout, dS_final, q, k, v, beta, g, S0, scale, B, L, H, dkd, dvd, saved);
    cuda_l2norm_bwd(dq, dq, q, q_rstd, B * L * H, dkd);
    cuda_l2norm_bwd(dk, dk, k, k_rstd, B * L * H, dkd);
}

} // namespace

extern "C" void cuda_register_gdr(struct hyla_backend *t) {
    t->gdr_recurrent_fwd = cuda_gdr_fwd, t->gdr_recurrent_bwd = cuda_gdr_bwd;
    t->gdr_chunk_fwd = gdr_chunk_fwd, t->gdr_chunk_bwd = gdr_chunk_bwd;
    t->gdr_chunk_saved_floats = gdr_chunk_saved_floats;
    t->gdr_chunk_l2norm_bwd = gdr_chunk_l2norm_bwd;
}
