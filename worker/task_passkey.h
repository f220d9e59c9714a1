/* Passkey retrieval (needle in a haystack): a number hidden in filler, asked for at the end.
 *
 * Token ids (all < model.vocab_size, checked by hyla_passkey_init; vocab_size >= 77):
 *   0                    BOS
 *   1                    MARKER: the passkey follows ("the pass key is")
 *   2                    QUERY: the model must now produce the passkey ("what is the pass key?")
 *   3..12                the digits 0..9
 *   [13, 13+64)          filler tokens
 *
 * A sample is a window w[0..T] of T+1 tokens (inputs = w[0..T), targets = w[1..T]):
 *   BOS f f ... f MARKER d1 .. dD f ... f QUERY d1 .. dD
 * D = data.passkey_digits random digits (leading zeros allowed). The F = T - 2D - 2 filler
 * tokens repeat a random pattern of 16 filler tokens drawn per sample (like an essay repeated
 * as haystack); the needle MARKER d1..dD is inserted after `before` filler tokens:
 *   before = round(depth * F) for depth = data.passkey_depth in [0, 1],
 *   before uniform in [0, F] when depth = -1 (per sample).
 * The only targets are the D digits after QUERY (the input QUERY predicts d1, d1 predicts d2,
 * ...); every other target is -100. Needs T >= 2D + 2. Example, passkey "74" (tokens 10 7),
 * D = 2, T = 11, depth 0.5, so F = 5 and before = round(2.5) = 3 (halves round up), with the
 * filler pattern starting 13 14 15 16 17:
 *   window  0 13 14 15 1 10 7 16 17 2 10 7
 *   targets -100 everywhere except t = 9 (input QUERY, target 10) and t = 10 (input 10, target 7)
 * Randomness and the train/held-out split: see data_loader.h. */
#ifndef HYLA_TASK_PASSKEY_H
#define HYLA_TASK_PASSKEY_H

#include <stdint.h>

#include "common/run_config.h"
#include "worker/token_shard.h"

#define HYLA_PASSKEY_BOS 0
#define HYLA_PASSKEY_MARKER 1
#define HYLA_PASSKEY_QUERY 2
#define HYLA_PASSKEY_DIGIT0 3
#define HYLA_PASSKEY_FIRST_FILLER 13
#define HYLA_PASSKEY_FILLER_VOCAB 64
#define HYLA_PASSKEY_PATTERN_LEN 16
#define HYLA_PASSKEY_VOCAB (HYLA_PASSKEY_FIRST_FILLER + HYLA_PASSKEY_FILLER_VOCAB)
#define HYLA_PASSKEY_MAX_DIGITS 32

struct hyla_passkey_task {
    int seq_len;        /* T */
    int digits;         /* D */
    double depth;       /* [0, 1], or -1 = random per sample */
    int filler_len;     /* F = T - 2D - 2 */
};

/* Where the needle of one sample went (for accuracy by depth). */
struct hyla_passkey_info {
    int before;         /* filler tokens before the needle, in [0, F] */
    int marker_pos;     /* window position of MARKER: 1 + before */
    int query_pos;      /* window position of QUERY: T - D */
    double depth;       /* before / F (0 when F = 0) */
    int digits[HYLA_PASSKEY_MAX_DIGITS];
};

/* Check data.passkey_* against seq_len and vocab_size and fill task. */
int hyla_passkey_init(struct hyla_passkey_task *task, const struct hyla_data_config *data, int seq_len,
                      int vocab_size, struct hyla_data_error *err);

/* Sample `index` of `split`: inputs[T], targets[T]; info may be NULL. Same rules as
 * hyla_mqar_sample. */
int hyla_passkey_sample(const struct hyla_passkey_task *task, uint64_t seed, int split, uint64_t index,
                        int32_t *inputs, int32_t *targets, struct hyla_passkey_info *info,
                        struct hyla_data_error *err);

#endif
