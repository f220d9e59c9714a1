/* The LM head fused with cross-entropy (MODEL.md §1.1): the logits of a chunk of rows are
 * computed into a bounded scratch, reduced to per-row statistics (forward), turned into
 * dlogits in place and multiplied back (backward), so [n, vocab] is never stored. */
#include <stdio.h>
#include <stdlib.h>

#include "../../common/hyla_error.h"
#include "../ops/lm_head_chunk.h"
#include "cpu_ops.h"
#include "real.h"

/* cross_entropy's log-sum-exp (op_cross_entropy.c), term for term: the fused op gives the
 * unfused composition's bits whenever the products do. */
static REAL row_logsumexp(const REAL *row, int vocab) {
    REAL m = row[0];
    for (int j = 1; j < vocab; j++) m = row[j] > m ? row[j] : m;
    REAL s = 0;
    for (int j = 0; j < vocab; j++) s += exp(row[j] - m);
    return m + log(s);
}

static void check_shapes(const char *op, int n, int dim, int vocab) {
    if (n < 0 || dim < 1 || vocab < 1) {
        fprintf(stderr, "hyla: error: %s: n = %d, dim = %d, vocab = %d (need n >= 0, dim and vocab >= 1)\n", op, n,
                dim, vocab);
        exit(1);
    }
}

/* logits[rows, vocab] = h[r0 .. r0 + rows) weight^T */
static void chunk_logits(REAL *logits, const REAL *h, const REAL *weight, int r0, int rows, int dim, int vocab) {
    real_gemm(0, 1, rows, vocab, dim, (REAL)1, h + (size_t)r0 * dim, dim, weight, dim, (REAL)0, logits, vocab);
}

void K(lm_head_ce_fwd)(REAL *losses, REAL *lse, const REAL *h, const REAL *weight, const int32_t *targets, int n,
                       int dim, int vocab, int ignore_index, int chunk_rows) {
    check_shapes("lm_head_ce_fwd", n, dim, vocab);
    if (n == 0) return;
    const int chunk = lm_head_chunk_rows(n, vocab, chunk_rows);
    REAL *logits = hyla_malloc(sizeof(REAL) * (size_t)chunk * vocab);
    for (int r0 = 0; r0 < n; r0 += chunk) {
        const int rows = n - r0 < chunk ? n - r0 : chunk;
        chunk_logits(logits, h, weight, r0, rows, dim, vocab);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < rows; i++) {
            const REAL *row = logits + (size_t)i * vocab;
            const int t = targets[r0 + i];
            const REAL l = t == ignore_index ? (REAL)0 : row_logsumexp(row, vocab);
            lse[r0 + i] = l;
            losses[r0 + i] = t == ignore_index ? (REAL)0 : l - row[t];
        }
    }
    free(logits);
}

void K(lm_head_ce_bwd)(REAL *dh, REAL *dweight, const REAL *h, const REAL *weight, const REAL *lse,
                       const int32_t *targets, int n, int dim, int vocab, int ignore_index, int valid_count, REAL dloss,
                       int chunk_rows) {
    check_shapes("lm_head_ce_bwd", n, dim, vocab);
    if (n == 0) return;
    const REAL scale = valid_count ? dloss / (REAL)valid_count : (REAL)0;
    const int chunk = lm_head_chunk_rows(n, vocab, chunk_rows);
    REAL *dlogits = hyla_malloc(sizeof(REAL) * (size_t)chunk * vocab);
    for (int r0 = 0; r0 < n; r0 += chunk) {
        const int rows = n - r0 < chunk ? n - r0 : chunk;
        chunk_logits(dlogits, h, weight, r0, rows, dim, vocab);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < rows; i++) { /* cross_entropy_bwd's formula, the saved lse */
            REAL *row = dlogits + (size_t)i * vocab;
            const int t = targets[r0 + i];
            if (t == ignore_index) {
                for (int j = 0; j < vocab; j++) row[j] = 0;
                continue;
            }
            const REAL l = lse[r0 + i];
            for (int j = 0; j < vocab; j++) row[j] = scale * exp(row[j] - l);
            row[t] -= scale;
        }
        real_gemm(0, 0, rows, dim, vocab, (REAL)1, dlogits, vocab, weight, dim, (REAL)0, dh + (size_t)r0 * dim, dim);
        real_gemm(1, 0, vocab, dim, rows, (REAL)1, dlogits, vocab, h + (size_t)r0 * dim, dim, (REAL)1, dweight, dim);
    }
    free(dlogits);
}

/* The two ops one after the other (the CPU makes the logits twice: the twin's arithmetic is the
 * composition's, which the GPU's one pass must match). */
void K(lm_head_ce_fwd_bwd)(REAL *losses, REAL *lse, REAL *dh, REAL *dweight, const REAL *h, const REAL *weight,
                           const int32_t *targets, int n, int dim, int vocab, int ignore_index, int valid_count,
                           REAL dloss, int chunk_rows) {
    K(lm_head_ce_fwd)(losses, lse, h, weight, targets, n, dim, vocab, ignore_index, chunk_rows);
    for (size_t i = 0; i < (size_t)vocab * dim; i++) dweight[i] = 0;
    K(lm_head_ce_bwd)(dh, dweight, h, weight, lse, targets, n, dim, vocab, ignore_index, valid_count, dloss, chunk_rows);
}

void K(lm_head_argmax)(int32_t *out, const REAL *h, const REAL *weight, int n, int dim, int vocab, int chunk_rows) {
    check_shapes("lm_head_argmax", n, dim, vocab);
    if (n == 0) return;
    const int chunk = lm_head_chunk_rows(n, vocab, chunk_rows);
    REAL *logits = hyla_malloc(sizeof(REAL) * (size_t)chunk * vocab);
    for (int r0 = 0; r0 < n; r0 += chunk) {
        const int rows = n - r0 < chunk ? n - r0 : chunk;
        chunk_logits(logits, h, weight, r0, rows, dim, vocab);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < rows; i++) {
            const REAL *row = logits + (size_t)i * vocab;
            int best = 0;
            for (int j = 1; j < vocab; j++)
                if (row[j] > row[best]) best = j;
            out[r0 + i] = best;
        }
    }
    free(logits);
}
