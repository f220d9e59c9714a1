/* Multi-query associative recall (MQAR): N key-value pairs, a long gap, then queries.
 *
 * Token ids (all < model.vocab_size, checked by hyla_mqar_init):
 *   0                    BOS, also the pad/filler token
 *   1                    SEP: the query part starts
 *   [2, 2+K)             keys   (K = data.mqar_key_vocab)
 *   [2+K, 2+K+V)         values (V = data.mqar_value_vocab), disjoint from the keys
 * so vocab_size >= 2 + K + V.
 *
 * A sample is a window w[0..T] of T+1 tokens (inputs = w[0..T), targets = w[1..T]):
 *   BOS k1 v1 ... kN vN PAD ... PAD SEP q1 a1 ... qQ aQ
 * with N = data.mqar_num_pairs distinct keys, values drawn independently (they may repeat),
 * Q = data.mqar_num_queries <= N queries: distinct keys of the pairs in shuffled order, each
 * followed by its value. The queries end at the last token, so the pad run between the pairs
 * and SEP fills the rest and the recall distance grows with T: beyond a sliding window the
 * model must carry the pairs in its recurrent state or its kept tokens. The only targets are
 * the answers (the input at a query key has its value as target); every other target is -100.
 * Needs T >= 2N + 2Q + 1. Example, N = Q = 2, K = V = 4, T = 11:
 *   window  0 3 7 5 6 0 0 1 5 6 3 7
 *   inputs  0 3 7 5 6 0 0 1 5 6 3
 *   targets - - - - - - - - 6 - 7      (- = -100)
 * Randomness and the train/held-out split: see data_loader.h. */
#ifndef HYLA_TASK_MQAR_H
#define HYLA_TASK_MQAR_H

#include <stdint.h>

#include "common/run_config.h"
#include "worker/token_shard.h"

#define HYLA_MQAR_PAD 0
#define HYLA_MQAR_SEP 1
#define HYLA_MQAR_FIRST_KEY 2

struct hyla_mqar_task {
    int seq_len;      /* T */
    int num_pairs;    /* N */
    int num_queries;  /* Q */
    int key_vocab;    /* K */
    int value_vocab;  /* V */
};

static inline int hyla_mqar_first_value(const struct hyla_mqar_task *task) {
    return HYLA_MQAR_FIRST_KEY + task->key_vocab;
}

/* Check the data.mqar_* settings against seq_len and vocab_size and fill task. */
int hyla_mqar_init(struct hyla_mqar_task *task, const struct hyla_data_config *data, int seq_len, int vocab_size,
                   struct hyla_data_error *err);

/* Sample `index` of `split` (HYLA_DATA_TRAIN / HYLA_DATA_EVAL): inputs[T], targets[T]. The same
 * (seed, split, index) always gives the same sample. Fails (HYLA_DATA_ECONFIG) only when the
 * task has so few distinct samples that one split stays empty. */
int hyla_mqar_sample(const struct hyla_mqar_task *task, uint64_t seed, int split, uint64_t index, int32_t *inputs,
                     int32_t *targets, struct hyla_data_error *err);

#endif
