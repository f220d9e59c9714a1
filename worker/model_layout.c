#include "model_layout.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/hyla_error.h"

/* Adds "model.layers.<l>.<suffix>" with the given shape. */
static size_t add_layer_param(struct hyla_param_table *t, int layer, const char *suffix, int ndim, const int *shape,
                              enum hyla_init_rule init, double a) {
    char name[2 * HYLA_PARAM_NAME_MAX];
    snprintf(name, sizeof name, "model.layers.%d.%s", layer, suffix);
    return param_table_add(t, name, ndim, shape, init, a);
}

#define SHAPE(...) ((const int[]){__VA_ARGS__})

/* o_proj / down_proj: N(0, std) normally; the hybrid class re-draws them as
 * kaiming_uniform(a=sqrt 5) = U(+-1/sqrt(fan_in)) divided by sqrt(2 * layers) (MODEL.md §1.3). */
static size_t add_output_proj(struct hyla_param_table *t, const struct hyla_model_config *cfg, int layer,
                              const char *suffix, int out, int in) {
    if (cfg->model_type == HYLA_MODEL_HYBRID_GATED_DELTANET)
        return add_layer_param(t, layer, suffix, 2, SHAPE(out, in), HYLA_INIT_UNIFORM,
                               1.0 / sqrt((double)in) / sqrt(2.0 * cfg->num_hidden_layers));
    return add_layer_param(t, layer, suffix, 2, SHAPE(out, in), HYLA_INIT_NORMAL, cfg->initializer_range);
}

static void add_gdn(struct hyla_model_layout *lay, const struct hyla_model_config *cfg, int l) {
    struct hyla_param_table *t = &lay->table;
    struct hyla_layer_layout *L = &lay->layers[l];
    const int D = lay->dim, H = lay->gdn_heads, KD = H * lay->gdn_dk, VD = H * lay->gdn_dv;
    const double std = cfg->initializer_range;
    L->mixer = HYLA_MIXER_GDN;
    L->q_proj = add_layer_param(t, l, "attn.q_proj.weight", 2, SHAPE(KD, D), HYLA_INIT_NORMAL, std);
    L->k_proj = add_layer_param(t, l, "attn.k_proj.weight", 2, SHAPE(KD, D), HYLA_INIT_NORMAL, std);
    L->v_proj = add_layer_param(t, l, "attn.v_proj.weight", 2, SHAPE(VD, D), HYLA_INIT_NORMAL, std);
    /* a_proj then b_proj, adjacent: the mixer reads them as one [2H, D] weight (mixer_gdn.c) */
    L->a_proj = add_layer_param(t, l, "attn.a_proj.weight", 2, SHAPE(H, D), HYLA_INIT_NORMAL, std);
    L->b_proj = add_layer_param(t, l, "attn.b_proj.weight", 2, SHAPE(H, D), HYLA_INIT_NORMAL, std);
    HYLA_ASSERT(L->b_proj == L->a_proj + (size_t)H * D);
    L->A_log = add_layer_param(t, l, "attn.A_log", 1, SHAPE(H), HYLA_INIT_A_LOG, 0);
    L->dt_bias = add_layer_param(t, l, "attn.dt_bias", 1, SHAPE(H), HYLA_INIT_DT_BIAS, 0);
    const int kw = cfg->conv_size;
    L->q_conv = add_layer_param(t, l, "attn.q_conv1d.weight", 3, SHAPE(KD, 1, kw), HYLA_INIT_NORMAL, std);
    L->k_conv = add_layer_param(t, l, "attn.k_conv1d.weight", 3, SHAPE(KD, 1, kw), HYLA_INIT_NORMAL, std);
    L->v_conv = add_layer_param(t, l, "attn.v_conv1d.weight", 3, SHAPE(VD, 1, kw), HYLA_INIT_NORMAL, std);
    L->g_proj = add_layer_param(t, l, "attn.g_proj.weight", 2, SHAPE(VD, D), HYLA_INIT_NORMAL, std);
    L->o_norm = add_layer_param(t, l, "attn.o_norm.weight", 1, SHAPE(lay->gdn_dv), HYLA_INIT_CONST, 1.0);
    L->o_proj = add_output_proj(t, cfg, l, "attn.o_proj.weight", D, VD);
}

/* LTE router (MODEL.md §5.2): convs get kaiming_normal(relu) weights N(0, 2/fan_in) and
 * PyTorch-default biases U(+-1/sqrt(fan_in)); the projection bias is 0.5. The params are
 * added in state-dict order, so they are contiguous in lte_router_offsets' layout. */
static size_t add_router(struct hyla_model_layout *lay, int l) {
    struct hyla_param_table *t = &lay->table;
    const struct hyla_lte_router_shape *s = &lay->router;
    const int H = s->heads;
    size_t first = 0;
    char suffix[96];
    for (int c = 0; c < s->n_convs; c++) {
        int cin = lte_router_channels(s, c), cout = lte_router_channels(s, c + 1), k = s->kernel[c];
        double fan_in = (double)cin * k;
        snprintf(suffix, sizeof suffix, "attn.router.conv_stack.convs.%d.weight", c);
        size_t off = add_layer_param(t, l, suffix, 4, SHAPE(cout * H, cin, 1, k), HYLA_INIT_NORMAL,
                                     sqrt(2.0 / fan_in));
        if (c == 0) first = off;
        snprintf(suffix, sizeof suffix, "attn.router.conv_stack.convs.%d.bias", c);
        add_layer_param(t, l, suffix, 1, SHAPE(cout * H), HYLA_INIT_UNIFORM, 1.0 / sqrt(fan_in));
    }
    int clast = lte_router_channels(s, s->n_convs);
    add_layer_param(t, l, "attn.router.conv_stack.proj.weight", 4, SHAPE(H, clast, 1, 1), HYLA_INIT_NORMAL,
                    sqrt(2.0 / clast));
    add_layer_param(t, l, "attn.router.conv_stack.proj.bias", 1, SHAPE(H), HYLA_INIT_CONST, 0.5);
    return first;
}

static int attention_window_left(const struct hyla_model_config *cfg, enum hyla_mixer mixer) {
    int w = cfg->model_type == HYLA_MODEL_TRANSFORMER ? -1 : cfg->attn.window_size;
    if (w < 0) return -1;
    return mixer == HYLA_MIXER_LTE ? w : w - 1; /* LTE: w+1 keys; standard: w keys (MODEL.md §10.3) */
}

static void add_attention(struct hyla_model_layout *lay, const struct hyla_model_config *cfg, int l,
                          enum hyla_mixer mixer) {
    struct hyla_param_table *t = &lay->table;
    struct hyla_layer_layout *L = &lay->layers[l];
    const int D = lay->dim, QD = lay->att_q_heads * lay->att_dim, KVD = lay->att_kv_heads * lay->att_dim;
    const double std = cfg->initializer_range;
    L->mixer = mixer;
    L->q_proj = add_layer_param(t, l, "attn.q_proj.weight", 2, SHAPE(QD, D), HYLA_INIT_NORMAL, std);
    L->k_proj = add_layer_param(t, l, "attn.k_proj.weight", 2, SHAPE(KVD, D), HYLA_INIT_NORMAL, std);
    L->v_proj = add_layer_param(t, l, "attn.v_proj.weight", 2, SHAPE(KVD, D), HYLA_INIT_NORMAL, std);
    if (mixer == HYLA_MIXER_NSA)
        L->g_proj = add_layer_param(t, l, "attn.g_proj.weight", 2, SHAPE(3 * lay->att_q_heads, D),
                                    HYLA_INIT_NORMAL, std);
    L->o_proj = add_output_proj(t, cfg, l, "attn.o_proj.weight", D, QD);
    if (mixer == HYLA_MIXER_LTE) {
        L->router = add_router(lay, l);
        L->lte_index = lay->n_lte_layers++;
    }
    L->window_left = attention_window_left(cfg, mixer);
}

static enum hyla_mixer layer_mixer(const struct hyla_model_config *cfg, int l) {
    switch (cfg->model_type) {
    case HYLA_MODEL_TRANSFORMER: return HYLA_MIXER_ATTENTION;
    case HYLA_MODEL_NSA: return HYLA_MIXER_NSA;
    default: break;
    }
    if (!hyla_layer_uses_attention(cfg, l)) return HYLA_MIXER_GDN;
    if (cfg->model_type == HYLA_MODEL_HYBRID_GATED_DELTANET)
        return cfg->attn.attn_type == HYLA_ATTN_NSA ? HYLA_MIXER_NSA : HYLA_MIXER_LTE;
    return HYLA_MIXER_ATTENTION;
}

static void set_dims(struct hyla_model_layout *lay, const struct hyla_model_config *cfg) {
    lay->dim = cfg->hidden_size;
    lay->vocab = cfg->vocab_size;
    lay->inter = hyla_intermediate_size(cfg);
    lay->n_layers = cfg->num_hidden_layers;
    lay->tied = cfg->tie_word_embeddings;
    lay->padding_idx = cfg->model_type == HYLA_MODEL_NSA ? cfg->pad_token_id : -1;
    lay->gdn_heads = cfg->num_heads;
    lay->gdn_dk = cfg->head_dim;
    lay->gdn_dv = cfg->head_dim * cfg->expand_v;
    if (cfg->model_type == HYLA_MODEL_TRANSFORMER || cfg->model_type == HYLA_MODEL_NSA) {
        lay->att_q_heads = cfg->num_heads;
        lay->att_kv_heads = cfg->num_kv_heads > 0 ? cfg->num_kv_heads : cfg->num_heads;
        lay->att_dim = cfg->model_type == HYLA_MODEL_NSA ? 64 : cfg->hidden_size / cfg->num_heads;
        if (cfg->model_type == HYLA_MODEL_TRANSFORMER && cfg->head_dim > 0) lay->att_dim = cfg->head_dim;
        if (cfg->model_type == HYLA_MODEL_NSA && cfg->head_dim > 0) lay->att_dim = cfg->head_dim;
    } else {
        lay->att_q_heads = cfg->attn.num_heads;
        lay->att_kv_heads = cfg->attn.num_kv_heads > 0 ? cfg->attn.num_kv_heads : cfg->attn.num_heads;
        lay->att_dim = cfg->attn.head_dim > 0 ? cfg->attn.head_dim
                                              : (cfg->attn.num_heads ? cfg->hidden_size / cfg->attn.num_heads : 0);
    }
    lay->router = (struct hyla_lte_router_shape){.heads = lay->att_kv_heads, .head_dim = lay->att_dim,
                                                 .n_convs = cfg->attn.n_convs};
    for (int c = 0; c < cfg->attn.n_convs && c < HYLA_LTE_MAX_CONVS; c++) {
        lay->router.kernel[c] = cfg->attn.conv_size[c];
        lay->router.dilation[c] = cfg->attn.conv_dilation[c];
    }
    const int nsa_model = cfg->model_type == HYLA_MODEL_NSA;
    lay->nsa = (struct hyla_nsa_shape){.q_heads = lay->att_q_heads, .kv_heads = lay->att_kv_heads,
                                       .head_dim = lay->att_dim,
                                       .block_size = nsa_model ? cfg->block_size : cfg->attn.block_size,
                                       .n_select = nsa_model ? cfg->block_counts : cfg->attn.block_counts,
                                       .window = nsa_model ? cfg->window_size : cfg->attn.window_size,
                                       .scale = lay->att_dim > 0 ? 1.0 / sqrt((double)lay->att_dim) : 0};
}

void model_layout_build(struct hyla_model_layout *lay, const struct hyla_model_config *cfg) {
    memset(lay, 0, sizeof *lay);
    if (cfg->num_hidden_layers < 1 || cfg->num_hidden_layers > HYLA_MAX_LAYERS)
        hyla_die("model.num_hidden_layers = %d is out of range; use 1..%d", cfg->num_hidden_layers,
                 HYLA_MAX_LAYERS);
    set_dims(lay, cfg);
    struct hyla_param_table *t = &lay->table;
    param_table_init(t);
    const int D = lay->dim;
    const double std = cfg->initializer_range;

    lay->embed_unit = param_table_begin_unit(t, "embeddings");
    lay->embed = param_table_add(t, "model.embeddings.weight", 2, SHAPE(lay->vocab, D), HYLA_INIT_NORMAL, std);

    for (int l = 0; l < lay->n_layers; l++) {
        char unit_name[32];
        snprintf(unit_name, sizeof unit_name, "layers.%d", l);
        struct hyla_layer_layout *L = &lay->layers[l];
        L->unit = param_table_begin_unit(t, unit_name);
        L->lte_index = -1;
        L->attn_norm = add_layer_param(t, l, "attn_norm.weight", 1, SHAPE(D), HYLA_INIT_CONST, 1.0);
        enum hyla_mixer mixer = layer_mixer(cfg, l);
        if (mixer == HYLA_MIXER_GDN) add_gdn(lay, cfg, l);
        else add_attention(lay, cfg, l, mixer);
        L->mlp_norm = add_layer_param(t, l, "mlp_norm.weight", 1, SHAPE(D), HYLA_INIT_CONST, 1.0);
        L->gate_proj = add_layer_param(t, l, "mlp.gate_proj.weight", 2, SHAPE(lay->inter, D), HYLA_INIT_NORMAL, std);
        L->up_proj = add_layer_param(t, l, "mlp.up_proj.weight", 2, SHAPE(lay->inter, D), HYLA_INIT_NORMAL, std);
        L->down_proj = add_output_proj(t, cfg, l, "mlp.down_proj.weight", D, lay->inter);
    }

    lay->final_unit = param_table_begin_unit(t, "final");
    lay->final_norm = param_table_add(t, "model.norm.weight", 1, SHAPE(D), HYLA_INIT_CONST, 1.0);
    if (!lay->tied)
        lay->lm_head = param_table_add(t, "lm_head.weight", 2, SHAPE(lay->vocab, D), HYLA_INIT_NORMAL, std);
}

void model_layout_free(struct hyla_model_layout *lay) { param_table_free(&lay->table); }
