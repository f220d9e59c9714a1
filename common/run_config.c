#include "run_config.h"

int hyla_intermediate_size(const struct hyla_model_config *m) {
    if (m->intermediate_size > 0) return m->intermediate_size;
    /* fla's GatedMLP: 256 * ceil(floor(D * hidden_ratio * 2/3) / 256). */
    long base = (long)(m->hidden_size * m->hidden_ratio * 2.0 / 3.0);
    return (int)(256 * ((base + 255) / 256));
}

int hyla_layer_uses_attention(const struct hyla_model_config *m, int layer) {
    if (m->model_type == HYLA_MODEL_TRANSFORMER || m->model_type == HYLA_MODEL_NSA) return 1;
    if (!m->attn.present) return 0;
    for (int i = 0; i < m->attn.n_layers; i++)
        if (m->attn.layers[i] == layer) return 1;
    return 0;
}
