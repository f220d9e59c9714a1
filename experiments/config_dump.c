#include "experiments/config_dump.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/hyla_error.h"
#include "experiments/config_schema.h"

enum { KEY_MAX = 256, VALUE_TEXT = 4 * HYLA_PATH_MAX + 16 };

/* ---- a growing string ----------------------------------------------------------------- */

struct text {
    char *data;
    size_t length, capacity;
};

static void text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_printf(struct text *t, const char *fmt, ...) {
    if (!t->data) {
        t->capacity = 4096;
        t->data = hyla_malloc(t->capacity);
        t->data[0] = '\0';
    }
    for (;;) {
        size_t room = t->capacity - t->length;
        va_list args;
        va_start(args, fmt);
        int n = vsnprintf(t->data + t->length, room, fmt, args);
        va_end(args);
        if (n < 0) hyla_die("internal error: bad format while writing the config");
        if ((size_t)n < room) {
            t->length += (size_t)n;
            return;
        }
        size_t need = t->length + (size_t)n + 1;
        t->capacity = 2 * t->capacity > need ? 2 * t->capacity : need;
        char *grown = realloc(t->data, t->capacity);
        if (!grown) hyla_die("out of memory writing the config (%zu bytes)", t->capacity);
        t->data = grown;
    }
}

/* ---- values as text ------------------------------------------------------------------- */

static int int_at(const void *field) {
    int v;
    memcpy(&v, field, sizeof v);
    return v;
}

static double double_at(const void *field, int index) {
    double v;
    memcpy(&v, (const char *)field + (size_t)index * sizeof v, sizeof v);
    return v;
}

/* YAML double-quoted: always quoted, so "null", "123" or "yes" stay strings. */
static void quote_string(const char *s, char *buf, size_t size) {
    size_t n = 0;
    buf[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p && n + 6 < size; p++) {
        if (*p == '"' || *p == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            n += (size_t)snprintf(buf + n, size - n, "\\x%02x", *p);
        } else {
            buf[n++] = (char)*p;
        }
    }
    buf[n++] = '"';
    buf[n] = '\0';
}

/* The key's value as YAML text (quote: strings quoted) and as a number (NaN if none). */
static double value_text(const struct hyla_run_config *cfg, const struct hyla_config_key *key, int quote, char *buf,
                         size_t size) {
    const void *field = hyla_config_field_const(cfg, key);
    char number[64];
    switch (key->type) {
    case HYLA_CFG_INT: {
        int v = int_at(field);
        if (key->flags & HYLA_CFG_NULLABLE && v == key->null_value) {
            snprintf(buf, size, "null");
            return NAN;
        }
        snprintf(buf, size, "%d", v);
        return v;
    }
    case HYLA_CFG_UINT64: {
        uint64_t v;
        memcpy(&v, field, sizeof v);
        snprintf(buf, size, "%" PRIu64, v);
        return (double)v;
    }
    case HYLA_CFG_DOUBLE:
        config_format_double(double_at(field, 0), buf, size);
        return double_at(field, 0);
    case HYLA_CFG_BOOL:
        snprintf(buf, size, "%s", int_at(field) ? "true" : "false");
        return int_at(field) ? 1 : 0;
    case HYLA_CFG_STRING:
        if (quote) quote_string(field, buf, size);
        else snprintf(buf, size, "%s", (const char *)field);
        return NAN;
    case HYLA_CFG_ENUM:
        snprintf(buf, size, "%s", key->choices[int_at(field)]);
        return NAN;
    case HYLA_CFG_INT_LIST: {
        int count = int_at((const char *)cfg + key->count_offset);
        const int *items = field;
        snprintf(buf, size, "[");
        for (int i = 0; i < count; i++) {
            size_t used = strlen(buf);
            snprintf(buf + used, size - used, "%s%d", i ? ", " : "", items[i]);
        }
        size_t used = strlen(buf);
        snprintf(buf + used, size - used, "]");
        return NAN;
    }
    case HYLA_CFG_DOUBLE_PAIR: {
        char second[64];
        config_format_double(double_at(field, 0), number, sizeof number);
        config_format_double(double_at(field, 1), second, sizeof second);
        snprintf(buf, size, "[%s, %s]", number, second);
        return NAN;
    }
    case HYLA_CFG_SECTION:
    case HYLA_CFG_INCLUDE: break;
    }
    buf[0] = '\0';
    return NAN;
}

/* Keys with a stored value in this config, in schema order. */
static int is_dumped(const struct hyla_run_config *cfg, const struct hyla_config_key *key) {
    return key->offset != HYLA_CFG_NO_FIELD && key->type != HYLA_CFG_SECTION && key->type != HYLA_CFG_INCLUDE &&
           !hyla_config_key_absent(cfg, key);
}

/* Components of the key's section ("model.attn" -> 2), written into parts. */
static int section_parts(const char *path, char parts[][64], int max_parts) {
    int count = 0;
    const char *p = path;
    for (const char *dot = strchr(p, '.'); dot && count < max_parts; dot = strchr(p, '.')) {
        size_t n = (size_t)(dot - p) < 63 ? (size_t)(dot - p) : 63;
        memcpy(parts[count], p, n);
        parts[count][n] = '\0';
        count++;
        p = dot + 1;
    }
    return count;
}

char *hyla_config_dump_yaml(const struct hyla_run_config *cfg) {
    struct text out = {0};
    text_printf(&out, "%s", "");
    char open[8][64];
    int n_open = 0;
    char *value = hyla_malloc(VALUE_TEXT);
    size_t count;
    const struct hyla_config_key *schema = hyla_config_schema(&count);
    for (size_t i = 0; i < count; i++) {
        const struct hyla_config_key *key = &schema[i];
        if (!is_dumped(cfg, key)) continue;
        char parts[8][64];
        int n_parts = section_parts(key->path, parts, 8);
        int common = 0;
        while (common < n_parts && common < n_open && !strcmp(parts[common], open[common])) common++;
        for (int level = common; level < n_parts; level++) {
            text_printf(&out, "%*s%s:\n", 2 * level, "", parts[level]);
            memcpy(open[level], parts[level], sizeof open[level]);
        }
        n_open = n_parts;
        value_text(cfg, key, 1, value, VALUE_TEXT);
        const char *leaf = strrchr(key->path, '.');
        text_printf(&out, "%*s%s: %s\n", 2 * n_parts, "", leaf ? leaf + 1 : key->path, value);
    }
    free(value);
    return out.data;
}

static int write_fail(struct hyla_config_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int write_fail(struct hyla_config_error *err, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, args);
    va_end(args);
    return -1;
}

int hyla_config_write_yaml(const struct hyla_run_config *cfg, const char *path, struct hyla_config_error *err) {
    char tmp[HYLA_PATH_MAX + 16];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return write_fail(err, "cannot write config '%s': the path is too long", path);
    FILE *file = fopen(tmp, "wb");
    if (!file) return write_fail(err, "cannot write config '%s': %s", tmp, strerror(errno));
    char hex[17];
    hyla_config_hash_hex(cfg, hex);
    char *yaml = hyla_config_dump_yaml(cfg);
    int written = fprintf(file, "# hyla resolved config, hash %s\n%s", hex, yaml) >= 0;
    int saved_errno = errno;
    free(yaml);
    if (fclose(file) != 0 && written) {
        written = 0;
        saved_errno = errno;
    }
    if (!written) {
        remove(tmp);
        return write_fail(err, "cannot write config '%s': %s", tmp, strerror(saved_errno));
    }
    if (rename(tmp, path) != 0) {
        saved_errno = errno;
        remove(tmp);
        return write_fail(err, "cannot rename '%s' to '%s': %s", tmp, path, strerror(saved_errno));
    }
    return 0;
}

/* ---- ledger rows and the hash --------------------------------------------------------- */

struct hyla_config_param *hyla_config_params(const struct hyla_run_config *cfg, size_t *count) {
    size_t n_keys;
    const struct hyla_config_key *schema = hyla_config_schema(&n_keys);
    struct hyla_config_param *rows = hyla_calloc(n_keys, sizeof *rows);
    size_t n = 0;
    for (size_t i = 0; i < n_keys; i++) {
        if (!is_dumped(cfg, &schema[i])) continue;
        snprintf(rows[n].key, sizeof rows[n].key, "%s", schema[i].path);
        rows[n].value = value_text(cfg, &schema[i], 0, rows[n].text, sizeof rows[n].text);
        n++;
    }
    *count = n;
    return rows;
}

uint64_t hyla_config_hash64(const struct hyla_run_config *cfg) {
    char *yaml = hyla_config_dump_yaml(cfg);
    uint64_t hash = XXH64(yaml, strlen(yaml), 0);
    free(yaml);
    return hash;
}

void hyla_config_hash_hex(const struct hyla_run_config *cfg, char hex[17]) {
    snprintf(hex, 17, "%016" PRIx64, hyla_config_hash64(cfg));
}

/* ---- documentation -------------------------------------------------------------------- */

static void type_text(const struct hyla_config_key *key, char *buf, size_t size) {
    char range[100] = "";
    int numeric = key->type == HYLA_CFG_INT || key->type == HYLA_CFG_DOUBLE || key->type == HYLA_CFG_INT_LIST ||
                  key->type == HYLA_CFG_DOUBLE_PAIR;
    if (numeric) {
        range[0] = ' ';
        hyla_config_range_text(key, range + 1, sizeof range - 1);
        if (!range[1]) range[0] = '\0';
    }
    switch (key->type) {
    case HYLA_CFG_SECTION: snprintf(buf, size, "section"); return;
    case HYLA_CFG_INCLUDE: snprintf(buf, size, "JSON file"); return;
    case HYLA_CFG_INT:
        snprintf(buf, size, "int%s%s", range, key->flags & HYLA_CFG_NULLABLE ? " or null" : "");
        return;
    case HYLA_CFG_UINT64: snprintf(buf, size, "uint64"); return;
    case HYLA_CFG_DOUBLE: snprintf(buf, size, "float%s", range); return;
    case HYLA_CFG_BOOL:
        if (key->flags & HYLA_CFG_FIXED) snprintf(buf, size, "bool (only %s)", key->default_text);
        else snprintf(buf, size, "bool");
        return;
    case HYLA_CFG_STRING: snprintf(buf, size, "string (< %zu bytes)", key->capacity); return;
    case HYLA_CFG_ENUM:
        snprintf(buf, size, "%s", key->flags & HYLA_CFG_FIXED ? "only " : "");
        for (int i = 0; key->choices[i]; i++) {
            size_t used = strlen(buf);
            snprintf(buf + used, size - used, "%s`%s`", i ? ", " : "", key->choices[i]);
        }
        return;
    case HYLA_CFG_INT_LIST: snprintf(buf, size, "list of int%s (at most %zu)", range, key->capacity); return;
    case HYLA_CFG_DOUBLE_PAIR: snprintf(buf, size, "[float, float]%s", range); return;
    }
}

char *hyla_config_describe_markdown(void) {
    struct text out = {0};
    text_printf(&out, "%s", "");
    char section[KEY_MAX] = "-", type[512];
    size_t count;
    const struct hyla_config_key *schema = hyla_config_schema(&count);
    for (size_t i = 0; i < count; i++) {
        const struct hyla_config_key *key = &schema[i];
        const char *dot = strrchr(key->path, '.');
        char this_section[KEY_MAX];
        snprintf(this_section, sizeof this_section, "%.*s", dot ? (int)(dot - key->path) : 0, key->path);
        if (key->type == HYLA_CFG_SECTION) snprintf(this_section, sizeof this_section, "%s", key->path);
        if (strcmp(this_section, section)) {
            snprintf(section, sizeof section, "%s", this_section);
            text_printf(&out, "\n### %s\n\n| key | type | default | meaning |\n|---|---|---|---|\n",
                        section[0] ? section : "top level");
        }
        type_text(key, type, sizeof type);
        text_printf(&out, "| `%s` | %s | %s%s%s | %s%s |\n", dot ? dot + 1 : key->path, type,
                    key->default_text ? "`" : "", key->default_text ? key->default_text : "",
                    key->default_text ? "`" : "", key->doc,
                    key->offset == HYLA_CFG_NO_FIELD && key->type != HYLA_CFG_INCLUDE ? " (accepted, not stored)" : "");
    }
    return out.data;
}
