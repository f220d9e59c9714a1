/* The `hyla ledger runs` filter language, compiled to a parameterised SQL condition.
 *
 *   filter := or ;  or := and ("or" and)* ;  and := not ("and" not)* ;
 *   not := "not" not | "(" or ")" | KEY OP VALUE ;  OP := = | == | != | < | <= | > | >=
 *
 * KEY is a run field (batch, status, name: text; id, attempt, world_size, last_step:
 * numbers) or a config parameter, matched by its full dotted key or any suffix after a
 * dot (attn.buffer_size matches model.attn.buffer_size). VALUE is a bare word or a quoted
 * string; a bare word that is a number compares numerically (value_num), anything else
 * as text (value_text). A run lacking the parameter does not match the comparison.
 * Example: attn.buffer_size>=256 and (status=finished or status=running)
 *
 * User values never enter the SQL text: they are bound to ?1..?n. */
#ifndef HYLA_LEDGER_FILTER_H
#define HYLA_LEDGER_FILTER_H

#include <stddef.h>

#include "experiments/ledger.h"

struct hyla_ledger_filter;

/* One value to bind: ?index (1-based) is text or a number. */
struct hyla_filter_bind {
    int is_number;
    double number;
    const char *text;
};

/* A parameter key the filter names, and where (0-based offset into the text). */
struct hyla_filter_key {
    const char *key;
    size_t pos;
};

/* 0 with *out set, or -1 with a message naming the column, what was expected and what
 * was found, followed by the text and a caret under the column. An empty (or all-blank)
 * text is the filter that matches every run. */
int hyla_ledger_filter_parse(const char *text, struct hyla_ledger_filter **out, struct hyla_ledger_error *err);
void hyla_ledger_filter_free(struct hyla_ledger_filter *f);

/* A boolean SQL expression over `runs r JOIN batches b ON b.id = r.batch_id`. */
const char *hyla_ledger_filter_sql(const struct hyla_ledger_filter *f);
size_t hyla_ledger_filter_binds(const struct hyla_ledger_filter *f, const struct hyla_filter_bind **binds);
size_t hyla_ledger_filter_keys(const struct hyla_ledger_filter *f, const struct hyla_filter_key **keys);
const char *hyla_ledger_filter_text(const struct hyla_ledger_filter *f);

#endif
