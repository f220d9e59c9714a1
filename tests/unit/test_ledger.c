/* The experiment ledger: schema version and migration, every table written and read back,
 * replayed metric steps ignored, snapshot reads while the writer holds a transaction, the
 * runs filter language (numbers vs text, and/or/not, errors), not-found messages, the
 * read-only sql command, and the table/csv/json output. */
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "experiments/ledger.h"
#include "experiments/ledger_filter.h"
#include "experiments/ledger_query.h"
#include "harness.h"

static char dir[64];

static void path_in_dir(char *buf, size_t size, const char *name) { snprintf(buf, size, "%s/%s", dir, name); }

static void must(int rc, const struct hyla_ledger_error *err, const char *what) {
    if (rc != 0) printf("     %s: %s\n", what, err->message);
    check_true(what, rc == 0);
}

/* An error whose message contains every given fragment (NULL-terminated list). */
static void check_error(const char *what, int rc, const struct hyla_ledger_error *err, ...) {
    int ok = rc != 0;
    va_list ap;
    va_start(ap, err);
    for (const char *frag; (frag = va_arg(ap, const char *)) != NULL;)
        if (!strstr(err->message, frag)) ok = 0;
    va_end(ap);
    printf("     -> %s\n", rc ? err->message : "(no error)");
    check_true(what, ok);
}

static int64_t sql_int(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int64_t v = -999;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW)
        v = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return v;
}

static void sql_exec(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) printf("     sql_exec: %s\n", sqlite3_errmsg(db));
    sqlite3_close(db);
    check_true(sql, rc == SQLITE_OK);
}

/* ---- schema ------------------------------------------------------------------------------ */

static void test_schema_and_migration(void) {
    struct hyla_ledger_error err;
    struct hyla_ledger *l = NULL;
    char path[128], nested[160];
    path_in_dir(path, sizeof path, "old.db");
    /* A v1 ledger as an older hyla wrote it, with one run in it. */
    struct hyla_ledger_options v1 = {.schema_version = 1};
    must(hyla_ledger_open(path, &v1, &l, &err), &err, "create a v1 ledger");
    must(hyla_ledger_close(l, &err), &err, "close it");
    check_true("v1: user_version 1", sql_int(path, "PRAGMA user_version") == 1);
    check_true("v1: no head_stats table",
               sql_int(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'head_stats'") == 0);
    sql_exec(path, "INSERT INTO batches(name, created_at) VALUES ('old', 1);"
                   "INSERT INTO runs(batch_id, name, config, config_hash, world_size, created_at) "
                   "VALUES (1, 'r', 'x: 1', 'abc', 1, 1);"
                   "INSERT INTO metrics VALUES (1, 'loss', 10, 2.5, 1);"
                   "INSERT INTO checkpoints(run_id, step, path, created_at) VALUES (1, 10, 'ck/step_10', 1);");
    check_error("a reader refuses an older schema and says how to migrate", hyla_ledger_open_readonly(path, &l, &err),
                &err, "schema version 1", "hyla ledger --ledger", "migrate", NULL);
    /* The writer migrates in place. */
    must(hyla_ledger_open(path, NULL, &l, &err), &err, "open the v1 ledger with the writer");
    int version = 0;
    must(hyla_ledger_schema_version(l, &version, &err), &err, "read the version");
    check_true("migrated to the current version", version == HYLA_LEDGER_SCHEMA_VERSION);
    must(hyla_ledger_add_head_stat(l, 1, 10, 3, 0, 100, 0.5, 1e-4, &err), &err, "head stats after migration");
    must(hyla_ledger_close(l, &err), &err, "close");
    check_true("old metric row kept", sql_int(path, "SELECT count(*) FROM metrics WHERE step = 10") == 1);
    check_true("new column with its default", sql_int(path, "SELECT bytes FROM checkpoints") == 0);
    check_true("new table usable", sql_int(path, "SELECT count(*) FROM head_stats") == 1);
    check_true("WAL mode", sql_int(path, "SELECT journal_mode = 'wal' FROM pragma_journal_mode") == 1);
    check_true("marked as hyla's", sql_int(path, "PRAGMA application_id") == 0x68796c61);

    /* Newer than this hyla; not a ledger; a missing file; folders created. */
    sql_exec(path, "PRAGMA user_version = 99");
    check_error("a newer schema is refused", hyla_ledger_open(path, NULL, &l, &err), &err, "schema version 99",
                "newer", NULL);
    char foreign[128];
    path_in_dir(foreign, sizeof foreign, "foreign.db");
    sql_exec(foreign, "CREATE TABLE t(x)");
    check_error("another SQLite file is refused", hyla_ledger_open(foreign, NULL, &l, &err), &err, "not a hyla ledger",
                "ledger.path", NULL);
    char missing[128];
    path_in_dir(missing, sizeof missing, "nope.db");
    check_error("a missing file, read-only", hyla_ledger_open_readonly(missing, &l, &err), &err, "no ledger at",
                "--ledger", NULL);
    snprintf(nested, sizeof nested, "%s/a/b/ledger.db", dir);
    must(hyla_ledger_open(nested, NULL, &l, &err), &err, "folders are created");
    must(hyla_ledger_close(l, &err), &err, "close");
}

/* ---- a populated ledger --------------------------------------------------------------------- */

struct fixture {
    int64_t batch, other_batch, runs[4];
};

static void add_run(struct hyla_ledger *l, int64_t batch, const char *name, int buffer, const char *attn_type,
                    const char *tag, int64_t *id) {
    struct hyla_ledger_error err;
    char config[256], buf[16];
    snprintf(config, sizeof config, "name: %s\nmodel:\n  attn:\n    buffer_size: %d\n", name, buffer);
    must(hyla_ledger_add_run(l, batch, name, config, "0123456789abcdef", 2, 0, id, &err), &err, "add run");
    snprintf(buf, sizeof buf, "%d", buffer);
    const char *keys[] = {"name", "model.attn.buffer_size", "model.attn.attn_type", "train.lr", "tag"};
    const char *texts[] = {name, buf, attn_type, "0.001", tag};
    double values[] = {NAN, buffer, NAN, 1e-3, NAN};
    must(hyla_ledger_add_params(l, *id, keys, texts, values, 5, &err), &err, "add params");
}

static void populate(struct hyla_ledger *l, struct fixture *f) {
    struct hyla_ledger_error err;
    must(hyla_ledger_add_batch(l, "sweep", "batch.yaml", &f->batch, &err), &err, "add batch");
    int64_t again = -1;
    must(hyla_ledger_add_batch(l, "sweep", NULL, &again, &err), &err, "add the same batch again");
    check_true("a batch name gives the same id", again == f->batch);
    must(hyla_ledger_add_batch(l, "other", NULL, &f->other_batch, &err), &err, "second batch");
    add_run(l, f->batch, "lte-128", 128, "lte", "9", &f->runs[0]);
    add_run(l, f->batch, "lte-256", 256, "lte", "10", &f->runs[1]);
    add_run(l, f->batch, "nsa-512", 512, "nsa", "10", &f->runs[2]);
    add_run(l, f->other_batch, "lte-256", 256, "lte", "x", &f->runs[3]); /* same name, other batch */
    for (int r = 0; r < 3; r++) {
        for (int step = 0; step < 100; step++) {
            const char *keys[] = {"loss", "lr"};
            double values[] = {5.0 - 0.01 * step - r, 1e-3};
            must(step % 50 ? hyla_ledger_add_metrics(l, f->runs[r], step, 1000.0 + step, keys, values, 2, &err) * 0
                           : hyla_ledger_add_metrics(l, f->runs[r], step, 1000.0 + step, keys, values, 2, &err),
                 &err, step % 50 ? "metric rows" : "metric rows (checked)");
            if (step % 10 == 0)
                for (int layer = 1; layer <= 3; layer += 2) {
                    double kept[4], sparsity[4], lambda[4];
                    for (int h = 0; h < 4; h++)
                        kept[h] = 100 + 10 * h + step, sparsity[h] = 0.5, lambda[h] = 1e-3 * (h + 1) / (step + 1);
                    must(hyla_ledger_add_head_stats(l, f->runs[r], step, layer, 4, kept, sparsity, lambda, &err), &err,
                         step == 0 && layer == 1 ? "head stats" : "head stats (more)");
                }
        }
    }
    must(hyla_ledger_add_metric(l, f->runs[0], "eval_accuracy", 99, 0.75, 0, &err), &err, "eval metric");
    must(hyla_ledger_add_event(l, f->runs[0], 42, "nan_skip", "grad norm is nan", &err), &err, "event");
    must(hyla_ledger_add_event(l, f->runs[0], 42, "nan_skip", "grad norm is nan", &err), &err, "the same event again");
    must(hyla_ledger_add_event(l, f->runs[0], -1, "restart", "attempt 1", &err), &err, "event without a step");
    must(hyla_ledger_add_checkpoint(l, f->runs[0], 50, "ck/step_00000050", 12345, &err), &err, "checkpoint");
    must(hyla_ledger_add_checkpoint(l, f->runs[0], 50, "ck/step_00000050", 12346, &err), &err, "checkpoint again");
    must(hyla_ledger_set_status(l, f->runs[0], HYLA_RUN_RUNNING, NULL, &err), &err, "running");
    must(hyla_ledger_set_status(l, f->runs[0], HYLA_RUN_FINISHED, NULL, &err), &err, "finished");
    must(hyla_ledger_set_status(l, f->runs[1], HYLA_RUN_RUNNING, NULL, &err), &err, "running");
    must(hyla_ledger_set_status(l, f->runs[2], HYLA_RUN_FAILED, "diverged: 5 bad steps", &err), &err, "failed");
    must(hyla_ledger_flush(l, &err), &err, "flush");
}

static void test_writer(struct hyla_ledger *l, const struct fixture *f) {
    struct hyla_ledger_error err;
    struct hyla_ledger_run_state st;
    must(hyla_ledger_find_run(l, f->batch, "lte-128", &st, &err), &err, "find run");
    check_true("found, finished, last step 99",
               st.found && st.id == f->runs[0] && st.status == HYLA_RUN_FINISHED && st.last_step == 99);
    check_true("config hash kept", !strcmp(st.config_hash, "0123456789abcdef"));
    must(hyla_ledger_find_run(l, f->batch, "absent", &st, &err), &err, "find an absent run");
    check_true("absent: found = 0", !st.found);
    int64_t id;
    check_error("a second run of the same name is refused",
                hyla_ledger_add_run(l, f->batch, "lte-128", "", "", 1, 0, &id, &err), &err, "already has a run named",
                "find_run", NULL);
    check_error("a metric of a run that does not exist",
                hyla_ledger_add_metric(l, 9999, "loss", 1, 1.0, 0, &err), &err, "FOREIGN KEY", NULL);
    check_error("status of a run that does not exist",
                hyla_ledger_set_status(l, 9999, HYLA_RUN_RUNNING, NULL, &err), &err, "no run with id 9999", NULL);
    /* A relaunch: new attempt; replayed steps keep their first values. */
    must(hyla_ledger_begin_attempt(l, f->runs[1], 1, 4, &err), &err, "begin attempt 1");
    must(hyla_ledger_add_metric(l, f->runs[1], "loss", 50, 123.0, 0, &err), &err, "replay step 50");
    must(hyla_ledger_add_metric(l, f->runs[1], "loss", 100, 3.0, 0, &err), &err, "a new step");
    must(hyla_ledger_flush(l, &err), &err, "flush");
    must(hyla_ledger_find_run(l, f->batch, "lte-256", &st, &err), &err, "find run again");
    check_true("attempt 1, world size 4, queued, last step 100",
               st.attempt == 1 && st.world_size == 4 && st.status == HYLA_RUN_QUEUED && st.last_step == 100);
}

/* ---- reading ------------------------------------------------------------------------------------ */

static void test_reads(struct hyla_ledger *r, const struct fixture *f) {
    struct hyla_ledger_error err;
    struct hyla_table *t = NULL;
    int64_t id = -1;
    must(hyla_ledger_resolve_run(r, "lte-128", &id, &err), &err, "resolve by name");
    check_true("  id", id == f->runs[0]);
    must(hyla_ledger_resolve_run(r, "other/lte-256", &id, &err), &err, "resolve by batch/name");
    check_true("  id", id == f->runs[3]);
    must(hyla_ledger_resolve_run(r, "3", &id, &err), &err, "resolve by id");
    check_true("  id", id == 3);
    check_error("an ambiguous name lists the candidates", hyla_ledger_resolve_run(r, "lte-256", &id, &err), &err,
                "ambiguous", "sweep/lte-256", "other/lte-256", NULL);
    check_error("an unknown run lists the runs", hyla_ledger_resolve_run(r, "lte-999", &id, &err), &err,
                "no run 'lte-999'", "sweep/lte-128", "nsa-512 (failed)", NULL);

    /* metrics: replay ignored, first value kept; --every */
    int64_t ids[2] = {f->runs[1], f->runs[0]};
    must(hyla_ledger_query_metrics(r, ids, 2, "loss", 1, &t, &err), &err, "metrics of two runs");
    check_true("101 + 100 rows", t && t->n_rows == 201);
    check_true("step 50 of the replayed run kept its first value",
               t && fabs(hyla_table_number(t, 50, 2) - (5.0 - 0.5 - 1)) < 1e-12);
    check_true("rows carry the run name", t && !strcmp(hyla_table_text(t, 0, 0), "lte-256"));
    hyla_table_free(t);
    must(hyla_ledger_query_metrics(r, ids + 1, 1, "loss", 25, &t, &err), &err, "metrics --every 25");
    check_true("steps 0 25 50 75", t && t->n_rows == 4 && hyla_table_number(t, 3, 1) == 75);
    hyla_table_free(t);
    t = NULL;
    check_error("an unknown metric lists the run's keys", hyla_ledger_query_metrics(r, ids + 1, 1, "los", 1, &t, &err),
                &err, "no metric 'los'", "eval_accuracy, loss, lr", NULL);

    /* heads: long and wide */
    must(hyla_ledger_query_heads(r, f->runs[0], -1, NULL, &t, &err), &err, "heads, long form");
    check_true("10 steps x 2 layers x 4 heads", t && t->n_rows == 80 && t->n_cols == 6);
    hyla_table_free(t);
    must(hyla_ledger_query_heads(r, f->runs[0], 3, "lambda", &t, &err), &err, "heads layer 3, lambda, wide");
    check_true("10 steps, step + 4 heads", t && t->n_rows == 10 && t->n_cols == 5 && !strcmp(t->cols[4], "L3.h3"));
    check_true("lambda of head 3 at step 90", t && fabs(hyla_table_number(t, 9, 4) - 4e-3 / 91) < 1e-15);
    hyla_table_free(t);
    t = NULL;
    check_error("a layer without stats lists the layers", hyla_ledger_query_heads(r, f->runs[0], 2, NULL, &t, &err),
                &err, "no head statistics for layer 2", "1, 3", NULL);
    check_error("a run without stats says why", hyla_ledger_query_heads(r, f->runs[3], -1, NULL, &t, &err), &err,
                "has no head statistics", "head_stats_every", NULL);
    check_error("an unknown statistic", hyla_ledger_query_heads(r, f->runs[0], -1, "keep", &t, &err), &err,
                "kept, sparsity and lambda", NULL);

    /* events: the duplicate stored once */
    must(hyla_ledger_query_events(r, f->runs[0], &t, &err), &err, "events");
    check_true("2 events, the repeated one once", t && t->n_rows == 2);
    check_true("restart has no step", t && hyla_table_cell(t, 1, 1)->type == HYLA_CELL_NULL);
    hyla_table_free(t);

    /* show */
    struct hyla_ledger_run_details d;
    must(hyla_ledger_query_show(r, f->runs[0], &d, &err), &err, "show");
    int status_row = -1;
    for (size_t i = 0; i < d.fields->n_rows; i++)
        if (!strcmp(hyla_table_text(d.fields, i, 0), "status")) status_row = (int)i;
    check_true("show: status finished",
               status_row >= 0 && !strcmp(hyla_table_text(d.fields, (size_t)status_row, 1), "finished"));
    check_true("show: 3 metric keys, 1 checkpoint of 12346 bytes, 2 event kinds",
               d.metrics->n_rows == 3 && d.checkpoints->n_rows == 1 &&
                   hyla_table_number(d.checkpoints, 0, 2) == 12346 && d.events->n_rows == 2);
    check_true("show: config text", d.config && strstr(d.config, "buffer_size: 128"));
    hyla_ledger_run_details_free(&d);

    /* compare */
    struct hyla_ledger_comparison c;
    int64_t three[3] = {f->runs[0], f->runs[1], f->runs[2]};
    must(hyla_ledger_query_compare(r, three, 3, "loss", 60, &c, &err), &err, "compare");
    check_true("one row per run", c.metrics->n_rows == 3 && c.metrics->n_cols == 9);
    check_true("last, min and value at step 60 of run 0",
               fabs(hyla_table_number(c.metrics, 0, 4) - 4.01) < 1e-12 &&
                   fabs(hyla_table_number(c.metrics, 0, 5) - 4.01) < 1e-12 &&
                   hyla_table_number(c.metrics, 0, 6) == 99 && fabs(hyla_table_number(c.metrics, 0, 8) - 4.4) < 1e-12);
    int diff_buffer = 0, diff_lr = 0;
    for (size_t k = 0; k < c.config_diff->n_rows; k++) {
        diff_buffer |= !strcmp(hyla_table_text(c.config_diff, k, 0), "model.attn.buffer_size");
        diff_lr |= !strcmp(hyla_table_text(c.config_diff, k, 0), "train.lr");
    }
    check_true("config diff: buffer_size differs, lr does not", diff_buffer && !diff_lr);
    check_true("config diff: a column per run", c.config_diff->n_cols == 4 && !strcmp(c.config_diff->cols[3], "nsa-512"));
    hyla_ledger_comparison_free(&c);
    int64_t same[2] = {f->runs[1], f->runs[3]};
    must(hyla_ledger_query_compare(r, same, 2, NULL, -1, &c, &err), &err, "compare two runs of one name");
    check_true("their columns are told apart by id", c.config_diff->n_cols == 3 && strchr(c.config_diff->cols[1], '#'));
    hyla_ledger_comparison_free(&c);
}

/* ---- filter ---------------------------------------------------------------------------------- */

/* The names of the runs the filter selects, space-separated. */
static void filter_names(struct hyla_ledger *r, const char *text, char *out, size_t size) {
    struct hyla_ledger_error err;
    struct hyla_ledger_filter *f = NULL;
    struct hyla_table *t = NULL;
    out[0] = '\0';
    if (hyla_ledger_filter_parse(text, &f, &err) || hyla_ledger_query_runs(r, f, &t, &err)) {
        snprintf(out, size, "ERROR %s", err.message);
    } else {
        for (size_t i = 0; i < t->n_rows; i++) {
            size_t len = strlen(out);
            snprintf(out + len, size - len, "%s%s/%s", i ? " " : "", hyla_table_text(t, i, 1), hyla_table_text(t, i, 2));
        }
    }
    hyla_table_free(t);
    hyla_ledger_filter_free(f);
}

static void expect_filter(struct hyla_ledger *r, const char *text, const char *expected) {
    char got[2048], what[512];
    filter_names(r, text, got, sizeof got);
    snprintf(what, sizeof what, "filter `%s` -> [%s]", text, expected);
    if (strcmp(got, expected)) printf("     got [%s]\n", got);
    check_true(what, !strcmp(got, expected));
}

static void expect_filter_error(const char *text, const char *fragment) {
    struct hyla_ledger_error err;
    struct hyla_ledger_filter *f = NULL;
    int rc = hyla_ledger_filter_parse(text, &f, &err);
    hyla_ledger_filter_free(f);
    char what[256];
    snprintf(what, sizeof what, "bad filter `%s` names: %s", text, fragment);
    check_error(what, rc, &err, fragment, NULL);
}

static void test_filter(struct hyla_ledger *r) {
    expect_filter(r, "", "sweep/lte-128 sweep/lte-256 sweep/nsa-512 other/lte-256");
    expect_filter(r, "attn.buffer_size>=256", "sweep/lte-256 sweep/nsa-512 other/lte-256");
    expect_filter(r, "model.attn.buffer_size = 256", "sweep/lte-256 other/lte-256");
    expect_filter(r, "buffer_size<1000", "sweep/lte-128 sweep/lte-256 sweep/nsa-512 other/lte-256"); /* not "1000" < "128" */
    expect_filter(r, "buffer_size=2.56e2", "sweep/lte-256 other/lte-256");
    expect_filter(r, "tag<10", "");                  /* tag is text only: a numeric comparison matches nothing */
    expect_filter(r, "tag<'2'", "sweep/lte-256 sweep/nsa-512"); /* text: "10" < "2", "9" and "x" are not */
    expect_filter(r, "tag=\"10\"", "sweep/lte-256 sweep/nsa-512");
    expect_filter(r, "attn_type=lte and batch=sweep", "sweep/lte-128 sweep/lte-256");
    expect_filter(r, "status=finished or status=failed", "sweep/lte-128 sweep/nsa-512");
    expect_filter(r, "attn_type=lte and (status=finished OR buffer_size>200) and batch!=other",
                  "sweep/lte-128 sweep/lte-256");
    expect_filter(r, "status=failed or attn_type=lte and buffer_size<200", "sweep/lte-128 sweep/nsa-512");
    expect_filter(r, "not attn_type=lte", "sweep/nsa-512");
    expect_filter(r, "name=lte-256 and attempt>=1", "sweep/lte-256");
    expect_filter(r, "last_step>=99 and world_size=2", "sweep/lte-128 sweep/nsa-512");
    expect_filter(r, "name='x'' or 1=1 --'", ""); /* values are bound, never SQL */
    expect_filter(r, "name=\"lte-128\" or name='it''s'", "sweep/lte-128");
    expect_filter_error("attn.buffer_size>=", "column 19: expected a value after '>='");
    expect_filter_error("(status=finished", "expected ')' to close the '(' at column 1");
    expect_filter_error("status=done", "expected a status (queued, running, finished or failed)");
    expect_filter_error("a=1 b=2", "column 5: expected 'and', 'or' or the end of the filter, found 'b'");
    expect_filter_error("=5", "column 1: expected a comparison");
    expect_filter_error("x ! 3", "expected an operator");
    expect_filter_error("x = 'abc", "expected a closing '");
    expect_filter_error("id=abc", "expected a number to compare id with");
    expect_filter_error("a=1 and", "expected a comparison");
    char got[2048];
    filter_names(r, "attn.bufer_size>=256", got, sizeof got);
    printf("     -> %s\n", got);
    check_true("an unknown parameter is named, with the keys that exist",
               strstr(got, "no run has a parameter 'attn.bufer_size'") && strstr(got, "model.attn.buffer_size"));
}

/* ---- sql and output ---------------------------------------------------------------------------- */

static void test_sql(struct hyla_ledger *r) {
    struct hyla_ledger_error err;
    struct hyla_table *t = NULL;
    must(hyla_ledger_query_sql(r, "SELECT key, count(*) AS n FROM metrics GROUP BY key ORDER BY key;", &t, &err), &err,
         "sql select");
    check_true("three keys", t && t->n_rows == 3 && !strcmp(t->cols[1], "n"));
    hyla_table_free(t);
    must(hyla_ledger_query_sql(r, "PRAGMA table_info(runs)", &t, &err), &err, "sql pragma table_info");
    hyla_table_free(t);
    check_error("a write is refused", hyla_ledger_query_sql(r, "DELETE FROM metrics", &t, &err), &err, "refused", NULL);
    check_error("two statements are refused", hyla_ledger_query_sql(r, "SELECT 1; DELETE FROM runs", &t, &err), &err,
                "refused", NULL);
    check_error("ATTACH is refused", hyla_ledger_query_sql(r, "ATTACH 'x.db' AS x", &t, &err), &err, "refused", NULL);
    check_error("a writing pragma is refused", hyla_ledger_query_sql(r, "PRAGMA user_version = 7", &t, &err), &err,
                "refused", NULL);
    check_error("an unknown table lists the tables", hyla_ledger_query_sql(r, "SELECT * FROM metric", &t, &err), &err,
                "no such table", "head_stats", NULL);
    must(hyla_ledger_query_sql(r, "SELECT 1 -- a comment after", &t, &err), &err, "a trailing comment is fine");
    hyla_table_free(t);
}

static void test_output(void) {
    const char *cols[] = {"name", "value", "n"};
    struct hyla_table *t = hyla_table_new(3, cols);
    size_t r0 = hyla_table_add_row(t), r1 = hyla_table_add_row(t);
    hyla_table_set_text(t, r0, 0, "a,\"b\"");
    hyla_table_set_real(t, r0, 1, 0.1);
    hyla_table_set_int(t, r0, 2, 7);
    hyla_table_set_text(t, r1, 0, "plain");
    hyla_table_set_real(t, r1, 1, NAN);
    char buf[4096] = "";
    FILE *mem = fmemopen(buf, sizeof buf - 1, "w");
    check_true("csv printed", mem && hyla_table_print(mem, t, HYLA_FORMAT_CSV) == 0);
    if (mem) fclose(mem);
    check_true("csv quoting and exact numbers", !strcmp(buf, "name,value,n\n\"a,\"\"b\"\"\",0.1,7\nplain,,\n"));
    memset(buf, 0, sizeof buf);
    mem = fmemopen(buf, sizeof buf - 1, "w");
    check_true("json printed", mem && hyla_table_print(mem, t, HYLA_FORMAT_JSON) == 0);
    if (mem) fclose(mem);
    json_error_t jerr;
    json_t *j = json_loads(buf, 0, &jerr);
    check_true("json parses back: 2 objects, NaN as null, 0.1 exact",
               j && json_array_size(j) == 2 && json_is_null(json_object_get(json_array_get(j, 1), "value")) &&
                   json_real_value(json_object_get(json_array_get(j, 0), "value")) == 0.1);
    json_decref(j);
    memset(buf, 0, sizeof buf);
    mem = fmemopen(buf, sizeof buf - 1, "w");
    check_true("table printed", mem && hyla_table_print(mem, t, HYLA_FORMAT_TABLE) == 0);
    if (mem) fclose(mem);
    printf("%s", buf);
    check_true("table: header, rule, NULL as -", strstr(buf, "name   ") && strstr(buf, "-----") && strstr(buf, "    -"));
    hyla_table_free(t);
    enum hyla_format fmt;
    check_true("formats parse", hyla_format_parse("csv", &fmt) == 0 && fmt == HYLA_FORMAT_CSV &&
                                    hyla_format_parse("xml", &fmt) == -1);
}

/* ---- snapshots and commit policy ---------------------------------------------------------------- */

static int64_t count_metrics(struct hyla_ledger *r, int64_t run) {
    struct hyla_ledger_error err;
    struct hyla_table *t = NULL;
    int64_t n = -1;
    struct hyla_filter_bind b = {1, (double)run, NULL};
    if (hyla_ledger_select(r, "SELECT count(*) FROM metrics WHERE run_id = ?1", &b, 1, &t, &err) == 0)
        n = (int64_t)hyla_table_number(t, 0, 0);
    else
        printf("     count: %s\n", err.message);
    hyla_table_free(t);
    return n;
}

static void test_snapshots(const char *path, struct hyla_ledger *w, struct hyla_ledger *r, int64_t run) {
    struct hyla_ledger_error err;
    int64_t before = count_metrics(r, run);
    for (int i = 0; i < 10; i++) must(hyla_ledger_add_metric(w, run, "snap", i, i, 0, &err), &err, i ? "row" : "rows");
    check_true("the writer holds an open transaction", hyla_ledger_pending_rows(w) == 10);
    check_true("a reader does not see uncommitted rows and is not blocked", count_metrics(r, run) == before);
    struct hyla_ledger *r2 = NULL;
    must(hyla_ledger_open_readonly(path, &r2, &err), &err, "a new reader opens during the transaction");
    check_true("  and sees the last commit", r2 && count_metrics(r2, run) == before);
    must(hyla_ledger_flush(w, &err), &err, "commit");
    check_true("after the commit both readers see the rows",
               count_metrics(r, run) == before + 10 && r2 && count_metrics(r2, run) == before + 10);
    hyla_ledger_close(r2, &err);
    check_error("a reader cannot write", hyla_ledger_add_metric(r, run, "x", 1, 1, 0, &err), &err, "read-only", NULL);
}

static void test_commit_policy(const char *path, int64_t run) {
    struct hyla_ledger_error err;
    struct hyla_ledger *w = NULL, *r = NULL;
    struct hyla_ledger_options opt = {.max_pending_rows = 5, .max_pending_seconds = 0.05};
    must(hyla_ledger_open(path, &opt, &w, &err), &err, "writer with small limits");
    must(hyla_ledger_open_readonly(path, &r, &err), &err, "reader");
    int64_t before = count_metrics(r, run);
    for (int i = 0; i < 5; i++) must(hyla_ledger_add_metric(w, run, "policy", i, i, 0, &err), &err, "row");
    check_true("5 rows commit by themselves", count_metrics(r, run) == before + 5 && hyla_ledger_pending_rows(w) == 0);
    must(hyla_ledger_add_metric(w, run, "policy", 5, 5, 0, &err), &err, "one more row");
    must(hyla_ledger_flush_if_due(w, &err), &err, "not due yet");
    check_true("  pending", hyla_ledger_pending_rows(w) == 1);
    struct timespec pause = {0, 80 * 1000 * 1000};
    nanosleep(&pause, NULL);
    must(hyla_ledger_flush_if_due(w, &err), &err, "due after max_pending_seconds");
    check_true("  committed", count_metrics(r, run) == before + 6);
    must(hyla_ledger_add_metric(w, run, "policy", 6, 6, 0, &err), &err, "a last row");
    must(hyla_ledger_close(w, &err), &err, "close commits");
    check_true("  committed by close", count_metrics(r, run) == before + 7);
    hyla_ledger_close(r, &err);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/hyla_ledger_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_schema_and_migration();
    test_output();

    char path[128];
    path_in_dir(path, sizeof path, "runs/ledger.db");
    struct hyla_ledger_error err;
    struct hyla_ledger *w = NULL, *r = NULL;
    struct fixture f;
    must(hyla_ledger_open(path, NULL, &w, &err), &err, "open the writer");
    if (w) {
        populate(w, &f);
        test_writer(w, &f);
        must(hyla_ledger_open_readonly(path, &r, &err), &err, "open a reader");
    }
    if (r) {
        test_reads(r, &f);
        test_filter(r);
        test_sql(r);
        test_snapshots(path, w, r, f.runs[0]);
    }
    must(hyla_ledger_close(r, &err), &err, "close the reader");
    must(hyla_ledger_close(w, &err), &err, "close the writer");
    if (w) test_commit_policy(path, f.runs[0]);

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
    return test_finish();
}
