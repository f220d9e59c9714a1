/* Inside the ledger: the handle and helpers shared by ledger.c (open, write),
 * ledger_schema.c (DDL, migrations), ledger_query.c and report_html.c (reads). */
#ifndef HYLA_LEDGER_INTERNAL_H
#define HYLA_LEDGER_INTERNAL_H

#include <sqlite3.h>

#include "experiments/ledger.h"

/* The writer's statements, prepared once at open and reset after every use. */
enum ledger_stmt {
    STMT_BEGIN,
    STMT_COMMIT,
    STMT_INSERT_BATCH,
    STMT_SELECT_BATCH,
    STMT_INSERT_RUN,
    STMT_FIND_RUN,
    STMT_SET_STATUS,
    STMT_BEGIN_ATTEMPT,
    STMT_INSERT_PARAM,
    STMT_INSERT_METRIC,
    STMT_INSERT_HEAD,
    STMT_INSERT_EVENT,
    STMT_INSERT_CHECKPOINT,
    STMT_UPDATE_LAST_STEP,
    STMT_COUNT
};

/* Highest metric step per run in the open transaction: written to runs.last_step at commit. */
struct ledger_step_mark {
    int64_t run_id;
    int64_t step;
};

struct hyla_ledger {
    sqlite3 *db;
    char path[1024];
    int readonly;
    struct hyla_ledger_options opt;
    sqlite3_stmt *stmt[STMT_COUNT];
    int in_transaction;
    size_t pending_rows;
    double pending_since; /* monotonic seconds of the first uncommitted row */
    struct ledger_step_mark *marks;
    size_t n_marks, cap_marks;
};

/* Fill err with "ledger PATH: WHAT: <sqlite's message>; <a fix for that error code>". */
void ledger_sqlite_error(const struct hyla_ledger *l, int rc, const char *what, struct hyla_ledger_error *err);
/* printf-style message into err; returns -1. */
int ledger_fail(struct hyla_ledger_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The write transaction (ledger.c). ledger_step_done runs a writer statement to
 * completion and resets it; ledger_row_written counts a buffered row and commits when due. */
int ledger_begin(struct hyla_ledger *l, struct hyla_ledger_error *err);
int ledger_step_done(struct hyla_ledger *l, enum ledger_stmt which, const char *what, struct hyla_ledger_error *err);
int ledger_mark_step(struct hyla_ledger *l, int64_t run_id, int64_t step, struct hyla_ledger_error *err);
int ledger_row_written(struct hyla_ledger *l, struct hyla_ledger_error *err);

/* Create or migrate the schema to target (ledger_schema.c); the writer only. */
int ledger_schema_migrate(struct hyla_ledger *l, int target, struct hyla_ledger_error *err);
/* Read user_version and check application_id: a reader's check. */
int ledger_schema_check(struct hyla_ledger *l, struct hyla_ledger_error *err);
#define HYLA_LEDGER_APPLICATION_ID 0x68796c61 /* "hyla" */

#endif
