/* RMSNorm and the fused residual-add + RMSNorm (MODEL.md §1.1). */
#include "cpu_ops.h"
#include "real.h"

static void rmsnorm_row(REAL *y, REAL *rstd, const REAL *x, const REAL *w, int dim, REAL eps) {
    REAL ss = 0;
    for (int i = 0; i < dim; i++) ss += x[i] * x[i];
    REAL r = (REAL)1 / sqrt(ss / (REAL)dim + eps);
    *rstd = r;
    for (int i = 0; i < dim; i++) y[i] = x[i] * r * w[i];
}

void K(rmsnorm_fwd)(REAL *y, REAL *rstd, const REAL *x, const REAL *weight, int n, int dim, REAL eps) {
#pragma omp parallel for schedule(static)
    for (int row = 0; row < n; row++) {
        size_t off = (size_t)row * dim;
        rmsnorm_row(y + off, rstd + row, x + off, weight, dim, eps);
    }
}

/* With xh = x r: dx = r (dy w - xh mean(dy w xh)); dw = sum_rows dy xh. */
static void rmsnorm_dx(REAL *dx, const REAL *dy, const REAL *x, const REAL *w, REAL r, int dim, const REAL *dsum) {
    REAL c = 0;
    for (int i = 0; i < dim; i++) c += dy[i] * w[i] * x[i] * r;
    c /= (REAL)dim;
    for (int i = 0; i < dim; i++) {
        REAL g = r * (dy[i] * w[i] - x[i] * r * c);
        dx[i] = dsum ? dsum[i] + g : g;
    }
}

/* Weight gradient: columns in parallel, rows summed in order, so it is deterministic. */
static void rmsnorm_dweight(REAL *dweight, const REAL *dy, const REAL *x, const REAL *rstd, int n, int dim) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < dim; i++) {
        REAL acc = 0;
        for (int row = 0; row < n; row++) {
            size_t off = (size_t)row * dim + i;
            acc += dy[off] * x[off] * rstd[row];
        }
        dweight[i] += acc;
    }
}

void K(rmsnorm_bwd)(REAL *dx, REAL *dweight, const REAL *dy, const REAL *x, const REAL *weight, const REAL *rstd,
                    int n, int dim) {
#pragma omp parallel for schedule(static)
    for (int row = 0; row < n; row++) {
        size_t off = (size_t)row * dim;
        rmsnorm_dx(dx + off, dy + off, x + off, weight, rstd[row], dim, NULL);
    }
    rmsnorm_dweight(dweight, dy, x, rstd, n, dim);
}

void K(add_rmsnorm_fwd)(REAL *sum, REAL *y, REAL *rstd, const REAL *x, const REAL *residual, const REAL *weight,
                        int n, int dim, REAL eps) {
#pragma omp parallel for schedule(static)
    for (int row = 0; row < n; row++) {
        size_t off = (size_t)row * dim;
        for (int i = 0; i < dim; i++) sum[off + i] = x[off + i] + residual[off + i];
        rmsnorm_row(y + off, rstd + row, sum + off, weight, dim, eps);
    }
}

void K(add_rmsnorm_bwd)(REAL *dx, REAL *dweight, const REAL *dy, const REAL *dsum, const REAL *sum,
                        const REAL *weight, const REAL *rstd, int n, int dim) {
    /* The weight gradient first: dx may alias dsum, and dweight does not read either. */
    rmsnorm_dweight(dweight, dy, sum, rstd, n, dim);
#pragma omp parallel for schedule(static)
    for (int row = 0; row < n; row++) {
        size_t off = (size_t)row * dim;
        rmsnorm_dx(dx + off, dy + off, sum + off, weight, rstd[row], dim, dsum ? dsum + off : NULL);
    }
}
