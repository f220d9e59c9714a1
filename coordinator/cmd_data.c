/* `hyla data`: make and inspect token shards.
 *   hyla data pack TEXT... -o DIR [--shard-tokens N]   byte-level shards from text files
 *   hyla data info PATH [--vocab-size N]              what a shard or directory holds */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/commands.h"
#include "worker/token_shard.h"

static void data_usage(FILE *out) {
    fputs("usage: hyla data pack TEXT... -o DIR [--shard-tokens N]\n"
          "         byte-level tokens (token = byte 0..255, BOS = 256 before each file) as uint16 llm.c\n"
          "         shards DIR/shard_000000.bin ... of at most N tokens (default 100000000);\n"
          "         models trained on them need vocab_size >= 257\n"
          "       hyla data info PATH [--vocab-size N]\n"
          "         the shards of a file or directory: format, tokens, largest token id;\n"
          "         with --vocab-size, also check every token against it\n",
          out);
}

/* Parse a positive integer option value; 0 on a malformed one. */
static unsigned long long parse_count(const char *option, const char *text) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (!text[0] || *end || text[0] == '-' || v == 0 || errno == ERANGE) {
        fprintf(stderr, "hyla: error: %s needs a positive integer, not '%s'\n", option, text);
        return 0;
    }
    return v;
}

/* The value after option argv[*i], advancing *i; NULL (with a message) when there is none. */
static const char *option_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "hyla: error: option %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

static int data_pack(int argc, char **argv) {
    const char **inputs = calloc((size_t)argc, sizeof *inputs);
    if (!inputs) {
        fputs("hyla: error: out of memory\n", stderr);
        return 1;
    }
    const char *dir = NULL;
    unsigned long long shard_tokens = HYLA_PACK_SHARD_TOKENS;
    int num_inputs = 0, status = 0;
    for (int i = 1; i < argc && !status; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            dir = option_value(argc, argv, &i);
            if (!dir) status = 2;
        } else if (!strcmp(a, "--shard-tokens")) {
            const char *value = option_value(argc, argv, &i);
            shard_tokens = value ? parse_count(a, value) : 0;
            if (!shard_tokens) status = 2;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            data_usage(stdout);
            free(inputs);
            return 0;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "hyla: error: unknown option '%s' for `hyla data pack`\n", a);
            status = 2;
        } else {
            inputs[num_inputs++] = a;
        }
    }
    if (!status && (!dir || num_inputs == 0)) {
        fputs(!dir ? "hyla: error: `hyla data pack` needs -o DIR\n" : "hyla: error: `hyla data pack` needs input files\n",
              stderr);
        status = 2;
    }
    if (status) {
        data_usage(stderr);
        free(inputs);
        return status;
    }
    struct hyla_pack_result result;
    struct hyla_data_error err;
    int rc = hyla_pack_bytes(inputs, num_inputs, dir, shard_tokens, stdout, &result, &err);
    free(inputs);
    if (rc) {
        fprintf(stderr, "hyla: error: %s\n", err.message);
        return 1;
    }
    printf("packed %d document(s) into %d shard(s) in %s: %llu tokens (token = byte, BOS = %d before each "
           "document); train with model.vocab_size >= %d\n",
           result.num_documents, result.num_shards, dir, (unsigned long long)result.num_tokens, HYLA_BYTE_BOS,
           HYLA_BYTE_VOCAB);
    return 0;
}

static int data_info(int argc, char **argv) {
    const char *path = NULL;
    unsigned long long vocab_size = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--vocab-size")) {
            const char *value = option_value(argc, argv, &i);
            vocab_size = value ? parse_count("--vocab-size", value) : 0;
            if (vocab_size > INT32_MAX) fprintf(stderr, "hyla: error: --vocab-size %s is too large\n", value);
            if (!vocab_size || vocab_size > INT32_MAX) {
                data_usage(stderr);
                return 2;
            }
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            data_usage(stdout);
            return 0;
        } else if (argv[i][0] != '-' && !path) {
            path = argv[i];
        } else {
            fprintf(stderr, "hyla: error: unexpected argument '%s' for `hyla data info`\n", argv[i]);
            data_usage(stderr);
            return 2;
        }
    }
    if (!path) {
        fputs("hyla: error: `hyla data info` needs a shard file or directory\n", stderr);
        data_usage(stderr);
        return 2;
    }
    struct hyla_token_stream stream;
    struct hyla_data_error err;
    if (hyla_token_stream_open(&stream, path, (int)vocab_size, &err)) {
        fprintf(stderr, "hyla: error: %s\n", err.message);
        return 1;
    }
    uint32_t max_token = 0;
    for (int i = 0; i < stream.num_shards; i++) {
        const struct hyla_token_shard *s = &stream.shards[i];
        uint32_t m = hyla_token_shard_max_token(s);
        max_token = m > max_token ? m : max_token;
        printf("%s: %llu tokens, %s (magic %d), largest token %u\n", s->path, (unsigned long long)s->num_tokens,
               s->width == 2 ? "uint16" : "uint32", s->width == 2 ? HYLA_SHARD_MAGIC_U16 : HYLA_SHARD_MAGIC_U32, m);
    }
    printf("%d shard(s), %llu tokens; models need vocab_size >= %llu%s\n", stream.num_shards,
           (unsigned long long)stream.num_tokens, (unsigned long long)max_token + 1,
           vocab_size ? "; every token is < --vocab-size" : "");
    hyla_token_stream_close(&stream);
    return 0;
}

int cmd_data(int argc, char **argv) {
    if (argc < 2) {
        data_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "pack")) return data_pack(argc - 1, argv + 1);
    if (!strcmp(argv[1], "info")) return data_info(argc - 1, argv + 1);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        data_usage(stdout);
        return 0;
    }
    fprintf(stderr, "hyla: error: unknown `hyla data` command '%s'\n", argv[1]);
    data_usage(stderr);
    return 2;
}
