/* Parameter counts of the twelve 0.4B / 1.4B reference configs equal MODEL.md §2's table
 * (tied matrices counted once), and the layer layout matches §1 (which layers are which). */
#include <stdio.h>

#include "experiments/config_schema.h"
#include "harness.h"
#include "worker/model_layout.h"

struct expected {
    const char *file;
    size_t params;
};

static const struct expected table[] = {
    {"gated_delta_net_0.4B.json", 366956928},      {"gated_delta_net_1.4B.json", 1466343808},
    {"gated_delta_net_swa_0.4B.json", 354028224},  {"gated_delta_net_swa_1.4B.json", 1339823296},
    {"gated_delta_net_attn_0.4B.json", 354028224}, {"gated_delta_net_attn_1.4B.json", 1339823296},
    {"gated_delta_net_lte_0.4B.json", 360246144},  {"gated_delta_net_lte_1.4B.json", 1342932256},
    {"gated_delta_net_nsa_0.4B.json", 358353600},  {"gated_delta_net_nsa_1.4B.json", 1323308224},
    {"transformer_0.4B.json", 341099520},          {"transformer_1.4B.json", 1213302784},
    {"nsa_0.4B.json", 349750272},                  {"nsa_1.4B.json", 1180272640},
};

int main(void) {
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        char path[1024], label[1400];
        snprintf(path, sizeof path, "%s/tests/reference-configs/%s", HYLA_SOURCE_DIR, table[i].file);
        struct hyla_model_config m;
        struct hyla_config_error err;
        if (hyla_config_load_model_json(&m, path, &err)) {
            snprintf(label, sizeof label, "%s loads (%s)", table[i].file, err.message);
            check_true(label, 0);
            continue;
        }
        struct hyla_model_layout lay;
        model_layout_build(&lay, &m);
        snprintf(label, sizeof label, "%s: %zu parameters (expected %zu)", table[i].file, lay.table.total,
                 table[i].params);
        check_true(label, lay.table.total == table[i].params);
        /* hybrids: layer 0 is GDN, layer 23 attention */
        if (m.attn.present) {
            snprintf(label, sizeof label, "%s: layer 0 GDN, layer 23 attention", table[i].file);
            check_true(label, lay.layers[0].mixer == HYLA_MIXER_GDN && lay.layers[23].mixer != HYLA_MIXER_GDN);
        }
        model_layout_free(&lay);
    }
    return test_finish();
}
