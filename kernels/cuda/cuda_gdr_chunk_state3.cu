// CUDA: the chunked gated delta rule's two sequential chains with the state in registers
// (HYLA_GDR_STATE3): F5, the state H_n forward over the chunks, and B2-B3, the state gradient
// G backward over them (MODEL.md §3.4-3.5; the shared-memory forms are state_fwd2_kernel and
// state_bwd2_kernel, cuda_gdr_chunk_fwd.cu / _bwd.cu).
//
// Why: those forms keep the state in fp32 shared memory and run each chunk's two or three
// small products as WMMA tiles spread over 8 warps, with a barrier between every step: a
// chunk's step is a chain of shared-memory round trips, ~4.6 us, 64 of them one after another
// (296 and 395 us a call at the 0.4B shape, H100). Here each warp owns 16 value columns of one
// (batch, head) and keeps that slice of the state transposed, H^T (16 x dk), as fp32
// mma.m16n8k16 C fragments. Transposed, every product of the chain takes its register operand
// as the A fragment straight from C fragments (two neighbouring n-tiles packed to bf16, as
// FlashAttention-2 feeds P to P V), and its shared operand by ldmatrix:
//   forward   Delta^T = U^T + H^T (-W)^T        B[k][n] = -W[n][k]   (rows of -W)
//             H^T <- e^{gam_last} H^T + Delta^T Ke                    (rows of Ke, transposed)
//   backward  ddelta^T = ddl^T + G^T Ke^T       (rows of Ke)
//             G^T <- e^{gam_last} G^T + dO^T Qs + ddelta^T (-W)      (rows of Qs, -W, transposed)
// The only barrier a chunk is the one that hands the block's warps the next chunk's operands
// (-W, Ke, Qs: one copy in shared memory for the block's warps, by cp.async one chunk ahead).
// The states (or G at the chunk ends) and Delta (or ddelta) go to the scratch in its [row][value]
// layout through a small staging tile per warp.
//
// The same bits as the shared-memory forms: every product starts from zero and sums over k in
// ascending 16-steps (the mma instructions WMMA's tiles are made of, in the same order), and is
// then added to its fp32 partner the way their WMMA accumulation adds it (acc + 1 prod); the
// decay's multiply is rounded on its own (__fmul_rn: no fused multiply-add with the sum).
// ctest emu.gdr_chunk compares the bits.
#include "backend_cuda.h"
#include "cuda_gdr_chunk.cuh"
#include "cuda_gdr_chunk_frag.cuh"
#include "cuda_mma.cuh"
#include "cuda_switch.h"

namespace gdrc {
namespace {

constexpr int SLICE = 16;        // value columns a warp: the 16 rows of its transposed state
constexpr int LST = SLICE + 8;   // row stride (bf16) of a warp's staging tile: 48-byte rows
constexpr int KG = 8;            // n-tiles of the state a group (64 keys): the sums' registers

// Lane 4 g + t holds, of a 16-row C fragment set c[n-tile][e], row g + 8 (e / 2) and column
// 8 n-tile + 2 t + e % 2.
__device__ inline int frag_row(int e) { return (threadIdx.x % 32) / 4 + 8 * (e / 2); }
__device__ inline int frag_col(int nt, int e) { return 8 * nt + 2 * (threadIdx.x % 4) + e % 2; }

// The A fragments (bf16) of C fragments: k-step ks = n-tiles 2 ks, 2 ks + 1.
template <int NTL> __device__ inline void pack_c(uint32_t (&a)[NTL / 2][4], const float (&c)[NTL][4]) {
    pack_a(a, [&](int nt, int e) { return c[nt][e]; });
}

// A transposed slice (C fragments: rows the warp's 16 value columns) rounded to bf16 into the
// warp's staging tile in the scratch's layout, st[column][value]; then (after __syncwarp)
// store_slice moves the tile's `rows` rows to dst (row stride ld), 16 bytes a copy.
template <int NTL> __device__ inline void stage_transposed(bf16 *st, const float (&c)[NTL][4]) {
#pragma unroll
    for (int nt = 0; nt < NTL; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) st[frag_col(nt, e) * LST + frag_row(e)] = __float2bfloat16(c[nt][e]);
}
__device__ inline void store_slice(bf16 *dst, size_t ld, const bf16 *st, int rows) {
    for (int e = threadIdx.x % 32; e < 2 * rows; e += 32) {
        const int r = e / 2, half = e % 2;
        *(uint4 *)(dst + (size_t)r * ld + 8 * half) = *(const uint4 *)(st + r * LST + 8 * half);
    }
}

// s's n-tiles first .. first + N - 1 += A X[:, 8 first ..] as acc + 1 prod adds it.
template <int N, int NTL>
__device__ inline void add_product_group(float (&s)[NTL][4], const uint32_t (&a)[4][4], const bf16 *X, int first) {
    float p[N][4];
    product_x<N>(p, a, X, 8 * first);
#pragma unroll
    for (int i = 0; i < N; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[first + i][e] = s[first + i][e] + p[i][e];
}
// s (the transposed state's n-tiles) += A X, a group of 64 keys (KG n-tiles) at a time: the
// sums' registers for one group, not for all of the state.
template <int NTL> __device__ inline void add_product_x(float (&s)[NTL][4], const uint32_t (&a)[4][4], const bf16 *X) {
#pragma unroll
    for (int kg = 0; kg * KG < NTL; kg++) {
        if (NTL - kg * KG >= KG) add_product_group<KG>(s, a, X, kg * KG);
        else add_product_group<NTL % KG ? NTL % KG : KG>(s, a, X, kg * KG);
    }
}

// The state's slice (C fragments, value rows jw + frag_row, key columns frag_col) from or to a
// [B H][dk][dv] fp32 tensor; the padding (keys >= dk, values >= dv) is zero.
template <int NTL> __device__ inline void load_state(float (&s)[NTL][4], const float *src, int jw, const dims &d) {
#pragma unroll
    for (int nt = 0; nt < NTL; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int i = frag_col(nt, e), j = jw + frag_row(e);
            s[nt][e] = src && i < d.dk && j < d.dv ? src[(size_t)i * d.dv + j] : 0.0f;
        }
}
template <int NTL> __device__ inline void store_state(float *dst, const float (&s)[NTL][4], int jw, const dims &d) {
#pragma unroll
    for (int nt = 0; nt < NTL; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int i = frag_col(nt, e), j = jw + frag_row(e);
            if (i < d.dk && j < d.dv) dst[(size_t)i * d.dv + j] = s[nt][e];
        }
}

template <int NTL> __device__ inline void scale_state(float (&s)[NTL][4], float a) {
#pragma unroll
    for (int nt = 0; nt < NTL; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[nt][e] = __fmul_rn(s[nt][e], a);
}

// The step both chains begin a chunk with, for this warp's slice: the state S (H_n, or G at the
// chunk's end), transposed in registers, rounded to bf16; D^T = F^T + S^T X^T (F: the chunk's
// fp32 [64][ldf] slice of U or ddl; X: -W or Ke, rows of the shared [64][LDH] tile), as
// acc + 1 prod adds it; D's A fragments into ad; S (dkp rows) and D (64 rows) to s_out and
// d_out (row stride dvp) through the warp's staging tiles stS, stD.
template <int KT>
__device__ inline void chain_step(uint32_t (&ad)[4][4], const float (&st)[2 * KT][4], const bf16 *X, const float *f,
                                  int ldf, bf16 *stS, bf16 *stD, bf16 *s_out, bf16 *d_out, int dkp, int dvp) {
    uint32_t a[KT][4];
    pack_c(a, st);
    __syncwarp(); // the staging tiles' last copies are done
    stage_transposed(stS, st);
    float dl[8][4];
    product_xt<KT>(dl, a, X, KT);
#pragma unroll
    for (int c = 0; c < 8; c++)
#pragma unroll
        for (int e = 0; e < 4; e++) dl[c][e] = f[frag_col(c, e) * ldf + frag_row(e)] + dl[c][e];
    pack_c(ad, dl);
    stage_transposed(stD, dl);
    __syncwarp();
    store_slice(s_out, dvp, stS, dkp);
    store_slice(d_out, dvp, stD, CH);
}

// Shared memory of a block of NW warps: the chunk operands' double buffers, the value slices'
// double buffers (fp32 U or ddl; with dO the backward's bf16 ones too), the warps' staging tiles.
template <int NW> constexpr size_t slice_f32() { return carve_size(sizeof(float) * 2 * CH * (SLICE * NW + 4)); }
template <int NW> constexpr size_t slice_bf16() { return carve_size(sizeof(bf16) * 2 * CH * (SLICE * NW + 8)); }
template <int NW> constexpr size_t staging() { return carve_size(sizeof(bf16) * NW * (DMAX + CH) * LST); }
template <int NW> constexpr size_t fwd3_smem() {
    return 2 * carve_size(sizeof(bf16) * 2 * CH * LDH) + slice_f32<NW>() + staging<NW>();
}
template <int NW> constexpr size_t bwd3_smem() {
    return 3 * carve_size(sizeof(bf16) * 2 * CH * LDH) + slice_bf16<NW>() + slice_f32<NW>() + staging<NW>();
}
static_assert(bwd3_smem<4>() <= 227 * 1024, "the backward's block fits an SM");

// F5 for (b, h) = blockIdx.x, value columns 16 NW blockIdx.y .. (16 a warp), chunks in order:
// writes the states H_n entering each chunk and Delta; the final state when asked.
template <int KT, int NW>
__global__ void __launch_bounds__(NW * 32) state_fwd3_kernel(scratch s, float *final_state, const float *S0, dims d) {
    constexpr int NT = NW * 32, NTL = 2 * KT, LU = SLICE * NW + 4;
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Wn0 = sc.take<bf16>(2 * CH * LDH), *Ke0 = sc.take<bf16>(2 * CH * LDH);
    float *U0 = sc.take<float>(2 * CH * LU);
    bf16 *stage = sc.take<bf16>(NW * (DMAX + CH) * LST);
    const int warp = threadIdx.x / 32, bh = blockIdx.x, jb = blockIdx.y * SLICE * NW, jw = jb + SLICE * warp;
    const int dkp = d.dkp, dvp = d.dvp, nt = d.nt;
    bf16 *stS = stage + warp * (DMAX + CH) * LST, *stD = stS + DMAX * LST;
    auto fetch = [&](int n, int x) {
        const size_t cb = (size_t)bh * nt + n;
        copy_async_bf16<NT>(Wn0 + x * CH * LDH, LDH, s.wn + cb * CH * dkp, dkp, CH, dkp);
        copy_async_bf16<NT>(Ke0 + x * CH * LDH, LDH, s.ke + cb * CH * dkp, dkp, CH, dkp);
        copy_async_f32<NT>(U0 + x * CH * LU, LU, s.u + cb * CH * dvp + jb, dvp, CH, SLICE * NW);
        __pipeline_commit();
    };
    float h[NTL][4]; // H^T: value rows jw + frag_row, key columns frag_col
    load_state(h, S0 ? S0 + (size_t)bh * d.dk * d.dv : nullptr, jw, d);
    fetch(0, 0);
    for (int n = 0; n < nt; n++) {
        const int x = n & 1;
        const size_t cb = (size_t)bh * nt + n;
        const float glast = s.gcum[cb * CH + CH - 1];
        __pipeline_wait_prior(0);
        __syncthreads(); // chunk n's operands in place; buffer x ^ 1 free
        if (n + 1 < nt) fetch(n + 1, x ^ 1);
        uint32_t ad[4][4]; // Delta = U + (-W) H_n in bf16; H_n and Delta out
        chain_step<KT>(ad, h, Wn0 + x * CH * LDH, U0 + x * CH * LU + SLICE * warp, LU, stS, stD,
                       s.states + cb * dkp * dvp + jw, s.delta + cb * CH * dvp + jw, dkp, dvp);
        scale_state(h, expf(glast));
        add_product_x(h, ad, Ke0 + x * CH * LDH); // H^T += Delta^T Ke
    }
    if (final_state) store_state(final_state + (size_t)bh * d.dk * d.dv, h, jw, d);
}

// B2-B3 for (b, h) = blockIdx.x, value columns 16 NW blockIdx.y .. (16 a warp), chunks in
// reverse: writes G_end (the gradient of the state after each chunk) and ddelta; dS0 when asked.
template <int KT, int NW>
__global__ void __launch_bounds__(NW * 32) state_bwd3_kernel(bf16 *gend, bf16 *dd, float *dS0, scratch s,
                                                             const bf16 *dob, const float *ddl, const float *dS_final,
                                                             dims d) {
    constexpr int NT = NW * 32, NTL = 2 * KT, LF = SLICE * NW + 4, LO = SLICE * NW + 8;
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Ke0 = sc.take<bf16>(2 * CH * LDH), *Qs0 = sc.take<bf16>(2 * CH * LDH), *Wn0 = sc.take<bf16>(2 * CH * LDH);
    bf16 *Ob0 = sc.take<bf16>(2 * CH * LO);
    float *Db0 = sc.take<float>(2 * CH * LF);
    bf16 *stage = sc.take<bf16>(NW * (DMAX + CH) * LST);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, bh = blockIdx.x;
    const int jb = blockIdx.y * SLICE * NW, jw = jb + SLICE * warp, dkp = d.dkp, dvp = d.dvp, nt = d.nt;
    bf16 *stG = stage + warp * (DMAX + CH) * LST, *stD = stG + DMAX * LST;
    auto fetch = [&](int n, int x) {
        const size_t cb = (size_t)bh * nt + n;
        copy_async_bf16<NT>(Ke0 + x * CH * LDH, LDH, s.ke + cb * CH * dkp, dkp, CH, dkp);
        copy_async_bf16<NT>(Qs0 + x * CH * LDH, LDH, s.qs + cb * CH * dkp, dkp, CH, dkp);
        copy_async_bf16<NT>(Wn0 + x * CH * LDH, LDH, s.wn + cb * CH * dkp, dkp, CH, dkp);
        copy_async_bf16<NT>(Ob0 + x * CH * LO, LO, dob + cb * CH * dvp + jb, dvp, CH, SLICE * NW);
        copy_async_f32<NT>(Db0 + x * CH * LF, LF, ddl + cb * CH * dvp + jb, dvp, CH, SLICE * NW);
        __pipeline_commit();
    };
    float G[NTL][4]; // G^T: value rows jw + frag_row, key columns frag_col
    load_state(G, dS_final ? dS_final + (size_t)bh * d.dk * d.dv : nullptr, jw, d);
    fetch(nt - 1, 0);
    for (int n = nt - 1; n >= 0; n--) {
        const int x = (nt - 1 - n) & 1;
        const size_t cb = (size_t)bh * nt + n;
        const float glast = s.gcum[cb * CH + CH - 1];
        __pipeline_wait_prior(0);
        __syncthreads(); // chunk n's operands in place; buffer x ^ 1 free
        if (n > 0) fetch(n - 1, x ^ 1);
        uint32_t ad[4][4]; // ddelta = ddl + Ke G in bf16; G (at the chunk's end) and ddelta out
        chain_step<KT>(ad, G, Ke0 + x * CH * LDH, Db0 + x * CH * LF + SLICE * warp, LF, stG, stD,
                       gend + cb * dkp * dvp + jw, dd + cb * CH * dvp + jw, dkp, dvp);
        // dO^T's A fragments: the slice [64 rows][16 values] read transposed
        uint32_t ao[4][4];
        const bf16 *ob = Ob0 + x * CH * LO + SLICE * warp + ((lane & 7) + 8 * (lane >> 4)) * LO + 8 * ((lane >> 3) & 1);
#pragma unroll
        for (int ks = 0; ks < 4; ks++) hyla_mma::ldsm_x4_trans(ao[ks][0], ao[ks][1], ao[ks][2], ao[ks][3], ob + 16 * ks * LO);
        scale_state(G, expf(glast));
        add_product_x(G, ao, Qs0 + x * CH * LDH); // + scale (e^gam Q)^T dO
        add_product_x(G, ad, Wn0 + x * CH * LDH); // - W^T ddelta
    }
    if (dS0) store_state(dS0 + (size_t)bh * d.dk * d.dv, G, jw, d);
}

template <typename K> void allow_smem(K kernel, size_t bytes) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// Warps a block: four where the value columns come in 64s (the block's warps share one copy of
// the chunk operands: half the traffic of two), else two. HYLA_GDR_STATE3_WARPS=2 forces two;
// =8 gives the forward eight where the columns come in 128s (one block a (batch, head): a
// quarter of two's traffic, on a quarter of the SMs; the backward's operands do not fit eight).
int warps_for(const dims &d, bool forward) {
    const char *e = getenv("HYLA_GDR_STATE3_WARPS");
    const int want = e && *e ? atoi(e) : 4;
    if (want == 8 && forward && d.dvp % (8 * SLICE) == 0) return 8;
    return want >= 4 && d.dvp % (4 * SLICE) == 0 ? 4 : 2;
}
static_assert(fwd3_smem<8>() <= 227 * 1024, "the forward's 8-warp block fits an SM");

template <int KT, int NW> void fwd3(const scratch &s, float *final_state, const float *S0, const dims &d) {
    static bool ready = false;
    if (!ready) allow_smem(state_fwd3_kernel<KT, NW>, fwd3_smem<NW>()), ready = true;
    state_fwd3_kernel<KT, NW><<<dim3(d.B * d.H, d.dvp / (SLICE * NW)), NW * 32, fwd3_smem<NW>()>>>(s, final_state, S0, d);
    CUDA_LAUNCH_CHECK();
}
template <int KT, int NW>
void bwd3(bf16 *gend, bf16 *dd, float *dS0, const scratch &s, const bf16 *dob, const float *ddl, const float *dS_final,
          const dims &d) {
    static bool ready = false;
    if (!ready) allow_smem(state_bwd3_kernel<KT, NW>, bwd3_smem<NW>()), ready = true;
    state_bwd3_kernel<KT, NW><<<dim3(d.B * d.H, d.dvp / (SLICE * NW)), NW * 32, bwd3_smem<NW>()>>>(gend, dd, dS0, s, dob,
                                                                                                 ddl, dS_final, d);
    CUDA_LAUNCH_CHECK();
}

// The kernels by key tiles (dkp / 16: the state's registers are sized at compile time).
template <int NW> void fwd3_by_keys(const scratch &s, float *final_state, const float *S0, const dims &d) {
    switch (d.dkp / 16) {
    case 1: return fwd3<1, NW>(s, final_state, S0, d);
    case 2: return fwd3<2, NW>(s, final_state, S0, d);
    case 3: return fwd3<3, NW>(s, final_state, S0, d);
    case 4: return fwd3<4, NW>(s, final_state, S0, d);
    case 5: return fwd3<5, NW>(s, final_state, S0, d);
    case 6: return fwd3<6, NW>(s, final_state, S0, d);
    case 7: return fwd3<7, NW>(s, final_state, S0, d);
    default: return fwd3<8, NW>(s, final_state, S0, d);
    }
}
template <int NW>
void bwd3_by_keys(bf16 *gend, bf16 *dd, float *dS0, const scratch &s, const bf16 *dob, const float *ddl,
                  const float *dS_final, const dims &d) {
    switch (d.dkp / 16) {
    case 1: return bwd3<1, NW>(gend, dd, dS0, s, dob, ddl, dS_final, d);
    case 2: return bwd3<2, NW>(gend, dd, dS0, s, dob, ddl, dS_final, d);
    case 3: return bwd3<3, NW>(gend, dd, dS0, s, dob, ddl, dS_final, d);
    case 4: return bwd3<4, NW>(gend, dd, dS0, s, dob, ddl, dS_final, d);
    case 5: return bwd3<5, NW>(gend, dd, dS0, s, dob, ddl, dS_final, d);
    case 6: return bwd3<6, NW>(gend, dd, dS0, s, dob, ddl, dS_final, d);
    case 7: return bwd3<7, NW>(gend, dd, dS0, s, dob, ddl, dS_final, d);
    default: return bwd3<8, NW>(gend, dd, dS0, s, dob, ddl, dS_final, d);
    }
}

} // namespace

// Off until a GPU run has checked and timed it; HYLA_GDR_STATE3=1 / 0 chooses.
constexpr bool STATE3_BY_DEFAULT = false;
bool use_state3(void) { return cuda_switch("HYLA_GDR_STATE3", STATE3_BY_DEFAULT); }

void launch_state_fwd3(const scratch &s, float *final_state, const float *S0, const dims &d) {
    const int warps = warps_for(d, true);
    if (warps == 8) fwd3_by_keys<8>(s, final_state, S0, d);
    else if (warps == 4) fwd3_by_keys<4>(s, final_state, S0, d);
    else fwd3_by_keys<2>(s, final_state, S0, d);
}

void launch_state_bwd3(bf16 *gend, bf16 *dd, float *dS0, const scratch &s, const bf16 *dob, const float *ddl,
                       const float *dS_final, const dims &d) {
    if (warps_for(d, false) == 4) bwd3_by_keys<4>(gend, dd, dS0, s, dob, ddl, dS_final, d);
    else bwd3_by_keys<2>(gend, dd, dS0, s, dob, ddl, dS_final, d);
}

} // namespace gdrc
