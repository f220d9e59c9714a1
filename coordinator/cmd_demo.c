/* `hyla demo [--json] [--set key=value]... [CONFIG...]`: the forgetfulness demo. Trains each
 * config (by default a tiny pure GDN and a tiny laLTE of about the same size) on MQAR with
 * more key-value pairs than the GDN's recurrent state holds, then prints their held-out
 * recall accuracy side by side with the LTE layers' mean kept tokens and λ_h per head.
 * Progress goes to stderr; the result to stdout (a table, or one JSON object). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_args.h"
#include "commands.h"
#include "experiments/config_schema.h"
#include "roles.h"

#define DEMO_MAX_MODELS 8

static const char *const default_configs[] = {"configs/demo/mqar_gdn.yaml", "configs/demo/mqar_lte.yaml"};

static double mean_kept(const struct run_outcome *o, int layer) {
    double s = 0;
    for (int h = 0; h < o->lte_heads; h++) s += o->kept[layer * o->lte_heads + h];
    return o->lte_heads ? s / o->lte_heads : 0;
}

static void print_table(const struct hyla_run_config *cfgs, const struct run_outcome *outs, int n) {
    printf("\nMQAR held-out recall (%d pairs, %d queries, seq_len %d):\n\n", cfgs[0].data.mqar_num_pairs,
           cfgs[0].data.mqar_num_queries, cfgs[0].train.seq_len);
    printf("%-16s %-22s %12s %10s\n", "model", "type", "parameters", "accuracy");
    for (int i = 0; i < n; i++)
        printf("%-16s %-22s %12zu %10.4f\n", cfgs[i].name, hyla_model_type_name(cfgs[i].model.model_type),
               outs[i].parameters, outs[i].eval.accuracy);
    for (int i = 0; i < n; i++) {
        const struct run_outcome *o = &outs[i];
        if (!o->n_lte) continue;
        printf("\n%s: LTE layers (budget %d kept tokens per head of %d)\n", cfgs[i].name,
               cfgs[i].model.attn.buffer_size, cfgs[i].train.seq_len);
        for (int l = 0; l < o->n_lte; l++) {
            printf("  layer %2d  mean kept %6.1f |", o->lte_layers[l], mean_kept(o, l));
            for (int h = 0; h < o->lte_heads; h++)
                printf(" h%d: kept %.1f λ %.2e", h, o->kept[l * o->lte_heads + h], o->lambda[l * o->lte_heads + h]);
            printf("\n");
        }
    }
}

static void print_json(const struct hyla_run_config *cfgs, const struct run_outcome *outs, int n) {
    json_t *root = json_object(), *models = json_array();
    json_object_set_new(root, "task", json_string("mqar"));
    for (int i = 0; i < n; i++) {
        const struct run_outcome *o = &outs[i];
        json_t *m = json_pack("{s:s, s:s, s:I, s:f, s:I}", "name", cfgs[i].name, "model_type",
                              hyla_model_type_name(cfgs[i].model.model_type), "parameters", (json_int_t)o->parameters,
                              "accuracy", o->eval.accuracy, "answers", (json_int_t)o->eval.answers);
        if (o->n_lte) {
            json_t *layers = json_array();
            for (int l = 0; l < o->n_lte; l++) {
                json_t *kept = json_array(), *lambda = json_array();
                for (int h = 0; h < o->lte_heads; h++) {
                    json_array_append_new(kept, json_real(o->kept[l * o->lte_heads + h]));
                    json_array_append_new(lambda, json_real(o->lambda[l * o->lte_heads + h]));
                }
                json_array_append_new(layers, json_pack("{s:i, s:f, s:o, s:o}", "layer", o->lte_layers[l],
                                                        "mean_kept", mean_kept(o, l), "kept", kept, "lambda", lambda));
            }
            json_object_set_new(m, "lte_layers", layers);
        }
        json_array_append_new(models, m);
    }
    json_object_set_new(root, "models", models);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    puts(text);
    free(text);
    json_decref(root);
}

int cmd_demo(int argc, char **argv) {
    const char *configs[DEMO_MAX_MODELS];
    int n = 0, json = 0;
    struct cli_overrides ov = {0};
    for (int i = 1; i < argc; i++) {
        int taken = cli_take_override(argc, argv, &i, &ov);
        if (taken < 0) return 2;
        if (taken) continue;
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "hyla: error: unknown option '%s'; usage: hyla demo [--json] [--set k=v]... [CONFIG...]\n",
                    argv[i]);
            return 2;
        } else if (n < DEMO_MAX_MODELS) {
            configs[n++] = argv[i];
        } else {
            fprintf(stderr, "hyla: error: at most %d configs\n", DEMO_MAX_MODELS);
            return 2;
        }
    }
    if (n == 0) {
        configs[n++] = default_configs[0];
        configs[n++] = default_configs[1];
    }
    struct hyla_run_config *cfgs = calloc((size_t)n, sizeof *cfgs);
    struct run_outcome *outs = calloc((size_t)n, sizeof *outs);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        struct hyla_config_error cerr;
        if (hyla_config_load(&cfgs[i], configs[i], ov.items, ov.count, &cerr)) {
            fprintf(stderr, "hyla: error: %s\n", cerr.message);
            rc = 1;
        }
    }
    for (int i = 0; i < n && !rc; i++) {
        fprintf(stderr, "== training %s (%s)\n", cfgs[i].name, configs[i]);
        struct run_outcome seen;
        struct run_follower follower = {.out = stderr, .log_every = cfgs[i].train.log_every, .outcome = &seen};
        struct run_reporter rep = {.emit = local_follower_emit, .ctx = &follower};
        worker_run(&cfgs[i], hyla_backend_cpu(), NULL, &rep, NULL, 0, &outs[i]);
        if (outs[i].failed) {
            fprintf(stderr, "hyla: error: %s: %s\n", cfgs[i].name, outs[i].error);
            rc = 1;
        }
    }
    if (!rc) {
        if (json) print_json(cfgs, outs, n);
        else print_table(cfgs, outs, n);
    }
    free(cfgs);
    free(outs);
    return rc;
}
