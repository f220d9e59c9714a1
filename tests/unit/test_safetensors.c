/* safetensors: F32 and BF16 round trips bit-exact, bf16 rounding of hand-picked values, f16
 * widening, metadata, and every corruption rejected with a clear message. */
#include <float.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "worker/safetensors.h"

static char tmp_dir[64];
static char paths[32][128];
static int num_paths;

/* A path in the temporary directory, remembered for the cleanup. */
static const char *tmp_path(const char *name) {
    HYLA_ASSERT(num_paths < 32);
    char *p = paths[num_paths++];
    snprintf(p, sizeof paths[0], "%s/%s", tmp_dir, name);
    return p;
}

static float from_bits(uint32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static int read_file(const char *path, unsigned char **data, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) return -1;
    *size = (size_t)st.st_size;
    *data = hyla_malloc(*size);
    size_t got = fread(*data, 1, *size, f);
    fclose(f);
    return got == *size ? 0 : -1;
}

static int same_files(const char *a, const char *b) {
    unsigned char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = read_file(a, &x, &nx) == 0 && read_file(b, &y, &ny) == 0 && nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return same;
}

static void test_bf16_rounding(void) {
    check_true("bf16(1.0) = 0x3F80", hyla_f32_to_bf16(1.0f) == 0x3F80);
    check_true("bf16(1.00390625) = 0x3F80 (tie, to even: down)", hyla_f32_to_bf16(1.00390625f) == 0x3F80);
    check_true("bf16(1.01171875) = 0x3F82 (tie, to even: up)", hyla_f32_to_bf16(1.01171875f) == 0x3F82);
    check_true("bf16(just above the tie 0x3F808001) = 0x3F81", hyla_f32_to_bf16(from_bits(0x3F808001u)) == 0x3F81);
    check_true("bf16(just below the tie 0x3F807FFF) = 0x3F80", hyla_f32_to_bf16(from_bits(0x3F807FFFu)) == 0x3F80);
    check_true("bf16(-2.0) = 0xC000", hyla_f32_to_bf16(-2.0f) == 0xC000);
    check_true("bf16(-0.0) = 0x8000", hyla_f32_to_bf16(-0.0f) == 0x8000);
    check_true("bf16(inf) = 0x7F80", hyla_f32_to_bf16(from_bits(0x7F800000u)) == 0x7F80);
    check_true("bf16(FLT_MAX) rounds to inf 0x7F80", hyla_f32_to_bf16(FLT_MAX) == 0x7F80);
    check_true("bf16(largest bf16 0x7F7F0000) unchanged", hyla_f32_to_bf16(from_bits(0x7F7F0000u)) == 0x7F7F);
    uint16_t nan = hyla_f32_to_bf16(from_bits(0x7F800001u)); /* NaN with payload only in the low bits */
    check_true("bf16(NaN with a low payload) = 0x7FC0, not inf", nan == 0x7FC0);
    check_true("bf16(-NaN) = 0x7FC0", hyla_f32_to_bf16(from_bits(0xFFC00000u)) == 0x7FC0);
    check_true("bf16(smallest f32 subnormal) = +0", hyla_f32_to_bf16(from_bits(1u)) == 0x0000);
    check_true("bf16 -> f32 widening: 0x3F81 = 1.0078125", hyla_bf16_to_f32(0x3F81) == 1.0078125f);
    check_true("f16 0x3C00 = 1, 0xC000 = -2", hyla_f16_to_f32(0x3C00) == 1.0f && hyla_f16_to_f32(0xC000) == -2.0f);
    check_true("f16 0x0001 = 2^-24 and 0x03FF = 1023 * 2^-24 (subnormals)",
               hyla_f16_to_f32(0x0001) == 0x1p-24f && hyla_f16_to_f32(0x03FF) == 1023 * 0x1p-24f);
    check_true("f16 0x7BFF = 65504, 0x7C00 = inf", hyla_f16_to_f32(0x7BFF) == 65504.0f &&
                                                       hyla_f16_to_f32(0x7C00) == from_bits(0x7F800000u));
}

enum { ROWS = 7, COLS = 5, N = ROWS * COLS };

static void fill_values(float *x) {
    fill_uniform_f32(x, N, -3, 3, 11);
    x[0] = from_bits(0x7FC00001u); /* NaN with a payload */
    x[1] = from_bits(0xFF800000u); /* -inf */
    x[2] = -0.0f;
    x[3] = from_bits(0x00000003u); /* subnormal */
    x[4] = FLT_MAX;
}

static void test_round_trips(void) {
    float w[N], bias[COLS], scalar = 0.5f;
    fill_values(w);
    fill_uniform_f32(bias, COLS, -1, 1, 12);
    const int64_t shape_w[2] = {ROWS, COLS}, shape_b[1] = {COLS}, shape_empty[2] = {0, 4};
    const struct hyla_st_entry entries[] = {
        {.name = "model.layers.3.attn.q_proj.weight", .dtype = HYLA_ST_F32, .ndim = 2, .shape = shape_w, .f32 = w},
        {.name = "model.layers.3.attn.q_proj.weight.bf16", .dtype = HYLA_ST_BF16, .ndim = 2, .shape = shape_w, .f32 = w},
        {.name = "bias", .dtype = HYLA_ST_BF16, .ndim = 1, .shape = shape_b, .f32 = bias},
        {.name = "scalar", .dtype = HYLA_ST_F32, .ndim = 0, .f32 = &scalar},
        {.name = "empty", .dtype = HYLA_ST_F32, .ndim = 2, .shape = shape_empty, .f32 = NULL},
    };
    const struct hyla_st_meta meta[] = {{"format", "pt"}, {"producer", "hyla test"}};
    const char *first = tmp_path("first.safetensors"), *second = tmp_path("second.safetensors");
    struct hyla_st_error err;
    int rc = hyla_st_write(first, entries, 5, meta, 2, &err);
    check_true("write F32 + BF16 + scalar + empty tensor with metadata", rc == 0);
    if (rc) {
        printf("       message: %s\n", err.message);
        return;
    }
    struct hyla_st_file f;
    rc = hyla_st_open(&f, first, &err);
    check_true("the written file opens", rc == 0);
    if (rc) {
        printf("       message: %s\n", err.message);
        return;
    }
    check_true("5 tensors, 2 metadata entries", f.num_tensors == 5 && f.num_meta == 2);
    const char *producer = hyla_st_metadata(&f, "producer");
    check_true("metadata read back", producer && !strcmp(producer, "hyla test") && !hyla_st_metadata(&f, "nope"));
    const struct hyla_st_tensor *tw = hyla_st_find(&f, "model.layers.3.attn.q_proj.weight");
    const struct hyla_st_tensor *tb = hyla_st_find(&f, "model.layers.3.attn.q_proj.weight.bf16");
    const struct hyla_st_tensor *ts = hyla_st_find(&f, "scalar"), *te = hyla_st_find(&f, "empty");
    check_true("names, dtypes, shapes", tw && tb && ts && te && tw->dtype == HYLA_ST_F32 && tb->dtype == HYLA_ST_BF16 &&
                                            tw->ndim == 2 && tw->shape[0] == ROWS && tw->shape[1] == COLS &&
                                            ts->ndim == 0 && ts->num_elements == 1 && te->num_elements == 0 &&
                                            te->nbytes == 0 && tb->nbytes == 2 * N);
    if (!tw || !tb || !ts || !te) return;
    float back[N];
    hyla_st_to_f32(tw, back, &err);
    check_bitwise_equal("F32 round trip bit-exact (NaN payload, -inf, -0, subnormal, FLT_MAX)", back, w, sizeof w);
    uint16_t expected_bf16[N];
    for (int i = 0; i < N; i++) expected_bf16[i] = hyla_f32_to_bf16(w[i]);
    check_bitwise_equal("BF16 raw bytes are the RNE conversions", tb->data, expected_bf16, sizeof expected_bf16);
    hyla_st_to_f32(tb, back, &err);
    int widened = 1;
    for (int i = 0; i < N; i++) widened = widened && hyla_f32_to_bf16(back[i]) == expected_bf16[i];
    check_true("BF16 -> fp32 -> BF16 is the identity", widened);

    /* Write again from what was read: raw bytes (dtype unchanged) must give the same file. */
    struct hyla_st_entry again[5];
    int64_t shapes[5][HYLA_ST_MAX_DIMS];
    for (int i = 0; i < f.num_tensors; i++) {
        const struct hyla_st_tensor *t = hyla_st_find(&f, entries[i].name);
        memcpy(shapes[i], t->shape, sizeof shapes[i]);
        again[i] = (struct hyla_st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .shape = shapes[i],
                                          .raw = t->data};
    }
    rc = hyla_st_write(second, again, 5, meta, 2, &err);
    check_true("read -> write with raw bytes gives a byte-identical file", rc == 0 && same_files(first, second));
    hyla_st_close(&f);
}

/* A hand-made file: header JSON (its length written as given) and `data_bytes` zero bytes. */
static const char *write_raw(const char *name, const char *json, uint64_t stated_len, size_t data_bytes) {
    const char *path = tmp_path(name);
    FILE *out = fopen(path, "wb");
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(stated_len >> (8 * i));
    unsigned char zeros[64] = {0};
    if (!out || fwrite(len, 1, 8, out) != 8 || fwrite(json, 1, strlen(json), out) != strlen(json) ||
        fwrite(zeros, 1, data_bytes, out) != data_bytes || fclose(out) != 0)
        hyla_die("test: cannot write %s", path);
    return path;
}

static void check_rejected(const char *what, const char *path, const char *fragment) {
    struct hyla_st_file f;
    struct hyla_st_error err;
    int rc = hyla_st_open(&f, path, &err);
    check_true(what, rc == HYLA_ST_EFORMAT && strstr(err.message, fragment) && strstr(err.message, path));
    printf("       message: %s\n", rc ? err.message : "(none: the file was accepted)");
    if (!rc) hyla_st_close(&f);
}

static const char *raw(const char *name, const char *json, size_t data_bytes) {
    return write_raw(name, json, strlen(json), data_bytes);
}

static void test_corruptions(void) {
    const char *ok_json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    struct hyla_st_file f;
    struct hyla_st_error err;
    int rc = hyla_st_open(&f, raw("ok.st", ok_json, 8), &err);
    check_true("a minimal hand-made file is accepted", rc == 0);
    if (!rc) hyla_st_close(&f);
    check_true("header padded with spaces is accepted",
               hyla_st_open(&f, raw("padded.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}     ", 4),
                            &err) == 0);
    hyla_st_close(&f);

    const char *short_path = tmp_path("short.st");
    FILE *sf = fopen(short_path, "wb");
    if (!sf || fwrite("abc", 1, 3, sf) != 3 || fclose(sf) != 0) hyla_die("test: cannot write %s", short_path);
    check_rejected("shorter than 8 bytes", short_path, "too small");
    check_rejected("header length zero", write_raw("zero.st", "", 0, 3), "cannot be empty");
    check_rejected("header length beyond the file", write_raw("len.st", ok_json, 1000, 8), "beyond the end of the file");
    check_rejected("header is not JSON", raw("json.st", "{\"a\": [1, 2", 0), "not valid JSON");
    check_rejected("header is not an object", raw("array.st", "[1, 2]", 0), "not a JSON object");
    check_rejected("unknown dtype", raw("dtype.st", "{\"a\":{\"dtype\":\"F42\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                   "unknown dtype \"F42\"");
    check_rejected("offsets beyond the data", raw("range.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4),
                   "out of range");
    check_rejected("shape x dtype size != byte length",
                   raw("size.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8), "hold 8 bytes");
    check_rejected("negative dimension", raw("neg.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8),
                   "not a non-negative integer");
    check_rejected("begin > end", raw("order.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8),
                   "begin > end");
    check_rejected("a gap between tensors",
                   raw("gap.st",
                       "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                       20),
                   "a gap");
    check_rejected("overlapping tensors",
                   raw("overlap.st",
                       "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                       12),
                   "an overlap");
    check_rejected("data not starting at offset 0",
                   raw("start.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12), "a gap");
    check_rejected("trailing bytes after the tensors", raw("trail.st", ok_json, 12), "trailing bytes");
    check_rejected("duplicate tensor names",
                   raw("dup.st",
                       "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                       8),
                   "duplicate");
    check_rejected("metadata value not a string",
                   raw("meta.st", "{\"__metadata__\":{\"n\":3},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                   "not a string");
    check_rejected("missing data_offsets", raw("nooff.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8), "data_offsets");

    rc = hyla_st_open(&f, tmp_path("missing.safetensors"), &err);
    check_true("missing file: I/O error naming it", rc == HYLA_ST_EIO && strstr(err.message, "missing.safetensors"));
    printf("       message: %s\n", err.message);
}

static void test_writer_errors(void) {
    float x[2] = {1, 2};
    const int64_t shape[1] = {2};
    struct hyla_st_entry e[2] = {{.name = "w", .dtype = HYLA_ST_F32, .ndim = 1, .shape = shape, .f32 = x},
                                 {.name = "w", .dtype = HYLA_ST_F32, .ndim = 1, .shape = shape, .f32 = x}};
    struct hyla_st_error err;
    const char *path = tmp_path("bad.safetensors");
    int rc = hyla_st_write(path, e, 2, NULL, 0, &err);
    check_true("writer: duplicate names refused", rc == HYLA_ST_EARG && strstr(err.message, "appears twice"));
    check_true("writer: nothing left behind after an error", access(path, F_OK) != 0);
    e[1].name = "h";
    e[1].dtype = HYLA_ST_F16;
    rc = hyla_st_write(path, e, 2, NULL, 0, &err);
    check_true("writer: fp32 -> F16 refused (F32/BF16 or raw only)", rc == HYLA_ST_EARG && strstr(err.message, "F16"));
    printf("       message: %s\n", err.message);
    int64_t ids[2] = {7, -1};
    e[1] = (struct hyla_st_entry){.name = "ids", .dtype = HYLA_ST_I64, .ndim = 1, .shape = shape, .raw = ids};
    rc = hyla_st_write(path, e, 2, NULL, 0, &err);
    struct hyla_st_file f;
    rc = rc ? rc : hyla_st_open(&f, path, &err);
    check_true("raw I64 tensor written and read", rc == 0);
    if (rc) return;
    const struct hyla_st_tensor *t = hyla_st_find(&f, "ids");
    check_true("  bytes intact", t && t->dtype == HYLA_ST_I64 && !memcmp(t->data, ids, sizeof ids));
    float out[2];
    rc = hyla_st_to_f32(t, out, &err);
    check_true("  but not converted to fp32", rc == HYLA_ST_EARG && strstr(err.message, "I64"));
    printf("       message: %s\n", err.message);
    hyla_st_close(&f);
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/hyla_test_st_XXXXXX");
    if (!mkdtemp(tmp_dir)) hyla_die("test: cannot create a temporary directory");
    test_bf16_rounding();
    test_round_trips();
    test_corruptions();
    test_writer_errors();
    for (int i = 0; i < num_paths; i++) unlink(paths[i]);
    rmdir(tmp_dir);
    return test_finish();
}
