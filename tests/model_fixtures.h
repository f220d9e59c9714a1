/* Tiny model configs of every type, built in code (tests that do not exercise the config
 * loader). Sizes are small enough for finite differences. */
#ifndef HYLA_TEST_MODEL_FIXTURES_H
#define HYLA_TEST_MODEL_FIXTURES_H

#include <string.h>

#include "common/run_config.h"

enum tiny_kind { TINY_GDN, TINY_GDN_SWA, TINY_GDN_ATTN, TINY_GDN_LTE, TINY_GDN_NSA, TINY_TRANSFORMER, TINY_NSA,
                 TINY_KINDS };

static const char *const tiny_kind_names[TINY_KINDS] = {"gdn", "gdn_swa", "gdn_attn", "gdn_lte", "gdn_nsa",
                                                        "transformer", "nsa"};

/* D = 16, 2 layers (attention in layer 1), GDN 2 heads x 8, attention 2 heads x 8,
 * LTE window 4, buffer 4, 1 sink, CNN [3,3,3] dilation [1,2,1]; NSA block 4, 4 blocks, window 4. */
static inline struct hyla_model_config tiny_model_config(enum tiny_kind kind, int vocab) {
    struct hyla_model_config m;
    memset(&m, 0, sizeof m);
    m.model_type = HYLA_MODEL_GATED_DELTANET;
    m.hidden_size = 16;
    m.num_hidden_layers = 2;
    m.num_heads = 2;
    m.head_dim = 8;
    m.expand_v = 1;
    m.conv_size = 4;
    m.use_short_conv = m.use_gate = 1;
    m.hidden_ratio = 4;
    m.intermediate_size = 24;
    m.vocab_size = vocab;
    m.norm_eps = 1e-6;
    m.initializer_range = 0.006;
    m.max_position_embeddings = 4096;
    m.rope_theta = 10000;
    m.tie_word_embeddings = 1;
    m.pad_token_id = -1;
    struct hyla_attn_config *a = &m.attn;
    a->rope_theta = 10000;
    a->num_heads = 2;
    a->num_kv_heads = 2;
    a->window_size = -1;
    a->n_layers = 1;
    a->layers[0] = 1;
    a->n_convs = 3;
    a->conv_size[0] = a->conv_size[1] = a->conv_size[2] = 3;
    a->conv_dilation[0] = 1, a->conv_dilation[1] = 2, a->conv_dilation[2] = 1;
    a->buffer_size = 4;
    a->sink_size = 1;
    a->routing_grad = 1;
    a->l1_lambda_update_steps = 32;
    a->block_size = 4;
    a->block_counts = 4;
    switch (kind) {
    case TINY_GDN: break;
    case TINY_GDN_SWA: a->present = 1, a->window_size = 5; break;
    case TINY_GDN_ATTN: a->present = 1; break;
    case TINY_GDN_LTE:
        m.model_type = HYLA_MODEL_HYBRID_GATED_DELTANET;
        a->present = 1, a->attn_type = HYLA_ATTN_LTE, a->window_size = 4;
        break;
    case TINY_GDN_NSA:
        m.model_type = HYLA_MODEL_HYBRID_GATED_DELTANET;
        a->present = 1, a->attn_type = HYLA_ATTN_NSA, a->num_heads = 4, a->num_kv_heads = 2, a->head_dim = 8;
        a->window_size = 4;
        break;
    case TINY_TRANSFORMER:
        m.model_type = HYLA_MODEL_TRANSFORMER, m.num_heads = 2, m.num_kv_heads = 1, m.head_dim = 0;
        break;
    case TINY_NSA:
        m.model_type = HYLA_MODEL_NSA, m.num_heads = 4, m.num_kv_heads = 2, m.head_dim = 8;
        m.block_size = 4, m.block_counts = 4, m.window_size = 4, m.pad_token_id = 2;
        break;
    case TINY_KINDS: break;
    }
    return m;
}

#endif
