/* `hyla ckpt ls DIR | verify DIR_OR_STEP | inspect STEP_DIR`: checkpoints for people. */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint/checkpoint.h"
#include "commands.h"

static int usage(void) {
    fputs("usage: hyla ckpt ls DIR            list the checkpoints of a checkpoint folder\n"
          "       hyla ckpt verify DIR|STEP   check manifests, sizes and hashes (exit 1 on any problem)\n"
          "       hyla ckpt inspect STEP      units, counters and files of one checkpoint\n",
          stderr);
    return 2;
}

static int is_step_dir(const char *path) {
    char manifest[4200];
    struct stat st;
    snprintf(manifest, sizeof manifest, "%s/manifest.json", path);
    return stat(manifest, &st) == 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The step folders (committed and partial) of a checkpoint folder, sorted. */
static int list_entries(const char *root, char ***names) {
    DIR *d = opendir(root);
    if (!d) return -1;
    int n = 0;
    *names = NULL;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "step_", 5)) {
            *names = realloc(*names, sizeof(char *) * (size_t)(n + 1));
            (*names)[n++] = strdup(e->d_name);
        }
    closedir(d);
    qsort(*names, (size_t)n, sizeof(char *), by_name);
    return n;
}

static long long folder_bytes(const char *dir) {
    DIR *d = opendir(dir);
    long long total = 0;
    struct dirent *e;
    char path[4200];
    struct stat st;
    while (d && (e = readdir(d))) {
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) continue;
        if (e->d_name[0] != '.' && stat(path, &st) == 0) total += st.st_size;
    }
    if (d) closedir(d);
    return total;
}

static int ls_or_verify(const char *root, int verbose_ok) {
    char **names;
    int n = list_entries(root, &names), bad = 0;
    if (n < 0) {
        fprintf(stderr, "hyla: error: cannot open checkpoint folder %s\n", root);
        return 1;
    }
    if (n == 0) printf("no checkpoints in %s\n", root);
    else printf("%-22s %12s  %s\n", "checkpoint", "bytes", "status");
    for (int i = 0; i < n; i++) {
        char dir[4200];
        if (snprintf(dir, sizeof dir, "%s/%s", root, names[i]) >= (int)sizeof dir) continue;
        struct ckpt_error err;
        const int partial = strstr(names[i], ".tmp") != NULL;
        const int ok = !partial && ckpt_verify(dir, &err) == 0;
        bad += !ok;
        printf("%-22s %12lld  %s\n", names[i], folder_bytes(dir),
               partial ? "partial (never committed; ignored)" : ok ? (verbose_ok ? "valid (hashes match)" : "valid")
                                                                   : err.message);
        free(names[i]);
    }
    free(names);
    return bad ? 1 : 0;
}

int cmd_ckpt(int argc, char **argv) {
    if (argc != 3) return usage();
    const char *what = argv[1], *path = argv[2];
    struct ckpt_error err;
    if (!strcmp(what, "ls")) return ls_or_verify(path, 0) < 0;
    if (!strcmp(what, "verify")) {
        if (!is_step_dir(path) && strstr(path, "step_") == NULL) return ls_or_verify(path, 1);
        if (ckpt_verify(path, &err)) {
            fprintf(stderr, "hyla: error: %s\n", err.message);
            return 1;
        }
        printf("%s: valid (manifest, sizes and hashes match)\n", path);
        return 0;
    }
    if (!strcmp(what, "inspect")) {
        if (ckpt_describe(path, stdout, &err)) {
            fprintf(stderr, "hyla: error: %s\n", err.message);
            return 1;
        }
        return 0;
    }
    return usage();
}
