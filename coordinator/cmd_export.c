/* `hyla export --weights IN.safetensors --config CONFIG -o OUT.safetensors [--dtype f32|bf16]`:
 * check weights against a model config (names, shapes) and write them under the
 * reference's state-dict names in fp32 or bf16 — e.g. to hand hyla's weights to PyTorch, or
 * to bring a reference checkpoint in: an F32/BF16 file read and written in its own dtype
 * is reproduced bit for bit. */
#include <stdio.h>
#include <string.h>

#include "cli_args.h"
#include "commands.h"
#include "experiments/config_schema.h"
#include "worker/model_io.h"

static int usage(void) {
    fputs("usage: hyla export --weights IN.safetensors --config CONFIG.yaml|JSON -o OUT.safetensors "
          "[--dtype f32|bf16] [--set key=value]...\n", stderr);
    return 2;
}

int cmd_export(int argc, char **argv) {
    const char *in = NULL, *config = NULL, *out = NULL, *dtype_name = "f32";
    struct cli_overrides ov = {0};
    for (int i = 1; i < argc; i++) {
        int taken = cli_take_override(argc, argv, &i, &ov);
        if (taken < 0) return 2;
        if (taken) continue;
        const char **slot = !strcmp(argv[i], "--weights") ? &in
                            : !strcmp(argv[i], "--config") ? &config
                            : (!strcmp(argv[i], "-o") || !strcmp(argv[i], "--out")) ? &out
                            : !strcmp(argv[i], "--dtype") ? &dtype_name : NULL;
        if (!slot) {
            fprintf(stderr, "hyla: error: unknown argument '%s'\n", argv[i]);
            return usage();
        }
        if (!(*slot = cli_option_value(argc, argv, &i))) return 2;
    }
    if (!in || !config || !out) return usage();
    enum hyla_st_dtype dtype;
    if (!strcmp(dtype_name, "f32")) dtype = HYLA_ST_F32;
    else if (!strcmp(dtype_name, "bf16")) dtype = HYLA_ST_BF16;
    else {
        fprintf(stderr, "hyla: error: unknown --dtype '%s'; choose f32 or bf16\n", dtype_name);
        return 2;
    }
    struct hyla_run_config cfg;
    struct hyla_config_error cerr;
    if (hyla_config_load(&cfg, config, ov.items, ov.count, &cerr)) {
        fprintf(stderr, "hyla: error: %s\n", cerr.message);
        return 1;
    }
    /* one token is enough: no activations are needed */
    struct hyla_model m;
    model_create(&m, hyla_backend_cpu(), &cfg.model, 1, 1, cfg.train.seed);
    struct hyla_st_error err;
    int rc = model_load_safetensors(&m, in, &err);
    const struct hyla_st_meta meta[] = {{"format", "pt"}, {"producer", "hyla"}};
    if (!rc) rc = model_save_safetensors(&m, out, dtype, meta, 2, &err);
    if (rc) fprintf(stderr, "hyla: error: %s\n", err.message);
    else printf("wrote %s (%zu parameters, %s)\n", out, model_param_count(&m.lay), dtype_name);
    model_free(&m);
    return rc ? 1 : 0;
}
