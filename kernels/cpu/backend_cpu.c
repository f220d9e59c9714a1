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

/* gdr_chunk_bwd, then l2norm_bwd of dq and dk in place (backend.h): the three ops. */
static void cpu_gdr_chunk_l2norm_bwd(float *dq, float *dk, float *dv, float *dbeta, float *dg, float *dinitial_state,
                                     const float *dout, const float *dfinal_state, const float *q, const float *k,
                                     const float *v, const float *beta, const float *g, const float *initial_state,
                                     float scale, int B, int L, int H, int dim_k, int dim_v, const float *saved,
                                     const float *q_rstd, const float *k_rstd) {
    cpu_f32_gdr_chunk_bwd(dq, dk, dv, dbeta, dg, dinitial_state, dout, dfinal_state, q, k, v, beta, g, initial_state,
                          scale, B, L, H, dim_k, dim_v, saved);
    cpu_f32_l2norm_bwd(dq, dq, q, q_rstd, B * L * H, dim_k); /* in place: a row's dot before its writes */
    cpu_f32_l2norm_bwd(dk, dk, k, k_rstd, B * L * H, dim_k);
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
    .gdr_chunk_l2norm_bwd = cpu_gdr_chunk_l2norm_bwd,
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
