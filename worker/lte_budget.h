/* LTE's hard budget at evaluation without a cache (MODEL.md §5.8, naive_enforce_buffer_size):
 * the final buffer state of a streaming decoder, applied to every query. */
#ifndef HYLA_LTE_BUDGET_H
#define HYLA_LTE_BUDGET_H

#include <stdint.h>

/* selected, score: host [B, L, H]. window = LTE window w, budget = R, sinks = s.
 * Returns the number of (b, h) pairs that were pruned. */
int lte_enforce_budget(uint8_t *selected, const float *score, int B, int L, int H, int window, int budget, int sinks);

#endif
