/* Token embedding lookup and its scatter-add backward. */
#include "cpu_ops.h"
#include "real.h"

void K(embedding_fwd)(REAL *out, const int32_t *tokens, const REAL *table, int n, int dim) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * dim, table + (size_t)tokens[i] * dim, sizeof(REAL) * (size_t)dim);
}

/* Parallel over embedding columns: each thread owns a slice of every row, and tokens are
 * visited in order, so repeated tokens accumulate in a fixed order without atomics. */
void K(embedding_bwd)(REAL *dtable, const REAL *dout, const int32_t *tokens, int n, int dim, int padding_idx) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < dim; c++) {
        for (int i = 0; i < n; i++) {
            if (tokens[i] == padding_idx) continue;
            dtable[(size_t)tokens[i] * dim + c] += dout[(size_t)i * dim + c];
        }
    }
}
