#include "cli_args.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#ifdef HYLA_WITH_CUDA
#include "kernels/cuda/backend_cuda.h"
#include "kernels/cuda/cuda_device.h"
#endif

static int add_override(struct cli_overrides *o, const char *text) {
    if (!strchr(text, '=') || text[0] == '=') {
        fprintf(stderr, "hyla: error: --set needs key=value (e.g. --set train.lr=1e-3), got '%s'\n", text);
        return -1;
    }
    if (o->count == HYLA_MAX_OVERRIDES) {
        fprintf(stderr, "hyla: error: more than %d --set overrides\n", HYLA_MAX_OVERRIDES);
        return -1;
    }
    o->items[o->count++] = text;
    return 1;
}

int cli_take_override(int argc, char **argv, int *i, struct cli_overrides *o) {
    const char *arg = argv[*i];
    if (!strncmp(arg, "--set=", 6)) return add_override(o, arg + 6);
    if (strcmp(arg, "--set") != 0) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "hyla: error: --set needs key=value (e.g. --set train.lr=1e-3)\n");
        return -1;
    }
    *i += 1;
    return add_override(o, argv[*i]);
}

const char *cli_option_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "hyla: error: option %s needs a value\n", argv[*i]);
        return NULL;
    }
    *i += 1;
    return argv[*i];
}

const struct hyla_backend *cli_backend(const char *name) {
    if (!strcmp(name, "cpu")) return hyla_backend_cpu();
    if (strcmp(name, "cuda") != 0) {
        fprintf(stderr, "hyla: error: unknown --backend '%s'; choose cpu or cuda\n", name);
        return NULL;
    }
#ifdef HYLA_WITH_CUDA
    if (hyla_cuda_device_count() == 0) {
        fprintf(stderr, "hyla: error: --backend cuda: no CUDA device is visible; run on a GPU host or use "
                        "--backend cpu\n");
        return NULL;
    }
    const struct hyla_backend *be = hyla_backend_cuda();
    const char *profile = getenv("HYLA_PROFILE_OPS");
    return profile && !strcmp(profile, "1") ? hyla_backend_profiled(be) : be;
#else
    fprintf(stderr, "hyla: error: --backend cuda: this hyla was built without CUDA; rebuild with -DHYLA_CUDA=ON\n");
    return NULL;
#endif
}

int cli_take_config(const char *arg, const char **config_path) {
    if (arg[0] == '-') {
        fprintf(stderr, "hyla: error: unknown option '%s'\n", arg);
        return -1;
    }
    if (*config_path) {
        fprintf(stderr, "hyla: error: more than one config given ('%s' and '%s')\n", *config_path, arg);
        return -1;
    }
    *config_path = arg;
    return 0;
}
