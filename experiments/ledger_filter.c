/* The runs filter: a tokenizer and a recursive-descent parser that writes SQL as it goes
 * (grammar in ledger_filter.h). Values and parameter keys become bound parameters. */
#include "experiments/ledger_filter.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum token_kind { TOK_END, TOK_WORD, TOK_STRING, TOK_OP, TOK_LPAREN, TOK_RPAREN };

struct token {
    enum token_kind kind;
    size_t pos, len;  /* in the filter text; for strings, including the quotes */
};

struct hyla_ledger_filter {
    char *text;
    char *sql;
    size_t sql_len, sql_cap;
    struct hyla_filter_bind *binds;
    size_t n_binds, cap_binds;
    struct hyla_filter_key *keys;
    size_t n_keys, cap_keys;
    char **strings; /* owned copies of bound text and keys */
    size_t n_strings, cap_strings;
    int oom;
};

struct parser {
    struct hyla_ledger_filter *f;
    const char *text;
    struct token tok; /* the current token */
    struct hyla_ledger_error *err;
    int failed;
};

/* A run column that a filter can name directly. */
struct run_field {
    const char *name;
    const char *column;
    int numeric;
};
static const struct run_field RUN_FIELDS[] = {
    {"batch", "b.name", 0},        {"status", "r.status", 0},   {"name", "r.name", 0},
    {"id", "r.id", 1},             {"attempt", "r.attempt", 1}, {"world_size", "r.world_size", 1},
    {"last_step", "r.last_step", 1},
};

/* ---- growing buffers (failures set oom, reported once at the end) ------------------------ */

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 16;
    while (cap2 < need) cap2 *= 2;
    void *q = realloc(*p, cap2 * elem);
    if (!q) return -1;
    *p = q;
    *cap = cap2;
    return 0;
}

static void sql_append(struct hyla_ledger_filter *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sql_append(struct hyla_ledger_filter *f, const char *fmt, ...) {
    if (f->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || grow((void **)&f->sql, &f->sql_cap, f->sql_len + (size_t)n + 1, 1)) {
        f->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(f->sql + f->sql_len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    f->sql_len += (size_t)n;
}

static char *keep_string(struct hyla_ledger_filter *f, const char *s, size_t len) {
    if (f->oom || grow((void **)&f->strings, &f->cap_strings, f->n_strings + 1, sizeof *f->strings)) {
        f->oom = 1;
        return NULL;
    }
    char *c = malloc(len + 1);
    if (!c) {
        f->oom = 1;
        return NULL;
    }
    memcpy(c, s, len);
    c[len] = '\0';
    f->strings[f->n_strings++] = c;
    return c;
}

/* Adds a bound value; returns its 1-based index (0 when out of memory). */
static size_t add_bind(struct hyla_ledger_filter *f, int is_number, double number, const char *text) {
    if (f->oom || grow((void **)&f->binds, &f->cap_binds, f->n_binds + 1, sizeof *f->binds)) {
        f->oom = 1;
        return 0;
    }
    f->binds[f->n_binds++] = (struct hyla_filter_bind){is_number, number, text};
    return f->n_binds;
}

/* ---- tokens --------------------------------------------------------------------------------- */

static int is_word_char(char c) {
    return c && !isspace((unsigned char)c) && !strchr("()=!<>'\"", c);
}

static void next_token(struct parser *p) {
    const char *s = p->text;
    size_t i = p->tok.pos + p->tok.len;
    while (isspace((unsigned char)s[i])) i++;
    struct token t = {TOK_END, i, 0};
    char c = s[i];
    if (c == '(' || c == ')') {
        t.kind = c == '(' ? TOK_LPAREN : TOK_RPAREN, t.len = 1;
    } else if (c && strchr("=!<>", c)) {
        t.kind = TOK_OP;
        t.len = s[i + 1] == '=' ? 2 : 1;
    } else if (c == '\'' || c == '"') {
        /* As in SQL, a doubled quote inside stands for one quote. */
        size_t k = i + 1;
        while (s[k] && !(s[k] == c && s[k + 1] != c)) k += s[k] == c ? 2 : 1;
        t.kind = TOK_STRING;
        t.len = s[k] ? k - i + 1 : k - i; /* unterminated: checked by the parser */
    } else if (c) {
        t.kind = TOK_WORD;
        while (is_word_char(s[i + t.len])) t.len++;
    }
    p->tok = t;
}

static int token_is(const struct parser *p, const char *word) {
    return p->tok.kind == TOK_WORD && p->tok.len == strlen(word) &&
           strncasecmp(p->text + p->tok.pos, word, p->tok.len) == 0;
}

static int is_keyword(const struct parser *p) { return token_is(p, "and") || token_is(p, "or") || token_is(p, "not"); }

/* "'attn.x'", "the end of the filter" ... for messages. */
static void describe_token(const struct parser *p, char *buf, size_t size) {
    if (p->tok.kind == TOK_END) snprintf(buf, size, "the end of the filter");
    else snprintf(buf, size, "'%.*s'", (int)(p->tok.len > 40 ? 40 : p->tok.len), p->text + p->tok.pos);
}

/* The message: column, expectation, what was found, then the text with a caret. */
static void syntax_error(struct parser *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void syntax_error(struct parser *p, size_t pos, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = 1;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    size_t text_len = strlen(p->text);
    int shown = text_len > 200 ? 200 : (int)text_len;
    int caret = pos > 200 ? 200 : (int)pos;
    snprintf(p->err->message, sizeof p->err->message, "bad filter at column %zu: %s\n  %.*s\n  %*s^", pos + 1, what,
             shown, p->text, caret, "");
}

/* ---- grammar -------------------------------------------------------------------------------- */

static void parse_or(struct parser *p);

static const char *read_op(struct parser *p) {
    static const char *const OPS[] = {"=", "==", "!=", "<", "<=", ">", ">="};
    static const char *const SQL_OPS[] = {"=", "=", "!=", "<", "<=", ">", ">="};
    if (p->tok.kind == TOK_OP)
        for (size_t i = 0; i < sizeof OPS / sizeof *OPS; i++)
            if (p->tok.len == strlen(OPS[i]) && !strncmp(p->text + p->tok.pos, OPS[i], p->tok.len))
                return SQL_OPS[i];
    return NULL;
}

/* A bare word that reads fully as a finite number. */
static int word_number(const char *s, double *x) {
    char *end;
    *x = strtod(s, &end);
    return end != s && *end == '\0' && isfinite(*x);
}

static const struct run_field *find_run_field(const char *key) {
    for (size_t i = 0; i < sizeof RUN_FIELDS / sizeof *RUN_FIELDS; i++)
        if (!strcmp(RUN_FIELDS[i].name, key)) return &RUN_FIELDS[i];
    return NULL;
}

static void emit_run_field(struct parser *p, const struct run_field *field, const char *op, const char *value,
                           int is_number, double number, size_t value_pos) {
    if (field->numeric && !is_number) {
        syntax_error(p, value_pos, "expected a number to compare %s with, found '%s'", field->name, value);
        return;
    }
    enum hyla_run_status status;
    if (!strcmp(field->name, "status") && hyla_run_status_parse(value, &status) != 0) {
        syntax_error(p, value_pos, "expected a status (queued, running, finished or failed), found '%s'", value);
        return;
    }
    size_t v = field->numeric ? add_bind(p->f, 1, number, NULL) : add_bind(p->f, 0, 0, value);
    sql_append(p->f, "%s %s ?%zu", field->column, op, v);
}

/* The run has the parameter (full key or dotted suffix) and its value compares true. */
static void emit_param(struct parser *p, const char *key, size_t key_pos, const char *op, const char *value,
                       int is_number, double number) {
    struct hyla_ledger_filter *f = p->f;
    if (f->oom || grow((void **)&f->keys, &f->cap_keys, f->n_keys + 1, sizeof *f->keys)) {
        f->oom = 1;
        return;
    }
    f->keys[f->n_keys++] = (struct hyla_filter_key){key, key_pos};
    size_t k = add_bind(f, 0, 0, key);
    size_t v = is_number ? add_bind(f, 1, number, NULL) : add_bind(f, 0, 0, value);
    sql_append(f,
               "EXISTS (SELECT 1 FROM params p WHERE p.run_id = r.id AND (p.key = ?%zu OR "
               "(length(p.key) > length(?%zu) AND substr(p.key, -length(?%zu) - 1) = '.' || ?%zu)) "
               "AND p.%s %s ?%zu)",
               k, k, k, k, is_number ? "value_num" : "value_text", op, v);
}

/* The text between the quotes of a string token, doubled quotes made single. */
static const char *unquote(struct hyla_ledger_filter *f, const char *s, size_t len) {
    char *v = keep_string(f, s + 1, len - 2);
    if (!v) return NULL;
    char *out = v;
    for (const char *in = v; *in; in++) {
        *out++ = *in;
        if (*in == s[0] && in[1] == s[0]) in++;
    }
    *out = '\0';
    return v;
}

static void parse_comparison(struct parser *p) {
    char found[64];
    if (p->tok.kind != TOK_WORD || is_keyword(p)) {
        describe_token(p, found, sizeof found);
        syntax_error(p, p->tok.pos, "expected a comparison (KEY OP VALUE, e.g. status=finished) or '(', found %s",
                     found);
        return;
    }
    size_t key_pos = p->tok.pos;
    const char *key = keep_string(p->f, p->text + p->tok.pos, p->tok.len);
    next_token(p);
    const char *op = read_op(p);
    if (!op) {
        describe_token(p, found, sizeof found);
        syntax_error(p, p->tok.pos, "expected an operator (= != < <= > >=) after '%s', found %s", key ? key : "",
                     found);
        return;
    }
    size_t op_pos = p->tok.pos, op_len = p->tok.len;
    next_token(p);
    size_t value_pos = p->tok.pos;
    const char *value;
    int is_number = 0;
    double number = 0;
    if (p->tok.kind == TOK_STRING) {
        const char *s = p->text + p->tok.pos;
        if (p->tok.len < 2 || s[p->tok.len - 1] != s[0]) {
            syntax_error(p, p->tok.pos, "expected a closing %c for the quoted value", s[0]);
            return;
        }
        value = unquote(p->f, s, p->tok.len);
    } else if (p->tok.kind == TOK_WORD && !is_keyword(p)) {
        value = keep_string(p->f, p->text + p->tok.pos, p->tok.len);
        is_number = value && word_number(value, &number);
    } else {
        describe_token(p, found, sizeof found);
        syntax_error(p, p->tok.pos, "expected a value after '%.*s', found %s", (int)op_len, p->text + op_pos, found);
        return;
    }
    next_token(p);
    if (!key || !value) return; /* out of memory, reported by the caller */
    const struct run_field *field = find_run_field(key);
    if (field) emit_run_field(p, field, op, value, is_number, number, value_pos);
    else emit_param(p, key, key_pos, op, value, is_number, number);
}

static void parse_not(struct parser *p) {
    if (p->failed) return;
    if (token_is(p, "not")) {
        next_token(p);
        sql_append(p->f, "NOT (");
        parse_not(p);
        sql_append(p->f, ")");
    } else if (p->tok.kind == TOK_LPAREN) {
        size_t open = p->tok.pos;
        next_token(p);
        sql_append(p->f, "(");
        parse_or(p);
        if (p->failed) return;
        if (p->tok.kind != TOK_RPAREN) {
            char found[64];
            describe_token(p, found, sizeof found);
            syntax_error(p, p->tok.pos, "expected ')' to close the '(' at column %zu, found %s", open + 1, found);
            return;
        }
        next_token(p);
        sql_append(p->f, ")");
    } else {
        parse_comparison(p);
    }
}

static void parse_and(struct parser *p) {
    parse_not(p);
    while (!p->failed && token_is(p, "and")) {
        next_token(p);
        sql_append(p->f, " AND ");
        parse_not(p);
    }
}

static void parse_or(struct parser *p) {
    parse_and(p);
    while (!p->failed && token_is(p, "or")) {
        next_token(p);
        sql_append(p->f, " OR ");
        parse_and(p);
    }
}

/* ---- the public side --------------------------------------------------------------------------- */

int hyla_ledger_filter_parse(const char *text, struct hyla_ledger_filter **out, struct hyla_ledger_error *err) {
    *out = NULL;
    struct hyla_ledger_filter *f = calloc(1, sizeof *f);
    if (!f || !(f->text = malloc(strlen(text) + 1))) {
        free(f);
        snprintf(err->message, sizeof err->message, "filter: out of memory");
        return -1;
    }
    memcpy(f->text, text, strlen(text) + 1);
    struct parser p = {.f = f, .text = f->text, .err = err};
    next_token(&p);
    if (p.tok.kind == TOK_END) {
        sql_append(f, "1");
    } else {
        sql_append(f, "(");
        parse_or(&p);
        sql_append(f, ")");
        if (!p.failed && p.tok.kind != TOK_END) {
            char found[64];
            describe_token(&p, found, sizeof found);
            syntax_error(&p, p.tok.pos, "expected 'and', 'or' or the end of the filter, found %s", found);
        }
    }
    if (!p.failed && f->oom) snprintf(err->message, sizeof err->message, "filter: out of memory");
    if (p.failed || f->oom) {
        hyla_ledger_filter_free(f);
        return -1;
    }
    *out = f;
    return 0;
}

void hyla_ledger_filter_free(struct hyla_ledger_filter *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n_strings; i++) free(f->strings[i]);
    free(f->strings);
    free(f->binds);
    free(f->keys);
    free(f->sql);
    free(f->text);
    free(f);
}

const char *hyla_ledger_filter_sql(const struct hyla_ledger_filter *f) { return f->sql; }
const char *hyla_ledger_filter_text(const struct hyla_ledger_filter *f) { return f->text; }

size_t hyla_ledger_filter_binds(const struct hyla_ledger_filter *f, const struct hyla_filter_bind **binds) {
    *binds = f->binds;
    return f->n_binds;
}

size_t hyla_ledger_filter_keys(const struct hyla_ledger_filter *f, const struct hyla_filter_key **keys) {
    *keys = f->keys;
    return f->n_keys;
}
