/* Query results as small in-memory tables (named columns; cells NULL, integer, real or
 * text) and their three printed forms: an aligned table for people, CSV and JSON (an
 * array of objects) for scripts. Allocation failures make the table "failed" instead of
 * exiting: builders check hyla_table_ok() once at the end. */
#ifndef HYLA_LEDGER_TABLE_H
#define HYLA_LEDGER_TABLE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum hyla_cell_type { HYLA_CELL_NULL, HYLA_CELL_INT, HYLA_CELL_REAL, HYLA_CELL_TEXT };

struct hyla_cell {
    enum hyla_cell_type type;
    union {
        int64_t i;
        double r;
        size_t text; /* offset into the table's string pool */
    } v;
};

struct hyla_table {
    int n_cols;
    char **cols;
    size_t n_rows, cap_rows;
    struct hyla_cell *cells; /* n_rows x n_cols, row-major */
    char *pool;              /* text cells, NUL-terminated, one after another */
    size_t pool_len, pool_cap;
    int failed; /* an allocation failed: rows may be missing */
};

enum hyla_format { HYLA_FORMAT_TABLE, HYLA_FORMAT_CSV, HYLA_FORMAT_JSON };
/* "table", "csv", "json"; -1 for anything else. */
int hyla_format_parse(const char *text, enum hyla_format *format);

/* NULL when out of memory. */
struct hyla_table *hyla_table_new(int n_cols, const char *const *names);
void hyla_table_free(struct hyla_table *t);
int hyla_table_ok(const struct hyla_table *t);

/* A new row of NULL cells; returns its index (0 when the table has failed: sets are then no-ops). */
size_t hyla_table_add_row(struct hyla_table *t);
void hyla_table_set_int(struct hyla_table *t, size_t row, int col, int64_t value);
void hyla_table_set_real(struct hyla_table *t, size_t row, int col, double value); /* NaN -> NULL */
void hyla_table_set_text(struct hyla_table *t, size_t row, int col, const char *text); /* NULL -> NULL */

const struct hyla_cell *hyla_table_cell(const struct hyla_table *t, size_t row, int col);
/* The text of a text cell; NULL for other cells. */
const char *hyla_table_text(const struct hyla_table *t, size_t row, int col);
/* The number of an integer or real cell; NaN otherwise. */
double hyla_table_number(const struct hyla_table *t, size_t row, int col);
/* Column index by name, -1 if absent. */
int hyla_table_col(const struct hyla_table *t, const char *name);

/* A cell as text: integers in full, reals with %.6g (table) or the shortest text that reads
 * back exactly (csv, json), NULL as "" (csv) or "-" (table). */
void hyla_cell_format(const struct hyla_table *t, size_t row, int col, int exact, char *buf, size_t size);

/* Print in the given format; -1 on a write error (errno set by stdio). */
int hyla_table_print(FILE *out, const struct hyla_table *t, enum hyla_format format);
/* One cell as a JSON value (null for NULL and non-finite reals); NULL when out of memory. */
json_t *hyla_table_cell_json(const struct hyla_table *t, size_t row, int col);
/* The table as a JSON array of objects (NULL when out of memory). */
json_t *hyla_table_to_json(const struct hyla_table *t);

#endif
