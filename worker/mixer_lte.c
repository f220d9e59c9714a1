/* LTE attention mixer (MODEL.md §5.4-5.6): projections, the router CNN on raw k and v,
 * selection (score > 0, plus sinks), RoPE, sliding-window attention over the window plus
 * the selected keys, the straight-through estimator and the L1 term on relu(score). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/hyla_error.h"
#include "common/rng.h"
#include "lte_budget.h"
#include "mixers.h"

struct lte_acts {
    float *q, *k_raw, *k, *v, *o, *lse;  /* q, k after RoPE; k_raw before (the router's input) */
    float *score, *router_acts;
    uint8_t *selected;
    float *lambda, *kept_fraction;      /* this layer's λ_h (backend copy) and kept share */
    float *frozen_dparams;              /* where router gradients go while the router is frozen */
    double l1_coef;                     /* 1 / (B L' n_lte H) of the last forward */
};

static void lte_select_all(struct hyla_model *m, struct lte_acts *a);

void lte_alloc(struct hyla_model *m, int layer) {
    const struct hyla_model_layout *lay = &m->lay;
    const size_t N = (size_t)m->B * m->T, H = (size_t)lay->att_kv_heads;
    const size_t QD = (size_t)lay->att_q_heads * lay->att_dim, KVD = H * lay->att_dim;
    struct lte_acts *a = hyla_calloc(1, sizeof *a);
    a->q = model_alloc_floats(m, N * QD), a->o = model_alloc_floats(m, N * QD);
    a->k_raw = model_alloc_floats(m, N * KVD), a->k = model_alloc_floats(m, N * KVD);
    a->v = model_alloc_floats(m, N * KVD), a->lse = model_alloc_floats(m, N * lay->att_q_heads);
    a->score = model_alloc_floats(m, N * H);
    a->router_acts = model_alloc_floats(m, (size_t)m->B * lte_router_acts_size(&lay->router, 1, m->T));
    a->selected = m->be->alloc(N * H);
    a->lambda = model_alloc_floats(m, H), a->kept_fraction = model_alloc_floats(m, H);
    a->frozen_dparams = model_alloc_floats(m, lte_router_param_count(&lay->router));
    m->acts[layer].mixer = a;
}

/* The last rf/2 positions are left out of the L1 term and the statistics (MODEL.md §5.6). */
static int lte_margin(const struct hyla_model *m) { return lte_router_receptive_field(&m->lay.router) / 2; }

static float lte_dropout(const struct hyla_model *m) { return m->training ? (float)m->cfg.attn.dropout_prob : 0.0f; }

/* Each sequence's dropout masks come from its own key (the trainer derives it from the
 * sequence's global index): masks then do not depend on the micro-batch size or the number of
 * ranks. The router op takes one key per row (its rows are independent problems). */
static void lte_dropout_keys(uint64_t *keys, const struct hyla_model *m, int layer) {
    for (int b = 0; b < m->B; b++) keys[b] = hyla_rng_subkey(m->row_keys[b], (uint64_t)layer);
}

static void router_forward(struct hyla_model *m, int layer, struct lte_acts *a) {
    const struct hyla_model_layout *lay = &m->lay;
    uint64_t *keys = hyla_malloc(sizeof(uint64_t) * (size_t)m->B);
    lte_dropout_keys(keys, m, layer);
    m->be->lte_router_fwd(a->score, a->router_acts, a->k_raw, a->v, layer_param(m, layer, lay->layers[layer].router),
                          &lay->router, m->B, m->T, lte_dropout(m), keys);
    free(keys);
}

static void router_backward(struct hyla_model *m, int layer, struct lte_acts *a, const float *dscore, float *dk,
                            float *dv) {
    const struct hyla_model_layout *lay = &m->lay;
    const size_t router = lay->layers[layer].router;
    /* frozen (routing_freeze_steps): k and v still receive the router's gradient; its weights not */
    float *dparams = m->router_frozen ? a->frozen_dparams : layer_grad(m, layer, router);
    uint64_t *keys = hyla_malloc(sizeof(uint64_t) * (size_t)m->B);
    lte_dropout_keys(keys, m, layer);
    m->be->lte_router_bwd(dk, dv, dparams, dscore, a->k_raw, a->v, layer_param(m, layer, router), a->router_acts,
                          &lay->router, m->B, m->T, lte_dropout(m), keys);
    free(keys);
}

/* Evaluation applies the hard budget on the host copy of the selection. */
static void lte_apply_budget(struct hyla_model *m, struct lte_acts *a) {
    const int H = m->lay.att_kv_heads;
    const size_t n = (size_t)m->B * m->T * H;
    uint8_t *sel = hyla_malloc(n);
    float *score = hyla_malloc(n * sizeof(float));
    m->be->to_host(sel, a->selected, n);
    m->be->to_host(score, a->score, n * sizeof(float));
    if (lte_enforce_budget(sel, score, m->B, m->T, H, m->cfg.attn.window_size, m->cfg.attn.buffer_size,
                           m->cfg.attn.sink_size))
        m->be->to_device(a->selected, sel, n);
    free(sel);
    free(score);
}

void lte_forward(struct hyla_model *m, int layer, const float *h, float *y) {
    const struct hyla_backend *be = m->be;
    const struct hyla_model_layout *lay = &m->lay;
    const struct hyla_layer_layout *L = &lay->layers[layer];
    struct lte_acts *a = m->acts[layer].mixer;
    const int N = m->B * m->T, D = lay->dim, Hq = lay->att_q_heads, H = lay->att_kv_heads, d = lay->att_dim;
    const int margin = lte_margin(m), kept_len = m->T - margin;

    qkv_forward(m, layer, h, a->q, a->k_raw, a->k, a->v); /* the router reads k_raw (no RoPE) */
    hold_activation(m, a->q, (size_t)N * Hq * d), hold_activation(m, a->k, (size_t)N * H * d);
    hold_activation(m, a->v, (size_t)N * H * d);
    if (m->router_disabled) { /* warm-up: every token selected, no router, no L1, no statistics */
        lte_select_all(m, a);
    } else {
        router_forward(m, layer, a);
    }
    if (!m->hold_discrete && !m->router_disabled) {
        be->lte_select(a->selected, a->score, m->B, m->T, H, m->cfg.attn.sink_size);
        if (!m->training) lte_apply_budget(m, a);
    }
    expect_activation(m, a->o, (size_t)N * Hq * d); /* the forward kernel may write o's copy */
    be->attention_fwd(a->o, a->lse, a->q, a->k, a->v, a->selected, m->B, m->T, Hq, H, d, L->window_left,
                      1.0f / sqrtf((float)d));
    hold_activation(m, a->o, (size_t)N * Hq * d);
    be->linear_fwd(y, a->o, layer_param(m, layer, L->o_proj), NULL, N, Hq * d, D);

    if (m->router_disabled) return;
    /* L1 term and kept-token statistics */
    be->to_device(a->lambda, m->l1_lambda + (size_t)L->lte_index * H, sizeof(float) * (size_t)H);
    a->l1_coef = kept_len > 0 ? 1.0 / ((double)m->B * kept_len * lay->n_lte_layers * H) : 0.0;
    /* both stay on the device until the step's end (model_take_stats) */
    be->lte_l1_fwd(m->device_stats + MODEL_STAT_L1, a->kept_fraction, a->score, a->lambda, (float)a->l1_coef, m->B,
                   m->T, H, margin);
    be->accumulate_f64(m->device_stats + MODEL_STAT_KEPT + (size_t)L->lte_index * H, a->kept_fraction, (size_t)H,
                       (double)kept_len);
}

/* The score's gradient — the straight-through term from v' = v plus the L1 term — through
 * the router; with routing_grad the router's gradient is added onto dk and dv (the op adds:
 * ops_lte.h), without it into scratch that nothing reads. */
static void score_backward(struct hyla_model *m, int layer, struct lte_acts *a, float *dk, float *dv) {
    const struct hyla_backend *be = m->be;
    const int N = m->B * m->T, H = m->lay.att_kv_heads, d = m->lay.att_dim;
    float *dscore = m->scratch[5];
    if (m->straight_through) be->lte_ste_bwd(dscore, dv, a->v, m->B, m->T, H, d);
    else be->zero(dscore, sizeof(float) * (size_t)N * H);
    be->lte_l1_bwd(dscore, a->score, a->lambda, (float)(a->l1_coef * m->dloss), m->B, m->T, H, lte_margin(m));
    if (!m->cfg.attn.routing_grad) { /* the router's weights learn; k and v get none of it */
        dk = m->scratch[6], dv = m->scratch[7];
        be->zero(dk, sizeof(float) * (size_t)N * H * d), be->zero(dv, sizeof(float) * (size_t)N * H * d);
    }
    router_backward(m, layer, a, dscore, dk, dv);
}

/* Warm-up: the router is off and every token is selected. */
static void lte_select_all(struct hyla_model *m, struct lte_acts *a) {
    const size_t n = (size_t)m->B * m->T * m->lay.att_kv_heads;
    uint8_t *ones = hyla_malloc(n);
    memset(ones, 1, n);
    m->be->to_device(a->selected, ones, n);
    free(ones);
}

void lte_backward(struct hyla_model *m, int layer, const float *dy, float *dh) {
    const struct hyla_backend *be = m->be;
    const struct hyla_model_layout *lay = &m->lay;
    const struct hyla_layer_layout *L = &lay->layers[layer];
    struct lte_acts *a = m->acts[layer].mixer;
    const int N = m->B * m->T, D = lay->dim, Hq = lay->att_q_heads, H = lay->att_kv_heads, d = lay->att_dim;
    float **S = m->scratch;

    be->linear_bwd(S[1], layer_grad(m, layer, L->o_proj), NULL, dy, a->o, layer_param(m, layer, L->o_proj), N,
                   Hq * d, D);
    release_activation(m, a->o);
    be->attention_bwd(S[2], S[3], S[4], S[1], a->q, a->k, a->v, a->o, a->lse, a->selected, m->B, m->T, Hq, H, d,
                      L->window_left, 1.0f / sqrtf((float)d));
    release_activation(m, a->q), release_activation(m, a->k), release_activation(m, a->v);
    const int router_adds = !m->router_disabled && m->cfg.attn.routing_grad; /* onto dk after RoPE's backward */
    qkv_rope_backward(m, S[2], S[3], !router_adds);
    if (!m->router_disabled) score_backward(m, layer, a, S[3], S[4]);
    qkv_projection_backward(m, layer, S[2], S[3], S[4], dh, !router_adds);
}
