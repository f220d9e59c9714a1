#define _DEFAULT_SOURCE /* MAP_POPULATE, madvise */
#include "ckpt_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

int ckpt_fail(struct ckpt_error *err, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, args);
    va_end(args);
    return -1;
}

void ckpt_step_dir(char *out, size_t cap, const char *root, int64_t step, int tmp) {
    snprintf(out, cap, "%s/step_%08lld%s", root, (long long)step, tmp ? ".tmp" : "");
}

int ckpt_fsync_dir(const char *dir, struct ckpt_error *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return ckpt_fail(err, "cannot open folder %s to sync it: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    return rc ? ckpt_fail(err, "cannot sync folder %s: %s", dir, strerror(saved)) : 0;
}

int ckpt_remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    return rmdir(dir);
}

int ckpt_map_file(const char *path, unsigned char **data, size_t *size, uint64_t *hash, struct ckpt_error *err) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ckpt_fail(err, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        close(fd);
        return ckpt_fail(err, "cannot stat %s: %s", path, strerror(errno));
    }
    *size = (size_t)st.st_size;
    void *p = *size ? mmap(NULL, *size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0) : NULL;
    close(fd);
    if (*size && p == MAP_FAILED) return ckpt_fail(err, "cannot map %s: %s", path, strerror(errno));
    if (*size) madvise(p, *size, MADV_SEQUENTIAL);
    *data = p;
    *hash = XXH64(p, *size, 0);
    return 0;
}

void ckpt_unmap_file(unsigned char *data, size_t size) {
    if (data && size) munmap(data, size);
}

int ckpt_manifest_read(const char *dir, json_t **manifest, struct ckpt_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    json_error_t je;
    json_t *m = json_load_file(path, 0, &je);
    if (!m) return ckpt_fail(err, "%s: no valid manifest (%s, line %d)", dir, je.text, je.line);
    static const char *const fields[] = {"format_version", "world_size", "step", "config_hash", "units", "files",
                                         "n_lte"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!json_object_get(m, fields[i])) {
            json_decref(m);
            return ckpt_fail(err, "%s: manifest.json has no field \"%s\"; the checkpoint is incomplete", dir,
                             fields[i]);
        }
    if (json_integer_value(json_object_get(m, "format_version")) != HYLA_CKPT_FORMAT_VERSION) {
        json_decref(m);
        return ckpt_fail(err, "%s: checkpoint format version %lld, this hyla reads %d", dir,
                         (long long)json_integer_value(json_object_get(m, "format_version")),
                         HYLA_CKPT_FORMAT_VERSION);
    }
    *manifest = m;
    return 0;
}
