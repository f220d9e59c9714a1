/* `hyla train CONFIG [--set key=value]... [--out DIR] [--quiet]`: one run in one process. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_args.h"
#include "commands.h"
#include "experiments/config_dump.h"
#include "experiments/config_schema.h"
#include "worker/model_io.h"
#include "worker/train.h"

static int usage(void) {
    fputs("usage: hyla train CONFIG.yaml [--set key=value]... [--out DIR] [--quiet]\n"
          "  trains one run; --out DIR writes DIR/model.safetensors and DIR/config.yaml\n",
          stderr);
    return 2;
}

static int make_dir(const char *dir) {
    if (mkdir(dir, 0755) == 0 || errno == EEXIST) return 0;
    fprintf(stderr, "hyla: error: cannot create output folder %s: %s\n", dir, strerror(errno));
    return 1;
}

static int write_outputs(const struct trainer *t, const char *out_dir) {
    if (make_dir(out_dir)) return 1;
    char path[HYLA_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    struct hyla_st_error serr;
    const struct hyla_st_meta meta[] = {{"format", "pt"}, {"producer", "hyla"}};
    if (model_save_safetensors(&t->model, path, HYLA_ST_F32, meta, 2, &serr)) {
        fprintf(stderr, "hyla: error: %s\n", serr.message);
        return 1;
    }
    snprintf(path, sizeof path, "%s/config.yaml", out_dir);
    struct hyla_config_error cerr;
    if (hyla_config_write_yaml(&t->cfg, path, &cerr)) {
        fprintf(stderr, "hyla: error: %s\n", cerr.message);
        return 1;
    }
    printf("wrote %s/model.safetensors and %s/config.yaml\n", out_dir, out_dir);
    return 0;
}

/* Parse, load the config, train, evaluate, write. */
int cmd_train(int argc, char **argv) {
    const char *config_path = NULL, *out_dir = NULL;
    struct cli_overrides ov = {0};
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        int taken = cli_take_override(argc, argv, &i, &ov);
        if (taken < 0) return 2;
        if (taken) continue;
        if (!strcmp(argv[i], "--out")) {
            if (!(out_dir = cli_option_value(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = 1;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "hyla: error: unknown option '%s'\n", argv[i]);
            return usage();
        } else if (!config_path) {
            config_path = argv[i];
        } else {
            fprintf(stderr, "hyla: error: more than one config given ('%s' and '%s')\n", config_path, argv[i]);
            return usage();
        }
    }
    if (!config_path) return usage();

    struct hyla_run_config cfg;
    struct hyla_config_error cerr;
    if (hyla_config_load(&cfg, config_path, ov.items, ov.count, &cerr)) {
        fprintf(stderr, "hyla: error: %s\n", cerr.message);
        return 1;
    }
    struct trainer t;
    struct hyla_data_error derr;
    if (trainer_init(&t, &cfg, hyla_backend_cpu(), quiet ? NULL : stdout, &derr)) {
        fprintf(stderr, "hyla: error: %s\n", derr.message);
        return 1;
    }
    if (!quiet)
        printf("hyla train: %s | %s | %zu parameters | %d x %d tokens x %d accumulation per step | %d steps\n",
               cfg.name, hyla_model_type_name(cfg.model.model_type), model_param_count(&t.model.lay),
               cfg.train.micro_batch, cfg.train.seq_len, cfg.train.grad_accum, cfg.train.steps);
    int rc = 0;
    for (int s = 0; s < cfg.train.steps; s++) {
        struct step_report r;
        if (trainer_step(&t, &r, &derr)) {
            fprintf(stderr, "hyla: error: %s\n", derr.message);
            rc = 1;
            break;
        }
        if (t.bad_in_row >= cfg.train.max_bad_steps) {
            fprintf(stderr, "hyla: error: the run diverged: %d steps in a row had a non-finite gradient norm "
                            "(train.max_bad_steps = %d); lower train.lr or raise train.warmup_steps\n",
                    t.bad_in_row, cfg.train.max_bad_steps);
            rc = 1;
            break;
        }
    }
    if (!rc && cfg.data.task != HYLA_DATA_TOKENS) {
        struct eval_result ev;
        if (evaluate_model(&t.model, &cfg, cfg.data.eval_samples, &ev, &derr)) {
            fprintf(stderr, "hyla: error: %s\n", derr.message);
            rc = 1;
        } else {
            printf("held-out %s: accuracy %.4f on %zu answers (%d samples), loss %.4f\n",
                   hyla_data_task_name(cfg.data.task), ev.accuracy, ev.answers, ev.samples, ev.loss);
        }
    }
    if (!rc && out_dir) rc = write_outputs(&t, out_dir);
    trainer_free(&t);
    return rc;
}
