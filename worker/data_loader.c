#include "worker/data_loader.h"

#include <string.h>
#include <xxhash.h>

#include "common/hyla_error.h"

/* ---- synthetic samples: keys and the split partition ------------------------------------ */

uint64_t hyla_data_sample_key(uint64_t seed, int split, uint64_t index, uint32_t attempt) {
    uint64_t split_key = hyla_rng_key(seed, HYLA_RNG_DATA, (uint64_t)split, 0);
    return hyla_rng_subkey(hyla_rng_subkey(split_key, index), attempt);
}

int hyla_data_sample_in_split(const int32_t *tokens, size_t count, int split) {
    return (int)(XXH64(tokens, count * sizeof *tokens, 0) & 1) == split;
}

double hyla_answer_accuracy(const int32_t *predicted, const int32_t *targets, size_t count, size_t *correct,
                            size_t *total) {
    size_t right = 0, answers = 0;
    for (size_t i = 0; i < count; i++) {
        if (targets[i] == HYLA_IGNORE_INDEX) continue;
        answers++;
        right += predicted[i] == targets[i];
    }
    if (correct) *correct = right;
    if (total) *total = answers;
    return answers ? (double)right / (double)answers : 0.0;
}

/* ---- opening ---------------------------------------------------------------------------- */

static int open_tokens(struct hyla_data_loader *loader, const struct hyla_run_config *cfg,
                       struct hyla_data_error *err) {
    const struct hyla_data_config *data = &cfg->data;
    const char *path = loader->split == HYLA_DATA_TRAIN ? data->path : data->eval_path;
    if (!path[0])
        return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                              loader->split == HYLA_DATA_TRAIN
                                  ? "data.path is empty; set it to a token shard or a directory of shards "
                                    "(`hyla data pack TEXT... -o DIR` makes them)"
                                  : "data.eval_path is empty, so there is no held-out token data; set it to a shard "
                                    "or directory outside data.path");
    if (data->eval_path[0] && data->path[0]) {
        int rc = hyla_token_paths_disjoint(data->path, data->eval_path, err);
        if (rc) return rc;
    }
    int rc = hyla_token_stream_open(&loader->stream, path, cfg->model.vocab_size, err);
    if (rc) return rc;
    loader->num_sequences = (loader->stream.num_tokens - 1) / (uint64_t)loader->seq_len;
    if (loader->num_sequences == 0) {
        rc = hyla_data_fail(err, HYLA_DATA_ECONFIG,
                            "%s holds %llu tokens, fewer than train.seq_len + 1 = %d needed for one sequence: add "
                            "data or lower seq_len",
                            path, (unsigned long long)loader->stream.num_tokens, loader->seq_len + 1);
        hyla_token_stream_close(&loader->stream);
    }
    return rc;
}

static int open_synthetic(struct hyla_data_loader *loader, const struct hyla_run_config *cfg,
                          struct hyla_data_error *err) {
    const struct hyla_data_config *data = &cfg->data;
    int rc = data->task == HYLA_DATA_MQAR
                 ? hyla_mqar_init(&loader->mqar, data, loader->seq_len, cfg->model.vocab_size, err)
                 : hyla_passkey_init(&loader->passkey, data, loader->seq_len, cfg->model.vocab_size, err);
    if (rc) return rc;
    if (loader->split == HYLA_DATA_TRAIN) {
        loader->num_sequences = 0; /* the sample index space is unbounded */
        return HYLA_DATA_OK;
    }
    if (data->eval_samples <= 0)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                              "data.eval_samples is %d; held-out evaluation of a synthetic task needs > 0 samples",
                              data->eval_samples);
    loader->num_sequences = (uint64_t)data->eval_samples;
    return HYLA_DATA_OK;
}

int hyla_data_loader_open(struct hyla_data_loader *loader, const struct hyla_run_config *cfg, int split, int rank,
                          int world, struct hyla_data_error *err) {
    memset(loader, 0, sizeof *loader);
    if (split != HYLA_DATA_TRAIN && split != HYLA_DATA_EVAL)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG, "unknown data split %d", split);
    if (world < 1 || rank < 0 || rank >= world)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG, "data loader rank %d of %d ranks is not valid", rank, world);
    if (cfg->train.seq_len < 1)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG, "train.seq_len is %d; it must be >= 1", cfg->train.seq_len);
    if (cfg->model.vocab_size < 1)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG, "model.vocab_size is %d; it must be >= 1",
                              cfg->model.vocab_size);
    loader->task = cfg->data.task;
    loader->split = split;
    loader->rank = rank;
    loader->world = world;
    loader->seq_len = cfg->train.seq_len;
    loader->seed = cfg->train.seed;
    switch (cfg->data.task) {
    case HYLA_DATA_TOKENS: return open_tokens(loader, cfg, err);
    case HYLA_DATA_MQAR:
    case HYLA_DATA_PASSKEY: return open_synthetic(loader, cfg, err);
    }
    return hyla_data_fail(err, HYLA_DATA_ECONFIG, "unknown data.task %d", (int)cfg->data.task);
}

void hyla_data_loader_close(struct hyla_data_loader *loader) {
    if (loader->task == HYLA_DATA_TOKENS && loader->stream.shards) hyla_token_stream_close(&loader->stream);
    memset(loader, 0, sizeof *loader);
}

/* ---- batches ---------------------------------------------------------------------------- */

uint64_t hyla_data_global_index(const struct hyla_data_loader *loader, uint64_t cursor, int row) {
    return (cursor + (uint64_t)row) * (uint64_t)loader->world + (uint64_t)loader->rank;
}

/* Window s of the stream: inputs are its first T tokens, targets its last T. */
static void token_row(const struct hyla_data_loader *loader, uint64_t sequence, int32_t *inputs, int32_t *targets) {
    const int T = loader->seq_len;
    uint64_t start = (sequence % loader->num_sequences) * (uint64_t)T;
    hyla_token_stream_read(&loader->stream, start, (size_t)T, inputs);
    memcpy(targets, inputs + 1, (size_t)(T - 1) * sizeof *targets);
    hyla_token_stream_read(&loader->stream, start + (uint64_t)T, 1, targets + T - 1);
}

static int row_at(const struct hyla_data_loader *loader, uint64_t global, int32_t *inputs, int32_t *targets,
                  struct hyla_data_error *err) {
    uint64_t index = loader->num_sequences ? global % loader->num_sequences : global;
    switch (loader->task) {
    case HYLA_DATA_TOKENS: token_row(loader, index, inputs, targets); return HYLA_DATA_OK;
    case HYLA_DATA_MQAR:
        return hyla_mqar_sample(&loader->mqar, loader->seed, loader->split, index, inputs, targets, err);
    case HYLA_DATA_PASSKEY:
        return hyla_passkey_sample(&loader->passkey, loader->seed, loader->split, index, inputs, targets, NULL, err);
    }
    return hyla_data_fail(err, HYLA_DATA_ECONFIG, "unknown data.task %d", (int)loader->task);
}

int hyla_data_loader_batch_at(const struct hyla_data_loader *loader, uint64_t cursor, int batch, int32_t *inputs,
                              int32_t *targets, struct hyla_data_error *err) {
    if (batch < 1) return hyla_data_fail(err, HYLA_DATA_ECONFIG, "batch size %d; it must be >= 1", batch);
    const size_t T = (size_t)loader->seq_len;
    for (int b = 0; b < batch; b++) {
        int rc = row_at(loader, hyla_data_global_index(loader, cursor, b), inputs + b * T, targets + b * T, err);
        if (rc) return rc;
    }
    return HYLA_DATA_OK;
}

int hyla_data_loader_next(struct hyla_data_loader *loader, int batch, int32_t *inputs, int32_t *targets,
                          struct hyla_data_error *err) {
    int rc = hyla_data_loader_batch_at(loader, loader->cursor, batch, inputs, targets, err);
    if (!rc) loader->cursor += (uint64_t)batch;
    return rc;
}

int hyla_data_cursor_reshard(uint64_t cursor, int old_world, int new_world, uint64_t *new_cursor,
                             struct hyla_data_error *err) {
    if (old_world < 1 || new_world < 1)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG, "world sizes must be >= 1 (got %d and %d)", old_world,
                              new_world);
    uint64_t consumed = cursor * (uint64_t)old_world;
    if (consumed % (uint64_t)new_world != 0)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                              "the data position (cursor %llu x %d ranks = %llu sequences) is not a multiple of %d "
                              "ranks, so %d ranks cannot continue the stream exactly; resume with a world size "
                              "that divides %llu",
                              (unsigned long long)cursor, old_world, (unsigned long long)consumed, new_world,
                              new_world, (unsigned long long)consumed);
    *new_cursor = consumed / (uint64_t)new_world;
    return HYLA_DATA_OK;
}
