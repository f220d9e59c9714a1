// CUDA: the gated delta rule in chunks of 64 tokens on the tensor cores (MODEL.md §3.4-3.5,
// the CPU twin kernels/cpu/op_gdr_chunk.c). Shared pieces of the forward and backward files.
//
// Every matrix product is bf16 x bf16 -> fp32 through WMMA on operands staged in shared
// memory; the element-wise steps between products (decays, masks, the triangular solve, the
// row sums of the gate gradient) run on fp32 values in shared memory, one thread per element,
// in a fixed order. Head dims are padded with zeros to multiples of 16 (keys) and 32 (values),
// up to 128; the ragged last chunk is padded with zero rows (beta = 0, g = 0), which keeps
// every padded row of W, U, Delta and their gradients zero.
//
// Per-chunk intermediates go to device scratch indexed by cb = (b H + h) NT + n, chunk-major,
// so that the sequential kernels stream them and the per-chunk kernels read one block each.
#ifndef HYLA_CUDA_GDR_CHUNK_CUH
#define HYLA_CUDA_GDR_CHUNK_CUH

#include <cuda_bf16.h>
#include <cuda_pipeline.h>
#include <mma.h>

#include <type_traits>

#include "cuda_check.h"

namespace gdrc {

using namespace nvcuda;
typedef __nv_bfloat16 bf16;

constexpr int CH = 64;             // chunk length
constexpr int DMAX = 128;          // largest head dim handled here
constexpr int THREADS = 256;       // 8 warps in every kernel
constexpr int WARPS = THREADS / 32;
constexpr int BV = 32;             // value columns per block of the sequential kernels
constexpr int LDH = DMAX + 8;      // bf16 rows of up to DMAX (the +8 staggers banks; 16 rows stay 32-byte aligned)
constexpr int LDF = DMAX + 4;      // fp32 rows of up to DMAX
constexpr int LDS = CH + 8;        // bf16 rows of a 64 x 64 matrix
constexpr int LDSF = CH + 4;       // fp32 rows of a 64 x 64 matrix
constexpr int LDVH = BV + 8;       // bf16 rows of a value slice
constexpr int LDVF = BV + 4;       // fp32 rows of a value slice

struct dims {
    int B, L, H, dk, dv; // the true sizes
    int dkp, dvp, nt;    // padded key dim (16s), value dim (32s), chunks per sequence
    float scale;
};

inline dims make_dims(int B, int L, int H, int dk, int dv, float scale) {
    return dims{B, L, H, dk, dv, (dk + 15) / 16 * 16, (dv + 31) / 32 * 32, (L + CH - 1) / CH, scale};
}

// Device scratch of one call (all chunk-major, padded, zeros in the padding).
struct scratch {
    float *gcum;      // [cb][64] chunk-local cumulative g
    bf16 *wn;         // [cb][64][dkp] -W = -T diag(beta e^gam) K
    bf16 *ke;         // [cb][64][dkp] diag(e^{gam_last - gam}) K
    bf16 *qs;         // [cb][64][dkp] scale diag(e^gam) Q
    bf16 *t;          // [cb][64][64] T = (I + A)^-1 (backward, or a forward that saves; else NULL)
    float *u;         // [cb][64][dvp] U = T diag(beta) V
    bf16 *delta;      // [cb][64][dvp] Delta = U - W H_n
    bf16 *states;     // [cb][dkp][dvp] H_n, the state entering chunk n
    bf16 *p;          // [cb][64][64] P = scale (Q K^T ⊙ E), causal, by the output kernel where the
                      // forward saves (the backward's local term reads it, not q and k); else NULL
};

// Carves 128-byte-aligned buffers out of dynamic shared memory.
struct smem_carver {
    char *p;
    template <typename T> __device__ T *take(size_t count) {
        T *r = (T *)p;
        p += (count * sizeof(T) + 127) / 128 * 128;
        return r;
    }
};
__host__ __device__ constexpr size_t carve_size(size_t bytes) { return (bytes + 127) / 128 * 128; }

// 228 KB of shared memory per SM (H100, H200), less 1 KB the runtime keeps per block, halved:
// the most a block may take for two blocks to fit on an SM.
constexpr size_t SMEM_TWO_PER_SM = (228 * 1024) / 2 - 1024;

// C (fp32, M x N, ld ldc) = [C +] alpha op(A) op(B), op(A) M x K, op(B) K x N, all multiples
// of 16, bf16 operands in shared memory. TA: A is stored K x M (row-major), so op(A) = A^T;
// TB: B is stored N x K, op(B) = B^T. Warps take 16 x 16 output tiles round-robin; the
// caller synchronises before and after.
template <bool TA, bool TB>
__device__ void mma(float *C, int ldc, const bf16 *A, int lda, const bf16 *Bm, int ldb, int M, int N, int K,
                    float alpha = 1.0f, bool accumulate = false) {
    typedef typename std::conditional<TA, wmma::col_major, wmma::row_major>::type la;
    typedef typename std::conditional<TB, wmma::col_major, wmma::row_major>::type lb;
    const int warp = threadIdx.x / 32, tm = M / 16, tn = N / 16;
    for (int tile = warp; tile < tm * tn; tile += WARPS) {
        const int mi = tile / tn, ni = tile % tn;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc, prod;
        wmma::fill_fragment(prod, 0.0f);
        for (int k = 0; k < K; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, la> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, lb> b;
            wmma::load_matrix_sync(a, TA ? A + (size_t)k * lda + mi * 16 : A + (size_t)mi * 16 * lda + k, lda);
            wmma::load_matrix_sync(b, TB ? Bm + (size_t)ni * 16 * ldb + k : Bm + (size_t)k * ldb + ni * 16, ldb);
            wmma::mma_sync(prod, a, b, prod);
        }
        float *c = C + (size_t)mi * 16 * ldc + ni * 16;
        if (accumulate) wmma::load_matrix_sync(acc, c, ldc, wmma::mem_row_major);
        else wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int e = 0; e < acc.num_elements; e++) acc.x[e] += alpha * prod.x[e];
        wmma::store_matrix_sync(c, acc, ldc, wmma::mem_row_major);
    }
}

// The same product handed to an epilogue instead of stored: f(row, col, value) for every
// element of op(A) op(B), through a 16 x 16 fp32 tile per warp in `stage` (WARPS * 256
// floats of shared memory). Saves a whole fp32 output buffer where the result goes to device
// memory (converted, negated, clipped to the true sizes).
template <bool TA, bool TB, typename F>
__device__ void mma_apply(const bf16 *A, int lda, const bf16 *Bm, int ldb, int M, int N, int K, float *stage, F f) {
    typedef typename std::conditional<TA, wmma::col_major, wmma::row_major>::type la;
    typedef typename std::conditional<TB, wmma::col_major, wmma::row_major>::type lb;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tm = M / 16, tn = N / 16;
    float *st = stage + warp * 256;
    for (int tile = warp; tile < tm * tn; tile += WARPS) {
        const int mi = tile / tn, ni = tile % tn;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> prod;
        wmma::fill_fragment(prod, 0.0f);
        for (int k = 0; k < K; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, la> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, lb> b;
            wmma::load_matrix_sync(a, TA ? A + (size_t)k * lda + mi * 16 : A + (size_t)mi * 16 * lda + k, lda);
            wmma::load_matrix_sync(b, TB ? Bm + (size_t)ni * 16 * ldb + k : Bm + (size_t)k * ldb + ni * 16, ldb);
            wmma::mma_sync(prod, a, b, prod);
        }
        wmma::store_matrix_sync(st, prod, 16, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) f(mi * 16 + e / 16, ni * 16 + e % 16, st[e]);
        __syncwarp();
    }
}

// rows x cols bf16 (cols a multiple of 8) from global (row stride lds) into shared (ld ldd),
// 16 bytes at a time through cp.async, over a block of NT threads; the caller commits and waits.
template <int NT = THREADS>
__device__ inline void copy_async_bf16(bf16 *dst, int ldd, const bf16 *src, size_t lds, int rows, int cols) {
    const int per_row = cols / 8;
    for (int e = threadIdx.x; e < rows * per_row; e += NT) {
        const int r = e / per_row, c = (e % per_row) * 8;
        __pipeline_memcpy_async(dst + (size_t)r * ldd + c, src + (size_t)r * lds + c, 16);
    }
}
// The same for fp32 (cols a multiple of 4).
template <int NT = THREADS>
__device__ inline void copy_async_f32(float *dst, int ldd, const float *src, size_t lds, int rows, int cols) {
    const int per_row = cols / 4;
    for (int e = threadIdx.x; e < rows * per_row; e += NT) {
        const int r = e / per_row, c = (e % per_row) * 4;
        __pipeline_memcpy_async(dst + (size_t)r * ldd + c, src + (size_t)r * lds + c, 16);
    }
}
__device__ inline void copy_async_wait() {
    __pipeline_commit();
    __pipeline_wait_prior(0);
}

// One chunk of a [B, L, H, width] tensor into bf16 shared memory, rows c..63 and columns
// width..wpad-1 zero, each row multiplied by f[r] (f NULL: 1), over a block of NT threads.
template <int NT = THREADS>
__device__ inline void load_rows_bf16(bf16 *dst, int ld, const float *src, size_t row_stride, int c, int width,
                                      int wpad, const float *f = nullptr) {
    for (int e = threadIdx.x; e < CH * wpad; e += NT) {
        const int r = e / wpad, i = e % wpad;
        float x = 0.0f;
        if (r < c && i < width) x = src[(size_t)r * row_stride + i] * (f ? f[r] : 1.0f);
        dst[(size_t)r * ld + i] = __float2bfloat16(x);
    }
}

constexpr int PER_THREAD = CH * DMAX / THREADS; // elements of a 64 x 128 buffer per thread
// load_rows_bf16 with every load of a thread issued before the first is used (the same
// values), in two halves (all 32 at once costs more registers than grads_dk_kernel has to spare).
__device__ inline void load_rows_bf16_at_once(bf16 *dst, int ld, const float *src, size_t row_stride, int c,
                                              int width, int wpad, const float *f = nullptr) {
    constexpr int HALF = PER_THREAD / 2;
    for (int m0 = 0; m0 < PER_THREAD; m0 += HALF) {
        float x[HALF];
#pragma unroll
        for (int m = 0; m < HALF; m++) {
            const int e = threadIdx.x + (m0 + m) * THREADS, r = e / wpad, i = e % wpad;
            x[m] = e < CH * wpad && r < c && i < width ? src[(size_t)r * row_stride + i] * (f ? f[r] : 1.0f) : 0.0f;
        }
#pragma unroll
        for (int m = 0; m < HALF; m++) {
            const int e = threadIdx.x + (m0 + m) * THREADS;
            if (e < CH * wpad) dst[(size_t)(e / wpad) * ld + e % wpad] = __float2bfloat16(x[m]);
        }
    }
}

// Host side: scratch of the forward quantities (t only when with_t) and the kernel launches.
scratch alloc_scratch(const dims &d, bool with_t);
void free_scratch(scratch &s);
// The same quantities with t laid out in caller memory (the op's `saved`, which the forward
// fills for the backward): its size in floats, and the layout.
size_t saved_floats(const dims &d);
scratch carve_saved(float *base, const dims &d);
// F1-F4 per chunk: gcum, -W, Ke, Qs, U (and T).
void launch_prep(const scratch &s, const float *q, const float *k, const float *v, const float *beta, const float *g,
                 const dims &d);
// F5 in order over the chunks: Delta and the states H_n; the final state when asked.
void launch_state_fwd(const scratch &s, float *final_state, const float *S0, const dims &d);
// F6 per chunk: the output.
void launch_out(float *o, const scratch &s, const float *q, const float *k, const dims &d);
// HYLA_GDR_FWD2: the output kernel and the state chains (forward and backward) in the forms
// that fit two blocks per SM (the state chains over 16 value columns a block); the same bits
// (cuda_gdr_chunk_fwd.cu). Read at every call, so that a test can run both forms in one process.
bool use_fwd2(void);
// HYLA_GDR_PREP2: prep_kernel in a form of four blocks per SM with its loads in flight at once;
// the same bits (cuda_gdr_chunk_fwd.cu). Read at every call, as use_fwd2.
bool use_prep2(void);
// HYLA_GDR_STATE3: the state chains, forward (F5) and backward (B2-B3), with the state in
// registers, a warp per 16 value columns (cuda_gdr_chunk_state3.cu); the same bits as the
// shared-memory forms. Read at every call, as use_fwd2.
bool use_state3(void);
void launch_state_fwd3(const scratch &s, float *final_state, const float *S0, const dims &d);
// HYLA_GDR_OUT3: the output (F6) with every product on register fragments, a warp per 16 rows
// of a chunk (cuda_gdr_chunk_out3.cu); the same bits as out2_kernel. Read at every call.
bool use_out3(void);
void launch_out3(float *o, const scratch &s, const float *q, const float *k, const dims &d);
// HYLA_GDR_LOCAL2: the backward's intra-chunk term ddl (B2) on register fragments, a warp per 16
// keys of a chunk (cuda_gdr_chunk_local2.cu); the same bits as local_kernel. Read at every call.
bool use_local2(void);
void launch_local2(float *ddl, bf16 *dob, const scratch &s, const float *q, const float *k, const float *dout,
                   const dims &d);
void launch_state_bwd3(bf16 *gend, bf16 *dd, float *dS0, const scratch &s, const bf16 *dob, const float *ddl,
                       const float *dS_final, const dims &d);

} // namespace gdrc

#endif
