/* Training one run on a group of G ranks (G = 1: one process): micro-batches with gradient
 * accumulation, CE + LTE L1, the λ_h controller, FSDP (sharded params, grads, AdamW state),
 * global-norm clipping with non-finite steps skipped, warm-up + cosine schedule, held-out
 * evaluation. Progress goes to a report callback (printed, or sent to the coordinator). */
#ifndef HYLA_TRAIN_H
#define HYLA_TRAIN_H

#include <stdio.h>

#include "common/run_config.h"
#include "kernels/backend.h"
#include "sharding/collectives.h"
#include "worker/data_loader.h"
#include "worker/fsdp.h"
#include "worker/lte_controller.h"
#include "worker/model.h"

#define HYLA_MAX_LTE_LAYERS 64

struct step_report {
    int step, steps;                /* this step, of how many */
    double loss, ce, l1, lr, grad_norm;
    double tokens_per_s;            /* of the whole group */
    double elapsed_s;               /* since training started */
    int skipped;                    /* this step was skipped (non-finite gradient norm) */
    int skipped_total;
    int lambda_action;              /* enum lte_controller_action of this step */
    int n_lte;                      /* LTE layers */
    double kept[HYLA_MAX_LTE_LAYERS]; /* mean kept-token EMA per LTE layer */
};

struct trainer {
    struct hyla_run_config cfg;
    const struct hyla_backend *be;
    struct hyla_comm *comm;         /* the run's group (host memory); NULL = one process */
    struct hyla_comm *device_comm;  /* the same group over NCCL when the backend is a GPU's */
    int group_size, rank;
    struct hyla_model model;
    struct fsdp fsdp;
    struct hyla_data_loader train_data;
    struct lte_controller lte;
    int32_t *inputs, *targets;      /* host [micro_batch * seq_len] */
    int grad_accum;                 /* micro-batches per step on each rank */
    int step;                       /* optimizer steps done */
    int skipped_steps, bad_in_row;
    double started;
};

/* Set up model, shards, data and optimizer on this rank of `comm` (NULL = alone). Checks
 * that the global batch splits over the group. Returns 0, or 1 with a message in err. */
int trainer_init(struct trainer *t, const struct hyla_run_config *cfg, const struct hyla_backend *be,
                 struct hyla_comm *comm, struct hyla_data_error *err);
void trainer_free(struct trainer *t);
/* One optimizer step (collective over the group). Returns 0, or 1 on a data error. */
int trainer_step(struct trainer *t, struct step_report *r, struct hyla_data_error *err);

/* Save a checkpoint of the run's state under root (collective over the group). */
int trainer_save_checkpoint(struct trainer *t, const char *root, const char *config_hash, double *bytes,
                            char *error, size_t error_size);
/* Resume from the newest valid checkpoint under root (collective): 1 resumed, 0 none found,
 * -1 error. Skipped (invalid) checkpoints are described on `log`. */
int trainer_resume(struct trainer *t, const char *root, FILE *log, char *error, size_t error_size);

/* Micro-batches per rank and step for a global batch over G ranks; 0 with a message when
 * the global batch cannot be split. */
int trainer_accumulation(const struct hyla_train_config *tc, int group_size, char *why, size_t why_size);

/* Held-out evaluation: accuracy on answer positions and mean loss over `samples` sequences
 * of the eval split (rounded up to whole micro-batches). The model must have all its
 * parameters in place (fsdp_gather_all). Rank 0 of a group evaluates. */
struct eval_result {
    int samples;
    double accuracy, loss;
    size_t answers;
};
int evaluate_model(struct hyla_model *m, const struct hyla_run_config *cfg, int samples, struct eval_result *res,
                   struct hyla_data_error *err);

/* The progress line of a step report (no newline). */
void format_progress(const struct step_report *r, char *line, size_t size);

/* Mean kept tokens (λ controller EMA) of LTE layer n. */
double trainer_mean_kept(const struct hyla_model *m, int lte_layer);

#endif
