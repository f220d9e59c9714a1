// CUDA: the chunked gated delta rule, forward pass (MODEL.md §3.4, F1-F6), three launches:
//   prep   (one block per chunk)       gam, A, T = (I + A)^-1, -W, U, and the scaled K, Q
//   state  (one block per (b, h, 32 value columns), in order over the chunks)
//                                      Delta = U - W H_n, H_{n+1} = e^{gam_last} H_n + Ke^T Delta
//   output (one block per chunk)       O = Qs H_n + scale (Q K^T ⊙ E) Delta
// Only the state chain is sequential, 64 times shorter than the token recurrence; it keeps
// its 128 x 32 slice of the state in fp32 shared memory and streams the next chunk's operands
// in (cp.async) while it works on the current one.
// HYLA_GDR_FWD2=1 (FWD2_BY_DEFAULT) swaps the state and output kernels, forward and backward,
// for forms of two blocks per SM: the state chains over 16 value columns a block (twice the
// blocks), the output kernel in 102 KB instead of 119 (out2_kernel). The same bits.
// HYLA_GDR_PREP2=1 (PREP2_BY_DEFAULT) swaps prep_kernel, forward and backward, for prep2_kernel:
// four blocks per SM instead of two, every load of an operand in flight at once. The same bits.
#include <stdint.h>

#include "backend_cuda.h"
#include "cuda_gdr_chunk.cuh"
#include "cuda_switch.h"

namespace gdrc {

scratch alloc_scratch(const dims &d, bool with_t) {
    const size_t nc = (size_t)d.B * d.H * d.nt, ck = nc * CH * d.dkp, cv = nc * CH * d.dvp;
    scratch s{};
    CUDA_CHECK(cudaMallocAsync((void **)&s.gcum, sizeof(float) * nc * CH, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&s.wn, sizeof(bf16) * ck, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&s.ke, sizeof(bf16) * ck, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&s.qs, sizeof(bf16) * ck, 0));
    if (with_t) CUDA_CHECK(cudaMallocAsync((void **)&s.t, sizeof(bf16) * nc * CH * CH, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&s.u, sizeof(float) * cv, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&s.delta, sizeof(bf16) * cv, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&s.states, sizeof(bf16) * nc * d.dkp * d.dvp, 0));
    return s;
}

// The pieces of `saved`, in alloc_scratch's order (and P), each rounded up to 128 bytes.
namespace {
constexpr int PIECES = 9;
struct saved_layout {
    size_t at[PIECES], total; // byte offsets of gcum, wn, ke, qs, t, u, delta, states, p
};
saved_layout layout_of(const dims &d) {
    const size_t nc = (size_t)d.B * d.H * d.nt, ck = nc * CH * d.dkp, cv = nc * CH * d.dvp;
    const size_t bytes[PIECES] = {sizeof(float) * nc * CH, sizeof(bf16) * ck, sizeof(bf16) * ck, sizeof(bf16) * ck,
                                  sizeof(bf16) * nc * CH * CH, sizeof(float) * cv, sizeof(bf16) * cv,
                                  sizeof(bf16) * nc * d.dkp * d.dvp, sizeof(bf16) * nc * CH * CH};
    saved_layout l{};
    for (int i = 0; i < PIECES; i++) l.at[i] = l.total, l.total += carve_size(bytes[i]);
    return l;
}
} // namespace

size_t saved_floats(const dims &d) { return layout_of(d).total / sizeof(float); }

scratch carve_saved(float *base, const dims &d) {
    const saved_layout l = layout_of(d);
    char *p = (char *)base;
    return scratch{(float *)(p + l.at[0]), (bf16 *)(p + l.at[1]), (bf16 *)(p + l.at[2]), (bf16 *)(p + l.at[3]),
                   (bf16 *)(p + l.at[4]), (float *)(p + l.at[5]), (bf16 *)(p + l.at[6]), (bf16 *)(p + l.at[7]),
                   (bf16 *)(p + l.at[8])};
}

void free_scratch(scratch &s) {
    void *all[] = {s.gcum, s.wn, s.ke, s.qs, s.t, s.u, s.delta, s.states};
    for (void *p : all)
        if (p) CUDA_CHECK(cudaFreeAsync(p, 0));
    s = scratch{};
}

namespace {

constexpr size_t PREP_SMEM = 3 * carve_size(sizeof(bf16) * CH * LDH) + carve_size(sizeof(bf16) * CH * LDS) +
                             carve_size(sizeof(float) * CH * LDSF) + carve_size(sizeof(float) * WARPS * 256) +
                             5 * carve_size(sizeof(float) * CH);

// F3: T = (I + A)^-1 for strictly lower A (fp32, 64 x 64, ld LDSF) into Tf, by 16 x 16 blocks:
// the four diagonal blocks D_i = (I + A_ii)^-1 at once (one warp each, forward substitution
// row by row), then the off-diagonal blocks by their distance from the diagonal,
//   T_ij = -D_i sum_{j <= k < i} A_ik T_kj,
// three rounds of small fp32 products instead of 64 dependent rows. xs: 3 * 256 floats.
__device__ void invert_unit_lower(float *Tf, const float *Af, float *xs) {
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    if (warp < 4) {
        const int o = warp * 16, m = lane % 16, half = lane / 16;
        for (int i = 0; i < 16; i++) {
            const float *ai = Af + (o + i) * LDSF + o;
            float sum = 0.0f;
            for (int j = m + 1 + half; j < i; j += 2) sum += ai[j] * Tf[(o + j) * LDSF + o + m];
            sum += __shfl_xor_sync(0xffffffffu, sum, 16);
            if (half == 0) Tf[(o + i) * LDSF + o + m] = m < i ? -ai[m] - sum : (m == i ? 1.0f : 0.0f);
            __syncwarp();
        }
    }
    __syncthreads();
    for (int dist = 1; dist < 4; dist++) {
        const int blocks = 4 - dist;
        for (int e = tid; e < blocks * 256; e += THREADS) { // X_ij = sum_k A_ik T_kj
            const int j = e / 256, i = j + dist, r = (e % 256) / 16, cc = e % 16;
            const float *ar = Af + (16 * i + r) * LDSF;
            float x = 0.0f;
            for (int k = 16 * j; k < 16 * i; k++) x += ar[k] * Tf[k * LDSF + 16 * j + cc];
            xs[e] = x;
        }
        __syncthreads();
        for (int e = tid; e < blocks * 256; e += THREADS) { // T_ij = -D_i X_ij
            const int j = e / 256, i = j + dist, r = (e % 256) / 16, cc = e % 16;
            const float *dr = Tf + (16 * i + r) * LDSF + 16 * i;
            float t = 0.0f;
            for (int m = 0; m < 16; m++) t += dr[m] * xs[j * 256 + m * 16 + cc];
            Tf[(16 * i + r) * LDSF + 16 * j + cc] = -t;
        }
        __syncthreads();
    }
}

// F1-F4 for chunk blockIdx.x of (b, h) = blockIdx.y.
__global__ void __launch_bounds__(THREADS) prep_kernel(scratch s, const float *q, const float *k, const float *v,
                                                       const float *beta, const float *g, dims d) {
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Kh = sc.take<bf16>(CH * LDH), *Xh = sc.take<bf16>(CH * LDH), *Vh = sc.take<bf16>(CH * LDH);
    bf16 *Th = sc.take<bf16>(CH * LDS);
    float *Af = sc.take<float>(CH * LDSF), *stage = sc.take<float>(WARPS * 256);
    float *gc = sc.take<float>(CH), *bt = sc.take<float>(CH), *eg = sc.take<float>(CH), *el = sc.take<float>(CH);
    float *fk = sc.take<float>(CH);
    float *Tf = (float *)Kh; // K is dead once K K^T is formed (same size: 64 x 136 bf16 = 64 x 68 fp32)
    const int n = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H, tid = threadIdx.x;
    const int t0 = n * CH, c = min(CH, d.L - t0), dkp = d.dkp, dvp = d.dvp;
    const size_t cb = (size_t)bh * d.nt + n, row0 = ((size_t)b * d.L + t0) * d.H + h;
    const size_t sk = (size_t)d.H * d.dk, sv = (size_t)d.H * d.dv;
    if (tid < CH) {
        bt[tid] = tid < c ? beta[row0 + (size_t)tid * d.H] : 0.0f;
        gc[tid] = tid < c ? g[row0 + (size_t)tid * d.H] : 0.0f; // padded rows: no decay, so gam stays gam_last
    }
    __syncthreads();
    if (tid == 0) { // F1, in the CPU's order
        float acc = 0.0f;
        for (int r = 0; r < CH; r++) gc[r] = acc += gc[r];
    }
    __syncthreads();
    if (tid < CH) {
        eg[tid] = expf(gc[tid]);
        el[tid] = expf(gc[CH - 1] - gc[tid]);
        fk[tid] = bt[tid] * eg[tid];
        s.gcum[cb * CH + tid] = gc[tid];
    }
    __syncthreads();
    const float *kc = k + row0 * d.dk, *qc = q + row0 * d.dk;
    load_rows_bf16(Kh, LDH, kc, sk, c, d.dk, dkp);
    load_rows_bf16(Xh, LDH, kc, sk, c, d.dk, dkp, fk);                  // diag(beta e^gam) K
    load_rows_bf16(Vh, LDH, v + row0 * d.dv, sv, c, d.dv, dvp, bt);     // diag(beta) V
    for (int e = tid; e < CH * dkp; e += THREADS) {                     // Ke, Qs for the later kernels
        const int r = e / dkp, i = e % dkp;
        const bool in = r < c && i < d.dk;
        const float kx = in ? kc[(size_t)r * sk + i] : 0.0f, qx = in ? qc[(size_t)r * sk + i] : 0.0f;
        s.ke[cb * CH * dkp + e] = __float2bfloat16(el[r] * kx);
        s.qs[cb * CH * dkp + e] = __float2bfloat16(d.scale * eg[r] * qx);
    }
    __syncthreads();
    mma<false, true>(Af, LDSF, Kh, LDH, Kh, LDH, CH, CH, dkp); // K K^T
    __syncthreads();
    for (int e = tid; e < CH * CH; e += THREADS) { // F2: A = strict_lower(diag(beta) K K^T ⊙ E)
        const int r = e / CH, j = e % CH;
        float *a = Af + r * LDSF + j;
        *a = j < r ? bt[r] * *a * expf(gc[r] - gc[j]) : 0.0f;
    }
    __syncthreads();
    invert_unit_lower(Tf, Af, stage);
    for (int e = tid; e < CH * CH; e += THREADS) {
        const int r = e / CH, j = e % CH;
        const bf16 x = __float2bfloat16(j <= r ? Tf[r * LDSF + j] : 0.0f);
        Th[r * LDS + j] = x;
        if (s.t) s.t[cb * CH * CH + e] = x;
    }
    __syncthreads();
    bf16 *wn = s.wn + cb * CH * dkp;
    float *u = s.u + cb * CH * dvp;
    // W = T diag(beta e^gam) K, stored negated; U = T diag(beta) V
    mma_apply<false, false>(Th, LDS, Xh, LDH, CH, dkp, CH, stage,
                            [&](int r, int i, float x) { wn[r * dkp + i] = __float2bfloat16(-x); });
    mma_apply<false, false>(Th, LDS, Vh, LDH, CH, dvp, CH, stage, [&](int r, int j, float x) { u[r * dvp + j] = x; });
}

// HYLA_GDR_PREP2=1 (PREP2_BY_DEFAULT): prep_kernel in a form of four blocks per SM, the same
// operations in the same order, so the same bits (emu.gdr_chunk compares). prep_kernel waits
// on latency (H100, 0.4B shape: 613 us a call for ~370 MB): its loops over global memory load
// one float per element with a few loads in flight per thread and read k three times; thread 0
// sums the gates alone; the inversion's diagonal blocks go row by row through shared memory;
// and at 86 KB only two blocks share an SM to cover it. Here each thread issues all its loads
// of an operand at once (eight float4 where rows allow) and reads q, k, v once; A, T and Th are
// kept as their 10 blocks on or below the diagonal, so that 54.5 KB suffice (and 64 registers);
// the 64 gate threads each run the whole sum; the diagonal blocks are inverted with each lane's
// column in registers; the blocks of K K^T above the diagonal, zero after the mask, are skipped.

constexpr int NB = CH / 16;              // 16 x 16 blocks along a chunk
constexpr int LOWER = NB * (NB + 1) / 2; // blocks on or below the diagonal
constexpr int BELOW = NB * (NB - 1) / 2; // blocks below it
constexpr int LDTH = 24;                 // bf16 rows of a block of Th (48 bytes: the 8 rows of an 8 x 8 fragment in distinct banks)
constexpr int QUADS = CH / WARPS;        // rows of an operand a thread loads (a float4 of each)
__host__ __device__ constexpr int lower_at(int i, int j) { return i * (i + 1) / 2 + j; } // block (i >= j) of the 10
__host__ __device__ constexpr int below_at(int i, int j) { return i * (i - 1) / 2 + j; } // block (i > j) of the 6

// Shared memory in four regions that change hands between the steps:
//   Xh  diag(beta e^gam) K (bf16, 64 x LDH), the operand of W, throughout
//   R1  K (bf16, until K K^T is formed), then diag(beta) V, the operand of U
//   R2  A's 10 lower blocks (fp32 16 x 16), the diagonal ones replaced by their inverses D_i;
//       then Th's 10 lower blocks and one zero block (bf16 16 x LDTH)
//   R3  T's 6 off-diagonal blocks and the inversion's X blocks (fp32); then the W / U stage
// plus 64 floats each of the raw and summed gates, beta, e^gam, e^{gam_last - gam}, beta e^gam.
constexpr size_t P2_OPERAND = carve_size(sizeof(bf16) * CH * LDH);
constexpr size_t P2_R2 = carve_size(sizeof(float) * LOWER * 256);
constexpr size_t P2_R3 = carve_size(sizeof(float) * (BELOW + NB - 1) * 256);
constexpr size_t PREP2_SMEM = 2 * P2_OPERAND + P2_R2 + P2_R3 + 6 * carve_size(sizeof(float) * CH);
static_assert(sizeof(bf16) * (LOWER + 1) * 16 * LDTH <= P2_R2, "Th's blocks fit where A's were");
static_assert(sizeof(float) * WARPS * 256 <= P2_R3, "the stage fits where T's blocks were");
static_assert(PREP2_SMEM + 1024 <= 228 * 1024 / 4, "four blocks per SM");

struct alignas(8) bf16x4 {
    bf16 v[4];
};
struct alignas(16) bf16x8 {
    bf16 v[8];
};
__device__ inline void put4(bf16 *p, float a, float b, float c, float e) { // 8-byte aligned
    bf16x4 o;
    o.v[0] = __float2bfloat16(a), o.v[1] = __float2bfloat16(b), o.v[2] = __float2bfloat16(c), o.v[3] = __float2bfloat16(e);
    *(bf16x4 *)p = o;
}

// This thread's quads of one chunk of a [B, L, H, width] tensor: columns i = 4 (tid % 32) .. + 3
// of the rows r = tid / 32 + 8 m, m = 0..7 (a warp reads 128 contiguous floats of a row), zeros
// outside the true sizes; lanes with i >= wpad stay idle. Every load is issued before any is
// used; float4 loads where the rows allow (vec: width and the base 4-float aligned), else one
// float at a time.
__device__ inline void load_quads(float4 (&x)[QUADS], const float *src, size_t row_stride, int c, int width, bool vec) {
    const int r0 = threadIdx.x / 32, i = threadIdx.x % 32 * 4;
#pragma unroll
    for (int m = 0; m < QUADS; m++) {
        const int r = r0 + m * WARPS;
        float4 x4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < c && i < width) {
            const float *p = src + (size_t)r * row_stride + i;
            if (vec) x4 = *(const float4 *)p;
            else {
                x4.x = p[0];
                if (i + 1 < width) x4.y = p[1];
                if (i + 2 < width) x4.z = p[2];
                if (i + 3 < width) x4.w = p[3];
            }
        }
        x[m] = x4;
    }
}
// f(r, i, x, n) for each quad of load_quads inside the padded width wpad (rows 0..63): row r,
// columns i .. i + 3, the values x (zeros outside), n the number of them inside the true sizes
// (<= 0: none).
template <typename F> __device__ inline void each_quad(const float4 (&x)[QUADS], int c, int width, int wpad, F f) {
    const int r0 = threadIdx.x / 32, i = threadIdx.x % 32 * 4;
    if (i >= wpad) return;
#pragma unroll
    for (int m = 0; m < QUADS; m++) {
        const int r = r0 + m * WARPS;
        f(r, i, x[m], r < c ? width - i : 0);
    }
}

// F2 on the lower blocks: A = strict_lower(diag(beta) K K^T ⊙ E), each value as prep_kernel
// rounds it (the tile through mma(): 0 + 1 x, then beta_r x e^{gam_r - gam_j}). Warps take
// blocks round-robin; the caller synchronises before and after.
__device__ void kkt_lower(float *Ab, const bf16 *Kh, int dkp, const float *bt, const float *gc) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int p = warp; p < LOWER; p += WARPS) {
        int mi = 0;
        while (lower_at(mi + 1, 0) <= p) mi++;
        const int ni = p - lower_at(mi, 0);
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> prod;
        wmma::fill_fragment(prod, 0.0f);
        for (int k = 0; k < dkp; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
            wmma::load_matrix_sync(a, Kh + (size_t)mi * 16 * LDH + k, LDH);
            wmma::load_matrix_sync(b, Kh + (size_t)ni * 16 * LDH + k, LDH);
            wmma::mma_sync(prod, a, b, prod);
        }
        float *blk = Ab + p * 256;
        wmma::store_matrix_sync(blk, prod, 16, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
            const int r = mi * 16 + e / 16, j = ni * 16 + e % 16;
            blk[e] = j < r ? bt[r] * (blk[e] + 0.0f) * expf(gc[r] - gc[j]) : 0.0f;
        }
        __syncwarp();
    }
}

// D = (I + A_ii)^-1 for the diagonal block blk (in place), by one warp, as invert_unit_lower's
// warps form it: lane (m, half) follows column m and sums every other term of each row (half 0
// j = m + 1, m + 3, ..., half 1 j = m + 2, ...), the halves joined by a shuffle; here the
// column stays in registers (both halves hold it: their sums are the same two terms) instead
// of going through shared memory row by row.
__device__ void invert_diag_block(float *blk, int lane) {
    const int m = lane % 16, half = lane / 16, first = m + 1 + half;
    float t[16];
#pragma unroll
    for (int i = 0; i < 16; i++) {
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < i; j++)
            if (j >= first && (j & 1) == (first & 1)) sum += blk[i * 16 + j] * t[j];
        sum += __shfl_xor_sync(0xffffffffu, sum, 16);
        t[i] = m < i ? -blk[i * 16 + m] - sum : (m == i ? 1.0f : 0.0f);
    }
    __syncwarp(); // every lane has read A_ii
#pragma unroll
    for (int i = 0; i < 16; i++)
        if (i / 8 == half) blk[i * 16 + m] = t[i];
}

// F3 as invert_unit_lower, on blocks: the diagonal inverses D_i in place of A_ii (four warps),
// then by distance from the diagonal T_ij = -D_i sum_{j <= k < i} A_ik T_kj into Tb (blocks
// below_at), every sum in invert_unit_lower's order. xs: 3 * 256 floats.
__device__ void invert_blocks(float *Ab, float *Tb, float *xs) {
    const int tid = threadIdx.x, warp = tid / 32;
    if (warp < NB) invert_diag_block(Ab + lower_at(warp, warp) * 256, tid % 32);
    __syncthreads();
    for (int dist = 1; dist < NB; dist++) {
        const int blocks = NB - dist;
        for (int e = tid; e < blocks * 256; e += THREADS) { // X_ij = sum_k A_ik T_kj
            const int j = e / 256, i = j + dist, r = (e % 256) / 16, cc = e % 16;
            float x = 0.0f;
            for (int kb = j; kb < i; kb++) {
                const float *ar = Ab + lower_at(i, kb) * 256 + r * 16;
                const float *tc = (kb == j ? Ab + lower_at(j, j) * 256 : Tb + below_at(kb, j) * 256) + cc;
#pragma unroll
                for (int kk = 0; kk < 16; kk++) x += ar[kk] * tc[kk * 16];
            }
            xs[e] = x;
        }
        __syncthreads();
        for (int e = tid; e < blocks * 256; e += THREADS) { // T_ij = -D_i X_ij
            const int j = e / 256, i = j + dist, r = (e % 256) / 16, cc = e % 16;
            const float *dr = Ab + lower_at(i, i) * 256 + r * 16;
            float t = 0.0f;
#pragma unroll
            for (int m = 0; m < 16; m++) t += dr[m] * xs[j * 256 + m * 16 + cc];
            Tb[below_at(i, j) * 256 + r * 16 + cc] = -t;
        }
        __syncthreads();
    }
}

// T's blocks (fp32, D_i in Ab, the rest in Tb) to bf16: Th's lower blocks and a zero block in
// R2 (over A, hence the barrier between reading and writing), and s.t when the backward wants
// it (64 x 64, zeros above the diagonal, as prep_kernel stores it). Thread: row tid / 4,
// columns 16 (tid % 4) .. + 15. Ends synchronised.
__device__ void store_t(bf16 *Thb, const float *Ab, const float *Tb, bf16 *t_out) {
    const int tid = threadIdx.x, r = tid / 4, bc = tid % 4, br = r / 16, rr = r % 16;
    const float *src = bc < br ? Tb + below_at(br, bc) * 256 + rr * 16 : Ab + lower_at(br, br) * 256 + rr * 16;
    bf16x8 h[2];
#pragma unroll
    for (int jj = 0; jj < 16; jj++)
        h[jj / 8].v[jj % 8] = __float2bfloat16(bc < br || (bc == br && jj <= rr) ? src[jj] : 0.0f);
    __syncthreads(); // T read: R2 is free
    if (bc <= br) {
        bf16x8 *dst = (bf16x8 *)(Thb + lower_at(br, bc) * 16 * LDTH + rr * LDTH);
        dst[0] = h[0], dst[1] = h[1];
    }
    if (tid < 16 * LDTH / 8) {
        bf16x8 z;
        for (int u = 0; u < 8; u++) z.v[u] = __float2bfloat16(0.0f);
        ((bf16x8 *)(Thb + LOWER * 16 * LDTH))[tid] = z;
    }
    if (t_out) {
        bf16x8 *dst = (bf16x8 *)(t_out + r * CH + 16 * bc);
        dst[0] = h[0], dst[1] = h[1];
    }
    __syncthreads();
}

// Th op(B) for [64 x N] op(B) = Bm (bf16, row-major, ld ldb), as prep_kernel's mma_apply forms
// it: each 16 x 16 tile summed over kb = 0..3 in order, the blocks of Th above the diagonal
// read as the zero block; then f(row, col, v) with 8 consecutive values v of a row per lane,
// through this warp's 16 x 16 stage.
template <typename F> __device__ void th_product(const bf16 *Thb, const bf16 *Bm, int ldb, int N, float *stage, F f) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tn = N / 16;
    float *st = stage + warp * 256;
    for (int tile = warp; tile < NB * tn; tile += WARPS) {
        const int mi = tile / tn, ni = tile % tn;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> prod;
        wmma::fill_fragment(prod, 0.0f);
        for (int kb = 0; kb < NB; kb++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
            wmma::load_matrix_sync(a, Thb + (kb <= mi ? lower_at(mi, kb) : LOWER) * 16 * LDTH, LDTH);
            wmma::load_matrix_sync(b, Bm + (size_t)kb * 16 * ldb + ni * 16, ldb);
            wmma::mma_sync(prod, a, b, prod);
        }
        wmma::store_matrix_sync(st, prod, 16, wmma::mem_row_major);
        __syncwarp();
        f(mi * 16 + lane / 2, ni * 16 + lane % 2 * 8, st + lane * 8);
        __syncwarp();
    }
}

// F1-F4 for chunk blockIdx.x of (b, h) = blockIdx.y, as prep_kernel.
__global__ void __launch_bounds__(THREADS, 4) prep2_kernel(scratch s, const float *q, const float *k, const float *v,
                                                          const float *beta, const float *g, dims d) {
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Xh = sc.take<bf16>(CH * LDH), *R1 = sc.take<bf16>(CH * LDH);
    float *R2 = sc.take<float>(LOWER * 256), *R3 = sc.take<float>((BELOW + NB - 1) * 256);
    float *graw = sc.take<float>(CH), *gc = sc.take<float>(CH), *bt = sc.take<float>(CH);
    float *eg = sc.take<float>(CH), *el = sc.take<float>(CH), *fk = sc.take<float>(CH);
    bf16 *Kh = R1, *Vh = R1, *Thb = (bf16 *)R2;
    float *Ab = R2, *Tb = R3, *xs = R3 + BELOW * 256, *stage = R3;
    const int n = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H, tid = threadIdx.x;
    const int t0 = n * CH, c = min(CH, d.L - t0), dkp = d.dkp, dvp = d.dvp;
    const size_t cb = (size_t)bh * d.nt + n, row0 = ((size_t)b * d.L + t0) * d.H + h;
    const size_t sk = (size_t)d.H * d.dk, sv = (size_t)d.H * d.dv;
    const float *kc = k + row0 * d.dk, *qc = q + row0 * d.dk, *vc = v + row0 * d.dv;
    const bool vec_k = d.dk % 4 == 0 && ((uintptr_t)k & 15) == 0 && ((uintptr_t)q & 15) == 0;
    const bool vec_v = d.dv % 4 == 0 && ((uintptr_t)v & 15) == 0;
    if (tid < CH) {
        bt[tid] = tid < c ? beta[row0 + (size_t)tid * d.H] : 0.0f;
        graw[tid] = tid < c ? g[row0 + (size_t)tid * d.H] : 0.0f; // padded rows: no decay, so gam stays gam_last
    }
    float4 x[QUADS];
    load_quads(x, kc, sk, c, d.dk, vec_k); // in flight while the gates are summed
    __syncthreads();
    if (tid < CH) { // F1: each of these threads runs the CPU's whole sum (the same order), keeping its own prefix
        float acc = 0.0f, mine = 0.0f;
#pragma unroll
        for (int r = 0; r < CH; r++) {
            acc += graw[r];
            if (r == tid) mine = acc;
        }
        gc[tid] = mine;
        eg[tid] = expf(mine);
        el[tid] = expf(acc - mine);
        fk[tid] = bt[tid] * eg[tid];
        s.gcum[cb * CH + tid] = mine;
    }
    __syncthreads();
    bf16 *ke = s.ke + cb * CH * dkp, *qs = s.qs + cb * CH * dkp;
    each_quad(x, c, d.dk, dkp, [&](int r, int i, float4 x4, int in) { // K, diag(beta e^gam) K, Ke
        const float f = fk[r], e = el[r];
        put4(Kh + r * LDH + i, x4.x, x4.y, x4.z, x4.w);
        put4(Xh + r * LDH + i, in > 0 ? x4.x * f : 0.0f, in > 1 ? x4.y * f : 0.0f, in > 2 ? x4.z * f : 0.0f,
             in > 3 ? x4.w * f : 0.0f);
        put4(ke + r * dkp + i, e * x4.x, e * x4.y, e * x4.z, e * x4.w);
    });
    load_quads(x, qc, sk, c, d.dk, vec_k);
    each_quad(x, c, d.dk, dkp, [&](int r, int i, float4 x4, int) { // Qs
        const float f = eg[r];
        put4(qs + r * dkp + i, d.scale * f * x4.x, d.scale * f * x4.y, d.scale * f * x4.z, d.scale * f * x4.w);
    });
    __syncthreads();
    kkt_lower(Ab, Kh, dkp, bt, gc);
    __syncthreads(); // K is dead: V goes in its place
    load_quads(x, vc, sv, c, d.dv, vec_v);
    each_quad(x, c, d.dv, dvp, [&](int r, int i, float4 x4, int in) { // diag(beta) V
        const float f = bt[r];
        put4(Vh + r * LDH + i, in > 0 ? x4.x * f : 0.0f, in > 1 ? x4.y * f : 0.0f, in > 2 ? x4.z * f : 0.0f,
             in > 3 ? x4.w * f : 0.0f);
    });
    invert_blocks(Ab, Tb, xs); // its barriers also put V in place for U
    store_t(Thb, Ab, Tb, s.t ? s.t + cb * CH * CH : nullptr);
    bf16 *wn = s.wn + cb * CH * dkp;
    float *u = s.u + cb * CH * dvp;
    // W = T diag(beta e^gam) K, stored negated; U = T diag(beta) V
    th_product(Thb, Xh, LDH, dkp, stage, [&](int r, int i, const float *x8) {
        bf16x8 o;
#pragma unroll
        for (int e = 0; e < 8; e++) o.v[e] = __float2bfloat16(-x8[e]);
        *(bf16x8 *)(wn + r * dkp + i) = o;
    });
    th_product(Thb, Vh, LDH, dvp, stage, [&](int r, int j, const float *x8) {
        float4 *dst = (float4 *)(u + r * dvp + j);
        dst[0] = make_float4(x8[0], x8[1], x8[2], x8[3]), dst[1] = make_float4(x8[4], x8[5], x8[6], x8[7]);
    });
}

constexpr size_t STATE_SMEM = 2 * carve_size(sizeof(bf16) * 2 * CH * LDH) + carve_size(sizeof(float) * 2 * CH * LDVF) +
                              carve_size(sizeof(float) * DMAX * LDVF) + carve_size(sizeof(bf16) * DMAX * LDVH) +
                              carve_size(sizeof(bf16) * CH * LDVH);

// F5 for (b, h) = blockIdx.x, value columns j0 = 32 blockIdx.y onwards, in order over chunks.
__global__ void __launch_bounds__(THREADS) state_fwd_kernel(scratch s, float *final_state, const float *S0, dims d) {
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    // double buffers, indexed by chunk parity through arithmetic (a pointer array would live in local memory)
    bf16 *Wn0 = sc.take<bf16>(2 * CH * LDH), *Ke0 = sc.take<bf16>(2 * CH * LDH);
    float *Ub0 = sc.take<float>(2 * CH * LDVF);
    auto Wn = [&](int x) { return Wn0 + x * CH * LDH; };
    auto Ke = [&](int x) { return Ke0 + x * CH * LDH; };
    auto Ub = [&](int x) { return Ub0 + x * CH * LDVF; };
    float *S = sc.take<float>(DMAX * LDVF);
    bf16 *Sh = sc.take<bf16>(DMAX * LDVH), *Dh = sc.take<bf16>(CH * LDVH);
    const int bh = blockIdx.x, j0 = blockIdx.y * BV, tid = threadIdx.x, dkp = d.dkp, dvp = d.dvp;
    const size_t s_size = (size_t)d.dk * d.dv;
    for (int e = tid; e < dkp * BV; e += THREADS) {
        const int i = e / BV, j = e % BV;
        const float x = (S0 && i < d.dk && j0 + j < d.dv) ? S0[bh * s_size + (size_t)i * d.dv + j0 + j] : 0.0f;
        S[i * LDVF + j] = x;
        Sh[i * LDVH + j] = __float2bfloat16(x);
    }
    auto fetch = [&](int n, int x) {
        const size_t cb = (size_t)bh * d.nt + n;
        copy_async_bf16(Wn(x), LDH, s.wn + cb * CH * dkp, dkp, CH, dkp);
        copy_async_bf16(Ke(x), LDH, s.ke + cb * CH * dkp, dkp, CH, dkp);
        copy_async_f32(Ub(x), LDVF, s.u + cb * CH * dvp + j0, dvp, CH, BV);
        __pipeline_commit();
    };
    fetch(0, 0);
    for (int n = 0; n < d.nt; n++) {
        const int x = n & 1;
        const size_t cb = (size_t)bh * d.nt + n;
        __pipeline_wait_prior(0);
        __syncthreads(); // chunk n's operands and Sh in place; buffer x^1 free
        if (n + 1 < d.nt) fetch(n + 1, x ^ 1);
        for (int e = tid; e < dkp * BV; e += THREADS) { // H_n, as the later kernels read it
            const int i = e / BV, j = e % BV;
            s.states[cb * dkp * dvp + (size_t)i * dvp + j0 + j] = Sh[i * LDVH + j];
        }
        mma<false, false>(Ub(x), LDVF, Wn(x), LDH, Sh, LDVH, CH, BV, dkp, 1.0f, true); // Delta = U + (-W) H_n
        __syncthreads();
        const float a = expf(s.gcum[cb * CH + CH - 1]);
        for (int e = tid; e < CH * BV; e += THREADS) {
            const int r = e / BV, j = e % BV;
            const bf16 x16 = __float2bfloat16(Ub(x)[r * LDVF + j]);
            Dh[r * LDVH + j] = x16;
            s.delta[cb * CH * dvp + (size_t)r * dvp + j0 + j] = x16;
        }
        for (int e = tid; e < dkp * BV; e += THREADS) S[(e / BV) * LDVF + e % BV] *= a;
        __syncthreads();
        mma<true, false>(S, LDVF, Ke(x), LDH, Dh, LDVH, dkp, BV, CH, 1.0f, true); // H += Ke^T Delta
        __syncthreads();
        for (int e = tid; e < dkp * BV; e += THREADS) Sh[(e / BV) * LDVH + e % BV] = __float2bfloat16(S[(e / BV) * LDVF + e % BV]);
    }
    if (final_state)
        for (int e = tid; e < dkp * BV; e += THREADS) {
            const int i = e / BV, j = e % BV;
            if (i < d.dk && j0 + j < d.dv) final_state[bh * s_size + (size_t)i * d.dv + j0 + j] = S[i * LDVF + j];
        }
}

// P (a shared [64][LDS] bf16 tile) to the forward's `saved`, [64][64], 16 bytes a copy: the
// backward's local term reads it instead of forming it from q and k again (launch_local2).
__device__ inline void save_p(bf16 *dst, const bf16 *Ph) {
    for (int e = threadIdx.x; e < CH * CH / 8; e += THREADS) {
        const int r = e / (CH / 8), j = e % (CH / 8) * 8;
        *(uint4 *)(dst + r * CH + j) = *(const uint4 *)(Ph + r * LDS + j);
    }
}

constexpr size_t OUT_SMEM = 4 * carve_size(sizeof(bf16) * CH * LDH) + carve_size(sizeof(bf16) * DMAX * LDH) +
                            carve_size(sizeof(float) * WARPS * 256) + carve_size(sizeof(bf16) * CH * LDS) +
                            carve_size(sizeof(float) * CH);

// F6 for chunk blockIdx.x of (b, h) = blockIdx.y.
__global__ void __launch_bounds__(THREADS) out_kernel(float *o, scratch s, const float *q, const float *k, dims d) {
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Qr = sc.take<bf16>(CH * LDH), *Kh = sc.take<bf16>(CH * LDH); // adjacent: O reuses them
    bf16 *Qs = sc.take<bf16>(CH * LDH), *Dh = sc.take<bf16>(CH * LDH), *Sh = sc.take<bf16>(DMAX * LDH);
    float *stage = sc.take<float>(WARPS * 256);
    bf16 *Ph = sc.take<bf16>(CH * LDS);
    float *gc = sc.take<float>(CH);
    float *Of = (float *)Qr;
    const int n = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H, tid = threadIdx.x;
    const int t0 = n * CH, c = min(CH, d.L - t0), dkp = d.dkp, dvp = d.dvp;
    const size_t cb = (size_t)bh * d.nt + n, row0 = ((size_t)b * d.L + t0) * d.H + h;
    copy_async_bf16(Qs, LDH, s.qs + cb * CH * dkp, dkp, CH, dkp);
    copy_async_bf16(Dh, LDH, s.delta + cb * CH * dvp, dvp, CH, dvp);
    copy_async_bf16(Sh, LDH, s.states + cb * dkp * dvp, dvp, dkp, dvp);
    __pipeline_commit();
    if (tid < CH) gc[tid] = s.gcum[cb * CH + tid];
    load_rows_bf16(Qr, LDH, q + row0 * d.dk, (size_t)d.H * d.dk, c, d.dk, dkp);
    load_rows_bf16(Kh, LDH, k + row0 * d.dk, (size_t)d.H * d.dk, c, d.dk, dkp);
    __pipeline_wait_prior(0);
    __syncthreads();
    mma_apply<false, true>(Qr, LDH, Kh, LDH, CH, CH, dkp, stage, [&](int r, int j, float x) {
        Ph[r * LDS + j] = __float2bfloat16(j <= r ? d.scale * x * expf(gc[r] - gc[j]) : 0.0f); // scale (Q K^T ⊙ E), causal
    });
    __syncthreads();
    if (s.p) save_p(s.p + cb * CH * CH, Ph);
    mma<false, false>(Of, LDF, Qs, LDH, Sh, LDH, CH, dvp, dkp);
    __syncthreads();
    mma<false, false>(Of, LDF, Ph, LDS, Dh, LDH, CH, dvp, CH, 1.0f, true);
    __syncthreads();
    for (int e = tid; e < c * d.dv; e += THREADS) {
        const int r = e / d.dv, j = e % d.dv;
        o[(row0 + (size_t)r * d.H) * d.dv + j] = Of[r * LDF + j];
    }
}

// The forms that fit two blocks per SM (HYLA_GDR_FWD2=1): the same products in the same order,
// so the same bits (emu.gdr_chunk compares).

// F5 as state_fwd_kernel over BVT (16) value columns a block: twice the blocks (256 at the 0.4B
// shape, against 132 SMs), two on an SM, so that one chain's barriers and waits overlap the
// other's work. Each value column's chain is independent, and a 16 x 16 output tile of a
// product sums over k in the same order whatever the width of the slice, so the bits are
// those of BV = 32. The chunk's last gate is read before the chunk's wait.
template <int BVT> constexpr size_t state_fwd2_smem() {
    return 2 * carve_size(sizeof(bf16) * 2 * CH * LDH) + carve_size(sizeof(float) * 2 * CH * (BVT + 4)) +
           carve_size(sizeof(float) * DMAX * (BVT + 4)) + carve_size(sizeof(bf16) * DMAX * (BVT + 8)) +
           carve_size(sizeof(bf16) * CH * (BVT + 8));
}
constexpr int BV2 = 16; // value columns a block of the two-per-SM state chains
static_assert(state_fwd2_smem<BV2>() <= SMEM_TWO_PER_SM, "two blocks per SM");

template <int BVT>
__global__ void __launch_bounds__(THREADS, 2) state_fwd2_kernel(scratch s, float *final_state, const float *S0, dims d) {
    constexpr int LVF = BVT + 4, LVH = BVT + 8;
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Wn0 = sc.take<bf16>(2 * CH * LDH), *Ke0 = sc.take<bf16>(2 * CH * LDH);
    float *Ub0 = sc.take<float>(2 * CH * LVF);
    auto Wn = [&](int x) { return Wn0 + x * CH * LDH; };
    auto Ke = [&](int x) { return Ke0 + x * CH * LDH; };
    auto Ub = [&](int x) { return Ub0 + x * CH * LVF; };
    float *S = sc.take<float>(DMAX * LVF);
    bf16 *Sh = sc.take<bf16>(DMAX * LVH), *Dh = sc.take<bf16>(CH * LVH);
    const int bh = blockIdx.x, j0 = blockIdx.y * BVT, tid = threadIdx.x, dkp = d.dkp, dvp = d.dvp;
    const size_t s_size = (size_t)d.dk * d.dv;
    for (int e = tid; e < dkp * BVT; e += THREADS) {
        const int i = e / BVT, j = e % BVT;
        const float x = (S0 && i < d.dk && j0 + j < d.dv) ? S0[bh * s_size + (size_t)i * d.dv + j0 + j] : 0.0f;
        S[i * LVF + j] = x;
        Sh[i * LVH + j] = __float2bfloat16(x);
    }
    auto fetch = [&](int n, int x) {
        const size_t cb = (size_t)bh * d.nt + n;
        copy_async_bf16(Wn(x), LDH, s.wn + cb * CH * dkp, dkp, CH, dkp);
        copy_async_bf16(Ke(x), LDH, s.ke + cb * CH * dkp, dkp, CH, dkp);
        copy_async_f32(Ub(x), LVF, s.u + cb * CH * dvp + j0, dvp, CH, BVT);
        __pipeline_commit();
    };
    fetch(0, 0);
    for (int n = 0; n < d.nt; n++) {
        const int x = n & 1;
        const size_t cb = (size_t)bh * d.nt + n;
        const float glast = s.gcum[cb * CH + CH - 1];
        __pipeline_wait_prior(0);
        __syncthreads(); // chunk n's operands and Sh in place; buffer x^1 free
        if (n + 1 < d.nt) fetch(n + 1, x ^ 1);
        for (int e = tid; e < dkp * BVT; e += THREADS) { // H_n, as the later kernels read it
            const int i = e / BVT, j = e % BVT;
            s.states[cb * dkp * dvp + (size_t)i * dvp + j0 + j] = Sh[i * LVH + j];
        }
        mma<false, false>(Ub(x), LVF, Wn(x), LDH, Sh, LVH, CH, BVT, dkp, 1.0f, true); // Delta = U + (-W) H_n
        __syncthreads();
        const float a = expf(glast);
        for (int e = tid; e < CH * BVT; e += THREADS) {
            const int r = e / BVT, j = e % BVT;
            const bf16 x16 = __float2bfloat16(Ub(x)[r * LVF + j]);
            Dh[r * LVH + j] = x16;
            s.delta[cb * CH * dvp + (size_t)r * dvp + j0 + j] = x16;
        }
        for (int e = tid; e < dkp * BVT; e += THREADS) S[(e / BVT) * LVF + e % BVT] *= a;
        __syncthreads();
        mma<true, false>(S, LVF, Ke(x), LDH, Dh, LVH, dkp, BVT, CH, 1.0f, true); // H += Ke^T Delta
        __syncthreads();
        for (int e = tid; e < dkp * BVT; e += THREADS) Sh[(e / BVT) * LVH + e % BVT] = __float2bfloat16(S[(e / BVT) * LVF + e % BVT]);
    }
    if (final_state)
        for (int e = tid; e < dkp * BVT; e += THREADS) {
            const int i = e / BVT, j = e % BVT;
            if (i < d.dk && j0 + j < d.dv) final_state[bh * s_size + (size_t)i * d.dv + j0 + j] = S[i * LVF + j];
        }
}

// F6 as out_kernel in at most SMEM_TWO_PER_SM: no fp32 output buffer (each warp keeps its
// output tiles, at most 4, in registers and writes them out through a 16 x 16 stage), and H_n
// split: rows 0..63 arrive with the other operands, rows 64..127 go over Q once P = Q K^T is
// formed (Sh and Qr are adjacent, so Sh reads as one 128-row buffer). While those rows land,
// each warp runs its tiles of Qs H_n over k < 64 and the whole of P Delta, both in registers;
// then k >= 64, and O = (0 + Qs H_n) + P Delta as out_kernel's two mma calls round it.
constexpr size_t OUT2_SMEM = 5 * carve_size(sizeof(bf16) * CH * LDH) + carve_size(sizeof(float) * WARPS * 256) +
                             carve_size(sizeof(bf16) * CH * LDS) + carve_size(sizeof(float) * CH);
static_assert(OUT2_SMEM <= SMEM_TWO_PER_SM, "two blocks per SM");
static_assert(carve_size(sizeof(bf16) * CH * LDH) == sizeof(bf16) * CH * LDH, "Sh and Qr adjacent, no gap");

__global__ void __launch_bounds__(THREADS, 2) out2_kernel(float *o, scratch s, const float *q, const float *k, dims d) {
    typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_t;
    constexpr int HOLD = CH * DMAX / 256 / WARPS; // output tiles a warp at most
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Sh = sc.take<bf16>(CH * LDH), *Qr = sc.take<bf16>(CH * LDH); // adjacent: H_n's rows 64.. go over Q
    bf16 *Kh = sc.take<bf16>(CH * LDH), *Qs = sc.take<bf16>(CH * LDH), *Dh = sc.take<bf16>(CH * LDH);
    float *stage = sc.take<float>(WARPS * 256);
    bf16 *Ph = sc.take<bf16>(CH * LDS);
    float *gc = sc.take<float>(CH);
    const int n = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H, tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int t0 = n * CH, c = min(CH, d.L - t0), dkp = d.dkp, dvp = d.dvp, k1 = min(dkp, CH);
    const size_t cb = (size_t)bh * d.nt + n, row0 = ((size_t)b * d.L + t0) * d.H + h;
    const bf16 *hn = s.states + cb * dkp * dvp;
    copy_async_bf16(Qs, LDH, s.qs + cb * CH * dkp, dkp, CH, dkp);
    copy_async_bf16(Dh, LDH, s.delta + cb * CH * dvp, dvp, CH, dvp);
    copy_async_bf16(Sh, LDH, hn, dvp, k1, dvp);
    __pipeline_commit();
    if (tid < CH) gc[tid] = s.gcum[cb * CH + tid];
    load_rows_bf16_at_once(Qr, LDH, q + row0 * d.dk, (size_t)d.H * d.dk, c, d.dk, dkp);
    load_rows_bf16_at_once(Kh, LDH, k + row0 * d.dk, (size_t)d.H * d.dk, c, d.dk, dkp);
    __pipeline_wait_prior(0);
    __syncthreads();
    mma_apply<false, true>(Qr, LDH, Kh, LDH, CH, CH, dkp, stage, [&](int r, int j, float x) {
        Ph[r * LDS + j] = __float2bfloat16(j <= r ? d.scale * x * expf(gc[r] - gc[j]) : 0.0f); // scale (Q K^T ⊙ E), causal
    });
    __syncthreads(); // Q is dead
    if (s.p) save_p(s.p + cb * CH * CH, Ph);
    if (dkp > CH) copy_async_bf16(Sh + CH * LDH, LDH, hn + CH * dvp, dvp, dkp - CH, dvp);
    __pipeline_commit();
    const int tn = dvp / 16, tiles = (CH / 16) * tn;
    acc_t qh[HOLD], pd[HOLD]; // this warp's tiles of Qs H_n and P Delta
#pragma unroll
    for (int t = 0; t < HOLD; t++) {
        const int tile = warp + t * WARPS, mi = tile / tn, ni = tile % tn;
        if (tile >= tiles) break;
        wmma::fill_fragment(qh[t], 0.0f);
        for (int kk = 0; kk < k1; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> bb;
            wmma::load_matrix_sync(a, Qs + (size_t)mi * 16 * LDH + kk, LDH);
            wmma::load_matrix_sync(bb, Sh + (size_t)kk * LDH + ni * 16, LDH);
            wmma::mma_sync(qh[t], a, bb, qh[t]);
        }
        wmma::fill_fragment(pd[t], 0.0f);
        for (int kk = 0; kk < CH; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> bb;
            wmma::load_matrix_sync(a, Ph + (size_t)mi * 16 * LDS + kk, LDS);
            wmma::load_matrix_sync(bb, Dh + (size_t)kk * LDH + ni * 16, LDH);
            wmma::mma_sync(pd[t], a, bb, pd[t]);
        }
    }
    __pipeline_wait_prior(0);
    __syncthreads(); // H_n's rows 64.. in place
    float *st = stage + warp * 256;
#pragma unroll
    for (int t = 0; t < HOLD; t++) {
        const int tile = warp + t * WARPS, mi = tile / tn, ni = tile % tn;
        if (tile >= tiles) break;
        for (int kk = k1; kk < dkp; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> bb;
            wmma::load_matrix_sync(a, Qs + (size_t)mi * 16 * LDH + kk, LDH);
            wmma::load_matrix_sync(bb, Sh + (size_t)kk * LDH + ni * 16, LDH);
            wmma::mma_sync(qh[t], a, bb, qh[t]);
        }
        acc_t acc; // as out_kernel's mma calls round it: (0 + 1 Qs H_n) stored, then + 1 P Delta
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int e = 0; e < acc.num_elements; e++) acc.x[e] += 1.0f * qh[t].x[e];
#pragma unroll
        for (int e = 0; e < acc.num_elements; e++) acc.x[e] += 1.0f * pd[t].x[e];
        wmma::store_matrix_sync(st, acc, 16, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
            const int r = mi * 16 + e / 16, j = ni * 16 + e % 16;
            if (r < c && j < d.dv) o[(row0 + (size_t)r * d.H) * d.dv + j] = st[e];
        }
        __syncwarp();
    }
}

template <typename K> void allow_smem(K kernel, size_t bytes) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

} // namespace

// On since an H100 run timed and checked it (docs/gpu-runs/2026-12-07d-h100); HYLA_GDR_PREP2=1 / 0 chooses.
constexpr bool PREP2_BY_DEFAULT = true;
bool use_prep2(void) { return cuda_switch("HYLA_GDR_PREP2", PREP2_BY_DEFAULT); }

void launch_prep(const scratch &s, const float *q, const float *k, const float *v, const float *beta, const float *g,
                 const dims &d) {
    if (use_prep2()) {
        static bool ready2 = false;
        if (!ready2) allow_smem(prep2_kernel, PREP2_SMEM), ready2 = true;
        prep2_kernel<<<dim3(d.nt, d.B * d.H), THREADS, PREP2_SMEM>>>(s, q, k, v, beta, g, d);
        CUDA_LAUNCH_CHECK();
        return;
    }
    static bool ready = false;
    if (!ready) allow_smem(prep_kernel, PREP_SMEM), ready = true;
    prep_kernel<<<dim3(d.nt, d.B * d.H), THREADS, PREP_SMEM>>>(s, q, k, v, beta, g, d);
    CUDA_LAUNCH_CHECK();
}

// On since an H100 run timed and checked it (docs/gpu-runs/2026-12-07d-h100); HYLA_GDR_FWD2=1 / 0 chooses.
constexpr bool FWD2_BY_DEFAULT = true;
bool use_fwd2(void) { return cuda_switch("HYLA_GDR_FWD2", FWD2_BY_DEFAULT); }

void launch_state_fwd(const scratch &s, float *final_state, const float *S0, const dims &d) {
    if (use_state3()) return launch_state_fwd3(s, final_state, S0, d);
    if (use_fwd2()) {
        static bool ready2 = false;
        if (!ready2) allow_smem(state_fwd2_kernel<BV2>, state_fwd2_smem<BV2>()), ready2 = true;
        state_fwd2_kernel<BV2><<<dim3(d.B * d.H, d.dvp / BV2), THREADS, state_fwd2_smem<BV2>()>>>(s, final_state, S0, d);
        CUDA_LAUNCH_CHECK();
        return;
    }
    static bool ready = false;
    if (!ready) allow_smem(state_fwd_kernel, STATE_SMEM), ready = true;
    state_fwd_kernel<<<dim3(d.B * d.H, d.dvp / BV), THREADS, STATE_SMEM>>>(s, final_state, S0, d);
    CUDA_LAUNCH_CHECK();
}

void launch_out(float *o, const scratch &s, const float *q, const float *k, const dims &d) {
    if (use_out3()) return launch_out3(o, s, q, k, d);
    if (use_fwd2()) {
        static bool ready2 = false;
        if (!ready2) allow_smem(out2_kernel, OUT2_SMEM), ready2 = true;
        out2_kernel<<<dim3(d.nt, d.B * d.H), THREADS, OUT2_SMEM>>>(o, s, q, k, d);
        CUDA_LAUNCH_CHECK();
        return;
    }
    static bool ready = false;
    if (!ready) allow_smem(out_kernel, OUT_SMEM), ready = true;
    out_kernel<<<dim3(d.nt, d.B * d.H), THREADS, OUT_SMEM>>>(o, s, q, k, d);
    CUDA_LAUNCH_CHECK();
}

} // namespace gdrc

// The size of the forward's `saved` in bf16 mode (dk, dv <= 128).
size_t cuda_gdr_chunk_saved_floats_bf16(int B, int L, int H, int dk, int dv) {
    return B * H * L == 0 ? 0 : gdrc::saved_floats(gdrc::make_dims(B, L, H, dk, dv, 1.0f));
}

// The backend's gdr_chunk_fwd in bf16 mode (dk, dv <= 128; cuda_gdr.cu chooses). With `saved`
// (gdrc::saved_floats of the shape), the chunks' quantities, T included, stay there for the
// backward, which then skips running the forward's prep and state kernels again.
void cuda_gdr_chunk_fwd_bf16(float *o, float *final_state, const float *q, const float *k, const float *v,
                             const float *beta, const float *g, const float *S0, float scale, int B, int L, int H,
                             int dk, int dv, float *saved) {
    using namespace gdrc;
    if (B * H == 0) return;
    const dims d = make_dims(B, L, H, dk, dv, scale);
    if (L == 0) { // no tokens: the state passes through
        if (final_state) {
            if (S0) CUDA_CHECK(cudaMemcpyAsync(final_state, S0, sizeof(float) * B * H * dk * dv, cudaMemcpyDeviceToDevice, 0));
            else CUDA_CHECK(cudaMemsetAsync(final_state, 0, sizeof(float) * B * H * dk * dv, 0));
        }
        return;
    }
    scratch s = saved ? carve_saved(saved, d) : alloc_scratch(d, false);
    // P is saved only for local2, which reads it (HYLA_GDR_LOCAL2: the same setting forward and
    // backward; until its GPU run the default path writes nothing new)
    if (!use_local2()) s.p = nullptr;
    launch_prep(s, q, k, v, beta, g, d);
    launch_state_fwd(s, final_state, S0, d);
    launch_out(o, s, q, k, d);
    if (!saved) free_scratch(s);
}
