// CUDA: the chunked gated delta rule, backward pass (MODEL.md §3.5, B1-B6; the CPU twin's
// bwd_* functions, step for step). Launches:
//   prep + state (the forward's, B1)   T, -W, U, Ke, Qs, gam; Delta and the states H_n
//   local  (one block per chunk)       ddl = scale (Q K^T ⊙ E)^T dO, and dO in bf16
//   state  (one block per (b, h, 32 value columns), in reverse over the chunks)
//                                      ddelta = ddl + Ke G, G <- e^{gam_last} G + Qs^T dO - W^T ddelta
//   grads  (one block per chunk)       dq, dk, dv, dbeta, dg from H_n, G (at the chunk's end), ddelta
//     or, with HYLA_GDR_GRADS2=1, the same in two kernels of two blocks per SM each:
//   grads_dq (one block per chunk)     dq; dk's and dgam's first terms (into dk, dg)
//   grads_dk (one block per chunk)     the rest of dk, dv, dbeta, dg
//   with HYLA_GDR_FWD2=1 the state step over 16 value columns a block, two blocks per SM
//   (state_bwd2_kernel; the same bits)
// Only one state and one state gradient per chunk are kept; every sum has a fixed order.
#include "backend_cuda.h"
#include "cuda_gdr_chunk.cuh"
#include "cuda_switch.h"

namespace gdrc {
namespace {

// Sum over a warp in a fixed order (every lane gets the total).
__device__ inline float warp_total(float x) {
    for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}

// One row of l2norm_bwd (cuda_gdn_parts.cu's l2norm_bwd_kernel) by this warp, the same
// operations in the same order: dot = sum of dy y over lane i = lane, lane + 32, ..., then the
// warp's tree; dx = r (dy - dot y). dy(i) gives the incoming gradient (the delta rule's own dq
// or dk, not stored first); y the normalised row (the delta rule's q or k input); dx may be
// where dy came from (each lane reads its elements before it writes them).
template <typename DY>
__device__ inline void l2norm_rows_bwd(float *dx, DY dy, const float *y, float r, int dim) {
    const int lane = threadIdx.x % 32;
    float dot = 0;
    for (int i = lane; i < dim; i += 32) dot += dy(i) * y[i];
    dot = warp_total(dot);
    for (int i = lane; i < dim; i += 32) dx[i] = r * (dy(i) - dot * y[i]);
}

constexpr size_t LOCAL_SMEM = 3 * carve_size(sizeof(bf16) * CH * LDH) + carve_size(sizeof(float) * WARPS * 256) +
                              carve_size(sizeof(bf16) * CH * LDS) + carve_size(sizeof(float) * CH);

// B2's intra-chunk part for chunk blockIdx.x of (b, h) = blockIdx.y; also dO as padded bf16.
__global__ void __launch_bounds__(THREADS) local_kernel(float *ddl, bf16 *dob, scratch s, const float *q,
                                                        const float *k, const float *dout, dims d) {
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Qr = sc.take<bf16>(CH * LDH), *Kh = sc.take<bf16>(CH * LDH), *Oh = sc.take<bf16>(CH * LDH);
    float *stage = sc.take<float>(WARPS * 256);
    bf16 *Ph = sc.take<bf16>(CH * LDS);
    float *gc = sc.take<float>(CH);
    const int n = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H, tid = threadIdx.x;
    const int t0 = n * CH, c = min(CH, d.L - t0), dkp = d.dkp, dvp = d.dvp;
    const size_t cb = (size_t)bh * d.nt + n, row0 = ((size_t)b * d.L + t0) * d.H + h;
    if (tid < CH) gc[tid] = s.gcum[cb * CH + tid];
    load_rows_bf16(Qr, LDH, q + row0 * d.dk, (size_t)d.H * d.dk, c, d.dk, dkp);
    load_rows_bf16(Kh, LDH, k + row0 * d.dk, (size_t)d.H * d.dk, c, d.dk, dkp);
    load_rows_bf16(Oh, LDH, dout + row0 * d.dv, (size_t)d.H * d.dv, c, d.dv, dvp);
    __syncthreads();
    for (int e = tid; e < CH * dvp; e += THREADS) dob[cb * CH * dvp + e] = Oh[(e / dvp) * LDH + e % dvp];
    mma_apply<false, true>(Qr, LDH, Kh, LDH, CH, CH, dkp, stage, [&](int r, int j, float x) {
        Ph[r * LDS + j] = __float2bfloat16(j <= r ? d.scale * x * expf(gc[r] - gc[j]) : 0.0f);
    });
    __syncthreads();
    float *out = ddl + cb * CH * dvp;
    mma_apply<true, false>(Ph, LDS, Oh, LDH, CH, dvp, CH, stage, [&](int r, int j, float x) { out[r * dvp + j] = x; });
}

constexpr size_t STATE_SMEM = 3 * carve_size(sizeof(bf16) * 2 * CH * LDH) + carve_size(sizeof(bf16) * 2 * CH * LDVH) +
                              carve_size(sizeof(float) * 2 * CH * LDVF) + carve_size(sizeof(float) * DMAX * LDVF) +
                              carve_size(sizeof(bf16) * DMAX * LDVH) + carve_size(sizeof(bf16) * CH * LDVH);

// B2-B3 for (b, h) = blockIdx.x, value columns j0 = 32 blockIdx.y onwards, chunks in reverse:
// writes G_end (the gradient of the state after each chunk) and ddelta.
__global__ void __launch_bounds__(THREADS) state_bwd_kernel(bf16 *gend, bf16 *dd, float *dS0, scratch s,
                                                            const bf16 *dob, const float *ddl, const float *dS_final,
                                                            dims d) {
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    // double buffers, indexed by chunk parity through arithmetic (a pointer array would live in local memory)
    bf16 *Ke0 = sc.take<bf16>(2 * CH * LDH), *Wn0 = sc.take<bf16>(2 * CH * LDH), *Qs0 = sc.take<bf16>(2 * CH * LDH);
    bf16 *Ob0 = sc.take<bf16>(2 * CH * LDVH);
    float *Db0 = sc.take<float>(2 * CH * LDVF);
    auto Ke = [&](int x) { return Ke0 + x * CH * LDH; };
    auto Wn = [&](int x) { return Wn0 + x * CH * LDH; };
    auto Qs = [&](int x) { return Qs0 + x * CH * LDH; };
    auto Ob = [&](int x) { return Ob0 + x * CH * LDVH; };
    auto Db = [&](int x) { return Db0 + x * CH * LDVF; };
    float *G = sc.take<float>(DMAX * LDVF);
    bf16 *Gh = sc.take<bf16>(DMAX * LDVH), *Dh = sc.take<bf16>(CH * LDVH);
    const int bh = blockIdx.x, j0 = blockIdx.y * BV, tid = threadIdx.x, dkp = d.dkp, dvp = d.dvp;
    const size_t s_size = (size_t)d.dk * d.dv;
    for (int e = tid; e < dkp * BV; e += THREADS) {
        const int i = e / BV, j = e % BV;
        const float x = (dS_final && i < d.dk && j0 + j < d.dv) ? dS_final[bh * s_size + (size_t)i * d.dv + j0 + j] : 0.0f;
        G[i * LDVF + j] = x;
        Gh[i * LDVH + j] = __float2bfloat16(x);
    }
    auto fetch = [&](int n, int x) {
        const size_t cb = (size_t)bh * d.nt + n;
        copy_async_bf16(Ke(x), LDH, s.ke + cb * CH * dkp, dkp, CH, dkp);
        copy_async_bf16(Wn(x), LDH, s.wn + cb * CH * dkp, dkp, CH, dkp);
        copy_async_bf16(Qs(x), LDH, s.qs + cb * CH * dkp, dkp, CH, dkp);
        copy_async_bf16(Ob(x), LDVH, dob + cb * CH * dvp + j0, dvp, CH, BV);
        copy_async_f32(Db(x), LDVF, ddl + cb * CH * dvp + j0, dvp, CH, BV);
        __pipeline_commit();
    };
    fetch(d.nt - 1, 0);
    for (int n = d.nt - 1; n >= 0; n--) {
        const int x = (d.nt - 1 - n) & 1;
        const size_t cb = (size_t)bh * d.nt + n;
        __pipeline_wait_prior(0);
        __syncthreads(); // chunk n's operands and Gh in place; buffer x^1 free
        if (n > 0) fetch(n - 1, x ^ 1);
        for (int e = tid; e < dkp * BV; e += THREADS) {
            const int i = e / BV, j = e % BV;
            gend[cb * dkp * dvp + (size_t)i * dvp + j0 + j] = Gh[i * LDVH + j];
        }
        mma<false, false>(Db(x), LDVF, Ke(x), LDH, Gh, LDVH, CH, BV, dkp, 1.0f, true); // ddelta = ddl + Ke G
        __syncthreads();
        const float a = expf(s.gcum[cb * CH + CH - 1]);
        for (int e = tid; e < CH * BV; e += THREADS) {
            const int r = e / BV, j = e % BV;
            const bf16 x16 = __float2bfloat16(Db(x)[r * LDVF + j]);
            Dh[r * LDVH + j] = x16;
            dd[cb * CH * dvp + (size_t)r * dvp + j0 + j] = x16;
        }
        for (int e = tid; e < dkp * BV; e += THREADS) G[(e / BV) * LDVF + e % BV] *= a;
        __syncthreads();
        mma<true, false>(G, LDVF, Qs(x), LDH, Ob(x), LDVH, dkp, BV, CH, 1.0f, true); // + scale (e^gam Q)^T dO
        __syncthreads();
        mma<true, false>(G, LDVF, Wn(x), LDH, Dh, LDVH, dkp, BV, CH, 1.0f, true); // - W^T ddelta
        __syncthreads();
        for (int e = tid; e < dkp * BV; e += THREADS) Gh[(e / BV) * LDVH + e % BV] = __float2bfloat16(G[(e / BV) * LDVF + e % BV]);
    }
    if (dS0)
        for (int e = tid; e < dkp * BV; e += THREADS) {
            const int i = e / BV, j = e % BV;
            if (i < d.dk && j0 + j < d.dv) dS0[bh * s_size + (size_t)i * d.dv + j0 + j] = G[i * LDVF + j];
        }
}

// B2-B3 as state_bwd_kernel over BVT (16) value columns a block, two blocks per SM
// (HYLA_GDR_FWD2=1; the same bits: each column's chain is independent, and a 16 x 16 tile sums
// over k in the same order whatever the slice's width). To fit, the chunk operands Ke, Qs, -W
// of the walk's step i take three of four rotating slots, each refilled for step i + 1 as soon
// as its product is done: Ke_{i+1} into the free slot at the top of step i, Qs_{i+1} over Ke_i
// after ddelta, -W_{i+1} over Qs_i after the Qs^T dO product. Slot of role r (0 Ke, 1 Qs, 2 -W,
// 3 free) at step i: (r - i) mod 4. Three cp.async groups a step (empty ones past the last
// chunk, so that "all but the newest two" always names the group needed).
template <int BVT> constexpr size_t state_bwd2_smem() {
    return carve_size(sizeof(bf16) * 4 * CH * LDH) + carve_size(sizeof(bf16) * 2 * CH * (BVT + 8)) +
           carve_size(sizeof(float) * 2 * CH * (BVT + 4)) + carve_size(sizeof(float) * DMAX * (BVT + 4)) +
           carve_size(sizeof(bf16) * DMAX * (BVT + 8)) + carve_size(sizeof(bf16) * CH * (BVT + 8));
}
constexpr int BV2 = 16; // value columns a block of the two-per-SM state chain
static_assert(state_bwd2_smem<BV2>() <= SMEM_TWO_PER_SM, "two blocks per SM");

template <int BVT>
__global__ void __launch_bounds__(THREADS, 2) state_bwd2_kernel(bf16 *gend, bf16 *dd, float *dS0, scratch s,
                                                                const bf16 *dob, const float *ddl,
                                                                const float *dS_final, dims d) {
    constexpr int LVF = BVT + 4, LVH = BVT + 8;
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Op0 = sc.take<bf16>(4 * CH * LDH), *Ob0 = sc.take<bf16>(2 * CH * LVH);
    float *Db0 = sc.take<float>(2 * CH * LVF);
    auto slot = [&](int r, int i) { return Op0 + ((r - i) & 3) * CH * LDH; };
    auto Ob = [&](int x) { return Ob0 + x * CH * LVH; };
    auto Db = [&](int x) { return Db0 + x * CH * LVF; };
    float *G = sc.take<float>(DMAX * LVF);
    bf16 *Gh = sc.take<bf16>(DMAX * LVH), *Dh = sc.take<bf16>(CH * LVH);
    const int bh = blockIdx.x, j0 = blockIdx.y * BVT, tid = threadIdx.x, dkp = d.dkp, dvp = d.dvp, nt = d.nt;
    const size_t s_size = (size_t)d.dk * d.dv;
    for (int e = tid; e < dkp * BVT; e += THREADS) {
        const int i = e / BVT, j = e % BVT;
        const float x = (dS_final && i < d.dk && j0 + j < d.dv) ? dS_final[bh * s_size + (size_t)i * d.dv + j0 + j] : 0.0f;
        G[i * LVF + j] = x;
        Gh[i * LVH + j] = __float2bfloat16(x);
    }
    // step i of the walk is chunk n = nt - 1 - i; each fetch commits one group, empty past the end
    auto fetch_a = [&](int i) { // Ke, dO, ddl
        if (i < nt) {
            const size_t cb = (size_t)bh * nt + (nt - 1 - i);
            copy_async_bf16(slot(0, i), LDH, s.ke + cb * CH * dkp, dkp, CH, dkp);
            copy_async_bf16(Ob(i & 1), LVH, dob + cb * CH * dvp + j0, dvp, CH, BVT);
            copy_async_f32(Db(i & 1), LVF, ddl + cb * CH * dvp + j0, dvp, CH, BVT);
        }
        __pipeline_commit();
    };
    auto fetch_b = [&](int i) { // Qs
        if (i < nt) copy_async_bf16(slot(1, i), LDH, s.qs + ((size_t)bh * nt + (nt - 1 - i)) * CH * dkp, dkp, CH, dkp);
        __pipeline_commit();
    };
    auto fetch_c = [&](int i) { // -W
        if (i < nt) copy_async_bf16(slot(2, i), LDH, s.wn + ((size_t)bh * nt + (nt - 1 - i)) * CH * dkp, dkp, CH, dkp);
        __pipeline_commit();
    };
    fetch_a(0), fetch_b(0), fetch_c(0);
    for (int i = 0; i < nt; i++) {
        const int n = nt - 1 - i, x = i & 1;
        const size_t cb = (size_t)bh * nt + n;
        const float glast = s.gcum[cb * CH + CH - 1];
        __pipeline_wait_prior(2); // group a of step i (b and c may be in flight)
        __syncthreads();          // Ke, dO, ddl of chunk n and Gh in place; the free slot and buffers x^1 free
        fetch_a(i + 1);
        for (int e = tid; e < dkp * BVT; e += THREADS) {
            const int r = e / BVT, j = e % BVT;
            gend[cb * dkp * dvp + (size_t)r * dvp + j0 + j] = Gh[r * LVH + j];
        }
        mma<false, false>(Db(x), LVF, slot(0, i), LDH, Gh, LVH, CH, BVT, dkp, 1.0f, true); // ddelta = ddl + Ke G
        __pipeline_wait_prior(2); // group b of step i
        __syncthreads();          // Ke_i dead: Qs_{i+1} takes its slot
        fetch_b(i + 1);
        const float a = expf(glast);
        for (int e = tid; e < CH * BVT; e += THREADS) {
            const int r = e / BVT, j = e % BVT;
            const bf16 x16 = __float2bfloat16(Db(x)[r * LVF + j]);
            Dh[r * LVH + j] = x16;
            dd[cb * CH * dvp + (size_t)r * dvp + j0 + j] = x16;
        }
        for (int e = tid; e < dkp * BVT; e += THREADS) G[(e / BVT) * LVF + e % BVT] *= a;
        __syncthreads();
        mma<true, false>(G, LVF, slot(1, i), LDH, Ob(x), LVH, dkp, BVT, CH, 1.0f, true); // + scale (e^gam Q)^T dO
        __pipeline_wait_prior(2); // group c of step i
        __syncthreads();          // Qs_i dead: -W_{i+1} takes its slot
        fetch_c(i + 1);
        mma<true, false>(G, LVF, slot(2, i), LDH, Dh, LVH, dkp, BVT, CH, 1.0f, true); // - W^T ddelta
        __syncthreads();
        for (int e = tid; e < dkp * BVT; e += THREADS) Gh[(e / BVT) * LVH + e % BVT] = __float2bfloat16(G[(e / BVT) * LVF + e % BVT]);
    }
    __pipeline_wait_prior(0); // the empty groups past the end
    if (dS0)
        for (int e = tid; e < dkp * BVT; e += THREADS) {
            const int i = e / BVT, j = e % BVT;
            if (i < d.dk && j0 + j < d.dv) dS0[bh * s_size + (size_t)i * d.dv + j0 + j] = G[i * LVF + j];
        }
}

// The grads step's end, the same in grads_kernel and grads_dk_kernel (every thread, after a
// barrier): dA's row sums for dbeta and dgam, dk += diag(beta) dM K + dM^T diag(beta) K onto the
// partial dk in F1 (Kh: K, bK: diag(beta) K, both bf16), then dk, dbeta and dg (B4's last-row
// terms from red and kd, B6's reverse cumulative sum).
__device__ inline void grads_finish(float *dk, float *dbeta, float *dg, float *F1, const float *dA, const bf16 *HS,
                                    const bf16 *dMh, const bf16 *Kh, const bf16 *bK, const float *bt, const float *eg,
                                    float *ra, float *rb, float *dbs, float *dgam, const float *red, const float *kd,
                                    size_t row0, int c, int dkp, const dims &d) {
    const int tid = threadIdx.x;
    if (tid < CH) {
        float x = 0.0f;
        for (int j = 0; j < tid; j++) x += dA[tid * LDSF + j];
        ra[tid] = x;
    } else if (tid < 2 * CH) {
        const int j = tid - CH;
        float x = 0.0f;
        for (int r = j + 1; r < CH; r++) x += bt[r] * dA[r * LDSF + j];
        rb[j] = x;
    }
    // (i) dk += diag(beta) dM K + dM^T diag(beta) K
    mma<false, false>(F1, LDF, HS, LDS, Kh, LDH, CH, dkp, CH, 1.0f, true);
    __syncthreads();
    mma<true, false>(F1, LDF, dMh, LDS, bK, LDH, CH, dkp, CH, 1.0f, true);
    if (tid < CH) dbs[tid] += ra[tid], dgam[tid] += bt[tid] * ra[tid] - rb[tid];
    __syncthreads();
    for (int e = tid; e < c * d.dk; e += THREADS) {
        const int r = e / d.dk, i = e % d.dk;
        dk[(row0 + (size_t)r * d.H) * d.dk + i] = F1[r * LDF + i];
    }
    if (tid < c) dbeta[row0 + (size_t)tid * d.H] = dbs[tid];
    if (tid == 0) { // B4's last-row terms, then B6: dg = reverse cumsum of dgam
        float hg = 0.0f, kdkh = 0.0f;
        for (int w = 0; w < WARPS; w++) hg += red[w];
        for (int r = 0; r < c; r++) kdkh += kd[r];
        dgam[c - 1] += eg[c - 1] * hg + kdkh;
        float acc = 0.0f;
        for (int r = c - 1; r >= 0; r--) dg[row0 + (size_t)r * d.H] = acc += dgam[r];
    }
}

constexpr size_t H64 = carve_size(sizeof(bf16) * CH * LDH), F64 = carve_size(sizeof(float) * CH * LDF);
constexpr size_t GRADS_SMEM = 4 * H64 + carve_size(sizeof(bf16) * DMAX * LDH) + 2 * carve_size(sizeof(float) * CH * LDSF) +
                              carve_size(sizeof(bf16) * CH * LDS) + 2 * F64 + 12 * carve_size(sizeof(float) * CH);
static_assert(carve_size(sizeof(float) * CH * LDSF) >= H64, "a 64 x 64 fp32 buffer holds a 64 x 128 bf16 one");
static_assert(carve_size(sizeof(bf16) * DMAX * LDH) >= F64, "the state buffer holds a 64 x 128 fp32 one");

// B4-B6 for chunk blockIdx.x of (b, h) = blockIdx.y. Buffers are reused as values die (see
// the comments at each step); one row per warp where a row sum is needed.
__global__ void __launch_bounds__(THREADS) grads_kernel(float *dq, float *dk, float *dv, float *dbeta, float *dg,
                                                        scratch s, const bf16 *dob, const bf16 *gend, const bf16 *dd,
                                                        const float *q, const float *k, const float *v,
                                                        const float *beta, dims d) {
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Qh = sc.take<bf16>(CH * LDH), *Kh = sc.take<bf16>(CH * LDH), *Ob = sc.take<bf16>(CH * LDH);
    bf16 *Dh = sc.take<bf16>(CH * LDH), *SG = sc.take<bf16>(DMAX * LDH);
    float *FS1 = sc.take<float>(CH * LDSF), *FS2 = sc.take<float>(CH * LDSF);
    bf16 *HS = sc.take<bf16>(CH * LDS);
    float *F1 = sc.take<float>(CH * LDF), *F2 = sc.take<float>(CH * LDF);
    float *gc = sc.take<float>(CH), *eg = sc.take<float>(CH), *el = sc.take<float>(CH), *bt = sc.take<float>(CH);
    float *fb = sc.take<float>(CH), *dgam = sc.take<float>(CH), *dbs = sc.take<float>(CH);
    float *ra = sc.take<float>(CH), *rb = sc.take<float>(CH), *rc = sc.take<float>(CH), *kd = sc.take<float>(CH);
    float *red = sc.take<float>(CH);
    const int n = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H, tid = threadIdx.x;
    const int lane = tid % 32, warp = tid / 32;
    const int t0 = n * CH, c = min(CH, d.L - t0), dkp = d.dkp, dvp = d.dvp;
    const size_t cb = (size_t)bh * d.nt + n, row0 = ((size_t)b * d.L + t0) * d.H + h;
    const size_t sk = (size_t)d.H * d.dk, sv = (size_t)d.H * d.dv;
    const float *qc = q + row0 * d.dk, *kc = k + row0 * d.dk, *vc = v + row0 * d.dv;
    const float scale = d.scale;
    copy_async_bf16(Ob, LDH, dob + cb * CH * dvp, dvp, CH, dvp);
    copy_async_bf16(Dh, LDH, s.delta + cb * CH * dvp, dvp, CH, dvp);
    copy_async_bf16(SG, LDH, s.states + cb * dkp * dvp, dvp, dkp, dvp); // H_n
    __pipeline_commit();
    if (tid < CH) {
        gc[tid] = s.gcum[cb * CH + tid];
        eg[tid] = expf(gc[tid]);
        bt[tid] = tid < c ? beta[row0 + (size_t)tid * d.H] : 0.0f;
        fb[tid] = bt[tid] * eg[tid];
        dgam[tid] = 0.0f;
    }
    __syncthreads();
    if (tid < CH) el[tid] = expf(gc[CH - 1] - gc[tid]);
    load_rows_bf16(Qh, LDH, qc, sk, c, d.dk, dkp);
    load_rows_bf16(Kh, LDH, kc, sk, c, d.dk, dkp);
    // <H_n, G_end> for dgam_last, straight from device memory in a fixed order
    {
        const bf16 *hs = s.states + cb * dkp * dvp, *gs = gend + cb * dkp * dvp;
        float part = 0.0f;
        for (int e = tid; e < dkp * dvp; e += THREADS) part += __bfloat162float(hs[e]) * __bfloat162float(gs[e]);
        part = warp_total(part);
        if (lane == 0) red[warp] = part;
    }
    copy_async_wait();
    __syncthreads();

    // (a) P = dO Delta^T, Q K^T; Z = scale P ⊙ (Q K^T ⊙ E) gives dgam's intra-chunk terms
    mma<false, true>(FS1, LDSF, Ob, LDH, Dh, LDH, CH, CH, dvp);
    mma<false, true>(FS2, LDSF, Qh, LDH, Kh, LDH, CH, CH, dkp);
    __syncthreads();
    for (int e = tid; e < CH * CH; e += THREADS) {
        const int r = e / CH, j = e % CH;
        const float E = j <= r ? expf(gc[r] - gc[j]) : 0.0f, p = FS1[r * LDSF + j];
        FS2[r * LDSF + j] = scale * p * FS2[r * LDSF + j] * E;
        HS[r * LDS + j] = __float2bfloat16(p * E); // Pm = P ⊙ E, causal
    }
    __syncthreads();
    if (tid < CH) { // row sums of Z
        float x = 0.0f;
        for (int j = 0; j <= tid; j++) x += FS2[tid * LDSF + j];
        ra[tid] = x;
    } else if (tid < 2 * CH) { // column sums
        const int j = tid - CH;
        float x = 0.0f;
        for (int r = j; r < CH; r++) x += FS2[r * LDSF + j];
        rb[j] = x;
    }
    // (b) doh = dO H_n^T (F2), then dq = scale (Pm K + diag(e^gam) doh)
    mma<false, true>(F2, LDF, Ob, LDH, SG, LDH, CH, dkp, dvp);
    __syncthreads();
    if (tid < CH) dgam[tid] = ra[tid] - rb[tid];
    for (int r = warp; r < CH; r += WARPS) {
        float part = 0.0f;
        for (int i = lane; i < dkp; i += 32) {
            const float x = F2[r * LDF + i];
            if (r < c && i < d.dk) part += x * qc[(size_t)r * sk + i];
            F2[r * LDF + i] = eg[r] * x;
        }
        part = warp_total(part);
        if (lane == 0) rc[r] = scale * eg[r] * part;
    }
    __syncthreads();
    if (tid < CH) dgam[tid] += rc[tid];
    mma<false, false>(F2, LDF, HS, LDS, Kh, LDH, CH, dkp, CH, 1.0f, true);
    mma<true, false>(F1, LDF, HS, LDS, Qh, LDH, CH, dkp, CH, scale); // (c) dk = scale Pm^T Q + ...
    __syncthreads();
    for (int e = tid; e < c * d.dk; e += THREADS) {
        const int r = e / d.dk, i = e % d.dk;
        dq[(row0 + (size_t)r * d.H) * d.dk + i] = scale * F2[r * LDF + i];
    }
    // (d) dW = -ddelta H_n^T, as bf16 in FS1's place (P is dead); ddelta replaces dO
    copy_async_bf16(Ob, LDH, dd + cb * CH * dvp, dvp, CH, dvp);
    copy_async_wait();
    __syncthreads();
    bf16 *dWh = (bf16 *)FS1, *ddh = Ob;
    mma<false, true>(F2, LDF, ddh, LDH, SG, LDH, CH, dkp, dvp);
    __syncthreads();
    for (int e = tid; e < CH * dkp; e += THREADS) {
        const int r = e / dkp, i = e % dkp;
        dWh[r * LDH + i] = __float2bfloat16(-F2[r * LDF + i]);
    }
    // (e) G_end replaces H_n; dkh = diag(e^{gam_last - gam}) Delta G^T
    copy_async_bf16(SG, LDH, gend + cb * dkp * dvp, dvp, dkp, dvp);
    copy_async_wait();
    __syncthreads();
    mma<false, true>(F2, LDF, Dh, LDH, SG, LDH, CH, dkp, dvp);
    __syncthreads();
    for (int r = warp; r < CH; r += WARPS) {
        float part = 0.0f;
        for (int i = lane; i < dkp; i += 32) {
            const float x = el[r] * F2[r * LDF + i];
            if (r < c && i < d.dk) part += x * kc[(size_t)r * sk + i];
            F1[r * LDF + i] += x;
        }
        part = warp_total(part);
        if (lane == 0) kd[r] = part;
    }
    __syncthreads();
    if (tid < CH) dgam[tid] -= kd[tid];
    // (f) through W = T Kb, U = T Vb: T^T dW, T^T ddelta. T replaces Pm, -W replaces Q, U
    // (as bf16) replaces Delta; T^T ddelta goes where G was.
    copy_async_bf16(HS, LDS, s.t + cb * CH * CH, CH, CH, CH);
    copy_async_bf16(Qh, LDH, s.wn + cb * CH * dkp, dkp, CH, dkp);
    __pipeline_commit();
    for (int e = tid; e < CH * dvp; e += THREADS) {
        const int r = e / dvp, j = e % dvp;
        Dh[r * LDH + j] = __float2bfloat16(s.u[cb * CH * dvp + e]);
    }
    __pipeline_wait_prior(0);
    __syncthreads();
    float *tdu = (float *)SG;
    mma<true, false>(F2, LDF, HS, LDS, dWh, LDH, CH, dkp, CH);
    mma<true, false>(tdu, LDF, HS, LDS, ddh, LDH, CH, dvp, CH);
    __syncthreads();
    bf16 *tdwh = (bf16 *)FS2, *tduh = (bf16 *)FS1; // Z and dW are dead
    for (int r = warp; r < CH; r += WARPS) {
        float kt = 0.0f, vt = 0.0f;
        for (int i = lane; i < dkp; i += 32) {
            const float x = F2[r * LDF + i];
            if (r < c && i < d.dk) kt += x * kc[(size_t)r * sk + i];
            F1[r * LDF + i] += fb[r] * x;
            tdwh[r * LDH + i] = __float2bfloat16(x);
        }
        for (int j = lane; j < dvp; j += 32) {
            const float x = tdu[r * LDF + j];
            if (r < c && j < d.dv) {
                vt += x * vc[(size_t)r * sv + j];
                dv[(row0 + (size_t)r * d.H) * d.dv + j] = bt[r] * x;
            }
            tduh[r * LDH + j] = __float2bfloat16(-x);
        }
        kt = warp_total(kt), vt = warp_total(vt);
        if (lane == 0) dbs[r] = eg[r] * kt + vt, ra[r] = fb[r] * kt;
    }
    __syncthreads();
    if (tid < CH) dgam[tid] += ra[tid];
    // (g) dA = (T^T dW) (-W)^T + (-T^T ddelta) U^T (F2 as 64 x 64); K K^T where G was
    float *dA = F2, *kk = (float *)SG;
    bf16 *dMh = (bf16 *)((char *)SG + carve_size(sizeof(float) * CH * LDSF));
    mma<false, true>(dA, LDSF, tdwh, LDH, Qh, LDH, CH, CH, dkp);
    mma<false, true>(kk, LDSF, Kh, LDH, Kh, LDH, CH, CH, dkp);
    __syncthreads();
    mma<false, true>(dA, LDSF, tduh, LDH, Dh, LDH, CH, CH, dvp, 1.0f, true);
    __syncthreads();
    // (h) dM = strict_lower(dA ⊙ E); y = dM ⊙ K K^T gives dbeta and dgam; beta K replaces ddelta
    for (int e = tid; e < CH * CH; e += THREADS) {
        const int r = e / CH, j = e % CH;
        const float dm = j < r ? dA[r * LDSF + j] * expf(gc[r] - gc[j]) : 0.0f;
        dA[r * LDSF + j] = dm * kk[r * LDSF + j];
        HS[r * LDS + j] = __float2bfloat16(bt[r] * dm); // diag(beta) dM
        dMh[r * LDS + j] = __float2bfloat16(dm);
    }
    load_rows_bf16(Ob, LDH, kc, sk, c, d.dk, dkp, bt);
    __syncthreads();
    grads_finish(dk, dbeta, dg, F1, dA, HS, dMh, Kh, Ob, bt, eg, ra, rb, dbs, dgam, red, kd, row0, c, dkp, d);
}

// The same step as two kernels that each fit two blocks on an SM (16 warps instead of 8 to
// overlap one block's barriers and loads with the other's work): grads_dq_kernel (B4's terms
// through P and dO H_n^T: dq, dk's first term Pm^T Q, dgam's first terms) and grads_dk_kernel
// (the rest of dk, dv, dbeta, dg). The first hands dk's and dgam's partial sums to the second
// through dk and dg themselves (fp32, so nothing is rounded on the way). Every product and
// element step is grads_kernel's, in the same order: the same bits (emu.gdr_chunk compares).
// HYLA_GDR_GRADS2=1 / 0 chooses; off until a GPU run has timed it (GRADS2_BY_DEFAULT).

constexpr size_t S128 = carve_size(sizeof(bf16) * DMAX * LDH), FS64 = carve_size(sizeof(float) * CH * LDSF),
                 HS64 = carve_size(sizeof(bf16) * CH * LDS), STAGE = carve_size(sizeof(float) * WARPS * 256),
                 VEC = carve_size(sizeof(float) * CH);
constexpr size_t GRADS_DQ_SMEM = 4 * H64 + FS64 + HS64 + STAGE + 5 * VEC;
constexpr size_t GRADS_DK_SMEM = F64 + S128 + 2 * H64 + HS64 + 11 * VEC;
static_assert(GRADS_DQ_SMEM <= SMEM_TWO_PER_SM && GRADS_DK_SMEM <= SMEM_TWO_PER_SM, "two blocks per SM");
static_assert(H64 + FS64 == S128, "a 64-row bf16 buffer and a 64 x 64 fp32 one, side by side, hold a state");
static_assert(FS64 <= H64 && S128 == 2 * H64, "a 64 x 64 fp32 buffer fits in a 64-row bf16 one");

// Loads from device memory with every load of a thread issued before the first is used, so
// that a step waits for memory once rather than once per loop round (grads_kernel's loops
// wait up to 16 times; the values, and so the bits, are the same).
constexpr int ROWS_PER_WARP = CH / WARPS, COLS_PER_LANE = DMAX / 32;

// This warp's rows r = warp + WARPS m of a chunk of a [B, L, H, width] tensor at the columns
// i = lane + 32 j of a row pass: x[m][j], zero outside the true sizes.
__device__ inline void warp_rows(float (&x)[ROWS_PER_WARP][COLS_PER_LANE], const float *src, size_t row_stride, int c,
                                 int width) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int m = 0; m < ROWS_PER_WARP; m++)
#pragma unroll
        for (int j = 0; j < COLS_PER_LANE; j++) {
            const int r = warp + WARPS * m, i = lane + 32 * j;
            x[m][j] = r < c && i < width ? src[(size_t)r * row_stride + i] : 0.0f;
        }
}

// mma (C = alpha op(A) op(B), not accumulating) where C overlaps A or B: each warp keeps its
// tiles (at most 4: M N <= 64 x 128) in registers until every warp has read its operands.
// Every thread must call it (it has a block barrier inside); the caller synchronises after.
template <bool TA, bool TB>
__device__ void mma_in_place(float *C, int ldc, const bf16 *A, int lda, const bf16 *Bm, int ldb, int M, int N,
                             int K, float alpha = 1.0f) {
    typedef typename std::conditional<TA, wmma::col_major, wmma::row_major>::type la;
    typedef typename std::conditional<TB, wmma::col_major, wmma::row_major>::type lb;
    constexpr int HOLD = CH * DMAX / 256 / WARPS;
    const int warp = threadIdx.x / 32, tm = M / 16, tn = N / 16;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> prod[HOLD];
#pragma unroll
    for (int t = 0; t < HOLD; t++) {
        const int tile = warp + t * WARPS, mi = tile / tn, ni = tile % tn;
        if (tile >= tm * tn) break;
        wmma::fill_fragment(prod[t], 0.0f);
        for (int k = 0; k < K; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, la> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, lb> b;
            wmma::load_matrix_sync(a, TA ? A + (size_t)k * lda + mi * 16 : A + (size_t)mi * 16 * lda + k, lda);
            wmma::load_matrix_sync(b, TB ? Bm + (size_t)ni * 16 * ldb + k : Bm + (size_t)k * ldb + ni * 16, ldb);
            wmma::mma_sync(prod[t], a, b, prod[t]);
        }
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < HOLD; t++) {
        const int tile = warp + t * WARPS, mi = tile / tn, ni = tile % tn;
        if (tile >= tm * tn) break;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc; // as mma stores: 0 + alpha prod
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int e = 0; e < acc.num_elements; e++) acc.x[e] += alpha * prod[t].x[e];
        wmma::store_matrix_sync(C + (size_t)mi * 16 * ldc + ni * 16, acc, ldc, wmma::mem_row_major);
    }
}

// B4's steps (a)-(c) of grads_kernel for chunk blockIdx.x of (b, h) = blockIdx.y: dq; dk =
// scale Pm^T Q and dg = dgam's terms so far (Z's row and column sums, dO H_n^T . Q), both for
// grads_dk_kernel to go on from. P is not kept: its epilogue combines it with Q K^T at once.
__global__ void __launch_bounds__(THREADS, 2) grads_dq_kernel(float *dq, float *dk, float *dg, scratch s,
                                                              const bf16 *dob, const float *q, const float *k,
                                                              const float *rq, dims d) {
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Qh = sc.take<bf16>(CH * LDH), *Kh = sc.take<bf16>(CH * LDH), *Ob = sc.take<bf16>(CH * LDH);
    bf16 *Dh = sc.take<bf16>(CH * LDH);
    float *Z = sc.take<float>(CH * LDSF); // right after Delta: the two make room for H_n (SG)
    bf16 *HS = sc.take<bf16>(CH * LDS);
    float *stage = sc.take<float>(WARPS * 256);
    float *gc = sc.take<float>(CH), *eg = sc.take<float>(CH), *ra = sc.take<float>(CH), *rb = sc.take<float>(CH);
    float *rc = sc.take<float>(CH);
    bf16 *SG = Dh;
    const int n = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H, tid = threadIdx.x;
    const int lane = tid % 32, warp = tid / 32;
    const int t0 = n * CH, c = min(CH, d.L - t0), dkp = d.dkp, dvp = d.dvp;
    const size_t cb = (size_t)bh * d.nt + n, row0 = ((size_t)b * d.L + t0) * d.H + h;
    const size_t sk = (size_t)d.H * d.dk;
    const float *qc = q + row0 * d.dk, *kc = k + row0 * d.dk;
    const float scale = d.scale;
    copy_async_bf16(Ob, LDH, dob + cb * CH * dvp, dvp, CH, dvp);
    copy_async_bf16(Dh, LDH, s.delta + cb * CH * dvp, dvp, CH, dvp);
    __pipeline_commit();
    if (tid < CH) {
        gc[tid] = s.gcum[cb * CH + tid];
        eg[tid] = expf(gc[tid]);
    }
    load_rows_bf16_at_once(Qh, LDH, qc, sk, c, d.dk, dkp);
    load_rows_bf16_at_once(Kh, LDH, kc, sk, c, d.dk, dkp);
    copy_async_wait();
    __syncthreads();

    // (a) Q K^T into Z; P = dO Delta^T through an epilogue: Z = scale P ⊙ (Q K^T ⊙ E), Pm = P ⊙ E
    mma<false, true>(Z, LDSF, Qh, LDH, Kh, LDH, CH, CH, dkp);
    __syncthreads();
    mma_apply<false, true>(Ob, LDH, Dh, LDH, CH, CH, dvp, stage, [&](int r, int j, float x) {
        const float E = j <= r ? expf(gc[r] - gc[j]) : 0.0f, p = 0.0f + x; // p as mma would store it
        Z[r * LDSF + j] = scale * p * Z[r * LDSF + j] * E;
        HS[r * LDS + j] = __float2bfloat16(p * E); // Pm = P ⊙ E, causal
    });
    __syncthreads(); // Delta is dead: H_n's first 64 rows go in its place (the rest in Z's, below)
    const bf16 *hn = s.states + cb * dkp * dvp;
    copy_async_bf16(SG, LDH, hn, dvp, min(dkp, CH), dvp);
    __pipeline_commit();
    if (tid < CH) { // row sums of Z
        float x = 0.0f;
        for (int j = 0; j <= tid; j++) x += Z[tid * LDSF + j];
        ra[tid] = x;
    } else if (tid < 2 * CH) { // column sums
        const int j = tid - CH;
        float x = 0.0f;
        for (int r = j; r < CH; r++) x += Z[r * LDSF + j];
        rb[j] = x;
    }
    // (c) dk = scale Pm^T Q (as mma stores it: 0 + alpha prod), straight to device memory
    mma_apply<true, false>(HS, LDS, Qh, LDH, CH, dkp, CH, stage, [&](int r, int i, float x) {
        if (r < c && i < d.dk) dk[(row0 + (size_t)r * d.H) * d.dk + i] = 0.0f + scale * x;
    });
    __syncthreads(); // Z is dead
    if (dkp > CH) copy_async_bf16(SG + CH * LDH, LDH, hn + CH * dvp, dvp, dkp - CH, dvp);
    copy_async_wait();
    __syncthreads();
    // (b) doh = dO H_n^T (F2, over H_n), then dq = scale (Pm K + diag(e^gam) doh)
    float *F2 = (float *)SG;
    mma_in_place<false, true>(F2, LDF, Ob, LDH, SG, LDH, CH, dkp, dvp);
    float qr[ROWS_PER_WARP][COLS_PER_LANE]; // this warp's rows of q, in flight through the barrier
    warp_rows(qr, qc, sk, c, d.dk);
    __syncthreads();
#pragma unroll
    for (int m = 0; m < ROWS_PER_WARP; m++) {
        const int r = warp + WARPS * m;
        float part = 0.0f;
#pragma unroll
        for (int j = 0; j < COLS_PER_LANE; j++) {
            const int i = lane + 32 * j;
            if (i >= dkp) break;
            const float x = F2[r * LDF + i];
            if (r < c && i < d.dk) part += x * qr[m][j];
            F2[r * LDF + i] = eg[r] * x;
        }
        part = warp_total(part);
        if (lane == 0) rc[r] = scale * eg[r] * part;
    }
    __syncthreads();
    if (tid < c) {
        float x = ra[tid] - rb[tid];
        x += rc[tid];
        dg[row0 + (size_t)tid * d.H] = x;
    }
    mma<false, false>(F2, LDF, HS, LDS, Kh, LDH, CH, dkp, CH, 1.0f, true);
    __syncthreads();
    if (rq) { // dq through q's L2 norm (rq: 1/|q_raw|), as l2norm_bwd would take it: q_raw's gradient
        for (int m = 0; m < ROWS_PER_WARP; m++) {
            const int r = warp + WARPS * m;
            if (r >= c) break;
            float *out = dq + (row0 + (size_t)r * d.H) * d.dk;
            // (__fmul_rn: dq's value as the store below rounds it, whatever the compiler fuses after)
            l2norm_rows_bwd(out, [&](int i) { return __fmul_rn(scale, F2[r * LDF + i]); }, qc + (size_t)r * sk,
                            rq[row0 + (size_t)r * d.H], d.dk);
        }
        return;
    }
    for (int e = tid; e < c * d.dk; e += THREADS) {
        const int r = e / d.dk, i = e % d.dk;
        dq[(row0 + (size_t)r * d.H) * d.dk + i] = scale * F2[r * LDF + i];
    }
}

// B4-B6's steps (d)-(i) of grads_kernel for chunk blockIdx.x of (b, h) = blockIdx.y, going on
// from grads_dq_kernel's dk and dg. Step (e) comes before (d) (they are independent), so that
// Delta and G_end are dead before ddelta and H_n arrive. Buffers: F1 (dk), X (a state, or two
// 64-row halves X1, X2), P1, P2 (64 rows each), HS (64 x 64 bf16).
__global__ void __launch_bounds__(THREADS, 2) grads_dk_kernel(float *dk, float *dv, float *dbeta, float *dg,
                                                              scratch s, const bf16 *gend, const bf16 *dd,
                                                              const float *k, const float *v, const float *beta,
                                                              dims d) {
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    float *F1 = sc.take<float>(CH * LDF);
    bf16 *X = sc.take<bf16>(DMAX * LDH), *P1 = sc.take<bf16>(CH * LDH), *P2 = sc.take<bf16>(CH * LDH);
    bf16 *HS = sc.take<bf16>(CH * LDS);
    float *gc = sc.take<float>(CH), *eg = sc.take<float>(CH), *el = sc.take<float>(CH), *bt = sc.take<float>(CH);
    float *fb = sc.take<float>(CH), *dgam = sc.take<float>(CH), *dbs = sc.take<float>(CH);
    float *ra = sc.take<float>(CH), *rb = sc.take<float>(CH), *kd = sc.take<float>(CH), *red = sc.take<float>(CH);
    bf16 *X1 = X, *X2 = X + CH * LDH;
    const int n = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H, tid = threadIdx.x;
    const int lane = tid % 32, warp = tid / 32;
    const int t0 = n * CH, c = min(CH, d.L - t0), dkp = d.dkp, dvp = d.dvp;
    const size_t cb = (size_t)bh * d.nt + n, row0 = ((size_t)b * d.L + t0) * d.H + h;
    const size_t sk = (size_t)d.H * d.dk, sv = (size_t)d.H * d.dv;
    const float *kc = k + row0 * d.dk, *vc = v + row0 * d.dv;
    copy_async_bf16(P1, LDH, s.delta + cb * CH * dvp, dvp, CH, dvp);
    copy_async_bf16(X, LDH, gend + cb * dkp * dvp, dvp, dkp, dvp); // G_end
    __pipeline_commit();
    if (tid < CH) {
        gc[tid] = s.gcum[cb * CH + tid];
        eg[tid] = expf(gc[tid]);
        bt[tid] = tid < c ? beta[row0 + (size_t)tid * d.H] : 0.0f;
        fb[tid] = bt[tid] * eg[tid];
        dgam[tid] = tid < c ? dg[row0 + (size_t)tid * d.H] : 0.0f;
    }
    { // dk so far (padding: zeros, never written out)
        float x[PER_THREAD];
#pragma unroll
        for (int m = 0; m < PER_THREAD; m++) {
            const int e = tid + m * THREADS, r = e / dkp, i = e % dkp;
            x[m] = e < CH * dkp && r < c && i < d.dk ? dk[(row0 + (size_t)r * d.H) * d.dk + i] : 0.0f;
        }
#pragma unroll
        for (int m = 0; m < PER_THREAD; m++) {
            const int e = tid + m * THREADS;
            if (e < CH * dkp) F1[(e / dkp) * LDF + e % dkp] = x[m];
        }
    }
    __syncthreads();
    if (tid < CH) el[tid] = expf(gc[CH - 1] - gc[tid]);
    { // <H_n, G_end> for dgam_last, straight from device memory in a fixed order, 16 pairs at once
        const bf16 *hs = s.states + cb * dkp * dvp, *gs = gend + cb * dkp * dvp;
        const int ns = dkp * dvp;
        float part = 0.0f;
        for (int e0 = tid; e0 < ns; e0 += 16 * THREADS) {
            bf16 hv[16], gv[16];
#pragma unroll
            for (int u = 0; u < 16; u++)
                if (e0 + u * THREADS < ns) hv[u] = hs[e0 + u * THREADS], gv[u] = gs[e0 + u * THREADS];
#pragma unroll
            for (int u = 0; u < 16; u++)
                if (e0 + u * THREADS < ns) part += __bfloat162float(hv[u]) * __bfloat162float(gv[u]);
        }
        part = warp_total(part);
        if (lane == 0) red[warp] = part;
    }
    copy_async_wait();
    __syncthreads();

    // (e) dkh = diag(e^{gam_last - gam}) Delta G^T (F2, over G_end)
    float *F2 = (float *)X;
    mma_in_place<false, true>(F2, LDF, P1, LDH, X, LDH, CH, dkp, dvp);
    copy_async_bf16(P1, LDH, dd + cb * CH * dvp, dvp, CH, dvp); // ddelta: Delta is dead
    __pipeline_commit();
    float kr[ROWS_PER_WARP][COLS_PER_LANE]; // this warp's rows of k (then v), in flight through the barrier
    warp_rows(kr, kc, sk, c, d.dk);
    __syncthreads();
#pragma unroll
    for (int m = 0; m < ROWS_PER_WARP; m++) {
        const int r = warp + WARPS * m;
        float part = 0.0f;
#pragma unroll
        for (int j = 0; j < COLS_PER_LANE; j++) {
            const int i = lane + 32 * j;
            if (i >= dkp) break;
            const float x = el[r] * F2[r * LDF + i];
            if (r < c && i < d.dk) part += x * kr[m][j];
            F1[r * LDF + i] += x;
        }
        part = warp_total(part);
        if (lane == 0) kd[r] = part;
    }
    __syncthreads();
    if (tid < CH) dgam[tid] -= kd[tid];
    // (d) dW = -ddelta H_n^T (F2 over H_n), as bf16 in P2; T comes with H_n
    copy_async_bf16(X, LDH, s.states + cb * dkp * dvp, dvp, dkp, dvp); // H_n
    copy_async_bf16(HS, LDS, s.t + cb * CH * CH, CH, CH, CH);
    copy_async_wait();
    __syncthreads();
    mma_in_place<false, true>(F2, LDF, P1, LDH, X, LDH, CH, dkp, dvp);
    __syncthreads();
    for (int e = tid; e < CH * dkp; e += THREADS) {
        const int r = e / dkp, i = e % dkp;
        P2[r * LDH + i] = __float2bfloat16(-F2[r * LDF + i]);
    }
    __syncthreads();
    // (f) through W = T Kb, U = T Vb: T^T dW, then T^T ddelta, each as F2 over H_n
    mma<true, false>(F2, LDF, HS, LDS, P2, LDH, CH, dkp, CH);
    warp_rows(kr, kc, sk, c, d.dk);
    __syncthreads();
    bf16 *tdwh = P2, *tduh = P1; // in place of dW and ddelta once the products are done
#pragma unroll
    for (int m = 0; m < ROWS_PER_WARP; m++) {
        const int r = warp + WARPS * m;
        float kt = 0.0f;
#pragma unroll
        for (int j = 0; j < COLS_PER_LANE; j++) {
            const int i = lane + 32 * j;
            if (i >= dkp) break;
            const float x = F2[r * LDF + i];
            if (r < c && i < d.dk) kt += x * kr[m][j];
            F1[r * LDF + i] += fb[r] * x;
            tdwh[r * LDH + i] = __float2bfloat16(x);
        }
        kt = warp_total(kt);
        if (lane == 0) ra[r] = kt; // for dbeta and dgam below
    }
    __syncthreads();
    float *tdu = F2;
    mma<true, false>(tdu, LDF, HS, LDS, P1, LDH, CH, dvp, CH);
    warp_rows(kr, vc, sv, c, d.dv);
    __syncthreads();
#pragma unroll
    for (int m = 0; m < ROWS_PER_WARP; m++) {
        const int r = warp + WARPS * m;
        float vt = 0.0f;
#pragma unroll
        for (int jj = 0; jj < COLS_PER_LANE; jj++) {
            const int j = lane + 32 * jj;
            if (j >= dvp) break;
            const float x = tdu[r * LDF + j];
            if (r < c && j < d.dv) {
                vt += x * kr[m][jj];
                dv[(row0 + (size_t)r * d.H) * d.dv + j] = bt[r] * x;
            }
            tduh[r * LDH + j] = __float2bfloat16(-x);
        }
        vt = warp_total(vt);
        if (lane == 0) {
            const float kt = ra[r];
            dbs[r] = eg[r] * kt + vt, ra[r] = fb[r] * kt;
        }
    }
    __syncthreads();
    if (tid < CH) dgam[tid] += ra[tid];
    // (g) dA = (T^T dW) (-W)^T + (-T^T ddelta) U^T in P2 (over T^T dW): -W in X1, U (as bf16) in X2
    copy_async_bf16(X1, LDH, s.wn + cb * CH * dkp, dkp, CH, dkp);
    __pipeline_commit();
    {
        float x[PER_THREAD];
#pragma unroll
        for (int m = 0; m < PER_THREAD; m++) {
            const int e = tid + m * THREADS;
            x[m] = e < CH * dvp ? s.u[cb * CH * dvp + e] : 0.0f;
        }
#pragma unroll
        for (int m = 0; m < PER_THREAD; m++) {
            const int e = tid + m * THREADS;
            if (e < CH * dvp) X2[(e / dvp) * LDH + e % dvp] = __float2bfloat16(x[m]);
        }
    }
    __pipeline_wait_prior(0);
    __syncthreads();
    float *dA = (float *)P2;
    mma_in_place<false, true>(dA, LDSF, tdwh, LDH, X1, LDH, CH, CH, dkp);
    __syncthreads();
    mma<false, true>(dA, LDSF, tduh, LDH, X2, LDH, CH, CH, dvp, 1.0f, true);
    load_rows_bf16_at_once(X1, LDH, kc, sk, c, d.dk, dkp); // K replaces -W
    __syncthreads();
    float *kk = (float *)X2; // K K^T replaces U
    mma<false, true>(kk, LDSF, X1, LDH, X1, LDH, CH, CH, dkp);
    __syncthreads();
    // (h) dM = strict_lower(dA ⊙ E); y = dM ⊙ K K^T gives dbeta and dgam; dM in P1 (over
    // -T^T ddelta), then beta K in X2 (over K K^T)
    bf16 *dMh = P1;
    for (int e = tid; e < CH * CH; e += THREADS) {
        const int r = e / CH, j = e % CH;
        const float dm = j < r ? dA[r * LDSF + j] * expf(gc[r] - gc[j]) : 0.0f;
        dA[r * LDSF + j] = dm * kk[r * LDSF + j];
        HS[r * LDS + j] = __float2bfloat16(bt[r] * dm); // diag(beta) dM
        dMh[r * LDS + j] = __float2bfloat16(dm);
    }
    __syncthreads();
    load_rows_bf16_at_once(X2, LDH, kc, sk, c, d.dk, dkp, bt);
    grads_finish(dk, dbeta, dg, F1, dA, HS, dMh, X1, X2, bt, eg, ra, rb, dbs, dgam, red, kd, row0, c, dkp, d);
}

// HYLA_GDR_DK2: grads_dk_kernel's steps (d)-(i) restructured for an H100, where that kernel
// waits more than it works (1.0 ms a call for ~12 MFLOP of products a block): about eleven
// round trips to device memory one after another (H_n and T fetched only once G_end is dead,
// k read four times, G_end and H_n twice, <H_n, G_end> in four dependent rounds of loads),
// products whose warps run one 16 x 16 tile at a time, an integer division per element in the
// element loops, and a tail of serial sums behind shared-memory latency. Here dk's partial sums
// stay in registers (each thread its rows and columns of the row passes) until the last row
// pass, which frees the fp32 buffer for H_n: every operand of steps (e), (d), (f) is in flight
// at once at the start, v and k arrive during products, U during the last row pass and dA's
// first product. The products are the same, in the same order, and so is every element step:
// the same bits as grads_dk_kernel (emu.gdr_chunk compares). On since an H100 run timed and
// checked it (DK2_BY_DEFAULT; 1.02 ms a call before).

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_tile;
constexpr int WARP_TILES = CH * DMAX / 256 / WARPS; // a warp's 16 x 16 tiles of a 64 x 128 product

// This warp's tiles of op(A) op(B) (M x N, summed over K) into prod, assigned as mma assigns
// them (round-robin over the warps: NT of them from the warp's tile `first` on), with k outermost:
// the warp's tiles are independent chains of mma_sync that interleave instead of running one
// after another, and where they share a column of B (the tile columns divide WARPS) its
// fragment is loaded once a step. Each tile sums over k in mma's order: the same bits.
template <int NT, bool TA, bool TB>
__device__ inline void warp_tiles(acc_tile (&prod)[NT], const bf16 *A, int lda, const bf16 *Bm, int ldb, int M, int N,
                                  int K, int first = 0) {
    typedef typename std::conditional<TA, wmma::col_major, wmma::row_major>::type la;
    typedef typename std::conditional<TB, wmma::col_major, wmma::row_major>::type lb;
    const int warp = threadIdx.x / 32, tn = N / 16, count = M / 16 * tn;
    const bool share_b = WARPS % tn == 0;
#pragma unroll
    for (int t = 0; t < NT; t++) wmma::fill_fragment(prod[t], 0.0f);
    for (int k = 0; k < K; k += 16) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, lb> b;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const int tile = warp + (first + t) * WARPS, mi = tile / tn, ni = tile % tn;
            if (tile >= count) break;
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, la> a;
            wmma::load_matrix_sync(a, TA ? A + (size_t)k * lda + mi * 16 : A + (size_t)mi * 16 * lda + k, lda);
            if (t == 0 || !share_b)
                wmma::load_matrix_sync(b, TB ? Bm + (size_t)ni * 16 * ldb + k : Bm + (size_t)k * ldb + ni * 16, ldb);
            wmma::mma_sync(prod[t], a, b, prod[t]);
        }
    }
}

// C (fp32) = [C +] prod over this warp's tiles (warp_tiles' assignment), element by element
// as mma stores a product: acc = C or 0, acc += 1 prod (1 prod is prod).
template <int NT>
__device__ inline void store_tiles(float *C, int ldc, const acc_tile (&prod)[NT], int M, int N, bool accumulate = false,
                                   int first = 0) {
    const int warp = threadIdx.x / 32, tn = N / 16, count = M / 16 * tn;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const int tile = warp + (first + t) * WARPS, mi = tile / tn, ni = tile % tn;
        if (tile >= count) break;
        float *c = C + (size_t)mi * 16 * ldc + ni * 16;
        acc_tile acc;
        if (accumulate) wmma::load_matrix_sync(acc, c, ldc, wmma::mem_row_major);
        else wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int e = 0; e < acc.num_elements; e++) acc.x[e] += prod[t].x[e];
        wmma::store_matrix_sync(c, acc, ldc, wmma::mem_row_major);
    }
}

// C (fp32) = op(A) op(B), M x N <= 64 x 128, C neither A nor B, in two rounds of half the
// warp's tiles: for the products made while 64 other values a thread wait in registers.
template <bool TA, bool TB>
__device__ inline void mma_halves(float *C, int ldc, const bf16 *A, int lda, const bf16 *Bm, int ldb, int M, int N,
                                  int K) {
    constexpr int HALF = WARP_TILES / 2;
    acc_tile prod[HALF];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        warp_tiles<HALF, TA, TB>(prod, A, lda, Bm, ldb, M, N, K, h * HALF);
        store_tiles(C, ldc, prod, M, N, false, h * HALF);
    }
}

// This warp's rows r = warp + WARPS m, columns i = lane + 32 j < width of a row-major matrix:
// dst[r][i] = bf16(x[m][j] f[r]) where r < c and i < valid, else 0 (f NULL: 1). The values of
// load_rows_bf16 from registers that warp_rows filled.
__device__ inline void warp_rows_bf16(bf16 *dst, int ld, const float (&x)[ROWS_PER_WARP][COLS_PER_LANE], int c,
                                      int valid, int width, const float *f = nullptr) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int m = 0; m < ROWS_PER_WARP; m++)
#pragma unroll
        for (int j = 0; j < COLS_PER_LANE; j++) {
            const int r = warp + WARPS * m, i = lane + 32 * j;
            if (i >= width) break;
            dst[r * ld + i] = __float2bfloat16(r < c && i < valid ? x[m][j] * (f ? f[r] : 1.0f) : 0.0f);
        }
}

// Buffers: X (G_end; then (e)'s product, and dk from (e)'s row pass on), Y (H_n; then the fp32
// products of (d) and (f); then -W in its first 64 rows, Y1, and U in the rest, Y2; then K in
// Y1 and dM in Y2), P1 (Delta, dW, T^T dW, dA / y as fp32), P2 (ddelta, -T^T ddelta, K K^T,
// beta K), HS (T, diag(beta) dM).
constexpr size_t GRADS_DK2_SMEM = 2 * S128 + 2 * H64 + HS64 + 8 * VEC;
static_assert(GRADS_DK2_SMEM <= SMEM_TWO_PER_SM, "two blocks per SM");
static_assert(F64 <= S128 && FS64 <= H64 && HS64 <= H64, "the fp32 buffers fit where they go");
constexpr int U_VEC = CH * DMAX / 4 / THREADS, W_VEC = CH * DMAX / 8 / THREADS; // float4 of U, 8 bf16 of -W a thread

__global__ void __launch_bounds__(THREADS, 2) grads_dk2_kernel(float *dk, float *dv, float *dbeta, float *dg,
                                                               scratch s, const bf16 *gend, const bf16 *dd,
                                                               const float *k, const float *v, const float *beta,
                                                               const float *rk, dims d) {
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *X = sc.take<bf16>(DMAX * LDH), *Y = sc.take<bf16>(DMAX * LDH);
    bf16 *P1 = sc.take<bf16>(CH * LDH), *P2 = sc.take<bf16>(CH * LDH), *HS = sc.take<bf16>(CH * LDS);
    float *gc = sc.take<float>(CH), *eg = sc.take<float>(CH), *bt = sc.take<float>(CH), *dgam = sc.take<float>(CH);
    float *dbs = sc.take<float>(CH), *ra = sc.take<float>(CH), *rb = sc.take<float>(CH), *kd = sc.take<float>(CH);
    bf16 *Y1 = Y, *Y2 = Y + CH * LDH;
    float *F = (float *)X, *FY = (float *)Y;
    const int n = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H, tid = threadIdx.x;
    const int lane = tid % 32, warp = tid / 32;
    const int t0 = n * CH, c = min(CH, d.L - t0), dkp = d.dkp, dvp = d.dvp;
    const size_t cb = (size_t)bh * d.nt + n, row0 = ((size_t)b * d.L + t0) * d.H + h;
    const size_t sk = (size_t)d.H * d.dk;
    // every operand of steps (e), (d) and (f) at once, dk so far and k into registers meanwhile
    copy_async_bf16(P1, LDH, s.delta + cb * CH * dvp, dvp, CH, dvp);
    copy_async_bf16(X, LDH, gend + cb * dkp * dvp, dvp, dkp, dvp); // G_end
    copy_async_bf16(Y, LDH, s.states + cb * dkp * dvp, dvp, dkp, dvp); // H_n
    copy_async_bf16(P2, LDH, dd + cb * CH * dvp, dvp, CH, dvp);
    copy_async_bf16(HS, LDS, s.t + cb * CH * CH, CH, CH, CH);
    __pipeline_commit();
    if (tid < CH) {
        gc[tid] = s.gcum[cb * CH + tid];
        eg[tid] = expf(gc[tid]);
        bt[tid] = tid < c ? beta[row0 + (size_t)tid * d.H] : 0.0f;
        dgam[tid] = tid < c ? dg[row0 + (size_t)tid * d.H] : 0.0f;
    }
    // k stays in registers to the end (the row passes' layout: rows warp + WARPS m, columns lane + 32 j)
    float f1[ROWS_PER_WARP][COLS_PER_LANE], kr[ROWS_PER_WARP][COLS_PER_LANE]; // dk so far (padding 0), k
    warp_rows(f1, dk + row0 * d.dk, sk, c, d.dk);
    warp_rows(kr, k + row0 * d.dk, sk, c, d.dk);
    __pipeline_wait_prior(0);
    __syncthreads();

    { // <H_n, G_end> for dgam_last: each thread its elements tid + THREADS m in grads_dk_kernel's order
        const int ns = dkp * dvp, di = THREADS / dvp, dj = THREADS % dvp;
        int i = tid / dvp, j = tid % dvp;
        float part = 0.0f;
        for (int e = tid; e < ns; e += THREADS) {
            part += __bfloat162float(Y[i * LDH + j]) * __bfloat162float(X[i * LDH + j]);
            i += di, j += dj;
            if (j >= dvp) j -= dvp, i++;
        }
        part = warp_total(part);
        if (lane == 0) rb[warp] = part; // in rb until the finish needs it
    }
    // (e) dkh = diag(e^{gam_last - gam}) Delta G^T (F, over G_end once every warp has its tiles)
    acc_tile prod[WARP_TILES];
    warp_tiles<WARP_TILES, false, true>(prod, P1, LDH, X, LDH, CH, dkp, dvp);
    __syncthreads();
    float hg = 0.0f, kdkh = 0.0f; // thread 0: B4's last-row sums, in grads_finish's order
    if (tid == 0)
        for (int w = 0; w < WARPS; w++) hg += rb[w];
    store_tiles(F, LDF, prod, CH, dkp);
    __syncthreads();
    const float glast = gc[CH - 1];
#pragma unroll
    for (int m = 0; m < ROWS_PER_WARP; m++) {
        const int r = warp + WARPS * m;
        const float el = expf(glast - gc[r]);
        float part = 0.0f;
#pragma unroll
        for (int j = 0; j < COLS_PER_LANE; j++) {
            const int i = lane + 32 * j;
            if (i >= dkp) break;
            const float x = el * F[r * LDF + i];
            if (r < c && i < d.dk) part += x * kr[m][j];
            F[r * LDF + i] = f1[m][j] + x; // dk so far, from here on in F
        }
        part = warp_total(part);
        if (lane == 0) kd[r] = part;
    }
    __syncthreads();
    if (tid == 0)
        for (int r = 0; r < c; r++) kdkh += kd[r];
    if (tid < CH) dgam[tid] -= kd[tid];
    // (d) dW = -ddelta H_n^T (FY, over H_n), as bf16 in P1 (over Delta)
    warp_tiles<WARP_TILES, false, true>(prod, P2, LDH, Y, LDH, CH, dkp, dvp);
    __syncthreads();
    store_tiles(FY, LDF, prod, CH, dkp);
    __syncthreads();
#pragma unroll
    for (int m = 0; m < ROWS_PER_WARP; m++)
#pragma unroll
        for (int j = 0; j < COLS_PER_LANE; j++) {
            const int r = warp + WARPS * m, i = lane + 32 * j;
            if (i >= dkp) break;
            P1[r * LDH + i] = __float2bfloat16(-FY[r * LDF + i]);
        }
    float vr[ROWS_PER_WARP][COLS_PER_LANE]; // v, for T^T ddelta's pass
    warp_rows(vr, v + row0 * d.dv, (size_t)d.H * d.dv, c, d.dv);
    __syncthreads();
    // (f) through W = T Kb, U = T Vb: T^T ddelta first (dv, v's term of dbeta), then T^T dW
    mma_halves<true, false>(FY, LDF, HS, LDS, P2, LDH, CH, dvp, CH);
    __syncthreads();
#pragma unroll
    for (int m = 0; m < ROWS_PER_WARP; m++) {
        const int r = warp + WARPS * m;
        float vt = 0.0f;
#pragma unroll
        for (int jj = 0; jj < COLS_PER_LANE; jj++) {
            const int j = lane + 32 * jj;
            if (j >= dvp) break;
            const float x = FY[r * LDF + j];
            if (r < c && j < d.dv) {
                vt += x * vr[m][jj];
                dv[(row0 + (size_t)r * d.H) * d.dv + j] = bt[r] * x;
            }
            P2[r * LDH + j] = __float2bfloat16(-x); // -T^T ddelta over ddelta
        }
        vt = warp_total(vt);
        if (lane == 0) dbs[r] = vt; // until T^T dW's pass adds k's term
    }
    uint4 w8[W_VEC]; // -W for (g), in flight through T^T dW
    const uint4 *ws = (const uint4 *)(s.wn + cb * CH * dkp);
#pragma unroll
    for (int m = 0; m < W_VEC; m++) {
        const int e = tid + m * THREADS;
        if (e < CH * dkp / 8) w8[m] = ws[e];
    }
    __syncthreads();
    mma_halves<true, false>(FY, LDF, HS, LDS, P1, LDH, CH, dkp, CH);
    float4 u4[U_VEC]; // U for (g), in flight through T^T dW's pass
    const float4 *us = (const float4 *)(s.u + cb * CH * dvp);
#pragma unroll
    for (int m = 0; m < U_VEC; m++) {
        const int e = tid + m * THREADS;
        if (e < CH * dvp / 4) u4[m] = us[e];
    }
    __syncthreads();
#pragma unroll
    for (int m = 0; m < ROWS_PER_WARP; m++) {
        const int r = warp + WARPS * m;
        const float fb = bt[r] * eg[r];
        float kt = 0.0f;
#pragma unroll
        for (int j = 0; j < COLS_PER_LANE; j++) {
            const int i = lane + 32 * j;
            if (i >= dkp) break;
            const float x = FY[r * LDF + i];
            if (r < c && i < d.dk) kt += x * kr[m][j];
            F[r * LDF + i] += fb * x;
            P1[r * LDH + i] = __float2bfloat16(x); // T^T dW over dW
        }
        kt = warp_total(kt);
        if (lane == 0) dbs[r] = eg[r] * kt + dbs[r], ra[r] = fb * kt;
    }
    __syncthreads();
    if (tid < CH) dgam[tid] += ra[tid];
#pragma unroll
    for (int m = 0; m < W_VEC; m++) { // -W into Y1
        const int e = 8 * (tid + m * THREADS);
        if (e >= CH * dkp) break;
        *(uint4 *)(Y1 + (e / dkp) * LDH + e % dkp) = w8[m];
    }
#pragma unroll
    for (int m = 0; m < U_VEC; m++) { // U as bf16 into Y2
        const int e = 4 * (tid + m * THREADS);
        if (e >= CH * dvp) break;
        bf16 *u = Y2 + (e / dvp) * LDH + e % dvp;
        u[0] = __float2bfloat16(u4[m].x), u[1] = __float2bfloat16(u4[m].y);
        u[2] = __float2bfloat16(u4[m].z), u[3] = __float2bfloat16(u4[m].w);
    }
    __syncthreads();
    // (g) dA = (T^T dW) (-W)^T + (-T^T ddelta) U^T (over T^T dW); K K^T
    float *dA = (float *)P1, *kk = (float *)P2;
    acc_tile pa[WARP_TILES / 2], pk[WARP_TILES / 2];
    warp_tiles<WARP_TILES / 2, false, true>(pa, P1, LDH, Y1, LDH, CH, CH, dkp);
    __syncthreads(); // T^T dW and -W read: dA over the first, K over the second
    store_tiles(dA, LDSF, pa, CH, CH);
    warp_rows_bf16(Y1, LDH, kr, c, d.dk, dkp);
    __syncthreads();
    warp_tiles<WARP_TILES / 2, false, true>(pa, P2, LDH, Y2, LDH, CH, CH, dvp);
    warp_tiles<WARP_TILES / 2, false, true>(pk, Y1, LDH, Y1, LDH, CH, CH, dkp);
    __syncthreads(); // -T^T ddelta and U read: K K^T over the first
    store_tiles(dA, LDSF, pa, CH, CH, true);
    store_tiles(kk, LDSF, pk, CH, CH);
    __syncthreads();
    // (h) dM = strict_lower(dA ⊙ E); y = dM ⊙ K K^T gives dbeta and dgam; dM in Y2 (over U)
    bf16 *dMh = Y2;
    for (int e = tid; e < CH * CH; e += THREADS) {
        const int r = e / CH, j = e % CH;
        const float dm = j < r ? dA[r * LDSF + j] * expf(gc[r] - gc[j]) : 0.0f;
        dA[r * LDSF + j] = dm * kk[r * LDSF + j];
        HS[r * LDS + j] = __float2bfloat16(bt[r] * dm); // diag(beta) dM
        dMh[r * LDS + j] = __float2bfloat16(dm);
    }
    __syncthreads();
    // (i) dk += diag(beta) dM K + dM^T diag(beta) K (beta K over K K^T), with y's row sums
    // (4 at a time) and column sums for dbeta and dgam
    warp_rows_bf16(P2, LDH, kr, c, d.dk, dkp, bt);
    if (tid < CH) {
        const float4 *row = (const float4 *)(dA + tid * LDSF);
        float x = 0.0f;
#pragma unroll 4
        for (int j4 = 0; j4 < CH / 4; j4++) {
            const float4 y = row[j4];
            const int j = 4 * j4;
            if (j < tid) x += y.x;
            if (j + 1 < tid) x += y.y;
            if (j + 2 < tid) x += y.z;
            if (j + 3 < tid) x += y.w;
        }
        ra[tid] = x;
    } else if (tid < 2 * CH) {
        const int j = tid - CH;
        float x = 0.0f;
#pragma unroll 8
        for (int r = j + 1; r < CH; r++) x += bt[r] * dA[r * LDSF + j];
        rb[j] = x;
    }
    warp_tiles<WARP_TILES, false, false>(prod, HS, LDS, Y1, LDH, CH, dkp, CH);
    store_tiles(F, LDF, prod, CH, dkp, true);
    __syncthreads(); // beta K and the sums in place
    warp_tiles<WARP_TILES, true, false>(prod, dMh, LDS, P2, LDH, CH, dkp, CH);
    store_tiles(F, LDF, prod, CH, dkp, true);
    if (tid < CH) dbs[tid] += ra[tid], dgam[tid] += bt[tid] * ra[tid] - rb[tid];
    __syncthreads();
    if (tid == 0) { // B4's last-row terms, then B6: dg = reverse cumsum of dgam, 8 loads at a time
        dgam[c - 1] += eg[c - 1] * hg + kdkh;
        float acc = 0.0f;
        for (int r1 = c - 1; r1 >= 0; r1 -= 8) {
            float x[8];
#pragma unroll
            for (int u = 0; u < 8; u++) x[u] = r1 - u >= 0 ? dgam[r1 - u] : 0.0f;
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (r1 - u >= 0) dg[row0 + (size_t)(r1 - u) * d.H] = acc += x[u];
        }
    }
    if (tid < c) dbeta[row0 + (size_t)tid * d.H] = dbs[tid];
    if (rk) { // dk through k's L2 norm (rk: 1/|k_raw|), as l2norm_bwd would take it
        for (int m = 0; m < ROWS_PER_WARP; m++) {
            const int r = warp + WARPS * m;
            if (r >= c) break;
            float *out = dk + (row0 + (size_t)r * d.H) * d.dk;
            l2norm_rows_bwd(out, [&](int i) { return F[r * LDF + i]; }, k + (row0 + (size_t)r * d.H) * d.dk,
                            rk[row0 + (size_t)r * d.H], d.dk);
        }
        return;
    }
#pragma unroll
    for (int m = 0; m < ROWS_PER_WARP; m++) {
        const int r = warp + WARPS * m;
        if (r >= c) break;
#pragma unroll
        for (int j = 0; j < COLS_PER_LANE; j++) {
            const int i = lane + 32 * j;
            if (i < d.dk) dk[(row0 + (size_t)r * d.H) * d.dk + i] = F[r * LDF + i];
        }
    }
}

// HYLA_GDR_DK2=1 / 0: grads_dk2_kernel or grads_dk_kernel (the same bits); read at every call.
constexpr bool DK2_BY_DEFAULT = true; // H100 2026-12-07 (docs/gpu-runs/2026-12-07e-h100)
bool use_dk2(void) { return cuda_switch("HYLA_GDR_DK2", DK2_BY_DEFAULT); }

template <typename K> void allow_smem(K kernel, size_t bytes) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// HYLA_GDR_OVERLAP=1: grads_dq on a second stream beside the backward's state chain (read at
// every call). Off until a GPU run has checked and timed it: it pays where the chain leaves SMs
// free (HYLA_GDR_STATE3's 64 blocks at the 0.4B shape), not beside state_bwd2's 256.
constexpr bool OVERLAP_BY_DEFAULT = false;
bool use_overlap(void) { return cuda_switch("HYLA_GDR_OVERLAP", OVERLAP_BY_DEFAULT); }
// The process's second stream (non-blocking: it does not wait for the legacy default stream on
// its own) and the two events that fork it from stream 0 and join it back, made once.
struct side_stream {
    cudaStream_t stream;
    cudaEvent_t fork, join;
};
const side_stream &the_side_stream(void) {
    static side_stream side = [] {
        side_stream s{};
        CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
        CUDA_CHECK(cudaEventCreateWithFlags(&s.fork, cudaEventDisableTiming));
        CUDA_CHECK(cudaEventCreateWithFlags(&s.join, cudaEventDisableTiming));
        return s;
    }();
    return side;
}

// The grads step as two kernels (grads_dq_kernel, grads_dk_kernel) or one (grads_kernel); the
// same bits either way. Read at every call, so that a test can run both forms in one process.
// Two kernels by default since their GPU run (H100, 2026-12-07, docs/gpu-runs/2026-12-07c-h100/; grads 19.1 -> 15.9 ms a
// laLTE step by Nsight Compute); HYLA_GDR_GRADS2=0 gives the one kernel.
constexpr bool GRADS2_BY_DEFAULT = true;
bool use_grads2(void) { return cuda_switch("HYLA_GDR_GRADS2", GRADS2_BY_DEFAULT); }

} // namespace
} // namespace gdrc

// Whether the backward's kernels can take q's and k's L2-norm backward into their last steps
// (rq, rk below): the two-kernel grads step with grads_dk2 (the defaults).
bool cuda_gdr_chunk_l2norm_fusable(void) { return gdrc::use_grads2() && gdrc::use_dk2(); }

// The backend's gdr_chunk_bwd in bf16 mode (dk, dv <= 128; cuda_gdr.cu chooses). `saved`: what
// the forward of the same inputs kept (B1 done), or NULL (B1 runs the forward's kernels again).
// rq, rk (only where cuda_gdr_chunk_l2norm_fusable()): q and k are L2-normalised rows, these
// their 1/norms, and dq, dk are written through the norms' backward (the raw q's and k's
// gradients), as l2norm_bwd after this function would write them; NULL: dq, dk as they are.
void cuda_gdr_chunk_bwd_bf16(float *dq, float *dk, float *dv, float *dbeta, float *dg, float *dS0, const float *dout,
                             const float *dS_final, const float *q, const float *k, const float *v, const float *beta,
                             const float *g, const float *S0, float scale, int B, int L, int H, int dkd, int dvd,
                             const float *saved, const float *rq, const float *rk) {
    using namespace gdrc;
    if (B * H == 0) return;
    const size_t s_bytes = sizeof(float) * B * H * dkd * dvd;
    if (L == 0) { // no tokens: the state's gradient passes through
        if (dS0) {
            if (dS_final) CUDA_CHECK(cudaMemcpyAsync(dS0, dS_final, s_bytes, cudaMemcpyDeviceToDevice, 0));
            else CUDA_CHECK(cudaMemsetAsync(dS0, 0, s_bytes, 0));
        }
        return;
    }
    const dims d = make_dims(B, L, H, dkd, dvd, scale);
    static bool ready = false;
    if (!ready) {
        allow_smem(local_kernel, LOCAL_SMEM), allow_smem(state_bwd_kernel, STATE_SMEM);
        allow_smem(grads_kernel, GRADS_SMEM), allow_smem(grads_dq_kernel, GRADS_DQ_SMEM);
        allow_smem(grads_dk_kernel, GRADS_DK_SMEM), ready = true;
    }
    // B1: the forward's quantities with T, kept by the forward or computed again (the backward
    // only reads them)
    scratch s = saved ? carve_saved(const_cast<float *>(saved), d) : alloc_scratch(d, true);
    if (!saved) {
        launch_prep(s, q, k, v, beta, g, d);
        launch_state_fwd(s, NULL, S0, d);
    }
    const size_t nc = (size_t)B * H * d.nt, cv = nc * CH * d.dvp;
    float *ddl = NULL;
    bf16 *dob = NULL, *dd = NULL, *gend = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&ddl, sizeof(float) * cv, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&dob, sizeof(bf16) * cv, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&dd, sizeof(bf16) * cv, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&gend, sizeof(bf16) * nc * d.dkp * d.dvp, 0));
    if (use_local2()) launch_local2(ddl, dob, s, q, k, dout, d);
    else {
        local_kernel<<<dim3(d.nt, B * H), THREADS, LOCAL_SMEM>>>(ddl, dob, s, q, k, dout, d);
        CUDA_LAUNCH_CHECK();
    }
    // grads_dq needs nothing of the state chain: with HYLA_GDR_OVERLAP it runs on a second stream
    // beside it (the chain holds one block an SM on a few SMs), joined before grads_dk
    const bool overlap = use_grads2() && use_overlap();
    if (overlap) {
        const side_stream &side = the_side_stream();
        CUDA_CHECK(cudaEventRecord(side.fork, 0));
        CUDA_CHECK(cudaStreamWaitEvent(side.stream, side.fork, 0));
        grads_dq_kernel<<<dim3(d.nt, B * H), THREADS, GRADS_DQ_SMEM, side.stream>>>(dq, dk, dg, s, dob, q, k, rq, d);
        CUDA_LAUNCH_CHECK();
        CUDA_CHECK(cudaEventRecord(side.join, side.stream));
    }
    if (use_state3()) launch_state_bwd3(gend, dd, dS0, s, dob, ddl, dS_final, d);
    else if (use_fwd2()) {
        static bool ready2 = false;
        if (!ready2) allow_smem(state_bwd2_kernel<BV2>, state_bwd2_smem<BV2>()), ready2 = true;
        state_bwd2_kernel<BV2><<<dim3(B * H, d.dvp / BV2), THREADS, state_bwd2_smem<BV2>()>>>(gend, dd, dS0, s, dob, ddl,
                                                                                            dS_final, d);
    } else state_bwd_kernel<<<dim3(B * H, d.dvp / BV), THREADS, STATE_SMEM>>>(gend, dd, dS0, s, dob, ddl, dS_final, d);
    CUDA_LAUNCH_CHECK();
    if (use_grads2()) { // dk and dg carry the first kernel's partial sums to the second
        if (overlap) CUDA_CHECK(cudaStreamWaitEvent(0, the_side_stream().join, 0));
        else {
            grads_dq_kernel<<<dim3(d.nt, B * H), THREADS, GRADS_DQ_SMEM>>>(dq, dk, dg, s, dob, q, k, rq, d);
            CUDA_LAUNCH_CHECK();
        }
        if (use_dk2()) {
            static bool ready3 = false;
            if (!ready3) allow_smem(grads_dk2_kernel, GRADS_DK2_SMEM), ready3 = true;
            grads_dk2_kernel<<<dim3(d.nt, B * H), THREADS, GRADS_DK2_SMEM>>>(dk, dv, dbeta, dg, s, gend, dd, k, v, beta,
                                                                             rk, d);
        } else grads_dk_kernel<<<dim3(d.nt, B * H), THREADS, GRADS_DK_SMEM>>>(dk, dv, dbeta, dg, s, gend, dd, k, v, beta, d);
    } else grads_kernel<<<dim3(d.nt, B * H), THREADS, GRADS_SMEM>>>(dq, dk, dv, dbeta, dg, s, dob, gend, dd, q, k, v, beta, d);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(ddl, 0));
    CUDA_CHECK(cudaFreeAsync(dob, 0));
    CUDA_CHECK(cudaFreeAsync(dd, 0));
    CUDA_CHECK(cudaFreeAsync(gend, 0));
    if (!saved) free_scratch(s);
}
