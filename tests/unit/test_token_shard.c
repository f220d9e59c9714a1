/* Token shards: uint16 and uint32 round trips, every rejection with its message, directory
 * streams across shard boundaries, and `hyla data pack` -> read. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "worker/token_shard.h"

static char tmp_dir[64];

static void path_in(char *out, size_t size, const char *name) { snprintf(out, size, "%s/%s", tmp_dir, name); }

/* Remove a directory tree one or two levels deep (what these tests create). */

/* An error with the expected code whose message contains every fragment. */
static void check_error(const char *what, int rc, const struct hyla_data_error *err, int code,
                        const char *const *fragments) {
    int ok = rc == code && err->code == code;
    for (int i = 0; ok && fragments[i]; i++) ok = strstr(err->message, fragments[i]) != NULL;
    check_true(what, ok);
    printf("       message: %s\n", rc ? err->message : "(none: the call succeeded)");
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) hyla_die("test: cannot write %s", path);
}

/* A raw shard: header (magic, version, count) then `bytes` bytes of token data. */
static void write_raw_shard(const char *path, int32_t magic, int32_t version, int32_t count, const void *data,
                            size_t bytes) {
    int32_t header[256] = {magic, version, count};
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(header, sizeof header, 1, f) != 1 || (bytes && fwrite(data, 1, bytes, f) != bytes) ||
        fclose(f) != 0)
        hyla_die("test: cannot write %s", path);
}

static void test_round_trip(int width) {
    enum { N = 5000 };
    uint32_t *tokens = hyla_malloc(N * sizeof *tokens);
    uint64_t key = hyla_rng_key(7, HYLA_RNG_TEST, (uint64_t)width, 0);
    uint32_t limit = width == 2 ? 65536 : 4000000000u;
    for (int i = 0; i < N; i++) tokens[i] = (uint32_t)(hyla_rng_u64(key, (uint64_t)i) % limit);
    tokens[0] = limit - 1; /* the largest value of the width */
    tokens[1] = 0;
    char path[128];
    path_in(path, sizeof path, width == 2 ? "u16.bin" : "u32.bin");
    struct hyla_data_error err;
    int rc = hyla_token_shard_write(path, tokens, N, width, &err);
    check_true(width == 2 ? "uint16 shard written" : "uint32 shard written", rc == 0);
    struct stat st;
    check_true("file size = 1024 + count * width", stat(path, &st) == 0 && st.st_size == 1024 + (off_t)N * width);
    struct hyla_token_shard s;
    rc = hyla_token_shard_open(&s, path, 0, &err);
    check_true("written shard opens", rc == 0);
    if (rc) {
        printf("       message: %s\n", err.message);
        free(tokens);
        return;
    }
    int32_t header[3];
    memcpy(header, s.map, sizeof header);
    check_true("header magic/version as llm.c writes them",
               width == 2 ? header[0] == 20240520 && header[1] == 1 : header[0] == 20240801 && header[1] == 7);
    int same = s.width == width && s.num_tokens == N;
    for (int i = 0; same && i < N; i++) same = hyla_token_shard_get(&s, (uint64_t)i) == tokens[i];
    check_true(width == 2 ? "uint16 tokens read back exactly" : "uint32 tokens read back exactly", same);
    check_true("max token", hyla_token_shard_max_token(&s) == limit - 1);
    hyla_token_shard_close(&s);
    free(tokens);
}

static void test_rejections(void) {
    char path[128];
    struct hyla_data_error err;
    struct hyla_token_shard s;
    uint16_t data[10] = {1, 2, 3, 4, 5, 300, 7, 8, 9, 10};

    path_in(path, sizeof path, "missing.bin");
    check_error("missing file", hyla_token_shard_open(&s, path, 0, &err), &err, HYLA_DATA_EIO,
                (const char *const[]){"cannot open token shard", "missing.bin", "hyla data pack", NULL});

    path_in(path, sizeof path, "tiny.bin");
    write_bytes(path, "0123456789", 10);
    check_error("file smaller than the header", hyla_token_shard_open(&s, path, 0, &err), &err, HYLA_DATA_EFORMAT,
                (const char *const[]){"tiny.bin", "10 bytes", "1024-byte header", NULL});

    path_in(path, sizeof path, "magic.bin");
    write_raw_shard(path, 12345, 1, 10, data, sizeof data);
    check_error("bad magic", hyla_token_shard_open(&s, path, 0, &err), &err, HYLA_DATA_EFORMAT,
                (const char *const[]){"magic.bin", "magic 12345", "20240520", "20240801", NULL});

    path_in(path, sizeof path, "version.bin");
    write_raw_shard(path, 20240520, 3, 10, data, sizeof data);
    check_error("unknown version", hyla_token_shard_open(&s, path, 0, &err), &err, HYLA_DATA_EFORMAT,
                (const char *const[]){"version.bin", "version 3", "version 1", NULL});

    path_in(path, sizeof path, "empty.bin");
    write_raw_shard(path, 20240520, 1, 0, NULL, 0);
    check_error("zero tokens", hyla_token_shard_open(&s, path, 0, &err), &err, HYLA_DATA_EFORMAT,
                (const char *const[]){"empty.bin", "holds 0 tokens", NULL});

    path_in(path, sizeof path, "truncated.bin");
    write_raw_shard(path, 20240520, 1, 10, data, sizeof data - 3);
    check_error("truncated file", hyla_token_shard_open(&s, path, 0, &err), &err, HYLA_DATA_EFORMAT,
                (const char *const[]){"truncated.bin", "1041 bytes", "10 uint16 tokens", "truncated (3 bytes)", NULL});

    path_in(path, sizeof path, "trailing.bin");
    uint16_t longer[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    write_raw_shard(path, 20240520, 1, 10, longer, sizeof longer);
    check_error("trailing bytes", hyla_token_shard_open(&s, path, 0, &err), &err, HYLA_DATA_EFORMAT,
                (const char *const[]){"trailing.bin", "trailing bytes (4 bytes)", NULL});

    path_in(path, sizeof path, "range.bin");
    write_raw_shard(path, 20240520, 1, 10, data, sizeof data);
    check_error("token >= vocab_size", hyla_token_shard_open(&s, path, 257, &err), &err, HYLA_DATA_ERANGE,
                (const char *const[]){"range.bin", "token 5 ", "is 300", "vocab_size is 257", NULL});
    check_true("the same shard passes with vocab_size 301", hyla_token_shard_open(&s, path, 301, &err) == 0);
    hyla_token_shard_close(&s);

    uint32_t wide = 70000;
    path_in(path, sizeof path, "wide.bin");
    check_error("writer: token too large for uint16", hyla_token_shard_write(path, &wide, 1, 2, &err), &err,
                HYLA_DATA_ERANGE, (const char *const[]){"70000", "uint16", NULL});
    check_true("writer leaves no file after an error", access(path, F_OK) != 0);
}

static void test_directory_stream(void) {
    char dir[128], path[160];
    path_in(dir, sizeof dir, "stream");
    mkdir(dir, 0777);
    struct hyla_data_error err;
    struct hyla_token_stream s;
    check_error("directory without shards", hyla_token_stream_open(&s, dir, 0, &err), &err, HYLA_DATA_EIO,
                (const char *const[]){"holds no *.bin", NULL});
    /* Written out of order, one uint16 and one uint32: the stream is sorted by name. */
    uint32_t b[4] = {20, 21, 22, 23}, a[3] = {10, 11, 12};
    snprintf(path, sizeof path, "%s/part_b.bin", dir);
    hyla_token_shard_write(path, b, 4, 4, &err);
    snprintf(path, sizeof path, "%s/part_a.bin", dir);
    hyla_token_shard_write(path, a, 3, 2, &err);
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    write_bytes(path, "not a shard", 11);
    snprintf(path, sizeof path, "%s/.hidden.bin", dir);
    write_bytes(path, "not a shard", 11);
    int rc = hyla_token_stream_open(&s, dir, 100, &err);
    check_true("directory stream opens (other files ignored)", rc == 0);
    if (rc) {
        printf("       message: %s\n", err.message);
        return;
    }
    int32_t out[7];
    hyla_token_stream_read(&s, 0, 7, out);
    const int32_t expected[7] = {10, 11, 12, 20, 21, 22, 23};
    check_true("shards concatenated in name order", s.num_shards == 2 && s.num_tokens == 7 &&
                                                         !memcmp(out, expected, sizeof out));
    hyla_token_stream_read(&s, 2, 3, out);
    check_true("a read across the shard boundary", out[0] == 12 && out[1] == 20 && out[2] == 21);
    hyla_token_stream_close(&s);

    char eval[160];
    snprintf(eval, sizeof eval, "%s/part_a.bin", dir);
    check_error("held-out shard inside the training directory", hyla_token_paths_disjoint(dir, eval, &err), &err,
                HYLA_DATA_ECONFIG, (const char *const[]){"part_a.bin", "also training data", NULL});
    path_in(eval, sizeof eval, "u16.bin");
    check_true("a held-out shard elsewhere is disjoint", hyla_token_paths_disjoint(dir, eval, &err) == 0);
}

static void test_pack(void) {
    char doc1[128], doc2[128], doc3[128], out[128];
    path_in(doc1, sizeof doc1, "doc1.txt");
    path_in(doc2, sizeof doc2, "doc2.txt");
    path_in(doc3, sizeof doc3, "doc3.txt");
    path_in(out, sizeof out, "packed/sub");
    const char *text1 = "hello, w\xc3\xb6rld\n", *text2 = "a";
    write_bytes(doc1, text1, strlen(text1));
    write_bytes(doc2, text2, strlen(text2));
    write_bytes(doc3, "", 0); /* an empty document is just its BOS */
    const char *inputs[3] = {doc1, doc2, doc3};
    struct hyla_pack_result res;
    struct hyla_data_error err;
    int rc = hyla_pack_bytes(inputs, 3, out, 5, NULL, &res, &err); /* 5 tokens per shard: several shards */
    size_t n1 = strlen(text1), total = n1 + 1 + 2 + 1;
    check_true("pack succeeds (creating parent directories)", rc == 0);
    if (rc) {
        printf("       message: %s\n", err.message);
        return;
    }
    check_true("pack result counts", res.num_documents == 3 && res.num_tokens == total &&
                                         res.num_shards == (int)((total + 4) / 5));
    int32_t expected[64];
    size_t k = 0;
    expected[k++] = HYLA_BYTE_BOS;
    for (size_t i = 0; i < n1; i++) expected[k++] = (unsigned char)text1[i];
    expected[k++] = HYLA_BYTE_BOS;
    expected[k++] = 'a';
    expected[k++] = HYLA_BYTE_BOS;
    struct hyla_token_stream s;
    rc = hyla_token_stream_open(&s, out, HYLA_BYTE_VOCAB, &err);
    check_true("packed shards open with vocab_size 257", rc == 0);
    if (rc) return;
    int32_t got[64];
    hyla_token_stream_read(&s, 0, (size_t)s.num_tokens, got);
    check_true("pack -> read gives BOS + bytes per document",
               s.num_tokens == total && !memcmp(got, expected, total * sizeof *got));
    check_true("packed shards are uint16", s.shards[0].width == 2);
    check_true("shard names", strstr(s.shards[0].path, "shard_000000.bin") && strstr(s.shards[1].path, "shard_000001.bin"));
    hyla_token_stream_close(&s);
    check_error("vocab_size 256 rejects the BOS token", hyla_token_stream_open(&s, out, 256, &err), &err,
                HYLA_DATA_ERANGE, (const char *const[]){"is 256", "vocab_size is 256", NULL});

    check_error("pack refuses a directory that already holds shards", hyla_pack_bytes(inputs, 3, out, 5, NULL, &res, &err),
                &err, HYLA_DATA_ECONFIG, (const char *const[]){"already holds", NULL});
    char fresh[128], missing[128];
    path_in(fresh, sizeof fresh, "packed2");
    path_in(missing, sizeof missing, "no_such_input.txt");
    const char *bad_inputs[2] = {doc1, missing};
    check_error("pack: unreadable input", hyla_pack_bytes(bad_inputs, 2, fresh, 5, NULL, &res, &err), &err,
                HYLA_DATA_EIO, (const char *const[]){"no_such_input.txt", NULL});
    char **left = NULL;
    int n_left = -1;
    check_true("a failed pack leaves no shards behind (inputs are checked before anything is written)",
               hyla_token_paths(fresh, &left, &n_left, &err) != 0 && access(fresh, F_OK) != 0);
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/hyla_test_shard_XXXXXX");
    if (!mkdtemp(tmp_dir)) hyla_die("test: cannot create a temporary directory");
    test_round_trip(2);
    test_round_trip(4);
    test_rejections();
    test_directory_stream();
    test_pack();
    remove_tree(tmp_dir); /* tests/harness.h */
    return test_finish();
}
