#include "worker/token_shard.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/hyla_error.h"

/* The header and the tokens are read in the host's byte order; llm.c writes little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token shards are little-endian; hyla's shard reader supports little-endian hosts only"
#endif

#define PACK_HINT "create shards with `hyla data pack TEXT... -o DIR` or llm.c's dev/data scripts"

int hyla_data_fail(struct hyla_data_error *err, int code, const char *fmt, ...) {
    if (!err) return code;
    va_list args;
    va_start(args, fmt);
    hyla_vmessage(err->message, sizeof err->message, fmt, args);
    va_end(args);
    err->code = code;
    return code;
}

static int copy_path(char *dst, size_t size, const char *src, struct hyla_data_error *err) {
    int n = snprintf(dst, size, "%s", src);
    if (n < 0 || (size_t)n >= size)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG, "path is longer than %zu characters: %.100s...",
                              size - 1, src);
    return HYLA_DATA_OK;
}

/* ---- reading one shard ------------------------------------------------------------------ */

static int map_file(struct hyla_token_shard *shard, struct hyla_data_error *err) {
    int fd = open(shard->path, O_RDONLY);
    if (fd < 0)
        return hyla_data_fail(err, HYLA_DATA_EIO,
                              "cannot open token shard %s: %s; check data.path / data.eval_path, or " PACK_HINT,
                              shard->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int saved = errno;
        close(fd); /* read-only descriptor: nothing to lose on a failed close */
        return hyla_data_fail(err, HYLA_DATA_EIO, "cannot stat token shard %s: %s", shard->path, strerror(saved));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return hyla_data_fail(err, HYLA_DATA_EIO, "token shard %s is not a regular file", shard->path);
    }
    shard->device = st.st_dev;
    shard->inode = st.st_ino;
    if (st.st_size < HYLA_SHARD_HEADER_BYTES) {
        close(fd);
        return hyla_data_fail(err, HYLA_DATA_EFORMAT,
                              "token shard %s is %lld bytes, smaller than the %d-byte header (256 int32) of "
                              "llm.c token shards: the file is truncated or not a token shard; " PACK_HINT,
                              shard->path, (long long)st.st_size, HYLA_SHARD_HEADER_BYTES);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int saved = errno;
    if (close(fd) != 0 && map != MAP_FAILED) saved = errno;
    if (map == MAP_FAILED)
        return hyla_data_fail(err, HYLA_DATA_EIO, "cannot map token shard %s (%lld bytes): %s", shard->path,
                              (long long)st.st_size, strerror(saved));
    shard->map = map;
    shard->map_bytes = (size_t)st.st_size;
    return HYLA_DATA_OK;
}

static int check_header(struct hyla_token_shard *shard, struct hyla_data_error *err) {
    int32_t header[3];
    memcpy(header, shard->map, sizeof header);
    if (header[0] == HYLA_SHARD_MAGIC_U16) {
        shard->width = 2;
    } else if (header[0] == HYLA_SHARD_MAGIC_U32) {
        shard->width = 4;
    } else {
        return hyla_data_fail(err, HYLA_DATA_EFORMAT,
                              "token shard %s has magic %d; valid magics are %d (uint16 tokens, llm.c gpt-2 "
                              "format) and %d (uint32 tokens, llm.c llama-3 format): this is not an llm.c token "
                              "shard; " PACK_HINT,
                              shard->path, header[0], HYLA_SHARD_MAGIC_U16, HYLA_SHARD_MAGIC_U32);
    }
    int expected_version = shard->width == 2 ? HYLA_SHARD_VERSION_U16 : HYLA_SHARD_VERSION_U32;
    if (header[1] != expected_version)
        return hyla_data_fail(err, HYLA_DATA_EFORMAT,
                              "token shard %s (magic %d) has version %d; this reader knows version %d only: "
                              "regenerate the shard with llm.c's current dev/data scripts or `hyla data pack`",
                              shard->path, header[0], header[1], expected_version);
    if (header[2] <= 0)
        return hyla_data_fail(err, HYLA_DATA_EFORMAT,
                              "token shard %s holds %d tokens (header[2]); a shard needs at least one token: "
                              "remove the file or regenerate it",
                              shard->path, header[2]);
    shard->num_tokens = (uint64_t)header[2];
    uint64_t expected = HYLA_SHARD_HEADER_BYTES + shard->num_tokens * (uint64_t)shard->width;
    uint64_t actual = shard->map_bytes;
    if (actual != expected) {
        int truncated = actual < expected;
        return hyla_data_fail(err, HYLA_DATA_EFORMAT,
                              "token shard %s is %llu bytes but its header promises %llu %s tokens: %d + %llu x %d "
                              "= %llu bytes; the file %s (%llu bytes): regenerate it (or copy it again)",
                              shard->path, (unsigned long long)actual, (unsigned long long)shard->num_tokens,
                              shard->width == 2 ? "uint16" : "uint32", HYLA_SHARD_HEADER_BYTES,
                              (unsigned long long)shard->num_tokens, shard->width, (unsigned long long)expected,
                              truncated ? "is truncated" : "has trailing bytes",
                              (unsigned long long)(truncated ? expected - actual : actual - expected));
    }
    shard->tokens = (const unsigned char *)shard->map + HYLA_SHARD_HEADER_BYTES;
    return HYLA_DATA_OK;
}

/* Maximum over [begin, end): a plain loop per width, which the compiler vectorises. */
static uint32_t max_token_in(const struct hyla_token_shard *shard, uint64_t begin, uint64_t end) {
    uint32_t m = 0;
    if (shard->width == 2) {
        const uint16_t *t = shard->tokens;
        for (uint64_t i = begin; i < end; i++) m = t[i] > m ? t[i] : m;
    } else {
        const uint32_t *t = shard->tokens;
        for (uint64_t i = begin; i < end; i++) m = t[i] > m ? t[i] : m;
    }
    return m;
}

uint32_t hyla_token_shard_max_token(const struct hyla_token_shard *shard) {
    return max_token_in(shard, 0, shard->num_tokens);
}

static int check_token_range(const struct hyla_token_shard *shard, int vocab_size, struct hyla_data_error *err) {
    if (shard->width == 2 && vocab_size > 65535) return HYLA_DATA_OK; /* every uint16 fits */
    const uint64_t block = 1 << 16;
    for (uint64_t begin = 0; begin < shard->num_tokens; begin += block) {
        uint64_t end = begin + block < shard->num_tokens ? begin + block : shard->num_tokens;
        if (max_token_in(shard, begin, end) < (uint32_t)vocab_size) continue;
        for (uint64_t i = begin; i < end; i++) { /* the slow search only once something is wrong */
            uint32_t token = hyla_token_shard_get(shard, i);
            if (token >= (uint32_t)vocab_size)
                return hyla_data_fail(err, HYLA_DATA_ERANGE,
                                      "token shard %s: token %llu (0-based, after the header) is %u, but the "
                                      "model's vocab_size is %d (tokens must be < vocab_size): tokenize with "
                                      "the model's tokenizer or raise model.vocab_size",
                                      shard->path, (unsigned long long)i, token, vocab_size);
        }
    }
    return HYLA_DATA_OK;
}

int hyla_token_shard_open(struct hyla_token_shard *shard, const char *path, int vocab_size,
                          struct hyla_data_error *err) {
    memset(shard, 0, sizeof *shard);
    int rc = copy_path(shard->path, sizeof shard->path, path, err);
    if (!rc) rc = map_file(shard, err);
    if (!rc) rc = check_header(shard, err);
    if (!rc && vocab_size > 0) rc = check_token_range(shard, vocab_size, err);
    if (rc) hyla_token_shard_close(shard);
    return rc;
}

void hyla_token_shard_close(struct hyla_token_shard *shard) {
    /* munmap of a mapping we made cannot fail for a valid range; nothing to report. */
    if (shard->map) munmap(shard->map, shard->map_bytes);
    memset(shard, 0, sizeof *shard);
}

/* ---- listing the shards of a path ------------------------------------------------------- */

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

void hyla_token_paths_free(char **paths, int count) {
    for (int i = 0; i < count; i++) free(paths[i]);
    free(paths);
}

static int push_path(char ***paths, int *count, int *capacity, const char *dir, const char *name,
                     struct hyla_data_error *err) {
    if (*count == *capacity) {
        int grown = *capacity ? 2 * *capacity : 16;
        char **p = realloc(*paths, (size_t)grown * sizeof *p);
        if (!p) return hyla_data_fail(err, HYLA_DATA_EIO, "out of memory listing the shards of %s", dir);
        *paths = p;
        *capacity = grown;
    }
    size_t size = strlen(dir) + strlen(name) + 2;
    char *full = malloc(size);
    if (!full) return hyla_data_fail(err, HYLA_DATA_EIO, "out of memory listing the shards of %s", dir);
    snprintf(full, size, "%s/%s", dir, name);
    (*paths)[(*count)++] = full;
    return HYLA_DATA_OK;
}

/* The regular *.bin files of dir, sorted by name; an empty list is not an error here. */
static int list_bin_files(const char *dir, char ***paths_out, int *count_out, struct hyla_data_error *err) {
    DIR *d = opendir(dir);
    if (!d)
        return hyla_data_fail(err, HYLA_DATA_EIO, "cannot open directory %s: %s", dir, strerror(errno));
    char **paths = NULL;
    int count = 0, capacity = 0, rc = HYLA_DATA_OK;
    for (;;) {
        errno = 0;
        struct dirent *entry = readdir(d);
        if (!entry) {
            if (errno) rc = hyla_data_fail(err, HYLA_DATA_EIO, "cannot read directory %s: %s", dir, strerror(errno));
            break;
        }
        if (entry->d_name[0] == '.' || !ends_with(entry->d_name, ".bin")) continue;
        rc = push_path(&paths, &count, &capacity, dir, entry->d_name, err);
        if (rc) break;
        struct stat st;
        if (stat(paths[count - 1], &st) != 0 || !S_ISREG(st.st_mode)) free(paths[--count]); /* skip dirs, dangling links */
    }
    if (closedir(d) != 0 && !rc)
        rc = hyla_data_fail(err, HYLA_DATA_EIO, "cannot close directory %s: %s", dir, strerror(errno));
    if (rc) {
        hyla_token_paths_free(paths, count);
        return rc;
    }
    if (count > 1) qsort(paths, (size_t)count, sizeof *paths, compare_names);
    *paths_out = paths;
    *count_out = count;
    return HYLA_DATA_OK;
}

int hyla_token_paths(const char *path, char ***paths, int *count, struct hyla_data_error *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return hyla_data_fail(err, HYLA_DATA_EIO, "cannot open token data %s: %s; check data.path / "
                              "data.eval_path, or " PACK_HINT, path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        char **one = malloc(sizeof *one);
        char *copy = one ? strdup(path) : NULL;
        if (!copy) {
            free(one);
            return hyla_data_fail(err, HYLA_DATA_EIO, "out of memory opening %s", path);
        }
        one[0] = copy;
        *paths = one;
        *count = 1;
        return HYLA_DATA_OK;
    }
    int rc = list_bin_files(path, paths, count, err);
    if (!rc && *count == 0) {
        hyla_token_paths_free(*paths, 0);
        return hyla_data_fail(err, HYLA_DATA_EIO, "directory %s holds no *.bin token shards; " PACK_HINT, path);
    }
    return rc;
}

int hyla_token_paths_disjoint(const char *train_path, const char *eval_path, struct hyla_data_error *err) {
    char **train = NULL, **eval = NULL;
    int n_train = 0, n_eval = 0;
    int rc = hyla_token_paths(train_path, &train, &n_train, err);
    if (!rc) rc = hyla_token_paths(eval_path, &eval, &n_eval, err);
    for (int i = 0; !rc && i < n_eval; i++) {
        struct stat se;
        if (stat(eval[i], &se) != 0) {
            rc = hyla_data_fail(err, HYLA_DATA_EIO, "cannot stat %s: %s", eval[i], strerror(errno));
            break;
        }
        for (int j = 0; !rc && j < n_train; j++) {
            struct stat st;
            if (stat(train[j], &st) != 0)
                rc = hyla_data_fail(err, HYLA_DATA_EIO, "cannot stat %s: %s", train[j], strerror(errno));
            else if (st.st_dev == se.st_dev && st.st_ino == se.st_ino)
                rc = hyla_data_fail(err, HYLA_DATA_ECONFIG,
                                    "held-out shard %s is also training data (data.path = %s, file %s): point "
                                    "data.eval_path at shards outside data.path",
                                    eval[i], train_path, train[j]);
        }
    }
    hyla_token_paths_free(train, n_train);
    hyla_token_paths_free(eval, n_eval);
    return rc;
}

/* ---- the stream ------------------------------------------------------------------------- */

int hyla_token_stream_open(struct hyla_token_stream *stream, const char *path, int vocab_size,
                           struct hyla_data_error *err) {
    memset(stream, 0, sizeof *stream);
    char **paths = NULL;
    int count = 0;
    int rc = hyla_token_paths(path, &paths, &count, err);
    if (rc) return rc;
    stream->shards = calloc((size_t)count, sizeof *stream->shards);
    stream->starts = calloc((size_t)count + 1, sizeof *stream->starts);
    if (!stream->shards || !stream->starts)
        rc = hyla_data_fail(err, HYLA_DATA_EIO, "out of memory opening the %d shards of %s", count, path);
    for (int i = 0; !rc && i < count; i++) {
        rc = hyla_token_shard_open(&stream->shards[i], paths[i], vocab_size, err);
        if (rc) break;
        stream->num_shards = i + 1;
        stream->starts[i] = stream->num_tokens;
        stream->num_tokens += stream->shards[i].num_tokens;
    }
    if (stream->starts) stream->starts[stream->num_shards] = stream->num_tokens;
    hyla_token_paths_free(paths, count);
    if (rc) hyla_token_stream_close(stream);
    return rc;
}

void hyla_token_stream_close(struct hyla_token_stream *stream) {
    for (int i = 0; i < stream->num_shards; i++) hyla_token_shard_close(&stream->shards[i]);
    free(stream->shards);
    free(stream->starts);
    memset(stream, 0, sizeof *stream);
}

/* Index of the shard holding stream position pos (binary search over starts). */
static int shard_of(const struct hyla_token_stream *stream, uint64_t pos) {
    int lo = 0, hi = stream->num_shards - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (stream->starts[mid] <= pos) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

void hyla_token_stream_read(const struct hyla_token_stream *stream, uint64_t pos, size_t count, int32_t *out) {
    HYLA_ASSERT(pos + count <= stream->num_tokens);
    int k = shard_of(stream, pos);
    while (count > 0) {
        const struct hyla_token_shard *shard = &stream->shards[k];
        uint64_t local = pos - stream->starts[k];
        size_t take = shard->num_tokens - local < count ? (size_t)(shard->num_tokens - local) : count;
        if (shard->width == 2) {
            const uint16_t *t = (const uint16_t *)shard->tokens + local;
            for (size_t i = 0; i < take; i++) out[i] = t[i];
        } else {
            const uint32_t *t = (const uint32_t *)shard->tokens + local;
            for (size_t i = 0; i < take; i++) out[i] = (int32_t)t[i];
        }
        out += take;
        pos += take;
        count -= take;
        k++;
    }
}

/* ---- writing ---------------------------------------------------------------------------- */

static int write_header(struct hyla_token_writer *writer, struct hyla_data_error *err) {
    int32_t header[HYLA_SHARD_HEADER_INTS] = {0};
    header[0] = writer->width == 2 ? HYLA_SHARD_MAGIC_U16 : HYLA_SHARD_MAGIC_U32;
    header[1] = writer->width == 2 ? HYLA_SHARD_VERSION_U16 : HYLA_SHARD_VERSION_U32;
    header[2] = (int32_t)writer->num_tokens;
    if (fwrite(header, sizeof header, 1, writer->file) != 1)
        return hyla_data_fail(err, HYLA_DATA_EIO, "cannot write %s: %s", writer->tmp_path, strerror(errno));
    return HYLA_DATA_OK;
}

int hyla_token_writer_open(struct hyla_token_writer *writer, const char *path, int width,
                           struct hyla_data_error *err) {
    memset(writer, 0, sizeof *writer);
    if (width != 2 && width != 4)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG, "token width %d for %s: use 2 (uint16) or 4 (uint32)", width, path);
    writer->width = width;
    int rc = copy_path(writer->path, sizeof writer->path, path, err);
    if (rc) return rc;
    snprintf(writer->tmp_path, sizeof writer->tmp_path, "%s.tmp", path);
    writer->file = fopen(writer->tmp_path, "wb");
    if (!writer->file)
        return hyla_data_fail(err, HYLA_DATA_EIO, "cannot create %s: %s; check that the directory exists and is "
                              "writable", writer->tmp_path, strerror(errno));
    rc = write_header(writer, err); /* a placeholder, rewritten with the count at close */
    if (rc) hyla_token_writer_abort(writer);
    return rc;
}

int hyla_token_writer_append(struct hyla_token_writer *writer, const uint32_t *tokens, size_t count,
                             struct hyla_data_error *err) {
    if (writer->num_tokens + count > HYLA_SHARD_MAX_TOKENS)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG, "shard %s would exceed %llu tokens (the header's count is an "
                              "int32): split the data into more shards", writer->path, HYLA_SHARD_MAX_TOKENS);
    uint16_t narrow[4096];
    for (size_t done = 0; done < count;) {
        size_t take = count - done < 4096 ? count - done : 4096;
        const void *chunk = tokens + done;
        if (writer->width == 2) {
            for (size_t i = 0; i < take; i++) {
                if (tokens[done + i] > 65535)
                    return hyla_data_fail(err, HYLA_DATA_ERANGE,
                                          "token %llu of %s is %u, which does not fit a uint16 shard: write it "
                                          "with 4-byte tokens (magic %d)",
                                          (unsigned long long)(writer->num_tokens + done + i), writer->path,
                                          tokens[done + i], HYLA_SHARD_MAGIC_U32);
                narrow[i] = (uint16_t)tokens[done + i];
            }
            chunk = narrow;
        }
        if (fwrite(chunk, (size_t)writer->width, take, writer->file) != take)
            return hyla_data_fail(err, HYLA_DATA_EIO, "cannot write %s: %s", writer->tmp_path, strerror(errno));
        done += take;
    }
    writer->num_tokens += count;
    return HYLA_DATA_OK;
}

static int finish_file(struct hyla_token_writer *writer, struct hyla_data_error *err) {
    if (writer->num_tokens == 0)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG, "shard %s would hold no tokens; a shard needs at least one",
                              writer->path);
    if (fseek(writer->file, 0, SEEK_SET) != 0)
        return hyla_data_fail(err, HYLA_DATA_EIO, "cannot seek in %s: %s", writer->tmp_path, strerror(errno));
    int rc = write_header(writer, err);
    if (rc) return rc;
    if (fflush(writer->file) != 0 || fsync(fileno(writer->file)) != 0)
        return hyla_data_fail(err, HYLA_DATA_EIO, "cannot flush %s: %s", writer->tmp_path, strerror(errno));
    FILE *f = writer->file;
    writer->file = NULL;
    if (fclose(f) != 0)
        return hyla_data_fail(err, HYLA_DATA_EIO, "cannot close %s: %s", writer->tmp_path, strerror(errno));
    if (rename(writer->tmp_path, writer->path) != 0)
        return hyla_data_fail(err, HYLA_DATA_EIO, "cannot rename %s to %s: %s", writer->tmp_path, writer->path,
                              strerror(errno));
    return HYLA_DATA_OK;
}

int hyla_token_writer_close(struct hyla_token_writer *writer, struct hyla_data_error *err) {
    int rc = finish_file(writer, err);
    if (rc) hyla_token_writer_abort(writer);
    return rc;
}

void hyla_token_writer_abort(struct hyla_token_writer *writer) {
    /* Cleanup after a failure already reported: errors here add nothing. */
    if (writer->file) fclose(writer->file);
    writer->file = NULL;
    if (writer->tmp_path[0]) unlink(writer->tmp_path);
}

int hyla_token_shard_write(const char *path, const uint32_t *tokens, size_t count, int width,
                           struct hyla_data_error *err) {
    struct hyla_token_writer writer;
    int rc = hyla_token_writer_open(&writer, path, width, err);
    if (rc) return rc;
    rc = hyla_token_writer_append(&writer, tokens, count, err);
    if (rc) {
        hyla_token_writer_abort(&writer);
        return rc;
    }
    return hyla_token_writer_close(&writer, err);
}

/* ---- pack ------------------------------------------------------------------------------- */

/* mkdir -p */
static int make_directories(const char *dir, struct hyla_data_error *err) {
    char path[HYLA_PATH_MAX];
    int rc = copy_path(path, sizeof path, dir, err);
    if (rc) return rc;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char saved = *p;
        *p = '\0';
        struct stat st;
        if (mkdir(path, 0777) != 0 && (errno != EEXIST || stat(path, &st) != 0 || !S_ISDIR(st.st_mode)))
            return hyla_data_fail(err, HYLA_DATA_EIO, "cannot create directory %s: %s", path,
                                  errno == EEXIST ? "a file of that name exists" : strerror(errno));
        *p = saved;
        if (saved == '\0') break;
    }
    return HYLA_DATA_OK;
}

/* dir/shard_000123.bin; 0 when it does not fit. */
static int shard_name(char *path, size_t size, const char *dir, int index) {
    int n = snprintf(path, size, "%s/shard_%06d.bin", dir, index);
    return n > 0 && (size_t)n < size;
}

/* The packer's state: the open shard and the running totals. */
struct packer {
    const char *dir;
    uint64_t shard_tokens;
    FILE *log;
    struct hyla_token_writer writer;
    int writer_open;
    struct hyla_pack_result result;
};

static int packer_close_shard(struct packer *p, struct hyla_data_error *err) {
    if (!p->writer_open) return HYLA_DATA_OK;
    p->writer_open = 0;
    uint64_t n = p->writer.num_tokens;
    int rc = hyla_token_writer_close(&p->writer, err);
    if (rc) return rc;
    if (p->log) fprintf(p->log, "wrote %s: %llu tokens (uint16)\n", p->writer.path, (unsigned long long)n);
    return HYLA_DATA_OK;
}

/* Append tokens, starting a new shard whenever the current one is full. */
static int packer_append(struct packer *p, const uint32_t *tokens, size_t count, struct hyla_data_error *err) {
    while (count > 0) {
        if (p->writer_open && p->writer.num_tokens == p->shard_tokens) {
            int rc = packer_close_shard(p, err);
            if (rc) return rc;
        }
        if (!p->writer_open) {
            char path[HYLA_PATH_MAX];
            if (!shard_name(path, sizeof path, p->dir, p->result.num_shards))
                return hyla_data_fail(err, HYLA_DATA_ECONFIG, "output directory name is too long: %s", p->dir);
            int rc = hyla_token_writer_open(&p->writer, path, 2, err);
            if (rc) return rc;
            p->writer_open = 1;
            p->result.num_shards++;
        }
        uint64_t room = p->shard_tokens - p->writer.num_tokens;
        size_t take = room < count ? (size_t)room : count;
        int rc = hyla_token_writer_append(&p->writer, tokens, take, err);
        if (rc) return rc;
        tokens += take;
        count -= take;
        p->result.num_tokens += take;
    }
    return HYLA_DATA_OK;
}

static int pack_document(struct packer *p, const char *input, struct hyla_data_error *err) {
    FILE *f = fopen(input, "rb");
    if (!f) return hyla_data_fail(err, HYLA_DATA_EIO, "cannot open input %s: %s", input, strerror(errno));
    uint32_t bos = HYLA_BYTE_BOS;
    int rc = packer_append(p, &bos, 1, err);
    unsigned char bytes[8192];
    uint32_t tokens[8192];
    while (!rc) {
        size_t n = fread(bytes, 1, sizeof bytes, f);
        for (size_t i = 0; i < n; i++) tokens[i] = bytes[i];
        rc = packer_append(p, tokens, n, err);
        if (n < sizeof bytes) {
            if (!rc && ferror(f)) rc = hyla_data_fail(err, HYLA_DATA_EIO, "cannot read input %s: %s", input, strerror(errno));
            break;
        }
    }
    fclose(f); /* opened for reading only */
    if (!rc) p->result.num_documents++;
    return rc;
}

/* After a failure, remove what this pack wrote, so that a retry into the same directory works
 * and no half-packed stream is ever trained on. */
static void remove_partial_pack(struct packer *p) {
    if (p->writer_open) hyla_token_writer_abort(&p->writer);
    p->writer_open = 0;
    for (int i = 0; i < p->result.num_shards; i++) {
        char path[HYLA_PATH_MAX];
        if (shard_name(path, sizeof path, p->dir, i)) unlink(path); /* best effort: the error is already reported */
    }
}

int hyla_pack_bytes(const char *const *inputs, int num_inputs, const char *dir, uint64_t shard_tokens,
                    FILE *log, struct hyla_pack_result *result, struct hyla_data_error *err) {
    if (num_inputs <= 0) return hyla_data_fail(err, HYLA_DATA_ECONFIG, "no input files to pack");
    if (shard_tokens == 0 || shard_tokens > HYLA_SHARD_MAX_TOKENS)
        return hyla_data_fail(err, HYLA_DATA_ECONFIG, "tokens per shard must be in 1..%llu, not %llu",
                              HYLA_SHARD_MAX_TOKENS, (unsigned long long)shard_tokens);
    for (int i = 0; i < num_inputs; i++) { /* fail before creating anything */
        struct stat st;
        if (stat(inputs[i], &st) != 0)
            return hyla_data_fail(err, HYLA_DATA_EIO, "cannot open input %s: %s", inputs[i], strerror(errno));
        if (S_ISDIR(st.st_mode))
            return hyla_data_fail(err, HYLA_DATA_EIO, "input %s is a directory; pass the text files themselves",
                                  inputs[i]);
    }
    int rc = make_directories(dir, err);
    if (rc) return rc;
    char **existing = NULL;
    int n_existing = 0;
    rc = list_bin_files(dir, &existing, &n_existing, err);
    if (rc) return rc;
    if (n_existing > 0) {
        rc = hyla_data_fail(err, HYLA_DATA_ECONFIG,
                            "output directory %s already holds %d *.bin file(s) (%s, ...), which would mix into the "
                            "token stream: choose an empty directory or remove them",
                            dir, n_existing, existing[0]);
        hyla_token_paths_free(existing, n_existing);
        return rc;
    }
    hyla_token_paths_free(existing, 0);
    struct packer p = {.dir = dir, .shard_tokens = shard_tokens, .log = log};
    for (int i = 0; !rc && i < num_inputs; i++) rc = pack_document(&p, inputs[i], err);
    if (!rc) rc = packer_close_shard(&p, err);
    if (rc) remove_partial_pack(&p);
    if (!rc && result) *result = p.result;
    return rc;
}
