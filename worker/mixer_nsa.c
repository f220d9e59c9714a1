/* NSA token mixer (MODEL.md §6): q/k/v projections with RoPE, branch-gate projection,
 * the NSA op (compressed + selected + window branches), output projection. */
#include <math.h>

#include "common/hyla_error.h"
#include "mixers.h"

struct nsa_acts {
    float *q, *k, *v, *gates, *o, *saved;
    int32_t *block_idx;
};


void nsa_alloc(struct hyla_model *m, int layer) {
    const struct hyla_model_layout *lay = &m->lay;
    const size_t N = (size_t)m->B * m->T;
    const size_t QD = (size_t)lay->att_q_heads * lay->att_dim, KVD = (size_t)lay->att_kv_heads * lay->att_dim;
    struct nsa_acts *a = hyla_calloc(1, sizeof *a);
    a->q = model_alloc_floats(m, N * QD), a->o = model_alloc_floats(m, N * QD);
    a->k = model_alloc_floats(m, N * KVD), a->v = model_alloc_floats(m, N * KVD);
    a->gates = model_alloc_floats(m, N * 3 * lay->att_q_heads);
    a->saved = model_alloc_floats(m, nsa_saved_size(&lay->nsa, m->B, m->T));
    a->block_idx = m->be->alloc(N * lay->att_kv_heads * lay->nsa.n_select * sizeof(int32_t));
    m->acts[layer].mixer = a;
}

void nsa_forward(struct hyla_model *m, int layer, const float *h, float *y) {
    const struct hyla_backend *be = m->be;
    const struct hyla_model_layout *lay = &m->lay;
    const struct hyla_layer_layout *L = &lay->layers[layer];
    struct nsa_acts *a = m->acts[layer].mixer;
    const int N = m->B * m->T, D = lay->dim, Hq = lay->att_q_heads, Hkv = lay->att_kv_heads, d = lay->att_dim;

    qkv_forward(m, layer, h, a->q, a->k, a->k, a->v);
    /* the window branch's and the selected branch's tensor-core kernels read q, k, v in bf16,
       forward and backward: rounded once here */
    hold_activation(m, a->q, (size_t)N * Hq * d), hold_activation(m, a->k, (size_t)N * Hkv * d);
    hold_activation(m, a->v, (size_t)N * Hkv * d);
    be->linear_fwd(a->gates, h, layer_param(m, layer, L->g_proj), NULL, N, D, 3 * Hq);
    be->nsa_fwd(a->o, a->saved, a->block_idx, a->q, a->k, a->v, a->gates, &lay->nsa, m->B, m->T, m->hold_discrete);
    hold_activation(m, a->o, (size_t)N * Hq * d);
    be->linear_fwd(y, a->o, layer_param(m, layer, L->o_proj), NULL, N, Hq * d, D);
}

void nsa_backward(struct hyla_model *m, int layer, const float *dy, float *dh) {
    const struct hyla_backend *be = m->be;
    const struct hyla_model_layout *lay = &m->lay;
    const struct hyla_layer_layout *L = &lay->layers[layer];
    struct nsa_acts *a = m->acts[layer].mixer;
    const int N = m->B * m->T, D = lay->dim, Hq = lay->att_q_heads, d = lay->att_dim;
    float **S = m->scratch;

    be->linear_bwd(S[1], layer_grad(m, layer, L->o_proj), NULL, dy, a->o, layer_param(m, layer, L->o_proj), N,
                   Hq * d, D);
    release_activation(m, a->o);
    be->nsa_bwd(S[2], S[3], S[4], S[5], S[1], a->saved, a->block_idx, a->q, a->k, a->v, a->gates, &lay->nsa, m->B,
                m->T);
    release_activation(m, a->q), release_activation(m, a->k), release_activation(m, a->v);
    qkv_rope_backward(m, S[2], S[3], 1);
    qkv_projection_backward(m, layer, S[2], S[3], S[4], dh, 1);
    be->linear_bwd_accumulate(dh, layer_grad(m, layer, L->g_proj), NULL, S[5], m->acts[layer].h, layer_param(m, layer, L->g_proj),
                              N, D, 3 * Hq);
}
