/* LTE selection, straight-through estimator and L1 term (MODEL.md §5.3, §5.5, §5.6). */
#include "cpu_ops.h"
#include "real.h"

/* Below this many elements the threads' start-up costs more than they save. */
#define PARALLEL_MIN_WORK 32768

void K(lte_select)(uint8_t *selected, const REAL *score, int B, int L, int H, int sinks) {
    size_t n = (size_t)B * L * H;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        int j = (int)((i / (size_t)H) % (size_t)L);
        selected[i] = score[i] > 0 || j < sinks;
    }
}

/* v' = v in the forward pass, so dv' reaches the score as if v' = v m(score), m = 1, m' = 1. */
void K(lte_ste_bwd)(REAL *dscore, const REAL *dv_attn, const REAL *v, int B, int L, int H, int d) {
    size_t n = (size_t)B * L * H;
#pragma omp parallel for schedule(static) if (n * d >= PARALLEL_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        const REAL *g = dv_attn + i * d, *x = v + i * d;
        REAL s = 0;
        for (int c = 0; c < d; c++) s += g[c] * x[c];
        dscore[i] = s;
    }
}

/* Sequential sums in double: the term is small and must not depend on the thread count. */
void K(lte_l1_fwd)(double *l1_acc, REAL *kept_fraction, const REAL *score, const REAL *lambda, REAL coef, int B,
                   int L, int H, int margin) {
    int len = L - margin > 0 ? L - margin : 0;
    double total = 0;
    for (int h = 0; h < H; h++) {
        double relu_sum = 0, kept = 0;
        for (int b = 0; b < B; b++) {
            for (int j = 0; j < len; j++) {
                REAL s = score[((size_t)b * L + j) * H + h];
                if (s > 0) relu_sum += s, kept += 1;
            }
        }
        total += (double)lambda[h] * relu_sum;
        if (kept_fraction) kept_fraction[h] = len > 0 ? (REAL)(kept / ((double)B * len)) : 0;
    }
    *l1_acc += (double)(REAL)((double)coef * total);
}

void K(lte_l1_bwd)(REAL *dscore, const REAL *score, const REAL *lambda, REAL coef, int B, int L, int H, int margin) {
    int len = L - margin;
#pragma omp parallel for schedule(static) if ((size_t)B * L * H >= PARALLEL_MIN_WORK)
    for (int row = 0; row < B * L; row++) {
        if (row % L >= len) continue;
        for (int h = 0; h < H; h++) {
            size_t i = (size_t)row * H + h;
            if (score[i] > 0) dscore[i] += coef * lambda[h];
        }
    }
}
