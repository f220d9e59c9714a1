/* The data loader: windows and shifted targets, rank slicing covers what one rank covers,
 * cursor save/restore and resharding reproduce the stream, wrap-around, held-out splits. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "worker/data_loader.h"

enum { T = 16, NUM_TOKENS = 1000, VOCAB = 1000, B = 2 };
static char tmp_dir[64];


/* Token i of the training stream is i (unique windows); split over two shards. */
static void make_token_data(char *train_dir, char *eval_file, size_t size) {
    snprintf(train_dir, size, "%s/train", tmp_dir);
    snprintf(eval_file, size, "%s/eval.bin", tmp_dir);
    mkdir(train_dir, 0777);
    uint32_t tokens[NUM_TOKENS];
    for (uint32_t i = 0; i < NUM_TOKENS; i++) tokens[i] = i;
    char path[160];
    struct hyla_data_error err;
    snprintf(path, sizeof path, "%s/a.bin", train_dir);
    if (hyla_token_shard_write(path, tokens, 333, 2, &err)) hyla_die("test: %s", err.message);
    snprintf(path, sizeof path, "%s/b.bin", train_dir);
    if (hyla_token_shard_write(path, tokens + 333, NUM_TOKENS - 333, 4, &err)) hyla_die("test: %s", err.message);
    uint32_t eval_tokens[100];
    for (uint32_t i = 0; i < 100; i++) eval_tokens[i] = 999 - i;
    if (hyla_token_shard_write(eval_file, eval_tokens, 100, 2, &err)) hyla_die("test: %s", err.message);
}

static struct hyla_run_config token_config(const char *train, const char *eval) {
    struct hyla_run_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.data.task = HYLA_DATA_TOKENS;
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s", train);
    snprintf(cfg.data.eval_path, sizeof cfg.data.eval_path, "%s", eval);
    cfg.train.seq_len = T;
    cfg.train.seed = 1;
    cfg.model.vocab_size = VOCAB;
    return cfg;
}

static void open_or_die(struct hyla_data_loader *l, const struct hyla_run_config *cfg, int split, int rank, int world) {
    struct hyla_data_error err;
    if (hyla_data_loader_open(l, cfg, split, rank, world, &err)) hyla_die("test: %s", err.message);
}

static void test_windows(const struct hyla_run_config *cfg) {
    struct hyla_data_loader l;
    open_or_die(&l, cfg, HYLA_DATA_TRAIN, 0, 1);
    check_true("windows in the stream: (1000 - 1) / 16 = 62", l.num_sequences == 62);
    int32_t in[B * T], tg[B * T];
    int ok = 1;
    for (int step = 0; step < 40; step++) { /* 80 sequences: wraps once */
        uint64_t first = l.cursor;
        ok = ok && hyla_data_loader_next(&l, B, in, tg, NULL) == 0;
        for (int b = 0; b < B; b++) {
            uint64_t s = (first + (uint64_t)b) % 62;
            for (int t = 0; t < T; t++)
                ok = ok && in[b * T + t] == (int32_t)(s * T + (uint64_t)t) && tg[b * T + t] == in[b * T + t] + 1;
        }
    }
    check_true("sequence s = tokens [16s, 16s+17): inputs and targets shifted by one; wraps after 62", ok);
    check_true("the window crossing the uint16/uint32 shard boundary reads through", l.stream.num_shards == 2);
    hyla_data_loader_close(&l);
}

/* R ranks with batch B take exactly the rows one rank takes with batch B*R, at every step. */
static void test_rank_slicing(const struct hyla_run_config *cfg, const char *what) {
    enum { R = 3, STEPS = 30 };
    struct hyla_data_loader one, ranks[R];
    open_or_die(&one, cfg, HYLA_DATA_TRAIN, 0, 1);
    for (int r = 0; r < R; r++) open_or_die(&ranks[r], cfg, HYLA_DATA_TRAIN, r, R);
    int32_t in1[B * R * T], tg1[B * R * T], in[B * T], tg[B * T];
    int ok = 1;
    for (int step = 0; step < STEPS; step++) {
        ok = ok && hyla_data_loader_next(&one, B * R, in1, tg1, NULL) == 0;
        for (int r = 0; r < R; r++) {
            ok = ok && hyla_data_loader_next(&ranks[r], B, in, tg, NULL) == 0;
            for (int b = 0; b < B; b++) { /* rank r's row b is global row b*R + r of the step */
                int row = b * R + r;
                ok = ok && !memcmp(in + b * T, in1 + row * T, T * sizeof *in) &&
                     !memcmp(tg + b * T, tg1 + row * T, T * sizeof *tg);
            }
        }
    }
    check_true(what, ok);
    hyla_data_loader_close(&one);
    for (int r = 0; r < R; r++) hyla_data_loader_close(&ranks[r]);
}

static void test_cursor(const struct hyla_run_config *cfg, const char *what) {
    struct hyla_data_loader l;
    open_or_die(&l, cfg, HYLA_DATA_TRAIN, 1, 2);
    int32_t in[B * T], tg[B * T], first_in[2][B * T], first_tg[2][B * T];
    for (int i = 0; i < 3; i++) hyla_data_loader_next(&l, B, in, tg, NULL);
    uint64_t saved = l.cursor;
    for (int i = 0; i < 2; i++) hyla_data_loader_next(&l, B, first_in[i], first_tg[i], NULL);
    hyla_data_loader_close(&l);
    open_or_die(&l, cfg, HYLA_DATA_TRAIN, 1, 2); /* a new process after a restart */
    l.cursor = saved;
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        hyla_data_loader_next(&l, B, in, tg, NULL);
        ok = ok && !memcmp(in, first_in[i], sizeof in) && !memcmp(tg, first_tg[i], sizeof tg);
    }
    check_true(what, ok && saved == 3 * B);
    hyla_data_loader_close(&l);
}

static void test_reshard(const struct hyla_run_config *cfg) {
    /* 4 ranks took 6 steps of B rows; continue on 2 ranks. */
    uint64_t cursor4 = 6 * B, cursor2 = 0;
    struct hyla_data_error err;
    check_true("reshard cursor 12 from 4 ranks to 2: 24",
               hyla_data_cursor_reshard(cursor4, 4, 2, &cursor2, &err) == 0 && cursor2 == 24);
    struct hyla_data_loader one, r0, r1;
    open_or_die(&one, cfg, HYLA_DATA_TRAIN, 0, 1);
    open_or_die(&r0, cfg, HYLA_DATA_TRAIN, 0, 2);
    open_or_die(&r1, cfg, HYLA_DATA_TRAIN, 1, 2);
    one.cursor = cursor4 * 4, r0.cursor = r1.cursor = cursor2;
    int32_t in1[2 * B * T], tg1[2 * B * T], a[B * T], at[B * T], b[B * T], bt[B * T];
    hyla_data_loader_next(&one, 2 * B, in1, tg1, NULL);
    hyla_data_loader_next(&r0, B, a, at, NULL);
    hyla_data_loader_next(&r1, B, b, bt, NULL);
    check_true("after resharding, 2 ranks continue where 4 ranks stopped",
               !memcmp(a, in1, T * sizeof *a) && !memcmp(b, in1 + T, T * sizeof *b) &&
                   !memcmp(a + T, in1 + 2 * T, T * sizeof *a) && !memcmp(b + T, in1 + 3 * T, T * sizeof *b));
    int rc = hyla_data_cursor_reshard(5, 3, 2, &cursor2, &err);
    check_true("reshard to a world size that does not divide the position is an error",
               rc == HYLA_DATA_ECONFIG && strstr(err.message, "not a multiple of 2"));
    printf("       message: %s\n", err.message);
    hyla_data_loader_close(&one);
    hyla_data_loader_close(&r0);
    hyla_data_loader_close(&r1);
}

static void test_token_eval(const char *train, const char *eval) {
    struct hyla_run_config cfg = token_config(train, eval);
    struct hyla_data_loader l;
    open_or_die(&l, &cfg, HYLA_DATA_EVAL, 0, 1);
    int32_t in[T], tg[T];
    hyla_data_loader_next(&l, 1, in, tg, NULL);
    check_true("held-out tokens come from data.eval_path", in[0] == 999 && tg[0] == 998 && l.num_sequences == 6);
    hyla_data_loader_close(&l);

    struct hyla_data_error err;
    char inside[160];
    snprintf(inside, sizeof inside, "%s/b.bin", train);
    cfg = token_config(train, inside);
    int rc = hyla_data_loader_open(&l, &cfg, HYLA_DATA_EVAL, 0, 1, &err);
    check_true("eval_path inside data.path is refused", rc == HYLA_DATA_ECONFIG && strstr(err.message, "also training data"));
    printf("       message: %s\n", err.message);
    rc = hyla_data_loader_open(&l, &cfg, HYLA_DATA_TRAIN, 0, 1, &err);
    check_true("  for the training split too", rc == HYLA_DATA_ECONFIG);
    cfg = token_config(train, "");
    rc = hyla_data_loader_open(&l, &cfg, HYLA_DATA_EVAL, 0, 1, &err);
    check_true("no eval_path: a clear error for the held-out split", rc == HYLA_DATA_ECONFIG && strstr(err.message, "data.eval_path is empty"));
    cfg = token_config(train, "");
    cfg.model.vocab_size = 500;
    rc = hyla_data_loader_open(&l, &cfg, HYLA_DATA_TRAIN, 0, 1, &err);
    check_true("tokens >= model.vocab_size are refused at open", rc == HYLA_DATA_ERANGE && strstr(err.message, "is 500"));
    printf("       message: %s\n", err.message);
    cfg = token_config(train, "");
    cfg.train.seq_len = NUM_TOKENS;
    rc = hyla_data_loader_open(&l, &cfg, HYLA_DATA_TRAIN, 0, 1, &err);
    check_true("fewer tokens than one window is an error", rc == HYLA_DATA_ECONFIG && strstr(err.message, "fewer than"));
    printf("       message: %s\n", err.message);
}

static struct hyla_run_config mqar_config(void) {
    struct hyla_run_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.data.task = HYLA_DATA_MQAR;
    cfg.data.mqar_num_pairs = 3, cfg.data.mqar_num_queries = 3, cfg.data.mqar_key_vocab = 32;
    cfg.data.mqar_value_vocab = 32, cfg.data.eval_samples = 10;
    cfg.train.seq_len = T, cfg.train.seed = 5;
    cfg.model.vocab_size = 66;
    return cfg;
}

static void test_synthetic(void) {
    struct hyla_run_config cfg = mqar_config();
    test_rank_slicing(&cfg, "mqar: 3 ranks x batch 2 take the samples 1 rank x batch 6 takes");
    test_cursor(&cfg, "mqar: cursor save/restore reproduces the samples");
    struct hyla_data_loader train, eval;
    open_or_die(&train, &cfg, HYLA_DATA_TRAIN, 0, 1);
    open_or_die(&eval, &cfg, HYLA_DATA_EVAL, 0, 1);
    int32_t in[T], tg[T], ein[T], etg[T], direct[T], dtg[T];
    hyla_data_loader_batch_at(&train, 7, 1, in, tg, NULL);
    hyla_mqar_sample(&train.mqar, 5, HYLA_DATA_TRAIN, 7, direct, dtg, NULL);
    check_true("synthetic sample index = cursor (one rank)", !memcmp(in, direct, sizeof in) && !memcmp(tg, dtg, sizeof tg));
    hyla_data_loader_batch_at(&eval, 7, 1, ein, etg, NULL);
    check_true("held-out sample differs from the training sample of the same index", memcmp(in, ein, sizeof in) != 0);
    hyla_data_loader_batch_at(&eval, 17, 1, in, tg, NULL);
    check_true("held-out samples wrap after data.eval_samples", !memcmp(in, ein, sizeof in) && eval.num_sequences == 10);
    hyla_data_loader_close(&train);
    hyla_data_loader_close(&eval);

    cfg.data.eval_samples = 0;
    struct hyla_data_error err;
    check_true("held-out synthetic split needs eval_samples > 0",
               hyla_data_loader_open(&eval, &cfg, HYLA_DATA_EVAL, 0, 1, &err) == HYLA_DATA_ECONFIG);
    cfg = mqar_config();
    cfg.data.task = HYLA_DATA_PASSKEY;
    cfg.data.passkey_digits = 3, cfg.data.passkey_depth = -1;
    cfg.model.vocab_size = 100;
    test_rank_slicing(&cfg, "passkey: 3 ranks x batch 2 take the samples 1 rank x batch 6 takes");
    check_true("rank out of range is an error", hyla_data_loader_open(&train, &cfg, HYLA_DATA_TRAIN, 2, 2, &err) != 0);
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/hyla_test_loader_XXXXXX");
    if (!mkdtemp(tmp_dir)) hyla_die("test: cannot create a temporary directory");
    char train[128], eval[128];
    make_token_data(train, eval, sizeof train);
    struct hyla_run_config cfg = token_config(train, eval);
    test_windows(&cfg);
    test_rank_slicing(&cfg, "tokens: 3 ranks x batch 2 take the windows 1 rank x batch 6 takes (with wrap-around)");
    test_cursor(&cfg, "tokens: cursor save/restore reproduces the stream");
    test_reshard(&cfg);
    test_token_eval(train, eval);
    test_synthetic();
    remove_tree(tmp_dir); /* tests/harness.h */
    return test_finish();
}
