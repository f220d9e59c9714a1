/* Standard softmax attention mixer (MODEL.md §4): RoPE, causal attention with an optional
 * sliding window and GQA, output projection. Used by the SWA / full-attention hybrids and
 * the Transformer. */
#include <math.h>

#include "common/hyla_error.h"
#include "mixers.h"

struct attention_acts {
    float *q, *k, *v, *o, *lse;       /* q, k after RoPE */
};


void attention_alloc(struct hyla_model *m, int layer) {
    const struct hyla_model_layout *lay = &m->lay;
    const size_t N = (size_t)m->B * m->T;
    const size_t QD = (size_t)lay->att_q_heads * lay->att_dim, KVD = (size_t)lay->att_kv_heads * lay->att_dim;
    struct attention_acts *a = hyla_calloc(1, sizeof *a);
    a->q = model_alloc_floats(m, N * QD), a->o = model_alloc_floats(m, N * QD);
    a->k = model_alloc_floats(m, N * KVD), a->v = model_alloc_floats(m, N * KVD);
    a->lse = model_alloc_floats(m, N * lay->att_q_heads);
    m->acts[layer].mixer = a;
}

void attention_forward(struct hyla_model *m, int layer, const float *h, float *y) {
    const struct hyla_backend *be = m->be;
    const struct hyla_model_layout *lay = &m->lay;
    const struct hyla_layer_layout *L = &lay->layers[layer];
    struct attention_acts *a = m->acts[layer].mixer;
    const int N = m->B * m->T, D = lay->dim, Hq = lay->att_q_heads, Hkv = lay->att_kv_heads, d = lay->att_dim;

    qkv_forward(m, layer, h, a->q, a->k, a->k, a->v);
    hold_activation(m, a->q, (size_t)N * Hq * d), hold_activation(m, a->k, (size_t)N * Hkv * d);
    hold_activation(m, a->v, (size_t)N * Hkv * d);
    expect_activation(m, a->o, (size_t)N * Hq * d); /* the forward kernel may write o's copy */
    be->attention_fwd(a->o, a->lse, a->q, a->k, a->v, NULL, m->B, m->T, Hq, Hkv, d, L->window_left,
                      1.0f / sqrtf((float)d));
    hold_activation(m, a->o, (size_t)N * Hq * d);
    be->linear_fwd(y, a->o, layer_param(m, layer, L->o_proj), NULL, N, Hq * d, D);
}

void attention_backward(struct hyla_model *m, int layer, const float *dy, float *dh) {
    const struct hyla_backend *be = m->be;
    const struct hyla_model_layout *lay = &m->lay;
    const struct hyla_layer_layout *L = &lay->layers[layer];
    struct attention_acts *a = m->acts[layer].mixer;
    const int N = m->B * m->T, D = lay->dim, Hq = lay->att_q_heads, Hkv = lay->att_kv_heads, d = lay->att_dim;
    float **S = m->scratch;

    be->linear_bwd(S[1], layer_grad(m, layer, L->o_proj), NULL, dy, a->o, layer_param(m, layer, L->o_proj), N,
                   Hq * d, D);
    release_activation(m, a->o);
    be->attention_bwd(S[2], S[3], S[4], S[1], a->q, a->k, a->v, a->o, a->lse, NULL, m->B, m->T, Hq, Hkv, d,
                      L->window_left, 1.0f / sqrtf((float)d));
    release_activation(m, a->q), release_activation(m, a->k), release_activation(m, a->v);
    qkv_rope_backward(m, S[2], S[3], 1);
    qkv_projection_backward(m, layer, S[2], S[3], S[4], dh, 1);
}
