#include "harness.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks_run, checks_failed;

double check_le(const char *what, double value, double bound) {
    checks_run++;
    int ok = value <= bound; /* false for NaN */
    if (!ok) checks_failed++;
    printf("%s %-60s %.3e (bound %.1e)\n", ok ? "ok  " : "FAIL", what, value, bound);
    return value;
}

void check_true(const char *what, int cond) {
    checks_run++;
    if (!cond) checks_failed++;
    printf("%s %s\n", cond ? "ok  " : "FAIL", what);
}

void check_bitwise_equal(const char *what, const void *a, const void *b, size_t bytes) {
    check_true(what, memcmp(a, b, bytes) == 0);
}

int test_finish(void) {
    printf("%d checks, %d failed\n", checks_run, checks_failed);
    return checks_failed == 0 && checks_run > 0 ? 0 : 1;
}

void fill_uniform_f64(double *x, size_t n, double lo, double hi, uint64_t seed) {
    uint64_t key = hyla_rng_key(seed, HYLA_RNG_TEST, 0, 0);
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * hyla_rng_uniform_f64(key, i);
}

void fill_uniform_f32(float *x, size_t n, float lo, float hi, uint64_t seed) {
    uint64_t key = hyla_rng_key(seed, HYLA_RNG_TEST, 0, 0);
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * hyla_rng_uniform_f64(key, i));
}

void copy_f64_to_f32(float *dst, const double *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

void copy_f32_to_f64(double *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

double rel_err_f64(const double *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

double rel_err_f32(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

double dot_f64(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

double *alloc_f64(size_t n) { return hyla_calloc(n, sizeof(double)); }
float *alloc_f32(size_t n) { return hyla_calloc(n, sizeof(float)); }

double fd_check(const char *what, double *x, size_t n, const double *analytic, fd_loss_fn loss, void *ctx,
                double h) {
    double *numeric = alloc_f64(n);
    for (size_t i = 0; i < n; i++) {
        double saved = x[i];
        x[i] = saved + h;
        double up = loss(ctx);
        x[i] = saved - h;
        double down = loss(ctx);
        x[i] = saved;
        numeric[i] = (up - down) / (2 * h);
    }
    char label[160];
    snprintf(label, sizeof label, "%s: backward vs finite differences", what);
    double err = check_le(label, rel_err_f64(analytic, numeric, n), FD_TOLERANCE);
    free(numeric);
    return err;
}

void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1024];
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p) continue;
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}
