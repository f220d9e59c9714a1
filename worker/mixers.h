/* Token mixers of a block: GDN, standard attention (full or sliding window), LTE
 * attention and NSA. Each has alloc / forward / backward; forward reads the block's
 * normalised input h [N, D] and writes y [N, D]; backward reads dy and WRITES dh,
 * adding the weight gradients into the layer's unit. Backward temporaries come from
 * m->scratch[1..7]; scratch[0] belongs to the caller. */
#ifndef HYLA_MIXERS_H
#define HYLA_MIXERS_H

#include "model.h"

void gdn_alloc(struct hyla_model *m, int layer);
void gdn_forward(struct hyla_model *m, int layer, const float *h, float *y);
void gdn_backward(struct hyla_model *m, int layer, const float *dy, float *dh);

void attention_alloc(struct hyla_model *m, int layer);
void attention_forward(struct hyla_model *m, int layer, const float *h, float *y);
void attention_backward(struct hyla_model *m, int layer, const float *dy, float *dh);

void lte_alloc(struct hyla_model *m, int layer);
void lte_forward(struct hyla_model *m, int layer, const float *h, float *y);
void lte_backward(struct hyla_model *m, int layer, const float *dy, float *dh);

void nsa_alloc(struct hyla_model *m, int layer);
void nsa_forward(struct hyla_model *m, int layer, const float *h, float *y);
void nsa_backward(struct hyla_model *m, int layer, const float *dy, float *dh);

/* The attention-type mixers' q, k, v (mixer_qkv.c): projections and RoPE (k = RoPE(k_raw);
 * k_raw may equal k); the inverse rotation of dq, dk in place, dq held from there to the
 * projections' backward (dh written), and dk too when dk_final (nothing adds onto it in
 * between, as LTE's router does): their bf16 copies, the projections' operands, may come
 * from RoPE's backward. Both calls take the same dk_final. */
void qkv_forward(struct hyla_model *m, int layer, const float *h, float *q, float *k_raw, float *k, float *v);
void qkv_rope_backward(struct hyla_model *m, float *dq, float *dk, int dk_final);
void qkv_projection_backward(struct hyla_model *m, int layer, const float *dq, const float *dk, const float *dv,
                             float *dh, int dk_final);

/* Shared helpers. */
/* x[0 .. n) is an activation saved for the backward pass that stays as it is until released:
 * the backend may round it to bf16 once for its products (hold_bf16_copy; the same bits). */
static inline void hold_activation(const struct hyla_model *m, const float *x, size_t n) {
    if (m->be->hold_bf16_copy) m->be->hold_bf16_copy(x, n);
}
/* Before the op that writes all of x[0 .. n), when hold_activation(x, n) follows it: the backend
 * may have that op write x's bf16 copy as it writes x (expect_bf16_copy: no pass of its own). */
static inline void expect_activation(const struct hyla_model *m, const float *x, size_t n) {
    if (m->be->hold_bf16_copy && m->be->expect_bf16_copy) m->be->expect_bf16_copy(x, n);
}
/* After its last use in the backward pass (the held copy is freed). */
static inline void release_activation(const struct hyla_model *m, const float *x) {
    if (m->be->hold_bf16_copy && m->be->forget_bf16_twin) m->be->forget_bf16_twin(x);
}
double model_rope_theta(const struct hyla_model *m); /* RoPE base of the attention layers */
static inline float *layer_param(struct hyla_model *m, int layer, size_t offset) {
    return m->params[m->lay.layers[layer].unit] + offset;
}
static inline float *layer_grad(struct hyla_model *m, int layer, size_t offset) {
    return m->grads[m->lay.layers[layer].unit] + offset;
}

#endif
