/* The ledger under a kill -9 and under concurrent readers.
 *
 * Crash: a child process (its own process group, like a whole job) writes batches of
 * rows, commits each and reports its number through a pipe; the parent kills the group
 * with SIGKILL mid-stream. Afterwards PRAGMA integrity_check is ok, every reported batch
 * is there, and no batch is there in part. Three rounds on one file, each child resuming
 * the run from its last step and replaying a few steps, which must not be written twice.
 *
 * Readers: two reader processes query while the parent writes; every query sees whole
 * batches (metric rows = BATCH x events, in one snapshot), counts never go back, and
 * neither side gets an error. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "experiments/ledger.h"
#include "experiments/ledger_query.h"
#include "harness.h"

enum { BATCH_ROWS = 200, KILL_AFTER = 25, ROUNDS = 3, READERS = 2, WRITER_BATCHES = 300 };

static char dir[64], path[128];

/* ---- the crashing writer ------------------------------------------------------------------- */

static void child_fail(const char *what, const struct hyla_ledger_error *err) {
    fprintf(stderr, "child: %s: %s\n", what, err->message);
    _exit(3);
}

/* Resume the run from its last step (replaying 7 steps, as after a checkpoint) and commit
 * batch after batch until killed. Reports (round, first step of batch) after each commit. */
static void crashing_writer(int round, int report_fd) {
    struct hyla_ledger_error err;
    struct hyla_ledger *l = NULL;
    /* Only explicit flushes commit: a batch is one transaction. */
    struct hyla_ledger_options opt = {.max_pending_rows = 1 << 30, .max_pending_seconds = 1e9};
    if (hyla_ledger_open(path, &opt, &l, &err)) child_fail("open", &err);
    int64_t batch, run;
    struct hyla_ledger_run_state st;
    if (hyla_ledger_add_batch(l, "crash", NULL, &batch, &err) || hyla_ledger_find_run(l, batch, "r", &st, &err))
        child_fail("batch", &err);
    if (!st.found) {
        if (hyla_ledger_add_run(l, batch, "r", "x: 1", "abc", 1, 0, &run, &err)) child_fail("add run", &err);
    } else {
        run = st.id;
        if (hyla_ledger_begin_attempt(l, run, round, 1, &err)) child_fail("attempt", &err);
    }
    int64_t step = st.found ? st.last_step + 1 - 7 : 0; /* replay: INSERT OR IGNORE */
    if (step < 0) step = 0;
    if (hyla_ledger_set_status(l, run, HYLA_RUN_RUNNING, NULL, &err)) child_fail("status", &err);
    for (;;) {
        int64_t first = step;
        for (int i = 0; i < BATCH_ROWS; i++, step++)
            if (hyla_ledger_add_metric(l, run, "loss", step, 1.0 / (double)(step + 1), 0, &err)) child_fail("metric", &err);
        double kept[4] = {1, 2, 3, 4}, zero[4] = {0}, lambda[4] = {1e-3, 1e-4, 1e-5, 1e-6};
        if (hyla_ledger_add_head_stats(l, run, first, 1, 4, kept, zero, lambda, &err) ||
            hyla_ledger_add_event(l, run, first, "batch", "committed", &err) || hyla_ledger_flush(l, &err))
            child_fail("commit", &err);
        int64_t report[2] = {round, first};
        if (write(report_fd, report, sizeof report) != (ssize_t)sizeof report) _exit(4);
    }
}

/* Reads every report left in the pipe; returns the highest committed end step (exclusive). */
static int64_t drain_reports(int fd, int64_t committed_end, int *reports) {
    int64_t report[2];
    ssize_t n;
    while ((n = read(fd, report, sizeof report)) == (ssize_t)sizeof report) {
        (*reports)++;
        if (report[1] + BATCH_ROWS > committed_end) committed_end = report[1] + BATCH_ROWS;
    }
    return committed_end;
}

static int64_t select_count(struct hyla_ledger *r, const char *sql) {
    struct hyla_ledger_error err;
    struct hyla_table *t = NULL;
    int64_t n = -1;
    if (hyla_ledger_select(r, sql, NULL, 0, &t, &err) == 0) n = (int64_t)hyla_table_number(t, 0, 0);
    else printf("     %s: %s\n", sql, err.message);
    hyla_table_free(t);
    return n;
}

static void check_after_crash(int round, int64_t committed_end) {
    struct hyla_ledger_error err;
    struct hyla_ledger *r = NULL;
    char what[160];
    /* A reader first: it must cope with the hot WAL the killed writer left. */
    int rc = hyla_ledger_open_readonly(path, &r, &err);
    if (rc) printf("     %s\n", err.message);
    check_true("a reader opens the ledger after the kill", rc == 0);
    if (rc) return;
    struct hyla_table *t = NULL;
    rc = hyla_ledger_query_sql(r, "PRAGMA integrity_check", &t, &err);
    snprintf(what, sizeof what, "round %d: PRAGMA integrity_check = ok", round);
    check_true(what, rc == 0 && t->n_rows == 1 && !strcmp(hyla_table_text(t, 0, 0), "ok"));
    hyla_table_free(t);
    int64_t rows = select_count(r, "SELECT count(*) FROM metrics");
    int64_t below = -1;
    struct hyla_filter_bind b = {1, (double)committed_end, NULL};
    if (hyla_ledger_select(r, "SELECT count(DISTINCT step) FROM metrics WHERE step < ?1", &b, 1, &t, &err) == 0)
        below = (int64_t)hyla_table_number(t, 0, 0);
    hyla_table_free(t);
    int64_t max_step = select_count(r, "SELECT max(step) FROM metrics");
    int64_t events = select_count(r, "SELECT count(*) FROM events");
    int64_t heads = select_count(r, "SELECT count(*) FROM head_stats");
    printf("     round %d: reported up to step %lld; ledger has %lld rows (max step %lld), %lld events\n", round,
           (long long)committed_end, (long long)rows, (long long)max_step, (long long)events);
    snprintf(what, sizeof what, "round %d: every step reported committed is there (%lld)", round,
             (long long)committed_end);
    check_true(what, below == committed_end);
    snprintf(what, sizeof what, "round %d: no step twice, no gap (rows = max step + 1)", round);
    check_true(what, rows == max_step + 1);
    /* A replayed batch overlaps the previous one, so whole batches show as events x rows >= ... */
    snprintf(what, sizeof what, "round %d: head stats and events of every committed batch", round);
    check_true(what, heads == 4 * events && events * BATCH_ROWS >= committed_end);
    snprintf(what, sizeof what, "round %d: nothing beyond the last possible commit", round);
    check_true(what, rows <= committed_end + BATCH_ROWS); /* at most the batch committed as the kill came */
    hyla_ledger_close(r, &err);
    /* The writer reopens (and recovers) too. */
    struct hyla_ledger *w = NULL;
    rc = hyla_ledger_open(path, NULL, &w, &err);
    if (rc) printf("     %s\n", err.message);
    check_true("the writer reopens after the kill", rc == 0 && hyla_ledger_close(w, &err) == 0);
}

static void test_kill(void) {
    int64_t committed_end = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int fds[2];
        if (pipe(fds) != 0) {
            perror("pipe");
            exit(1);
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            exit(1);
        }
        if (pid == 0) {
            close(fds[0]);
            setpgid(0, 0); /* a job of its own, killed as a whole */
            crashing_writer(round, fds[1]);
        }
        close(fds[1]);
        setpgid(pid, pid); /* also from here: no race with the child's own call */
        int reports = 0;
        int64_t report[2];
        while (reports < KILL_AFTER + round * 5 && read(fds[0], report, sizeof report) == (ssize_t)sizeof report) {
            reports++;
            if (report[1] + BATCH_ROWS > committed_end) committed_end = report[1] + BATCH_ROWS;
        }
        /* A few hundred microseconds more, so the kill lands at different points of a batch. */
        struct timespec pause = {0, 100000L * (1 + round)};
        nanosleep(&pause, NULL);
        check_true("kill -9 the job", kill(-pid, SIGKILL) == 0);
        int status = 0;
        waitpid(pid, &status, 0);
        committed_end = drain_reports(fds[0], committed_end, &reports); /* reports written before it died */
        close(fds[0]);
        char what[96];
        snprintf(what, sizeof what, "round %d: the writer died of SIGKILL after %d commits", round, reports);
        check_true(what, WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && reports >= KILL_AFTER);
        check_after_crash(round, committed_end);
    }
}

/* ---- concurrent readers ----------------------------------------------------------------------- */

/* Query until the writer's last batch is visible; exit 0 when every snapshot was whole. */
static void reader_process(int id) {
    struct hyla_ledger_error err;
    int64_t last = -1;
    long queries = 0, changes = 0;
    double deadline = (double)time(NULL) + 60;
    for (;;) {
        struct hyla_ledger *r = NULL;
        if (hyla_ledger_open_readonly(path, &r, &err)) { /* the writer created the file first */
            fprintf(stderr, "reader %d: %s\n", id, err.message);
            _exit(1);
        }
        /* Reopen now and then: new readers must also open during writes. */
        for (int k = 0; k < 50; k++) {
            struct hyla_table *t = NULL;
            if (hyla_ledger_select(r,
                                   "SELECT (SELECT count(*) FROM metrics WHERE run_id = 1), "
                                   "(SELECT count(*) FROM events WHERE run_id = 1)",
                                   NULL, 0, &t, &err)) {
                fprintf(stderr, "reader %d: %s\n", id, err.message);
                _exit(1);
            }
            int64_t rows = (int64_t)hyla_table_number(t, 0, 0), batches = (int64_t)hyla_table_number(t, 0, 1);
            hyla_table_free(t);
            queries++;
            if (rows != batches * BATCH_ROWS || rows < last) {
                fprintf(stderr, "reader %d: torn snapshot: %lld rows, %lld batches (before: %lld)\n", id,
                        (long long)rows, (long long)batches, (long long)last);
                _exit(2);
            }
            changes += rows != last;
            last = rows;
            if (batches == WRITER_BATCHES) {
                printf("     reader %d: %ld queries, %ld distinct snapshots, all whole\n", id, queries, changes);
                fflush(stdout);
                _exit(changes > 2 ? 0 : 5); /* it must have run alongside the writer */
            }
        }
        hyla_ledger_close(r, &err);
        if ((double)time(NULL) > deadline) _exit(6);
    }
}

static void test_concurrent_readers(void) {
    snprintf(path, sizeof path, "%s/readers.db", dir);
    struct hyla_ledger_error err;
    struct hyla_ledger *w = NULL;
    struct hyla_ledger_options opt = {.max_pending_rows = 1 << 30, .max_pending_seconds = 1e9};
    int64_t batch, run;
    int rc = hyla_ledger_open(path, &opt, &w, &err) || hyla_ledger_add_batch(w, "b", NULL, &batch, &err) ||
             hyla_ledger_add_run(w, batch, "r", "", "", 1, 0, &run, &err);
    if (rc) printf("     %s\n", err.message);
    check_true("writer ready", rc == 0 && run == 1);
    if (rc) return;
    pid_t readers[READERS];
    fflush(stdout); /* the children must not print the parent's buffered lines again */
    for (int i = 0; i < READERS; i++) {
        readers[i] = fork();
        if (readers[i] == 0) reader_process(i);
    }
    double worst = 0;
    int write_errors = 0;
    for (int b = 0; b < WRITER_BATCHES; b++) {
        struct timespec t0, t1, pause = {0, 2 * 1000 * 1000};
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < BATCH_ROWS; i++)
            write_errors += hyla_ledger_add_metric(w, run, "loss", (int64_t)b * BATCH_ROWS + i, 1.0, 0, &err) != 0;
        write_errors += hyla_ledger_add_event(w, run, b, "batch", "", &err) != 0;
        write_errors += hyla_ledger_flush(w, &err) != 0;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (s > worst) worst = s;
        nanosleep(&pause, NULL); /* a training step's worth of pause between commits */
    }
    if (write_errors) printf("     writer: %s\n", err.message);
    check_true("the writer never failed while readers read", write_errors == 0);
    printf("     slowest batch commit with two readers: %.2f ms\n", worst * 1e3);
    check_true("readers never block the writer (every commit < 1 s)", worst < 1.0);
    for (int i = 0; i < READERS; i++) {
        int status = 0;
        waitpid(readers[i], &status, 0);
        char what[96];
        snprintf(what, sizeof what, "reader %d saw only whole batches, concurrently (exit %d)", i,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        check_true(what, WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    check_true("close", hyla_ledger_close(w, &err) == 0);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/hyla_ledger_crash_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/runs/ledger.db", dir);
    fflush(stdout); /* children must not repeat the parent's buffered output */
    test_kill();
    fflush(stdout);
    test_concurrent_readers();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
    return test_finish();
}
