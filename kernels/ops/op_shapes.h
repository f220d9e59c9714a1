/* Shapes and workspace sizes of the ops that need more than a few integers. These do not
 * depend on the element type, so every backend shares them. */
#ifndef HYLA_OP_SHAPES_H
#define HYLA_OP_SHAPES_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" { /* the CUDA backend calls these C functions */
#endif

#define HYLA_LTE_MAX_CONVS 4
/* The widest GDN short convolution the ops take (their per-channel taps live in registers). */
#define HYLA_SHORTCONV_MAX_WIDTH 8

/* LTE router: in channels c0 = 2*head_dim, each conv halves them: c_{l+1} = c_l / 2. */
struct hyla_lte_router_shape {
    int heads;                          /* kv heads H */
    int head_dim;                       /* d */
    int n_convs;                        /* 3 in the reference */
    int kernel[HYLA_LTE_MAX_CONVS];     /* 3, 3, 3 */
    int dilation[HYLA_LTE_MAX_CONVS];   /* 2, 2, 2 */
};

/* Offsets (in values) of each tensor inside the flat router parameters. */
struct hyla_lte_router_offsets {
    size_t conv_weight[HYLA_LTE_MAX_CONVS];
    size_t conv_bias[HYLA_LTE_MAX_CONVS];
    size_t proj_weight;
    size_t proj_bias;
    size_t total;
};

int lte_router_channels(const struct hyla_lte_router_shape *s, int layer); /* c_layer, layer 0..n_convs */
struct hyla_lte_router_offsets lte_router_offsets(const struct hyla_lte_router_shape *s);
size_t lte_router_param_count(const struct hyla_lte_router_shape *s);
size_t lte_router_acts_size(const struct hyla_lte_router_shape *s, int B, int L);
int lte_router_receptive_field(const struct hyla_lte_router_shape *s); /* 1 + sum (k-1) dil */

struct hyla_nsa_shape {
    int q_heads;      /* Hq */
    int kv_heads;     /* Hkv */
    int head_dim;     /* d */
    int block_size;   /* b = 64 */
    int n_select;     /* S = 16 */
    int window;       /* w = 512 keys including the query */
    double scale;     /* softmax scale, 1/sqrt(d) */
};

/* NSA's saved tensor (what nsa_bwd needs from nsa_fwd), offsets in values, in this order;
 * NB = ceil(L / block_size) blocks (the last may be partial), branch x = 0 cmp, 1 slc, 2 swa
 * (the gate channel order):
 *   kbar, vbar  [B, NB, Hkv, d]  mean-pooled post-RoPE keys and values
 *   o[x]        [B, L, Hq, d]    each branch's attention output (before gating)
 *   lse[x]      [B, L, Hq]       its natural log-sum-exp of the scaled scores (0: no key)
 *   gate        [B, L, 3 Hq]     sigmoid(gate_logits) */
struct hyla_nsa_saved_offsets {
    size_t kbar, vbar, o[3], lse[3], gate;
    size_t total;
};

struct hyla_nsa_saved_offsets nsa_saved_offsets(const struct hyla_nsa_shape *s, int B, int L);
size_t nsa_saved_size(const struct hyla_nsa_shape *s, int B, int L); /* = offsets.total */

#ifdef __cplusplus
}
#endif

#endif
