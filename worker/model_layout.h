/* Where every weight of a model lives: the parameter table (names, shapes, init, units)
 * plus, per layer, the offsets the forward pass needs. Built from the model config alone. */
#ifndef HYLA_MODEL_LAYOUT_H
#define HYLA_MODEL_LAYOUT_H

#include "common/run_config.h"
#include "kernels/ops/op_shapes.h"
#include "model_params.h"

enum hyla_mixer { HYLA_MIXER_GDN, HYLA_MIXER_ATTENTION, HYLA_MIXER_LTE, HYLA_MIXER_NSA };

struct hyla_layer_layout {
    enum hyla_mixer mixer;
    int unit;
    size_t attn_norm, mlp_norm, gate_proj, up_proj, down_proj;
    size_t q_proj, k_proj, v_proj, o_proj;        /* every mixer */
    size_t g_proj;                                /* GDN output gate; NSA branch gates */
    size_t a_proj, b_proj, q_conv, k_conv, v_conv, A_log, dt_bias, o_norm; /* GDN */
    size_t router;                                /* LTE: flat router params */
    int lte_index;                                /* index among LTE layers, -1 otherwise */
    int window_left;                              /* attention: attention_fwd's window_left */
};

struct hyla_model_layout {
    struct hyla_param_table table;
    int dim, vocab, inter, n_layers;
    int embed_unit, final_unit;
    size_t embed, final_norm, lm_head;            /* lm_head only when !tied */
    int tied;
    int gdn_heads, gdn_dk, gdn_dv;
    int att_q_heads, att_kv_heads, att_dim;       /* the attention-type layers */
    struct hyla_lte_router_shape router;
    struct hyla_nsa_shape nsa;
    int n_lte_layers;
    int padding_idx;                              /* embedding rows without lookup gradient, -1 none */
    struct hyla_layer_layout layers[HYLA_MAX_LAYERS];
};

/* Build the layout; dies with a clear message on an impossible config. */
void model_layout_build(struct hyla_model_layout *lay, const struct hyla_model_config *cfg);
void model_layout_free(struct hyla_model_layout *lay);

#endif
