/* Fully sharded data parallelism for one model (DESIGN.md §3, "FSDP step"): every rank of
 * the run's group owns a padded 1/G slice of every unit (fp32 params, grads, Adam m, v).
 * The model calls unit hooks; on them the unit is all-gathered just before it runs (the
 * next unit's gather already started) and released after, and in the backward pass its
 * full gradient is reduce-scattered (mean) into the shard. With no communicator (one
 * process), G = 1 and the collectives are copies.
 *
 * On GPUs the units move over a second comm in device memory (NCCL, `data_comm`): gathers
 * and reduce-scatters run on NCCL's stream, ordered against compute by events, so the
 * next unit's gather overlaps this unit's kernels; host-side scalars (the gradient norm)
 * stay on the MPI comm. */
#ifndef HYLA_FSDP_H
#define HYLA_FSDP_H

#include <stddef.h>
#include <stdint.h>

#include "sharding/collectives.h"
#include "sharding/fsdp_shard.h"
#include "worker/model.h"

struct fsdp_unit {
    struct fsdp_layout layout;
    float *param, *grad, *adam_m, *adam_v;   /* the shard: layout.shard_count values each */
    float *full;                             /* gathered parameters, NULL when released */
    uint16_t *full_bf16;                     /* bf16 gather in flight (gather_bf16), then widened */
    int widened;                             /* full holds full_bf16's values (kept: the backend's twin) */
    float *full_grad;                        /* full gradient during its backward, NULL otherwise */
    struct hyla_comm_request *gathering;     /* a gather in flight into `full` */
};

struct fsdp_memory {
    size_t sharded_bytes;                    /* params + grads + m + v shards */
    size_t gathered_peak_bytes;              /* largest sum of gathered params + full grads at once */
    size_t gathered_bytes, unsharded_bytes;  /* now; and what G = 1 would hold sharded */
};

struct fsdp {
    const struct hyla_backend *be;
    struct hyla_comm *comm;                  /* NULL: one process; host memory (scalars) */
    struct hyla_comm *data_comm;             /* units' gathers and reduce-scatters: comm, or NCCL */
    int group_size, rank;
    struct hyla_model *model;
    struct fsdp_unit *units;
    int n_units;
    float *scatter_tmp;                      /* one shard of the largest unit */
    double *norm_squared;                    /* backend memory: the step's squared gradient norm */
    float *clip_scale;                       /* backend memory: its clipping factor (NaN: skip) */
    int serial;                              /* HYLA_FSDP_SERIAL=1: no overlap (for measuring it) */
    int keep_units;                          /* a group of one keeps the forward's units for the backward */
    int gather_bf16;                         /* parameters gathered as bf16 (train.precision = bf16) */
    int gathering_all;                       /* inside fsdp_gather_all: exact fp32 gathers */
    struct fsdp_memory memory;
};

/* Shard the model's freshly initialised units (identical on every rank: the init is a pure
 * function of the seed) and take over its parameter and gradient buffers. data_comm moves
 * the units (NULL: comm itself); it must be in the backend's memory. */
void fsdp_init(struct fsdp *f, struct hyla_model *m, struct hyla_comm *comm, struct hyla_comm *data_comm);
void fsdp_free(struct fsdp *f);

/* on != 0: the units' parameters are gathered in bf16 for the steps (half the bytes;
 * gradients are still reduced in fp32, master weights and AdamW stay fp32 shards). */
void fsdp_set_gather_bf16(struct fsdp *f, int on);

/* Zero the shard gradients (start of an optimizer step). */
void fsdp_zero_grads(struct fsdp *f);
/* The optimizer step, queued without host synchronisation: the global L2 norm of the
 * gradient over all shards of the group, torch's clipping to max_norm (<= 0: none), and
 * AdamW on every shard, skipped on every rank when the norm is not finite. */
void fsdp_optimizer_step(struct fsdp *f, float lr, float beta1, float beta2, float eps, float weight_decay,
                         float max_norm, int step);
/* The global gradient norm of the last fsdp_optimizer_step (a device-to-host copy). */
double fsdp_grad_norm(struct fsdp *f);

/* Gather every unit and keep it (evaluation, export); release them again. */
void fsdp_gather_all(struct fsdp *f);
void fsdp_release_all(struct fsdp *f);

#endif
