/* Sharded checkpoints (docs/checkpoints.md): every rank of a run's group writes its shards
 * (params, AdamW m and v), its data cursor and the step counters into
 * DIR/step_NNNNNNNN.tmp/rank_RRRRR.bin; once every file is fsynced and its xxHash known, the
 * group's rank 0 writes manifest.json, fsyncs, renames the folder to step_NNNNNNNN/ and
 * fsyncs DIR. A folder without a valid manifest, or whose files do not match it, is never
 * loaded. Loading on another number of ranks re-slices the units. */
#ifndef HYLA_CHECKPOINT_H
#define HYLA_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sharding/collectives.h"

#define HYLA_CKPT_FORMAT_VERSION 1

struct ckpt_error {
    char message[1024];
};

struct ckpt_unit {
    const char *name;
    size_t unit_count;               /* real values of the unit (shards are padded) */
};

/* What one rank saves, and where a load puts it (the shards of fsdp_layout_make(unit_count,
 * world_size, rank)). The LTE state and the counters are the same on every rank. */
struct ckpt_rank_data {
    int rank, world_size;
    int n_units;
    const struct ckpt_unit *units;
    float **param, **adam_m, **adam_v;
    uint64_t data_cursor;
    int64_t step;
    int skipped_steps, bad_in_row;
    int n_lte;
    float *lte_lambda, *lte_num_kept;
    char config_hash[17];
    int saved_world_size;            /* set by ckpt_load: the world size the checkpoint was saved with */
};

/* Collective over comm (NULL: alone). Returns 0, or -1 on every rank with the reason (the
 * .tmp folder is removed and earlier checkpoints stay as they were). bytes: total written. */
int ckpt_save(const char *root, const struct ckpt_rank_data *d, struct hyla_comm *comm, double *bytes,
              struct ckpt_error *err);

/* The newest valid checkpoint under root: 1 (dir_out, step set), 0 when there is none.
 * Invalid newer folders are skipped and each reason is written to `skipped` (may be NULL). */
int ckpt_find_latest(const char *root, char *dir_out, size_t cap, int64_t *step, FILE *skipped);

/* Check a checkpoint folder: manifest, file sizes and hashes. 0 valid, -1 with the reason. */
int ckpt_verify(const char *dir, struct ckpt_error *err);

/* Load into d (rank, world_size, units and shard buffers given); the saved world size may
 * differ. Nothing in d changes unless the whole load succeeds. 0 or -1 with the reason. */
int ckpt_load(const char *dir, struct ckpt_rank_data *d, struct ckpt_error *err);

/* Keep the newest keep_last checkpoints and every one whose step % keep_every == 0
 * (keep_every 0: none); remove the other step folders and leftover .tmp folders. */
int ckpt_apply_retention(const char *root, int keep_last, int keep_every, struct ckpt_error *err);

/* Print what a checkpoint folder holds (manifest summary, units) for `hyla ckpt inspect`. */
int ckpt_describe(const char *dir, FILE *out, struct ckpt_error *err);

#endif
