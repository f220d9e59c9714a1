/* What the attention-type mixers (standard, LTE, NSA) share: the q, k, v projections with
 * RoPE, and their backward pass from dq, dk (both before the inverse rotation) and dv. */
#include <math.h>

#include "mixers.h"

void qkv_forward(struct hyla_model *m, int layer, const float *h, float *q, float *k_raw, float *k, float *v) {
    const struct hyla_backend *be = m->be;
    const struct hyla_model_layout *lay = &m->lay;
    const struct hyla_layer_layout *L = &lay->layers[layer];
    const int N = m->B * m->T, D = lay->dim, Hq = lay->att_q_heads, Hkv = lay->att_kv_heads, d = lay->att_dim;
    const float theta = (float)model_rope_theta(m);
    float *const ys[3] = {q, k_raw, v};
    const float *const ws[3] = {layer_param(m, layer, L->q_proj), layer_param(m, layer, L->k_proj),
                                layer_param(m, layer, L->v_proj)};
    const int outs[3] = {Hq * d, Hkv * d, Hkv * d};
    be->projections_fwd(3, ys, h, ws, outs, N, D);
    /* every caller holds q and k (and v) next: RoPE may write their bf16 copies */
    expect_activation(m, q, (size_t)N * Hq * d);
    be->rope_fwd(q, q, m->B, m->T, Hq, d, theta, 0);
    expect_activation(m, k, (size_t)N * Hkv * d);
    be->rope_fwd(k, k_raw, m->B, m->T, Hkv, d, theta, 0);
}

void qkv_rope_backward(struct hyla_model *m, float *dq, float *dk, int dk_final) {
    const struct hyla_model_layout *lay = &m->lay;
    const float theta = (float)model_rope_theta(m);
    const size_t N = (size_t)m->B * m->T;
    const size_t nq = N * lay->att_q_heads * lay->att_dim, nk = N * lay->att_kv_heads * lay->att_dim;
    expect_activation(m, dq, nq);
    m->be->rope_bwd(dq, dq, m->B, m->T, lay->att_q_heads, lay->att_dim, theta, 0);
    hold_activation(m, dq, nq);
    if (dk_final) expect_activation(m, dk, nk);
    m->be->rope_bwd(dk, dk, m->B, m->T, lay->att_kv_heads, lay->att_dim, theta, 0);
    if (dk_final) hold_activation(m, dk, nk);
}

void qkv_projection_backward(struct hyla_model *m, int layer, const float *dq, const float *dk, const float *dv,
                             float *dh, int dk_final) {
    const struct hyla_backend *be = m->be;
    const struct hyla_model_layout *lay = &m->lay;
    const struct hyla_layer_layout *L = &lay->layers[layer];
    const float *h = m->acts[layer].h;
    const int N = m->B * m->T, D = lay->dim, Hq = lay->att_q_heads, Hkv = lay->att_kv_heads, d = lay->att_dim;
    float *const dws[3] = {layer_grad(m, layer, L->q_proj), layer_grad(m, layer, L->k_proj),
                           layer_grad(m, layer, L->v_proj)};
    const float *const dys[3] = {dq, dk, dv};
    const float *const ws[3] = {layer_param(m, layer, L->q_proj), layer_param(m, layer, L->k_proj),
                                layer_param(m, layer, L->v_proj)};
    const int outs[3] = {Hq * d, Hkv * d, Hkv * d};
    be->projections_bwd(3, dh, 0, dws, dys, h, ws, outs, N, D);
    release_activation(m, dq);
    if (dk_final) release_activation(m, dk);
}
