/* Opening and closing the ledger, its error messages, and the transaction that batches
 * the writer's rows (see ledger.h for the commit policy). The row writers are in
 * ledger_write.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "experiments/ledger_internal.h"

static const char *const WRITER_SQL[STMT_COUNT] = {
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_INSERT_BATCH] = "INSERT INTO batches(name, description, created_at) VALUES (?1, ?2, ?3) "
                          "ON CONFLICT(name) DO NOTHING",
    [STMT_SELECT_BATCH] = "SELECT id FROM batches WHERE name = ?1",
    [STMT_INSERT_RUN] = "INSERT INTO runs(batch_id, name, status, attempt, config, config_hash, world_size, "
                        "created_at) VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7)",
    [STMT_FIND_RUN] = "SELECT id, status, attempt, world_size, last_step, config_hash FROM runs "
                      "WHERE batch_id = ?1 AND name = ?2",
    [STMT_SET_STATUS] = "UPDATE runs SET status = ?2,"
                        " started_at = CASE WHEN ?2 = 'running' THEN coalesce(started_at, ?3) ELSE started_at END,"
                        " ended_at = CASE WHEN ?2 IN ('finished', 'failed') THEN ?3 ELSE NULL END,"
                        " error = ?4 WHERE id = ?1",
    [STMT_BEGIN_ATTEMPT] = "UPDATE runs SET attempt = ?2, world_size = ?3, status = 'queued', ended_at = NULL, "
                           "error = NULL WHERE id = ?1",
    [STMT_INSERT_PARAM] = "INSERT OR REPLACE INTO params(run_id, key, value_text, value_num) VALUES (?1, ?2, ?3, ?4)",
    [STMT_INSERT_METRIC] = "INSERT OR IGNORE INTO metrics(run_id, key, step, value, wall_time) "
                           "VALUES (?1, ?2, ?3, ?4, ?5)",
    [STMT_INSERT_HEAD] = "INSERT OR IGNORE INTO head_stats(run_id, step, layer, head, kept, sparsity, lambda) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [STMT_INSERT_EVENT] = "INSERT OR IGNORE INTO events(run_id, step, kind, message, wall_time) "
                          "VALUES (?1, ?2, ?3, ?4, ?5)",
    [STMT_INSERT_CHECKPOINT] = "INSERT INTO checkpoints(run_id, step, path, bytes, created_at) "
                               "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(run_id, step) DO UPDATE SET "
                               "path = excluded.path, bytes = excluded.bytes, created_at = excluded.created_at",
    [STMT_UPDATE_LAST_STEP] = "UPDATE runs SET last_step = max(last_step, ?2) WHERE id = ?1",
};

/* ---- errors ----------------------------------------------------------------------------- */

int ledger_fail(struct hyla_ledger_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* What to do about an SQLite error, by its primary code. */
static const char *sqlite_fix(int rc, int readonly) {
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return readonly ? "the writer holds the file in a way readers cannot wait out; retry"
                        : "another process is writing this ledger: only one coordinator may write it; "
                          "stop the other job or set ledger.path to another file";
    case SQLITE_READONLY:
        return readonly ? "readers cannot write; use the coordinator"
                        : "the file or its folder is not writable: fix the permissions or set ledger.path";
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
        return "check that the folder exists and is readable/writable, or set ledger.path (--ledger)";
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return "the file is damaged or not an SQLite database: move it aside (keep it for inspection) "
               "or set ledger.path to another file";
    case SQLITE_FULL:
        return "the disk is full: free space and relaunch (committed rows are kept)";
    case SQLITE_IOERR:
        return "an I/O error: check the disk and the file system (WAL needs a local file system)";
    case SQLITE_CONSTRAINT:
        return "a row refers to a run that does not exist or repeats a unique key (a bug in the caller)";
    case SQLITE_NOMEM:
        return "out of memory";
    default:
        return "see the SQLite message";
    }
}

void ledger_sqlite_error(const struct hyla_ledger *l, int rc, const char *what, struct hyla_ledger_error *err) {
    const char *detail = l->db ? sqlite3_errmsg(l->db) : sqlite3_errstr(rc);
    snprintf(err->message, sizeof err->message, "ledger %.400s: %s: %s (%s); %s", l->path, what, detail,
             sqlite3_errstr(rc), sqlite_fix(rc, l->readonly));
}

/* ---- small helpers ------------------------------------------------------------------------ */

double hyla_ledger_now(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return 0; /* cannot fail with CLOCK_REALTIME */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double monotonic_seconds(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *hyla_ledger_path(const struct hyla_ledger *l) { return l->path; }

static const char *const STATUS_NAMES[] = {"queued", "running", "finished", "failed"};

const char *hyla_run_status_name(enum hyla_run_status status) {
    return (unsigned)status < 4 ? STATUS_NAMES[status] : "unknown";
}

int hyla_run_status_parse(const char *text, enum hyla_run_status *status) {
    for (int i = 0; i < 4; i++)
        if (text && !strcmp(text, STATUS_NAMES[i])) {
            *status = (enum hyla_run_status)i;
            return 0;
        }
    return -1;
}

/* mkdir -p of path's folder. */
static int make_parent_folders(const char *path, struct hyla_ledger_error *err) {
    char dir[1024];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return ledger_fail(err, "ledger path %s is too long (at most %zu bytes)", path, sizeof dir - 1);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = '\0';
    for (char *p = dir + 1; ; p++) {
        if (*p != '/' && *p != '\0') continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(dir, 0777) != 0 && errno != EEXIST)
            return ledger_fail(err, "cannot create folder %s for ledger %s: %s; create it or set ledger.path", dir,
                               path, strerror(errno));
        *p = saved;
        if (saved == '\0') return 0;
    }
}

/* A pragma whose result row (if any) we do not need, except journal_mode's. */
static int pragma(struct hyla_ledger *l, const char *sql, const char *expect, struct hyla_ledger_error *err) {
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(l->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(stmt);
    char got[32] = "";
    if (rc == SQLITE_ROW) {
        const unsigned char *text = sqlite3_column_text(stmt, 0);
        snprintf(got, sizeof got, "%s", text ? (const char *)text : "");
        rc = SQLITE_DONE;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_OK) ledger_sqlite_error(l, rc, sql, err);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE && rc != SQLITE_OK) return -1;
    if (expect && strcmp(got, expect) != 0)
        return ledger_fail(err,
                           "ledger %.400s: `%s` gave '%s': the file system does not support SQLite's WAL mode "
                           "(network file systems often do not); put ledger.path on a local disk",
                           l->path, sql, got);
    return 0;
}

static struct hyla_ledger *ledger_new(const char *path, struct hyla_ledger_error *err) {
    if (!path || !path[0]) { /* SQLite would quietly open a temporary database */
        ledger_fail(err, "the ledger path is empty; set ledger.path (default " HYLA_LEDGER_DEFAULT_PATH ")");
        return NULL;
    }
    struct hyla_ledger *l = calloc(1, sizeof *l);
    if (!l) {
        ledger_fail(err, "ledger %.400s: out of memory", path);
        return NULL;
    }
    if (snprintf(l->path, sizeof l->path, "%s", path) >= (int)sizeof l->path) {
        ledger_fail(err, "ledger path %s is too long (at most %zu bytes)", path, sizeof l->path - 1);
        free(l);
        return NULL;
    }
    return l;
}

static void ledger_free(struct hyla_ledger *l) {
    for (int i = 0; i < STMT_COUNT; i++) sqlite3_finalize(l->stmt[i]);
    sqlite3_close(l->db); /* statements are finalized: this closes */
    free(l->marks);
    free(l);
}

static int open_db(struct hyla_ledger *l, int flags, int busy_ms, struct hyla_ledger_error *err) {
    /* NOMUTEX: a handle belongs to one thread (the coordinator's loop), so SQLite's own
     * per-call locking is pure cost on the row path. */
    int rc = sqlite3_open_v2(l->path, &l->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        ledger_sqlite_error(l, rc, l->readonly ? "cannot open for reading" : "cannot open for writing", err);
        return -1;
    }
    if (sqlite3_extended_result_codes(l->db, 1) != SQLITE_OK || sqlite3_busy_timeout(l->db, busy_ms) != SQLITE_OK) {
        ledger_sqlite_error(l, sqlite3_errcode(l->db), "configuring the connection", err);
        return -1;
    }
    return 0;
}

static int prepare_writer_statements(struct hyla_ledger *l, struct hyla_ledger_error *err) {
    for (int i = 0; i < STMT_COUNT; i++) {
        int rc = sqlite3_prepare_v3(l->db, WRITER_SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &l->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            ledger_sqlite_error(l, rc, "preparing the writer's statements", err);
            return -1;
        }
    }
    return 0;
}

/* ---- open / close --------------------------------------------------------------------------- */

int hyla_ledger_open(const char *path, const struct hyla_ledger_options *opt, struct hyla_ledger **out,
                     struct hyla_ledger_error *err) {
    *out = NULL;
    struct hyla_ledger *l = ledger_new(path, err);
    if (!l) return -1;
    if (opt) l->opt = *opt;
    if (l->opt.max_pending_rows <= 0) l->opt.max_pending_rows = 4096;
    if (l->opt.max_pending_seconds <= 0) l->opt.max_pending_seconds = 1.0;
    if (l->opt.busy_timeout_ms <= 0) l->opt.busy_timeout_ms = 10000;
    int target = l->opt.schema_version > 0 ? l->opt.schema_version : HYLA_LEDGER_SCHEMA_VERSION;
    int ok = make_parent_folders(path, err) == 0 &&
             open_db(l, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, l->opt.busy_timeout_ms, err) == 0 &&
             pragma(l, "PRAGMA journal_mode = WAL", "wal", err) == 0 &&
             pragma(l, l->opt.synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL", NULL,
                    err) == 0 &&
             pragma(l, "PRAGMA foreign_keys = ON", NULL, err) == 0 &&
             ledger_schema_migrate(l, target, err) == 0 &&
             (target < HYLA_LEDGER_SCHEMA_VERSION || prepare_writer_statements(l, err) == 0);
    if (!ok) {
        ledger_free(l);
        return -1;
    }
    *out = l;
    return 0;
}

int hyla_ledger_open_readonly(const char *path, struct hyla_ledger **out, struct hyla_ledger_error *err) {
    *out = NULL;
    struct hyla_ledger *l = ledger_new(path, err);
    if (!l) return -1;
    struct stat st;
    if (stat(path, &st) != 0) { /* SQLite would say "unable to open": name the likely cause */
        ledger_fail(err, "no ledger at %.900s: %s; pass --ledger PATH (the config's ledger.path) or train a run first",
                    path, strerror(errno));
        free(l);
        return -1;
    }
    l->readonly = 1;
    /* Readers wait briefly for the writer's WAL index; they never take the write lock. */
    if (open_db(l, SQLITE_OPEN_READONLY, 5000, err) != 0 || ledger_schema_check(l, err) != 0) {
        ledger_free(l);
        return -1;
    }
    *out = l;
    return 0;
}

int hyla_ledger_close(struct hyla_ledger *l, struct hyla_ledger_error *err) {
    if (!l) return 0;
    int rc = l->readonly ? 0 : hyla_ledger_flush(l, err);
    if (!l->readonly && rc == 0) {
        /* Leaves the planner statistics fresh for the readers; failure is harmless. */
        sqlite3_exec(l->db, "PRAGMA optimize", NULL, NULL, NULL);
    }
    ledger_free(l);
    return rc;
}

int hyla_ledger_schema_version(struct hyla_ledger *l, int *version, struct hyla_ledger_error *err) {
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(l->db, "PRAGMA user_version", -1, &stmt, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int(stmt, 0);
        rc = SQLITE_OK;
    } else {
        ledger_sqlite_error(l, rc, "reading the schema version", err);
    }
    sqlite3_finalize(stmt);
    return rc == SQLITE_OK ? 0 : -1;
}

/* ---- the write transaction ---------------------------------------------------------------- */

/* Run a writer statement to completion (no result rows wanted) and reset it. */
int ledger_step_done(struct hyla_ledger *l, enum ledger_stmt which, const char *what, struct hyla_ledger_error *err) {
    sqlite3_stmt *stmt = l->stmt[which];
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) ledger_sqlite_error(l, rc, what, err);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

int ledger_begin(struct hyla_ledger *l, struct hyla_ledger_error *err) {
    if (l->readonly) return ledger_fail(err, "ledger %.400s was opened read-only; only the coordinator writes", l->path);
    if (l->in_transaction) return 0;
    if (!l->stmt[STMT_BEGIN])
        return ledger_fail(err, "ledger %.400s was opened at an older schema version (for a migration test); "
                                "reopen it at the current one to write", l->path);
    if (ledger_step_done(l, STMT_BEGIN, "starting a transaction", err)) return -1;
    l->in_transaction = 1;
    l->pending_rows = 0;
    l->pending_since = monotonic_seconds();
    return 0;
}

/* Remember the highest metric step of a run in this transaction. */
int ledger_mark_step(struct hyla_ledger *l, int64_t run_id, int64_t step, struct hyla_ledger_error *err) {
    for (size_t i = 0; i < l->n_marks; i++)
        if (l->marks[i].run_id == run_id) {
            if (step > l->marks[i].step) l->marks[i].step = step;
            return 0;
        }
    if (l->n_marks == l->cap_marks) {
        size_t cap = l->cap_marks ? 2 * l->cap_marks : 16;
        struct ledger_step_mark *m = realloc(l->marks, cap * sizeof *m);
        if (!m) return ledger_fail(err, "ledger %.400s: out of memory", l->path);
        l->marks = m;
        l->cap_marks = cap;
    }
    l->marks[l->n_marks++] = (struct ledger_step_mark){run_id, step};
    return 0;
}

static int write_last_steps(struct hyla_ledger *l, struct hyla_ledger_error *err) {
    sqlite3_stmt *stmt = l->stmt[STMT_UPDATE_LAST_STEP];
    for (size_t i = 0; i < l->n_marks; i++) {
        if (sqlite3_bind_int64(stmt, 1, l->marks[i].run_id) != SQLITE_OK ||
            sqlite3_bind_int64(stmt, 2, l->marks[i].step) != SQLITE_OK) {
            ledger_sqlite_error(l, sqlite3_errcode(l->db), "binding runs.last_step", err);
            return -1;
        }
        if (ledger_step_done(l, STMT_UPDATE_LAST_STEP, "updating runs.last_step", err)) return -1;
    }
    l->n_marks = 0;
    return 0;
}

int hyla_ledger_flush(struct hyla_ledger *l, struct hyla_ledger_error *err) {
    if (l->readonly || !l->in_transaction) return 0;
    if (write_last_steps(l, err)) return -1;
    if (ledger_step_done(l, STMT_COMMIT, "committing", err) == 0) {
        l->in_transaction = 0;
        l->pending_rows = 0;
        return 0;
    }
    /* A failed COMMIT either left the transaction open (busy: retry later) or rolled it back. */
    if (sqlite3_get_autocommit(l->db)) {
        size_t lost = l->pending_rows;
        l->in_transaction = 0;
        l->pending_rows = 0;
        l->n_marks = 0;
        size_t len = strlen(err->message);
        snprintf(err->message + len, sizeof err->message - len, " (the transaction of %zu rows was rolled back)",
                 lost);
    }
    return -1;
}

/* After a buffered row: commit when enough rows or enough time has gathered. */
int ledger_row_written(struct hyla_ledger *l, struct hyla_ledger_error *err) {
    l->pending_rows++;
    if (l->pending_rows >= (size_t)l->opt.max_pending_rows) return hyla_ledger_flush(l, err);
    return hyla_ledger_flush_if_due(l, err);
}

int hyla_ledger_flush_if_due(struct hyla_ledger *l, struct hyla_ledger_error *err) {
    if (!l->in_transaction || l->pending_rows == 0) return 0;
    if (monotonic_seconds() - l->pending_since < l->opt.max_pending_seconds) return 0;
    return hyla_ledger_flush(l, err);
}

size_t hyla_ledger_pending_rows(const struct hyla_ledger *l) { return l->pending_rows; }
