/* Training and held-out batches: inputs[B][T] and targets[B][T] (int32, row-major), with
 * targets[b][t] the token after inputs[b][t] or HYLA_IGNORE_INDEX (-100) where no loss applies.
 *
 * The cursor rule. A loader's cursor is a plain integer: the number of sequences this rank
 * has taken so far. With R ranks, batch row b of rank r at cursor c is global sequence
 *     g = (c + b) * R + r,
 * and a batch of B rows advances the cursor by B. The R ranks together therefore take global
 * sequences [c*R, (c+B)*R) — the same sequences one rank with batch B*R takes. Saving the cursor
 * and restoring it reproduces the stream exactly; with another world size R', the same global
 * position is cursor * R / R' (hyla_data_cursor_reshard).
 *
 * What a global sequence is:
 *   - token shards: window s = g mod W of the stream, tokens [s*T, s*T + T + 1), where
 *     W = (num_tokens - 1) / T; windows share one token so every token is a target once;
 *     the stream wraps around at the end. Train reads data.path, held-out reads data.eval_path.
 *   - synthetic tasks (mqar, passkey): the sample with index g (train), or g mod
 *     data.eval_samples (held-out), generated from (train.seed, split, g) alone.
 *
 * Disjoint splits for synthetic tasks. Every sample is drawn from its own random key,
 * hyla_rng_key(seed, HYLA_RNG_DATA, split, 0) -> subkey(index) -> subkey(attempt), so the two
 * splits use different keys. Different keys alone could still produce the same sequence by
 * chance, so a sample also belongs to exactly one split by its content: the lowest bit of the
 * xxHash64 of its T+1 tokens must equal the split (0 train, 1 held-out); a candidate whose bit
 * does not match is discarded and the next attempt drawn. A token sequence can therefore never
 * occur in both splits, and each split is an unbiased draw from its half of the sample space. */
#ifndef HYLA_DATA_LOADER_H
#define HYLA_DATA_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "common/rng.h"
#include "common/run_config.h"
#include "worker/task_mqar.h"
#include "worker/task_passkey.h"
#include "worker/token_shard.h"

#define HYLA_IGNORE_INDEX (-100)

struct hyla_data_loader {
    enum hyla_data_task task;
    int split;                 /* HYLA_DATA_TRAIN or HYLA_DATA_EVAL */
    int rank, world;
    int seq_len;               /* T */
    uint64_t seed;             /* train.seed */
    uint64_t cursor;           /* sequences this rank has taken: save and restore it freely */
    uint64_t num_sequences;    /* distinct global sequences before wrapping; 0 = unbounded (synthetic train) */
    struct hyla_token_stream stream;     /* task tokens */
    struct hyla_mqar_task mqar;          /* task mqar */
    struct hyla_passkey_task passkey;    /* task passkey */
};

/* Open the train or held-out split for rank `rank` of `world`. Uses cfg->data, cfg->train.seed,
 * cfg->train.seq_len and cfg->model.vocab_size (every token is checked against it). The
 * held-out split of token data needs data.eval_path, whose shards must not be training shards. */
int hyla_data_loader_open(struct hyla_data_loader *loader, const struct hyla_run_config *cfg, int split, int rank,
                          int world, struct hyla_data_error *err);
void hyla_data_loader_close(struct hyla_data_loader *loader);

/* The batch at a given cursor (does not move the loader's cursor). inputs and targets hold
 * batch * seq_len int32 each. */
int hyla_data_loader_batch_at(const struct hyla_data_loader *loader, uint64_t cursor, int batch, int32_t *inputs,
                              int32_t *targets, struct hyla_data_error *err);
/* The batch at loader->cursor; then cursor += batch. On error the cursor does not move. */
int hyla_data_loader_next(struct hyla_data_loader *loader, int batch, int32_t *inputs, int32_t *targets,
                          struct hyla_data_error *err);

/* Global sequence of row b at cursor c: (c + b) * world + rank (before wrapping). */
uint64_t hyla_data_global_index(const struct hyla_data_loader *loader, uint64_t cursor, int row);

/* The cursor for new_world ranks that continues at the same global position as `cursor` did
 * with old_world ranks; an error when cursor * old_world is not a multiple of new_world. */
int hyla_data_cursor_reshard(uint64_t cursor, int old_world, int new_world, uint64_t *new_cursor,
                             struct hyla_data_error *err);

/* ---- shared by the synthetic tasks ------------------------------------------------------ */

/* Random key of candidate `attempt` of sample `index` of a split (see the header comment). */
uint64_t hyla_data_sample_key(uint64_t seed, int split, uint64_t index, uint32_t attempt);
/* 1 when a sample's tokens belong to `split` (lowest bit of their xxHash64). */
int hyla_data_sample_in_split(const int32_t *tokens, size_t count, int split);
/* Candidates tried before a task reports that its sample space is too small to split. */
#define HYLA_DATA_MAX_ATTEMPTS 64

/* Uniform integer in [0, n) from element `index` of a key's stream (n > 0). */
static inline uint32_t hyla_data_uniform_below(uint64_t key, uint64_t index, uint32_t n) {
    return (uint32_t)(((hyla_rng_u64(key, index) >> 32) * (uint64_t)n) >> 32);
}

/* Accuracy on answer positions (targets != -100): the fraction of them where predicted (the
 * argmax tokens, same layout as targets) equals the target; 0 when there are none. correct and
 * total may be NULL. Serves every task. */
double hyla_answer_accuracy(const int32_t *predicted, const int32_t *targets, size_t count, size_t *correct,
                            size_t *total);

#endif
