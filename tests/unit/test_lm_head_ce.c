/* The LM head fused with cross-entropy (lm_head_ce_fwd/bwd, lm_head_argmax) against the
 * unfused composition linear_fwd + cross_entropy_fwd/bwd + linear_bwd, for chunk sizes that
 * do and do not divide n, with ignored targets; dh and dweight against finite differences;
 * tied embeddings (the head's weight is the embedding table, one gradient from both uses);
 * lm_head_ce_fwd_bwd (both in one pass) against the two ops, bit for bit, dweight written. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { N = 37, D = 13, V = 29, IGNORE = -100 };

static int32_t targets[N], tokens[N];

static void make_targets(void) {
    uint64_t key = hyla_rng_key(7, HYLA_RNG_TEST, 0, 0);
    for (int i = 0; i < N; i++) {
        tokens[i] = (int32_t)(hyla_rng_u64(key, (uint64_t)i) % V);
        targets[i] = i % 5 == 2 ? IGNORE : (int32_t)(hyla_rng_u64(key, (uint64_t)(N + i)) % V);
    }
}

static int count_valid(const int32_t *t) {
    int valid = 0;
    for (int i = 0; i < N; i++) valid += t[i] != IGNORE;
    return valid;
}

/* The mean of the fused per-row losses over valid rows, as the model takes it. */
static double fused_mean(const double *losses, const int32_t *t) {
    double total = 0;
    for (int i = 0; i < N; i++)
        if (t[i] != IGNORE) total += losses[i];
    int valid = count_valid(t);
    return valid ? total / valid : 0;
}

/* ---- against the unfused composition ---------------------------------------------------- */
static void check_against_unfused(int chunk, const int32_t *t, double dloss) {
    double *h = alloc_f64(N * D), *w = alloc_f64(V * D), *logits = alloc_f64(N * V), *ref_l = alloc_f64(N);
    fill_uniform_f64(h, N * D, -1, 1, 1), fill_uniform_f64(w, V * D, -1, 1, 2);
    int valid = 0;
    cpu_f64_linear_fwd(logits, h, w, NULL, N, D, V);
    const double ref_mean = cpu_f64_cross_entropy_fwd(ref_l, logits, t, N, V, IGNORE, &valid);
    double *losses = alloc_f64(N), *lse = alloc_f64(N);
    cpu_f64_lm_head_ce_fwd(losses, lse, h, w, t, N, D, V, IGNORE, chunk);
    char label[160];
    snprintf(label, sizeof label, "chunk %d, %d valid: per-row losses vs linear + cross_entropy", chunk, valid);
    check_le(label, rel_err_f64(losses, ref_l, N), 1e-14);
    snprintf(label, sizeof label, "chunk %d: mean loss vs cross_entropy_fwd", chunk);
    check_le(label, fabs(fused_mean(losses, t) - ref_mean), 1e-14);

    /* backward: dweight accumulated onto non-zero values */
    double *dlogits = alloc_f64(N * V), *ref_dh = alloc_f64(N * D), *ref_dw = alloc_f64(V * D);
    double *dh = alloc_f64(N * D), *dw = alloc_f64(V * D);
    fill_uniform_f64(ref_dw, V * D, -1, 1, 3);
    memcpy(dw, ref_dw, sizeof(double) * V * D);
    fill_uniform_f64(dh, N * D, -1, 1, 4); /* written, not added to */
    cpu_f64_cross_entropy_bwd(dlogits, logits, t, N, V, IGNORE, valid, dloss);
    cpu_f64_linear_bwd(ref_dh, ref_dw, NULL, dlogits, h, w, N, D, V);
    cpu_f64_lm_head_ce_bwd(dh, dw, h, w, lse, t, N, D, V, IGNORE, valid, dloss, chunk);
    snprintf(label, sizeof label, "chunk %d: dh vs cross_entropy_bwd + linear_bwd", chunk);
    check_le(label, rel_err_f64(dh, ref_dh, N * D), 1e-13);
    snprintf(label, sizeof label, "chunk %d: dweight (accumulated) vs linear_bwd", chunk);
    check_le(label, rel_err_f64(dw, ref_dw, V * D), 1e-13);

    /* argmax: the first largest logit of each row */
    int32_t pred[N], ref_pred[N];
    for (int i = 0; i < N; i++) {
        int best = 0;
        for (int j = 1; j < V; j++)
            if (logits[i * V + j] > logits[i * V + best]) best = j;
        ref_pred[i] = best;
    }
    cpu_f64_lm_head_argmax(pred, h, w, N, D, V, chunk);
    snprintf(label, sizeof label, "chunk %d: argmax vs the unfused logits", chunk);
    check_true(label, !memcmp(pred, ref_pred, sizeof pred));

    /* both in one pass: the two ops' bits, dweight written over whatever it held */
    double *l2 = alloc_f64(N), *lse2 = alloc_f64(N), *dh2 = alloc_f64(N * D), *dw2 = alloc_f64(V * D);
    double *dw_alone = alloc_f64(V * D);
    cpu_f64_lm_head_ce_bwd(dh, dw_alone, h, w, lse, t, N, D, V, IGNORE, valid, dloss, chunk); /* from zero */
    fill_uniform_f64(dw2, V * D, -1, 1, 5);
    cpu_f64_lm_head_ce_fwd_bwd(l2, lse2, dh2, dw2, h, w, t, N, D, V, IGNORE, valid, dloss, chunk);
    snprintf(label, sizeof label, "chunk %d: lm_head_ce_fwd_bwd = lm_head_ce_fwd + lm_head_ce_bwd (dweight written)",
             chunk);
    check_true(label, !memcmp(l2, losses, sizeof(double) * N) && !memcmp(lse2, lse, sizeof(double) * N) &&
                          !memcmp(dh2, dh, sizeof(double) * N * D) && !memcmp(dw2, dw_alone, sizeof(double) * V * D));
    free(l2), free(lse2), free(dh2), free(dw2), free(dw_alone);
    free(h), free(w), free(logits), free(ref_l), free(losses), free(lse), free(dlogits), free(ref_dh), free(ref_dw);
    free(dh), free(dw);
}

/* ---- finite differences, untied: loss(h, weight) = dloss * mean CE ------------------------ */
struct ctx {
    double h[N * D], w[V * D], table[V * D], losses[N], lse[N];
    int chunk, tied;
    double dloss;
};

static double loss(void *p) {
    struct ctx *c = p;
    if (c->tied) cpu_f64_embedding_fwd(c->h, tokens, c->table, N, D); /* h = table[tokens], head = table */
    cpu_f64_lm_head_ce_fwd(c->losses, c->lse, c->h, c->tied ? c->table : c->w, targets, N, D, V, IGNORE, c->chunk);
    return c->dloss * fused_mean(c->losses, targets);
}

static void check_finite_differences(int chunk) {
    struct ctx *c = calloc(1, sizeof *c);
    c->chunk = chunk, c->dloss = 0.7;
    fill_uniform_f64(c->h, N * D, -1, 1, 5), fill_uniform_f64(c->w, V * D, -1, 1, 6);
    double *dh = alloc_f64(N * D), *dw = alloc_f64(V * D);
    loss(c);
    cpu_f64_lm_head_ce_bwd(dh, dw, c->h, c->w, c->lse, targets, N, D, V, IGNORE, count_valid(targets), c->dloss,
                           chunk);
    char label[96];
    snprintf(label, sizeof label, "lm_head_ce chunk %d: dh", chunk);
    fd_check(label, c->h, N * D, dh, loss, c, 1e-5);
    snprintf(label, sizeof label, "lm_head_ce chunk %d: dweight", chunk);
    fd_check(label, c->w, V * D, dw, loss, c, 1e-5);
    free(dh), free(dw), free(c);
}

/* Tied: the table feeds the embedding and the head; its gradient is the head's dweight plus
 * embedding_bwd of dh, both added into one buffer (the model's order: head first). */
static void check_tied(int chunk) {
    struct ctx *c = calloc(1, sizeof *c);
    c->chunk = chunk, c->dloss = 1.3, c->tied = 1;
    fill_uniform_f64(c->table, V * D, -1, 1, 8);
    double *dh = alloc_f64(N * D), *dtable = alloc_f64(V * D);
    loss(c);
    cpu_f64_lm_head_ce_bwd(dh, dtable, c->h, c->table, c->lse, targets, N, D, V, IGNORE, count_valid(targets),
                           c->dloss, chunk);
    cpu_f64_embedding_bwd(dtable, dh, tokens, N, D, -1);
    char label[96];
    snprintf(label, sizeof label, "tied lm_head_ce chunk %d: dtable", chunk);
    fd_check(label, c->table, V * D, dtable, loss, c, 1e-5);
    free(dh), free(dtable), free(c);
}

/* fp32 against double on the same rounded inputs; the CPU's fp32 fused op also against its
 * own unfused composition. */
static void check_fp32(int chunk) {
    float *h = alloc_f32(N * D), *w = alloc_f32(V * D), *logits = alloc_f32(N * V), *ref_l = alloc_f32(N);
    float *losses = alloc_f32(N), *lse = alloc_f32(N), *dh = alloc_f32(N * D), *dw = alloc_f32(V * D);
    float *ref_dh = alloc_f32(N * D), *ref_dw = alloc_f32(V * D);
    fill_uniform_f32(h, N * D, -1, 1, 9), fill_uniform_f32(w, V * D, -1, 1, 10);
    int valid = 0;
    cpu_f32_linear_fwd(logits, h, w, NULL, N, D, V);
    cpu_f32_cross_entropy_fwd(ref_l, logits, targets, N, V, IGNORE, &valid);
    cpu_f32_lm_head_ce_fwd(losses, lse, h, w, targets, N, D, V, IGNORE, chunk);
    char label[96];
    snprintf(label, sizeof label, "fp32 chunk %d: losses vs the unfused fp32 ops", chunk);
    check_le(label, rel_err_f32(losses, ref_l, N), 1e-6);
    cpu_f32_cross_entropy_bwd(logits, logits, targets, N, V, IGNORE, valid, 0.5f);
    cpu_f32_linear_bwd(ref_dh, ref_dw, NULL, logits, h, w, N, D, V);
    cpu_f32_lm_head_ce_bwd(dh, dw, h, w, lse, targets, N, D, V, IGNORE, valid, 0.5f, chunk);
    snprintf(label, sizeof label, "fp32 chunk %d: dh, dweight vs the unfused fp32 ops", chunk);
    double e1 = rel_err_f32(dh, ref_dh, N * D), e2 = rel_err_f32(dw, ref_dw, V * D);
    check_le(label, e1 > e2 ? e1 : e2, 1e-6);

    double hd[N * D], wd[V * D], ld[N], lsed[N];
    copy_f32_to_f64(hd, h, N * D), copy_f32_to_f64(wd, w, V * D);
    cpu_f64_lm_head_ce_fwd(ld, lsed, hd, wd, targets, N, D, V, IGNORE, chunk);
    double lf[N];
    copy_f32_to_f64(lf, losses, N);
    snprintf(label, sizeof label, "fp32 chunk %d: losses vs double", chunk);
    check_le(label, rel_err_f64(lf, ld, N), 1e-6);
    free(h), free(w), free(logits), free(ref_l), free(losses), free(lse), free(dh), free(dw), free(ref_dh);
    free(ref_dw);
}

/* Edge cases: every target ignored (no loss, no gradient), and a row of equal logits (its
 * argmax is the first column, 0). */
static void check_edges(void) {
    int32_t none[N];
    for (int i = 0; i < N; i++) none[i] = IGNORE;
    double *h = alloc_f64(N * D), *w = alloc_f64(V * D), *losses = alloc_f64(N), *lse = alloc_f64(N);
    double *dh = alloc_f64(N * D), *dw = alloc_f64(V * D), *dw0 = alloc_f64(V * D);
    fill_uniform_f64(h, N * D, -1, 1, 11), fill_uniform_f64(w, V * D, -1, 1, 12);
    fill_uniform_f64(dw, V * D, -1, 1, 13), fill_uniform_f64(dh, N * D, -1, 1, 14);
    memcpy(dw0, dw, sizeof(double) * V * D);
    cpu_f64_lm_head_ce_fwd(losses, lse, h, w, none, N, D, V, IGNORE, 8);
    cpu_f64_lm_head_ce_bwd(dh, dw, h, w, lse, none, N, D, V, IGNORE, 0, 1.0, 8);
    double zero[N * D] = {0};
    check_le("all targets ignored: losses are 0", rel_err_f64(losses, zero, N), 0);
    check_le("all targets ignored: dh is 0", rel_err_f64(dh, zero, N * D), 0);
    check_le("all targets ignored: dweight unchanged", rel_err_f64(dw, dw0, V * D), 0);
    for (int c = 0; c < D; c++) h[3 * D + c] = 0; /* row 3: every logit 0 */
    int32_t pred[N];
    cpu_f64_lm_head_argmax(pred, h, w, N, D, V, 8);
    check_true("argmax of equal logits is the first column", pred[3] == 0);
    free(h), free(w), free(losses), free(lse), free(dh), free(dw), free(dw0);
}

int main(void) {
    make_targets();
    const int chunks[] = {0, 1, 8, 36, 37, 100};
    for (int i = 0; i < 6; i++) check_against_unfused(chunks[i], targets, 0.7);
    check_finite_differences(8);
    check_finite_differences(0);
    check_tied(8);
    check_tied(37);
    check_fp32(8);
    check_fp32(0);
    check_edges();
    return test_finish();
}
