/* Cross-entropy over the vocabulary, mean over valid positions (MODEL.md §1.1). */
#include "cpu_ops.h"
#include "real.h"

static REAL row_logsumexp(const REAL *row, int vocab) {
    REAL m = row[0];
    for (int j = 1; j < vocab; j++) m = row[j] > m ? row[j] : m;
    REAL s = 0;
    for (int j = 0; j < vocab; j++) s += exp(row[j] - m);
    return m + log(s);
}

REAL K(cross_entropy_fwd)(REAL *losses, const REAL *logits, const int32_t *targets, int n, int vocab,
                          int ignore_index, int *valid_count) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const REAL *row = logits + (size_t)i * vocab;
        losses[i] = targets[i] == ignore_index ? (REAL)0 : row_logsumexp(row, vocab) - row[targets[i]];
    }
    /* Sum in order so the mean does not depend on the thread count. */
    double total = 0;
    int valid = 0;
    for (int i = 0; i < n; i++) {
        if (targets[i] == ignore_index) continue;
        total += losses[i];
        valid++;
    }
    *valid_count = valid;
    return valid ? (REAL)(total / valid) : (REAL)0;
}

void K(cross_entropy_bwd)(REAL *dlogits, const REAL *logits, const int32_t *targets, int n, int vocab,
                          int ignore_index, int valid_count, REAL dloss) {
    REAL scale = valid_count ? dloss / (REAL)valid_count : (REAL)0;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const REAL *row = logits + (size_t)i * vocab;
        REAL *drow = dlogits + (size_t)i * vocab;
        if (targets[i] == ignore_index) {
            for (int j = 0; j < vocab; j++) drow[j] = 0;
            continue;
        }
        REAL lse = row_logsumexp(row, vocab);
        int target = targets[i];
        for (int j = 0; j < vocab; j++) drow[j] = scale * exp(row[j] - lse); /* safe when drow == row */
        drow[target] -= scale;
    }
}
