/* Passkey: the needle sits at the requested depth, its digits are the answer and the only
 * targets, the filler repeats its pattern, random depth covers the range, determinism,
 * disjoint splits, settings checks. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "worker/data_loader.h"
#include "worker/task_passkey.h"

enum { T = 64, D = 5, F = T - 2 * D - 2, VOCAB = 100 };

static struct hyla_passkey_task make_task(double depth) {
    struct hyla_data_config d;
    memset(&d, 0, sizeof d);
    d.task = HYLA_DATA_PASSKEY;
    d.passkey_digits = D;
    d.passkey_depth = depth;
    struct hyla_passkey_task task;
    struct hyla_data_error err;
    if (hyla_passkey_init(&task, &d, T, VOCAB, &err)) hyla_die("test: %s", err.message);
    return task;
}

/* Layout of one sample with the needle after `before` filler tokens; 1 when all rules hold. */
static int layout_ok(const int32_t *in, const int32_t *tg, const struct hyla_passkey_info *info, int before) {
    const int marker = 1 + before, query = T - D;
    if (info->before != before || info->marker_pos != marker || info->query_pos != query) return 0;
    if (in[0] != HYLA_PASSKEY_BOS || in[marker] != HYLA_PASSKEY_MARKER || in[query] != HYLA_PASSKEY_QUERY) return 0;
    for (int i = 0; i < D; i++) {
        int digit = HYLA_PASSKEY_DIGIT0 + info->digits[i];
        if (info->digits[i] < 0 || info->digits[i] > 9) return 0;
        if (in[marker + 1 + i] != digit) return 0; /* the needle holds the digits */
        if (tg[query + i] != digit) return 0;      /* ... and they are the answer */
    }
    for (int t = 0; t < query; t++)
        if (tg[t] != HYLA_IGNORE_INDEX) return 0; /* loss only on the digits */
    /* The filler: in range, and one pattern repeated across the needle. */
    int32_t filler[T];
    int n = 0;
    for (int t = 1; t < query; t++)
        if (t < marker || t > marker + D) filler[n++] = in[t];
    if (n != F) return 0;
    for (int i = 0; i < n; i++) {
        if (filler[i] < HYLA_PASSKEY_FIRST_FILLER || filler[i] >= HYLA_PASSKEY_VOCAB) return 0;
        if (i >= HYLA_PASSKEY_PATTERN_LEN && filler[i] != filler[i - HYLA_PASSKEY_PATTERN_LEN]) return 0;
    }
    return 1;
}

static void test_fixed_depths(void) {
    const double depths[5] = {0.0, 0.25, 0.5, 0.9, 1.0};
    const int expected_before[5] = {0, 13, 26, 47, 52}; /* round(depth * 52) */
    int32_t in[T], tg[T];
    for (int k = 0; k < 5; k++) {
        struct hyla_passkey_task task = make_task(depths[k]);
        int before = expected_before[k], ok = 1;
        for (uint64_t i = 0; ok && i < 50; i++) {
            struct hyla_passkey_info info;
            ok = hyla_passkey_sample(&task, 3, (int)(i % 2), i, in, tg, &info, NULL) == 0 &&
                 layout_ok(in, tg, &info, before);
        }
        char what[128];
        snprintf(what, sizeof what, "depth %.2f: needle after %d of %d filler tokens, digits are the answer (50 samples)",
                 depths[k], before, F);
        check_true(what, ok);
    }
}

static void test_random_depth(void) {
    struct hyla_passkey_task task = make_task(-1);
    int32_t in[T], tg[T];
    int ok = 1, lo = F, hi = 0;
    for (uint64_t i = 0; ok && i < 400; i++) {
        struct hyla_passkey_info info;
        ok = hyla_passkey_sample(&task, 3, HYLA_DATA_TRAIN, i, in, tg, &info, NULL) == 0 && info.before >= 0 &&
             info.before <= F && layout_ok(in, tg, &info, info.before) && info.depth == (double)info.before / F;
        lo = info.before < lo ? info.before : lo;
        hi = info.before > hi ? info.before : hi;
    }
    check_true("depth -1: valid layouts at depths drawn per sample", ok);
    check_true("depth -1: depths span the filler", lo <= 2 && hi >= F - 2);
}

static void test_determinism_and_splits(void) {
    struct hyla_passkey_task task = make_task(-1);
    int32_t a[T], at[T], b[T], bt[T];
    hyla_passkey_sample(&task, 9, HYLA_DATA_EVAL, 5, a, at, NULL, NULL);
    hyla_passkey_sample(&task, 9, HYLA_DATA_EVAL, 5, b, bt, NULL, NULL);
    check_true("same (seed, split, index) gives the same sample", !memcmp(a, b, sizeof a) && !memcmp(at, bt, sizeof at));
    enum { S = 200 };
    int32_t(*train)[T] = malloc(sizeof(int32_t[S][T]));
    for (int i = 0; i < S; i++) hyla_passkey_sample(&task, 9, HYLA_DATA_TRAIN, (uint64_t)i, train[i], bt, NULL, NULL);
    int overlap = 0, same_index_differs = 1;
    for (int i = 0; i < S; i++) {
        hyla_passkey_sample(&task, 9, HYLA_DATA_EVAL, (uint64_t)i, a, at, NULL, NULL);
        same_index_differs = same_index_differs && memcmp(a, train[i], sizeof a) != 0;
        for (int j = 0; j < S; j++) overlap += !memcmp(a, train[j], sizeof a);
    }
    check_true("train and held-out samples with the same index differ", same_index_differs);
    check_true("no held-out sample equals a training sample (200 x 200)", overlap == 0);
    free(train);
}

static void check_init_error(const char *what, int digits, double depth, int seq_len, int vocab, const char *fragment) {
    struct hyla_data_config d;
    memset(&d, 0, sizeof d);
    d.passkey_digits = digits;
    d.passkey_depth = depth;
    struct hyla_passkey_task task;
    struct hyla_data_error err;
    int rc = hyla_passkey_init(&task, &d, seq_len, vocab, &err);
    check_true(what, rc == HYLA_DATA_ECONFIG && strstr(err.message, fragment));
    printf("       message: %s\n", rc ? err.message : "(none)");
}

static void test_settings(void) {
    check_init_error("vocab_size below 77", D, 0.5, T, 76, "vocab_size >= 77");
    check_init_error("depth outside [0, 1]", D, 1.5, T, VOCAB, "passkey_depth is 1.5");
    check_init_error("seq_len too short", D, 0.5, 2 * D + 1, VOCAB, "seq_len >= 2*5 + 2 = 12");
    check_init_error("no digits", 0, 0.5, T, VOCAB, "passkey_digits is 0");
    /* The shortest window has no filler: the needle right after BOS. */
    struct hyla_data_config d;
    memset(&d, 0, sizeof d);
    d.passkey_digits = D;
    d.passkey_depth = 0.7;
    struct hyla_passkey_task task;
    int32_t in[2 * D + 2], tg[2 * D + 2];
    struct hyla_passkey_info info;
    int ok = hyla_passkey_init(&task, &d, 2 * D + 2, VOCAB, NULL) == 0 &&
             hyla_passkey_sample(&task, 1, 0, 0, in, tg, &info, NULL) == 0;
    check_true("seq_len 2D+2: no filler, needle at 1, query at D+2",
               ok && in[1] == HYLA_PASSKEY_MARKER && in[D + 2] == HYLA_PASSKEY_QUERY && info.before == 0);
}

static void test_accuracy(void) {
    struct hyla_passkey_task task = make_task(0.5);
    int32_t in[T], tg[T], pred[T];
    hyla_passkey_sample(&task, 1, 0, 0, in, tg, NULL, NULL);
    memcpy(pred, in, sizeof pred); /* predicting the current token: wrong everywhere ... */
    for (int i = 0; i < 3; i++) pred[T - D + i] = tg[T - D + i]; /* ... except three digits */
    size_t correct, total;
    double acc = hyla_answer_accuracy(pred, tg, T, &correct, &total);
    check_true("accuracy counts digit positions only", total == D && correct >= 3 && acc == (double)correct / D);
}

int main(void) {
    test_fixed_depths();
    test_random_depth();
    test_determinism_and_splits();
    test_settings();
    test_accuracy();
    return test_finish();
}
