/* Whole-model backward of every model type against finite differences (fp32, directional
 * derivatives per parameter tensor), and the loss at initialisation = ln(V).
 * The ops are checked one by one in double to 1e-6; this test catches wiring errors
 * (a missing or doubled gradient path gives an O(1) error), so its bound is 2e-2. The LM head's
 * gradients made in the forward pass (backward_follows, as a training step makes them) give
 * the same gradients bit for bit. */
#include <stdlib.h>

#include "harness.h"
#include "model_fixtures.h"
#include "worker/model.h"

enum { B = 2, T = 16, VOCAB = 32 };

static void make_batch(int32_t *inputs, int32_t *targets, uint64_t seed) {
    uint64_t key = hyla_rng_key(seed, HYLA_RNG_TEST, 0, 0);
    for (int i = 0; i < B * T; i++) inputs[i] = (int32_t)(hyla_rng_u64(key, (uint64_t)i) % VOCAB);
    for (int i = 0; i < B * T; i++) targets[i] = (i % T == T - 1) ? -100 : inputs[i + 1];
}

static double loss_at(struct hyla_model *m, const int32_t *in, const int32_t *tg) {
    return model_forward_loss(m, in, tg);
}

/* Directional derivative of the loss along a random unit direction inside parameter p,
 * against the analytic gradient projected on it. */
static double directional_error(struct hyla_model *m, const struct hyla_param *p, const int32_t *in,
                                const int32_t *tg, uint64_t seed) {
    float *w = m->params[p->unit] + p->offset, *g = m->grads[p->unit] + p->offset;
    double *u = alloc_f64(p->count), norm = 0;
    fill_uniform_f64(u, p->count, -1, 1, seed);
    for (size_t i = 0; i < p->count; i++) norm += u[i] * u[i];
    norm = sqrt(norm);
    double analytic = 0, gnorm = 0;
    for (size_t i = 0; i < p->count; i++) {
        u[i] /= norm;
        analytic += g[i] * u[i];
        gnorm += (double)g[i] * g[i];
    }
    float *saved = malloc(p->count * sizeof(float));
    memcpy(saved, w, p->count * sizeof(float));
    /* fp32 noise wants a large step; the router's L1 term is piecewise linear in the score
     * (relu), and a large step on router weights moves many scores across the kink. */
    const double h = strstr(p->name, ".router.") ? 1e-3 : 1e-2;
    for (size_t i = 0; i < p->count; i++) w[i] = (float)(saved[i] + h * u[i]);
    double up = loss_at(m, in, tg);
    for (size_t i = 0; i < p->count; i++) w[i] = (float)(saved[i] - h * u[i]);
    double down = loss_at(m, in, tg);
    memcpy(w, saved, p->count * sizeof(float));
    free(saved);
    free(u);
    double numeric = (up - down) / (2 * h);
    /* Relative to the gradient's norm: a random direction may be nearly orthogonal to it. */
    return fabs(numeric - analytic) / (sqrt(gnorm) + 1e-12);
}

/* The predictions of model_argmax (the LM head recomputed by chunks) against the first
 * largest logit of h_final W^T computed here. */
static void check_argmax(struct hyla_model *m, const char *name) {
    const int N = B * T, V = m->lay.vocab, D = m->lay.dim;
    const float *w = m->lay.tied ? m->params[m->lay.embed_unit] + m->lay.embed
                                 : m->params[m->lay.final_unit] + m->lay.lm_head;
    float *logits = alloc_f32((size_t)N * V);
    cpu_f32_linear_fwd(logits, m->h_final, w, NULL, N, D, V);
    int32_t pred[B * T], wrong = 0;
    model_argmax(m, pred);
    for (int i = 0; i < N; i++) {
        int best = 0;
        for (int j = 1; j < V; j++)
            if (logits[(size_t)i * V + j] > logits[(size_t)i * V + best]) best = j;
        wrong += pred[i] != best;
    }
    char label[160];
    snprintf(label, sizeof label, "%s: model_argmax vs the logits' argmax", name);
    check_le(label, wrong, 0);
    free(logits);
}

static void check_model(enum tiny_kind kind, int tied) {
    struct hyla_model_config cfg = tiny_model_config(kind, VOCAB);
    cfg.tie_word_embeddings = tied;
    cfg.initializer_range = 0.3; /* large weights: gradients well above fp32 noise */
    cfg.attn.dropout_prob = 0.1;
    struct hyla_model m;
    model_create(&m, hyla_backend_cpu(), &cfg, B, T, 1234);
    m.training = 1;
    model_set_dropout_keys(&m, 77);
    m.straight_through = 0; /* the STE is a surrogate, not a derivative: checked in test_lte_attention */
    for (int i = 0; i < m.lay.n_lte_layers * m.lay.att_kv_heads; i++) m.l1_lambda[i] = 0.5f;
    int32_t in[B * T], tg[B * T];
    make_batch(in, tg, 5);
    model_zero_grads(&m);
    loss_at(&m, in, tg);
    char name[96];
    snprintf(name, sizeof name, "%s%s", tiny_kind_names[kind], tied ? "" : " (untied LM head)");
    check_argmax(&m, name);
    model_backward(&m);
    { /* again with the LM head's backward in the forward pass (lm_head_ce_fwd_bwd) */
        const int units = m.lay.table.n_units;
        float **first = malloc(sizeof(float *) * (size_t)units);
        for (int u = 0; u < units; u++) {
            const size_t bytes = m.lay.table.units[u].size * sizeof(float);
            first[u] = malloc(bytes);
            memcpy(first[u], m.grads[u], bytes);
        }
        model_zero_grads(&m);
        m.backward_follows = 1;
        model_forward(&m, in, tg);
        model_backward(&m);
        int same = 1;
        for (int u = 0; u < units; u++) {
            same &= !memcmp(first[u], m.grads[u], m.lay.table.units[u].size * sizeof(float));
            free(first[u]);
        }
        free(first);
        char label[256];
        snprintf(label, sizeof label, "%s: the LM head's gradients from the forward pass: the same gradients", name);
        check_true(label, same);
    }
    m.hold_discrete = 1; /* LTE selection and NSA blocks stay as chosen above */
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.lay.table.n_params; i++) {
        const struct hyla_param *p = &m.lay.table.params[i];
        double err = directional_error(&m, p, in, tg, 100 + (uint64_t)i);
        if (err > worst) worst = err, worst_name = p->name;
    }
    char label[256];
    snprintf(label, sizeof label, "%s: whole backward vs finite differences (worst: %s)", name, worst_name);
    check_le(label, worst, 2e-2);
    model_free(&m);
}

static void check_initial_loss(enum tiny_kind kind) {
    enum { V = 256 };
    struct hyla_model_config cfg = tiny_model_config(kind, V);
    struct hyla_model m;
    model_create(&m, hyla_backend_cpu(), &cfg, B, T, 1);
    int32_t in[B * T], tg[B * T];
    uint64_t key = hyla_rng_key(9, HYLA_RNG_TEST, 0, 0);
    for (int i = 0; i < B * T; i++) in[i] = (int32_t)(hyla_rng_u64(key, (uint64_t)i) % V);
    for (int i = 0; i < B * T; i++) tg[i] = (i % T == T - 1) ? -100 : in[i + 1];
    double loss = loss_at(&m, in, tg);
    char label[160];
    snprintf(label, sizeof label, "%s: |loss at init - ln(256)|", tiny_kind_names[kind]);
    check_le(label, fabs(loss - log((double)V)), 0.1);
    model_free(&m);
}

int main(void) {
    for (int k = 0; k < TINY_KINDS; k++) {
        check_initial_loss((enum tiny_kind)k);
        check_model((enum tiny_kind)k, 1);
    }
    check_model(TINY_GDN, 0);
    return test_finish();
}
