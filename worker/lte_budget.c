#include "lte_budget.h"

#include <stdlib.h>

#include "common/hyla_error.h"

struct scored { float score; int pos; };

/* Higher score first; ties by position so the result does not depend on qsort. */
static int by_score_desc(const void *a, const void *b) {
    const struct scored *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->pos - y->pos;
}

int lte_enforce_budget(uint8_t *selected, const float *score, int B, int L, int H, int window, int budget, int sinks) {
    const int t0 = L - window - 1 > 0 ? L - window - 1 : 0; /* positions >= t0 are in the last query's window */
    if (t0 <= sinks) return 0;
    /* The reference checks the budget globally over the batch: prune only if some (b, h) exceeds it. */
    int over = 0;
    for (int b = 0; b < B && !over; b++)
        for (int h = 0; h < H && !over; h++) {
            int count = 0;
            for (int j = 0; j < t0; j++) count += selected[((size_t)b * L + j) * H + h] != 0;
            over = count > budget;
        }
    if (!over) return 0;
    const int keep = budget - sinks > 0 ? budget - sinks : 0;
    struct scored *cand = hyla_malloc(sizeof(struct scored) * (size_t)t0);
    int pruned = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int n = 0;
            for (int j = sinks; j < t0; j++) {
                size_t at = ((size_t)b * L + j) * H + h;
                if (selected[at]) cand[n++] = (struct scored){score[at], j};
            }
            if (n <= keep) continue;
            qsort(cand, (size_t)n, sizeof *cand, by_score_desc);
            for (int i = keep; i < n; i++) selected[((size_t)b * L + cand[i].pos) * H + h] = 0;
            pruned++;
        }
    free(cand);
    return pruned;
}
