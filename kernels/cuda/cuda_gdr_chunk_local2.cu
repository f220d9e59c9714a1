// CUDA: the chunked gated delta rule backward's intra-chunk term, B2's
//   ddl = scale (Q K^T ⊙ E)^T dO   (and dO in bf16 for the later kernels),
// with every product on register fragments (HYLA_GDR_LOCAL2; the WMMA form is local_kernel,
// cuda_gdr_chunk_bwd.cu). Where the forward saved P (its output kernel writes it into `saved`),
// P^T comes from there by ldmatrix and q, k are not read at all (40 KB a chunk, not 96). One chunk a block; each of its 4 warps owns 16 rows of ddl, i.e. 16
// keys j of the chunk, and forms their rows of P^T directly as K Q^T in C fragments (the same
// products as Q K^T's, summed in the same order), masks and scales them there and, packed to
// bf16, multiplies them by dO: P never touches shared memory. The warp's rows of K come from
// device memory straight into A fragments; Q and dO, which every warp reads, pass through
// shared memory in bf16 (35 KB a block, against local_kernel's 95).
//
// The same bits as local_kernel: the products start from zero and sum over k in ascending
// 16-steps, P is the same expression on the same values, rounded to bf16 once. ctest
// emu.gdr_chunk compares the bits.
#include "backend_cuda.h"
#include "cuda_gdr_chunk.cuh"
#include "cuda_gdr_chunk_frag.cuh"
#include "cuda_mma.cuh"
#include "cuda_switch.h"

namespace gdrc {
namespace {

constexpr int LWARPS = 4, LTHREADS = 32 * LWARPS; // warp w: keys 16 w .. 16 w + 15 of the chunk
constexpr int KS_MAX = DMAX / 16;

constexpr size_t LOCAL2_SMEM = 2 * carve_size(sizeof(bf16) * CH * LDH) + carve_size(sizeof(float) * CH);

// B2's intra-chunk part for chunk blockIdx.x of (b, h) = blockIdx.y; also dO as padded bf16.
__global__ void __launch_bounds__(LTHREADS, 4) local2_kernel(float *ddl, bf16 *dob, scratch s, const float *q,
                                                            const float *k, const float *dout, dims d) {
    extern __shared__ __align__(128) char smem[];
    smem_carver sc{smem};
    bf16 *Qh = sc.take<bf16>(CH * LDH), *Oh = sc.take<bf16>(CH * LDH);
    float *gc = sc.take<float>(CH);
    const int n = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H, tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int t0 = n * CH, c = min(CH, d.L - t0), dkp = d.dkp, dvp = d.dvp, kt = dkp / 16, vt = dvp / 16;
    const size_t cb = (size_t)bh * d.nt + n, row0 = ((size_t)b * d.L + t0) * d.H + h;
    const size_t sk = (size_t)d.H * d.dk;
    const int j_lo = 16 * warp + g, j_hi = j_lo + 8;
    uint32_t ap[4][4]; // P^T's rows of this warp's keys, as bf16 A fragments over the queries
    if (s.p) { // the forward saved P: its tile by cp.async (over Q's buffer), P^T's fragments by ldmatrix
        bf16 *Pt = Qh;
        copy_async_bf16<LTHREADS>(Pt, LDS, s.p + cb * CH * CH, CH, CH, CH);
        __pipeline_commit();
        load_rows_bf16<LTHREADS>(Oh, LDH, dout + row0 * d.dv, (size_t)d.H * d.dv, c, d.dv, dvp);
        __pipeline_wait_prior(0);
        __syncthreads();
        const bf16 *pt = Pt + 16 * warp + ((lane & 7) + 8 * (lane >> 4)) * LDS + 8 * ((lane >> 3) & 1);
#pragma unroll
        for (int ks = 0; ks < 4; ks++) hyla_mma::ldsm_x4_trans(ap[ks][0], ap[ks][1], ap[ks][2], ap[ks][3], pt + 16 * ks * LDS);
    } else {
        // this warp's keys as A fragments, from device memory (in flight while Q and dO are staged)
        uint32_t ak[KS_MAX][4];
        rows_to_a(ak, k + row0 * d.dk, sk, 16 * warp, c, d.dk, kt);
        if (tid < CH) gc[tid] = s.gcum[cb * CH + tid];
        load_rows_bf16<LTHREADS>(Qh, LDH, q + row0 * d.dk, sk, c, d.dk, dkp);
        load_rows_bf16<LTHREADS>(Oh, LDH, dout + row0 * d.dv, (size_t)d.H * d.dv, c, d.dv, dvp);
        __syncthreads();
        // S^T = K Q^T (16 keys x 64 queries): B[k][n] = Q[n][k], Q's rows by ldmatrix
        float st[8][4];
        product_xt(st, ak, Qh, kt);
        // P^T = scale (Q K^T ⊙ E)^T, causal (query r >= key j)
        const float g_lo = gc[j_lo], g_hi = gc[j_hi];
        pack_a(ap, [&](int nt, int e) {
            const int j = e < 2 ? j_lo : j_hi, r = 8 * nt + 2 * t + (e & 1);
            return j <= r ? d.scale * st[nt][e] * expf(gc[r] - (e < 2 ? g_lo : g_hi)) : 0.0f;
        });
    }
    for (int e = tid; e < CH * (dvp / 8); e += LTHREADS) { // dO in bf16, padded, for the later kernels
        const int r = e / (dvp / 8), col = e % (dvp / 8) * 8;
        *(uint4 *)(dob + cb * CH * dvp + (size_t)r * dvp + col) = *(const uint4 *)(Oh + r * LDH + col);
    }
    // ddl = P^T dO (16 x dvp), an n-tile pair at a time: B from dO's rows, transposed by ldmatrix
    float *out = ddl + cb * CH * dvp;
#pragma unroll
    for (int nn = 0; nn < DMAX / 16; nn++) {
        if (nn >= vt) break;
        float pv[2][4];
        product_x<2>(pv, ap, Oh, 16 * nn);
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int col = 16 * nn + 8 * half + 2 * t;
            *(float2 *)(out + (size_t)j_lo * dvp + col) = make_float2(pv[half][0], pv[half][1]);
            *(float2 *)(out + (size_t)j_hi * dvp + col) = make_float2(pv[half][2], pv[half][3]);
        }
    }
}

} // namespace

// Off until a GPU run has checked and timed it; HYLA_GDR_LOCAL2=1 / 0 chooses.
constexpr bool LOCAL2_BY_DEFAULT = false;
bool use_local2(void) { return cuda_switch("HYLA_GDR_LOCAL2", LOCAL2_BY_DEFAULT); }

void launch_local2(float *ddl, bf16 *dob, const scratch &s, const float *q, const float *k, const float *dout,
                   const dims &d) {
    local2_kernel<<<dim3(d.nt, d.B * d.H), LTHREADS, LOCAL2_SMEM>>>(ddl, dob, s, q, k, dout, d);
    CUDA_LAUNCH_CHECK();
}

} // namespace gdrc
