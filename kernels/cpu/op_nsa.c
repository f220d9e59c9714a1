/* Native sparse attention (MODEL.md §6): mean-pooled compressed attention, top-n block
 * selection shared by a kv group, selected-block attention and a sliding window, mixed by
 * sigmoid gates. The three branches are one softmax-attention routine (attn_row_fwd /
 * attn_row_bwd) applied to three key sets. The saved layout is in op_shapes.h.
 *
 * Selection (§6.2 step 4, no gradient): candidates are the blocks c <= IC = t / b. The forced
 * blocks {0, IC-1, IC} rank first, the others by importance p_c = sum over the group of
 * exp(q_i . kbar_c scale - lse_cmp_i), ties to the lower block index. Ranking the forced blocks
 * first is forcing them to the maximum G of p, except that rounding cannot lift another block
 * above them. block_idx lists the chosen blocks by rank; -1 fills the rest. A block_idx given
 * with reuse_block_idx must not repeat a block (its keys would count twice).
 *
 * Threads: the forward pass and the backward pass for dq and dgate run one task per
 * (b, t, kv head); dk and dv one task per (b, kv head, key block), which owns those rows and
 * visits every query that reads them, recomputing the probabilities (as flash attention
 * does) instead of scattering into shared rows. No two tasks write one element and every
 * sum runs in a fixed order, so results do not depend on the thread count. */
#include "../../common/hyla_error.h"
#include "cpu_ops.h"
#include "real.h"

#define NSA_HD
#include "../ops/nsa_rows.h"

static struct nsa nsa_init(const struct hyla_nsa_shape *s, int B, int L, const REAL *q, const REAL *k,
                           const REAL *v, const REAL *gate_logits, REAL *saved) {
    if (s->kv_heads < 1 || s->q_heads % s->kv_heads != 0 || s->block_size < 1 || s->window < 1 || s->n_select < 0)
        hyla_die("nsa: bad shape (q_heads %d, kv_heads %d, block_size %d, window %d, n_select %d): q_heads must be "
                 "a multiple of kv_heads, block_size and window at least 1, n_select at least 0",
                 s->q_heads, s->kv_heads, s->block_size, s->window, s->n_select);
    if (s->n_select > NSA_MAX_SELECT)
        hyla_die("nsa: n_select %d exceeds %d; raise NSA_MAX_SELECT in kernels/cpu/op_nsa.c", s->n_select,
                 NSA_MAX_SELECT);
    struct nsa a = {.s = *s, .L = L, .G = s->q_heads / s->kv_heads, .NB = (L + s->block_size - 1) / s->block_size,
                    .d = s->head_dim, .scale = (REAL)s->scale, .q = q, .k = k, .v = v,
                    .gate_logits = gate_logits, .saved = saved, .off = nsa_saved_offsets(s, B, L)};
    return a;
}

void K(nsa_fwd)(REAL *o, REAL *saved, int32_t *block_idx, const REAL *q, const REAL *k, const REAL *v,
                const REAL *gate_logits, const struct hyla_nsa_shape *shape, int B, int L, int reuse_block_idx) {
    struct nsa a = nsa_init(shape, B, L, q, k, v, gate_logits, saved);
    int H = shape->kv_heads, n = shape->n_select;
#pragma omp parallel for schedule(static)
    for (int task = 0; task < B * a.NB * H; task++) pool_block(&a, task / (a.NB * H), task / H % a.NB, task % H);
#pragma omp parallel for schedule(static)
    for (int task = 0; task < B * L * H; task++) {
        int b = task / (L * H), t = task / H % L, h = task % H;
        nsa_fwd_row(o, block_idx + (size_t)task * n, &a, b, t, h, reuse_block_idx);
    }
}

void K(nsa_bwd)(REAL *dq, REAL *dk, REAL *dv, REAL *dgate_logits, const REAL *dout, const REAL *saved,
                const int32_t *block_idx, const REAL *q, const REAL *k, const REAL *v, const REAL *gate_logits,
                const struct hyla_nsa_shape *shape, int B, int L) {
    /* The cast only lets one struct serve both passes; nothing here writes to saved. */
    struct nsa a = nsa_init(shape, B, L, q, k, v, gate_logits, (REAL *)saved);
    int H = shape->kv_heads, n = shape->n_select;
#pragma omp parallel for schedule(static)
    for (int task = 0; task < B * L * H; task++) {
        int b = task / (L * H), t = task / H % L, h = task % H;
        nsa_bwd_queries(dq, dgate_logits, &a, dout, block_idx + (size_t)task * n, b, t, h);
    }
    /* Early blocks have the most queries (block 0 is always selected): deal them round robin. */
#pragma omp parallel for schedule(static, 1)
    for (int task = 0; task < B * a.NB * H; task++)
        nsa_bwd_keys(dk, dv, &a, dout, block_idx, task / (a.NB * H), task % H, task / H % a.NB);
}
