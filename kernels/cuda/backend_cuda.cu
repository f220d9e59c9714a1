// The CUDA backend: memory, the products' precision and cuBLAS calls and cross-entropy (linear
// layers and the MLP are in cuda_linear.cu, RMSNorm in cuda_rmsnorm.cu, the embedding in
// cuda_embedding.cu, the reductions and the optimizer in cuda_reduce_ops.cu), with the CPU twin's semantics
// (backward writes activation gradients, adds parameter gradients). Reductions whose result
// must be reproducible use a fixed order: a block reduces its row with a fixed tree, and
// column sums loop over rows in order — no float atomics. Ops not written for the GPU yet stay
// NULL (hyla_backend_cuda_missing).
#include <string.h>

#include "backend_cuda.h"
#include "cuda_bf16_convert.cuh"
#include "cuda_check.h"
#include "cuda_device.h"
#include "cuda_reduce.cuh"
#include "cuda_switch.h"

cublasHandle_t cuda_cublas(void) {
    static cublasHandle_t handle;
    if (!handle) CUBLAS_CHECK(cublasCreate(&handle)); // one handle for the process, default stream
    return handle;
}

// ---- memory ---------------------------------------------------------------------------
// Stream-ordered allocation from the device's pool, which keeps what is freed: FSDP's
// per-unit buffers and the ops' scratch come and go every step, and cudaMalloc / cudaFree
// would synchronise the device each time (the host could never run ahead of the GPU) and
// hand memory back to the driver.
static void keep_pool_memory(void) {
    static int done;
    if (done) return;
    int device = 0;
    cudaMemPool_t pool;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep = UINT64_MAX;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    done = 1;
}
static void *cuda_alloc(size_t bytes) {
    void *p = NULL;
    keep_pool_memory();
    CUDA_CHECK(cudaMallocAsync(&p, bytes ? bytes : 1, 0));
    return p;
}
static void cuda_free(void *p) {
    cuda_forget_bf16_twins_at(p);
    CUDA_CHECK(cudaFreeAsync(p, 0));
}
// Host-to-device copies are queued, not waited for: the sources are pageable host memory,
// which CUDA stages at once (the caller may reuse or free it on return) while the copy itself
// runs in stream order. A step's tokens and λ values then never make the host wait for the
// GPU to drain. Device-to-host copies are the synchronisation points (a step's statistics).
static void cuda_to_device(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, 0));
}
static void cuda_to_host(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
static void cuda_copy(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}
static void cuda_zero(void *p, size_t bytes) { CUDA_CHECK(cudaMemset(p, 0, bytes)); }
static void cuda_synchronize(void) { CUDA_CHECK(cudaDeviceSynchronize()); }

// fp32 (no TF32: the CPU twin's numbers), or bf16 operands on the tensor cores with fp32
// accumulation: storage stays fp32, and the operands are rounded to bf16 by cuBLAS (small
// products) or into bf16 copies first (large ones, cuda_gemm_takes_copies below).
static cublasComputeType_t gemm_compute = CUBLAS_COMPUTE_32F;
static void cuda_set_matmul_precision(int bf16) {
    gemm_compute = bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
}
bool cuda_matmul_bf16(void) { return gemm_compute == CUBLAS_COMPUTE_32F_FAST_16BF; }

// Row-major C = alpha op(A) op(B) + beta C as column-major C^T = op(B)^T op(A)^T.
// batch products at once: matrix j starts at a + j stride_a (and so on).
void cuda_gemm_batched(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                       long long stride_a, const float *b, int ldb, long long stride_b, float beta, float *c, int ldc,
                       long long stride_c, int batch) {
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(cuda_cublas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                            trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, CUDA_R_32F, ldb,
                                            stride_b, a, CUDA_R_32F, lda, stride_a, &beta, c, CUDA_R_32F, ldc,
                                            stride_c, batch, gemm_compute, CUBLAS_GEMM_DEFAULT));
}

// In bf16 mode, products of at least this many multiply-adds round their operands to bf16
// copies first (cuda_linear.cu, cuda_gemm_bf16.cu: cuBLAS's own rounding of fp32 operands
// runs far below the bf16 rate); smaller ones are not worth the copies.
// HYLA_GEMM_BF16_COPIES=0 / 1 switches the copies off / on; on by default (COPIES_BY_DEFAULT)
// since test_cuda_ops passed with them on an H100 and laLTE trained 21% faster (2026-12-07).
// Thin products (the delta rule's gate projections: 1024 -> 8) are bound by reading their wide
// operand, which a copy would read once more: a copy needs every dimension >= BF16_COPY_MIN_DIM.
static const double BF16_COPY_MIN_MACS = 1 << 26;
static const int BF16_COPY_MIN_DIM = 64;
static const bool COPIES_BY_DEFAULT = true;
static bool bf16_copies_wanted(void) {
    static const bool on = cuda_switch("HYLA_GEMM_BF16_COPIES", COPIES_BY_DEFAULT);
    return on;
}
bool cuda_gemm_takes_copies(int m, int n, int k) {
    const bool big = (double)m * n * k >= BF16_COPY_MIN_MACS && m >= BF16_COPY_MIN_DIM && n >= BF16_COPY_MIN_DIM &&
                     k >= BF16_COPY_MIN_DIM;
    return cuda_matmul_bf16() && big && bf16_copies_wanted();
}

void cuda_gemm_fp32_operands(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                             const float *b, int ldb, float beta, float *c, int ldc) {
    CUBLAS_CHECK(cublasGemmEx(cuda_cublas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m,
                              k, &alpha, b, CUDA_R_32F, ldb, a, CUDA_R_32F, lda, &beta, c, CUDA_R_32F, ldc,
                              gemm_compute, CUBLAS_GEMM_DEFAULT));
}

// ---- block reductions (fixed tree: deterministic) ---------------------------------------
enum { ROW_THREADS = 256 };

// ---- cross-entropy ---------------------------------------------------------------------------
__device__ float row_lse(const float *row, int vocab, float *shared) {
    float m = -INFINITY;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m, shared);
    float s = 0;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) s += expf(row[j] - m);
    return m + logf(block_sum(s, shared));
}
__global__ void ce_fwd_kernel(float *losses, const float *logits, const int32_t *targets, int vocab, int ignore) {
    __shared__ float shared[ROW_THREADS];
    const float *row = logits + (size_t)blockIdx.x * vocab;
    const int t = targets[blockIdx.x];
    if (t == ignore) { // the whole block leaves together: no barrier is skipped
        if (threadIdx.x == 0) losses[blockIdx.x] = 0;
        return;
    }
    float lse = row_lse(row, vocab, shared);
    if (threadIdx.x == 0) losses[blockIdx.x] = lse - row[t];
}
__global__ void ce_bwd_kernel(float *dlogits, const float *logits, const int32_t *targets, int vocab, int ignore,
                              float scale) {
    __shared__ float shared[ROW_THREADS];
    const float *row = logits + (size_t)blockIdx.x * vocab;
    float *drow = dlogits + (size_t)blockIdx.x * vocab;
    const int t = targets[blockIdx.x];
    if (t == ignore) {
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) drow[j] = 0;
        return;
    }
    float lse = row_lse(row, vocab, shared); // every thread has read the row before anyone writes it
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) drow[j] = scale * expf(row[j] - lse) - (j == t ? scale : 0);
}
// The mean needs the valid count and an ordered sum: losses come back to the host (a sync).
static float cuda_cross_entropy_fwd(float *losses, const float *logits, const int32_t *targets, int n, int vocab,
                                    int ignore, int *valid_count) {
    ce_fwd_kernel<<<n, ROW_THREADS>>>(losses, logits, targets, vocab, ignore);
    CUDA_LAUNCH_CHECK();
    float *host_l = (float *)malloc(sizeof(float) * (size_t)n);
    int32_t *host_t = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
    if (!host_l || !host_t) exit(1);
    cuda_to_host(host_l, losses, sizeof(float) * (size_t)n);
    cuda_to_host(host_t, targets, sizeof(int32_t) * (size_t)n);
    double total = 0;
    int valid = 0;
    for (int i = 0; i < n; i++)
        if (host_t[i] != ignore) total += host_l[i], valid++;
    free(host_l), free(host_t);
    *valid_count = valid;
    return valid ? (float)(total / valid) : 0.0f;
}
static void cuda_cross_entropy_bwd(float *dlogits, const float *logits, const int32_t *targets, int n, int vocab,
                                   int ignore, int valid_count, float dloss) {
    ce_bwd_kernel<<<n, ROW_THREADS>>>(dlogits, logits, targets, vocab, ignore, valid_count ? dloss / valid_count : 0);
    CUDA_LAUNCH_CHECK();
}

// ---- the table ------------------------------------------------------------------------------------
static struct hyla_backend table;
extern "C" void cuda_register_reduce_ops(struct hyla_backend *t); // cuda_reduce_ops.cu
extern "C" void cuda_register_linear(struct hyla_backend *t);    // cuda_linear.cu
extern "C" void cuda_register_mlp(struct hyla_backend *t);       // cuda_mlp.cu
extern "C" void cuda_register_swiglu(struct hyla_backend *t);    // cuda_swiglu.cu
extern "C" void cuda_register_embedding(struct hyla_backend *t); // cuda_embedding.cu
extern "C" void cuda_register_gdn_parts(struct hyla_backend *t); // cuda_gdn_parts.cu
extern "C" void cuda_register_rmsnorm(struct hyla_backend *t);   // cuda_rmsnorm.cu
extern "C" void cuda_register_attention(struct hyla_backend *t); // cuda_attention.cu
extern "C" void cuda_register_lte_router(struct hyla_backend *t); // cuda_lte_router.cu
extern "C" void cuda_register_gdr(struct hyla_backend *t);        // cuda_gdr.cu
extern "C" void cuda_register_nsa(struct hyla_backend *t);        // cuda_nsa.cu
extern "C" void cuda_register_bf16_convert(struct hyla_backend *t); // cuda_bf16_convert.cu
extern "C" void cuda_register_lm_head_ce(struct hyla_backend *t); // cuda_lm_head_ce.cu
extern "C" void cuda_register_bf16_twins(struct hyla_backend *t); // cuda_bf16_twins.cu

extern "C" const struct hyla_backend *hyla_backend_cuda(void) {
    if (table.name) return &table;
    table.name = "cuda";
    table.device_memory = 1;
    table.current_device = hyla_cuda_current_device;
    table.alloc = cuda_alloc, table.free = cuda_free, table.to_device = cuda_to_device, table.to_host = cuda_to_host;
    table.copy = cuda_copy, table.zero = cuda_zero, table.synchronize = cuda_synchronize;
    table.set_matmul_precision = cuda_set_matmul_precision;
    table.cross_entropy_fwd = cuda_cross_entropy_fwd, table.cross_entropy_bwd = cuda_cross_entropy_bwd;
    cuda_register_linear(&table);
    cuda_register_mlp(&table);
    cuda_register_swiglu(&table);
    cuda_register_embedding(&table);
    cuda_register_reduce_ops(&table);
    cuda_register_gdn_parts(&table);
    cuda_register_rmsnorm(&table);
    cuda_register_attention(&table);
    cuda_register_lte_router(&table);
    cuda_register_gdr(&table);
    cuda_register_nsa(&table);
    cuda_register_bf16_convert(&table);
    cuda_register_lm_head_ce(&table);
    cuda_register_bf16_twins(&table);
    return &table;
}

extern "C" int hyla_backend_cuda_missing(const char **names, int capacity) {
    const struct hyla_backend *t = hyla_backend_cuda();
    int n = 0;
#define REAL float
#define HYLA_OP(ret, name, args)                                                                                   \
    if (!t->name) {                                                                                                \
        if (n < capacity) names[n] = #name;                                                                        \
        n++;                                                                                                       \
    }
#include "../ops/all_ops.h"
#undef HYLA_OP
#undef REAL
    return n;
}
