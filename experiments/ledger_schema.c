/* The ledger's schema, as a list of migrations: migration k takes user_version k to k+1.
 * A new file runs all of them, an older file the missing ones, each step in the same
 * transaction as its user_version bump, so a ledger is always at one whole version.
 * Never edit a released migration: add the next one (and say what changed in docs/ledger.md). */
#include <stdio.h>
#include <string.h>

#include "experiments/ledger_internal.h"

/* 0 -> 1: runs, their configs, metrics, checkpoints and events. */
static const char MIGRATION_V1[] =
    "CREATE TABLE batches ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  description TEXT,"
    "  created_at REAL NOT NULL);"
    "CREATE TABLE runs ("
    "  id INTEGER PRIMARY KEY,"
    "  batch_id INTEGER NOT NULL REFERENCES batches(id),"
    "  name TEXT NOT NULL,"
    "  status TEXT NOT NULL DEFAULT 'queued'"
    "    CHECK (status IN ('queued', 'running', 'finished', 'failed')),"
    "  attempt INTEGER NOT NULL DEFAULT 0,"
    "  config TEXT NOT NULL,"
    "  config_hash TEXT NOT NULL,"
    "  world_size INTEGER NOT NULL,"
    "  created_at REAL NOT NULL,"
    "  started_at REAL,"
    "  ended_at REAL,"
    "  last_step INTEGER NOT NULL DEFAULT -1,"
    "  error TEXT,"
    "  UNIQUE (batch_id, name));"
    "CREATE INDEX runs_name ON runs(name);"
    /* Text and number side by side: numeric filters compare value_num, others value_text. */
    "CREATE TABLE params ("
    "  run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  key TEXT NOT NULL,"
    "  value_text TEXT NOT NULL,"
    "  value_num REAL,"
    "  PRIMARY KEY (run_id, key)) WITHOUT ROWID;"
    "CREATE INDEX params_key ON params(key, value_num);"
    /* Clustered by (run, key, step): a curve is one range scan; the key makes replays no-ops. */
    "CREATE TABLE metrics ("
    "  run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  key TEXT NOT NULL,"
    "  step INTEGER NOT NULL,"
    "  value REAL,"
    "  wall_time REAL NOT NULL,"
    "  PRIMARY KEY (run_id, key, step)) WITHOUT ROWID;"
    "CREATE TABLE checkpoints ("
    "  id INTEGER PRIMARY KEY,"
    "  run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  step INTEGER NOT NULL,"
    "  path TEXT NOT NULL,"
    "  created_at REAL NOT NULL,"
    "  UNIQUE (run_id, step));"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY,"
    "  run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  step INTEGER,"
    "  kind TEXT NOT NULL,"
    "  message TEXT NOT NULL,"
    "  wall_time REAL NOT NULL);"
    /* A replayed step re-reports its events: store each once (NULL steps stay distinct). */
    "CREATE UNIQUE INDEX events_once ON events(run_id, step, kind, message);";

/* 1 -> 2: per-head LTE statistics; checkpoint sizes. */
static const char MIGRATION_V2[] =
    "CREATE TABLE head_stats ("
    "  run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  step INTEGER NOT NULL,"
    "  layer INTEGER NOT NULL,"
    "  head INTEGER NOT NULL,"
    "  kept REAL,"
    "  sparsity REAL,"
    "  lambda REAL,"
    "  PRIMARY KEY (run_id, layer, head, step)) WITHOUT ROWID;"
    "ALTER TABLE checkpoints ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;";

static const char *const MIGRATIONS[HYLA_LEDGER_SCHEMA_VERSION] = {MIGRATION_V1, MIGRATION_V2};

/* One integer from a single-row statement (a PRAGMA or a count). */
static int query_int(struct hyla_ledger *l, const char *sql, int64_t *value, struct hyla_ledger_error *err) {
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(l->db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        ledger_sqlite_error(l, rc, sql, err);
        return -1;
    }
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *value = sqlite3_column_int64(stmt, 0);
        rc = SQLITE_DONE;
    }
    if (rc != SQLITE_DONE) ledger_sqlite_error(l, rc, sql, err);
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int exec(struct hyla_ledger *l, const char *sql, const char *what, struct hyla_ledger_error *err) {
    int rc = sqlite3_exec(l->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        ledger_sqlite_error(l, rc, what, err);
        return -1;
    }
    return 0;
}

/* user_version, after checking that the file is hyla's (or still empty). */
static int read_version(struct hyla_ledger *l, int64_t *version, struct hyla_ledger_error *err) {
    int64_t app_id = 0, tables = 0;
    if (query_int(l, "PRAGMA application_id", &app_id, err) ||
        query_int(l, "PRAGMA user_version", version, err) ||
        query_int(l, "SELECT count(*) FROM sqlite_schema", &tables, err))
        return -1;
    int foreign = app_id != 0 ? app_id != HYLA_LEDGER_APPLICATION_ID : (*version != 0 || tables != 0);
    if (foreign)
        return ledger_fail(err,
                           "ledger %.400s: the file is an SQLite database but not a hyla ledger (application_id "
                           "%lld, user_version %lld, %lld tables); point ledger.path (or --ledger) at another file",
                           l->path, (long long)app_id, (long long)*version, (long long)tables);
    if (*version > HYLA_LEDGER_SCHEMA_VERSION)
        return ledger_fail(err,
                           "ledger %.400s has schema version %lld, newer than this hyla understands (%d); "
                           "use the hyla that wrote it, or a newer one",
                           l->path, (long long)*version, HYLA_LEDGER_SCHEMA_VERSION);
    return 0;
}

int ledger_schema_check(struct hyla_ledger *l, struct hyla_ledger_error *err) {
    int64_t version;
    if (read_version(l, &version, err)) return -1;
    if (version == 0)
        return ledger_fail(err, "ledger %.400s is empty (no schema yet); it is created by the first run "
                                "(`hyla train`, `hyla run`)", l->path);
    if (version < HYLA_LEDGER_SCHEMA_VERSION)
        return ledger_fail(err,
                           "ledger %.400s has schema version %lld, older than this hyla's (%d); migrate it in place "
                           "with `hyla ledger --ledger %s migrate` (or run any training job on it)",
                           l->path, (long long)version, HYLA_LEDGER_SCHEMA_VERSION, l->path);
    return 0;
}

/* Steps from..target-1 inside the caller's transaction. */
static int apply_migrations(struct hyla_ledger *l, int64_t from, int target, struct hyla_ledger_error *err) {
    for (int64_t v = from; v < target; v++) {
        char what[64], bump[64];
        snprintf(what, sizeof what, "migrating the schema to version %lld", (long long)v + 1);
        snprintf(bump, sizeof bump, "PRAGMA user_version = %lld", (long long)v + 1); /* our integer, not input */
        if (exec(l, MIGRATIONS[v], what, err) || exec(l, bump, what, err)) return -1;
    }
    return 0;
}

int ledger_schema_migrate(struct hyla_ledger *l, int target, struct hyla_ledger_error *err) {
    if (target < 1 || target > HYLA_LEDGER_SCHEMA_VERSION)
        return ledger_fail(err, "ledger %.400s: schema version %d requested; this hyla knows 1..%d", l->path, target,
                           HYLA_LEDGER_SCHEMA_VERSION);
    /* IMMEDIATE: two coordinators opening one new file must not both create the tables. */
    if (exec(l, "BEGIN IMMEDIATE", "locking the ledger to check its schema", err)) return -1;
    int64_t version;
    int rc = read_version(l, &version, err);
    if (rc == 0 && version < target) {
        char set_id[64];
        snprintf(set_id, sizeof set_id, "PRAGMA application_id = %d", HYLA_LEDGER_APPLICATION_ID);
        rc = exec(l, set_id, "marking the file as a hyla ledger", err);
        if (rc == 0) rc = apply_migrations(l, version, target, err);
    }
    if (rc == 0) return exec(l, "COMMIT", "committing the schema", err);
    sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL); /* the error above is the one to report */
    return -1;
}
