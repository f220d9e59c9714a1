/* Internal to checkpoint/: the rank file header, file helpers and the manifest. */
#ifndef HYLA_CKPT_FILES_H
#define HYLA_CKPT_FILES_H

#include <jansson.h>
#include <stdint.h>

#include "checkpoint.h"

#define CKPT_MAGIC "HYLACKP1"

struct ckpt_file_header {
    char magic[8];
    uint32_t version;
    int32_t rank, world_size, n_units;
    int64_t step;
    uint64_t data_cursor;
    int32_t skipped_steps, bad_in_row, n_lte, reserved;
};

int ckpt_fail(struct ckpt_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "root/step_00001234" (+ ".tmp" when tmp). */
void ckpt_step_dir(char *out, size_t cap, const char *root, int64_t step, int tmp);
int ckpt_fsync_dir(const char *dir, struct ckpt_error *err);
int ckpt_remove_tree(const char *dir);
/* Map a whole file (no copy); its size and XXH64. Release with ckpt_unmap_file. */
int ckpt_map_file(const char *path, unsigned char **data, size_t *size, uint64_t *hash, struct ckpt_error *err);
void ckpt_unmap_file(unsigned char *data, size_t size);
/* The manifest of a step folder (checked for the fields every reader needs). */
int ckpt_manifest_read(const char *dir, json_t **manifest, struct ckpt_error *err);

#endif
