/* The queries behind `hyla ledger` (see ledger_query.h). Each one prepares its SQL, binds
 * every user value as a parameter, and collects the rows into a table. */
#include "experiments/ledger_query.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/ledger_internal.h"

#define LIST_MAX 20 /* names listed in a not-found message */
#define UTC(col) "strftime('%Y-%m-%d %H:%M:%S', " col ", 'unixepoch')"

/* ---- statements ------------------------------------------------------------------------------ */

static int prepare(struct hyla_ledger *l, const char *sql, sqlite3_stmt **stmt, struct hyla_ledger_error *err) {
    int rc = sqlite3_prepare_v2(l->db, sql, -1, stmt, NULL);
    if (rc == SQLITE_OK) return 0;
    ledger_sqlite_error(l, rc, "preparing a query", err);
    sqlite3_finalize(*stmt);
    *stmt = NULL;
    return -1;
}

static int bind_failed(struct hyla_ledger *l, struct hyla_ledger_error *err) {
    ledger_sqlite_error(l, sqlite3_errcode(l->db), "binding a query's values", err);
    return -1;
}

static int bind_int(struct hyla_ledger *l, sqlite3_stmt *stmt, int index, int64_t v, struct hyla_ledger_error *err) {
    return sqlite3_bind_int64(stmt, index, v) == SQLITE_OK ? 0 : bind_failed(l, err);
}

static int bind_str(struct hyla_ledger *l, sqlite3_stmt *stmt, int index, const char *s, struct hyla_ledger_error *err) {
    int rc = s ? sqlite3_bind_text(stmt, index, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(stmt, index);
    return rc == SQLITE_OK ? 0 : bind_failed(l, err);
}

static int bind_values(struct hyla_ledger *l, sqlite3_stmt *stmt, const struct hyla_filter_bind *binds, size_t n,
                       struct hyla_ledger_error *err) {
    for (size_t i = 0; i < n; i++) {
        int index = (int)i + 1;
        int rc = binds[i].is_number ? sqlite3_bind_double(stmt, index, binds[i].number)
                                    : sqlite3_bind_text(stmt, index, binds[i].text, -1, SQLITE_TRANSIENT);
        if (rc != SQLITE_OK) return bind_failed(l, err);
    }
    return 0;
}

static int out_of_memory(struct hyla_ledger *l, struct hyla_ledger_error *err) {
    return ledger_fail(err, "ledger %.400s: out of memory while reading", l->path);
}

static struct hyla_table *table_for(sqlite3_stmt *stmt) {
    int n = sqlite3_column_count(stmt);
    const char *names[256];
    if (n > 256) n = 256; /* a wider SELECT keeps its first 256 columns */
    for (int c = 0; c < n; c++) names[c] = sqlite3_column_name(stmt, c);
    return hyla_table_new(n, names);
}

/* Append every row of stmt to *t (created from the statement's column names when NULL);
 * the statement is reset, its bindings kept. */
static int append_rows(struct hyla_ledger *l, sqlite3_stmt *stmt, struct hyla_table **t,
                       struct hyla_ledger_error *err) {
    if (!*t && !(*t = table_for(stmt))) return out_of_memory(l, err);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        size_t row = hyla_table_add_row(*t);
        for (int c = 0; c < (*t)->n_cols; c++) {
            switch (sqlite3_column_type(stmt, c)) {
            case SQLITE_INTEGER: hyla_table_set_int(*t, row, c, sqlite3_column_int64(stmt, c)); break;
            case SQLITE_FLOAT: hyla_table_set_real(*t, row, c, sqlite3_column_double(stmt, c)); break;
            case SQLITE_TEXT: hyla_table_set_text(*t, row, c, (const char *)sqlite3_column_text(stmt, c)); break;
            case SQLITE_BLOB: hyla_table_set_text(*t, row, c, "<blob>"); break;
            default: break; /* NULL */
            }
        }
    }
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE) {
        ledger_sqlite_error(l, rc, "reading rows", err);
        return -1;
    }
    return hyla_table_ok(*t) ? 0 : out_of_memory(l, err);
}

int hyla_ledger_select(struct hyla_ledger *l, const char *sql, const struct hyla_filter_bind *binds, size_t n_binds,
                       struct hyla_table **out, struct hyla_ledger_error *err) {
    *out = NULL;
    sqlite3_stmt *stmt = NULL;
    if (prepare(l, sql, &stmt, err)) return -1;
    int rc = bind_values(l, stmt, binds, n_binds, err);
    if (rc == 0) rc = append_rows(l, stmt, out, err);
    sqlite3_finalize(stmt);
    if (rc) {
        hyla_table_free(*out);
        *out = NULL;
    }
    return rc;
}

/* The first column of the first row as an integer; found = 0 when no row or NULL. */
static int select_int(struct hyla_ledger *l, const char *sql, const struct hyla_filter_bind *binds, size_t n_binds,
                      int64_t *value, int *found, struct hyla_ledger_error *err) {
    struct hyla_table *t = NULL;
    if (hyla_ledger_select(l, sql, binds, n_binds, &t, err)) return -1;
    *found = t->n_rows > 0 && t->n_cols > 0 && hyla_table_cell(t, 0, 0)->type != HYLA_CELL_NULL;
    if (*found) *value = (int64_t)hyla_table_number(t, 0, 0);
    hyla_table_free(t);
    return 0;
}

/* Bind lists for the common shapes: (int), (int, text), (text). */
#define BIND_INT(x) {1, (double)(x), NULL}
#define BIND_TEXT(s) {0, 0, (s)}

/* ---- not-found messages ----------------------------------------------------------------------- */

struct msg {
    char *buf;
    size_t size, len;
};

static void msg_add(struct msg *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msg_add(struct msg *m, const char *fmt, ...) {
    if (m->len >= m->size) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m->buf + m->len, m->size - m->len, fmt, ap);
    va_end(ap);
    if (n > 0) m->len = m->len + (size_t)n < m->size ? m->len + (size_t)n : m->size;
}

/* Column 0 of each row of t, comma-separated, at most LIST_MAX and at most room bytes. */
static void msg_list(struct msg *m, const struct hyla_table *t, size_t room) {
    size_t limit = m->len + room < m->size ? m->len + room : m->size;
    for (size_t r = 0; r < t->n_rows && r < LIST_MAX; r++) {
        char item[160];
        hyla_cell_format(t, r, 0, 1, item, sizeof item);
        if (m->len + strlen(item) + 2 >= limit) {
            msg_add(m, ", ...");
            return;
        }
        msg_add(m, "%s%s", r ? ", " : "", item);
    }
    if (t->n_rows > LIST_MAX) msg_add(m, ", ... (%zu in all)", t->n_rows);
}

/* err = head + a list of column 0 of sql's rows + tail (or head + empty when there are none). */
static int fail_with_list(struct hyla_ledger *l, struct hyla_ledger_error *err, const char *head, const char *sql,
                          const struct hyla_filter_bind *binds, size_t n_binds, const char *empty, const char *tail) {
    struct hyla_table *t = NULL;
    struct hyla_ledger_error list_err;
    char buf[sizeof err->message];
    struct msg m = {buf, sizeof buf, 0};
    msg_add(&m, "%s", head);
    if (hyla_ledger_select(l, sql, binds, n_binds, &t, &list_err) == 0 && t->n_rows > 0) {
        msg_list(&m, t, sizeof buf / 2);
        msg_add(&m, "%s", tail);
    } else {
        msg_add(&m, "%s", empty);
    }
    hyla_table_free(t);
    snprintf(err->message, sizeof err->message, "%s", buf);
    return -1;
}

#define RUN_LIST_SQL                                                                              \
    "SELECT r.id || ' ' || b.name || '/' || r.name || ' (' || r.status || ')' "                   \
    "FROM runs r JOIN batches b ON b.id = r.batch_id "

/* ---- runs and batches by name ---------------------------------------------------------------- */

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

int hyla_ledger_resolve_run(struct hyla_ledger *l, const char *spec, int64_t *run_id, struct hyla_ledger_error *err) {
    int found = 0;
    if (all_digits(spec)) {
        struct hyla_filter_bind id = BIND_INT(strtoll(spec, NULL, 10));
        if (select_int(l, "SELECT id FROM runs WHERE id = ?1", &id, 1, run_id, &found, err)) return -1;
        if (found) return 0;
    }
    /* BATCH/NAME or NAME; "?2 IS NULL" lets one statement serve both. */
    const char *slash = strrchr(spec, '/');
    char batch[512] = "";
    const char *name = spec;
    if (slash && (size_t)(slash - spec) < sizeof batch) {
        memcpy(batch, spec, (size_t)(slash - spec));
        batch[slash - spec] = '\0';
        name = slash + 1;
    }
    struct hyla_table *t = NULL;
    struct hyla_filter_bind binds[2] = {BIND_TEXT(name), BIND_TEXT(batch[0] ? batch : NULL)}; /* NULL binds NULL */
    const char *sql = "SELECT r.id, b.name || '/' || r.name || ' (id ' || r.id || ')' FROM runs r "
                      "JOIN batches b ON b.id = r.batch_id WHERE r.name = ?1 AND (?2 IS NULL OR b.name = ?2) "
                      "ORDER BY r.id";
    if (hyla_ledger_select(l, sql, binds, 2, &t, err)) return -1;
    size_t n = t->n_rows;
    if (n == 1) *run_id = (int64_t)hyla_table_number(t, 0, 0);
    if (n > 1) {
        char buf[sizeof err->message];
        struct msg m = {buf, sizeof buf, 0};
        msg_add(&m, "ledger %.400s: run name '%s' is ambiguous: ", l->path, spec);
        for (size_t r = 0; r < n && r < LIST_MAX; r++) msg_add(&m, "%s%s", r ? ", " : "", hyla_table_text(t, r, 1));
        msg_add(&m, "; name one by BATCH/NAME or by id");
        snprintf(err->message, sizeof err->message, "%s", buf);
    }
    hyla_table_free(t);
    if (n == 1) return 0;
    if (n > 1) return -1;
    char head[1024];
    snprintf(head, sizeof head, "ledger %.400s: no run '%s'; runs (newest first): ", l->path, spec);
    return fail_with_list(l, err, head, RUN_LIST_SQL "ORDER BY r.id DESC", NULL, 0, "the ledger has no runs yet",
                          "; `hyla ledger runs` lists them all");
}

int hyla_ledger_resolve_batch(struct hyla_ledger *l, const char *name, int64_t *batch_id,
                              struct hyla_ledger_error *err) {
    int found = 0;
    struct hyla_filter_bind b = BIND_TEXT(name);
    if (select_int(l, "SELECT id FROM batches WHERE name = ?1", &b, 1, batch_id, &found, err)) return -1;
    if (found) return 0;
    char head[1024];
    snprintf(head, sizeof head, "ledger %.400s: no batch '%s'; batches: ", l->path, name);
    return fail_with_list(l, err, head, "SELECT name FROM batches ORDER BY id", NULL, 0,
                          "the ledger has no batches yet", "");
}

/* ---- runs ------------------------------------------------------------------------------------- */


/* Every parameter key the filter names exists in some run; else list similar keys. */
static int check_filter_keys(struct hyla_ledger *l, const struct hyla_ledger_filter *filter,
                             struct hyla_ledger_error *err) {
    const struct hyla_filter_key *keys;
    size_t n = hyla_ledger_filter_keys(filter, &keys);
    for (size_t i = 0; i < n; i++) {
        struct hyla_filter_bind key = BIND_TEXT(keys[i].key);
        int64_t one;
        int found = 0;
        if (select_int(l,
                       "SELECT 1 FROM params WHERE key = ?1 OR (length(key) > length(?1) AND "
                       "substr(key, -length(?1) - 1) = '.' || ?1) LIMIT 1",
                       &key, 1, &one, &found, err))
            return -1;
        if (found) continue;
        const char *last = strrchr(keys[i].key, '.');
        last = last ? last + 1 : keys[i].key;
        char head[1024];
        snprintf(head, sizeof head, "ledger %.400s: filter at column %zu: no run has a parameter '%s'; parameters: ",
                 l->path, keys[i].pos + 1, keys[i].key);
        /* Keys that share the last component first, then the rest alphabetically. */
        struct hyla_filter_bind component = BIND_TEXT(last);
        return fail_with_list(l, err, head, "SELECT key FROM params GROUP BY key ORDER BY instr(key, ?1) = 0, key",
                              &component, 1, "the ledger has no runs yet",
                              "; a key matches its full dotted name or a suffix after a dot");
    }
    return 0;
}

int hyla_ledger_query_runs(struct hyla_ledger *l, const struct hyla_ledger_filter *filter, struct hyla_table **out,
                           struct hyla_ledger_error *err) {
    *out = NULL;
    if (filter && check_filter_keys(l, filter, err)) return -1;
    const char *where = filter ? hyla_ledger_filter_sql(filter) : "1";
    const struct hyla_filter_bind *binds = NULL;
    size_t n_binds = filter ? hyla_ledger_filter_binds(filter, &binds) : 0;
    static const char head[] =
        "SELECT r.id, b.name AS batch, r.name, r.status, r.attempt, r.world_size, r.last_step, "
        "(SELECT m.value FROM metrics m WHERE m.run_id = r.id AND m.key = 'loss' ORDER BY m.step DESC LIMIT 1) "
        "AS loss, " UTC("r.started_at") " AS started, " UTC("r.ended_at") " AS ended, r.error "
        "FROM runs r JOIN batches b ON b.id = r.batch_id WHERE ";
    size_t len = strlen(head) + strlen(where) + 32;
    char *sql = malloc(len);
    if (!sql) return out_of_memory(l, err);
    snprintf(sql, len, "%s%s ORDER BY r.id", head, where); /* where: the filter's SQL, values bound */
    int rc = hyla_ledger_select(l, sql, binds, n_binds, out, err);
    free(sql);
    return rc;
}

/* ---- metrics ---------------------------------------------------------------------------------- */

/* Distinct metric keys of a run, by skipping through the (run, key, step) index. */
static const char RUN_KEYS_SQL[] =
    "WITH RECURSIVE k(key) AS (SELECT min(key) FROM metrics WHERE run_id = ?1 "
    "UNION ALL SELECT (SELECT min(key) FROM metrics WHERE run_id = ?1 AND key > k.key) FROM k "
    "WHERE k.key IS NOT NULL) SELECT key FROM k WHERE key IS NOT NULL";

static int run_has_metric(struct hyla_ledger *l, int64_t run, const char *key, int *has,
                          struct hyla_ledger_error *err) {
    int64_t one;
    struct hyla_filter_bind b[2] = {BIND_INT(run), BIND_TEXT(key)};
    return select_int(l, "SELECT 1 FROM metrics WHERE run_id = ?1 AND key = ?2 LIMIT 1", b, 2, &one, has, err);
}

static int run_label(struct hyla_ledger *l, int64_t run, char *buf, size_t size, struct hyla_ledger_error *err) {
    struct hyla_table *t = NULL;
    struct hyla_filter_bind b = {1, (double)run, NULL};
    if (hyla_ledger_select(l, "SELECT name FROM runs WHERE id = ?1", &b, 1, &t, err)) return -1;
    snprintf(buf, size, "%s", t->n_rows ? hyla_table_text(t, 0, 0) : "?");
    hyla_table_free(t);
    return 0;
}

int hyla_ledger_query_metrics(struct hyla_ledger *l, const int64_t *run_ids, size_t n_runs, const char *key,
                              int64_t every, struct hyla_table **out, struct hyla_ledger_error *err) {
    *out = NULL;
    int any = 0;
    for (size_t i = 0; i < n_runs && !any; i++)
        if (run_has_metric(l, run_ids[i], key, &any, err)) return -1;
    if (!any && n_runs > 0) {
        char name[256], head[1024];
        if (run_label(l, run_ids[0], name, sizeof name, err)) return -1;
        snprintf(head, sizeof head, "ledger %.400s: no metric '%s' in run%s %s%s; its metrics: ", l->path, key,
                 n_runs > 1 ? "s" : "", name, n_runs > 1 ? " (and the others)" : "");
        struct hyla_filter_bind b = BIND_INT(run_ids[0]);
        return fail_with_list(l, err, head, RUN_KEYS_SQL, &b, 1, "none yet", "");
    }
    sqlite3_stmt *stmt = NULL;
    if (prepare(l,
                "SELECT r.name AS run, m.step, m.value, m.wall_time FROM metrics m JOIN runs r ON r.id = m.run_id "
                "WHERE m.run_id = ?1 AND m.key = ?2 AND (?3 <= 1 OR m.step % ?3 = 0) ORDER BY m.step",
                &stmt, err))
        return -1;
    int rc = bind_str(l, stmt, 2, key, err) || bind_int(l, stmt, 3, every, err) ? -1 : 0;
    for (size_t i = 0; i < n_runs && rc == 0; i++)
        rc = bind_int(l, stmt, 1, run_ids[i], err) || append_rows(l, stmt, out, err) ? -1 : 0;
    if (rc == 0 && !*out && !(*out = table_for(stmt))) rc = out_of_memory(l, err);
    sqlite3_finalize(stmt);
    if (rc) {
        hyla_table_free(*out);
        *out = NULL;
    }
    return rc;
}

int hyla_ledger_metric_summary(struct hyla_ledger *l, int64_t run_id, const char *key, int64_t at_step,
                               struct hyla_metric_summary *s, struct hyla_ledger_error *err) {
    *s = (struct hyla_metric_summary){0, -1, -1, -1, NAN, NAN, NAN, NAN};
    /* Each sub-select walks the (run, key, step) index: last and at-step are single seeks. */
    static const char sql[] =
        "SELECT (SELECT count(value) FROM metrics WHERE run_id = ?1 AND key = ?2),"
        " (SELECT min(value) FROM metrics WHERE run_id = ?1 AND key = ?2),"
        " (SELECT max(value) FROM metrics WHERE run_id = ?1 AND key = ?2),"
        " (SELECT step FROM metrics WHERE run_id = ?1 AND key = ?2 AND value IS NOT NULL"
        "   ORDER BY value, step LIMIT 1),"
        " (SELECT step FROM metrics WHERE run_id = ?1 AND key = ?2 ORDER BY step DESC LIMIT 1),"
        " (SELECT value FROM metrics WHERE run_id = ?1 AND key = ?2 ORDER BY step DESC LIMIT 1),"
        " (SELECT step FROM metrics WHERE run_id = ?1 AND key = ?2 AND step <= ?3 ORDER BY step DESC LIMIT 1),"
        " (SELECT value FROM metrics WHERE run_id = ?1 AND key = ?2 AND step <= ?3 ORDER BY step DESC LIMIT 1)";
    sqlite3_stmt *stmt = NULL;
    if (prepare(l, sql, &stmt, err)) return -1;
    int rc = -1;
    if (bind_int(l, stmt, 1, run_id, err) || bind_str(l, stmt, 2, key, err) ||
        bind_int(l, stmt, 3, at_step, err))
        goto done;
    int step = sqlite3_step(stmt);
    if (step != SQLITE_ROW) {
        ledger_sqlite_error(l, step, "summarising a metric", err);
        goto done;
    }
#define COL_INT(c, dflt) (sqlite3_column_type(stmt, c) == SQLITE_NULL ? (dflt) : sqlite3_column_int64(stmt, c))
#define COL_REAL(c) (sqlite3_column_type(stmt, c) == SQLITE_NULL ? NAN : sqlite3_column_double(stmt, c))
    s->count = COL_INT(0, 0);
    s->min = COL_REAL(1);
    s->max = COL_REAL(2);
    s->min_step = COL_INT(3, -1);
    s->last_step = COL_INT(4, -1);
    s->last = COL_REAL(5);
    if (at_step >= 0) {
        s->at_step = COL_INT(6, -1);
        s->at = COL_REAL(7);
    }
#undef COL_INT
#undef COL_REAL
    rc = 0;
done:
    sqlite3_finalize(stmt);
    return rc;
}

/* ---- head statistics ------------------------------------------------------------------------- */

static const char RUN_LAYERS_SQL[] =
    "WITH RECURSIVE k(layer) AS (SELECT min(layer) FROM head_stats WHERE run_id = ?1 "
    "UNION ALL SELECT (SELECT min(layer) FROM head_stats WHERE run_id = ?1 AND layer > k.layer) FROM k "
    "WHERE k.layer IS NOT NULL) SELECT layer FROM k WHERE layer IS NOT NULL";

static int has_head_stats(struct hyla_ledger *l, int64_t run_id, int layer, int *found,
                          struct hyla_ledger_error *err) {
    struct hyla_filter_bind b[2] = {BIND_INT(run_id), BIND_INT(layer)};
    int64_t one;
    return select_int(l, "SELECT 1 FROM head_stats WHERE run_id = ?1 AND (?2 < 0 OR layer = ?2) LIMIT 1", b, 2, &one,
                      found, err);
}

static int check_heads_exist(struct hyla_ledger *l, int64_t run_id, int layer, struct hyla_ledger_error *err) {
    int found = 0, any = 0;
    if (has_head_stats(l, run_id, layer, &found, err)) return -1;
    if (found) return 0;
    if (layer >= 0 && has_head_stats(l, run_id, -1, &any, err)) return -1;
    char name[256], head[1024];
    if (run_label(l, run_id, name, sizeof name, err)) return -1;
    if (any) {
        struct hyla_filter_bind b = BIND_INT(run_id);
        snprintf(head, sizeof head, "ledger %.400s: run %s has no head statistics for layer %d; layers with statistics: ",
                 l->path, name, layer);
        return fail_with_list(l, err, head, RUN_LAYERS_SQL, &b, 1, "none", "");
    }
    return ledger_fail(err,
                       "ledger %.400s: run %s has no head statistics (it has no LTE layers, or ledger.head_stats_every "
                       "is 0, or it has not reached its first report)",
                       l->path, name);
}

static int compare_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Rows (layer, head, step, value) in (layer, head, step) order -> one row per step and one
 * column per (layer, head), in the order the pairs first appear. */
static int pivot_heads(struct hyla_ledger *l, const struct hyla_table *rows, struct hyla_table **out,
                       struct hyla_ledger_error *err) {
    size_t n = rows->n_rows, n_pairs = 0, n_steps = 0, cap = n ? n : 1;
    int64_t *row_step = malloc(cap * sizeof *row_step), *steps = malloc(cap * sizeof *steps);
    size_t *row_pair = malloc(cap * sizeof *row_pair);
    char(*names)[32] = malloc(cap * sizeof *names);
    const char **cols = malloc((cap + 1) * sizeof *cols);
    int rc = -1;
    if (!row_step || !steps || !row_pair || !names || !cols) goto done;
    for (size_t r = 0; r < n; r++) {
        char name[32];
        snprintf(name, sizeof name, "L%d.h%d", (int)hyla_table_number(rows, r, 0), (int)hyla_table_number(rows, r, 1));
        if (n_pairs == 0 || strcmp(names[n_pairs - 1], name) != 0) memcpy(names[n_pairs++], name, sizeof name);
        row_pair[r] = n_pairs - 1;
        row_step[r] = steps[r] = (int64_t)hyla_table_number(rows, r, 2);
    }
    qsort(steps, n, sizeof *steps, compare_i64);
    for (size_t i = 0; i < n; i++)
        if (n_steps == 0 || steps[n_steps - 1] != steps[i]) steps[n_steps++] = steps[i];
    cols[0] = "step";
    for (size_t p = 0; p < n_pairs; p++) cols[p + 1] = names[p];
    if (!(*out = hyla_table_new((int)n_pairs + 1, cols))) goto done;
    for (size_t s = 0; s < n_steps; s++) hyla_table_set_int(*out, hyla_table_add_row(*out), 0, steps[s]);
    for (size_t r = 0; r < n; r++) {
        const int64_t *at = bsearch(&row_step[r], steps, n_steps, sizeof *steps, compare_i64);
        hyla_table_set_real(*out, (size_t)(at - steps), (int)row_pair[r] + 1, hyla_table_number(rows, r, 3));
    }
    rc = hyla_table_ok(*out) ? 0 : -1;
done:
    free(row_step);
    free(steps);
    free(row_pair);
    free(names);
    free(cols);
    return rc == 0 ? 0 : out_of_memory(l, err);
}

int hyla_ledger_query_heads(struct hyla_ledger *l, int64_t run_id, int layer, const char *key,
                            struct hyla_table **out, struct hyla_ledger_error *err) {
    *out = NULL;
    static const char *const KEYS[] = {"kept", "sparsity", "lambda"};
    const char *column = NULL;
    for (int i = 0; i < 3 && key; i++)
        if (!strcmp(key, KEYS[i])) column = KEYS[i]; /* the SQL names a column from this list only */
    if (key && !column)
        return ledger_fail(err, "unknown head statistic '%s'; the statistics are kept, sparsity and lambda", key);
    if (check_heads_exist(l, run_id, layer, err)) return -1;
    struct hyla_filter_bind binds[2] = {{1, (double)run_id, NULL}, {1, layer, NULL}};
    char sql[256];
    if (!column) {
        snprintf(sql, sizeof sql,
                 "SELECT step, layer, head, kept, sparsity, lambda FROM head_stats "
                 "WHERE run_id = ?1 AND (?2 < 0 OR layer = ?2) ORDER BY step, layer, head");
        return hyla_ledger_select(l, sql, binds, 2, out, err);
    }
    snprintf(sql, sizeof sql,
             "SELECT layer, head, step, %s FROM head_stats WHERE run_id = ?1 AND (?2 < 0 OR layer = ?2) "
             "ORDER BY layer, head, step", column);
    struct hyla_table *rows = NULL;
    if (hyla_ledger_select(l, sql, binds, 2, &rows, err)) return -1;
    int rc = pivot_heads(l, rows, out, err);
    hyla_table_free(rows);
    return rc;
}

/* ---- events, compare, show ---------------------------------------------------------------------- */

int hyla_ledger_query_events(struct hyla_ledger *l, int64_t run_id, struct hyla_table **out,
                             struct hyla_ledger_error *err) {
    struct hyla_filter_bind b = {1, (double)run_id, NULL};
    return hyla_ledger_select(l,
                              "SELECT id, step, kind, message, " UTC("wall_time") " AS time FROM events "
                              "WHERE run_id = ?1 ORDER BY id",
                              &b, 1, out, err);
}

/* Append the summary of (run, key) to a compare/show metrics table. */
static int add_summary_row(struct hyla_ledger *l, struct hyla_table *t, const char *run, int64_t run_id,
                           const char *key, int64_t at_step, struct hyla_ledger_error *err) {
    struct hyla_metric_summary s;
    if (hyla_ledger_metric_summary(l, run_id, key, at_step, &s, err)) return -1;
    size_t r = hyla_table_add_row(t);
    int c = 0;
    if (run) hyla_table_set_text(t, r, c++, run);
    hyla_table_set_text(t, r, c++, key);
    hyla_table_set_int(t, r, c++, s.count);
    if (s.last_step >= 0) hyla_table_set_int(t, r, c, s.last_step);
    c++;
    hyla_table_set_real(t, r, c++, s.last);
    hyla_table_set_real(t, r, c++, s.min);
    if (s.min_step >= 0) hyla_table_set_int(t, r, c, s.min_step);
    c++;
    if (!run) hyla_table_set_real(t, r, c++, s.max);
    if (at_step >= 0) {
        if (s.at_step >= 0) hyla_table_set_int(t, r, c, s.at_step);
        c++;
        hyla_table_set_real(t, r, c++, s.at);
    }
    return 0;
}

static int run_keys(struct hyla_ledger *l, int64_t run_id, struct hyla_table **keys, struct hyla_ledger_error *err) {
    struct hyla_filter_bind b = {1, (double)run_id, NULL};
    return hyla_ledger_select(l, RUN_KEYS_SQL, &b, 1, keys, err);
}

static int compare_metrics(struct hyla_ledger *l, const int64_t *ids, char (*labels)[128], size_t n, const char *key,
                           int64_t at_step, struct hyla_table **out, struct hyla_ledger_error *err) {
    char at_name[48];
    snprintf(at_name, sizeof at_name, "at_%lld", (long long)at_step);
    const char *cols[] = {"run", "key", "count", "last_step", "last", "min", "min_step", "at_step", at_name};
    if (!(*out = hyla_table_new(at_step >= 0 ? 9 : 7, cols))) return out_of_memory(l, err);
    for (size_t i = 0; i < n; i++) {
        struct hyla_table *keys = NULL;
        if (!key && run_keys(l, ids[i], &keys, err)) return -1;
        size_t n_keys = key ? 1 : keys->n_rows;
        int rc = 0;
        for (size_t k = 0; k < n_keys && rc == 0; k++)
            rc = add_summary_row(l, *out, labels[i], ids[i], key ? key : hyla_table_text(keys, k, 0), at_step, err);
        hyla_table_free(keys);
        if (rc) return -1;
    }
    return hyla_table_ok(*out) ? 0 : out_of_memory(l, err);
}

/* The keys whose text differs between the runs (or that some run lacks), one column per run. */
static int compare_config(struct hyla_ledger *l, const int64_t *ids, char (*labels)[128], size_t n,
                          struct hyla_table **out, struct hyla_ledger_error *err) {
    json_t *array = json_array();
    for (size_t i = 0; array && i < n; i++)
        if (json_array_append_new(array, json_integer(ids[i])) != 0) {
            json_decref(array);
            array = NULL;
        }
    char *id_list = array ? json_dumps(array, JSON_COMPACT) : NULL;
    json_decref(array);
    if (!id_list) return out_of_memory(l, err);
    struct hyla_filter_bind b[2] = {{0, 0, id_list}, {1, (double)n, NULL}};
    struct hyla_table *keys = NULL;
    int rc = hyla_ledger_select(l,
                                "SELECT key FROM params WHERE run_id IN (SELECT value FROM json_each(?1)) "
                                "GROUP BY key HAVING count(*) < ?2 OR count(DISTINCT value_text) > 1 ORDER BY key",
                                b, 2, &keys, err);
    free(id_list);
    if (rc) return -1;
    const char **cols = malloc((n + 1) * sizeof *cols);
    if (!cols) {
        hyla_table_free(keys);
        return out_of_memory(l, err);
    }
    cols[0] = "key";
    for (size_t i = 0; i < n; i++) cols[i + 1] = labels[i];
    *out = hyla_table_new((int)n + 1, cols);
    free(cols);
    sqlite3_stmt *stmt = NULL;
    rc = *out ? prepare(l, "SELECT value_text FROM params WHERE run_id = ?1 AND key = ?2", &stmt, err)
              : out_of_memory(l, err);
    for (size_t k = 0; rc == 0 && k < keys->n_rows; k++) {
        size_t row = hyla_table_add_row(*out);
        hyla_table_set_text(*out, row, 0, hyla_table_text(keys, k, 0));
        for (size_t i = 0; rc == 0 && i < n; i++) {
            rc = bind_int(l, stmt, 1, ids[i], err) || bind_str(l, stmt, 2, hyla_table_text(keys, k, 0), err) ? -1 : 0;
            int step = rc == 0 ? sqlite3_step(stmt) : SQLITE_ERROR;
            if (step == SQLITE_ROW) hyla_table_set_text(*out, row, (int)i + 1, (const char *)sqlite3_column_text(stmt, 0));
            else if (step != SQLITE_DONE && rc == 0) rc = (ledger_sqlite_error(l, step, "reading params", err), -1);
            sqlite3_reset(stmt);
        }
    }
    sqlite3_finalize(stmt);
    hyla_table_free(keys);
    if (rc == 0 && !hyla_table_ok(*out)) rc = out_of_memory(l, err);
    return rc;
}

/* Column labels: run names, with the id added where two runs share a name. */
static int compare_labels(struct hyla_ledger *l, const int64_t *ids, size_t n, char (*labels)[128],
                          struct hyla_ledger_error *err) {
    for (size_t i = 0; i < n; i++)
        if (run_label(l, ids[i], labels[i], sizeof labels[i], err)) return -1;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (i != j && !strncmp(labels[i], labels[j], 100) && !strchr(labels[i], '#')) {
                size_t len = strnlen(labels[i], 100);
                snprintf(labels[i] + len, sizeof labels[i] - len, "#%lld", (long long)ids[i]);
                break;
            }
    return 0;
}

int hyla_ledger_query_compare(struct hyla_ledger *l, const int64_t *run_ids, size_t n_runs, const char *key,
                              int64_t at_step, struct hyla_ledger_comparison *out, struct hyla_ledger_error *err) {
    memset(out, 0, sizeof *out);
    char (*labels)[128] = calloc(n_runs ? n_runs : 1, sizeof *labels);
    if (!labels) return out_of_memory(l, err);
    int rc = compare_labels(l, run_ids, n_runs, labels, err);
    if (rc == 0 && key) {
        int any = 0;
        for (size_t i = 0; i < n_runs && !any && rc == 0; i++) rc = run_has_metric(l, run_ids[i], key, &any, err);
        if (rc == 0 && !any && n_runs) {
            char head[1024];
            snprintf(head, sizeof head, "ledger %.400s: no metric '%s' in the compared runs; %s has: ", l->path, key,
                     labels[0]);
            struct hyla_filter_bind b = BIND_INT(run_ids[0]);
            rc = fail_with_list(l, err, head, RUN_KEYS_SQL, &b, 1, "no metrics yet", "");
        }
    }
    if (rc == 0) rc = compare_metrics(l, run_ids, labels, n_runs, key, at_step, &out->metrics, err);
    if (rc == 0) rc = compare_config(l, run_ids, labels, n_runs, &out->config_diff, err);
    free(labels);
    if (rc) hyla_ledger_comparison_free(out);
    return rc;
}

int hyla_ledger_query_config_diff(struct hyla_ledger *l, const int64_t *run_ids, size_t n_runs,
                                  struct hyla_table **out, struct hyla_ledger_error *err) {
    *out = NULL;
    char (*labels)[128] = calloc(n_runs ? n_runs : 1, sizeof *labels);
    if (!labels) return out_of_memory(l, err);
    int rc = compare_labels(l, run_ids, n_runs, labels, err);
    if (rc == 0) rc = compare_config(l, run_ids, labels, n_runs, out, err);
    free(labels);
    if (rc) {
        hyla_table_free(*out);
        *out = NULL;
    }
    return rc;
}

void hyla_ledger_comparison_free(struct hyla_ledger_comparison *c) {
    hyla_table_free(c->metrics);
    hyla_table_free(c->config_diff);
    memset(c, 0, sizeof *c);
}

/* One row of a select, turned into (field, value) rows. */
static int transpose_one_row(struct hyla_ledger *l, const struct hyla_table *row, struct hyla_table **out,
                             struct hyla_ledger_error *err) {
    const char *cols[] = {"field", "value"};
    if (!(*out = hyla_table_new(2, cols))) return out_of_memory(l, err);
    for (int c = 0; c < row->n_cols; c++) {
        size_t r = hyla_table_add_row(*out);
        hyla_table_set_text(*out, r, 0, row->cols[c]);
        const struct hyla_cell *cell = hyla_table_cell(row, 0, c);
        if (cell->type == HYLA_CELL_INT) hyla_table_set_int(*out, r, 1, cell->v.i);
        else if (cell->type == HYLA_CELL_REAL) hyla_table_set_real(*out, r, 1, cell->v.r);
        else if (cell->type == HYLA_CELL_TEXT) hyla_table_set_text(*out, r, 1, hyla_table_text(row, 0, c));
    }
    return hyla_table_ok(*out) ? 0 : out_of_memory(l, err);
}

static int show_metrics(struct hyla_ledger *l, int64_t run_id, struct hyla_table **out, struct hyla_ledger_error *err) {
    const char *cols[] = {"key", "count", "last_step", "last", "min", "min_step", "max"};
    struct hyla_table *keys = NULL;
    if (run_keys(l, run_id, &keys, err)) return -1;
    int rc = (*out = hyla_table_new(7, cols)) ? 0 : out_of_memory(l, err);
    for (size_t k = 0; rc == 0 && k < keys->n_rows; k++)
        rc = add_summary_row(l, *out, NULL, run_id, hyla_table_text(keys, k, 0), -1, err);
    hyla_table_free(keys);
    return rc;
}

int hyla_ledger_query_show(struct hyla_ledger *l, int64_t run_id, struct hyla_ledger_run_details *out,
                           struct hyla_ledger_error *err) {
    memset(out, 0, sizeof *out);
    struct hyla_filter_bind b = {1, (double)run_id, NULL};
    struct hyla_table *row = NULL;
    int rc = hyla_ledger_select(
        l,
        "SELECT r.id, b.name AS batch, r.name, r.status, r.attempt, r.world_size, r.config_hash, r.last_step, "
        UTC("r.created_at") " AS created, " UTC("r.started_at") " AS started, " UTC("r.ended_at") " AS ended, "
        "round(r.ended_at - r.started_at, 1) AS seconds, r.error, "
        "(SELECT count(*) FROM head_stats h WHERE h.run_id = r.id) AS head_stat_rows, "
        "(SELECT count(*) FROM checkpoints c WHERE c.run_id = r.id) AS checkpoints, "
        "(SELECT count(*) FROM events e WHERE e.run_id = r.id) AS events, r.config "
        "FROM runs r JOIN batches b ON b.id = r.batch_id WHERE r.id = ?1",
        &b, 1, &row, err);
    if (rc == 0 && row->n_rows != 1) rc = ledger_fail(err, "ledger %.400s: no run with id %lld", l->path, (long long)run_id);
    if (rc == 0) {
        const char *config = hyla_table_text(row, 0, row->n_cols - 1);
        size_t len = config ? strlen(config) : 0;
        out->config = malloc(len + 1);
        if (!out->config) rc = out_of_memory(l, err);
        else memcpy(out->config, config ? config : "", len + 1);
        row->n_cols--; /* the config is shown as text, not as a field */
        if (rc == 0) rc = transpose_one_row(l, row, &out->fields, err);
        row->n_cols++;
    }
    hyla_table_free(row);
    if (rc == 0) rc = show_metrics(l, run_id, &out->metrics, err);
    if (rc == 0)
        rc = hyla_ledger_select(l,
                                "SELECT step, path, bytes, " UTC("created_at") " AS created FROM checkpoints "
                                "WHERE run_id = ?1 ORDER BY step",
                                &b, 1, &out->checkpoints, err);
    if (rc == 0)
        rc = hyla_ledger_select(l,
                                "SELECT kind, count(*) AS count, min(step) AS first_step, max(step) AS last_step "
                                "FROM events WHERE run_id = ?1 GROUP BY kind ORDER BY kind",
                                &b, 1, &out->events, err);
    if (rc) hyla_ledger_run_details_free(out);
    return rc;
}

void hyla_ledger_run_details_free(struct hyla_ledger_run_details *d) {
    hyla_table_free(d->fields);
    hyla_table_free(d->metrics);
    hyla_table_free(d->checkpoints);
    hyla_table_free(d->events);
    free(d->config);
    memset(d, 0, sizeof *d);
}

/* ---- sql ------------------------------------------------------------------------------------------ */

/* Pragmas that take an argument and only read. */
static int reading_pragma(const char *name) {
    static const char *const OK[] = {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
                                     "foreign_key_list", "integrity_check", "quick_check"};
    for (size_t i = 0; i < sizeof OK / sizeof *OK; i++)
        if (name && !strcmp(name, OK[i])) return 1;
    return 0;
}

/* Compile-time guard: only reads get through, whatever sqlite3_stmt_readonly thinks of the rest. */
static int read_only_authorizer(void *ctx, int action, const char *a, const char *b, const char *c, const char *d) {
    (void)ctx, (void)c, (void)d;
    switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_FUNCTION:
    case SQLITE_RECURSIVE: return SQLITE_OK;
    case SQLITE_PRAGMA: return (b == NULL || reading_pragma(a)) ? SQLITE_OK : SQLITE_DENY;
    default: return SQLITE_DENY;
    }
}

static const char TABLES_HINT[] =
    "; tables: batches, runs, params, metrics, head_stats, checkpoints, events (docs/ledger.md lists the columns)";

int hyla_ledger_query_sql(struct hyla_ledger *l, const char *sql, struct hyla_table **out,
                          struct hyla_ledger_error *err) {
    *out = NULL;
    if (sqlite3_set_authorizer(l->db, read_only_authorizer, NULL) != SQLITE_OK) {
        ledger_sqlite_error(l, sqlite3_errcode(l->db), "guarding the statement", err);
        return -1;
    }
    sqlite3_stmt *stmt = NULL, *next = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(l->db, sql, -1, &stmt, &tail);
    if (rc == SQLITE_OK && tail) rc = sqlite3_prepare_v2(l->db, tail, -1, &next, NULL);
    int result = -1;
    if (rc == SQLITE_AUTH)
        ledger_fail(err, "ledger sql: refused: only reading statements (SELECT, WITH, read-only PRAGMA) may run; "
                         "the ledger is written by the coordinator alone");
    else if (rc != SQLITE_OK)
        ledger_fail(err, "ledger sql: %s%s", sqlite3_errmsg(l->db), TABLES_HINT);
    else if (!stmt)
        ledger_fail(err, "ledger sql: the statement is empty; e.g. \"SELECT name, status FROM runs\"");
    else if (next)
        ledger_fail(err, "ledger sql: refused: give exactly one statement (found more after the first ';')");
    else if (!sqlite3_stmt_readonly(stmt) || sqlite3_column_count(stmt) == 0)
        ledger_fail(err, "ledger sql: refused: the statement does not only read rows (SELECT, WITH, EXPLAIN, "
                         "read-only PRAGMA)");
    else
        result = append_rows(l, stmt, out, err);
    sqlite3_finalize(stmt);
    sqlite3_finalize(next);
    sqlite3_set_authorizer(l->db, NULL, NULL);
    if (result) {
        hyla_table_free(*out);
        *out = NULL;
    }
    return result;
}
