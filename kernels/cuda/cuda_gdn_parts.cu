// CUDA: the Gated DeltaNet's pieces around the delta rule (short convolution + SiLU, L2
// norm, gates, gated RMSNorm) and RoPE, with the CPU twins' semantics. Per-parameter sums
// (conv weights, gate parameters, norm weights) are column sums in a fixed order
// (cuda_column_sum.cuh): deterministic. With HYLA_NORM_FUSED_DW=1 the conv weights' and the
// gated norm's weights' are summed by the backward kernels that read the rows anyway.
#include "backend_cuda.h"
#include "cuda_bf16_convert.cuh"
#include "cuda_check.h"
#include "cuda_column_sum.cuh"
#include "cuda_switch.h"
#include "cuda_vec.cuh"

enum { THREADS = 256 };

__device__ static float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ static float silu_(float x) { return x * sigmoid_(x); }
__device__ static float silu_grad_(float x) {
    float s = sigmoid_(x);
    return s * (1.0f + x * (1.0f - s));
}
__device__ static float softplus_(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// ---- short convolution + SiLU ---------------------------------------------------------
// A thread owns W channels (W = 4: float4 accesses, where C is a multiple of 4 and the pointers
// aligned; else 1) over a run of up to RUN tokens of one sequence and slides along t: its taps
// stay in registers and so do the last inputs, so each input row is loaded once per thread
// (plus a halo of a few rows per run, mostly from cache), BATCH rows' loads issued together.
// KW is the taps' compile-time bound (4, or HYLA_SHORTCONV_MAX_WIDTH), kw <= KW the real width:
// the windows are indexed by compile-time positions (registers), and tap j multiplies the row
// j tokens back (forward) or ahead (dx) — w[c, kw - 1 - j] — added for j from kw - 1 down to 0,
// i.e. w's index ascending, the CPU twin's order. Rows outside the sequence are zeros in the
// window: adding w * 0 leaves the sum's bits as skipping it does. The backward pass stores no
// dpre = dy silu'(pre): the dx kernel and the dw partials each recompute it from dy and x
// (reading dy and x twice costs less than writing dpre and reading it twice); with
// HYLA_NORM_FUSED_DW=1 one kernel makes dx and dw's partial sums, reading them once.
enum { RUN = 16, BATCH = 4 };
// Grid: x over blocks of runs (several runs a block when a row has fewer than max_slots units),
// y over blocks of max_slots units (channel groups); 32-bit divisions, once per thread. With
// steps > 1 (the fused dw, DW_STEPS) a block takes `steps` blocks of runs, grid.x apart.
struct conv_plan {
    int units, slots, runs_per_seq, runs; // units: channel groups per row; slots: threads per run a block
    int steps;                            // blocks of runs a block takes
    dim3 grid;
};
static conv_plan conv_plan_for(int B, int L, int C, int W, int max_slots = THREADS, int steps = 1) {
    conv_plan p;
    p.units = C / W;
    p.slots = p.units < max_slots ? p.units : max_slots;
    p.runs_per_seq = (L + RUN - 1) / RUN;
    p.runs = B * p.runs_per_seq;
    const int per_block = THREADS / p.slots, run_blocks = (p.runs + per_block - 1) / per_block;
    p.steps = steps;
    p.grid = dim3((unsigned)((run_blocks + steps - 1) / steps), (unsigned)((p.units + p.slots - 1) / p.slots));
    return p;
}
struct conv_site {
    int u, t0, t1; // channel group, tokens [t0, t1) of the sequence
    size_t seq;    // the sequence's first element
};
// This thread's run in block of runs run_block, and its channel group; u = -1 for none.
__device__ static conv_site conv_site_at(const conv_plan &p, int L, int C, int run_block) {
    conv_site s;
    const int run = run_block * (THREADS / p.slots) + threadIdx.x / p.slots;
    s.u = blockIdx.y * p.slots + threadIdx.x % p.slots;
    if (threadIdx.x >= THREADS / p.slots * p.slots || run >= p.runs || s.u >= p.units) s.u = -1;
    const int b = run / p.runs_per_seq;
    s.t0 = (run - b * p.runs_per_seq) * RUN, s.t1 = min(L, s.t0 + RUN);
    s.seq = (size_t)b * L * C;
    return s;
}
__device__ static conv_site conv_site_of(const conv_plan &p, int L, int C) { return conv_site_at(p, L, C, blockIdx.x); }
// tap[j] = w[c, kw - 1 - j] for the W channels of unit u; zero for j >= kw.
template <int KW, int W> __device__ static void conv_taps(floats<W> *tap, const float *w, int u, int kw) {
#pragma unroll
    for (int j = 0; j < KW; j++)
#pragma unroll
        for (int k = 0; k < W; k++) tap[j].v[k] = j < kw ? w[(size_t)(u * W + k) * kw + kw - 1 - j] : 0.0f;
}
// sum over j from kw - 1 down to 0 of tap[j] win[j], channel k.
template <int KW, int W> __device__ static float conv_sum(const floats<W> *tap, const floats<W> *win, int k, int kw) {
    float acc = 0;
#pragma unroll
    for (int j = KW - 1; j >= 0; j--)
        if (j < kw) acc += tap[j].v[k] * win[j].v[k];
    return acc;
}
// win[j - 1] = x[t0 - j] for 0 < j < kw (zeros before the sequence): the window's rows before
// the run, shifted into place by its first step.
template <int KW, int W>
__device__ static void conv_window_before(floats<W> *win, const float *x, const conv_site &s, int units, int kw) {
#pragma unroll
    for (int j = 1; j < KW; j++)
        win[j - 1] =
            j < kw && s.t0 - j >= 0 ? load_unit<W>(x + s.seq, (size_t)(s.t0 - j) * units + s.u) : zero_unit<W>();
}

// y = silu(pre), win[j] holding x[t - j], this thread's run; with Norm (shortconv_l2norm_fwd_kernel)
// each token's output divided by its head's norm as it is stored, rstd written.
struct no_norm {
    __device__ void operator()(floats<4> &, int) const {}
    __device__ void operator()(floats<1> &, int) const {}
};
template <int KW, int W, class Norm>
__device__ static void conv_fwd_run(float *__restrict__ y, const float *__restrict__ x, const floats<W> *tap,
                                    const conv_site &s, int C, int kw, const Norm &norm) {
    floats<W> win[KW];
    const int units = C / W;
    conv_window_before<KW, W>(win, x, s, units, kw);
#pragma unroll
    for (int i0 = 0; i0 < RUN; i0 += BATCH) {
        floats<W> xs[BATCH]; // a batch's loads first, issued together
#pragma unroll
        for (int q = 0; q < BATCH; q++) {
            const int t = s.t0 + i0 + q;
            xs[q] = t < s.t1 ? load_unit<W>(x + s.seq, (size_t)t * units + s.u) : zero_unit<W>();
        }
#pragma unroll
        for (int q = 0; q < BATCH; q++) {
            const int t = s.t0 + i0 + q;
            if (t >= s.t1) break; // (with a norm: the whole warp, one run)
#pragma unroll
            for (int j = KW - 1; j > 0; j--) win[j] = win[j - 1];
            win[0] = xs[q];
            floats<W> o;
#pragma unroll
            for (int k = 0; k < W; k++) o.v[k] = silu_(conv_sum<KW, W>(tap, win, k, kw));
            norm(o, t);
            store_unit<W>(y + s.seq, (size_t)t * units + s.u, o);
        }
    }
}
template <int KW, int W>
__global__ void shortconv_fwd_kernel(float *__restrict__ y, const float *__restrict__ x, const float *__restrict__ w,
                                     conv_plan p, int L, int C, int kw) {
    const conv_site s = conv_site_of(p, L, C);
    if (s.u < 0) return;
    floats<W> tap[KW];
    conv_taps<KW, W>(tap, w, s.u, kw);
    conv_fwd_run<KW, W>(y, x, tap, s, C, kw, no_norm{});
}
// One step of the backward pass's lead position a: xw (xw[j] = x[a - j] after the shift) takes
// x[a]; returns dpre[a] = dy[a] silu'(pre[a]) (xa, dya zeros past the sequence: dpre 0).
template <int KW, int W>
__device__ static floats<W> conv_lead(floats<W> *xw, const floats<W> *tap, const floats<W> &xa, const floats<W> &dya,
                                      int kw) {
#pragma unroll
    for (int j = KW - 1; j > 0; j--) xw[j] = xw[j - 1];
    xw[0] = xa;
    floats<W> d;
#pragma unroll
    for (int k = 0; k < W; k++) d.v[k] = dya.v[k] * silu_grad_(conv_sum<KW, W>(tap, xw, k, kw));
    return d;
}
// dw's terms at position a (the fused dw): acc[j] += dpre[a] x[a - j] for the taps j < kw, those
// before the sequence's start skipped (the CPU twin's order of factors).
template <int KW, int W>
__device__ static void conv_dw_add(floats<W> *acc, const floats<W> &d, const floats<W> *xw, int a, int kw) {
#pragma unroll
    for (int j = 0; j < KW; j++)
        if (j < kw && a >= j)
#pragma unroll
            for (int k = 0; k < W; k++) acc[j].v[k] += d.v[k] * xw[j].v[k];
}
// dx[t] = sum_i w[c,i] dpre[t + kw - 1 - i] (tokens past the sequence: none), with dpre = dy
// silu'(pre) made on the fly rather than stored and read back: a lead position a = t + KW - 1
// runs ahead (conv_lead, its own x window), dp[j] holding dpre[t + j]. A run's first KW - 1
// lead steps make dp before its first output. Each dpre value has the bits the CPU twin's
// conv_dpre gives it (the same sum in the same order), whichever thread makes it. The lead
// steps make dpre[a] once for each a from t0 on: with DW, those of the run's own tokens (a < t1)
// also add dw's terms into acc (conv_dw_add). dx_h: dx's bf16 copy beside it (NULL: none), where
// the model holds dx (the projections' dy: mixer_gdn.c).
template <int KW, int W, bool DW>
__device__ static void conv_dx_run(float *__restrict__ dx, __nv_bfloat16 *__restrict__ dx_h,
                                   const float *__restrict__ dy, const float *__restrict__ x, const floats<W> *tap,
                                   const conv_site &s, int L, int C, int kw, floats<W> *acc) {
    floats<W> xw[KW], dp[KW];
    const int units = C / W;
    conv_window_before<KW, W>(xw, x, s, units, kw);
#pragma unroll
    for (int j = 1; j < KW; j++) { // dpre[t0 + j - 1] into dp[j], shifted into place by the first output step
        const int a = s.t0 + j - 1;
        const size_t e = (size_t)a * units + s.u;
        const floats<W> xa = a < L ? load_unit<W>(x + s.seq, e) : zero_unit<W>();
        const floats<W> da = a < L ? load_unit<W>(dy + s.seq, e) : zero_unit<W>();
        dp[j] = conv_lead<KW, W>(xw, tap, xa, da, kw);
        if (DW && a < s.t1) conv_dw_add<KW, W>(acc, dp[j], xw, a, kw);
    }
#pragma unroll(DW ? 1 : RUN / BATCH) // fused: a loop, for registers (dw's sums take W KW more)
    for (int i0 = 0; i0 < RUN; i0 += BATCH) {
        floats<W> xs[BATCH], ds[BATCH]; // x, dy at the batch's lead positions, loaded together
#pragma unroll
        for (int q = 0; q < BATCH; q++) {
            const int a = s.t0 + i0 + q + KW - 1;
            const bool in = s.t0 + i0 + q < s.t1 && a < L;
            const size_t e = (size_t)a * units + s.u;
            xs[q] = in ? load_unit<W>(x + s.seq, e) : zero_unit<W>();
            ds[q] = in ? load_unit<W>(dy + s.seq, e) : zero_unit<W>();
        }
#pragma unroll
        for (int q = 0; q < BATCH; q++) {
            const int t = s.t0 + i0 + q, a = t + KW - 1;
            if (t >= s.t1) break;
#pragma unroll
            for (int j = 0; j < KW - 1; j++) dp[j] = dp[j + 1];
            dp[KW - 1] = conv_lead<KW, W>(xw, tap, xs[q], ds[q], kw);
            if (DW && a < s.t1) conv_dw_add<KW, W>(acc, dp[KW - 1], xw, a, kw);
            floats<W> o;
#pragma unroll
            for (int k = 0; k < W; k++) o.v[k] = conv_sum<KW, W>(tap, dp, k, kw);
            store_unit<W>(dx + s.seq, (size_t)t * units + s.u, o);
            if (dx_h) store_unit_bf16<W>(dx_h + s.seq, (size_t)t * units + s.u, o);
        }
    }
}
template <int KW, int W>
__global__ void shortconv_dx_kernel(float *__restrict__ dx, __nv_bfloat16 *__restrict__ dx_h,
                                    const float *__restrict__ dy, const float *__restrict__ x,
                                    const float *__restrict__ w, conv_plan p, int L, int C, int kw) {
    const conv_site s = conv_site_of(p, L, C);
    if (s.u < 0) return;
    floats<W> tap[KW];
    conv_taps<KW, W>(tap, w, s.u, kw);
    conv_dx_run<KW, W, false>(dx, dx_h, dy, x, tap, s, L, C, kw, NULL);
}
// The block's partial row of dw (C kw floats at out, dw's layout): run slot q's threads hold in
// acc the sums of their channel group's taps (acc[j]: tap kw - 1 - j); the slots are added in
// order through cols (THREADS / p.slots slots of p.slots W kw floats). A barrier: every thread.
template <int KW, int W>
__device__ static void conv_dw_block_partial(float *out, const floats<W> *acc, float *cols, const conv_plan &p, int C,
                                             int kw) {
    const int runs = THREADS / p.slots, width = p.slots * W * kw, q = threadIdx.x / p.slots;
    const int g = threadIdx.x % p.slots, c0 = blockIdx.y * p.slots * W; // c0: the block's first channel
    if (q < runs && blockIdx.y * p.slots + g < p.units)
#pragma unroll
        for (int j = 0; j < KW; j++)
#pragma unroll
            for (int k = 0; k < W; k++)
                if (j < kw) cols[q * width + (g * W + k) * kw + kw - 1 - j] = acc[j].v[k];
    __syncthreads();
    const int n = min(width, (C - c0) * kw); // the block's channels' columns
    for (int i = threadIdx.x; i < n; i += THREADS) {
        float sum = 0;
        for (int r = 0; r < runs; r++) sum += cols[r * width + i];
        out[(size_t)c0 * kw + i] = sum;
    }
}
// dx as above, and dw's partial sums (HYLA_NORM_FUSED_DW, cuda_column_sum.cuh): the block takes
// p.steps blocks of runs, gridDim.x apart (the grid a function of the shape), its threads
// summing dw's terms of their channels in registers over their runs; then the block's runs in
// order into partial row blockIdx.x (C kw columns, dw's layout; this block's channel groups).
// KW 4 capped at 128 registers, two blocks an SM as the dx kernel (144 uncapped: one).
template <int KW, int W>
__global__ void __launch_bounds__(THREADS, KW <= 4 ? 2 : 1)
    shortconv_dx_dw_kernel(float *__restrict__ partial, float *__restrict__ dx, __nv_bfloat16 *__restrict__ dx_h,
                           const float *__restrict__ dy, const float *__restrict__ x, const float *__restrict__ w,
                           conv_plan p, int L, int C, int kw) {
    extern __shared__ float cols[]; // THREADS / p.slots runs of p.slots W kw: the runs' sums
    floats<W> tap[KW], acc[KW];
    const conv_site first = conv_site_of(p, L, C); // none: none of the later runs either
    if (first.u >= 0) conv_taps<KW, W>(tap, w, first.u, kw);
#pragma unroll
    for (int j = 0; j < KW; j++) acc[j] = zero_unit<W>();
    for (int step = 0; step < p.steps; step++) {
        const conv_site s = conv_site_at(p, L, C, step * gridDim.x + blockIdx.x);
        if (s.u >= 0) conv_dx_run<KW, W, true>(dx, dx_h, dy, x, tap, s, L, C, kw, acc);
    }
    conv_dw_block_partial<KW, W>(partial + (size_t)blockIdx.x * C * kw, acc, cols, p, C, kw);
}
// Launches kernel K<KW, W> for the shape: float4 where C and the pointers allow, KW = 4 for
// the usual widths.
#define CONV_LAUNCH(K, vec4, kw, B, L, C, ...)                                                                         \
    do {                                                                                                               \
        const conv_plan p_ = conv_plan_for(B, L, C, (vec4) ? 4 : 1);                                                   \
        if ((vec4) && (kw) <= 4) K<4, 4><<<p_.grid, THREADS>>>(__VA_ARGS__, p_, L, C, kw);                             \
        else if (vec4) K<HYLA_SHORTCONV_MAX_WIDTH, 4><<<p_.grid, THREADS>>>(__VA_ARGS__, p_, L, C, kw);                \
        else if ((kw) <= 4) K<4, 1><<<p_.grid, THREADS>>>(__VA_ARGS__, p_, L, C, kw);                                  \
        else K<HYLA_SHORTCONV_MAX_WIDTH, 1><<<p_.grid, THREADS>>>(__VA_ARGS__, p_, L, C, kw);                          \
        CUDA_LAUNCH_CHECK();                                                                                           \
    } while (0)
// dw[c,i] += sum over rows (b, t) of dpre[t] x[t - kw + 1 + i]: a thread owns one channel's
// taps and their sums (registers) over a chunk of column_sum::ROWS rows, sliding as the
// kernels above (win[j] = x[r - j]; taps past the sequence's start skipped), dpre = dy silu'(pre)
// recomputed (the CPU twin's conv_dpre, taps in ascending order): a dy and an x load per row,
// coalesced over the channels, BATCH rows' loads issued together; then column_sum's finish adds
// the chunks in order.
template <int KW>
__global__ void shortconv_dw_partials_kernel(float *__restrict__ partial, const float *__restrict__ dy,
                                             const float *__restrict__ x, const float *__restrict__ w, int rows, int L,
                                             int C, int kw) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int r0 = blockIdx.y * column_sum::ROWS, r1 = min(rows, r0 + column_sum::ROWS);
    float tap[KW], win[KW], acc[KW]; // tap[j] = w[c, kw - 1 - j] multiplies win[j] = x[t - j]
#pragma unroll
    for (int j = 0; j < KW; j++) tap[j] = j < kw ? w[(size_t)c * kw + kw - 1 - j] : 0.0f, acc[j] = 0;
    int t = r0 % L; // the next row's token
#pragma unroll
    for (int j = 1; j < KW; j++) win[j - 1] = j < kw && t - j >= 0 ? x[(size_t)(r0 - j) * C + c] : 0.0f;
    for (int rb = r0; rb < r1; rb += BATCH) {
        float xs[BATCH], ds[BATCH];
#pragma unroll
        for (int q = 0; q < BATCH; q++) {
            const bool in = rb + q < r1;
            xs[q] = in ? x[(size_t)(rb + q) * C + c] : 0.0f;
            ds[q] = in ? dy[(size_t)(rb + q) * C + c] : 0.0f;
        }
#pragma unroll
        for (int q = 0; q < BATCH; q++) {
            if (rb + q >= r1) break;
#pragma unroll
            for (int j = KW - 1; j > 0; j--) win[j] = win[j - 1];
            win[0] = xs[q];
            float pre = 0; // taps from the sequence's start on, w's index ascending
#pragma unroll
            for (int j = KW - 1; j >= 0; j--)
                if (j < kw && t >= j) pre += tap[j] * win[j];
            const float d = ds[q] * silu_grad_(pre);
#pragma unroll
            for (int j = 0; j < KW; j++)
                if (j < kw && t >= j) acc[j] += d * win[j];
            t = t + 1 == L ? 0 : t + 1;
        }
    }
    float *out = partial + (size_t)blockIdx.y * C * kw + (size_t)c * kw;
#pragma unroll
    for (int j = 0; j < KW; j++)
        if (j < kw) out[kw - 1 - j] = acc[j];
}
static void cuda_shortconv_silu_fwd(float *y, const float *x, const float *w, int B, int L, int C, int kw) {
    if ((size_t)B * L * C == 0) return;
    const bool vec4 = C % 4 == 0 && aligned16(y) && aligned16(x);
    CONV_LAUNCH(shortconv_fwd_kernel, vec4, kw, B, L, C, y, x, w);
}
// The fused dx and dw (shortconv_dx_dw_kernel): DW_SLOTS threads a run (several runs a block to
// add in shared memory), DW_STEPS blocks of runs a block. At B 4, L 4096, C 1024 (float4): 256
// blocks (two an SM fit) and 64 partial rows of C kw floats, 1 MB (the column sum's: 2 MB).
enum { DW_SLOTS = 64, DW_STEPS = 4 };
template <int KW, int W>
static void shortconv_dx_dw(float *dx, __nv_bfloat16 *dx_h, float *dw, const float *dy, const float *x, const float *w,
                            int B, int L, int C, int kw) {
    const conv_plan p = conv_plan_for(B, L, C, W, DW_SLOTS, DW_STEPS);
    const size_t smem = sizeof(float) * (THREADS / p.slots) * p.slots * W * kw; // at most 32 KB
    column_sum_fused(dw, p.grid.x, C * kw, [&](float *partial) {
        shortconv_dx_dw_kernel<KW, W><<<p.grid, THREADS, smem>>>(partial, dx, dx_h, dy, x, w, p, L, C, kw);
        CUDA_LAUNCH_CHECK();
    });
}
static void cuda_shortconv_silu_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, int B, int L,
                                    int C, int kw) {
    if ((size_t)B * L * C == 0) return;
    __nv_bfloat16 *dx_h = cuda_bf16_copy_target(dx, (size_t)B * L * C);
    const bool vec4 = C % 4 == 0 && aligned16(dx) && aligned16(dy) && aligned16(x) && aligned8(dx_h);
    if (column_sum::fused_dw()) {
        auto *f = vec4 && kw <= 4 ? shortconv_dx_dw<4, 4>
                  : vec4          ? shortconv_dx_dw<HYLA_SHORTCONV_MAX_WIDTH, 4>
                  : kw <= 4       ? shortconv_dx_dw<4, 1>
                                  : shortconv_dx_dw<HYLA_SHORTCONV_MAX_WIDTH, 1>;
        f(dx, dx_h, dw, dy, x, w, B, L, C, kw);
        return;
    }
    CONV_LAUNCH(shortconv_dx_kernel, vec4, kw, B, L, C, dx, dx_h, dy, x, w);
    const int rows = B * L, chunks = (rows + column_sum::ROWS - 1) / column_sum::ROWS;
    float *partial = NULL; // stream-ordered scratch: no device-wide synchronisation
    CUDA_CHECK(cudaMallocAsync((void **)&partial, sizeof(float) * (size_t)chunks * C * kw, 0));
    const dim3 grid(blocks_for((size_t)C, column_sum::THREADS), chunks);
    if (kw <= 4) shortconv_dw_partials_kernel<4><<<grid, column_sum::THREADS>>>(partial, dy, x, w, rows, L, C, kw);
    else
        shortconv_dw_partials_kernel<HYLA_SHORTCONV_MAX_WIDTH><<<grid, column_sum::THREADS>>>(partial, dy, x, w, rows,
                                                                                             L, C, kw);
    CUDA_LAUNCH_CHECK();
    column_sum::finish_kernel<<<blocks_for((size_t)C * kw, column_sum::THREADS), column_sum::THREADS>>>(
        dw, partial, chunks, C * kw);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(partial, 0));
}

// ---- L2 norm ------------------------------------------------------------------------------
// The rows here are one head wide (a head dim, 128 at the 0.4B shape): a warp per row, ROW_WARPS
// rows per block, sums by a fixed shuffle tree (warp_sum), where a block per row would leave
// half its threads idle and climb eight barriers of a shared-memory tree.
enum { ROW_WARPS = 8 };
__device__ static inline float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v; // the same bits in every lane
}
// This warp's row, or -1 past the last.
__device__ static inline long long warp_row(int rows) {
    const long long r = (long long)blockIdx.x * ROW_WARPS + threadIdx.x / 32;
    return r < rows ? r : -1;
}
static unsigned row_blocks(int rows) { return (unsigned)((rows + ROW_WARPS - 1) / ROW_WARPS); }

__global__ void l2norm_fwd_kernel(float *y, float *rstd, const float *x, int rows, int dim, float eps) {
    const long long row = warp_row(rows);
    if (row < 0) return; // whole warps leave: no barrier below is skipped by part of one
    const int lane = threadIdx.x % 32;
    const size_t off = (size_t)row * dim;
    float ss = 0;
    for (int i = lane; i < dim; i += 32) ss += x[off + i] * x[off + i];
    const float r = rsqrtf(warp_sum(ss) + eps);
    if (lane == 0) rstd[row] = r;
    for (int i = lane; i < dim; i += 32) y[off + i] = x[off + i] * r;
}
__global__ void l2norm_bwd_kernel(float *dx, const float *dy, const float *y, const float *rstd, int rows, int dim) {
    const long long row = warp_row(rows);
    if (row < 0) return;
    const int lane = threadIdx.x % 32;
    const size_t off = (size_t)row * dim;
    float dot = 0;
    for (int i = lane; i < dim; i += 32) dot += dy[off + i] * y[off + i];
    dot = warp_sum(dot);
    const float r = rstd[row];
    for (int i = lane; i < dim; i += 32) dx[off + i] = r * (dy[off + i] - dot * y[off + i]);
}
static void cuda_l2norm_fwd(float *y, float *rstd, const float *x, int rows, int dim, float eps) {
    if (rows <= 0) return; // an empty grid is a launch error
    l2norm_fwd_kernel<<<row_blocks(rows), 32 * ROW_WARPS>>>(y, rstd, x, rows, dim, eps);
    CUDA_LAUNCH_CHECK();
}

// ---- short convolution + SiLU + L2 norm (the GDN's q and k) --------------------------------
// shortconv_fwd_kernel's threads with float4 units, where a head is 32 units (head dim 128):
// with C a multiple of 128 a run's 32 lanes of a warp hold one head's channels of the same
// token at each step, so the head's sum of squares is a shuffle tree and each output is stored
// normalised. The convolution's output is never stored and read back (l2norm_fwd's pass: ~44 us
// for [16384 x 1024] on an H100, 24 a laLTE step). Sums: a lane's 4 channels in order, then the
// tree (l2norm_fwd_kernel's lane takes every 32nd channel: other bits, the same bound).
// HYLA_CONV_L2NORM=1 / 0; on by default since its H100 run (2026-12-07 ~22:25,
// docs/gpu-runs/2026-12-07l-h100: laLTE 191.3 -> 190.4 ms a step alone; 58 us a call, the
// convolution alone took 52 and the norm 44).
constexpr bool FUSED_L2_BY_DEFAULT = true;
bool fused_l2_wanted() {
    static const bool on = cuda_switch("HYLA_CONV_L2NORM", FUSED_L2_BY_DEFAULT);
    return on;
}
constexpr int L2_HEAD_DIM = 128, L2_W = 4;
// Token t's output o of this lane's head: o / |o| over the warp (the head), rstd[t's row] by lane 0.
struct head_norm {
    float *rstd; // this sequence's first token's row, then heads a token
    int heads, head;
    float eps;
    __device__ void operator()(floats<L2_W> &o, int t) const {
        float ss = 0;
#pragma unroll
        for (int k = 0; k < L2_W; k++) ss += o.v[k] * o.v[k];
        const float r = rsqrtf(warp_sum(ss) + eps);
#pragma unroll
        for (int k = 0; k < L2_W; k++) o.v[k] *= r;
        if (threadIdx.x % 32 == 0) rstd[(size_t)t * heads + head] = r;
    }
};
template <int KW>
__global__ void shortconv_l2norm_fwd_kernel(float *__restrict__ y, float *__restrict__ rstd,
                                            const float *__restrict__ x, const float *__restrict__ w, conv_plan p,
                                            int L, int C, int kw, float eps) {
    const conv_site s = conv_site_of(p, L, C);
    if (s.u < 0) return; // whole warps (C / 4 and the block's slots are multiples of 32)
    floats<L2_W> tap[KW];
    conv_taps<KW, L2_W>(tap, w, s.u, kw);
    const int heads = C / L2_HEAD_DIM;
    const head_norm norm{rstd + s.seq / C * heads, heads, s.u / (L2_HEAD_DIM / L2_W), eps};
    conv_fwd_run<KW, L2_W>(y, x, tap, s, C, kw, norm);
}
static void cuda_shortconv_silu_l2norm_fwd(float *y, float *rstd, const float *x, const float *w, int B, int L, int C,
                                           int kw, int head_dim, float eps) {
    if ((size_t)B * L * C == 0) return;
    const bool fused =
        fused_l2_wanted() && head_dim == L2_HEAD_DIM && C % L2_HEAD_DIM == 0 && aligned16(y) && aligned16(x);
    if (!fused) { // the two ops, the norm in place (each row read before it is written)
        cuda_shortconv_silu_fwd(y, x, w, B, L, C, kw);
        cuda_l2norm_fwd(y, rstd, y, (int)((size_t)B * L * C / head_dim), head_dim, eps);
        return;
    }
    const conv_plan p = conv_plan_for(B, L, C, L2_W);
    if (kw <= 4) shortconv_l2norm_fwd_kernel<4><<<p.grid, THREADS>>>(y, rstd, x, w, p, L, C, kw, eps);
    else shortconv_l2norm_fwd_kernel<HYLA_SHORTCONV_MAX_WIDTH><<<p.grid, THREADS>>>(y, rstd, x, w, p, L, C, kw, eps);
    CUDA_LAUNCH_CHECK();
}
void cuda_l2norm_bwd(float *dx, const float *dy, const float *y, const float *rstd, int rows, int dim) {
    if (rows <= 0) return;
    l2norm_bwd_kernel<<<row_blocks(rows), 32 * ROW_WARPS>>>(dx, dy, y, rstd, rows, dim);
    CUDA_LAUNCH_CHECK();
}

// ---- gates --------------------------------------------------------------------------------
// e over [rows, H]; the logits (and their gradients) at row stride ld: element (e / H) ld + h.
__global__ void gates_fwd_kernel(float *beta, float *g, const float *bl, const float *al, int ld, const float *A_log,
                                 const float *dt_bias, int rows, int H) {
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)rows * H) return;
    const int h = (int)(e % H);
    const size_t le = e / H * ld + h;
    beta[e] = sigmoid_(bl[le]);
    g[e] = -expf(A_log[h]) * softplus_(al[le] + dt_bias[h]);
}
__global__ void gates_bwd_kernel(float *dbl, float *dal, const float *dbeta, const float *dg, const float *bl,
                                 const float *al, int ld, const float *A_log, const float *dt_bias, int rows, int H) {
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)rows * H) return;
    const int h = (int)(e % H);
    const size_t le = e / H * ld + h;
    float s = sigmoid_(bl[le]), z = al[le] + dt_bias[h];
    dbl[le] = dbeta[e] * s * (1.0f - s);
    dal[le] = -dg[e] * expf(A_log[h]) * (z > 20.0f ? 1.0f : sigmoid_(z));
}
// per head, summed over rows: ddt_bias += sum da; dA_log += sum dg * g
struct dt_bias_term {
    const float *dal;
    int ld;
    __device__ float operator()(int r, int h) const { return dal[(size_t)r * ld + h]; }
};
struct A_log_term {
    const float *dg, *al, *A_log, *dt_bias;
    int ld, H;
    __device__ float operator()(int r, int h) const {
        return dg[(size_t)r * H + h] * (-expf(A_log[h]) * softplus_(al[(size_t)r * ld + h] + dt_bias[h]));
    }
};
static void cuda_gdn_gates_fwd(float *beta, float *g, const float *bl, const float *al, int ld, const float *A_log,
                               const float *dt_bias, int rows, int H) {
    if ((size_t)rows * H == 0) return;
    gates_fwd_kernel<<<blocks_for((size_t)rows * H, THREADS), THREADS>>>(beta, g, bl, al, ld, A_log, dt_bias, rows, H);
    CUDA_LAUNCH_CHECK();
}
static void cuda_gdn_gates_bwd(float *dbl, float *dal, float *dA_log, float *ddt_bias, const float *dbeta,
                               const float *dg, const float *bl, const float *al, int ld, const float *A_log,
                               const float *dt_bias, int rows, int H) {
    if ((size_t)rows * H == 0) return;
    gates_bwd_kernel<<<blocks_for((size_t)rows * H, THREADS), THREADS>>>(dbl, dal, dbeta, dg, bl, al, ld, A_log,
                                                                         dt_bias, rows, H);
    CUDA_LAUNCH_CHECK();
    column_sum_add(ddt_bias, rows, H, dt_bias_term{dal, ld});
    column_sum_add(dA_log, rows, H, A_log_term{dg, al, A_log, dt_bias, ld, H});
}

// ---- gated RMSNorm ------------------------------------------------------------------------
// A warp per row, as the L2 norm's. Rows of up to 32 ROW_ITEMS units (W = 4: float4 accesses,
// where dim is a multiple of 4 and the pointers aligned; else W = 1) are held in registers,
// lane l owning units l, l + 32, ...: each array is read once (the backward pass reads dy, x
// and gate once, computes the sigmoid once for silu and silu'); wider rows loop over the row
// twice (the _wide kernels). Per element the arithmetic is the _wide kernels' (the same
// expressions; the sums only group by unit before the shuffle tree).
enum { ROW_ITEMS = 8 };
template <int ITEMS, int W>
__global__ void gated_rmsnorm_fwd_rows_kernel(float *y, __nv_bfloat16 *y_h, float *rstd, const float *x,
                                              const float *gate, const float *w, int rows, int dim, float eps) {
    const long long row = warp_row(rows);
    if (row < 0) return;
    const int lane = threadIdx.x % 32, units = dim / W;
    const size_t off = (size_t)row * dim;
    floats<W> xv[ITEMS];
    float ss = 0;
#pragma unroll
    for (int j = 0; j < ITEMS; j++) {
        const int u = j * 32 + lane;
        xv[j] = u < units ? load_unit<W>(x + off, u) : zero_unit<W>();
#pragma unroll
        for (int k = 0; k < W; k++) ss += xv[j].v[k] * xv[j].v[k];
    }
    const float r = rsqrtf(warp_sum(ss) / dim + eps);
    if (lane == 0) rstd[row] = r;
#pragma unroll
    for (int j = 0; j < ITEMS; j++) {
        const int u = j * 32 + lane;
        if (u >= units) continue;
        const floats<W> g = load_unit<W>(gate + off, u), wu = load_unit<W>(w, u);
        floats<W> o;
#pragma unroll
        for (int k = 0; k < W; k++) o.v[k] = xv[j].v[k] * r * wu.v[k] * silu_(g.v[k]);
        store_unit<W>(y + off, u, o);
        if (y_h) store_unit_bf16<W>(y_h + off, u, o);
    }
}
// One row's backward pass by its warp; with DW, its weight gradient terms dy n silu(gate), n = x
// r (the CPU twin's dweight term, (dy x r) silu(gate)), added into acc, the lane's own columns.
template <int ITEMS, int W, bool DW>
__device__ static void gated_rmsnorm_bwd_row(float *dx, float *dgate, __nv_bfloat16 *dgate_h, const float *dy,
                                             const float *x,
                                             const float *gate, const float *w, const float *rstd, long long row,
                                             int dim, floats<W> *acc) {
    const int lane = threadIdx.x % 32, units = dim / W;
    const size_t off = (size_t)row * dim;
    const float r = rstd[row];
    floats<W> dyv[ITEMS], xv[ITEMS], gv[ITEMS], sg[ITEMS]; // sg: sigmoid(gate)
    float c = 0;
#pragma unroll
    for (int j = 0; j < ITEMS; j++) {
        const int u = j * 32 + lane;
        dyv[j] = xv[j] = gv[j] = sg[j] = zero_unit<W>();
        if (u >= units) continue;
        dyv[j] = load_unit<W>(dy + off, u), xv[j] = load_unit<W>(x + off, u), gv[j] = load_unit<W>(gate + off, u);
        const floats<W> wu = load_unit<W>(w, u);
#pragma unroll
        for (int k = 0; k < W; k++) {
            sg[j].v[k] = sigmoid_(gv[j].v[k]);
            c += dyv[j].v[k] * wu.v[k] * (gv[j].v[k] * sg[j].v[k]) * xv[j].v[k] * r;
            if (DW) acc[j].v[k] += dyv[j].v[k] * xv[j].v[k] * r * (gv[j].v[k] * sg[j].v[k]); // silu_(g)
        }
    }
    c = warp_sum(c) / dim;
#pragma unroll
    for (int j = 0; j < ITEMS; j++) {
        const int u = j * 32 + lane;
        if (u >= units) continue;
        const floats<W> wu = load_unit<W>(w, u);
        floats<W> ox, og;
#pragma unroll
        for (int k = 0; k < W; k++) {
            const float s = sg[j].v[k], g = gv[j].v[k], n = xv[j].v[k] * r;
            const float dn = dyv[j].v[k] * wu.v[k] * (g * s);              // silu_(g)
            ox.v[k] = r * (dn - n * c);
            og.v[k] = dyv[j].v[k] * wu.v[k] * n * (s * (1.0f + g * (1.0f - s))); // silu_grad_(g)
        }
        store_unit<W>(dx + off, u, ox), store_unit<W>(dgate + off, u, og);
        if (dgate_h) store_unit_bf16<W>(dgate_h + off, u, og);
    }
}
template <int ITEMS, int W>
__global__ void gated_rmsnorm_bwd_rows_kernel(float *dx, float *dgate, __nv_bfloat16 *dgate_h, const float *dy,
                                              const float *x,
                                              const float *gate, const float *w, const float *rstd, int rows,
                                              int dim) {
    const long long row = warp_row(rows);
    if (row < 0) return;
    gated_rmsnorm_bwd_row<ITEMS, W, false>(dx, dgate, dgate_h, dy, x, gate, w, rstd, row, dim, NULL);
}
// The rows kernel and the weight gradient's partial sums (HYLA_NORM_FUSED_DW, cuda_column_sum.cuh):
// the grid (a function of the shape) strides over blocks of ROW_WARPS rows, each warp summing
// the rows it takes in registers; then the block's warps in order into partial row blockIdx.x.
template <int ITEMS, int W>
__global__ void gated_rmsnorm_bwd_dw_rows_kernel(float *partial, float *dx, float *dgate, __nv_bfloat16 *dgate_h,
                                                 const float *dy,
                                                 const float *x, const float *gate, const float *w,
                                                 const float *rstd, int rows, int dim) {
    extern __shared__ float cols[]; // ROW_WARPS rows of dim: the warps' sums
    floats<W> acc[ITEMS];
#pragma unroll
    for (int j = 0; j < ITEMS; j++) acc[j] = zero_unit<W>();
    const long long stride = (long long)gridDim.x * ROW_WARPS;
    for (long long row = (long long)blockIdx.x * ROW_WARPS + threadIdx.x / 32; row < rows; row += stride)
        gated_rmsnorm_bwd_row<ITEMS, W, true>(dx, dgate, dgate_h, dy, x, gate, w, rstd, row, dim, acc);
    column_sum::block_partial<ITEMS, W>(partial + (size_t)blockIdx.x * dim, acc, cols, dim, 32);
}
__global__ void gated_rmsnorm_fwd_wide_kernel(float *y, __nv_bfloat16 *y_h, float *rstd, const float *x,
                                              const float *gate, const float *w, int rows, int dim, float eps) {
    const long long row = warp_row(rows);
    if (row < 0) return;
    const int lane = threadIdx.x % 32;
    const size_t off = (size_t)row * dim;
    float ss = 0;
    for (int i = lane; i < dim; i += 32) ss += x[off + i] * x[off + i];
    const float r = rsqrtf(warp_sum(ss) / dim + eps);
    if (lane == 0) rstd[row] = r;
    for (int i = lane; i < dim; i += 32) {
        y[off + i] = x[off + i] * r * w[i] * silu_(gate[off + i]);
        if (y_h) y_h[off + i] = __float2bfloat16(y[off + i]);
    }
}
__global__ void gated_rmsnorm_bwd_wide_kernel(float *dx, float *dgate, __nv_bfloat16 *dgate_h, const float *dy,
                                              const float *x,
                                              const float *gate, const float *w, const float *rstd, int rows,
                                              int dim) {
    const long long row = warp_row(rows);
    if (row < 0) return;
    const int lane = threadIdx.x % 32;
    const size_t off = (size_t)row * dim;
    const float r = rstd[row];
    float c = 0;
    for (int i = lane; i < dim; i += 32) c += dy[off + i] * w[i] * silu_(gate[off + i]) * x[off + i] * r;
    c = warp_sum(c) / dim;
    for (int i = lane; i < dim; i += 32) {
        float n = x[off + i] * r, dn = dy[off + i] * w[i] * silu_(gate[off + i]);
        dx[off + i] = r * (dn - n * c);
        dgate[off + i] = dy[off + i] * w[i] * n * silu_grad_(gate[off + i]);
        if (dgate_h) dgate_h[off + i] = __float2bfloat16(dgate[off + i]);
    }
}
// Units of W floats a lane holds for a row of dim floats: 1, 2, 3, 4 or ROW_ITEMS (the
// instantiated counts); 0: too wide for the registers.
static int row_items(int dim, int W) {
    const int items = (dim / W + 31) / 32;
    return items > ROW_ITEMS ? 0 : items > 4 ? ROW_ITEMS : items < 1 ? 1 : items;
}
template <int I, int W>
static void gated_rmsnorm_fwd_rows(float *y, __nv_bfloat16 *y_h, float *rstd, const float *x, const float *gate,
                                   const float *w, int rows, int dim, float eps) {
    gated_rmsnorm_fwd_rows_kernel<I, W><<<row_blocks(rows), 32 * ROW_WARPS>>>(y, y_h, rstd, x, gate, w, rows, dim,
                                                                              eps);
    CUDA_LAUNCH_CHECK();
}
// dw: NULL, dx and dgate only; else also dw += the weight gradient (the _dw_ kernel).
template <int I, int W>
static void gated_rmsnorm_bwd_rows(float *dx, float *dgate, __nv_bfloat16 *dgate_h, float *dw, const float *dy,
                                   const float *x, const float *gate, const float *w, const float *rstd, int rows,
                                   int dim) {
    if (!dw) {
        gated_rmsnorm_bwd_rows_kernel<I, W><<<row_blocks(rows), 32 * ROW_WARPS>>>(dx, dgate, dgate_h, dy, x, gate, w,
                                                                                  rstd, rows, dim);
        CUDA_LAUNCH_CHECK();
        return;
    }
    const unsigned blocks = column_sum::fused_blocks(rows, ROW_WARPS);
    const size_t smem = sizeof(float) * ROW_WARPS * dim; // at most 8 x 1024 floats: 32 KB
    column_sum_fused(dw, blocks, dim, [&](float *partial) {
        gated_rmsnorm_bwd_dw_rows_kernel<I, W><<<blocks, 32 * ROW_WARPS, smem>>>(partial, dx, dgate, dgate_h, dy, x,
                                                                                 gate, w, rstd, rows, dim);
        CUDA_LAUNCH_CHECK();
    });
}
// The instantiation of F<I, W> for `items` (1, 2, 3, 4 or ROW_ITEMS).
#define ROW_ITEMS_PICK(F, items, W)                                                                                    \
    ((items) == 1   ? F<1, W>                                                                                          \
     : (items) == 2 ? F<2, W>                                                                                          \
     : (items) == 3 ? F<3, W>                                                                                          \
     : (items) == 4 ? F<4, W>                                                                                          \
                    : F<ROW_ITEMS, W>)
struct gated_rmsnorm_dw_term {
    const float *dy, *x, *gate, *rstd;
    int dim;
    __device__ float operator()(int r, int i) const {
        const size_t e = (size_t)r * dim + i;
        return dy[e] * x[e] * rstd[r] * silu_(gate[e]);
    }
};
static void cuda_gated_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *gate, const float *w, int rows,
                                   int dim, float eps) {
    if (rows <= 0) return;
    __nv_bfloat16 *y_h = cuda_bf16_copy_target(y, (size_t)rows * dim); // the o_proj's operand (mixer_gdn.c)
    const bool vec4 = dim % 4 == 0 && aligned16(y) && aligned16(x) && aligned16(gate) && aligned16(w) && aligned8(y_h);
    const int items = row_items(dim, vec4 ? 4 : 1);
    if (items == 0) {
        gated_rmsnorm_fwd_wide_kernel<<<row_blocks(rows), 32 * ROW_WARPS>>>(y, y_h, rstd, x, gate, w, rows, dim, eps);
        CUDA_LAUNCH_CHECK();
    } else if (vec4) ROW_ITEMS_PICK(gated_rmsnorm_fwd_rows, items, 4)(y, y_h, rstd, x, gate, w, rows, dim, eps);
    else ROW_ITEMS_PICK(gated_rmsnorm_fwd_rows, items, 1)(y, y_h, rstd, x, gate, w, rows, dim, eps);
}
// dw += sum over rows of dy n silu(gate): with HYLA_NORM_FUSED_DW the rows kernels add its
// partial sums as they read dy, x and gate; else (and for rows too wide for the registers) a
// column sum reads them again.
static void cuda_gated_rmsnorm_bwd(float *dx, float *dgate, float *dw, const float *dy, const float *x,
                                   const float *gate, const float *w, const float *rstd, int rows, int dim) {
    if (rows <= 0) return;
    __nv_bfloat16 *dgate_h = cuda_bf16_copy_target(dgate, (size_t)rows * dim); // the gate projection's dy
    const bool vec4 = dim % 4 == 0 && aligned16(dx) && aligned16(dgate) && aligned16(dy) && aligned16(x) &&
                      aligned16(gate) && aligned16(w) && aligned8(dgate_h);
    const int items = row_items(dim, vec4 ? 4 : 1);
    float *fused_dw = items != 0 && column_sum::fused_dw() ? dw : NULL;
    if (!fused_dw) column_sum_add(dw, rows, dim, gated_rmsnorm_dw_term{dy, x, gate, rstd, dim});
    if (items == 0) {
        gated_rmsnorm_bwd_wide_kernel<<<row_blocks(rows), 32 * ROW_WARPS>>>(dx, dgate, dgate_h, dy, x, gate, w, rstd,
                                                                            rows, dim);
        CUDA_LAUNCH_CHECK();
    } else if (vec4)
        ROW_ITEMS_PICK(gated_rmsnorm_bwd_rows, items, 4)(dx, dgate, dgate_h, fused_dw, dy, x, gate, w, rstd, rows,
                                                         dim);
    else
        ROW_ITEMS_PICK(gated_rmsnorm_bwd_rows, items, 1)(dx, dgate, dgate_h, fused_dw, dy, x, gate, w, rstd, rows,
                                                         dim);
}

// ---- RoPE (rotate-half); sign -1 is the backward pass ---------------------------------------
// A thread owns W pairs (i, i + d/2) (W = 4: float4 accesses, where d/2 is a multiple of 4 and
// the pointers aligned; else 1) of one token in up to HEADS heads, h = g, g + G, ... (G head
// groups), so its W angles' powf / cosf / sinf serve HEADS heads, and its 2 HEADS loads are
// issued before its stores (y may alias x: each element is read and written by one thread).
// Neighbouring threads take neighbouring pairs, then the next head group: coalesced. Grid: x
// over blocks of tokens (several a block when a token has fewer than THREADS threads), y over
// blocks of THREADS threads of a token; 32-bit divisions, once per thread (tokens B L fit an
// int: B L H d floats would otherwise exceed any GPU's memory).
enum { HEADS = 4 };
struct rope_plan {
    int units, groups, slots, per_token, tokens; // units: W-pair groups a head; slots: threads a token a block
    dim3 grid;
};
static rope_plan rope_plan_for(int B, int L, int H, int d, int W) {
    rope_plan p;
    p.units = d / 2 / W, p.groups = (H + HEADS - 1) / HEADS, p.per_token = p.units * p.groups;
    p.slots = p.per_token < THREADS ? p.per_token : THREADS;
    p.tokens = B * L;
    const int per_block = THREADS / p.slots;
    p.grid = dim3((unsigned)((p.tokens + per_block - 1) / per_block),
                  (unsigned)((p.per_token + p.slots - 1) / p.slots));
    return p;
}
template <int W>
__global__ void rope_kernel(float *y, __nv_bfloat16 *y_h, const float *x, rope_plan p, int L, int H, int d,
                            float theta, int pos0, float sign) {
    const int token = blockIdx.x * (THREADS / p.slots) + threadIdx.x / p.slots;
    const int slot = blockIdx.y * p.slots + threadIdx.x % p.slots;
    if (threadIdx.x >= THREADS / p.slots * p.slots || token >= p.tokens || slot >= p.per_token) return;
    const int g = slot / p.units, u = slot - g * p.units, half = d / 2, t = token % L;
    float c[W], s[W];
#pragma unroll
    for (int k = 0; k < W; k++) {
        const int i = u * W + k;
        const float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)d);
        const float angle = (float)(pos0 + t) * inv_freq;
        c[k] = cosf(angle), s[k] = sign * sinf(angle);
    }
    floats<W> a[HEADS], b[HEADS];
#pragma unroll
    for (int j = 0; j < HEADS; j++) { // every load before any store
        const int h = g + j * p.groups;
        const size_t head = ((size_t)token * H + h) * d;
        if (h < H) a[j] = load_unit<W>(x + head, u), b[j] = load_unit<W>(x + head + half, u);
    }
#pragma unroll
    for (int j = 0; j < HEADS; j++) {
        const int h = g + j * p.groups;
        if (h >= H) continue;
        const size_t head = ((size_t)token * H + h) * d;
        floats<W> lo, hi;
#pragma unroll
        for (int k = 0; k < W; k++) {
            lo.v[k] = a[j].v[k] * c[k] - b[j].v[k] * s[k];
            hi.v[k] = b[j].v[k] * c[k] + a[j].v[k] * s[k];
        }
        store_unit<W>(y + head, u, lo), store_unit<W>(y + head + half, u, hi);
        if (y_h) store_unit_bf16<W>(y_h + head, u, lo), store_unit_bf16<W>(y_h + head + half, u, hi);
    }
}
// y's bf16 copy beside it where the model holds y (q and k: mixer_qkv.c); for an odd d a
// head's last value is in no pair, so the kernel would not write all of y: no copy then.
static void rope(float *y, const float *x, int B, int L, int H, int d, float theta, int pos0, float sign) {
    const int half = d / 2;
    if ((size_t)B * L * H == 0 || half == 0) return;
    __nv_bfloat16 *y_h = d % 2 == 0 ? cuda_bf16_copy_target(y, (size_t)B * L * H * d) : nullptr;
    const bool vec4 = half % 4 == 0 && aligned16(x) && aligned16(y) && aligned8(y_h);
    const rope_plan p = rope_plan_for(B, L, H, d, vec4 ? 4 : 1);
    if (vec4) rope_kernel<4><<<p.grid, THREADS>>>(y, y_h, x, p, L, H, d, theta, pos0, sign);
    else rope_kernel<1><<<p.grid, THREADS>>>(y, y_h, x, p, L, H, d, theta, pos0, sign);
    CUDA_LAUNCH_CHECK();
}
static void cuda_rope_fwd(float *y, const float *x, int B, int L, int H, int d, float theta, int pos0) {
    rope(y, x, B, L, H, d, theta, pos0, 1.0f);
}
static void cuda_rope_bwd(float *dx, const float *dy, int B, int L, int H, int d, float theta, int pos0) {
    rope(dx, dy, B, L, H, d, theta, pos0, -1.0f);
}

extern "C" void cuda_register_gdn_parts(struct hyla_backend *t) {
    t->shortconv_silu_fwd = cuda_shortconv_silu_fwd, t->shortconv_silu_bwd = cuda_shortconv_silu_bwd;
    t->l2norm_fwd = cuda_l2norm_fwd, t->l2norm_bwd = cuda_l2norm_bwd;
    t->shortconv_silu_l2norm_fwd = cuda_shortconv_silu_l2norm_fwd;
    t->gdn_gates_fwd = cuda_gdn_gates_fwd, t->gdn_gates_bwd = cuda_gdn_gates_bwd;
    t->gated_rmsnorm_fwd = cuda_gated_rmsnorm_fwd, t->gated_rmsnorm_bwd = cuda_gated_rmsnorm_bwd;
    t->rope_fwd = cuda_rope_fwd, t->rope_bwd = cuda_rope_bwd;
}
