/* Finding, verifying and loading checkpoints, resharding onto another world size, and
 * retention. A load reads into temporaries and touches the caller's buffers only once
 * every file it needs has matched its manifest. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ckpt_files.h"
#include "sharding/fsdp_shard.h"

static const json_t *file_entry(const json_t *manifest, int rank) {
    return json_array_get(json_object_get(manifest, "files"), (size_t)rank);
}

/* Read rank r's file of dir and check it against the manifest (size, hash, header). */
static int read_rank(const char *dir, const json_t *manifest, int r, unsigned char **data, size_t *size,
                     struct ckpt_error *err) {
    const json_t *f = file_entry(manifest, r);
    const char *name = json_string_value(json_object_get(f, "name")), *hex = json_string_value(json_object_get(f, "xxh64"));
    if (!f || !name || !hex || !json_is_integer(json_object_get(f, "bytes")))
        return ckpt_fail(err, "%s: manifest.json has no complete entry for rank %d's file", dir, r);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint64_t hash;
    if (ckpt_map_file(path, data, size, &hash, err)) return -1;
    char got[17];
    snprintf(got, sizeof got, "%016llx", (unsigned long long)hash);
    const long long want_bytes = json_integer_value(json_object_get(f, "bytes"));
    const char *why = (long long)*size != want_bytes ? "its size differs from the manifest (truncated or extended)"
                      : strcmp(got, hex)             ? "its xxHash differs from the manifest (the data changed)"
                      : *size < sizeof(struct ckpt_file_header) || memcmp(*data, CKPT_MAGIC, 8)
                          ? "it is not a hyla checkpoint file"
                          : NULL;
    if (why) {
        ckpt_unmap_file(*data, *size);
        return ckpt_fail(err, "%s: %s", path, why);
    }
    return 0;
}

int ckpt_verify(const char *dir, struct ckpt_error *err) {
    json_t *m;
    if (ckpt_manifest_read(dir, &m, err)) return -1;
    const int G = (int)json_integer_value(json_object_get(m, "world_size"));
    int rc = G >= 1 && (int)json_array_size(json_object_get(m, "files")) == G
                 ? 0
                 : ckpt_fail(err, "%s: manifest.json lists %zu files for world size %d", dir,
                             json_array_size(json_object_get(m, "files")), G);
    for (int r = 0; r < G && !rc; r++) {
        unsigned char *data;
        size_t size;
        rc = read_rank(dir, m, r, &data, &size, err);
        if (!rc) ckpt_unmap_file(data, size);
    }
    json_decref(m);
    return rc;
}

static int parse_step(const char *name, int64_t *step, int *tmp) {
    long long s;
    int n = 0;
    if (sscanf(name, "step_%8lld%n", &s, &n) != 1 || n != 13) return 0;
    *tmp = !strcmp(name + n, ".tmp");
    if (name[n] && !*tmp) return 0;
    *step = s;
    return 1;
}

static int by_step_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Committed step numbers under root, newest first; partial (.tmp) folders reported. */
static int list_steps(const char *root, int64_t **steps, FILE *skipped) {
    DIR *d = opendir(root);
    if (!d) return 0;
    int n = 0, cap = 16;
    *steps = malloc(sizeof(int64_t) * (size_t)cap);
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s;
        int tmp;
        if (!parse_step(e->d_name, &s, &tmp)) continue;
        if (tmp) {
            if (skipped) fprintf(skipped, "%s/%s: partial checkpoint (no commit), ignored\n", root, e->d_name);
            continue;
        }
        if (n == cap) *steps = realloc(*steps, sizeof(int64_t) * (size_t)(cap *= 2));
        (*steps)[n++] = s;
    }
    closedir(d);
    qsort(*steps, (size_t)n, sizeof(int64_t), by_step_desc);
    return n;
}

int ckpt_find_latest(const char *root, char *dir_out, size_t cap, int64_t *step, FILE *skipped) {
    int64_t *steps = NULL;
    int n = list_steps(root, &steps, skipped), found = 0;
    for (int i = 0; i < n && !found; i++) {
        char dir[4096];
        struct ckpt_error err;
        ckpt_step_dir(dir, sizeof dir, root, steps[i], 0);
        if (ckpt_verify(dir, &err)) {
            if (skipped) fprintf(skipped, "skipping checkpoint %s: %s\n", dir, err.message);
            continue;
        }
        snprintf(dir_out, cap, "%s", dir);
        *step = steps[i];
        found = 1;
    }
    free(steps);
    return found;
}

/* Offset of unit u's three shards in an old rank's file (header, then param, m, v per unit). */
static size_t unit_offset(const struct ckpt_rank_data *d, int old_G, int u) {
    size_t off = sizeof(struct ckpt_file_header);
    for (int k = 0; k < u; k++) off += 3 * fsdp_layout_make(d->units[k].unit_count, old_G, 0).shard_count * 4;
    return off;
}

/* Every piece of this rank's new shards lies inside its old file. */
static int reshard_check(const struct ckpt_rank_data *d, int old_G, const size_t *sizes, struct ckpt_error *err) {
    for (int u = 0; u < d->n_units; u++) {
        struct fsdp_reshard_piece pieces[4096];
        size_t np = fsdp_reshard_pieces(d->units[u].unit_count, old_G, d->world_size, d->rank, pieces, 4096);
        if (np > 4096) return ckpt_fail(err, "too many reshard pieces for unit %s", d->units[u].name);
        const size_t S_old = fsdp_layout_make(d->units[u].unit_count, old_G, 0).shard_count;
        for (size_t p = 0; p < np; p++)
            if (unit_offset(d, old_G, u) + (2 * S_old + pieces[p].old_offset + pieces[p].count) * 4 >
                sizes[pieces[p].old_rank])
                return ckpt_fail(err, "rank %d's file is too short for unit %s", pieces[p].old_rank, d->units[u].name);
    }
    return 0;
}

/* The shards of this rank's new layout, cut out of the old ranks' files. */
static void reshard(const struct ckpt_rank_data *d, int old_G, unsigned char **files, float **param, float **m,
                    float **v) {
    for (int u = 0; u < d->n_units; u++) {
        struct fsdp_reshard_piece pieces[4096];
        size_t np = fsdp_reshard_pieces(d->units[u].unit_count, old_G, d->world_size, d->rank, pieces, 4096);
        const size_t S_old = fsdp_layout_make(d->units[u].unit_count, old_G, 0).shard_count;
        const size_t S_new = fsdp_layout_make(d->units[u].unit_count, d->world_size, d->rank).shard_count;
        memset(param[u], 0, S_new * 4), memset(m[u], 0, S_new * 4), memset(v[u], 0, S_new * 4); /* padding */
        for (size_t p = 0; p < np; p++) {
            const struct fsdp_reshard_piece *pc = &pieces[p];
            const float *base = (const float *)(files[pc->old_rank] + unit_offset(d, old_G, u));
            memcpy(param[u] + pc->new_offset, base + pc->old_offset, pc->count * 4);
            memcpy(m[u] + pc->new_offset, base + S_old + pc->old_offset, pc->count * 4);
            memcpy(v[u] + pc->new_offset, base + 2 * S_old + pc->old_offset, pc->count * 4);
        }
    }
}

static int check_units(const char *dir, const json_t *m, const struct ckpt_rank_data *d, struct ckpt_error *err) {
    const json_t *units = json_object_get(m, "units");
    if ((int)json_array_size(units) != d->n_units)
        return ckpt_fail(err, "%s holds %zu units, this model has %d: the checkpoint is from another model config",
                         dir, json_array_size(units), d->n_units);
    for (int u = 0; u < d->n_units; u++) {
        const json_t *e = json_array_get(units, (size_t)u);
        const char *name = json_string_value(json_object_get(e, "name"));
        if (!name || strcmp(name, d->units[u].name) ||
            (size_t)json_integer_value(json_object_get(e, "unit_count")) != d->units[u].unit_count)
            return ckpt_fail(err, "%s: unit %d is %s of %lld values, this model's is %s of %zu: the checkpoint is "
                                  "from another model config", dir, u, name ? name : "?",
                             (long long)json_integer_value(json_object_get(e, "unit_count")), d->units[u].name,
                             d->units[u].unit_count);
    }
    if ((int)json_integer_value(json_object_get(m, "n_lte")) != d->n_lte)
        return ckpt_fail(err, "%s: LTE state of another size than this model's", dir);
    return 0;
}

int ckpt_load(const char *dir, struct ckpt_rank_data *d, struct ckpt_error *err) {
    json_t *m;
    if (ckpt_manifest_read(dir, &m, err)) return -1;
    const int old_G = (int)json_integer_value(json_object_get(m, "world_size"));
    int rc = check_units(dir, m, d, err);
    unsigned char **files = calloc((size_t)old_G, sizeof *files);
    size_t *sizes = calloc((size_t)old_G, sizeof *sizes);
    /* which old ranks this rank needs: rank 0 always (counters), plus the reshard sources */
    char *needed = calloc((size_t)old_G, 1);
    needed[0] = 1;
    for (int u = 0; u < d->n_units && !rc; u++) {
        struct fsdp_reshard_piece pieces[4096];
        size_t np = fsdp_reshard_pieces(d->units[u].unit_count, old_G, d->world_size, d->rank, pieces, 4096);
        for (size_t p = 0; p < np && p < 4096; p++) needed[pieces[p].old_rank] = 1;
    }
    for (int r = 0; r < old_G && !rc; r++)
        if (needed[r]) rc = read_rank(dir, m, r, &files[r], &sizes[r], err);
    /* every file this rank needs has matched the manifest (size, hash, header) and the
     * reshard ranges are checked against the file sizes before the first copy, so the
     * caller's buffers change only when the whole load succeeds */
    if (!rc) rc = reshard_check(d, old_G, sizes, err);
    if (!rc) {
        reshard(d, old_G, files, d->param, d->adam_m, d->adam_v);
        struct ckpt_file_header h;
        memcpy(&h, files[0], sizeof h);
        const size_t lte_at = sizes[0] - 2 * sizeof(float) * (size_t)d->n_lte;
        if (d->n_lte) {
            memcpy(d->lte_lambda, files[0] + lte_at, sizeof(float) * (size_t)d->n_lte);
            memcpy(d->lte_num_kept, files[0] + lte_at + sizeof(float) * (size_t)d->n_lte,
                   sizeof(float) * (size_t)d->n_lte);
        }
        d->step = h.step, d->skipped_steps = h.skipped_steps, d->bad_in_row = h.bad_in_row;
        d->data_cursor = h.data_cursor; /* every rank's cursor is the same number (docs/data.md) */
        d->saved_world_size = old_G;
        snprintf(d->config_hash, sizeof d->config_hash, "%s", json_string_value(json_object_get(m, "config_hash")));
    }
    for (int r = 0; r < old_G; r++) ckpt_unmap_file(files[r], sizes[r]);
    free(files), free(sizes), free(needed);
    json_decref(m);
    return rc;
}

int ckpt_apply_retention(const char *root, int keep_last, int keep_every, struct ckpt_error *err) {
    (void)err;
    int64_t *steps = NULL;
    int n = list_steps(root, &steps, NULL);
    for (int i = 0; i < n; i++) {
        if (i < keep_last || (keep_every > 0 && steps[i] % keep_every == 0)) continue;
        char dir[4096];
        ckpt_step_dir(dir, sizeof dir, root, steps[i], 0);
        ckpt_remove_tree(dir);
    }
    free(steps);
    return 0;
}

int ckpt_describe(const char *dir, FILE *out, struct ckpt_error *err) {
    json_t *m;
    if (ckpt_manifest_read(dir, &m, err)) return -1;
    fprintf(out, "checkpoint %s\n  step %lld | world size %lld | config hash %s | LTE state values %lld\n", dir,
            (long long)json_integer_value(json_object_get(m, "step")),
            (long long)json_integer_value(json_object_get(m, "world_size")),
            json_string_value(json_object_get(m, "config_hash")), (long long)json_integer_value(json_object_get(m, "n_lte")));
    fprintf(out, "  %-14s %12s %12s %12s\n", "unit", "values", "padded", "per rank");
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(m, "units"), i, u)
        fprintf(out, "  %-14s %12lld %12lld %12lld\n", json_string_value(json_object_get(u, "name")),
                (long long)json_integer_value(json_object_get(u, "unit_count")),
                (long long)json_integer_value(json_object_get(u, "padded_count")),
                (long long)json_integer_value(json_object_get(u, "shard_count")));
    json_array_foreach(json_object_get(m, "files"), i, u)
        fprintf(out, "  file %s: %lld bytes, xxh64 %s\n", json_string_value(json_object_get(u, "name")),
                (long long)json_integer_value(json_object_get(u, "bytes")),
                json_string_value(json_object_get(u, "xxh64")));
    json_decref(m);
    return 0;
}
