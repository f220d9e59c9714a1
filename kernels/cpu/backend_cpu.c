/* The CPU backend table: host memory and the cpu_f32_* ops. */
#include "../backend.h"

#include <cblas.h>
#include <string.h>

#include "../../common/bf16.h"
#include "../../common/hyla_error.h"
#include "cpu_ops.h"

static void *cpu_alloc(size_t bytes) { return hyla_malloc(bytes); }
static void cpu_free(void *ptr) { free(ptr); }
static void cpu_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void cpu_zero(void *ptr, size_t bytes) { memset(ptr, 0, bytes); }
static void cpu_synchronize(void) {}
static void cpu_round_to_bf16(uint16_t *dst, const float *src, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = hyla_bf16_round(src[i]);
}
static void cpu_widen_bf16(float *dst, const uint16_t *src, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = hyla_bf16_widen(src[i]);
}

static void cpu_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                     const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
                alpha, a, lda, b, ldb, beta, c, ldc);
}

static const struct hyla_backend cpu_backend = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_synchronize,
    .round_to_bf16 = cpu_round_to_bf16,
    .widen_bf16 = cpu_widen_bf16,
    .gemm = cpu_gemm,
#define HYLA_OP(ret, name, args) .name = cpu_f32_##name,
#define REAL float
#include "../ops/all_ops.h"
#undef REAL
#undef HYLA_OP
};

/* The ops parallelise with OpenMP and call BLAS from inside their threads; a threaded
 * OpenBLAS underneath would oversubscribe the cores (measured: 100x slower on one shape)
 * and make timing-dependent work splits. One BLAS thread per OpenMP thread. */
const struct hyla_backend *hyla_backend_cpu(void) {
    openblas_set_num_threads(1);
    return &cpu_backend;
}
