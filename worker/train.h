/* Training one run in one process: micro-batches with gradient accumulation, CE + LTE L1,
 * the λ_h controller, global-norm clipping with non-finite steps skipped, AdamW with warm-up
 * and cosine decay, progress lines, held-out evaluation. */
#ifndef HYLA_TRAIN_H
#define HYLA_TRAIN_H

#include <stdio.h>

#include "common/run_config.h"
#include "kernels/backend.h"
#include "worker/data_loader.h"
#include "worker/lte_controller.h"
#include "worker/model.h"

struct step_report {
    int step;
    double loss, ce, l1, lr, grad_norm, tokens_per_s;
    int skipped;                    /* this step was skipped (non-finite gradient norm) */
    int lambda_action;              /* enum lte_controller_action of this step */
};

struct trainer {
    struct hyla_run_config cfg;
    const struct hyla_backend *be;
    struct hyla_model model;
    struct hyla_data_loader train_data;
    float **adam_m, **adam_v;       /* per unit */
    struct lte_controller lte;
    int32_t *inputs, *targets;      /* host [micro_batch * seq_len] */
    int step;                       /* optimizer steps done */
    int skipped_steps, bad_in_row;
    FILE *progress;                 /* progress lines (NULL = quiet) */
    double started;
};

/* Set up model, data and optimizer. Returns 0, or 1 with a message in err. */
int trainer_init(struct trainer *t, const struct hyla_run_config *cfg, const struct hyla_backend *be, FILE *progress,
                 struct hyla_data_error *err);
void trainer_free(struct trainer *t);
/* One optimizer step. Returns 0, or 1 on a data error (message in err). */
int trainer_step(struct trainer *t, struct step_report *r, struct hyla_data_error *err);

/* Held-out evaluation of a model: accuracy on answer positions and mean loss over
 * `samples` sequences of the eval split (rounded up to whole micro-batches). */
struct eval_result {
    int samples;
    double accuracy, loss;
    size_t answers;
};
int evaluate_model(struct hyla_model *m, const struct hyla_run_config *cfg, int samples, struct eval_result *res,
                   struct hyla_data_error *err);

/* Mean kept tokens (λ controller EMA) of LTE layer n, and its heads' λ. */
double trainer_mean_kept(const struct hyla_model *m, int lte_layer);

#endif
