/* The coordinator's writes: batches, runs and their status, params, and the buffered
 * rows (metrics, head stats, events). Registration and status changes commit at once, so
 * that a relaunch sees them; buffered rows ride in the open transaction (ledger.c). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "experiments/ledger_internal.h"

/* failed: some sqlite3_bind_* did not return SQLITE_OK. */
static int bind_check(struct hyla_ledger *l, sqlite3_stmt *stmt, int failed, const char *what,
                      struct hyla_ledger_error *err) {
    if (!failed) return 0;
    ledger_sqlite_error(l, sqlite3_errcode(l->db), what, err);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return -1;
}

/* Text stays owned by the caller: it is only read during the statement's step. */
static int bind_text(sqlite3_stmt *stmt, int index, const char *text) {
    return text ? sqlite3_bind_text(stmt, index, text, -1, SQLITE_STATIC) : sqlite3_bind_null(stmt, index);
}

static double wall_or_now(double wall_time) { return wall_time > 0 ? wall_time : hyla_ledger_now(); }

static int check_name(const struct hyla_ledger *l, const char *what, const char *name, struct hyla_ledger_error *err) {
    if (name && name[0]) return 0;
    return ledger_fail(err, "ledger %.400s: the %s is empty; give it a name", l->path, what);
}

/* Begin (if needed), then the caller's statement, then commit. */
static int write_now(struct hyla_ledger *l, enum ledger_stmt which, const char *what, struct hyla_ledger_error *err) {
    if (ledger_step_done(l, which, what, err)) return -1;
    return hyla_ledger_flush(l, err);
}

/* ---- batches and runs ------------------------------------------------------------------------ */

int hyla_ledger_add_batch(struct hyla_ledger *l, const char *name, const char *description, int64_t *batch_id,
                          struct hyla_ledger_error *err) {
    if (check_name(l, "batch name", name, err) || ledger_begin(l, err)) return -1;
    sqlite3_stmt *ins = l->stmt[STMT_INSERT_BATCH];
    int failed = (bind_text(ins, 1, name) != SQLITE_OK) | (bind_text(ins, 2, description) != SQLITE_OK) |
                 (sqlite3_bind_double(ins, 3, hyla_ledger_now()) != SQLITE_OK);
    if (bind_check(l, ins, failed, "binding the batch", err) ||
        ledger_step_done(l, STMT_INSERT_BATCH, "adding the batch", err))
        return -1;
    sqlite3_stmt *sel = l->stmt[STMT_SELECT_BATCH];
    if (bind_check(l, sel, bind_text(sel, 1, name) != SQLITE_OK, "binding the batch name", err)) return -1;
    int rc = sqlite3_step(sel);
    if (rc == SQLITE_ROW) *batch_id = sqlite3_column_int64(sel, 0);
    else ledger_sqlite_error(l, rc == SQLITE_DONE ? SQLITE_INTERNAL : rc, "reading the batch id back", err);
    sqlite3_reset(sel);
    sqlite3_clear_bindings(sel);
    if (rc != SQLITE_ROW) return -1;
    return hyla_ledger_flush(l, err);
}

int hyla_ledger_add_run(struct hyla_ledger *l, int64_t batch_id, const char *name, const char *config,
                        const char *config_hash, int world_size, int attempt, int64_t *run_id,
                        struct hyla_ledger_error *err) {
    if (check_name(l, "run name", name, err) || ledger_begin(l, err)) return -1;
    sqlite3_stmt *stmt = l->stmt[STMT_INSERT_RUN];
    int failed = (sqlite3_bind_int64(stmt, 1, batch_id) != SQLITE_OK) | (bind_text(stmt, 2, name) != SQLITE_OK) |
                 (sqlite3_bind_int(stmt, 3, attempt) != SQLITE_OK) |
                 (bind_text(stmt, 4, config ? config : "") != SQLITE_OK) |
                 (bind_text(stmt, 5, config_hash ? config_hash : "") != SQLITE_OK) |
                 (sqlite3_bind_int(stmt, 6, world_size) != SQLITE_OK) |
                 (sqlite3_bind_double(stmt, 7, hyla_ledger_now()) != SQLITE_OK);
    if (bind_check(l, stmt, failed, "binding the run", err)) return -1;
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    if (rc == SQLITE_CONSTRAINT_UNIQUE)
        return ledger_fail(err, "ledger %.400s: batch %lld already has a run named '%s'; a relaunch finds it with "
                                "hyla_ledger_find_run and resumes it",
                           l->path, (long long)batch_id, name);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        return ledger_fail(err, "ledger %.400s: no batch with id %lld; add the batch first", l->path, (long long)batch_id);
    if (rc != SQLITE_DONE) {
        ledger_sqlite_error(l, rc, "adding the run", err);
        return -1;
    }
    *run_id = sqlite3_last_insert_rowid(l->db);
    return hyla_ledger_flush(l, err);
}

int hyla_ledger_find_run(struct hyla_ledger *l, int64_t batch_id, const char *name,
                         struct hyla_ledger_run_state *state, struct hyla_ledger_error *err) {
    memset(state, 0, sizeof *state);
    if (l->readonly || !l->stmt[STMT_FIND_RUN])
        return ledger_fail(err, "ledger %.400s: find_run is the writer's; readers use the query functions", l->path);
    sqlite3_stmt *stmt = l->stmt[STMT_FIND_RUN];
    int failed = (sqlite3_bind_int64(stmt, 1, batch_id) != SQLITE_OK) | (bind_text(stmt, 2, name) != SQLITE_OK);
    if (bind_check(l, stmt, failed, "binding the run to find", err)) return -1;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        state->found = 1;
        state->id = sqlite3_column_int64(stmt, 0);
        const unsigned char *status = sqlite3_column_text(stmt, 1);
        if (hyla_run_status_parse((const char *)status, &state->status)) state->status = HYLA_RUN_QUEUED;
        state->attempt = sqlite3_column_int(stmt, 2);
        state->world_size = sqlite3_column_int(stmt, 3);
        state->last_step = sqlite3_column_int64(stmt, 4);
        const unsigned char *hash = sqlite3_column_text(stmt, 5);
        snprintf(state->config_hash, sizeof state->config_hash, "%s", hash ? (const char *)hash : "");
        rc = SQLITE_DONE;
    }
    if (rc != SQLITE_DONE) ledger_sqlite_error(l, rc, "finding the run", err);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* An UPDATE of one run: fails with a clear message when the id does not exist. */
static int update_run(struct hyla_ledger *l, int64_t run_id, enum ledger_stmt which, const char *what,
                      struct hyla_ledger_error *err) {
    if (ledger_step_done(l, which, what, err)) return -1;
    if (sqlite3_changes(l->db) != 1)
        return ledger_fail(err, "ledger %.400s: %s: no run with id %lld", l->path, what, (long long)run_id);
    return hyla_ledger_flush(l, err);
}

int hyla_ledger_set_status(struct hyla_ledger *l, int64_t run_id, enum hyla_run_status status, const char *error,
                           struct hyla_ledger_error *err) {
    if (ledger_begin(l, err)) return -1;
    sqlite3_stmt *stmt = l->stmt[STMT_SET_STATUS];
    int failed = (sqlite3_bind_int64(stmt, 1, run_id) != SQLITE_OK) |
                 (bind_text(stmt, 2, hyla_run_status_name(status)) != SQLITE_OK) |
                 (sqlite3_bind_double(stmt, 3, hyla_ledger_now()) != SQLITE_OK) |
                 (bind_text(stmt, 4, status == HYLA_RUN_QUEUED ? NULL : error) != SQLITE_OK);
    if (bind_check(l, stmt, failed, "binding the status", err)) return -1;
    return update_run(l, run_id, STMT_SET_STATUS, "setting the run's status", err);
}

int hyla_ledger_begin_attempt(struct hyla_ledger *l, int64_t run_id, int attempt, int world_size,
                              struct hyla_ledger_error *err) {
    if (ledger_begin(l, err)) return -1;
    sqlite3_stmt *stmt = l->stmt[STMT_BEGIN_ATTEMPT];
    int failed = (sqlite3_bind_int64(stmt, 1, run_id) != SQLITE_OK) | (sqlite3_bind_int(stmt, 2, attempt) != SQLITE_OK) |
                 (sqlite3_bind_int(stmt, 3, world_size) != SQLITE_OK);
    if (bind_check(l, stmt, failed, "binding the attempt", err)) return -1;
    return update_run(l, run_id, STMT_BEGIN_ATTEMPT, "starting a new attempt", err);
}

/* ---- params ------------------------------------------------------------------------------------ */

static int insert_param(struct hyla_ledger *l, int64_t run_id, const char *key, const char *text, double value,
                        struct hyla_ledger_error *err) {
    if (check_name(l, "parameter key", key, err)) return -1;
    sqlite3_stmt *stmt = l->stmt[STMT_INSERT_PARAM];
    int failed = (sqlite3_bind_int64(stmt, 1, run_id) != SQLITE_OK) | (bind_text(stmt, 2, key) != SQLITE_OK) |
                 (bind_text(stmt, 3, text ? text : "") != SQLITE_OK) |
                 (sqlite3_bind_double(stmt, 4, value) != SQLITE_OK); /* NaN binds as NULL */
    if (bind_check(l, stmt, failed, "binding a parameter", err)) return -1;
    return ledger_step_done(l, STMT_INSERT_PARAM, "adding a parameter", err);
}

int hyla_ledger_add_params(struct hyla_ledger *l, int64_t run_id, const char *const *keys, const char *const *texts,
                           const double *values, size_t n, struct hyla_ledger_error *err) {
    if (ledger_begin(l, err)) return -1;
    for (size_t i = 0; i < n; i++)
        if (insert_param(l, run_id, keys[i], texts[i], values ? values[i] : NAN, err)) return -1;
    return hyla_ledger_flush(l, err);
}

int hyla_ledger_add_config_params(struct hyla_ledger *l, int64_t run_id, const struct hyla_config_param *params,
                                  size_t n, struct hyla_ledger_error *err) {
    if (ledger_begin(l, err)) return -1;
    for (size_t i = 0; i < n; i++)
        if (insert_param(l, run_id, params[i].key, params[i].text, params[i].value, err)) return -1;
    return hyla_ledger_flush(l, err);
}

/* ---- buffered rows ------------------------------------------------------------------------------ */

int hyla_ledger_add_metric(struct hyla_ledger *l, int64_t run_id, const char *key, int64_t step, double value,
                           double wall_time, struct hyla_ledger_error *err) {
    if (check_name(l, "metric key", key, err) || ledger_begin(l, err)) return -1;
    sqlite3_stmt *stmt = l->stmt[STMT_INSERT_METRIC];
    int failed = (sqlite3_bind_int64(stmt, 1, run_id) != SQLITE_OK) | (bind_text(stmt, 2, key) != SQLITE_OK) |
                 (sqlite3_bind_int64(stmt, 3, step) != SQLITE_OK) | (sqlite3_bind_double(stmt, 4, value) != SQLITE_OK) |
                 (sqlite3_bind_double(stmt, 5, wall_or_now(wall_time)) != SQLITE_OK);
    if (bind_check(l, stmt, failed, "binding a metric", err) ||
        ledger_step_done(l, STMT_INSERT_METRIC, "adding a metric", err) || ledger_mark_step(l, run_id, step, err))
        return -1;
    return ledger_row_written(l, err);
}

int hyla_ledger_add_metrics(struct hyla_ledger *l, int64_t run_id, int64_t step, double wall_time,
                            const char *const *keys, const double *values, size_t n, struct hyla_ledger_error *err) {
    double when = wall_or_now(wall_time); /* one time for the whole step */
    for (size_t i = 0; i < n; i++)
        if (hyla_ledger_add_metric(l, run_id, keys[i], step, values[i], when, err)) return -1;
    return 0;
}

int hyla_ledger_add_head_stat(struct hyla_ledger *l, int64_t run_id, int64_t step, int layer, int head, double kept,
                              double sparsity, double lambda, struct hyla_ledger_error *err) {
    if (ledger_begin(l, err)) return -1;
    sqlite3_stmt *stmt = l->stmt[STMT_INSERT_HEAD];
    int failed = (sqlite3_bind_int64(stmt, 1, run_id) != SQLITE_OK) | (sqlite3_bind_int64(stmt, 2, step) != SQLITE_OK) |
                 (sqlite3_bind_int(stmt, 3, layer) != SQLITE_OK) | (sqlite3_bind_int(stmt, 4, head) != SQLITE_OK) |
                 (sqlite3_bind_double(stmt, 5, kept) != SQLITE_OK) |
                 (sqlite3_bind_double(stmt, 6, sparsity) != SQLITE_OK) |
                 (sqlite3_bind_double(stmt, 7, lambda) != SQLITE_OK);
    if (bind_check(l, stmt, failed, "binding a head statistic", err) ||
        ledger_step_done(l, STMT_INSERT_HEAD, "adding a head statistic", err))
        return -1;
    return ledger_row_written(l, err);
}

int hyla_ledger_add_head_stats(struct hyla_ledger *l, int64_t run_id, int64_t step, int layer, int n_heads,
                               const double *kept, const double *sparsity, const double *lambda,
                               struct hyla_ledger_error *err) {
    for (int h = 0; h < n_heads; h++)
        if (hyla_ledger_add_head_stat(l, run_id, step, layer, h, kept[h], sparsity[h], lambda[h], err)) return -1;
    return 0;
}

int hyla_ledger_add_event(struct hyla_ledger *l, int64_t run_id, int64_t step, const char *kind, const char *message,
                          struct hyla_ledger_error *err) {
    if (check_name(l, "event kind", kind, err) || ledger_begin(l, err)) return -1;
    sqlite3_stmt *stmt = l->stmt[STMT_INSERT_EVENT];
    int failed = (sqlite3_bind_int64(stmt, 1, run_id) != SQLITE_OK) |
                 ((step >= 0 ? sqlite3_bind_int64(stmt, 2, step) : sqlite3_bind_null(stmt, 2)) != SQLITE_OK) |
                 (bind_text(stmt, 3, kind) != SQLITE_OK) | (bind_text(stmt, 4, message ? message : "") != SQLITE_OK) |
                 (sqlite3_bind_double(stmt, 5, hyla_ledger_now()) != SQLITE_OK);
    if (bind_check(l, stmt, failed, "binding an event", err) ||
        ledger_step_done(l, STMT_INSERT_EVENT, "adding an event", err))
        return -1;
    return ledger_row_written(l, err);
}

int hyla_ledger_add_checkpoint(struct hyla_ledger *l, int64_t run_id, int64_t step, const char *path, int64_t bytes,
                               struct hyla_ledger_error *err) {
    if (check_name(l, "checkpoint path", path, err) || ledger_begin(l, err)) return -1;
    sqlite3_stmt *stmt = l->stmt[STMT_INSERT_CHECKPOINT];
    int failed = (sqlite3_bind_int64(stmt, 1, run_id) != SQLITE_OK) | (sqlite3_bind_int64(stmt, 2, step) != SQLITE_OK) |
                 (bind_text(stmt, 3, path) != SQLITE_OK) | (sqlite3_bind_int64(stmt, 4, bytes) != SQLITE_OK) |
                 (sqlite3_bind_double(stmt, 5, hyla_ledger_now()) != SQLITE_OK);
    if (bind_check(l, stmt, failed, "binding a checkpoint", err)) return -1;
    return write_now(l, STMT_INSERT_CHECKPOINT, "adding a checkpoint", err);
}
