/* Reading the ledger: what `hyla ledger` and `hyla report` show. Every query returns a
 * table (ledger_table.h) that the caller prints in the format it wants. A reader opened
 * with hyla_ledger_open_readonly sees the writer's last commit; each query is one
 * snapshot. Not-found errors name what was asked for and list what exists. */
#ifndef HYLA_LEDGER_QUERY_H
#define HYLA_LEDGER_QUERY_H

#include <stdint.h>

#include "experiments/ledger.h"
#include "experiments/ledger_filter.h"
#include "experiments/ledger_table.h"

/* RUN as given on a command line: a numeric id, NAME, or BATCH/NAME. Unknown or ambiguous
 * names give an error listing (up to 20) runs that exist. */
int hyla_ledger_resolve_run(struct hyla_ledger *l, const char *spec, int64_t *run_id, struct hyla_ledger_error *err);
/* A batch by name; unknown names list the batches that exist. */
int hyla_ledger_resolve_batch(struct hyla_ledger *l, const char *name, int64_t *batch_id,
                              struct hyla_ledger_error *err);

/* Any read statement with ?1..?n bound from binds, into a new table (column names from SQL). */
int hyla_ledger_select(struct hyla_ledger *l, const char *sql, const struct hyla_filter_bind *binds, size_t n_binds,
                       struct hyla_table **out, struct hyla_ledger_error *err);

/* Runs matching filter (NULL = all): id, batch, name, status, attempt, world_size,
 * last_step, loss (the last), started, ended (UTC), error. A parameter key that no run
 * has is an error that lists similar keys. */
int hyla_ledger_query_runs(struct hyla_ledger *l, const struct hyla_ledger_filter *filter, struct hyla_table **out,
                           struct hyla_ledger_error *err);

/* One metric of some runs: run, step, value, wall_time; every > 1 keeps steps divisible
 * by it. A key that none of the runs has is an error listing the keys they have. */
int hyla_ledger_query_metrics(struct hyla_ledger *l, const int64_t *run_ids, size_t n_runs, const char *key,
                              int64_t every, struct hyla_table **out, struct hyla_ledger_error *err);

/* Head statistics of one run; layer < 0 = every layer. key NULL: long form (step, layer,
 * head, kept, sparsity, lambda); key "kept", "sparsity" or "lambda": one row per step and
 * one column per head, named L<layer>.h<head> (the trajectories side by side). */
int hyla_ledger_query_heads(struct hyla_ledger *l, int64_t run_id, int layer, const char *key,
                            struct hyla_table **out, struct hyla_ledger_error *err);

/* Events of one run: id, step, kind, message, time (UTC). */
int hyla_ledger_query_events(struct hyla_ledger *l, int64_t run_id, struct hyla_table **out,
                             struct hyla_ledger_error *err);

/* One metric of one run in a few numbers. count = 0 when the run has no such metric. */
struct hyla_metric_summary {
    int64_t count;
    int64_t last_step, min_step, at_step; /* -1 when absent */
    double last, min, max, at;            /* NaN when absent */
};
/* at_step < 0: no "value at step" wanted (at = NaN); else the last value at or before it. */
int hyla_ledger_metric_summary(struct hyla_ledger *l, int64_t run_id, const char *key, int64_t at_step,
                               struct hyla_metric_summary *s, struct hyla_ledger_error *err);

/* compare: metrics (run, key, count, last_step, last, min, min_step[, at_step, at]) for key
 * (NULL = every key of each run), and the config keys whose values differ (key, then one
 * column per run). */
struct hyla_ledger_comparison {
    struct hyla_table *metrics;
    struct hyla_table *config_diff;
};
int hyla_ledger_query_compare(struct hyla_ledger *l, const int64_t *run_ids, size_t n_runs, const char *key,
                              int64_t at_step, struct hyla_ledger_comparison *out, struct hyla_ledger_error *err);
void hyla_ledger_comparison_free(struct hyla_ledger_comparison *c);

/* The config keys whose text differs between the runs (or that some run lacks): key, then
 * one column per run (named by the run, with #id where names repeat). */
int hyla_ledger_query_config_diff(struct hyla_ledger *l, const int64_t *run_ids, size_t n_runs,
                                  struct hyla_table **out, struct hyla_ledger_error *err);

/* show: the run's fields (field, value), a summary of each metric, its checkpoints, its
 * events counted by kind, and its resolved config text. */
struct hyla_ledger_run_details {
    struct hyla_table *fields;
    struct hyla_table *metrics;
    struct hyla_table *checkpoints;
    struct hyla_table *events;
    char *config;
};
int hyla_ledger_query_show(struct hyla_ledger *l, int64_t run_id, struct hyla_ledger_run_details *out,
                           struct hyla_ledger_error *err);
void hyla_ledger_run_details_free(struct hyla_ledger_run_details *d);

/* A user's SQL: exactly one statement that reads (SELECT, WITH, read-only PRAGMA, EXPLAIN);
 * anything else (writes, ATTACH, several statements) is refused before it runs. */
int hyla_ledger_query_sql(struct hyla_ledger *l, const char *sql, struct hyla_table **out,
                          struct hyla_ledger_error *err);

#endif
