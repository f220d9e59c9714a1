#include "worker/task_passkey.h"

#include <stdlib.h>

#include "common/hyla_error.h"
#include "worker/data_loader.h"

int hyla_passkey_init(struct hyla_passkey_task *task, const struct hyla_data_config *data, int seq_len,
                      int vocab_size, struct hyla_data_error *err) {
    int d = data->passkey_digits;
    double depth = data->passkey_depth;
    if (d < 1 || d > HYLA_PASSKEY_MAX_DIGITS)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG, "data.passkey_digits is %d; it must be between 1 and %d", d,
                              HYLA_PASSKEY_MAX_DIGITS);
    if (depth != -1.0 && !(depth >= 0.0 && depth <= 1.0))
        return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                              "data.passkey_depth is %g; use a fraction of the filler in [0, 1] (0 = right after "
                              "BOS, 1 = just before the query) or -1 for a random depth per sample",
                              depth);
    if (vocab_size < HYLA_PASSKEY_VOCAB)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                              "passkey needs vocab_size >= %d (BOS, two markers, 10 digits, %d filler tokens), but "
                              "model.vocab_size is %d",
                              HYLA_PASSKEY_VOCAB, HYLA_PASSKEY_FILLER_VOCAB, vocab_size);
    if (seq_len < 2 * d + 2)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                              "passkey with %d digits needs train.seq_len >= 2*%d + 2 = %d, but seq_len is %d", d, d,
                              2 * d + 2, seq_len);
    *task = (struct hyla_passkey_task){
        .seq_len = seq_len, .digits = d, .depth = depth, .filler_len = seq_len - 2 * d - 2};
    return HYLA_DATA_OK;
}

/* One candidate window from a key; fills info. Draws: digits, filler pattern, then depth. */
static void passkey_build(const struct hyla_passkey_task *task, uint64_t key, int32_t *w,
                          struct hyla_passkey_info *info) {
    const int d = task->digits, f = task->filler_len;
    uint64_t draw = 0;
    for (int i = 0; i < d; i++) info->digits[i] = (int)hyla_data_uniform_below(key, draw++, 10);
    int32_t pattern[HYLA_PASSKEY_PATTERN_LEN];
    for (int i = 0; i < HYLA_PASSKEY_PATTERN_LEN; i++)
        pattern[i] = HYLA_PASSKEY_FIRST_FILLER + (int32_t)hyla_data_uniform_below(key, draw++, HYLA_PASSKEY_FILLER_VOCAB);
    if (task->depth < 0)
        info->before = (int)hyla_data_uniform_below(key, draw++, (uint32_t)f + 1);
    else
        info->before = (int)(task->depth * f + 0.5); /* round half up; depth * f >= 0 */
    info->marker_pos = 1 + info->before;
    info->query_pos = task->seq_len - d;
    info->depth = f > 0 ? (double)info->before / f : 0.0;

    int pos = 0, filler = 0;
    w[pos++] = HYLA_PASSKEY_BOS;
    /* The pattern runs on across the needle, so the needle is the only break in it. */
    while (filler < info->before) w[pos++] = pattern[filler++ % HYLA_PASSKEY_PATTERN_LEN];
    w[pos++] = HYLA_PASSKEY_MARKER;
    for (int i = 0; i < d; i++) w[pos++] = HYLA_PASSKEY_DIGIT0 + info->digits[i];
    while (filler < f) w[pos++] = pattern[filler++ % HYLA_PASSKEY_PATTERN_LEN];
    w[pos++] = HYLA_PASSKEY_QUERY;
    for (int i = 0; i < d; i++) w[pos++] = HYLA_PASSKEY_DIGIT0 + info->digits[i];
    HYLA_ASSERT(pos == task->seq_len + 1);
}

int hyla_passkey_sample(const struct hyla_passkey_task *task, uint64_t seed, int split, uint64_t index,
                        int32_t *inputs, int32_t *targets, struct hyla_passkey_info *info,
                        struct hyla_data_error *err) {
    const int T = task->seq_len;
    int32_t *w = hyla_malloc((size_t)(T + 1) * sizeof *w);
    struct hyla_passkey_info local;
    int found = 0;
    for (uint32_t attempt = 0; attempt < HYLA_DATA_MAX_ATTEMPTS && !found; attempt++) {
        passkey_build(task, hyla_data_sample_key(seed, split, index, attempt), w, &local);
        found = hyla_data_sample_in_split(w, (size_t)T + 1, split);
    }
    if (found) {
        for (int t = 0; t < T; t++) {
            inputs[t] = w[t];
            targets[t] = HYLA_IGNORE_INDEX;
        }
        /* QUERY predicts the first digit, each digit the next. */
        for (int t = local.query_pos; t < T; t++) targets[t] = w[t + 1];
        if (info) *info = local;
    }
    free(w);
    if (!found)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                              "passkey sample %llu: %d candidates in a row fell into the other split, so this task "
                              "has too few distinct samples for disjoint train and held-out splits; raise "
                              "data.passkey_digits or train.seq_len",
                              (unsigned long long)index, HYLA_DATA_MAX_ATTEMPTS);
    return HYLA_DATA_OK;
}
