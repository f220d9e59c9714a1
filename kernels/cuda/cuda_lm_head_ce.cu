// The LM head fused with cross-entropy on the GPU (ops_basic.h: lm_head_*), the CPU twin's
// chunking (kernels/ops/lm_head_chunk.h): each chunk's logits come from the backend's GEMM
// (cuBLAS, bf16 operands in bf16 mode) into a scratch from the stream-ordered pool, and one
// block per row reduces them with a fixed tree. dweight is one GEMM with beta = 1 per chunk,
// chunk after chunk on the stream: no float atomics, the same bits every run. In bf16 mode the
// weight's bf16 copy is made once per op, not once per product (it was 25 copies of
// [32000 x 1024] a laLTE step, 1.5 ms), and a chunk's dlogits are written once in bf16 for
// both dh and dweight (lm_head_dlogits_kernel; the same bits as fp32 dlogits and a copy).
#include <math.h>

#include "../ops/lm_head_chunk.h"
#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_products.cuh"
#include "cuda_reduce.cuh"

enum { LM_THREADS = 256 };

static const struct hyla_backend *backend; // the table: gemm, alloc, free

static void check_shapes(const char *op, int n, int dim, int vocab) {
    if (n < 0 || dim < 1 || vocab < 1) {
        fprintf(stderr, "hyla: error: %s: n = %d, dim = %d, vocab = %d (need n >= 0, dim and vocab >= 1)\n", op, n,
                dim, vocab);
        exit(1);
    }
}

using products::op_copies;

// A product of one chunk with the weight as B (its three dimensions rows, vocab and dim in some
// order): from bf16 copies where the chunk takes them — the weight's from the op's `weights`
// (made once), A's from `chunk` (dlogits' scratch is rewritten every chunk) — else on the fp32
// operands; HYLA_GEMM_SHARED_COPIES=0: every product makes its own copies.
static void chunk_gemm(op_copies &weights, op_copies &chunk, int ta, int tb, int m, int n, int k, const float *a,
                       int lda, const float *weight, int ldb, float beta, float *c, int ldc) {
    if (!cuda_gemm_takes_copies(m, n, k) || !products::shared_copies()) {
        products::gemm(chunk, ta, tb, m, n, k, 1.0f, a, lda, weight, ldb, beta, c, ldc);
        return;
    }
    const __nv_bfloat16 *w = weights.of(weight, tb ? n : k, tb ? k : n, ldb);
    products::gemm_h(chunk, ta, tb, m, n, k, 1.0f, a, lda, NULL, weight, ldb, w, beta, c, ldc);
}

// logits[rows, vocab] = h[r0 .. r0 + rows) weight^T
static void chunk_logits(op_copies &weights, op_copies &chunk, float *logits, const float *h, const float *weight,
                         int r0, int rows, int dim, int vocab) {
    chunk_gemm(weights, chunk, 0, 1, rows, vocab, dim, h + (size_t)r0 * dim, dim, weight, dim, 0.0f, logits, vocab);
}

// lse and loss of one row per block. The row is read once: each thread keeps a running
// maximum m and sum s of exp(x - m) over its columns, then the block combines them.
__global__ void lm_head_lse_kernel(float *losses, float *lse, const float *logits, const int32_t *targets, int vocab,
                                   int ignore) {
    __shared__ float shared[LM_THREADS];
    const float *row = logits + (size_t)blockIdx.x * vocab;
    const int t = targets[blockIdx.x];
    if (t == ignore) { // the whole block leaves together: no barrier is skipped
        if (threadIdx.x == 0) losses[blockIdx.x] = 0, lse[blockIdx.x] = 0;
        return;
    }
    float m = -INFINITY, s = 0;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        const float x = row[j];
        if (x > m) s = s * expf(m - x) + 1.0f, m = x; // expf(-inf) = 0 on the first column
        else s += expf(x - m);
    }
    const float block_m = block_max(m, shared);
    const float total = block_sum(m == -INFINITY ? 0.0f : s * expf(m - block_m), shared);
    if (threadIdx.x == 0) {
        const float l = block_m + logf(total);
        lse[blockIdx.x] = l;
        losses[blockIdx.x] = l - row[t];
    }
}

// dlogits = scale (exp(logits - lse) - onehot(t)), 0 on ignored rows: in place in fp32, or
// (Out = __nv_bfloat16) rounded straight into the bf16 operand both backward products read —
// the same values as the fp32 form followed by a copy (round to nearest even), without writing
// and re-reading the fp32 [rows x vocab] (a chunk's copy took 126 us on an H100).
template <typename Out> __device__ Out dlogit_as(float x);
template <> __device__ float dlogit_as<float>(float x) { return x; }
template <> __device__ __nv_bfloat16 dlogit_as<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <typename Out>
__global__ void lm_head_dlogits_kernel(Out *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                       int vocab, int ignore, float scale) {
    Out *out = dlogits + (size_t)blockIdx.x * vocab;
    const float *row = logits + (size_t)blockIdx.x * vocab;
    const int t = targets[blockIdx.x];
    if (t == ignore) {
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) out[j] = dlogit_as<Out>(0.0f);
        return;
    }
    const float l = lse[blockIdx.x];
    for (int j = threadIdx.x; j < vocab; j += blockDim.x)
        out[j] = dlogit_as<Out>(scale * expf(row[j] - l) - (j == t ? scale : 0.0f));
}

// The first column of the row's maximum: each thread's first best over its columns (in
// increasing order), then a tree that prefers the larger value, and on ties the smaller index.
__global__ void lm_head_argmax_kernel(int32_t *out, const float *logits, int vocab) {
    __shared__ float value[LM_THREADS];
    __shared__ int index[LM_THREADS];
    const float *row = logits + (size_t)blockIdx.x * vocab;
    float best = -INFINITY;
    int at = vocab; // none yet: loses every tie
    for (int j = threadIdx.x; j < vocab; j += blockDim.x)
        if (row[j] > best || at == vocab) best = row[j], at = j;
    value[threadIdx.x] = best, index[threadIdx.x] = at;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (threadIdx.x < s) {
            const float v = value[threadIdx.x + s];
            const int i = index[threadIdx.x + s];
            if (v > value[threadIdx.x] || (v == value[threadIdx.x] && i < index[threadIdx.x]))
                value[threadIdx.x] = v, index[threadIdx.x] = i;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = index[0] < vocab ? index[0] : 0;
}

// The forward of one chunk of rows r0 .. r0 + rows: its logits (kept in `logits`), lse, losses.
static void chunk_forward(op_copies &weights, float *logits, float *losses, float *lse, const float *h,
                          const float *weight, const int32_t *targets, int r0, int rows, int dim, int vocab,
                          int ignore) {
    {
        op_copies chunk_copies; // (the copy of h's rows: ends with the product)
        chunk_logits(weights, chunk_copies, logits, h, weight, r0, rows, dim, vocab);
    }
    lm_head_lse_kernel<<<rows, LM_THREADS>>>(losses + r0, lse + r0, logits, targets + r0, vocab, ignore);
    CUDA_LAUNCH_CHECK();
}

static void cuda_lm_head_ce_fwd(float *losses, float *lse, const float *h, const float *weight,
                                const int32_t *targets, int n, int dim, int vocab, int ignore, int chunk_rows) {
    check_shapes("lm_head_ce_fwd", n, dim, vocab);
    if (n == 0) return;
    const int chunk = lm_head_chunk_rows(n, vocab, chunk_rows);
    float *logits = (float *)backend->alloc(sizeof(float) * (size_t)chunk * vocab);
    op_copies weights;
    for (int r0 = 0; r0 < n; r0 += chunk)
        chunk_forward(weights, logits, losses, lse, h, weight, targets, r0, n - r0 < chunk ? n - r0 : chunk, dim, vocab,
                      ignore);
    backend->free(logits);
}

// Whether a chunk's dlogits go straight to bf16 (lm_head_dlogits_kernel): where both backward
// products take the op's shared copies.
static bool dlogits_in_bf16(int chunk, int dim, int vocab) {
    return products::shared_copies() && cuda_gemm_takes_copies(chunk, dim, vocab) &&
           cuda_gemm_takes_copies(vocab, dim, chunk);
}

// The backward of one chunk of rows r0 .. r0 + rows whose logits are in `logits`: dlogits in
// place, or rounded straight into dlogits_h where both products read bf16 (dlogits_in_bf16);
// dh's rows written, dweight = beta_w dweight + dlogits^T h.
static void chunk_backward(op_copies &weights, float *logits, __nv_bfloat16 *dlogits_h, float *dh, float *dweight,
                           float beta_w, const float *h, const float *weight, const float *lse, const int32_t *targets,
                           int r0, int rows, int dim, int vocab, int ignore, float scale) {
    op_copies chunk_copies; // dlogits copied once for dh and dweight
    if (dlogits_h && dlogits_in_bf16(rows, dim, vocab)) { // both products read dlogits_h
        lm_head_dlogits_kernel<<<rows, LM_THREADS>>>(dlogits_h, logits, lse + r0, targets + r0, vocab, ignore, scale);
        CUDA_LAUNCH_CHECK();
        const __nv_bfloat16 *w = weights.of(weight, vocab, dim, dim);
        products::gemm_h(chunk_copies, 0, 0, rows, dim, vocab, 1.0f, NULL, vocab, dlogits_h, weight, dim, w, 0.0f,
                         dh + (size_t)r0 * dim, dim);
        products::gemm_h(chunk_copies, 1, 0, vocab, dim, rows, 1.0f, NULL, vocab, dlogits_h, h + (size_t)r0 * dim, dim,
                         NULL, beta_w, dweight, dim); // dweight (+)= dlogits^T h
        return;
    }
    lm_head_dlogits_kernel<<<rows, LM_THREADS>>>(logits, logits, lse + r0, targets + r0, vocab, ignore, scale);
    CUDA_LAUNCH_CHECK();
    chunk_gemm(weights, chunk_copies, 0, 0, rows, dim, vocab, logits, vocab, weight, dim, 0.0f, dh + (size_t)r0 * dim,
               dim);
    products::gemm(chunk_copies, 1, 0, vocab, dim, rows, 1.0f, logits, vocab, h + (size_t)r0 * dim, dim, beta_w, dweight,
                   dim); // dweight (+)= dlogits^T h
}
// A chunk's bf16 dlogits scratch where the op's chunks take it (stream-ordered, as the copies).
static __nv_bfloat16 *dlogits_scratch(int chunk, int dim, int vocab) {
    __nv_bfloat16 *dlogits_h = NULL;
    if (dlogits_in_bf16(chunk, dim, vocab))
        CUDA_CHECK(cudaMallocAsync((void **)&dlogits_h, sizeof(__nv_bfloat16) * (size_t)chunk * vocab, 0));
    return dlogits_h;
}

static void cuda_lm_head_ce_bwd(float *dh, float *dweight, const float *h, const float *weight, const float *lse,
                                const int32_t *targets, int n, int dim, int vocab, int ignore, int valid_count,
                                float dloss, int chunk_rows) {
    check_shapes("lm_head_ce_bwd", n, dim, vocab);
    if (n == 0) return;
    const float scale = valid_count ? dloss / (float)valid_count : 0.0f;
    const int chunk = lm_head_chunk_rows(n, vocab, chunk_rows);
    float *dlogits = (float *)backend->alloc(sizeof(float) * (size_t)chunk * vocab);
    __nv_bfloat16 *dlogits_h = dlogits_scratch(chunk, dim, vocab);
    op_copies weights;
    for (int r0 = 0; r0 < n; r0 += chunk) {
        const int rows = n - r0 < chunk ? n - r0 : chunk;
        { // the logits' copies end with the product: dlogits is written over the logits next
            op_copies chunk_copies;
            chunk_logits(weights, chunk_copies, dlogits, h, weight, r0, rows, dim, vocab);
        }
        chunk_backward(weights, dlogits, dlogits_h, dh, dweight, 1.0f, h, weight, lse, targets, r0, rows, dim, vocab,
                       ignore, scale);
    }
    if (dlogits_h) CUDA_CHECK(cudaFreeAsync(dlogits_h, 0));
    backend->free(dlogits);
}

// The forward and the backward in one pass over the chunks (ops_basic.h): each chunk's logits
// made once — the backward's recomputation was one [rows x dim x vocab] product a chunk, ~1.8 ms
// of a laLTE step on an H100 (Nsight Compute, 2026-12-07) — then its lse and losses, then its
// dlogits and products as the backward makes them; dweight written from the first chunk on.
static void cuda_lm_head_ce_fwd_bwd(float *losses, float *lse, float *dh, float *dweight, const float *h,
                                    const float *weight, const int32_t *targets, int n, int dim, int vocab, int ignore,
                                    int valid_count, float dloss, int chunk_rows) {
    check_shapes("lm_head_ce_fwd_bwd", n, dim, vocab);
    if (n == 0) {
        CUDA_CHECK(cudaMemsetAsync(dweight, 0, sizeof(float) * (size_t)vocab * dim, 0));
        return;
    }
    const float scale = valid_count ? dloss / (float)valid_count : 0.0f;
    const int chunk = lm_head_chunk_rows(n, vocab, chunk_rows);
    float *logits = (float *)backend->alloc(sizeof(float) * (size_t)chunk * vocab);
    __nv_bfloat16 *dlogits_h = dlogits_scratch(chunk, dim, vocab);
    op_copies weights;
    for (int r0 = 0; r0 < n; r0 += chunk) {
        const int rows = n - r0 < chunk ? n - r0 : chunk;
        chunk_forward(weights, logits, losses, lse, h, weight, targets, r0, rows, dim, vocab, ignore);
        chunk_backward(weights, logits, dlogits_h, dh, dweight, r0 == 0 ? 0.0f : 1.0f, h, weight, lse, targets, r0,
                       rows, dim, vocab, ignore, scale);
    }
    if (dlogits_h) CUDA_CHECK(cudaFreeAsync(dlogits_h, 0));
    backend->free(logits);
}

static void cuda_lm_head_argmax(int32_t *out, const float *h, const float *weight, int n, int dim, int vocab,
                                int chunk_rows) {
    check_shapes("lm_head_argmax", n, dim, vocab);
    if (n == 0) return;
    const int chunk = lm_head_chunk_rows(n, vocab, chunk_rows);
    float *logits = (float *)backend->alloc(sizeof(float) * (size_t)chunk * vocab);
    op_copies weights;
    for (int r0 = 0; r0 < n; r0 += chunk) {
        const int rows = n - r0 < chunk ? n - r0 : chunk;
        op_copies chunk_copies;
        chunk_logits(weights, chunk_copies, logits, h, weight, r0, rows, dim, vocab);
        lm_head_argmax_kernel<<<rows, LM_THREADS>>>(out + r0, logits, vocab);
        CUDA_LAUNCH_CHECK();
    }
    backend->free(logits);
}

// Called by hyla_backend_cuda() once gemm, alloc and free are in the table.
extern "C" void cuda_register_lm_head_ce(struct hyla_backend *t) {
    backend = t;
    t->lm_head_ce_fwd = cuda_lm_head_ce_fwd, t->lm_head_ce_bwd = cuda_lm_head_ce_bwd;
    t->lm_head_ce_fwd_bwd = cuda_lm_head_ce_fwd_bwd;
    t->lm_head_argmax = cuda_lm_head_argmax;
}
