/* MQAR: the layout of every sample (distinct keys, disjoint key and value vocabularies,
 * answers equal the paired values, -100 elsewhere), determinism, disjoint splits, the
 * settings checks and the accuracy helper. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "worker/data_loader.h"
#include "worker/task_mqar.h"

enum { T = 64, N = 8, Q = 5, K = 16, V = 12, VOCAB = 2 + K + V, SAMPLES = 300 };

static struct hyla_data_config config(void) {
    struct hyla_data_config d;
    memset(&d, 0, sizeof d);
    d.task = HYLA_DATA_MQAR;
    d.mqar_num_pairs = N, d.mqar_num_queries = Q, d.mqar_key_vocab = K, d.mqar_value_vocab = V;
    return d;
}

/* Every rule of the layout, for one sample; returns 1 when all hold. */
static int layout_ok(const int32_t *in, const int32_t *tg) {
    const int first_value = 2 + K, query = T + 1 - 2 * Q;
    if (in[0] != HYLA_MQAR_PAD) return 0;
    for (int i = 0; i < N; i++) {
        int32_t k = in[1 + 2 * i], v = in[2 + 2 * i];
        if (k < 2 || k >= first_value || v < first_value || v >= first_value + V) return 0; /* disjoint vocabularies */
        for (int j = 0; j < i; j++)
            if (in[1 + 2 * j] == k) return 0; /* keys distinct */
    }
    for (int p = 1 + 2 * N; p < query - 1; p++)
        if (in[p] != HYLA_MQAR_PAD) return 0;
    if (in[query - 1] != HYLA_MQAR_SEP) return 0;
    int answers = 0;
    for (int t = 0; t < T; t++) {
        int is_query_key = t >= query && (t - query) % 2 == 0;
        if (!is_query_key) {
            if (tg[t] != HYLA_IGNORE_INDEX) return 0; /* loss only on answers */
            if (t >= query && in[t] != tg[t - 1]) return 0; /* the answer token follows its key */
            continue;
        }
        int pair = -1;
        for (int i = 0; i < N; i++)
            if (in[1 + 2 * i] == in[t]) pair = i;
        if (pair < 0 || tg[t] != in[2 + 2 * pair]) return 0; /* the answer is the paired value */
        for (int u = query; u < t; u += 2)
            if (in[u] == in[t]) return 0; /* each key asked once */
        answers++;
    }
    return answers == Q;
}

static void test_layout(const struct hyla_mqar_task *task) {
    int32_t in[T], tg[T];
    int ok = 1, hashes_ok = 1;
    struct hyla_data_error err;
    for (int split = 0; split < 2; split++)
        for (uint64_t i = 0; i < SAMPLES; i++) {
            if (hyla_mqar_sample(task, 42, split, i, in, tg, &err)) {
                printf("       message: %s\n", err.message);
                ok = 0;
                break;
            }
            ok = ok && layout_ok(in, tg);
            /* The window is the inputs plus the last answer. */
            int32_t w[T + 1];
            memcpy(w, in, sizeof in);
            w[T] = tg[T - 1];
            hashes_ok = hashes_ok && hyla_data_sample_in_split(w, T + 1, split);
        }
    check_true("mqar: keys distinct, vocabularies disjoint, answers = paired values, -100 elsewhere (600 samples)", ok);
    check_true("mqar: each sample's content hash puts it in its own split", hashes_ok);
}

static void test_determinism_and_splits(const struct hyla_mqar_task *task) {
    int32_t a_in[T], a_tg[T], b_in[T], b_tg[T];
    struct hyla_data_error err;
    hyla_mqar_sample(task, 42, HYLA_DATA_TRAIN, 17, a_in, a_tg, &err);
    hyla_mqar_sample(task, 42, HYLA_DATA_TRAIN, 17, b_in, b_tg, &err);
    check_true("same (seed, split, index) gives the same sample",
               !memcmp(a_in, b_in, sizeof a_in) && !memcmp(a_tg, b_tg, sizeof a_tg));
    hyla_mqar_sample(task, 43, HYLA_DATA_TRAIN, 17, b_in, b_tg, &err);
    check_true("another seed gives another sample", memcmp(a_in, b_in, sizeof a_in) != 0);
    hyla_mqar_sample(task, 42, HYLA_DATA_TRAIN, 18, b_in, b_tg, &err);
    check_true("another index gives another sample", memcmp(a_in, b_in, sizeof a_in) != 0);

    /* No held-out sample equals any training sample. */
    int32_t(*train)[T] = malloc(sizeof(int32_t[SAMPLES][T]));
    int32_t(*train_tg)[T] = malloc(sizeof(int32_t[SAMPLES][T]));
    for (int i = 0; i < SAMPLES; i++) hyla_mqar_sample(task, 42, HYLA_DATA_TRAIN, (uint64_t)i, train[i], train_tg[i], &err);
    int overlap = 0;
    for (int i = 0; i < SAMPLES; i++) {
        hyla_mqar_sample(task, 42, HYLA_DATA_EVAL, (uint64_t)i, b_in, b_tg, &err);
        for (int j = 0; j < SAMPLES; j++)
            overlap += !memcmp(b_in, train[j], sizeof b_in) && !memcmp(b_tg, train_tg[j], sizeof b_tg);
    }
    check_true("train and held-out samples differ (300 x 300 compared)", overlap == 0);
    free(train);
    free(train_tg);
}

static void check_init_error(const char *what, struct hyla_data_config d, int seq_len, int vocab, const char *fragment) {
    struct hyla_mqar_task task;
    struct hyla_data_error err;
    int rc = hyla_mqar_init(&task, &d, seq_len, vocab, &err);
    check_true(what, rc == HYLA_DATA_ECONFIG && strstr(err.message, fragment));
    printf("       message: %s\n", rc ? err.message : "(none)");
}

static void test_settings(void) {
    struct hyla_data_config d = config();
    check_init_error("vocab_size too small for the key and value vocabularies", d, T, VOCAB - 1, "mqar_value_vocab = 30");
    check_init_error("seq_len too short for the pairs and queries", d, 2 * N + 2 * Q, VOCAB, "seq_len >= 2*8 + 2*5 + 1 = 27");
    d.mqar_num_queries = N + 1;
    check_init_error("more queries than pairs", d, T, VOCAB, "between 1 and data.mqar_num_pairs");
    d = config();
    d.mqar_key_vocab = N - 1;
    check_init_error("fewer keys than pairs", d, T, VOCAB, "keys of a sample are distinct");
    struct hyla_mqar_task task;
    d = config();
    check_true("the shortest seq_len works", hyla_mqar_init(&task, &d, 2 * N + 2 * Q + 1, VOCAB, NULL) == 0);
    int32_t in[2 * N + 2 * Q + 1], tg[2 * N + 2 * Q + 1];
    check_true("  and has no padding", hyla_mqar_sample(&task, 1, 0, 0, in, tg, NULL) == 0 && in[2 * N + 1] == HYLA_MQAR_SEP);

    /* A task with one possible sample cannot have two disjoint splits: an error, not a hang. */
    d.mqar_num_pairs = d.mqar_num_queries = d.mqar_key_vocab = d.mqar_value_vocab = 1;
    hyla_mqar_init(&task, &d, 8, 4, NULL);
    struct hyla_data_error err;
    int32_t in8[8], tg8[8];
    int rc0 = hyla_mqar_sample(&task, 1, 0, 0, in8, tg8, &err), rc1 = hyla_mqar_sample(&task, 1, 1, 0, in8, tg8, &err);
    check_true("a one-sample task fails in one split with a clear message",
               (rc0 == 0) != (rc1 == 0) && strstr(err.message, "too few distinct samples"));
    printf("       message: %s\n", err.message);
}

static void test_accuracy(const struct hyla_mqar_task *task) {
    int32_t in[T], tg[T], pred[T];
    hyla_mqar_sample(task, 5, HYLA_DATA_TRAIN, 0, in, tg, NULL);
    for (int t = 0; t < T; t++) pred[t] = tg[t] == HYLA_IGNORE_INDEX ? 999 : tg[t]; /* wrong off-answer: ignored */
    size_t correct = 0, total = 0;
    double acc = hyla_answer_accuracy(pred, tg, T, &correct, &total);
    check_true("accuracy 1 when every answer is right", acc == 1.0 && correct == Q && total == Q);
    for (int t = T - 1; t >= 0; t--)
        if (tg[t] != HYLA_IGNORE_INDEX) {
            pred[t] = tg[t] + 1;
            break;
        }
    acc = hyla_answer_accuracy(pred, tg, T, &correct, &total);
    check_le("accuracy (Q-1)/Q with one answer wrong: |acc - 0.8|", fabs(acc - (double)(Q - 1) / Q), 0);
}

int main(void) {
    struct hyla_data_config d = config();
    struct hyla_mqar_task task;
    struct hyla_data_error err;
    if (hyla_mqar_init(&task, &d, T, VOCAB, &err)) hyla_die("test: %s", err.message);
    test_layout(&task);
    test_determinism_and_splits(&task);
    test_settings();
    test_accuracy(&task);
    return test_finish();
}
