/* The experiment ledger: one SQLite file (default runs/ledger.db) that records batches,
 * runs, their flattened configs, metrics, LTE head statistics, checkpoints and events.
 *
 * One writer (the coordinator) and any number of readers (`hyla ledger`, `hyla report`).
 * The file is in WAL mode, so readers see a consistent snapshot of the last commit and
 * never block the writer. The writer keeps one transaction open while rows arrive and
 * commits it every max_pending_rows rows or max_pending_seconds seconds, on status
 * changes, on hyla_ledger_flush() and on close: what was committed survives a kill -9.
 *
 * A handle belongs to one thread at a time (it is opened without SQLite's mutexes).
 * Every function returns 0 on success and -1 on failure with err->message filled (the
 * file, the cause and the fix). Nothing here exits or prints. docs/ledger.md has the
 * schema and the command reference. */
#ifndef HYLA_LEDGER_H
#define HYLA_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "experiments/config_dump.h"

#define HYLA_LEDGER_DEFAULT_PATH "runs/ledger.db"
/* PRAGMA user_version of the schema this hyla writes (migrations in ledger_schema.c). */
#define HYLA_LEDGER_SCHEMA_VERSION 2

struct hyla_ledger_error {
    char message[1024];
};

struct hyla_ledger; /* an open ledger: the writer or a read-only reader */

enum hyla_run_status { HYLA_RUN_QUEUED, HYLA_RUN_RUNNING, HYLA_RUN_FINISHED, HYLA_RUN_FAILED };
/* "queued", "running", "finished", "failed"; parse returns -1 for anything else. */
const char *hyla_run_status_name(enum hyla_run_status status);
int hyla_run_status_parse(const char *text, enum hyla_run_status *status);

struct hyla_ledger_options {
    int max_pending_rows;       /* commit after this many buffered rows; 0 = 4096 */
    double max_pending_seconds; /* ... or when the oldest uncommitted row is this old; 0 = 1 s */
    int busy_timeout_ms;        /* wait this long for a lock; 0 = 10000 */
    int synchronous_full;       /* fsync every commit (power-loss safe); default NORMAL
                                 * (safe against process crashes, fsync at checkpoints) */
    int schema_version;         /* 0 = current; tests create older ledgers to migrate */
};

/* ---- opening --------------------------------------------------------------------------- */
/* The writer: creates the folders and the file if needed, WAL mode, foreign keys, creates
 * or migrates the schema in place. opt may be NULL (defaults). */
int hyla_ledger_open(const char *path, const struct hyla_ledger_options *opt, struct hyla_ledger **out,
                     struct hyla_ledger_error *err);
/* A reader (SQLITE_OPEN_READONLY): fails with a clear message when the file is missing,
 * not a hyla ledger, or of an older schema (open it once with the writer to migrate). */
int hyla_ledger_open_readonly(const char *path, struct hyla_ledger **out, struct hyla_ledger_error *err);
/* Commits what is pending and closes; l is freed even when the final commit fails. */
int hyla_ledger_close(struct hyla_ledger *l, struct hyla_ledger_error *err);
const char *hyla_ledger_path(const struct hyla_ledger *l);
int hyla_ledger_schema_version(struct hyla_ledger *l, int *version, struct hyla_ledger_error *err);

/* ---- writing (the coordinator) ---------------------------------------------------------- */
/* Unix time in seconds; pass 0 as a wall time below to mean "now". */
double hyla_ledger_now(void);

/* The batch named name (created if absent, so that a relaunch finds the same id).
 * description: the batch file's text or path, kept for people; may be NULL. Commits. */
int hyla_ledger_add_batch(struct hyla_ledger *l, const char *name, const char *description, int64_t *batch_id,
                          struct hyla_ledger_error *err);

/* A new run, status queued. config: the resolved config (canonical YAML); config_hash:
 * its hex hash. Fails if (batch, name) exists: call hyla_ledger_find_run first. Commits. */
int hyla_ledger_add_run(struct hyla_ledger *l, int64_t batch_id, const char *name, const char *config,
                        const char *config_hash, int world_size, int attempt, int64_t *run_id,
                        struct hyla_ledger_error *err);

/* What a relaunch needs to know about a run. found = 0 when there is no such run. */
struct hyla_ledger_run_state {
    int found;
    int64_t id;
    enum hyla_run_status status;
    int attempt;
    int world_size;
    int64_t last_step; /* highest metric step committed; -1 when none */
    char config_hash[68];
};
int hyla_ledger_find_run(struct hyla_ledger *l, int64_t batch_id, const char *name,
                         struct hyla_ledger_run_state *state, struct hyla_ledger_error *err);

/* running: started_at = first start; finished/failed: ended_at = now and error (may be
 * NULL); queued clears ended_at and error. Commits (with everything pending). */
int hyla_ledger_set_status(struct hyla_ledger *l, int64_t run_id, enum hyla_run_status status, const char *error,
                           struct hyla_ledger_error *err);
/* A relaunch: attempt and world size of the new attempt, status back to queued. Commits. */
int hyla_ledger_begin_attempt(struct hyla_ledger *l, int64_t run_id, int attempt, int world_size,
                              struct hyla_ledger_error *err);

/* The flattened config: n rows of (key, text, number); values[i] NaN (or values NULL)
 * stores no number. Rows replace earlier rows of the same key. Commits. */
int hyla_ledger_add_params(struct hyla_ledger *l, int64_t run_id, const char *const *keys, const char *const *texts,
                           const double *values, size_t n, struct hyla_ledger_error *err);
/* The same from the config flattener's rows (hyla_config_params). */
int hyla_ledger_add_config_params(struct hyla_ledger *l, int64_t run_id, const struct hyla_config_param *params,
                                  size_t n, struct hyla_ledger_error *err);

/* Buffered rows. A (run, key, step) already stored is ignored (a resumed run replays steps
 * after its checkpoint; the first values stay). NaN values are stored as NULL. */
int hyla_ledger_add_metric(struct hyla_ledger *l, int64_t run_id, const char *key, int64_t step, double value,
                           double wall_time, struct hyla_ledger_error *err);
/* One step's metrics at once: keys[i] -> values[i]. */
int hyla_ledger_add_metrics(struct hyla_ledger *l, int64_t run_id, int64_t step, double wall_time,
                            const char *const *keys, const double *values, size_t n, struct hyla_ledger_error *err);
/* LTE statistics of one head: kept tokens (EMA), sparsity, lambda_h. Duplicates ignored. */
int hyla_ledger_add_head_stat(struct hyla_ledger *l, int64_t run_id, int64_t step, int layer, int head, double kept,
                              double sparsity, double lambda, struct hyla_ledger_error *err);
/* All heads of one layer at one step: arrays of n_heads. */
int hyla_ledger_add_head_stats(struct hyla_ledger *l, int64_t run_id, int64_t step, int layer, int n_heads,
                               const double *kept, const double *sparsity, const double *lambda,
                               struct hyla_ledger_error *err);
/* An event: kind is a short word (nan_skip, lambda_update, retry, restart, ...); step < 0
 * when not tied to a step. The same (run, step, kind, message) is stored once. */
int hyla_ledger_add_event(struct hyla_ledger *l, int64_t run_id, int64_t step, const char *kind, const char *message,
                          struct hyla_ledger_error *err);
/* A committed checkpoint (replaces an earlier row of the same step). Commits. */
int hyla_ledger_add_checkpoint(struct hyla_ledger *l, int64_t run_id, int64_t step, const char *path, int64_t bytes,
                               struct hyla_ledger_error *err);

/* Commit everything pending now. */
int hyla_ledger_flush(struct hyla_ledger *l, struct hyla_ledger_error *err);
/* Commit when the oldest pending row is older than max_pending_seconds: for idle loops. */
int hyla_ledger_flush_if_due(struct hyla_ledger *l, struct hyla_ledger_error *err);
/* Rows written but not yet committed. */
size_t hyla_ledger_pending_rows(const struct hyla_ledger *l);

#endif
