/* Experiment batches (docs/batches.md): a base run config, overrides for every run, and a
 * sweep — explicit variants × a grid over dotted keys × seeds — expanded deterministically
 * into named runs, each resolved through the same config schema as `hyla train`. */
#ifndef HYLA_BATCH_H
#define HYLA_BATCH_H

#include <stdio.h>

#include "common/run_config.h"
#include "experiments/config_tree.h"

#define HYLA_BATCH_NAME_MAX 256

struct hyla_batch_run {
    char name[HYLA_BATCH_NAME_MAX];   /* "<batch>/<overrides>", e.g. lte-budget/attn.buffer_size=256,seed=1 */
    struct hyla_run_config cfg;
    char **overrides;                 /* "key=value" of this run (the sweep's, not the batch's `set`) */
    int n_overrides;
};

struct hyla_batch {
    char name[HYLA_NAME_MAX];
    char base_path[HYLA_PATH_MAX];
    int workers_per_run;              /* 0 = all workers */
    int max_attempts;                 /* retry.max_attempts, >= 1 */
    int n_runs;
    struct hyla_batch_run *runs;
};

/* Load and expand a batch file; overrides ("key=value", e.g. from --set) apply to every run
 * after the batch's own. Returns 0, or -1 with err naming the file, line and the fix. */
int hyla_batch_load(const char *path, const char *const *overrides, int n_overrides, struct hyla_batch *batch,
                    struct hyla_config_error *err);
void hyla_batch_free(struct hyla_batch *batch);

/* `hyla run --dry-run`: the runs as a table. */
void hyla_run_dry_run(const struct hyla_batch *batch, FILE *out);

#endif
