/* Sizes and layouts of the LTE router (see op_shapes.h, ops_lte.h): shared by every backend.
 *
 * Saved activations (`acts`, lte_router_acts_size values): per row (sequence) of the batch, one
 * after the other, in this order:
 *   a_1, ..., a_n : the pre-activation (before SiLU) of conv l-1's output, [L, H, c_l] each;
 *   z             : the projection output (score = sigmoid(z) - 0.5), [L, H].
 * The post-SiLU values and the dropout masks are recomputed from these (and from k, v). */
#include "op_shapes.h"

int lte_router_channels(const struct hyla_lte_router_shape *s, int layer) {
    int c = 2 * s->head_dim;
    for (int l = 0; l < layer; l++) c /= 2;
    return c;
}

struct hyla_lte_router_offsets lte_router_offsets(const struct hyla_lte_router_shape *s) {
    struct hyla_lte_router_offsets off = {{0}, {0}, 0, 0, 0};
    size_t at = 0, H = (size_t)s->heads;
    for (int l = 0; l < s->n_convs; l++) {
        size_t c_in = (size_t)lte_router_channels(s, l), c_out = (size_t)lte_router_channels(s, l + 1);
        off.conv_weight[l] = at; /* [c_out H, c_in, 1, k] */
        at += c_out * H * c_in * (size_t)s->kernel[l];
        off.conv_bias[l] = at; /* [c_out H] */
        at += c_out * H;
    }
    off.proj_weight = at; /* [H, c_n, 1, 1] */
    at += H * (size_t)lte_router_channels(s, s->n_convs);
    off.proj_bias = at; /* [H] */
    off.total = at + H;
    return off;
}

size_t lte_router_param_count(const struct hyla_lte_router_shape *s) { return lte_router_offsets(s).total; }

size_t lte_router_acts_size(const struct hyla_lte_router_shape *s, int B, int L) {
    size_t per_head = 1; /* z */
    for (int l = 1; l <= s->n_convs; l++) per_head += (size_t)lte_router_channels(s, l);
    return (size_t)B * (size_t)L * (size_t)s->heads * per_head;
}

int lte_router_receptive_field(const struct hyla_lte_router_shape *s) {
    int rf = 1;
    for (int l = 0; l < s->n_convs; l++) rf += (s->kernel[l] - 1) * s->dilation[l];
    return rf;
}
