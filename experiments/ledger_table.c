/* Result tables and their printed forms (see ledger_table.h). */
#include "experiments/ledger_table.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Wider cells are cut in table output so that a stray long value keeps the table readable;
 * csv and json always carry the full value. */
#define TABLE_MAX_WIDTH 60

int hyla_format_parse(const char *text, enum hyla_format *format) {
    if (!text) return -1;
    if (!strcmp(text, "table")) *format = HYLA_FORMAT_TABLE;
    else if (!strcmp(text, "csv")) *format = HYLA_FORMAT_CSV;
    else if (!strcmp(text, "json")) *format = HYLA_FORMAT_JSON;
    else return -1;
    return 0;
}

/* ---- building --------------------------------------------------------------------------- */

static char *copy_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c) memcpy(c, s, n);
    return c;
}

struct hyla_table *hyla_table_new(int n_cols, const char *const *names) {
    struct hyla_table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n_cols = n_cols;
    t->cols = calloc((size_t)(n_cols > 0 ? n_cols : 1), sizeof *t->cols);
    t->cap_rows = 16;
    t->cells = calloc(t->cap_rows * (size_t)(n_cols > 0 ? n_cols : 1), sizeof *t->cells);
    if (!t->cols || !t->cells) {
        hyla_table_free(t);
        return NULL;
    }
    for (int c = 0; c < n_cols; c++)
        if (!(t->cols[c] = copy_string(names[c] ? names[c] : ""))) {
            hyla_table_free(t);
            return NULL;
        }
    return t;
}

void hyla_table_free(struct hyla_table *t) {
    if (!t) return;
    if (t->cols)
        for (int c = 0; c < t->n_cols; c++) free(t->cols[c]);
    free(t->cols);
    free(t->cells);
    free(t->pool);
    free(t);
}

int hyla_table_ok(const struct hyla_table *t) { return t && !t->failed; }

size_t hyla_table_add_row(struct hyla_table *t) {
    if (t->failed) return 0;
    if (t->n_rows == t->cap_rows) {
        size_t cap = 2 * t->cap_rows;
        struct hyla_cell *cells = realloc(t->cells, cap * (size_t)t->n_cols * sizeof *cells);
        if (!cells) {
            t->failed = 1;
            return 0;
        }
        t->cells = cells;
        t->cap_rows = cap;
    }
    memset(&t->cells[t->n_rows * (size_t)t->n_cols], 0, (size_t)t->n_cols * sizeof *t->cells);
    return t->n_rows++;
}

static struct hyla_cell *cell_at(struct hyla_table *t, size_t row, int col) {
    if (t->failed || row >= t->n_rows || col < 0 || col >= t->n_cols) return NULL;
    return &t->cells[row * (size_t)t->n_cols + (size_t)col];
}

void hyla_table_set_int(struct hyla_table *t, size_t row, int col, int64_t value) {
    struct hyla_cell *c = cell_at(t, row, col);
    if (c) c->type = HYLA_CELL_INT, c->v.i = value;
}

void hyla_table_set_real(struct hyla_table *t, size_t row, int col, double value) {
    struct hyla_cell *c = cell_at(t, row, col);
    if (!c) return;
    if (isnan(value)) c->type = HYLA_CELL_NULL;
    else c->type = HYLA_CELL_REAL, c->v.r = value;
}

void hyla_table_set_text(struct hyla_table *t, size_t row, int col, const char *text) {
    struct hyla_cell *c = cell_at(t, row, col);
    if (!c) return;
    if (!text) {
        c->type = HYLA_CELL_NULL;
        return;
    }
    size_t n = strlen(text) + 1;
    if (t->pool_len + n > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 4096;
        while (cap < t->pool_len + n) cap *= 2;
        char *pool = realloc(t->pool, cap);
        if (!pool) {
            t->failed = 1;
            return;
        }
        t->pool = pool;
        t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_len, text, n);
    c->type = HYLA_CELL_TEXT;
    c->v.text = t->pool_len;
    t->pool_len += n;
}

/* ---- reading ------------------------------------------------------------------------------ */

const struct hyla_cell *hyla_table_cell(const struct hyla_table *t, size_t row, int col) {
    static const struct hyla_cell null_cell = {HYLA_CELL_NULL, {0}};
    if (row >= t->n_rows || col < 0 || col >= t->n_cols) return &null_cell;
    return &t->cells[row * (size_t)t->n_cols + (size_t)col];
}

const char *hyla_table_text(const struct hyla_table *t, size_t row, int col) {
    const struct hyla_cell *c = hyla_table_cell(t, row, col);
    return c->type == HYLA_CELL_TEXT ? t->pool + c->v.text : NULL;
}

double hyla_table_number(const struct hyla_table *t, size_t row, int col) {
    const struct hyla_cell *c = hyla_table_cell(t, row, col);
    if (c->type == HYLA_CELL_INT) return (double)c->v.i;
    if (c->type == HYLA_CELL_REAL) return c->v.r;
    return NAN;
}

int hyla_table_col(const struct hyla_table *t, const char *name) {
    for (int c = 0; c < t->n_cols; c++)
        if (!strcmp(t->cols[c], name)) return c;
    return -1;
}

/* The shortest %.{15,16,17}g that reads back as the same double. */
static void format_exact(double x, char *buf, size_t size) {
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, size, "%.*g", digits, x);
        if (strtod(buf, NULL) == x) return;
    }
}

void hyla_cell_format(const struct hyla_table *t, size_t row, int col, int exact, char *buf, size_t size) {
    const struct hyla_cell *c = hyla_table_cell(t, row, col);
    switch (c->type) {
    case HYLA_CELL_NULL: snprintf(buf, size, "%s", exact ? "" : "-"); break;
    case HYLA_CELL_INT: snprintf(buf, size, "%lld", (long long)c->v.i); break;
    case HYLA_CELL_REAL:
        if (exact) format_exact(c->v.r, buf, size);
        else if (fabs(c->v.r) >= 1e6 && fabs(c->v.r) < 1e15) snprintf(buf, size, "%.1f", c->v.r); /* unix times */
        else snprintf(buf, size, "%.6g", c->v.r);
        break;
    case HYLA_CELL_TEXT: snprintf(buf, size, "%s", t->pool + c->v.text); break;
    }
}

/* ---- printing ------------------------------------------------------------------------------ */

/* A cell for the aligned table: one line, at most TABLE_MAX_WIDTH bytes. */
static size_t table_cell_text(const struct hyla_table *t, size_t row, int col, char *buf, size_t size) {
    hyla_cell_format(t, row, col, 0, buf, size);
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
    size_t n = strlen(buf);
    if (n > TABLE_MAX_WIDTH) {
        memcpy(buf + TABLE_MAX_WIDTH - 3, "...", 4);
        n = TABLE_MAX_WIDTH;
    }
    return n;
}

/* Numbers line up on their last digit, unless the column mixes them with text. */
static int numeric_column(const struct hyla_table *t, int col) {
    int numbers = 0;
    for (size_t r = 0; r < t->n_rows; r++) {
        enum hyla_cell_type type = hyla_table_cell(t, r, col)->type;
        if (type == HYLA_CELL_TEXT) return 0;
        numbers |= type != HYLA_CELL_NULL;
    }
    return numbers;
}

static int print_aligned(FILE *out, const struct hyla_table *t) {
    size_t *width = calloc((size_t)(t->n_cols > 0 ? t->n_cols : 1), sizeof *width);
    int *right = calloc((size_t)(t->n_cols > 0 ? t->n_cols : 1), sizeof *right);
    if (!width || !right) {
        free(width), free(right);
        return -1;
    }
    for (int c = 0; c < t->n_cols; c++) right[c] = numeric_column(t, c);
    char buf[4096];
    for (int c = 0; c < t->n_cols; c++) {
        width[c] = strlen(t->cols[c]);
        for (size_t r = 0; r < t->n_rows; r++) {
            size_t n = table_cell_text(t, r, c, buf, sizeof buf);
            if (n > width[c]) width[c] = n;
        }
    }
    for (int c = 0; c < t->n_cols; c++)
        fprintf(out, "%s%*s", c ? "  " : "",
                c + 1 < t->n_cols || right[c] ? (right[c] ? (int)width[c] : -(int)width[c]) : 0, t->cols[c]);
    fputc('\n', out);
    for (int c = 0; c < t->n_cols; c++) {
        fprintf(out, "%s", c ? "  " : "");
        for (size_t i = 0; i < width[c]; i++) fputc('-', out);
    }
    fputc('\n', out);
    for (size_t r = 0; r < t->n_rows; r++) {
        for (int c = 0; c < t->n_cols; c++) {
            table_cell_text(t, r, c, buf, sizeof buf);
            int pad = c + 1 < t->n_cols || right[c]; /* no trailing blanks */
            fprintf(out, "%s%*s", c ? "  " : "", pad ? (right[c] ? (int)width[c] : -(int)width[c]) : 0, buf);
        }
        fputc('\n', out);
    }
    free(width), free(right);
    return 0;
}

/* RFC 4180: quote fields with commas, quotes or line breaks; double the quotes. */
static void csv_field(FILE *out, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (const char *p = s; *p; p++) {
        if (*p == '"') fputc('"', out);
        fputc(*p, out);
    }
    fputc('"', out);
}

static int print_csv(FILE *out, const struct hyla_table *t) {
    for (int c = 0; c < t->n_cols; c++) {
        if (c) fputc(',', out);
        csv_field(out, t->cols[c]);
    }
    fputc('\n', out);
    for (size_t r = 0; r < t->n_rows; r++) {
        for (int c = 0; c < t->n_cols; c++) {
            if (c) fputc(',', out);
            if (hyla_table_cell(t, r, c)->type == HYLA_CELL_TEXT) {
                csv_field(out, hyla_table_text(t, r, c));
            } else {
                char buf[64];
                hyla_cell_format(t, r, c, 1, buf, sizeof buf);
                fputs(buf, out);
            }
        }
        fputc('\n', out);
    }
    return 0;
}

/* jansson refuses invalid UTF-8: keep the text, with bad bytes as '?'. */
static json_t *json_text(const char *s) {
    json_t *j = json_string(s);
    if (j) return j;
    char *copy = copy_string(s);
    if (!copy) return NULL;
    for (unsigned char *p = (unsigned char *)copy; *p; p++)
        if (*p >= 0x80) *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

json_t *hyla_table_cell_json(const struct hyla_table *t, size_t row, int col) {
    const struct hyla_cell *c = hyla_table_cell(t, row, col);
    switch (c->type) {
    case HYLA_CELL_INT: return json_integer(c->v.i);
    case HYLA_CELL_REAL: return isfinite(c->v.r) ? json_real(c->v.r) : json_null(); /* JSON has no inf */
    case HYLA_CELL_TEXT: return json_text(t->pool + c->v.text);
    case HYLA_CELL_NULL: break;
    }
    return json_null();
}

json_t *hyla_table_to_json(const struct hyla_table *t) {
    json_t *rows = json_array();
    if (!rows) return NULL;
    for (size_t r = 0; r < t->n_rows; r++) {
        json_t *obj = json_object();
        if (!obj || json_array_append_new(rows, obj) != 0) {
            json_decref(rows);
            return NULL;
        }
        for (int c = 0; c < t->n_cols; c++) {
            json_t *v = hyla_table_cell_json(t, r, c);
            if (!v || json_object_set_new(obj, t->cols[c], v) != 0) {
                json_decref(rows);
                return NULL;
            }
        }
    }
    return rows;
}

/* 16 digits: exact for the float32 values training reports, without 0.1 turning into
 * 0.10000000000000001; csv carries the shortest exact text. */
static int print_json(FILE *out, const struct hyla_table *t) {
    json_t *rows = hyla_table_to_json(t);
    if (!rows) return -1;
    int rc = json_dumpf(rows, out, JSON_INDENT(2) | JSON_REAL_PRECISION(16));
    json_decref(rows);
    fputc('\n', out);
    return rc;
}

int hyla_table_print(FILE *out, const struct hyla_table *t, enum hyla_format format) {
    int rc;
    switch (format) {
    case HYLA_FORMAT_CSV: rc = print_csv(out, t); break;
    case HYLA_FORMAT_JSON: rc = print_json(out, t); break;
    default: rc = print_aligned(out, t); break;
    }
    if (rc == 0 && (fflush(out) != 0 || ferror(out))) rc = -1;
    return rc;
}
