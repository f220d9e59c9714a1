/* The CPU kernels are written once against REAL and compiled twice: as float for the
 * fp32 backend (cpu_f32_*) and as double (cpu_f64_*, built with HYLA_CPU_DOUBLE) so
 * that tests can check every backward pass against finite differences in double.
 *
 * Include cpu_ops.h before this file. Math functions come from <tgmath.h>, so exp(x)
 * is expf for float and exp for double; write constants as (REAL)c so float code
 * stays float. */
#ifndef HYLA_CPU_REAL_H
#define HYLA_CPU_REAL_H

#include <cblas.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <tgmath.h>

#ifdef HYLA_CPU_DOUBLE
#define REAL double
#define K(name) cpu_f64_##name
#define REAL_GEMM cblas_dgemm
#else
#define REAL float
#define K(name) cpu_f32_##name
#define REAL_GEMM cblas_sgemm
#endif

/* Row-major C[m,n] = alpha * op(A) op(B) + beta * C, op = transpose when trans_x != 0. */
static inline void real_gemm(int trans_a, int trans_b, int m, int n, int k, REAL alpha,
                             const REAL *a, int lda, const REAL *b, int ldb, REAL beta,
                             REAL *c, int ldc) {
    REAL_GEMM(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static inline REAL real_sigmoid(REAL x) { return (REAL)1 / ((REAL)1 + exp(-x)); }
static inline REAL real_silu(REAL x) { return x * real_sigmoid(x); }
/* d silu(x) / dx = s (1 + x (1 - s)), s = sigmoid(x). */
static inline REAL real_silu_grad(REAL x) {
    REAL s = real_sigmoid(x);
    return s * ((REAL)1 + x * ((REAL)1 - s));
}
/* PyTorch's softplus: returns x when x > 20. */
static inline REAL real_softplus(REAL x) { return x > (REAL)20 ? x : log1p(exp(x)); }

#endif
