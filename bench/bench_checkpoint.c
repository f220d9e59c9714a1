/* `hyla bench checkpoint [--mb N] [--dir DIR] [--format table|json]`: checkpoint save and
 * load throughput against a plain sequential write (+ fsync) and read of the same number of
 * bytes in the same folder, measured in one run. */
#define _DEFAULT_SOURCE /* sync() */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_checkpoint.h"
#include "checkpoint/checkpoint.h"
#include "common/hyla_error.h"
#include "common/timer.h"

enum { UNITS = 8 };

/* --cold: empty the page cache before each read so that reads come from the disk (root only). */
static int drop_page_cache(void) {
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (!f) return 0;
    int ok = fputs("3", f) >= 0;
    return fclose(f) == 0 && ok;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof(double), by_value);
    return t[n / 2];
}

static double plain_write(const char *path, const char *data, size_t bytes) {
    double t0 = hyla_now_seconds();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) hyla_die("cannot create %s", path);
    for (size_t done = 0; done < bytes;) {
        ssize_t n = write(fd, data + done, bytes - done);
        if (n <= 0) hyla_die("cannot write %s", path);
        done += (size_t)n;
    }
    if (fsync(fd)) hyla_die("cannot sync %s", path);
    close(fd);
    return hyla_now_seconds() - t0;
}

static double plain_read(const char *path, char *data, size_t bytes) {
    double t0 = hyla_now_seconds();
    int fd = open(path, O_RDONLY);
    if (fd < 0) hyla_die("cannot open %s", path);
    for (size_t done = 0; done < bytes;) {
        ssize_t n = read(fd, data + done, bytes - done);
        if (n <= 0) hyla_die("cannot read %s", path);
        done += (size_t)n;
    }
    close(fd);
    return hyla_now_seconds() - t0;
}

int bench_checkpoint_main(int argc, char **argv) {
    size_t mb = 256;
    const char *dir = "/tmp", *format = "table";
    int cold = 0;
    for (int i = 1; i < argc && !strcmp(argv[i], "--cold"); i++) cold = 1, argv[i] = argv[0];
    for (int i = 1 + cold; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mb")) mb = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--format")) format = argv[i + 1];
        else return fprintf(stderr, "hyla: error: usage: hyla bench checkpoint [--cold] [--mb N] [--dir DIR] [--format table|json]\n"), 2;
    }
    if (mb == 0) return fprintf(stderr, "hyla: error: --mb needs a positive size\n"), 2;
    /* params, m and v of UNITS units: mb megabytes in all */
    const size_t per_unit = mb * 1024 * 1024 / 4 / 3 / UNITS;
    struct ckpt_unit units[UNITS];
    char names[UNITS][16];
    float *param[UNITS], *m[UNITS], *v[UNITS];
    for (int u = 0; u < UNITS; u++) {
        snprintf(names[u], sizeof names[u], "unit%d", u);
        units[u] = (struct ckpt_unit){.name = names[u], .unit_count = per_unit};
        param[u] = hyla_malloc(per_unit * 4), m[u] = hyla_malloc(per_unit * 4), v[u] = hyla_malloc(per_unit * 4);
        for (size_t i = 0; i < per_unit; i++) param[u][i] = (float)i, m[u][i] = 0.5f, v[u][i] = 0.25f;
    }
    struct ckpt_rank_data d = {.rank = 0, .world_size = 1, .n_units = UNITS, .units = units, .param = param,
                               .adam_m = m, .adam_v = v, .step = 1};
    char root[1024], plain[1100], step_dir[1200];
    snprintf(root, sizeof root, "%s/hyla_bench_ckpt_%d", dir, (int)getpid());
    snprintf(plain, sizeof plain, "%s.plain", root);
    const size_t bytes = (size_t)UNITS * per_unit * 12;
    char *buf = hyla_malloc(bytes);
    memset(buf, 7, bytes);
    /* alternate the four measurements over several rounds and keep the medians: the
     * virtual disk's write speed drifts from one write to the next */
    enum { ROUNDS = 5 };
    double tw[ROUNDS], ts[ROUNDS], tr[ROUNDS], tl[ROUNDS];
    struct ckpt_error err;
    for (int round = 0; round < ROUNDS; round++) {
        d.step = round + 1;
        tw[round] = plain_write(plain, buf, bytes);
        double written = 0, t0 = hyla_now_seconds();
        if (ckpt_save(root, &d, NULL, &written, &err)) hyla_die("%s", err.message);
        ts[round] = hyla_now_seconds() - t0;
        if (cold && !drop_page_cache()) return fprintf(stderr, "hyla: error: --cold needs root (/proc/sys/vm/drop_caches)\n"), 1;
        tr[round] = plain_read(plain, buf, bytes);
        snprintf(step_dir, sizeof step_dir, "%s/step_%08d", root, round + 1);
        if (cold) drop_page_cache();
        t0 = hyla_now_seconds();
        if (ckpt_load(step_dir, &d, &err)) hyla_die("%s", err.message);
        tl[round] = hyla_now_seconds() - t0;
        if (ckpt_apply_retention(root, 0, 0, &err)) hyla_die("%s", err.message);
    }
    double t_plain_w = median(tw, ROUNDS), t_save = median(ts, ROUNDS), t_plain_r = median(tr, ROUNDS);
    double t_load = median(tl, ROUNDS);
    const double MB = (double)bytes / (1024.0 * 1024.0);
    if (!strcmp(format, "json")) {
        json_t *o = json_pack("{s:f, s:f, s:f, s:f, s:f}", "megabytes", MB, "save_mb_s", MB / t_save, "plain_write_mb_s",
                              MB / t_plain_w, "load_mb_s", MB / t_load, "plain_read_mb_s", MB / t_plain_r);
        char *text = json_dumps(o, JSON_INDENT(2));
        puts(text);
        free(text);
        json_decref(o);
    } else {
        printf("%.0f MB of shards in %s%s, medians of 5 rounds\n", MB, dir, cold ? " (page cache emptied before each read)" : "");
        printf("  save  %8.1f MB/s   plain write+fsync %8.1f MB/s   ratio %5.1f%%\n", MB / t_save, MB / t_plain_w,
               100 * t_plain_w / t_save);
        printf("  load  %8.1f MB/s   plain read        %8.1f MB/s   ratio %5.1f%%\n", MB / t_load, MB / t_plain_r,
               100 * t_plain_r / t_load);
    }
    unlink(plain);
    rmdir(root);
    for (int u = 0; u < UNITS; u++) free(param[u]), free(m[u]), free(v[u]);
    free(buf);
    return 0;
}
