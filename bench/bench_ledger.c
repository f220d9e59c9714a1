/* `hyla bench ledger`: how fast the coordinator can write the ledger and how fast
 * `hyla ledger` answers on a big one.
 *   ingest: 1M metric rows (20 runs x 5 keys x 10k steps, arriving step by step as the
 *           coordinator receives them) and ~100k head-stat rows (20 runs x 2 LTE layers x
 *           8 heads every 32 steps), through the writer API with its default commit policy;
 *   query:  open read-only + query + close, as one `hyla ledger` call does, median and max
 *           over repeats: metrics of one run, of 4 runs, heads (long and wide), runs with a
 *           filter, compare.
 * Targets (docs/performance.md): ingest >= 100k rows/s, each query < 100 ms. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/bench_ledger.h"
#include "common/timer.h"
#include "experiments/ledger.h"
#include "experiments/ledger_query.h"

enum { RUNS = 20, KEYS = 5, LAYERS = 2, HEADS = 8, HEAD_EVERY = 32, MAX_REPEATS = 1000 };

struct bench_config {
    int json, keep, repeats;
    long steps; /* per run: metric rows = RUNS x KEYS x steps */
    char dir[512];
};

struct query_result {
    const char *name;
    size_t rows;
    double median_ms, max_ms;
};

struct bench_result {
    long metric_rows, head_rows;
    double metric_rate, head_rate, file_mib;
    struct query_result q[6];
    int n_q;
};

static int bench_fail(const struct hyla_ledger_error *err) {
    fprintf(stderr, "hyla: error: bench ledger: %s\n", err->message);
    return 1;
}

/* ---- ingest ---------------------------------------------------------------------------------- */

static int create_runs(struct hyla_ledger *l, int64_t *runs, struct hyla_ledger_error *err) {
    int64_t batch;
    if (hyla_ledger_add_batch(l, "bench", NULL, &batch, err)) return -1;
    for (int r = 0; r < RUNS; r++) {
        char name[32], buffer[16];
        snprintf(name, sizeof name, "run-%02d", r);
        snprintf(buffer, sizeof buffer, "%d", 64 << (r % 4));
        const char *keys[] = {"name", "model.attn.buffer_size", "train.lr"};
        const char *texts[] = {name, buffer, "0.001"};
        double values[] = {NAN, 64 << (r % 4), 1e-3};
        if (hyla_ledger_add_run(l, batch, name, "bench: true\n", "0000000000000000", 1, 0, &runs[r], err) ||
            hyla_ledger_add_params(l, runs[r], keys, texts, values, 3, err) ||
            hyla_ledger_set_status(l, runs[r], HYLA_RUN_RUNNING, NULL, err))
            return -1;
    }
    return 0;
}

static int ingest_metrics(struct hyla_ledger *l, const int64_t *runs, long steps, double *seconds,
                          struct hyla_ledger_error *err) {
    static const char *const KEY_NAMES[KEYS] = {"loss", "lr", "grad_norm", "tokens_per_s", "eval_loss"};
    double t0 = hyla_now_seconds();
    for (long s = 0; s < steps; s++)
        for (int r = 0; r < RUNS; r++) {
            double values[KEYS] = {3.0 + 1.0 / (double)(s + 1), 1e-3, 0.5, 1e5, 3.1};
            if (hyla_ledger_add_metrics(l, runs[r], s, 1.7e9 + (double)s, KEY_NAMES, values, KEYS, err)) return -1;
        }
    if (hyla_ledger_flush(l, err)) return -1;
    *seconds = hyla_now_seconds() - t0;
    return 0;
}

static int ingest_heads(struct hyla_ledger *l, const int64_t *runs, long steps, long *rows, double *seconds,
                        struct hyla_ledger_error *err) {
    double t0 = hyla_now_seconds(), kept[HEADS], sparsity[HEADS], lambda[HEADS];
    *rows = 0;
    for (long s = 0; s < steps; s += HEAD_EVERY)
        for (int r = 0; r < RUNS; r++)
            for (int layer = 0; layer < LAYERS; layer++) {
                for (int h = 0; h < HEADS; h++)
                    kept[h] = 256 + h, sparsity[h] = 0.9, lambda[h] = 1e-3 / (double)(s + 1 + h);
                if (hyla_ledger_add_head_stats(l, runs[r], s, 2 * layer + 1, HEADS, kept, sparsity, lambda, err))
                    return -1;
                *rows += HEADS;
            }
    if (hyla_ledger_flush(l, err)) return -1;
    *seconds = hyla_now_seconds() - t0;
    return 0;
}

/* ---- queries ----------------------------------------------------------------------------------- */

enum query_kind { Q_METRICS_ONE, Q_METRICS_FOUR, Q_HEADS_LONG, Q_HEADS_WIDE, Q_RUNS_FILTER, Q_COMPARE };

/* One `hyla ledger` call: open, resolve, query, close. Returns the rows, -1 on error. */
static long one_query(const char *path, enum query_kind kind, struct hyla_ledger_error *err) {
    struct hyla_ledger *l = NULL;
    if (hyla_ledger_open_readonly(path, &l, err)) return -1;
    int64_t ids[4];
    const char *names[4] = {"run-07", "run-08", "run-09", "run-10"};
    struct hyla_table *t = NULL;
    struct hyla_ledger_filter *f = NULL;
    struct hyla_ledger_comparison c = {0};
    long rows = -1;
    int rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++) rc = hyla_ledger_resolve_run(l, names[i], &ids[i], err);
    if (rc == 0) switch (kind) {
        case Q_METRICS_ONE: rc = hyla_ledger_query_metrics(l, ids, 1, "loss", 1, &t, err); break;
        case Q_METRICS_FOUR: rc = hyla_ledger_query_metrics(l, ids, 4, "loss", 1, &t, err); break;
        case Q_HEADS_LONG: rc = hyla_ledger_query_heads(l, ids[0], -1, NULL, &t, err); break;
        case Q_HEADS_WIDE: rc = hyla_ledger_query_heads(l, ids[0], 1, "lambda", &t, err); break;
        case Q_RUNS_FILTER:
            rc = hyla_ledger_filter_parse("attn.buffer_size>=256 and status=running", &f, err) ||
                 hyla_ledger_query_runs(l, f, &t, err);
            break;
        case Q_COMPARE: rc = hyla_ledger_query_compare(l, ids, 4, "loss", 5000, &c, err); break;
        }
    if (rc == 0) rows = t ? (long)t->n_rows : (long)c.metrics->n_rows;
    hyla_table_free(t);
    hyla_ledger_filter_free(f);
    hyla_ledger_comparison_free(&c);
    struct hyla_ledger_error ignored;
    hyla_ledger_close(l, &ignored);
    return rc == 0 ? rows : -1;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int time_query(const char *path, enum query_kind kind, const char *name, int repeats, struct query_result *q,
                      struct hyla_ledger_error *err) {
    double ms[MAX_REPEATS];
    long rows = 0;
    for (int i = 0; i < repeats; i++) {
        double t0 = hyla_now_seconds();
        rows = one_query(path, kind, err);
        ms[i] = 1e3 * (hyla_now_seconds() - t0);
        if (rows < 0) return -1;
    }
    qsort(ms, (size_t)repeats, sizeof *ms, compare_doubles);
    *q = (struct query_result){name, (size_t)rows, ms[repeats / 2], ms[repeats - 1]};
    return 0;
}

/* ---- report ------------------------------------------------------------------------------------ */

static void print_table(const struct bench_result *b, const char *path) {
    printf("ledger bench: %ld metric rows, %ld head-stat rows, %.1f MiB (%s)\n", b->metric_rows, b->head_rows,
           b->file_mib, path);
    printf("%-60s %14s %12s  %s\n", "what", "result", "target", "");
    printf("%-60s %10.0f k/s %12s  %s\n", "ingest metric rows (rows/s)", b->metric_rate / 1e3, ">= 100 k/s",
           b->metric_rate >= 1e5 ? "ok" : "SLOW");
    printf("%-60s %10.0f k/s %12s  %s\n", "ingest head-stat rows (rows/s)", b->head_rate / 1e3, ">= 100 k/s",
           b->head_rate >= 1e5 ? "ok" : "SLOW");
    for (int i = 0; i < b->n_q; i++) {
        char what[96];
        snprintf(what, sizeof what, "%s (%zu rows), median / max", b->q[i].name, b->q[i].rows);
        printf("%-60s %5.1f / %5.1f ms %9s  %s\n", what, b->q[i].median_ms, b->q[i].max_ms, "< 100 ms",
               b->q[i].max_ms < 100 ? "ok" : "SLOW");
    }
}

static int print_json(const struct bench_result *b) {
    json_t *queries = json_array();
    for (int i = 0; queries && i < b->n_q; i++)
        if (json_array_append_new(queries, json_pack("{s:s, s:I, s:f, s:f}", "query", b->q[i].name, "rows",
                                                     (json_int_t)b->q[i].rows, "median_ms", b->q[i].median_ms,
                                                     "max_ms", b->q[i].max_ms)) != 0)
            json_decref(queries), queries = NULL;
    json_t *root = queries ? json_pack("{s:I, s:I, s:f, s:f, s:f, s:o}", "metric_rows", (json_int_t)b->metric_rows,
                                       "head_stat_rows", (json_int_t)b->head_rows, "ingest_metric_rows_per_s",
                                       b->metric_rate, "ingest_head_rows_per_s", b->head_rate, "file_mib",
                                       b->file_mib, "queries", queries)
                           : NULL;
    int rc = root ? json_dumpf(root, stdout, JSON_INDENT(2)) : -1;
    json_decref(root);
    if (rc == 0) rc = fputc('\n', stdout) == EOF ? -1 : 0;
    return rc;
}

/* ---- main ------------------------------------------------------------------------------------- */

static int parse(int argc, char **argv, struct bench_config *c) {
    *c = (struct bench_config){.repeats = 20, .steps = 10000};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(a, "--format") && v && (!strcmp(v, "json") || !strcmp(v, "table"))) c->json = !strcmp(v, "json"), i++;
        else if (!strcmp(a, "--dir") && v) snprintf(c->dir, sizeof c->dir, "%s", v), i++;
        else if (!strcmp(a, "--keep")) c->keep = 1;
        else if (!strcmp(a, "--repeats") && v && (c->repeats = (int)strtol(v, &end, 10)) > 0 && !*end &&
                 c->repeats <= MAX_REPEATS) i++;
        else if (!strcmp(a, "--steps") && v && (c->steps = strtol(v, &end, 10)) > 0 && !*end) i++;
        else {
            fprintf(stderr, "hyla: error: usage: hyla bench ledger [--format table|json] [--dir DIR] [--keep] "
                            "[--repeats N (1..%d)] [--steps N (per run; 10000 = 1M metric rows)]\n",
                    MAX_REPEATS);
            return -1;
        }
    }
    return 0;
}

static int run_bench(const struct bench_config *c, const char *path, struct bench_result *b,
                     struct hyla_ledger_error *err) {
    struct hyla_ledger *l = NULL;
    int64_t runs[RUNS];
    double metric_s = 0, head_s = 0;
    if (hyla_ledger_open(path, NULL, &l, err) || create_runs(l, runs, err) ||
        ingest_metrics(l, runs, c->steps, &metric_s, err) || ingest_heads(l, runs, c->steps, &b->head_rows, &head_s, err)) {
        struct hyla_ledger_error ignored;
        hyla_ledger_close(l, &ignored);
        return -1;
    }
    if (hyla_ledger_close(l, err)) return -1;
    b->metric_rows = (long)RUNS * KEYS * c->steps;
    b->metric_rate = (double)b->metric_rows / metric_s;
    b->head_rate = (double)b->head_rows / head_s;
    struct stat st;
    b->file_mib = stat(path, &st) == 0 ? (double)st.st_size / (1 << 20) : 0;
    static const char *const NAMES[] = {"metrics run-07 --key loss", "metrics 4 runs --key loss",
                                        "heads run-07 (long)", "heads run-07 --layer 1 --key lambda",
                                        "runs buffer_size>=256 and status=running", "compare 4 runs --step 5000"};
    for (int k = 0; k < 6; k++)
        if (time_query(path, (enum query_kind)k, NAMES[k], c->repeats, &b->q[b->n_q++], err)) return -1;
    return 0;
}

int bench_ledger_main(int argc, char **argv) {
    struct bench_config c;
    if (parse(argc, argv, &c)) return 2;
    char tmpl[] = "/tmp/hyla-bench-ledger-XXXXXX";
    if (!c.dir[0]) {
        if (!mkdtemp(tmpl)) {
            fprintf(stderr, "hyla: error: bench ledger: cannot create a folder in /tmp: %s; pass --dir DIR\n",
                    strerror(errno));
            return 1;
        }
        snprintf(c.dir, sizeof c.dir, "%s", tmpl);
    }
    char path[600];
    snprintf(path, sizeof path, "%s/bench-ledger.db", c.dir);
    struct stat st;
    if (stat(path, &st) == 0) {
        fprintf(stderr, "hyla: error: bench ledger: %s exists; remove it or pass another --dir\n", path);
        return 1;
    }
    struct bench_result b = {0};
    struct hyla_ledger_error err;
    int rc = run_bench(&c, path, &b, &err) ? bench_fail(&err) : 0;
    if (rc == 0 && c.json) rc = print_json(&b) ? 1 : 0;
    else if (rc == 0) print_table(&b, path);
    if (!c.keep) {
        const char *suffixes[] = {"", "-wal", "-shm"};
        for (int i = 0; i < 3; i++) {
            char f[640];
            snprintf(f, sizeof f, "%s%s", path, suffixes[i]);
            if (remove(f) != 0 && errno != ENOENT) fprintf(stderr, "hyla: warning: cannot remove %s\n", f);
        }
        if (!strcmp(c.dir, tmpl) && rmdir(c.dir) != 0) /* only the folder we made */
            fprintf(stderr, "hyla: warning: cannot remove %s: %s\n", c.dir, strerror(errno));
    }
    return rc;
}
