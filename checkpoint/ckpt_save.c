/* Saving: every rank writes and fsyncs its file (hashing while it writes), the hashes meet
 * at the group's rank 0 through one all-reduce, and rank 0 commits the manifest and the
 * rename. Any failure anywhere removes the .tmp folder on rank 0 and returns an error on
 * every rank: the previous checkpoints are never touched. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "ckpt_files.h"
#include "sharding/fsdp_shard.h"

/* Test hook: HYLA_CKPT_FAIL_AFTER_BYTES=N makes writes fail with ENOSPC once this process
 * has written N bytes of checkpoint data (a full disk, simulated). */
static long long fail_after_bytes(void) {
    const char *v = getenv("HYLA_CKPT_FAIL_AFTER_BYTES");
    return v ? atoll(v) : -1;
}

struct writer {
    int fd;
    const char *path;
    XXH64_state_t *hash;
    size_t written;
    long long fail_after;
};

static int put(struct writer *w, const void *data, size_t n, struct ckpt_error *err) {
    const unsigned char *p = data;
    XXH64_update(w->hash, data, n);
    while (n > 0) {
        if (w->fail_after >= 0 && (long long)(w->written + n) > w->fail_after) {
            errno = ENOSPC;
            return ckpt_fail(err, "cannot write %s: %s (HYLA_CKPT_FAIL_AFTER_BYTES)", w->path, strerror(errno));
        }
        ssize_t k = write(w->fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return ckpt_fail(err, "cannot write %s: %s; free space on the checkpoint disk or set checkpoint.dir",
                             w->path, strerror(errno));
        }
        p += k, n -= (size_t)k, w->written += (size_t)k;
    }
    return 0;
}

static int write_rank_file(const char *path, const struct ckpt_rank_data *d, uint64_t *hash, size_t *size,
                           struct ckpt_error *err) {
    struct writer w = {.path = path, .hash = XXH64_createState(), .fail_after = fail_after_bytes()};
    XXH64_reset(w.hash, 0);
    w.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = w.fd < 0 ? ckpt_fail(err, "cannot create %s: %s", path, strerror(errno)) : 0;
    struct ckpt_file_header h = {.version = HYLA_CKPT_FORMAT_VERSION, .rank = d->rank, .world_size = d->world_size,
                                 .n_units = d->n_units, .step = d->step, .data_cursor = d->data_cursor,
                                 .skipped_steps = d->skipped_steps, .bad_in_row = d->bad_in_row, .n_lte = d->n_lte};
    memcpy(h.magic, CKPT_MAGIC, 8);
    if (!rc) rc = put(&w, &h, sizeof h, err);
    for (int u = 0; u < d->n_units && !rc; u++) {
        const size_t S = fsdp_layout_make(d->units[u].unit_count, d->world_size, d->rank).shard_count;
        rc = put(&w, d->param[u], S * sizeof(float), err);
        if (!rc) rc = put(&w, d->adam_m[u], S * sizeof(float), err);
        if (!rc) rc = put(&w, d->adam_v[u], S * sizeof(float), err);
    }
    if (!rc && d->n_lte) {
        rc = put(&w, d->lte_lambda, sizeof(float) * (size_t)d->n_lte, err);
        if (!rc) rc = put(&w, d->lte_num_kept, sizeof(float) * (size_t)d->n_lte, err);
    }
    if (!rc && fsync(w.fd)) rc = ckpt_fail(err, "cannot sync %s: %s", path, strerror(errno));
    if (w.fd >= 0 && close(w.fd) && !rc) rc = ckpt_fail(err, "cannot close %s: %s", path, strerror(errno));
    *hash = XXH64_digest(w.hash);
    *size = w.written;
    XXH64_freeState(w.hash);
    return rc;
}

static json_t *manifest(const struct ckpt_rank_data *d, const double *status) {
    json_t *units = json_array(), *files = json_array();
    for (int u = 0; u < d->n_units; u++) {
        struct fsdp_layout l = fsdp_layout_make(d->units[u].unit_count, d->world_size, 0);
        json_array_append_new(units, json_pack("{s:s, s:I, s:I, s:I, s:s}", "name", d->units[u].name, "unit_count",
                                               (json_int_t)l.unit_count, "padded_count", (json_int_t)l.padded_count,
                                               "shard_count", (json_int_t)l.shard_count, "dtype", "f32"));
    }
    for (int r = 0; r < d->world_size; r++) {
        char name[32], hex[17];
        snprintf(name, sizeof name, "rank_%05d.bin", r);
        uint64_t hash = (uint64_t)status[3 * r] << 32 | (uint64_t)status[3 * r + 1];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)hash);
        json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "name", name, "bytes",
                                               (json_int_t)status[3 * r + 2], "xxh64", hex));
    }
    return json_pack("{s:i, s:i, s:I, s:s, s:i, s:o, s:o}", "format_version", HYLA_CKPT_FORMAT_VERSION, "world_size",
                     d->world_size, "step", (json_int_t)d->step, "config_hash", d->config_hash, "n_lte", d->n_lte,
                     "units", units, "files", files);
}

/* Rank 0: manifest (written, synced, renamed into place), then the folder rename. */
static int commit(const char *root, const char *tmp, const struct ckpt_rank_data *d, const double *status,
                  struct ckpt_error *err) {
    char path[4200], final_path[4200], final_dir[4096];
    snprintf(path, sizeof path, "%s/manifest.json.tmp", tmp);
    snprintf(final_path, sizeof final_path, "%s/manifest.json", tmp);
    json_t *m = manifest(d, status);
    int rc = json_dump_file(m, path, JSON_INDENT(2)) ? ckpt_fail(err, "cannot write %s", path) : 0;
    json_decref(m);
    if (!rc) {
        int fd = open(path, O_RDONLY);
        if (fd < 0 || fsync(fd)) rc = ckpt_fail(err, "cannot sync %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
    }
    if (!rc && rename(path, final_path)) rc = ckpt_fail(err, "cannot rename %s: %s", path, strerror(errno));
    if (!rc) rc = ckpt_fsync_dir(tmp, err);
    ckpt_step_dir(final_dir, sizeof final_dir, root, d->step, 0);
    if (!rc) ckpt_remove_tree(final_dir); /* a re-save of the same step replaces it */
    if (!rc && rename(tmp, final_dir)) rc = ckpt_fail(err, "cannot rename %s: %s", tmp, strerror(errno));
    if (!rc) rc = ckpt_fsync_dir(root, err);
    return rc;
}

int ckpt_save(const char *root, const struct ckpt_rank_data *d, struct hyla_comm *comm, double *bytes,
              struct ckpt_error *err) {
    const int G = d->world_size, leader = d->rank == 0;
    char tmp[4096], path[4200];
    ckpt_step_dir(tmp, sizeof tmp, root, d->step, 1);
    int rc = 0;
    if (leader) { /* a fresh .tmp folder: a killed earlier save may have left one */
        if (mkdir(root, 0755) && errno != EEXIST) rc = ckpt_fail(err, "cannot create %s: %s", root, strerror(errno));
        ckpt_remove_tree(tmp);
        if (!rc && mkdir(tmp, 0755)) rc = ckpt_fail(err, "cannot create %s: %s", tmp, strerror(errno));
    }
    if (comm) hyla_comm_barrier(comm);
    /* every rank: its file; then [hash hi, hash lo, size] per rank and a failure count */
    double *status = calloc((size_t)(3 * G + 1), sizeof(double));
    uint64_t hash = 0;
    size_t size = 0;
    snprintf(path, sizeof path, "%s/rank_%05d.bin", tmp, d->rank);
    if (!rc) rc = write_rank_file(path, d, &hash, &size, err);
    status[3 * d->rank] = (double)(hash >> 32), status[3 * d->rank + 1] = (double)(hash & 0xffffffffu);
    status[3 * d->rank + 2] = (double)size, status[3 * G] = rc ? 1 : 0;
    if (comm) hyla_comm_all_reduce_f64(comm, status, status, (size_t)(3 * G + 1), HYLA_REDUCE_SUM);
    const int failed = status[3 * G] > 0;
    if (failed && !rc) rc = ckpt_fail(err, "another rank could not write its part of checkpoint %s", tmp);
    if (leader && !failed) rc = commit(root, tmp, d, status, err);
    if (leader && rc) ckpt_remove_tree(tmp);
    double committed = leader && !rc ? 1 : 0;
    if (comm) hyla_comm_all_reduce_f64(comm, &committed, &committed, 1, HYLA_REDUCE_SUM);
    if (!committed && !rc) rc = ckpt_fail(err, "rank 0 could not commit checkpoint %s", tmp);
    if (bytes) {
        *bytes = 0;
        for (int r = 0; r < G; r++) *bytes += status[3 * r + 2];
    }
    free(status);
    return rc;
}
