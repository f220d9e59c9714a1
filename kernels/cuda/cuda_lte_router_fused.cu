// CUDA: the LTE router's fused kernels (cuda_lte_router.cu picks them where a shape's tile fits).
//
// Why fused: at the 0.4B shape (B 4, L 4096, 16 kv heads, channels 128 -> 64 -> 32 -> 16, kernel
// 3, dilation 2) the router is ~17 GFLOP forward, but as per-tap products it was 36 cuBLAS calls
// forward and 72 backward plus element-wise passes over every activation: launch overhead and
// memory traffic, 1.2 ms forward and 3.6 ms backward on an H200. Fused, each activation crosses
// global memory once (k, v read; a_1 .. a_n, z written; backward: those read, dk, dv written)
// and the products run from shared memory on the CUDA cores in fp32.
//
// Forward (fwd_kernel): a block per (tile of T output tokens, head, batch). It builds conv 0's
// dropped-out input for the tile's rows plus the receptive field's halo (zero outside the
// sequence), then runs the convs one after the other on shared memory: each conv's output rows
// shrink by the conv's reach, and the output (SiLU, then the next conv's dropout) overwrites the
// input in place once every thread has read it, so one buffer of (T + halo) rows holds the
// whole stack. The pre-activations of the tile's own rows go to `acts`, then z and the score.
// The halo is recomputed by the neighbouring tiles (at the 0.4B shape 128 conv-0 rows per 120
// tokens: 7% more work for no inter-block traffic).
//
// Backward (bwd_kernel): a block per (segment of consecutive tiles, head, batch), tile after
// tile: dz and da_n (gradient at the last pre-activation) for the tile plus the backward halo,
// then per conv from the last: its input gradient as a product on shared memory (rows shrink by
// the conv's reach; times the dropout mask and silu'(a_l), read from `acts`, it is the previous
// conv's da), down to conv 0, whose input gradient goes to dk, dv for the tile's own rows only
// (conv 0, three quarters of the work, has no halo backward); and its weight gradient over the
// tile's own rows (da ⊗ the conv's dropped-out input, rebuilt from k, v or `acts`). Parameter
// gradients accumulate in registers over a tile and across the block's tiles in its slot of a
// stream-ordered scratch (each thread owns its entries: read, add, write; no atomics);
// reduce_kernel then adds the slots of a head in a fixed order into dparams. Long segments keep
// the scratch small (about 35 MB at the 0.4B shape).
//
// The products: tap i of a conv is a product of the input rows shifted by dilation * i with that
// tap's [c_in, c_out] weights. A thread computes TM rows x 4 output channels (rows strided by
// the number of row groups) as a 4-channel-deep outer product per step: 4 float4 weight loads +
// TM float4 input loads for 16 TM fused multiply-adds. A warp holds 8 channel groups x 4
// neighbouring row groups, so that each of its float4 loads is one shared-memory wavefront (8
// distinct weight float4s; 4 rows whose strides are an odd number of float4s, distinct banks).
// Weights are re-laid once per call by stage_weights_kernel ([head][tap][reduction channel]
// [output channel], zero-padded to multiples of 4) so that a chunk of them is a few contiguous
// runs: chunks of ~8 KB arrive by cp.async into two buffers, the next while the current one's
// products run, one barrier per chunk. Weight gradients: a warp owns 32 output x 32 input
// channels of one tap (a thread 8 x 4) and walks the tile's rows: 3 float4 loads for 32
// multiply-adds per row.
//
// The host plans each direction once per shape (cached; cuda_lte_router_plan.cu): TM (1 .. 8)
// and the passes of each product, the tile length T and the backward's segments, by a small cost model (padding,
// load-to-multiply ratio, halo, dropout draws, shared memory for two blocks per SM, whole waves
// of blocks). At the 0.4B shape: forward T = 120 (128 conv-0 rows: 7% halo), 85 KB of shared
// memory, 2240 blocks; backward T = 64, 16 tiles per block, 256 blocks, 68 KB. Any n_convs <=
// HYLA_LTE_MAX_CONVS, kernel, dilation and head dim whose tile fits in 227 KB runs fused.
//
// The tensor-core form (bf16 mode, HYLA_ROUTER_MMA; cuda_lte_router.cu picks it). On an H100
// the CUDA-core products above took 250 us forward and 510 us backward per call at the 0.4B
// shape (Nsight Compute, B = 4, T = 4096: ~38 ms of a 331 ms step), for ~17 GFLOP forward that
// the tensor cores run in a fraction of it. The reference runs the router under bf16 autocast,
// but plain bf16 operands were too coarse for this project's bar (every CUDA op within 1e-2 of
// its CPU twin in bf16 mode): through six products in a row (three convs, three input gradients),
// grown where silu' is near zero, they put dk and dv up to 1.6e-2 from the exact values. So the
// products that chain run on tf32 operands (10 fraction bits: a rounding 4x finer than bf16's);
// a first version split every operand into bf16 hi + lo (three products per fragment pair, ~16
// bits) and was no faster on an H100 than the CUDA cores (2026-12-07). Everything but the
// products stays: tiles, halos, plans, epilogues (fwd_out, dx_out), dropout masks, slots,
// reduce_kernel, fixed-order sums (the same bits every run), no atomics; the kernels are
// fwd_kernel<true> / bwd_kernel<true> (<false>: the CUDA-core form, unchanged).
//   Precision. Measured in the emulation (tests/gpu/emu/router_emu.cpp, EMU_ROUND_STUDY: the fp64
// twin with one product's operands rounded to bf16 at a time), the forward convs' rounding
// dominated (alone dk 1.5e-2 at d 100, 5.8e-3 at d 64; their activations and weights about
// equally), then the input gradients' (dk ~4e-3 alone; da and weights equally), the weight
// gradients' least (dparams 1e-3 .. 2.3e-3: a product of its own, no chain). So convs and input
// gradients run on tf32 operands (cvt.rna), the weight gradients on plain bf16 ones.
//   Convs and input gradients (run_product_mma): mma.sync m16n8k8 tf32, a warp tile of mt x 16
// rows by nt x 8 output channels in registers (mt x nt in 1x1 .. 2x4 / 4x2, the planner's choice,
// 8 warps as cbw across the channels by rbw down the rows). The activations (da backward) stay
// in fp32 shared memory in the CUDA-core layout (the epilogues and the bias gradients read them
// as they are) and are rounded to tf32 as an A fragment is formed: two 16-byte loads per m-tile
// and 16 channels feed two products, the fragments' k order permuted (lane tig takes channels
// 4 tig .. 4 tig + 3: k = tig, tig + 4 of the first product, then of the second) and its rows
// permuted (mma_row) so that a quarter-warp's loads fill the 32 banks once. The weights are
// staged once per call as B fragments in that same k order, rounded to tf32
// (stage_weights_mma_kernel): a 16-byte load a lane (b0, b1 of both products), a warp's 512
// bytes contiguous; chunks of whole (tap, k-step) units, contiguous runs of the staged layout
// (<= 12 KB, or one unit), by cp.async into two buffers as above. The C fragments reach the
// epilogue 4 channels of a row at a time (a shuffle between the lanes of a pair), after a
// barrier where the output overwrites the input (forward).
//   Weight gradients (weight_partials_mma): the reduction runs down the rows of both operands,
// so both are copied to bf16 (da's own rows into the weight buffers, free by then; conv l's
// dropped-out input where X went) with 16-byte rows an odd number of 16 bytes apart, and both
// fragments load with ldmatrix .trans (4 ldmatrix x4 for 8 mma); a warp tile is 32 output x 32
// input channels of a tap, its C fragments added into the block's slot in fragment order.
//   Cost model: an mma product's time is its shared-memory wavefronts (A: 8 per m-tile and
// unit, B: 4 per n-tile) or its mma (2 per m-tile and n-tile, about a cycle each, a guess),
// whichever is more, in the same thread-step units as above.
//   Measured in the CPU emulation (tests/gpu/emu/run_router.sh, its default shapes), against the
// fp64 twin: at the 0.4B head (d 64, L 300) score 4.8e-4, acts 4.3e-4, dk 1.1e-3, dv 1.2e-3,
// dparams 1.7e-3 (the split form: 7.3e-6, 6.7e-6, 1.7e-5, 1.7e-5, 1.6e-3; plain bf16 operands:
// 4.0e-3, 3.5e-3, 8.9e-3, 9.1e-3, 6.4e-3); the worst shape, d 100: dk 2.3e-3, parameter groups
// up to 3.6e-3. Against the fp64 twin with the same operands (tf32 or bf16) within 9.5e-4 (an
// operand rounds to the neighbouring value where fp32 and fp64 differ).
// Shapes: any the CUDA-core form takes with at most 256 output channels (32 n-tiles for 8 warps),
// whose tile fits; the rest run on the CUDA cores.
#include <stdlib.h>
#include <string.h>

#include <algorithm>

#include <cuda_pipeline.h>

#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_lte_router.cuh"
#include "cuda_lte_router_plan.cuh"
#include "cuda_mma.cuh"

namespace fused {

// ---- device pieces ----
// A thread's walk over rows x groups quads in the order e = row groups + group, e = threadIdx.x,
// + THREADS, ...: row and group carried from step to step, one division a walk rather than one
// a step (a runtime divisor costs ~20 instructions).
struct quad_walk {
    int row, grp, groups, rows_step, grps_step;
    __device__ explicit quad_walk(int groups_)
        : row((int)threadIdx.x / groups_), grp((int)threadIdx.x % groups_), groups(groups_),
          rows_step(THREADS / groups_), grps_step(THREADS % groups_) {}
    __device__ void next() {
        row += rows_step, grp += grps_step;
        if (grp >= groups) grp -= groups, row++;
    }
};
// The n (1 .. 4) floats at p into x (the rest 0), or x into p: one 16-byte access where all
// four are wanted and p is aligned to it, else one by one. A warp's 32 quads of a row are then
// 512 contiguous bytes in 16 accesses, where 4-byte accesses 16 bytes apart used a quarter of
// each sector they moved (Nsight Compute, H100: 58% of the forward's sectors excess).
__device__ inline void load_quad(float (&x)[4], const float *p, int n) {
    if (n == 4 && (reinterpret_cast<uintptr_t>(p) & 15) == 0) {
        const float4 u = load4(p);
        x[0] = u.x, x[1] = u.y, x[2] = u.z, x[3] = u.w;
        return;
    }
    for (int q = 0; q < 4; q++) x[q] = q < n ? p[q] : 0.0f;
}
__device__ inline void store_quad(float *p, const float (&x)[4], int n) {
    if (n == 4 && (reinterpret_cast<uintptr_t>(p) & 15) == 0) return store4(p, x);
    for (int q = 0; q < n; q++) p[q] = x[q];
}
// p[q] += x[q] for the n floats at p (the same accesses as load_quad, then store_quad).
__device__ inline void add_quad(float *p, const float (&x)[4], int n) {
    float s[4];
    load_quad(s, p, n);
    for (int q = 0; q < 4; q++) s[q] += x[q];
    store_quad(p, s, n);
}
__device__ inline void fma4(float (&acc)[4], float x, const float4 &w) {
    acc[0] = fmaf(x, w.x, acc[0]), acc[1] = fmaf(x, w.y, acc[1]);
    acc[2] = fmaf(x, w.z, acc[2]), acc[3] = fmaf(x, w.w, acc[3]);
}

// Channels c0 .. c0 + 3 of conv l's dropped-out input at token t into x (zero outside the
// sequence and past the channels): [k; v] for conv 0, silu(a_l) after.
__device__ inline void input_quad(float (&x)[4], const router_dims &r, int l, int b, int h, int t, int c0,
                                  const float *k, const float *v, const float *acts) {
    const int c = r.c[l], n = min(4, c - c0);
    x[0] = x[1] = x[2] = x[3] = 0;
    if (t < 0 || t >= r.L) return;
    const size_t pos = token_pos(r, b, t, h);
    if (l > 0) {
        load_quad(x, acts + act_of(r, l, b, t, h) + c0, n);
        for (int q = 0; q < n; q++) x[q] = silu(x[q]);
    } else if (c0 + n <= r.d) {
        load_quad(x, k + pos * r.d + c0, n);
    } else if (c0 >= r.d) {
        load_quad(x, v + pos * r.d + c0 - r.d, n);
    } else { // the quad straddles k and v (d not a multiple of 4)
        for (int q = 0; q < n; q++) x[q] = c0 + q < r.d ? k[pos * r.d + c0 + q] : v[pos * r.d + c0 + q - r.d];
    }
    keep_quad(x, r, l, b, t, h, c0, n);
}

// Conv l's dropped-out input at tokens t_first .. t_first + rows - 1 (a row each; zero outside
// the sequence) into X, stride row_stride(c_l), the padding channels up to a multiple of 4 zero;
// tf32: rounded to tf32 (the tensor-core products' operands, rounded once here).
__device__ void load_input(float *X, const router_dims &r, int l, int b, int h, int t_first, int rows, const float *k,
                           const float *v, const float *acts, bool tf32 = false) {
    const int c = r.c[l], groups = round_up(c, 4) / 4, xs = row_stride(c);
    for (quad_walk w(groups); w.row < rows; w.next()) {
        const int row = w.row, c0 = 4 * w.grp;
        float x[4];
        input_quad(x, r, l, b, h, t_first + row, c0, k, v, acts);
        if (tf32)
            for (int q = 0; q < 4; q++) x[q] = __uint_as_float(hyla_mma::to_tf32(x[q]));
        store4(X + (size_t)row * xs + c0, x);
    }
}

// Reduction channels c0 .. c0 + kc - 1 of one head's staged weights wh ([taps][Kp][Np]) into W as
// [taps][kc][Np] (taps contiguous runs of kc * Np floats), by cp.async: one group, landing while
// the previous chunk's products run.
__device__ inline void chunk_issue(float *W, const float *wh, const product &p, int c0, int kc) {
    const int run = kc * p.Np / 4, total = p.taps * run;
    for (int f = threadIdx.x; f < total; f += THREADS)
        __pipeline_memcpy_async(W + 4 * f, wh + ((size_t)(f / run) * p.Kp + c0) * p.Np + 4 * (f % run), 16);
    __pipeline_commit();
}

// acc[j][q] += the chunk's part of out[row0 + j rg][n0 + q]. Rows past the held ones (a pass's
// padding, results never stored) read the last held row.
template <int TM>
__device__ inline void accumulate(float (&acc)[TM][TN], const float *A, int as, int a_rows, const float *W,
                                  const product &p, int c0, int kc, int row0, int n0) {
    for (int i = 0; i < p.taps; i++) {
        const int shift = p.dil * (p.reverse ? p.taps - 1 - i : i);
        int a[TM];
#pragma unroll
        for (int j = 0; j < TM; j++) a[j] = min(row0 + j * p.rg + shift, a_rows - 1) * as + c0;
        const float *w = W + i * kc * p.Np + n0;
        for (int kk = 0; kk < kc; kk += 4) {
            const float4 b0 = load4(w + kk * p.Np), b1 = load4(w + (kk + 1) * p.Np);
            const float4 b2 = load4(w + (kk + 2) * p.Np), b3 = load4(w + (kk + 3) * p.Np);
#pragma unroll
            for (int j = 0; j < TM; j++) {
                const float4 x = load4(A + a[j] + kk);
                fma4(acc[j], x.x, b0), fma4(acc[j], x.y, b1), fma4(acc[j], x.z, b2), fma4(acc[j], x.w, b3);
            }
        }
    }
}

// The product p of A (shared, stride as, a_rows rows) with the staged weights wh, pass by pass;
// each thread hands its rows to epi(row, n0, values[4]). The weight chunks alternate between two
// buffers of w_half floats at W: chunk c + 1 is copied in while chunk c's products run, and one
// barrier per chunk both publishes chunk c and retires the buffer that chunk c + 1 overwrites.
// An in-place epilogue (writing over A) waits for every thread's products first (the planner
// gives such a product one pass).
template <int TM, class Epi>
__device__ void run_product_tm(const product &p, const float *A, int as, int a_rows, float *W, int w_half,
                               const float *wh, const Epi &epi) {
    // a warp holds wc channel groups x 32 / wc neighbouring row groups: its weight loads touch
    // wc float4s, its input loads 32 / wc rows (one shared-memory wavefront each)
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, cb = warp % p.cb, rb = warp / p.cb;
    const int cg = cb * p.wc + lane % p.wc, rgi = rb * (32 / p.wc) + lane / p.wc, n0 = cg * TN;
    const bool active = rb < p.rb && cg < p.ng;
    const int chunks = (p.Kp + p.kc - 1) / p.kc;
    for (int pass = 0; pass < p.passes; pass++) {
        const int row0 = pass * p.rg * TM + rgi;
        float acc[TM][TN];
#pragma unroll
        for (int j = 0; j < TM; j++)
            for (int q = 0; q < TN; q++) acc[j][q] = 0;
        __syncthreads(); // W is no longer read (an earlier product or pass)
        chunk_issue(W, wh, p, 0, min(p.kc, p.Kp));
        for (int c = 0; c < chunks; c++) {
            const int c0 = c * p.kc, kc = min(p.kc, p.Kp - c0);
            float *Wc = W + (c % 2) * w_half;
            __pipeline_wait_prior(0); // this thread's copies of chunk c have landed
            __syncthreads();          // everyone's have (and A is complete); chunk c - 1's buffer is free
            if (c + 1 < chunks) chunk_issue(W + ((c + 1) % 2) * w_half, wh, p, c0 + kc, min(p.kc, p.Kp - c0 - kc));
            if (active) accumulate<TM>(acc, A, as, a_rows, Wc, p, c0, kc, row0, n0);
        }
        if (Epi::in_place) __syncthreads();
        if (active)
#pragma unroll
            for (int j = 0; j < TM; j++) epi(row0 + j * p.rg, n0, acc[j]);
    }
}
template <class Epi>
__device__ void run_product(const product &p, const float *A, int as, int a_rows, float *W, int w_half,
                            const float *wh, const Epi &epi) {
    switch (p.tm) {
    case 1: run_product_tm<1>(p, A, as, a_rows, W, w_half, wh, epi); break;
    case 2: run_product_tm<2>(p, A, as, a_rows, W, w_half, wh, epi); break;
    case 3: run_product_tm<3>(p, A, as, a_rows, W, w_half, wh, epi); break;
    case 4: run_product_tm<4>(p, A, as, a_rows, W, w_half, wh, epi); break;
    case 5: run_product_tm<5>(p, A, as, a_rows, W, w_half, wh, epi); break;
    case 6: run_product_tm<6>(p, A, as, a_rows, W, w_half, wh, epi); break;
    case 7: run_product_tm<7>(p, A, as, a_rows, W, w_half, wh, epi); break;
    default: run_product_tm<8>(p, A, as, a_rows, W, w_half, wh, epi); break;
    }
}

// ---- the products on the tensor cores (bf16 mode) ----
// The same product as run_product, on mma.sync m16n8k8 (tf32 operands, fp32 sums): a warp owns
// mt x 16 rows by nt x 8 output channels and keeps them in registers. A (the activations) stays
// in fp32 shared memory, laid out as for the CUDA cores, and is rounded to tf32 as a fragment is
// formed; B (the weights) is staged in tf32 already in fragment order, so that a lane's B
// fragments are one 16-byte load and a warp's 512 contiguous bytes (no bank conflicts).
//
// The reduction's order within a 16-channel step is free as long as A and B agree: lane 4 g + tig
// takes the 4 contiguous channels 4 tig .. 4 tig + 3 of the step as one 16-byte load, channels
// 4 tig, 4 tig + 1 as k = tig, tig + 4 of the first m16n8k8 product (a[0], a[1] / a[2], a[3]),
// 4 tig + 2, 4 tig + 3 as those of the second; the staged B fragments take the same channels in
// the same places. And the fragment's rows are
// free as long as the epilogue is told them: fragment row g is tile row mma_row(g), so that the
// two rows a quarter-warp loads (g = 2 q, 2 q + 1) are 4 rows apart: 4 row_stride(c) floats is
// 16 banks modulo 32 for every c, and the quarter-warp's 8 16-byte loads fill the 32 banks once.

// Units u0 .. u0 + nu - 1 of one head's staged B fragments wh ([taps][K16 / 16][ntt][FRAG]: a
// unit is a (tap, k-step), so that a chunk of units is one contiguous run) into W, by cp.async
// (one group).
__device__ inline void chunk_issue_mma(float *W, const float *wh, const product &p, int u0, int nu) {
    const int unit = p.ntt * FRAG, total = nu * unit / 4; // 16-byte copies
    const float *from = wh + (size_t)u0 * unit;
    for (int f = threadIdx.x; f < total; f += THREADS) __pipeline_memcpy_async(W + 4 * f, from + 4 * f, 16);
    __pipeline_commit();
}

// acc[m][n] += the chunk's part of the warp tile (rows row0 + 16 m + fragment row, n-tile nt0 + n):
// units u0 .. u0 + nu - 1, unit u = tap u / S, k-step u % S (S = K16 / 16). Rows past the held
// ones read the last held row (never stored); channels past the held ones (K up to K16) read as
// zero: their weights are zero, but the shared memory there is not.
// Precision: tf32 operands (10 fraction bits, to nearest: cvt.rna for the activations as the
// fragment is formed, the weights staged so), fp32 sums: two m16n8k8 products per 16-channel
// step, the lane's channels 4 tig, 4 tig + 1 in the first (k = tig, tig + 4), 4 tig + 2,
// 4 tig + 3 in the second.
// A_TF32: A holds tf32 values already (the forward's conv inputs, rounded where they are
// written: the same operands without a rounding per product and n-tile pass, which Nsight Compute
// counted at 8.7% of the forward's instructions); else A's fp32 values are rounded here.
// FULL_NT: the warp's NT n-tiles all exist (the check per product hoisted out of the loops).
template <int MT, int NT, bool A_TF32, bool FULL_NT>
__device__ inline void accumulate_mma(float (&acc)[MT][NT][4], const float *A, int as, int a_rows, const float *W,
                                      const product &p, int u0, int nu, int row0, int nt0) {
    using namespace hyla_mma;
    const int lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4, held = round_up(p.K, 4), S = p.K16 / 16;
    auto operand = [](float x) { return A_TF32 ? __float_as_uint(x) : to_tf32(x); };
    // the chunk's units tap by tap: tap i, k-steps s .. s_end - 1 (one division per chunk)
    for (int u = u0, i = u0 / S, s = u0 % S; u < u0 + nu; i++, s = 0) {
        const int s_end = min(S, s + u0 + nu - u);
        const int shift = p.dil * (p.reverse ? p.taps - 1 - i : i);
        int lo[MT], hi[MT]; // where this lane's rows g and g + 8 of each m-tile start (32-bit: registers)
#pragma unroll
        for (int m = 0; m < MT; m++) {
            const int row = row0 + 16 * m + mma_row(g) + shift;
            lo[m] = min(row, a_rows - 1) * as + 4 * tig, hi[m] = min(row + 8, a_rows - 1) * as + 4 * tig;
        }
        for (; s < s_end; s++, u++) {
            const int j = u - u0, k = 16 * s;
            const bool in = k + 4 * tig < held;
            // the warp's B fragments of this unit (b0, b1 of the first product, then of the second:
            // one 16-byte load a lane, a warp's 512 contiguous bytes); then an m-tile at a time its
            // two A fragments
            const float *w = W + (j * p.ntt + nt0) * FRAG + 4 * lane;
            uint32_t b[NT][4];
#pragma unroll
            for (int n = 0; n < NT; n++) {
                if (!FULL_NT && nt0 + n >= p.ntt) break; // the last warp column may have fewer n-tiles
                const uint4 v = *reinterpret_cast<const uint4 *>(w + n * FRAG);
                b[n][0] = v.x, b[n][1] = v.y, b[n][2] = v.z, b[n][3] = v.w;
            }
#pragma unroll
            for (int m = 0; m < MT; m++) {
                const float4 x = in ? load4(A + lo[m] + k) : make_float4(0, 0, 0, 0);
                const float4 y = in ? load4(A + hi[m] + k) : make_float4(0, 0, 0, 0);
                const uint32_t a0[4] = {operand(x.x), operand(y.x), operand(x.y), operand(y.y)};
                const uint32_t a1[4] = {operand(x.z), operand(y.z), operand(x.w), operand(y.w)};
#pragma unroll
                for (int n = 0; n < NT; n++) {
                    if (!FULL_NT && nt0 + n >= p.ntt) break;
                    mma_tf32(acc[m][n], a0, b[n][0], b[n][1]), mma_tf32(acc[m][n], a1, b[n][2], b[n][3]);
                }
            }
        }
    }
}

// run_product_tm's passes, chunks and barriers around accumulate_mma. The epilogue takes 4
// neighbouring channels of a row as in the CUDA-core form: in a C fragment lane 4 g + tig holds
// channels 2 tig, 2 tig + 1 of rows g (c[0], c[1]) and g + 8 (c[2], c[3]); the lanes of a pair
// (tig = 2 j, 2 j + 1) swap halves, the even one then holds row g's channels 4 j .. 4 j + 3, the
// odd one row g + 8's.
template <int MT, int NT, class Epi>
__device__ void run_product_mma(const product &p, const float *A, int as, int a_rows, float *W, int w_half,
                                const float *wh, const Epi &epi) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
    const int nt0 = warp % p.cbw * NT, wm = warp / p.cbw;
    const bool odd = lane & 1;
    const int units = p.taps * (p.K16 / 16), chunks = (units + p.kc - 1) / p.kc;
    constexpr bool A_TF32 = Epi::a_tf32;     // A written as tf32 values (the forward's inputs)
    const bool full_nt = nt0 + NT <= p.ntt; // all the warp's n-tiles exist
    for (int pass = 0; pass < p.passes; pass++) {
        const int row0 = pass * p.rpp + wm * 16 * MT;
        const bool active = wm < p.rbw && row0 < p.rows; // the same for the whole warp
        float acc[MT][NT][4];
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int n = 0; n < NT; n++) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0;
        __syncthreads(); // W is no longer read (an earlier product or pass)
        chunk_issue_mma(W, wh, p, 0, min(p.kc, units));
        for (int c = 0; c < chunks; c++) {
            const int u0 = c * p.kc, nu = min(p.kc, units - u0);
            __pipeline_wait_prior(0); // this thread's copies of chunk c have landed
            __syncthreads();          // everyone's have (and A is complete); chunk c - 1's buffer is free
            if (c + 1 < chunks)
                chunk_issue_mma(W + ((c + 1) % 2) * w_half, wh, p, u0 + nu, min(p.kc, units - u0 - nu));
            if (active && full_nt)
                accumulate_mma<MT, NT, A_TF32, true>(acc, A, as, a_rows, W + (c % 2) * w_half, p, u0, nu, row0, nt0);
            else if (active)
                accumulate_mma<MT, NT, A_TF32, false>(acc, A, as, a_rows, W + (c % 2) * w_half, p, u0, nu, row0, nt0);
        }
        if (Epi::in_place) __syncthreads();
        if (!active) continue;
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int n = 0; n < NT && nt0 + n < p.ntt; n++) {
                const float *c = acc[m][n];
                const float x = __shfl_xor_sync(0xffffffffu, odd ? c[0] : c[2], 1);
                const float y = __shfl_xor_sync(0xffffffffu, odd ? c[1] : c[3], 1);
                const float four[TN] = {odd ? x : c[0], odd ? y : c[1], odd ? c[2] : x, odd ? c[3] : y};
                epi(row0 + 16 * m + mma_row(g) + (odd ? 8 : 0), 8 * (nt0 + n) + 4 * (tig / 2), four);
            }
    }
}

// Head h's staged weights for p (the form known when compiled: no test of p.mma).
template <bool MMA> __device__ inline const float *staged(const float *wt, const product &p, int h) {
    if constexpr (MMA) return wt + p.w + (size_t)h * p.taps * (p.K16 / 16) * p.ntt * FRAG;
    else return wt + p.w + (size_t)h * p.taps * p.Kp * p.Np;
}
// The warp tiles the planner may pick (mt x nt; at most 32 accumulators a thread).
template <bool MMA, class Epi>
__device__ void product_of(const product &p, const float *A, int as, int a_rows, float *W, int w_half,
                           const float *wh, const Epi &epi) {
    if constexpr (!MMA) {
        run_product(p, A, as, a_rows, W, w_half, wh, epi);
    } else {
        switch (p.mt * 10 + p.nt) {
        case 11: run_product_mma<1, 1>(p, A, as, a_rows, W, w_half, wh, epi); break;
        case 12: run_product_mma<1, 2>(p, A, as, a_rows, W, w_half, wh, epi); break;
        case 14: run_product_mma<1, 4>(p, A, as, a_rows, W, w_half, wh, epi); break;
        case 21: run_product_mma<2, 1>(p, A, as, a_rows, W, w_half, wh, epi); break;
        case 22: run_product_mma<2, 2>(p, A, as, a_rows, W, w_half, wh, epi); break;
        case 24: run_product_mma<2, 4>(p, A, as, a_rows, W, w_half, wh, epi); break;
        case 41: run_product_mma<4, 1>(p, A, as, a_rows, W, w_half, wh, epi); break;
        default: run_product_mma<4, 2>(p, A, as, a_rows, W, w_half, wh, epi); break;
        }
    }
}

// ---- forward ----
// Conv l's outputs: a_{l+1} of the tile's own rows to acts; in place of the input, the next conv's
// input (SiLU, then its dropout), or u_n before the projection; zero outside the sequence.
template <bool TF32> struct fwd_out {
    static constexpr bool in_place = true;
    static constexpr bool a_tf32 = TF32; // TF32 (the tensor-core form): the next conv's input as tf32
    const fwd_plan *pl;
    float *X, *acts;
    const float *params;
    int l, b, h, t0;
    __device__ void operator()(int row, int n0, const float (&a)[TN]) const {
        const router_dims &r = pl->r;
        const int c = r.c[l + 1], before = pl->lsum[l + 1], t = t0 - before + row;
        if (row >= pl->rows[l + 1]) return;
        const bool inside = t >= 0 && t < r.L, own = inside && row >= before && row < before + pl->T;
        const float *bias = params + r.b[l] + (size_t)h * c;
        float u[4] = {0, 0, 0, 0}, pre[4] = {0, 0, 0, 0};
        if (inside) {
            const int n = min(TN, c - n0);
            for (int q = 0; q < n; q++) {
                pre[q] = a[q] + bias[n0 + q];
                u[q] = silu(pre[q]);
            }
            if (l + 1 < r.n) {
                keep_quad(u, r, l + 1, b, t, h, n0, n);
                if (TF32)
                    for (int q = 0; q < n; q++) u[q] = __uint_as_float(hyla_mma::to_tf32(u[q]));
            }
            if (own) store_quad(acts + act_of(r, l + 1, b, t, h) + n0, pre, n);
        }
        store4(X + (size_t)row * row_stride(c) + n0, u);
    }
};

// z and the score for the tile's own tokens from u_n (row i = token t0 + i).
__device__ void project(float *score, float *acts, const float *U, const float *params, const fwd_plan &pl, int b,
                        int h, int t0) {
    const router_dims &r = pl.r;
    const int c = r.c[r.n], us = row_stride(c);
    const float *w = params + r.pw + (size_t)h * c;
    const float bias = params[r.pb + h];
    for (int i = threadIdx.x; i < pl.T && t0 + i < r.L; i += THREADS) {
        const size_t pos = token_pos(r, b, t0 + i, h);
        float z = bias;
        for (int j = 0; j < c; j++) z += w[j] * U[(size_t)i * us + j];
        acts[act_of(r, r.n + 1, b, t0 + i, h)] = z;
        score[pos] = sig(z) - 0.5f;
    }
}

template <bool MMA>
__global__ void __launch_bounds__(THREADS, 2)
    fwd_kernel(float *score, float *acts, const float *k, const float *v, const float *params, const float *wt,
               const __grid_constant__ fwd_plan pl) {
    extern __shared__ __align__(16) float smem[];
    float *X = smem, *W = smem + pl.act_floats;
    const router_dims &r = pl.r;
    const int h = blockIdx.y, b = blockIdx.z, t0 = blockIdx.x * pl.T;
    load_input(X, r, 0, b, h, t0 - pl.lsum[0], pl.rows[0], k, v, acts, MMA);
    for (int l = 0; l < r.n; l++) {
        const product &p = pl.prod.p[l];
        const fwd_out<MMA> epi{&pl, X, acts, params, l, b, h, t0};
        product_of<MMA>(p, X, row_stride(r.c[l]), pl.rows[l], W, pl.w_floats / 2, staged<MMA>(wt, p, h), epi);
    }
    __syncthreads();
    project(score, acts, X, params, pl, b, h, t0);
}

// ---- backward ----
// The gradient at the projection: dz per row; da_n (at the last conv's pre-activation) into P
// for rows 0 .. prows[n] - 1 (token t0 - hb[n] + row); dz silu(a_n) of the tile's own rows into
// G (the projection weight's gradient terms). Zero outside the sequence.
__device__ void projection_backward(float *P, float *G, float *dz, const bwd_plan &pl, const float *dscore,
                                    const float *acts, const float *params, int b, int h, int t0) {
    const router_dims &r = pl.r;
    const int n = r.n, c = r.c[n], rows = pl.prows[n], first = t0 - pl.hb[n], groups = round_up(c, 4) / 4;
    const int ps = row_stride(c);
    for (int i = threadIdx.x; i < rows; i += THREADS) {
        const int t = first + i;
        float g = 0;
        if (t >= 0 && t < r.L) {
            const size_t pos = token_pos(r, b, t, h);
            const float s = sig(acts[act_of(r, n + 1, b, t, h)]);
            g = dscore[pos] * s * (1.0f - s);
        }
        dz[i] = g;
    }
    __syncthreads();
    const float *w = params + r.pw + (size_t)h * c;
    for (quad_walk at(groups); at.row < rows; at.next()) {
        const int i = at.row, c0 = 4 * at.grp, t = first + i;
        float da[4] = {0, 0, 0, 0}, gw[4] = {0, 0, 0, 0};
        if (t >= 0 && t < r.L) {
            float a[4];
            load_quad(a, acts + act_of(r, n, b, t, h) + c0, min(4, c - c0));
            for (int q = 0; q < 4 && c0 + q < c; q++) {
                da[q] = dz[i] * w[c0 + q] * silu_grad(a[q]);
                gw[q] = dz[i] * silu(a[q]);
            }
        }
        store4(P + (size_t)i * ps + c0, da);
        if (i >= pl.hb[n] && i < pl.hb[n] + pl.T) store4(G + (size_t)(i - pl.hb[n]) * ps + c0, gw);
    }
}

// The projection's weight and bias gradients over the tile's own rows (G, dz from above).
__device__ void projection_partials(float *slot, const float *G, const float *dz, const bwd_plan &pl, bool first) {
    const int c = pl.r.c[pl.r.n];
    for (int j = threadIdx.x; j <= c; j += THREADS) {
        if (j < c) add_partial(slot + pl.slot_pw + j, column_total(G + j, row_stride(c), pl.T), first);
        else add_partial(slot + pl.slot_pb, column_total(dz + pl.hb[pl.r.n], 1, pl.T), first);
    }
}

// Conv l's input gradient: da_l = g * mask_l * silu'(a_l) into Q (rows of da_l, zero outside the
// sequence), or for conv 0 g * mask_0 added onto dk, dv for the tile's own tokens (ops_lte.h:
// the attention's gradient is there; each value is the tile's alone, so read, add, write).
struct dx_out {
    static constexpr bool in_place = false;
    static constexpr bool a_tf32 = false; // da in fp32 (bias and weight gradients read it too)
    const bwd_plan *pl;
    float *Q, *dk, *dv;
    const float *acts;
    int l, b, h, t0;
    __device__ void operator()(int row, int n0, const float (&g)[TN]) const {
        const router_dims &r = pl->r;
        const int c = r.c[l];
        if (l == 0) {
            const int t = t0 + row;
            if (row >= pl->T || t >= r.L) return;
            const size_t pos = token_pos(r, b, t, h);
            const int n = min(TN, c - n0);
            float x[4] = {0, 0, 0, 0};
            for (int q = 0; q < n; q++) x[q] = g[q];
            keep_quad(x, r, 0, b, t, h, n0, n);
            if (n0 + n <= r.d) {
                add_quad(dk + pos * r.d + n0, x, n);
            } else if (n0 >= r.d) {
                add_quad(dv + pos * r.d + n0 - r.d, x, n);
            } else { // the quad straddles dk and dv (d not a multiple of 4)
                for (int q = 0; q < n; q++) {
                    if (n0 + q < r.d) dk[pos * r.d + n0 + q] += x[q];
                    else dv[pos * r.d + n0 + q - r.d] += x[q];
                }
            }
            return;
        }
        if (row >= pl->prows[l]) return;
        const int t = t0 - pl->hb[l] + row;
        float da[4] = {0, 0, 0, 0};
        if (t >= 0 && t < r.L) {
            const int n = min(TN, c - n0);
            float a[4];
            load_quad(a, acts + act_of(r, l, b, t, h) + n0, n);
            float gk[4] = {g[0], g[1], g[2], g[3]}; // g times the mask, then silu'(a_l)
            keep_quad(gk, r, l, b, t, h, n0, n);
            for (int q = 0; q < n; q++) da[q] = gk[q] * silu_grad(a[q]);
        }
        store4(Q + (size_t)row * row_stride(c) + n0, da);
    }
};

// Conv l's weight gradient over the tile's own rows, dW[co][ci][i] += sum over rows of
// da_{l+1}[row][co] X[row + dil i][ci] (P: da_{l+1}; X: conv l's input from the tile's first
// token minus its left reach), into the block's slot: warp tile wt, lane, acc[j][q] at
// wt * DW_TILE + j * 128 + lane * 4 + q.
__device__ void weight_partials(float *slot, const float *P, const float *X, const bwd_plan &pl, int l, bool first) {
    const router_dims &r = pl.r;
    const dw_grid g = dw_grid_of(r, l);
    const int cout = r.c[l + 1], cin = r.c[l], ps = row_stride(cout), xs = row_stride(cin);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int wt = warp; wt < g.tiles; wt += THREADS / 32) {
        const int i = wt / (g.cob * g.cib), ob = wt / g.cib % g.cob, ib = wt % g.cib;
        // lanes past the channels compute a copy of the last group (never reduced)
        const int co0 = min((ob * 4 + lane / 8) * DW_CO, round_up(cout, DW_CO) - DW_CO);
        const int ci0 = min((ib * 8 + lane % 8) * DW_CI, round_up(cin, DW_CI) - DW_CI);
        float4 *s = reinterpret_cast<float4 *>(slot + pl.slot_w[l] + (size_t)wt * DW_TILE) + lane;
        float acc[DW_CO][DW_CI];
#pragma unroll
        for (int j = 0; j < DW_CO; j++) {
            const float4 o = first ? make_float4(0, 0, 0, 0) : s[j * 32];
            acc[j][0] = o.x, acc[j][1] = o.y, acc[j][2] = o.z, acc[j][3] = o.w;
        }
        const float *pa = P + (size_t)pl.hb[l + 1] * ps + co0, *xa = X + (size_t)r.dilation[l] * i * xs + ci0;
#pragma unroll 2
        for (int t = 0; t < pl.T; t++) {
            const float4 p0 = load4(pa + (size_t)t * ps), p1 = load4(pa + (size_t)t * ps + 4);
            const float4 x = load4(xa + (size_t)t * xs);
            fma4(acc[0], p0.x, x), fma4(acc[1], p0.y, x), fma4(acc[2], p0.z, x), fma4(acc[3], p0.w, x);
            fma4(acc[4], p1.x, x), fma4(acc[5], p1.y, x), fma4(acc[6], p1.z, x), fma4(acc[7], p1.w, x);
        }
#pragma unroll
        for (int j = 0; j < DW_CO; j++) s[j * 32] = make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
    }
}
// Conv l's bias gradient over the tile's own rows.
__device__ void bias_partials(float *slot, const float *P, const bwd_plan &pl, int l, bool first) {
    const int c = pl.r.c[l + 1], ps = row_stride(c);
    for (int co = threadIdx.x; co < c; co += THREADS)
        add_partial(slot + pl.slot_b[l] + co, column_total(P + (size_t)pl.hb[l + 1] * ps + co, ps, pl.T), first);
}

// ---- the weight gradient on the tensor cores (bf16 mode) ----
// dW[co][ci][i] = sum over the tile's rows t of da[t][co] X[t + dil i][ci] is a product whose
// reduction runs down the rows of both operands: as bf16 copies (rows of 16-byte runs) both
// fragments load with ldmatrix .trans. The copies: da's own rows into Pb (zero to a multiple of
// 16 rows and channels), conv l's dropped-out input into Xb (the same rows as X, zero after).

// Conv l's dropped-out input at tokens t_first .. t_first + rows - 1 as bf16 into Xb (stride
// bf16_stride(c)), zero to `held` rows and to a multiple of 16 channels (load_input's values).
__device__ void load_input_bf16(hyla_mma::bf16 *Xb, const router_dims &r, int l, int b, int h, int t_first, int rows,
                                int held, const float *k, const float *v, const float *acts) {
    const int c = r.c[l], groups = round_up(c, 16) / 4, xs = bf16_stride(c);
    for (quad_walk w(groups); w.row < held; w.next()) {
        const int row = w.row, c0 = 4 * w.grp;
        float x[4];
        input_quad(x, r, l, b, h, row < rows ? t_first + row : -1, c0, k, v, acts);
        store_bf16x4(Xb + (size_t)row * xs + c0, x);
    }
}
// Rows 0 .. rows - 1 of P (c channels, stride row_stride(c)) as bf16 into Pb, zero to `held`
// rows and to a multiple of 16 channels.
__device__ void rows_to_bf16(hyla_mma::bf16 *Pb, const float *P, int c, int rows, int held) {
    const int groups = round_up(c, 16) / 4, ps = row_stride(c), bs = bf16_stride(c);
    for (quad_walk w(groups); w.row < held; w.next()) {
        const int row = w.row, c0 = 4 * w.grp;
        float x[4] = {0, 0, 0, 0};
        if (row < rows)
            for (int q = 0; q < 4 && c0 + q < c; q++) x[q] = P[(size_t)row * ps + c0 + q];
        store_bf16x4(Pb + (size_t)row * bs + c0, x);
    }
}

// weight_partials on the tensor cores from Pb (da, the tile's rows) and Xb: warp tile wt (tap,
// m-block, n-block) at wt * DWM_TILE in the slot, its C fragments in order ((m DWM_NT + n) 32 +
// lane) 4 + element (each lane's float4s contiguous: coalesced).
__device__ void weight_partials_mma(float *slot, const hyla_mma::bf16 *Pb, const hyla_mma::bf16 *Xb,
                                    const bwd_plan &pl, int l, bool first) {
    using namespace hyla_mma;
    const router_dims &r = pl.r;
    const dwm_grid g = dwm_grid_of(r, l);
    const int ps = bf16_stride(r.c[l + 1]), xs = bf16_stride(r.c[l]), steps = round_up(pl.T, 16) / 16;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    // ldmatrix rows of this lane: A (da transposed) matrices (t 0-7 | 8-15) x (co 0-7 | 8-15)
    // in the order of a[0..3]; B (X) matrices (t 0-7 | 8-15) x (ci 0-7 | 8-15): b0, b1 of two n-tiles
    const int a_row = (lane & 7) + 8 * (lane >> 4), a_col = 8 * ((lane >> 3) & 1);
    const int b_row = lane & 15, b_col = 8 * (lane >> 4);
    for (int wt = warp; wt < g.tiles; wt += THREADS / 32) {
        const int i = wt / (g.mb * g.nb), mt0 = wt / g.nb % g.mb * DWM_MT, nt0 = wt % g.nb * DWM_NT;
        float acc[DWM_MT][DWM_NT][4];
#pragma unroll
        for (int m = 0; m < DWM_MT; m++)
#pragma unroll
            for (int n = 0; n < DWM_NT; n++) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0;
        const bf16 *pa = Pb + (size_t)a_row * ps + 16 * mt0 + a_col;
        const bf16 *xb = Xb + (size_t)(r.dilation[l] * i + b_row) * xs + 8 * nt0 + b_col;
        for (int s = 0; s < steps; s++) {
            uint32_t a[DWM_MT][4];
#pragma unroll
            for (int m = 0; m < DWM_MT; m++)
                if (mt0 + m < g.mtiles)
                    ldsm_x4_trans(a[m][0], a[m][1], a[m][2], a[m][3], pa + (size_t)16 * s * ps + 16 * m);
#pragma unroll
            for (int np = 0; np < DWM_NT / 2; np++) {
                if (nt0 + 2 * np >= g.ntiles) break;
                uint32_t b0, b1, b2, b3;
                ldsm_x4_trans(b0, b1, b2, b3, xb + (size_t)16 * s * xs + 16 * np);
#pragma unroll
                for (int m = 0; m < DWM_MT; m++)
                    if (mt0 + m < g.mtiles) mma(acc[m][2 * np], a[m], b0, b1), mma(acc[m][2 * np + 1], a[m], b2, b3);
            }
        }
        float4 *out = reinterpret_cast<float4 *>(slot + pl.slot_w[l] + (size_t)wt * DWM_TILE) + lane;
#pragma unroll
        for (int m = 0; m < DWM_MT; m++)
#pragma unroll
            for (int n = 0; n < DWM_NT; n++) {
                float4 o = first ? make_float4(0, 0, 0, 0) : out[(m * DWM_NT + n) * 32];
                o.x += acc[m][n][0], o.y += acc[m][n][1], o.z += acc[m][n][2], o.w += acc[m][n][3];
                out[(m * DWM_NT + n) * 32] = o;
            }
    }
}

// Shared memory: two buffers for da (P: da_{l+1}, read; Q: da_l, written), conv l's input X, a
// weight chunk, dz. P is chosen so that at conv 0 it is buf0: conv 0's input (the widest) then
// spans buf1 and Xr, free by then.
template <bool MMA>
__global__ void __launch_bounds__(THREADS, 2)
    bwd_kernel(float *dk, float *dv, float *partial, const float *dscore, const float *k, const float *v,
               const float *params, const float *acts, const float *wt, const __grid_constant__ bwd_plan pl) {
    extern __shared__ __align__(16) float smem[];
    const router_dims &r = pl.r;
    const int seg = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    float *buf0 = smem, *buf1 = buf0 + pl.da_floats, *Xr = buf1 + pl.da_floats, *W = Xr + pl.x_floats;
    float *dz = W + pl.w_floats;
    float *slot = partial + (((size_t)b * r.H + h) * pl.segs + seg) * pl.slot_floats;
    const int first_tile = seg * pl.tps, end = min(pl.tiles, first_tile + pl.tps);
    for (int tile = first_tile; tile < end; tile++) {
        const bool first = tile == first_tile;
        const int t0 = tile * pl.T;
        float *P = (r.n - 1) % 2 == 0 ? buf0 : buf1, *Q = P == buf0 ? buf1 : buf0;
        __syncthreads(); // the previous tile is done with every buffer
        projection_backward(P, Q, dz, pl, dscore, acts, params, b, h, t0);
        __syncthreads();
        projection_partials(slot, Q, dz, pl, first);
        for (int l = r.n - 1; l >= 0; l--) {
            const product &p = pl.prod.p[l];
            const dx_out epi{&pl, Q, dk, dv, acts, l, b, h, t0};
            product_of<MMA>(p, P, row_stride(r.c[l + 1]), pl.prows[l + 1], W, pl.w_floats / 2, staged<MMA>(wt, p, h),
                            epi);
            __syncthreads();
            float *X = l > 0 ? Xr : Q;
            if constexpr (MMA) { // bf16 copies: the input where X goes, da's own rows in W (free now)
                const int held = round_up(pl.T, 16), t_first = t0 - left_reach(r, l);
                hyla_mma::bf16 *Xb = reinterpret_cast<hyla_mma::bf16 *>(X), *Pb = reinterpret_cast<hyla_mma::bf16 *>(W);
                load_input_bf16(Xb, r, l, b, h, t_first, pl.T + reach(r, l), held + reach(r, l), k, v, acts);
                rows_to_bf16(Pb, P + (size_t)pl.hb[l + 1] * row_stride(r.c[l + 1]), r.c[l + 1], pl.T, held);
                __syncthreads();
                weight_partials_mma(slot, Pb, Xb, pl, l, first);
            } else {
                load_input(X, r, l, b, h, t0 - left_reach(r, l), pl.T + reach(r, l), k, v, acts);
                __syncthreads();
                weight_partials(slot, P, X, pl, l, first);
            }
            bias_partials(slot, P, pl, l, first);
            float *swap = P;
            P = Q, Q = swap;
        }
    }
}

// The parameter that slot entry o of head h sums, or -1 (padding lanes and channels).
__device__ long long slot_param(const bwd_plan &pl, size_t o, int h) {
    const router_dims &r = pl.r;
    for (int l = 0; l < r.n; l++) {
        const int cout = r.c[l + 1], cin = r.c[l];
        if (pl.prod.mma && o >= pl.slot_w[l] && o < pl.slot_w[l] + (size_t)pl.dw_tiles[l] * DWM_TILE) {
            const dwm_grid g = dwm_grid_of(r, l);
            const size_t rel = o - pl.slot_w[l];
            const int wt = (int)(rel / DWM_TILE), mn = (int)(rel % DWM_TILE / 128), lane = (int)(rel % 128 / 4);
            const int e = (int)(rel % 4), i = wt / (g.mb * g.nb), mb = wt / g.nb % g.mb, nb = wt % g.nb;
            const int co = (mb * DWM_MT + mn / DWM_NT) * 16 + lane / 4 + 8 * (e / 2);
            const int ci = (nb * DWM_NT + mn % DWM_NT) * 8 + 2 * (lane % 4) + e % 2;
            if (co >= cout || ci >= cin) return -1;
            return (long long)(r.w[l] + (((size_t)h * cout + co) * cin + ci) * r.kernel[l] + i);
        }
        if (!pl.prod.mma && o >= pl.slot_w[l] && o < pl.slot_w[l] + (size_t)pl.dw_tiles[l] * DW_TILE) {
            const dw_grid g = dw_grid_of(r, l);
            const size_t rel = o - pl.slot_w[l];
            const int wt = (int)(rel / DW_TILE), j = (int)(rel % DW_TILE / 128), lane = (int)(rel % 128 / 4);
            const int q = (int)(rel % 4), i = wt / (g.cob * g.cib), ob = wt / g.cib % g.cob, ib = wt % g.cib;
            const int co = (ob * 4 + lane / 8) * DW_CO + j, ci = (ib * 8 + lane % 8) * DW_CI + q;
            if (co >= cout || ci >= cin) return -1;
            return (long long)(r.w[l] + (((size_t)h * cout + co) * cin + ci) * r.kernel[l] + i);
        }
        if (o >= pl.slot_b[l] && o < pl.slot_b[l] + (size_t)cout) return (long long)(r.b[l] + (size_t)h * cout + (o - pl.slot_b[l]));
    }
    const int c = r.c[r.n];
    if (o >= pl.slot_pw && o < pl.slot_pw + (size_t)c) return (long long)(r.pw + (size_t)h * c + (o - pl.slot_pw));
    if (o == pl.slot_pb) return (long long)(r.pb + h);
    return -1;
}

// dparams += the slots of head h, summed over batch and segment in that order.
__global__ void reduce_kernel(float *dparams, const float *partial, const __grid_constant__ bwd_plan pl) {
    const size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    const int h = blockIdx.y;
    if (o >= pl.slot_floats) return;
    const long long at = slot_param(pl, o, h);
    if (at < 0) return;
    float s = 0;
    for (int b = 0; b < pl.r.B; b++)
        for (int seg = 0; seg < pl.segs; seg++) s += partial[(((size_t)b * pl.r.H + h) * pl.segs + seg) * pl.slot_floats + o];
    dparams[at] += s;
}

// The conv whose staged weights hold entry e of the staging (-1 past the last).
__device__ inline int staged_conv(const products &prod, const router_dims &r, size_t e) {
    if (e >= prod.total) return -1;
    int l = 0;
    while (l + 1 < r.n && e >= prod.p[l + 1].w) l++;
    return l;
}

// Every conv's weights laid out for its products: [head][tap][Kp][Np], zero-padded.
__global__ void stage_weights_kernel(float *wt, const float *params, const __grid_constant__ router_dims r,
                                     const __grid_constant__ products prod) {
    const size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    const int l = staged_conv(prod, r, e);
    if (l < 0) return;
    const product &p = prod.p[l];
    size_t rest = e - p.w;
    const int nn = (int)(rest % p.Np);
    rest /= p.Np;
    const int kk = (int)(rest % p.Kp);
    rest /= p.Kp;
    const int i = (int)(rest % p.taps), h = (int)(rest / p.taps);
    const int co = prod.backward ? kk : nn, ci = prod.backward ? nn : kk, cin = r.c[l], cout = r.c[l + 1];
    wt[e] = co < cout && ci < cin ? params[r.w[l] + (((size_t)h * cout + co) * cin + ci) * r.kernel[l] + i] : 0.0f;
}

// The same for the tensor-core form: [head][tap][k-step][n-tile][B fragment], a tf32 each
// (register q of lane 4 g + tig: column g of the n-tile, the k-step's channel 4 tig + q, as
// accumulate_mma's A fragments take them: q 0, 1 the first product's b0, b1, q 2, 3 the
// second's).
__global__ void stage_weights_mma_kernel(float *wt, const float *params, const __grid_constant__ router_dims r,
                                         const __grid_constant__ products prod) {
    const size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    const int l = staged_conv(prod, r, e);
    if (l < 0) return;
    const product &p = prod.p[l];
    size_t rest = e - p.w;
    const int q = (int)(rest % 4), lane = (int)(rest / 4 % 32);
    rest /= FRAG;
    const int nt = (int)(rest % p.ntt);
    rest /= p.ntt;
    const int ks = (int)(rest % (p.K16 / 16));
    rest /= p.K16 / 16;
    const int i = (int)(rest % p.taps), h = (int)(rest / p.taps), cin = r.c[l], cout = r.c[l + 1];
    const int nn = nt * 8 + lane / 4, kk = ks * 16 + 4 * (lane % 4) + q;
    const int co = prod.backward ? kk : nn, ci = prod.backward ? nn : kk;
    const float x = co < cout && ci < cin ? params[r.w[l] + (((size_t)h * cout + co) * cin + ci) * r.kernel[l] + i] : 0.0f;
    reinterpret_cast<uint32_t *>(wt)[e] = hyla_mma::to_tf32(x);
}

// Stream-ordered scratch with every conv's weights laid out for prod (cudaFreeAsync it).
static float *staged_weights(const products &prod, const float *params, const router_dims &r) {
    float *wt = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&wt, prod.total * sizeof(float), 0));
    if (prod.mma) stage_weights_mma_kernel<<<blocks_for(prod.total, 256), 256>>>(wt, params, r, prod);
    else stage_weights_kernel<<<blocks_for(prod.total, 256), 256>>>(wt, params, r, prod);
    CUDA_LAUNCH_CHECK();
    return wt;
}

// A kernel of either form with its shared memory (the first launch of each sets its limit).
template <class Kernel> static void allow_smem(Kernel kernel, size_t bytes) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// false: the shape does not fit the fused kernels (the caller takes the per-tap form). mma: the
// tensor-core form where the shape fits it, else the CUDA-core form.
bool forward(float *score, float *acts, const float *k, const float *v, const float *params, const router_dims &r,
             bool mma) {
    fwd_plan pl;
    if (r.B < 1 || r.L < 1) return false;
    mma = mma && forward_plan(&pl, r, true);
    if (!mma && !forward_plan(&pl, r, false)) return false;
    float *wt = staged_weights(pl.prod, params, r);
    const size_t bytes = fwd_smem(pl);
    const dim3 grid(pl.tiles, r.H, r.B);
    if (mma) {
        allow_smem(fwd_kernel<true>, bytes);
        fwd_kernel<true><<<grid, THREADS, bytes>>>(score, acts, k, v, params, wt, pl);
    } else {
        allow_smem(fwd_kernel<false>, bytes);
        fwd_kernel<false><<<grid, THREADS, bytes>>>(score, acts, k, v, params, wt, pl);
    }
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(wt, 0));
    return true;
}

weight_stage::~weight_stage() {
    if (wt) CUDA_CHECK(cudaFreeAsync(wt, 0)); // after the launches queued
}

bool backward(float *dk, float *dv, float *dparams, const float *dscore, const float *k, const float *v,
              const float *params, const float *acts, const router_dims &r, bool mma, weight_stage &stage) {
    bwd_plan pl;
    if (r.B < 1 || r.L < 1) return false;
    mma = mma && backward_plan(&pl, r, true);
    if (!mma && !backward_plan(&pl, r, false)) return false;
    if (!stage.wt || stage.rows != r.B) { // (another plan: stage again)
        if (stage.wt) CUDA_CHECK(cudaFreeAsync(stage.wt, 0));
        stage.wt = staged_weights(pl.prod, params, r), stage.rows = r.B;
    }
    const float *wt = stage.wt;
    float *partial = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&partial, sizeof(float) * pl.slot_floats * r.B * r.H * pl.segs, 0));
    const size_t bytes = bwd_smem(pl);
    const dim3 grid(pl.segs, r.H, r.B);
    if (mma) {
        allow_smem(bwd_kernel<true>, bytes);
        bwd_kernel<true><<<grid, THREADS, bytes>>>(dk, dv, partial, dscore, k, v, params, acts, wt, pl);
    } else {
        allow_smem(bwd_kernel<false>, bytes);
        bwd_kernel<false><<<grid, THREADS, bytes>>>(dk, dv, partial, dscore, k, v, params, acts, wt, pl);
    }
    CUDA_LAUNCH_CHECK();
    reduce_kernel<<<dim3(blocks_for(pl.slot_floats, 256), r.H), 256>>>(dparams, partial, pl);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(partial, 0));
    return true;
}

} // namespace fused
