/* `hyla eval --weights FILE|DIR --task mqar|passkey|tokens:SHARD [--config CFG] [--set k=v]...
 *  [--samples N] [--format table|json]`: held-out accuracy on a synthetic task, or mean loss
 * and perplexity on a token shard. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_args.h"
#include "commands.h"
#include "experiments/config_schema.h"
#include "worker/model_io.h"
#include "worker/train.h"

static int usage(void) {
    fputs("usage: hyla eval --weights FILE.safetensors|DIR --task mqar|passkey|tokens:SHARD\n"
          "                 [--config CONFIG.yaml] [--set key=value]... [--samples N] [--format table|json]\n"
          "  DIR is a `hyla train --out` folder (model.safetensors + config.yaml); for a bare file\n"
          "  the config is --config, or config.yaml beside the file.\n",
          stderr);
    return 2;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* weights DIR → DIR/model.safetensors, DIR/config.yaml; FILE → FILE, its folder's config.yaml. */
static void resolve_paths(const char *weights, const char *config_opt, char *weights_file, char *config_file,
                          size_t cap) {
    if (is_dir(weights)) {
        snprintf(weights_file, cap, "%s/model.safetensors", weights);
        if (config_opt) snprintf(config_file, cap, "%s", config_opt);
        else snprintf(config_file, cap, "%s/config.yaml", weights);
        return;
    }
    snprintf(weights_file, cap, "%s", weights);
    if (config_opt) {
        snprintf(config_file, cap, "%s", config_opt);
        return;
    }
    const char *slash = strrchr(weights, '/');
    if (slash) snprintf(config_file, cap, "%.*s/config.yaml", (int)(slash - weights), weights);
    else snprintf(config_file, cap, "config.yaml");
}

static void print_result(const char *task, const struct eval_result *ev, int tokens_task, int json) {
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "task", json_string(task));
        json_object_set_new(o, "samples", json_integer(ev->samples));
        if (tokens_task) {
            json_object_set_new(o, "loss", json_real(ev->loss));
            json_object_set_new(o, "perplexity", json_real(exp(ev->loss)));
        } else {
            json_object_set_new(o, "accuracy", json_real(ev->accuracy));
            json_object_set_new(o, "answers", json_integer((json_int_t)ev->answers));
        }
        char *text = json_dumps(o, JSON_COMPACT);
        puts(text);
        free(text);
        json_decref(o);
        return;
    }
    printf("%-10s %8s %12s %12s\n", "task", "samples", tokens_task ? "loss" : "accuracy",
           tokens_task ? "perplexity" : "answers");
    if (tokens_task) printf("%-10s %8d %12.4f %12.3f\n", task, ev->samples, ev->loss, exp(ev->loss));
    else printf("%-10s %8d %12.4f %12zu\n", task, ev->samples, ev->accuracy, ev->answers);
}

int cmd_eval(int argc, char **argv) {
    const char *weights = NULL, *task = NULL, *config_opt = NULL;
    int samples = 0, json = 0;
    struct cli_overrides ov = {0};
    for (int i = 1; i < argc; i++) {
        int taken = cli_take_override(argc, argv, &i, &ov);
        if (taken < 0) return 2;
        if (taken) continue;
        const char *v = NULL;
        if (!strcmp(argv[i], "--weights")) {
            if (!(weights = cli_option_value(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--task")) {
            if (!(task = cli_option_value(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--config")) {
            if (!(config_opt = cli_option_value(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--samples")) {
            if (!(v = cli_option_value(argc, argv, &i))) return 2;
            samples = atoi(v);
            if (samples <= 0) {
                fprintf(stderr, "hyla: error: --samples needs a positive integer, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(argv[i], "--format")) {
            if (!(v = cli_option_value(argc, argv, &i))) return 2;
            if (!strcmp(v, "json")) json = 1;
            else if (strcmp(v, "table") != 0) {
                fprintf(stderr, "hyla: error: unknown --format '%s'; choose table or json\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "hyla: error: unknown argument '%s'\n", argv[i]);
            return usage();
        }
    }
    if (!weights || !task) return usage();

    /* --task becomes overrides of the data section, applied after the user's. */
    char task_set[HYLA_PATH_MAX + 32], path_set[HYLA_PATH_MAX + 32];
    int tokens_task = !strncmp(task, "tokens:", 7);
    if (tokens_task) {
        snprintf(task_set, sizeof task_set, "data.task=tokens");
        snprintf(path_set, sizeof path_set, "data.eval_path=\"%s\"", task + 7);
        ov.items[ov.count++] = path_set;
    } else if (!strcmp(task, "mqar") || !strcmp(task, "passkey")) {
        snprintf(task_set, sizeof task_set, "data.task=%s", task);
    } else {
        fprintf(stderr, "hyla: error: unknown --task '%s'; choose mqar, passkey or tokens:SHARD\n", task);
        return 2;
    }
    if (ov.count >= HYLA_MAX_OVERRIDES) return usage();
    ov.items[ov.count++] = task_set;

    char weights_file[HYLA_PATH_MAX], config_file[HYLA_PATH_MAX];
    resolve_paths(weights, config_opt, weights_file, config_file, sizeof weights_file);
    struct hyla_run_config cfg;
    struct hyla_config_error cerr;
    if (hyla_config_load(&cfg, config_file, ov.items, ov.count, &cerr)) {
        fprintf(stderr, "hyla: error: %s\n(eval needs the model's config: pass --config, or keep config.yaml "
                        "beside the weights)\n", cerr.message);
        return 1;
    }
    if (tokens_task) snprintf(cfg.data.path, sizeof cfg.data.path, "%s", task + 7);
    struct hyla_model m;
    model_create(&m, hyla_backend_cpu(), &cfg.model, cfg.train.micro_batch, cfg.train.seq_len, cfg.train.seed);
    struct hyla_st_error serr;
    if (model_load_safetensors(&m, weights_file, &serr)) {
        fprintf(stderr, "hyla: error: %s\n", serr.message);
        model_free(&m);
        return 1;
    }
    struct eval_result ev;
    struct hyla_data_error derr;
    int rc = evaluate_model(&m, &cfg, samples ? samples : cfg.data.eval_samples, &ev, &derr);
    if (rc) fprintf(stderr, "hyla: error: %s\n", derr.message);
    else print_result(tokens_task ? "tokens" : task, &ev, tokens_task, json);
    model_free(&m);
    return rc ? 1 : 0;
}
