/* The model's forward and backward passes: embedding, blocks (norm, mixer, fused add +
 * norm, MLP), final norm, LM head and cross-entropy (MODEL.md §1.1). */
#include "model.h"

#include <math.h>
#include <string.h>

#include "common/hyla_error.h"
#include "common/rng.h"
#include "data_loader.h"
#include "mixers.h"

float *model_alloc_floats(struct hyla_model *m, size_t count) {
    float *p = m->be->alloc(count * sizeof(float));
    m->be->zero(p, count * sizeof(float));
    return p;
}

double model_rope_theta(const struct hyla_model *m) {
    if (m->cfg.model_type == HYLA_MODEL_TRANSFORMER || m->cfg.model_type == HYLA_MODEL_NSA) return m->cfg.rope_theta;
    return m->cfg.attn.rope_theta;
}

size_t model_param_count(const struct hyla_model_layout *lay) { return lay->table.total; }

void model_set_dropout_keys(struct hyla_model *m, uint64_t key) {
    for (int b = 0; b < m->B; b++) m->row_keys[b] = hyla_rng_subkey(key, (uint64_t)b);
}

/* Widest per-token row any backward temporary needs. Not the vocabulary: the LM head's
 * logits live only chunk by chunk inside lm_head_ce_*. */
static size_t scratch_width(const struct hyla_model_layout *lay) {
    size_t w = (size_t)lay->dim;
    size_t cand[] = {(size_t)lay->gdn_heads * lay->gdn_dk, (size_t)lay->gdn_heads * lay->gdn_dv,
                     (size_t)lay->att_q_heads * lay->att_dim, 3 * (size_t)lay->att_q_heads, 2 * (size_t)lay->inter,
                     2 * (size_t)lay->gdn_heads /* the GDN's two gate-logit gradients share a buffer */};
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++) w = cand[i] > w ? cand[i] : w;
    return w;
}

static void alloc_activations(struct hyla_model *m) {
    const struct hyla_model_layout *lay = &m->lay;
    const size_t N = (size_t)m->B * m->T, D = (size_t)lay->dim;
    m->row_keys = hyla_calloc((size_t)m->B, sizeof(uint64_t));
    m->inputs = m->be->alloc(N * sizeof(int32_t));
    m->targets = m->be->alloc(N * sizeof(int32_t));
    m->x = model_alloc_floats(m, N * D);
    m->dx = model_alloc_floats(m, N * D);
    m->h_final = model_alloc_floats(m, N * D);
    m->rstd_final = model_alloc_floats(m, N);
    m->losses = model_alloc_floats(m, N);
    m->lse = model_alloc_floats(m, N);
    for (int l = 0; l < lay->n_layers; l++) {
        struct layer_acts *a = &m->acts[l];
        a->x_in = model_alloc_floats(m, N * D), a->h = model_alloc_floats(m, N * D);
        a->rstd_attn = model_alloc_floats(m, N), a->mix_out = model_alloc_floats(m, N * D);
        a->sum = model_alloc_floats(m, N * D), a->h2 = model_alloc_floats(m, N * D);
        a->rstd_mlp = model_alloc_floats(m, N);
        a->mlp_acts = model_alloc_floats(m, 3 * N * (size_t)lay->inter);
        switch (lay->layers[l].mixer) {
        case HYLA_MIXER_GDN: gdn_alloc(m, l); break;
        case HYLA_MIXER_ATTENTION: attention_alloc(m, l); break;
        case HYLA_MIXER_LTE: lte_alloc(m, l); break;
        case HYLA_MIXER_NSA: nsa_alloc(m, l); break;
        }
    }
    m->scratch_floats = N * scratch_width(lay);
    for (int i = 0; i < 8; i++) m->scratch[i] = model_alloc_floats(m, m->scratch_floats);
}

void model_create(struct hyla_model *m, const struct hyla_backend *be, const struct hyla_model_config *cfg, int B,
                  int T, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->be = be;
    m->cfg = *cfg;
    m->B = B;
    m->T = T;
    m->dloss = 1.0;
    m->straight_through = 1;
    model_layout_build(&m->lay, cfg);
    const struct hyla_param_table *t = &m->lay.table;
    m->params = hyla_calloc((size_t)t->n_units, sizeof(float *));
    m->grads = hyla_calloc((size_t)t->n_units, sizeof(float *));
    for (int u = 0; u < t->n_units; u++) {
        size_t bytes = t->units[u].size * sizeof(float);
        float *host = hyla_malloc(bytes);
        param_table_init_unit(t, u, host, seed);
        m->params[u] = be->alloc(bytes);
        be->to_device(m->params[u], host, bytes);
        free(host);
        m->grads[u] = model_alloc_floats(m, t->units[u].size);
    }
    /* LTE state at step 0 (MODEL.md §5.7): λ = 0, num_kept = seq_len. */
    const size_t lte = (size_t)m->lay.n_lte_layers * m->lay.att_kv_heads;
    m->l1_lambda = hyla_calloc(lte ? lte : 1, sizeof(float));
    m->num_kept = hyla_calloc(lte ? lte : 1, sizeof(float));
    m->kept_sum = hyla_calloc(lte ? lte : 1, sizeof(double));
    const size_t stats_bytes = (MODEL_STATS_FIXED + lte) * sizeof(double);
    m->device_stats = be->alloc(stats_bytes);
    be->zero(m->device_stats, stats_bytes);
    for (size_t i = 0; i < lte; i++) m->num_kept[i] = (float)T;
    alloc_activations(m);
}

void model_free(struct hyla_model *m) {
    /* Activations are freed with the process: a model lives for the whole run. The unit
     * buffers are freed here because checkpoint loading may replace a model. */
    for (int u = 0; u < m->lay.table.n_units; u++) { /* NULL while FSDP holds them */
        if (m->params[u]) m->be->free(m->params[u]);
        if (m->grads[u]) m->be->free(m->grads[u]);
    }
    free(m->params);
    free(m->grads);
    free(m->l1_lambda);
    free(m->num_kept);
    free(m->kept_sum);
    m->be->free(m->device_stats);
    if (m->dh_final) m->be->free(m->dh_final), m->be->free(m->dw_head);
    free(m->row_keys);
    model_layout_free(&m->lay);
}

void model_zero_grads(struct hyla_model *m) {
    for (int u = 0; u < m->lay.table.n_units; u++)
        if (m->grads[u]) m->be->zero(m->grads[u], m->lay.table.units[u].size * sizeof(float));
}

static void unit_event(struct hyla_model *m, int unit, enum unit_event ev) {
    if (m->hooks.fn) m->hooks.fn(m->hooks.ctx, unit, ev);
}

static void mixer_forward(struct hyla_model *m, int l, const float *h, float *y) {
    switch (m->lay.layers[l].mixer) {
    case HYLA_MIXER_GDN: gdn_forward(m, l, h, y); break;
    case HYLA_MIXER_ATTENTION: attention_forward(m, l, h, y); break;
    case HYLA_MIXER_LTE: lte_forward(m, l, h, y); break;
    case HYLA_MIXER_NSA: nsa_forward(m, l, h, y); break;
    }
}

static void mixer_backward(struct hyla_model *m, int l, const float *dy, float *dh) {
    switch (m->lay.layers[l].mixer) {
    case HYLA_MIXER_GDN: gdn_backward(m, l, dy, dh); break;
    case HYLA_MIXER_ATTENTION: attention_backward(m, l, dy, dh); break;
    case HYLA_MIXER_LTE: lte_backward(m, l, dy, dh); break;
    case HYLA_MIXER_NSA: nsa_backward(m, l, dy, dh); break;
    }
}

/* x_out = x_in + mixer(norm(x_in)) + mlp(norm(sum)). */
static void block_forward(struct hyla_model *m, int l, float *x_out) {
    const struct hyla_backend *be = m->be;
    const struct hyla_layer_layout *L = &m->lay.layers[l];
    struct layer_acts *a = &m->acts[l];
    const int N = m->B * m->T, D = m->lay.dim;
    const float eps = (float)m->cfg.norm_eps;
    expect_activation(m, a->h, (size_t)N * D);
    be->rmsnorm_fwd(a->h, a->rstd_attn, a->x_in, layer_param(m, l, L->attn_norm), N, D, eps);
    hold_activation(m, a->h, (size_t)N * D);
    mixer_forward(m, l, a->h, a->mix_out);
    expect_activation(m, a->h2, (size_t)N * D);
    be->add_rmsnorm_fwd(a->sum, a->h2, a->rstd_mlp, a->mix_out, a->x_in, layer_param(m, l, L->mlp_norm), N, D, eps);
    hold_activation(m, a->h2, (size_t)N * D);
    be->mlp_fwd(x_out, a->mlp_acts, a->h2, a->sum, layer_param(m, l, L->gate_proj), layer_param(m, l, L->up_proj),
                layer_param(m, l, L->down_proj), N, D, m->lay.inter);
}

/* m->dx: gradient at the block's output on entry, at its input on exit; held (hold_activation:
 * its bf16 copy, written by the norm's backward, is the operand of the next products that read
 * it, the MLP's and the mixer's) from the norm backward that writes it to the next that adds
 * onto it. */
static void block_backward(struct hyla_model *m, int l) {
    const struct hyla_backend *be = m->be;
    const struct hyla_layer_layout *L = &m->lay.layers[l];
    struct layer_acts *a = &m->acts[l];
    const int N = m->B * m->T, D = m->lay.dim;
    float **S = m->scratch;
    be->mlp_bwd(S[0], layer_grad(m, l, L->gate_proj), layer_grad(m, l, L->up_proj), layer_grad(m, l, L->down_proj),
                m->dx, a->h2, a->mlp_acts, layer_param(m, l, L->gate_proj), layer_param(m, l, L->up_proj),
                layer_param(m, l, L->down_proj), S[1], N, D, m->lay.inter);
    release_activation(m, a->h2);
    release_activation(m, m->dx);
    /* dsum = dx_out + norm backward; the residual and the mixer both receive it */
    expect_activation(m, m->dx, (size_t)N * D);
    be->add_rmsnorm_bwd(m->dx, layer_grad(m, l, L->mlp_norm), S[0], m->dx, a->sum, layer_param(m, l, L->mlp_norm),
                        a->rstd_mlp, N, D);
    hold_activation(m, m->dx, (size_t)N * D);
    mixer_backward(m, l, m->dx, S[0]);
    release_activation(m, a->h);
    release_activation(m, m->dx);
    /* the residual's gradient plus the norm's: the fused add + RMSNorm backward with x_in as
     * its sum, adding onto m->dx in place (one pass, where rmsnorm_bwd + axpy took two) */
    expect_activation(m, m->dx, (size_t)N * D);
    be->add_rmsnorm_bwd(m->dx, layer_grad(m, l, L->attn_norm), S[0], m->dx, a->x_in, layer_param(m, l, L->attn_norm),
                        a->rstd_attn, N, D);
    hold_activation(m, m->dx, (size_t)N * D);
}

static const float *lm_head_weight(const struct hyla_model *m) {
    return m->lay.tied ? m->params[m->lay.embed_unit] + m->lay.embed : m->params[m->lay.final_unit] + m->lay.lm_head;
}

static float *lm_head_grad(struct hyla_model *m) {
    return m->lay.tied ? m->grads[m->lay.embed_unit] + m->lay.embed : m->grads[m->lay.final_unit] + m->lay.lm_head;
}

/* The valid target positions, counted on the host (the targets come from there): the
 * loss's mean and the backward's scale need no device-to-host copy. */
static int count_valid(const int32_t *targets, int n) {
    int valid = 0;
    for (int i = 0; i < n; i++) valid += targets[i] != HYLA_IGNORE_INDEX;
    return valid;
}

void model_forward(struct hyla_model *m, const int32_t *inputs, const int32_t *targets) {
    const struct hyla_backend *be = m->be;
    const struct hyla_model_layout *lay = &m->lay;
    const int N = m->B * m->T, D = lay->dim, V = lay->vocab;
    be->to_device(m->inputs, inputs, (size_t)N * sizeof(int32_t));
    be->to_device(m->targets, targets, (size_t)N * sizeof(int32_t));

    unit_event(m, lay->embed_unit, UNIT_FORWARD_BEGIN);
    be->embedding_fwd(lay->n_layers ? m->acts[0].x_in : m->x, m->inputs, m->params[lay->embed_unit] + lay->embed, N, D);
    unit_event(m, lay->embed_unit, UNIT_FORWARD_END);
    for (int l = 0; l < lay->n_layers; l++) {
        unit_event(m, lay->layers[l].unit, UNIT_FORWARD_BEGIN);
        block_forward(m, l, l + 1 < lay->n_layers ? m->acts[l + 1].x_in : m->x);
        unit_event(m, lay->layers[l].unit, UNIT_FORWARD_END);
    }
    if (lay->n_lte_layers) m->kept_micro_batches++;
    unit_event(m, lay->final_unit, UNIT_FORWARD_BEGIN);

    expect_activation(m, m->h_final, (size_t)N * D);
    be->rmsnorm_fwd(m->h_final, m->rstd_final, m->x, m->params[lay->final_unit] + lay->final_norm, N, D,
                    (float)m->cfg.norm_eps);
    hold_activation(m, m->h_final, (size_t)N * D); /* the LM head's products, forward and backward */
    /* LM head + cross-entropy by chunks of rows: the [N, V] logits are never stored */
    const int valid = count_valid(targets, N);
    if (m->backward_follows) { /* and its backward, from the same logits */
        if (!m->dh_final) {
            m->dh_final = model_alloc_floats(m, (size_t)N * D);
            m->dw_head = model_alloc_floats(m, (size_t)V * D);
        }
        be->lm_head_ce_fwd_bwd(m->losses, m->lse, m->dh_final, m->dw_head, m->h_final, lm_head_weight(m), m->targets, N,
                               D, V, HYLA_IGNORE_INDEX, valid, (float)m->dloss, 0);
    } else {
        be->lm_head_ce_fwd(m->losses, m->lse, m->h_final, lm_head_weight(m), m->targets, N, D, V, HYLA_IGNORE_INDEX, 0);
    }
    m->head_grads_ready = m->backward_follows, m->backward_follows = 0;
    be->loss_mean_add(m->device_stats + MODEL_STAT_CE, m->losses, N, valid);
    m->valid_last = valid;
    m->valid_pending += valid;
    m->forwards_pending++;
    unit_event(m, lay->final_unit, UNIT_FORWARD_END);
}

void model_take_stats(struct hyla_model *m, struct forward_stats *st) {
    const size_t lte = (size_t)m->lay.n_lte_layers * m->lay.att_kv_heads, n = MODEL_STATS_FIXED + lte;
    double *stats = hyla_malloc(n * sizeof(double));
    m->be->to_host(stats, m->device_stats, n * sizeof(double));
    m->be->zero(m->device_stats, n * sizeof(double));
    for (size_t i = 0; i < lte; i++) m->kept_sum[i] += stats[MODEL_STAT_KEPT + i];
    st->ce_loss = stats[MODEL_STAT_CE];
    st->l1_loss = stats[MODEL_STAT_L1];
    st->valid_tokens = m->valid_pending;
    st->forwards = m->forwards_pending;
    m->valid_pending = 0, m->forwards_pending = 0;
    free(stats);
}

double model_forward_loss(struct hyla_model *m, const int32_t *inputs, const int32_t *targets) {
    struct forward_stats st;
    model_take_stats(m, &st); /* only this forward's statistics */
    model_forward(m, inputs, targets);
    model_take_stats(m, &st);
    return st.ce_loss + st.l1_loss;
}

void model_backward(struct hyla_model *m) {
    const struct hyla_backend *be = m->be;
    const struct hyla_model_layout *lay = &m->lay;
    const int N = m->B * m->T, D = lay->dim, V = lay->vocab;
    unit_event(m, lay->final_unit, UNIT_BACKWARD_BEGIN);
    const float *dh_final = m->scratch[0];
    if (m->head_grads_ready) { /* made by the forward pass: the weight's gradient added where it lives now */
        be->axpy(lm_head_grad(m), m->dw_head, 1.0f, (size_t)V * D);
        dh_final = m->dh_final;
        m->head_grads_ready = 0;
    } else { /* each chunk's logits recomputed and turned into dlogits inside the op */
        be->lm_head_ce_bwd(m->scratch[0], lm_head_grad(m), m->h_final, lm_head_weight(m), m->lse, m->targets, N, D, V,
                           HYLA_IGNORE_INDEX, m->valid_last, (float)m->dloss, 0);
    }
    release_activation(m, m->h_final);
    expect_activation(m, m->dx, (size_t)N * D);
    be->rmsnorm_bwd(m->dx, m->grads[lay->final_unit] + lay->final_norm, dh_final, m->x,
                    m->params[lay->final_unit] + lay->final_norm, m->rstd_final, N, D);
    hold_activation(m, m->dx, (size_t)N * D); /* block_backward's products read its copy */
    unit_event(m, lay->final_unit, UNIT_BACKWARD_END);
    for (int l = lay->n_layers - 1; l >= 0; l--) {
        unit_event(m, lay->layers[l].unit, UNIT_BACKWARD_BEGIN);
        block_backward(m, l);
        unit_event(m, lay->layers[l].unit, UNIT_BACKWARD_END);
    }
    release_activation(m, m->dx);
    unit_event(m, lay->embed_unit, UNIT_BACKWARD_BEGIN);
    be->embedding_bwd(m->grads[lay->embed_unit] + lay->embed, m->dx, m->inputs, N, D, lay->padding_idx);
    unit_event(m, lay->embed_unit, UNIT_BACKWARD_END);
}

/* The logits are recomputed from the final hidden states by chunks (the LM head's weights
 * are still gathered after a forward pass: FSDP keeps `final`, and tied embeddings, for the
 * backward pass); only N indices come back. */
void model_argmax(const struct hyla_model *m, int32_t *out) {
    const int N = m->B * m->T;
    int32_t *pred = m->be->alloc((size_t)N * sizeof(int32_t));
    m->be->lm_head_argmax(pred, m->h_final, lm_head_weight(m), N, m->lay.dim, m->lay.vocab, 0);
    m->be->to_host(out, pred, (size_t)N * sizeof(int32_t));
    m->be->free(pred);
}
