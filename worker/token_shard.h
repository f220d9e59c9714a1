/* Token shards in llm.c's format, the byte-level packer, and the error type of the data layer.
 *
 * A shard is a header of 256 little-endian int32 followed by the tokens:
 *   header[0] = magic, header[1] = version, header[2] = number of tokens, the rest zero;
 *   magic 20240520 (version 1): uint16 tokens (llm.c's "gpt-2" files);
 *   magic 20240801 (version 7): uint32 tokens (llm.c's "llama-3" files).
 * A directory of shards (its *.bin files, sorted by name) is one token stream.
 * Data-layer functions return 0 or an error code and fill a hyla_data_error, so that the
 * caller decides whether to exit; messages name the file, the problem and the fix. */
#ifndef HYLA_TOKEN_SHARD_H
#define HYLA_TOKEN_SHARD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "common/run_config.h"

/* ---- errors of the data layer (shards, loader, synthetic tasks) ---------------------- */

enum hyla_data_status {
    HYLA_DATA_OK = 0,
    HYLA_DATA_EIO = 1,     /* a file cannot be opened, read or written */
    HYLA_DATA_EFORMAT = 2, /* a file's content is not what it should be */
    HYLA_DATA_ERANGE = 3,  /* a token does not fit the model's vocabulary (or the format) */
    HYLA_DATA_ECONFIG = 4, /* settings that cannot work (sizes, paths, task parameters) */
};

struct hyla_data_error {
    int code;           /* enum hyla_data_status */
    char message[1024]; /* one sentence or two: file, problem, fix */
};

/* Fill err (may be NULL) and return code. printf-style. */
int hyla_data_fail(struct hyla_data_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The two splits; part of the random key of synthetic samples (see data_loader.h). */
enum hyla_data_split { HYLA_DATA_TRAIN = 0, HYLA_DATA_EVAL = 1 };

/* ---- the shard format ----------------------------------------------------------------- */

#define HYLA_SHARD_HEADER_INTS 256
#define HYLA_SHARD_HEADER_BYTES (HYLA_SHARD_HEADER_INTS * 4)
#define HYLA_SHARD_MAGIC_U16 20240520
#define HYLA_SHARD_VERSION_U16 1
#define HYLA_SHARD_MAGIC_U32 20240801
#define HYLA_SHARD_VERSION_U32 7
#define HYLA_SHARD_MAX_TOKENS 2147483647ULL /* header[2] is an int32 */

/* One shard, mapped read-only. Tokens are read straight from the mapping. */
struct hyla_token_shard {
    char path[HYLA_PATH_MAX];
    int width;           /* bytes per token: 2 or 4 */
    uint64_t num_tokens;
    const void *tokens;  /* num_tokens tokens of `width` bytes, after the header */
    void *map;
    size_t map_bytes;
    dev_t device;        /* identity of the file, to detect train/eval overlap */
    ino_t inode;
};

/* Open and validate one shard: readable, header (magic, version, count > 0), file size equal
 * to header + count * width. With vocab_size > 0 every token is also checked to be
 * < vocab_size, in one sequential pass over the mapping (the page cache then serves the
 * training reads, so the data is read from disk once). vocab_size <= 0 skips that pass. */
int hyla_token_shard_open(struct hyla_token_shard *shard, const char *path, int vocab_size,
                          struct hyla_data_error *err);
void hyla_token_shard_close(struct hyla_token_shard *shard);

/* Largest token id in the shard (one pass). */
uint32_t hyla_token_shard_max_token(const struct hyla_token_shard *shard);

static inline uint32_t hyla_token_shard_get(const struct hyla_token_shard *shard, uint64_t i) {
    if (shard->width == 2) return ((const uint16_t *)shard->tokens)[i];
    return ((const uint32_t *)shard->tokens)[i];
}

/* ---- a stream of shards --------------------------------------------------------------- */

/* A shard file, or a directory whose *.bin files (sorted by name, hidden files skipped)
 * are concatenated into one stream. */
struct hyla_token_stream {
    struct hyla_token_shard *shards;
    int num_shards;
    uint64_t *starts;    /* starts[i] = stream position of shard i's first token; [num_shards] = total */
    uint64_t num_tokens;
};

int hyla_token_stream_open(struct hyla_token_stream *stream, const char *path, int vocab_size,
                           struct hyla_data_error *err);
void hyla_token_stream_close(struct hyla_token_stream *stream);

/* Copy tokens [pos, pos + count) of the stream (across shard boundaries) into out.
 * pos + count <= num_tokens. Tokens are < the vocab_size the stream was checked against. */
void hyla_token_stream_read(const struct hyla_token_stream *stream, uint64_t pos, size_t count,
                            int32_t *out);

/* The shard files of a path (a file, or a directory's *.bin files sorted by name). On
 * success *paths is an array of *count malloc'ed strings; free with hyla_token_paths_free. */
int hyla_token_paths(const char *path, char ***paths, int *count, struct hyla_data_error *err);
void hyla_token_paths_free(char **paths, int count);

/* Error (HYLA_DATA_ECONFIG) when a shard file of eval_path is also a shard of train_path
 * (same file, compared by device and inode, so links and other spellings are caught). */
int hyla_token_paths_disjoint(const char *train_path, const char *eval_path,
                              struct hyla_data_error *err);

/* ---- writing shards ------------------------------------------------------------------- */

/* Streams tokens into path + ".tmp"; close writes the header, syncs and renames, so an
 * interrupted write never leaves a file that looks like a finished shard. */
struct hyla_token_writer {
    FILE *file;
    char path[HYLA_PATH_MAX];
    char tmp_path[HYLA_PATH_MAX + 8];
    int width;
    uint64_t num_tokens;
};

/* width 2 (magic 20240520, uint16) or 4 (magic 20240801, uint32). */
int hyla_token_writer_open(struct hyla_token_writer *writer, const char *path, int width,
                           struct hyla_data_error *err);
/* Tokens must fit the width (< 65536 for width 2). */
int hyla_token_writer_append(struct hyla_token_writer *writer, const uint32_t *tokens, size_t count,
                             struct hyla_data_error *err);
/* Finish the shard (needs at least one token). On error the temporary file is removed. */
int hyla_token_writer_close(struct hyla_token_writer *writer, struct hyla_data_error *err);
/* Give up: close and remove the temporary file. */
void hyla_token_writer_abort(struct hyla_token_writer *writer);

/* One call: write tokens[0..count) as a shard. */
int hyla_token_shard_write(const char *path, const uint32_t *tokens, size_t count, int width,
                           struct hyla_data_error *err);

/* ---- the byte-level tokenizer (`hyla data pack`) -------------------------------------- */

/* Token = byte value 0..255; each input file is one document, preceded by BOS = 256.
 * A model needs vocab_size >= 257 for these shards. */
#define HYLA_BYTE_BOS 256
#define HYLA_BYTE_VOCAB 257
#define HYLA_PACK_SHARD_TOKENS 100000000ULL

struct hyla_pack_result {
    int num_documents;
    int num_shards;
    uint64_t num_tokens;
};

/* Tokenize inputs[0..num_inputs) into uint16 shards dir/shard_000000.bin, ... of at most
 * shard_tokens tokens (documents may continue into the next shard: the stream is one
 * concatenation). Creates dir (and its parents); refuses a dir that already holds *.bin
 * files, which would otherwise mix into the stream. With log != NULL, prints each shard. */
int hyla_pack_bytes(const char *const *inputs, int num_inputs, const char *dir, uint64_t shard_tokens,
                    FILE *log, struct hyla_pack_result *result, struct hyla_data_error *err);

#endif
