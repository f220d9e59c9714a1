/* The model: its layout, its full (gathered) parameters and gradients per unit, the
 * activations saved for the backward pass, and the LTE state (λ_h, kept-token EMA).
 * Written once against the backend table; the CPU backend runs it today. */
#ifndef HYLA_MODEL_H
#define HYLA_MODEL_H

#include <stdint.h>

#include "common/run_config.h"
#include "kernels/backend.h"
#include "model_layout.h"

#define HYLA_MAX_LTE_HEADS 256

struct layer_acts {
    float *x_in, *h, *rstd_attn, *mix_out, *sum, *h2, *rstd_mlp, *mlp_acts;
    void *mixer;                      /* the mixer's own saved tensors (mixer_*.c) */
};

/* Notifications around each unit's use, in execution order: FSDP gathers, releases and
 * reduce-scatters on them. Forward: embeddings, layers, final; backward in reverse. */
enum unit_event { UNIT_FORWARD_BEGIN, UNIT_FORWARD_END, UNIT_BACKWARD_BEGIN, UNIT_BACKWARD_END };
struct unit_hooks {
    void (*fn)(void *ctx, int unit, enum unit_event event); /* NULL: no hooks */
    void *ctx;
};

/* Statistics of the forward passes since the last model_take_stats, summed over them. */
struct forward_stats {
    double ce_loss;                   /* sum of each forward's mean over valid positions */
    double l1_loss;                   /* sum of each forward's LTE L1 term (weighted by λ) */
    int valid_tokens;
    int forwards;                     /* how many forward passes these are */
};

/* The device-side step statistics (backend memory, doubles): what the forward passes add
 * while the host queues on; read once by model_take_stats. */
enum { MODEL_STAT_CE, MODEL_STAT_L1, MODEL_STAT_KEPT, MODEL_STATS_FIXED = MODEL_STAT_KEPT };

struct hyla_model {
    const struct hyla_backend *be;
    struct hyla_model_config cfg;
    struct hyla_model_layout lay;
    struct unit_hooks hooks;
    float **params;                   /* [n_units] full unit values (backend memory) */
    float **grads;                    /* [n_units] full unit gradients */
    /* activations for micro-batches of B x T */
    int B, T;
    int32_t *inputs, *targets;        /* backend memory */
    float *x, *dx, *h_final, *rstd_final;
    float *losses, *lse;              /* [B*T] per-position loss and log-sum-exp of the logits (the
                                         logits themselves are never stored: lm_head_ce_*) */
    struct layer_acts acts[HYLA_MAX_LAYERS];
    float *scratch[8];                /* backward temporaries, scratch_floats each */
    size_t scratch_floats;
    /* LTE: host arrays [n_lte_layers * kv_heads] */
    float *l1_lambda, *num_kept;
    double *kept_sum;                 /* kept tokens summed over this step's micro-batches (host; filled
                                         from device_stats by model_take_stats) */
    double *device_stats;             /* backend memory: [MODEL_STAT_CE], [MODEL_STAT_L1], then the kept
                                         tokens [MODEL_STAT_KEPT + lte layer * kv heads + head] */
    int valid_pending, forwards_pending; /* host counts since the last model_take_stats */
    int kept_micro_batches;
    int training;                     /* dropout on, no hard LTE budget */
    int hold_discrete;                /* reuse the last forward's LTE selection and NSA blocks (gradient
                                         checks: discrete choices carry no gradient) */
    int router_disabled;              /* LTE warm-up (l1_warmup_steps): every token selected, no router */
    int router_frozen;                /* routing_freeze_steps: router weights get no gradient */
    int straight_through;             /* LTE: the STE surrogate gradient into the router (1 = train as the
                                         reference; 0 leaves only true derivatives, for gradient checks) */
    uint64_t *row_keys;               /* [B] dropout key of each sequence of the micro-batch, set by the
                                         trainer from the step and the sequence's global index, so
                                         that masks do not depend on how the batch is split */
    double dloss;                     /* scale of this micro-batch's loss in the step (1/accum) */
    int valid_last;                   /* valid target positions of the last forward */
    int backward_follows;             /* set by the caller before model_forward when model_backward comes
                                         next with this dloss (a training step): the LM head's gradients
                                         are then made in the forward pass, its logits once
                                         (lm_head_ce_fwd_bwd); model_forward clears it */
    int head_grads_ready;             /* the last forward pass made them: */
    float *dh_final, *dw_head;        /* [B*T, dim] and [vocab, dim], allocated at their first use */
};

/* Build the model for micro-batches of B x T tokens and initialise its parameters. */
void model_create(struct hyla_model *m, const struct hyla_backend *be, const struct hyla_model_config *cfg, int B,
                  int T, uint64_t seed);
void model_free(struct hyla_model *m);

/* Forward pass on host tokens [B*T] (targets -100 = no loss). Saves what the backward
 * pass needs (with m->backward_follows, the LM head's gradients too); returns CE + L1. */
/* Queue a forward pass; its losses and LTE statistics accumulate on the device (no host
 * synchronisation) until model_take_stats. */
void model_forward(struct hyla_model *m, const int32_t *inputs, const int32_t *targets);
/* The statistics of the forwards since the last take (one device-to-host copy, which waits
 * for them): kept tokens are added to m->kept_sum; the device accumulators restart at 0. */
void model_take_stats(struct hyla_model *m, struct forward_stats *st);
/* model_forward, then model_take_stats: the loss ce + l1 of that one forward (tests). */
double model_forward_loss(struct hyla_model *m, const int32_t *inputs, const int32_t *targets);
/* Backward pass of the last forward; gradients are ADDED into m->grads (scaled by m->dloss). */
void model_backward(struct hyla_model *m);
/* Zero all gradients. */
void model_zero_grads(struct hyla_model *m);
/* argmax of the last forward's logits, host [B*T] (recomputed by chunks). */
void model_argmax(const struct hyla_model *m, int32_t *out);

/* Dropout keys of every row derived from one key (tests, evaluation). */
void model_set_dropout_keys(struct hyla_model *m, uint64_t key);

/* count floats of zeroed backend memory. */
float *model_alloc_floats(struct hyla_model *m, size_t count);

/* Total number of parameters (a tied matrix counted once). */
size_t model_param_count(const struct hyla_model_layout *lay);

#endif
