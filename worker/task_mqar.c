#include "worker/task_mqar.h"

#include <stdlib.h>

#include "common/hyla_error.h"
#include "worker/data_loader.h"

int hyla_mqar_init(struct hyla_mqar_task *task, const struct hyla_data_config *data, int seq_len, int vocab_size,
                   struct hyla_data_error *err) {
    int n = data->mqar_num_pairs, q = data->mqar_num_queries, k = data->mqar_key_vocab, v = data->mqar_value_vocab;
    if (n < 1) return hyla_data_fail(err, HYLA_DATA_ECONFIG, "data.mqar_num_pairs is %d; it must be >= 1", n);
    if (q < 1 || q > n)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                              "data.mqar_num_queries is %d; it must be between 1 and data.mqar_num_pairs (%d), "
                              "because each query asks for a different pair",
                              q, n);
    if (k < n)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                              "data.mqar_key_vocab is %d, fewer than data.mqar_num_pairs (%d); the keys of a sample "
                              "are distinct, so raise mqar_key_vocab or lower mqar_num_pairs",
                              k, n);
    if (v < 1) return hyla_data_fail(err, HYLA_DATA_ECONFIG, "data.mqar_value_vocab is %d; it must be >= 1", v);
    long long needed_vocab = (long long)HYLA_MQAR_FIRST_KEY + k + v;
    if (needed_vocab > vocab_size)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                              "mqar needs vocab_size >= 2 + mqar_key_vocab + mqar_value_vocab = %lld (tokens 0 = "
                              "pad, 1 = separator, then keys, then values), but model.vocab_size is %d: raise "
                              "model.vocab_size or lower the key/value vocabularies",
                              needed_vocab, vocab_size);
    long long needed_len = 2LL * n + 2LL * q + 1;
    if (seq_len < needed_len)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                              "mqar with %d pairs and %d queries needs train.seq_len >= 2*%d + 2*%d + 1 = %lld, but "
                              "seq_len is %d",
                              n, q, n, q, needed_len, seq_len);
    *task = (struct hyla_mqar_task){
        .seq_len = seq_len, .num_pairs = n, .num_queries = q, .key_vocab = k, .value_vocab = v};
    return HYLA_DATA_OK;
}

/* Position in the window of the first query key: the queries end at w[T]. */
static int first_query_pos(const struct hyla_mqar_task *task) {
    return task->seq_len + 1 - 2 * task->num_queries;
}

/* One candidate window from a key. scratch holds key_vocab ints. Draw j of the key's stream
 * is used once: keys first, then values, then the query order. */
static void mqar_build(const struct hyla_mqar_task *task, uint64_t key, int32_t *w, int32_t *scratch) {
    const int n = task->num_pairs, q = task->num_queries, first_value = hyla_mqar_first_value(task);
    uint64_t draw = 0;
    /* n distinct keys: the first n entries of a partial Fisher-Yates shuffle of [0, K). */
    for (int i = 0; i < task->key_vocab; i++) scratch[i] = i;
    for (int i = 0; i < n; i++) {
        int j = i + (int)hyla_data_uniform_below(key, draw++, (uint32_t)(task->key_vocab - i));
        int32_t t = scratch[i];
        scratch[i] = scratch[j];
        scratch[j] = t;
    }
    w[0] = HYLA_MQAR_PAD; /* BOS */
    for (int i = 0; i < n; i++) {
        w[1 + 2 * i] = HYLA_MQAR_FIRST_KEY + scratch[i];
        w[2 + 2 * i] = first_value + (int32_t)hyla_data_uniform_below(key, draw++, (uint32_t)task->value_vocab);
    }
    const int query = first_query_pos(task);
    for (int p = 1 + 2 * n; p < query - 1; p++) w[p] = HYLA_MQAR_PAD;
    w[query - 1] = HYLA_MQAR_SEP;
    /* q distinct pairs in random order: partial Fisher-Yates over the pair indices. */
    for (int i = 0; i < n; i++) scratch[i] = i;
    for (int i = 0; i < q; i++) {
        int j = i + (int)hyla_data_uniform_below(key, draw++, (uint32_t)(n - i));
        int32_t t = scratch[i];
        scratch[i] = scratch[j];
        scratch[j] = t;
        w[query + 2 * i] = w[1 + 2 * scratch[i]];
        w[query + 2 * i + 1] = w[2 + 2 * scratch[i]];
    }
}

int hyla_mqar_sample(const struct hyla_mqar_task *task, uint64_t seed, int split, uint64_t index, int32_t *inputs,
                     int32_t *targets, struct hyla_data_error *err) {
    const int T = task->seq_len;
    int32_t *w = hyla_malloc((size_t)(T + 1) * sizeof *w);
    int32_t *scratch = hyla_malloc((size_t)task->key_vocab * sizeof *scratch);
    int found = 0;
    for (uint32_t attempt = 0; attempt < HYLA_DATA_MAX_ATTEMPTS && !found; attempt++) {
        mqar_build(task, hyla_data_sample_key(seed, split, index, attempt), w, scratch);
        found = hyla_data_sample_in_split(w, (size_t)T + 1, split);
    }
    if (found) {
        for (int t = 0; t < T; t++) {
            inputs[t] = w[t];
            targets[t] = HYLA_IGNORE_INDEX;
        }
        /* The answer w[query + 2i + 1] is the target of the input before it, the query key. */
        for (int i = 0; i < task->num_queries; i++) {
            int key_pos = first_query_pos(task) + 2 * i;
            targets[key_pos] = w[key_pos + 1];
        }
    }
    free(w);
    free(scratch);
    if (!found)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                              "mqar sample %llu: %d candidates in a row fell into the other split, so this task has "
                              "too few distinct samples for disjoint train and held-out splits; raise "
                              "data.mqar_key_vocab, data.mqar_value_vocab or data.mqar_num_pairs",
                              (unsigned long long)index, HYLA_DATA_MAX_ATTEMPTS);
    return HYLA_DATA_OK;
}
