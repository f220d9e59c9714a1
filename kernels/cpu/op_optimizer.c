/* AdamW and the reductions the optimizer step needs (grad norm). */
#include "hyla_error.h"

#include "cpu_ops.h"
#include "real.h"

/* Fixed-size blocks summed in order: the result depends only on the data, not on the
 * number of threads or their timing. */
enum { SUM_BLOCK = 4096 };

void K(sum_squares_add)(double *acc, const REAL *x, size_t count) {
    size_t blocks = (count + SUM_BLOCK - 1) / SUM_BLOCK;
    double total = 0;
    if (blocks == 0) return;
    double *partial = hyla_malloc(blocks * sizeof(double));
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < blocks; b++) {
        size_t end = (b + 1) * SUM_BLOCK < count ? (b + 1) * SUM_BLOCK : count;
        double s = 0;
        for (size_t i = b * SUM_BLOCK; i < end; i++) s += (double)x[i] * (double)x[i];
        partial[b] = s;
    }
    for (size_t b = 0; b < blocks; b++) total += partial[b];
    free(partial);
    *acc += total;
}

void K(loss_mean_add)(double *acc, const REAL *losses, int n, int valid_count) {
    double total = 0; /* in row order; ignored rows add an exact 0 */
    for (int i = 0; i < n; i++) total += losses[i];
    *acc += valid_count ? (double)(REAL)(total / valid_count) : 0.0;
}

void K(accumulate_f64)(double *acc, const REAL *x, size_t count, double weight) {
    for (size_t i = 0; i < count; i++) acc[i] += weight * (double)x[i];
}

void K(grad_clip_scale)(REAL *scale, const double *sum_squares, REAL max_norm) {
    const double norm = sqrt(*sum_squares);
    if (!isfinite(norm)) {
        *scale = (REAL)NAN;
        return;
    }
    const double clip = max_norm > 0 ? (double)max_norm / (norm + 1e-6) : 1.0;
    *scale = (REAL)(clip < 1.0 ? clip : 1.0);
}

void K(axpy)(REAL *y, const REAL *x, REAL alpha, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) y[i] += alpha * x[i];
}

void K(adamw_step)(REAL *param, const REAL *grad, REAL *m, REAL *v, size_t count, REAL lr, REAL beta1, REAL beta2,
                   REAL eps, REAL weight_decay, const REAL *grad_scale_ptr, int step) {
    const REAL grad_scale = *grad_scale_ptr;
    if (!isfinite(grad_scale)) return; /* a skipped step (non-finite gradient norm) */
    REAL bias1 = (REAL)1 - pow(beta1, (REAL)step);
    REAL bias2 = (REAL)1 - pow(beta2, (REAL)step);
    REAL bias2_sqrt = sqrt(bias2);
    REAL step_size = lr / bias1;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) {
        REAL g = grad[i] * grad_scale;
        param[i] *= (REAL)1 - lr * weight_decay;
        m[i] = beta1 * m[i] + ((REAL)1 - beta1) * g;
        v[i] = beta2 * v[i] + ((REAL)1 - beta2) * g * g;
        /* torch: denom = sqrt(v) / sqrt(bias2) + eps; p -= (lr / bias1) * m / denom */
        REAL denom = sqrt(v[i]) / bias2_sqrt + eps;
        param[i] -= step_size * m[i] / denom;
    }
}
