#include "experiments/config_tree.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "common/hyla_error.h"

/* Bounds against hostile input: YAML aliases can expand a small file into a huge tree
 * ("billion laughs") or refer to their own ancestor. */
enum { MAX_DEPTH = 64, MAX_NODES = 200000, MAX_KEY = 256, POS_TEXT = 1200 };

int hyla_config_fail(struct hyla_config_error *err, const char *fmt, ...) {
    if (err) {
        va_list args;
        va_start(args, fmt);
        hyla_vmessage(err->message, sizeof err->message, fmt, args);
        va_end(args);
    }
    return -1;
}

static char *copy_string(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *out = hyla_malloc(n);
    memcpy(out, s, n);
    return out;
}

/* ---- positions --------------------------------------------------------------------- */

static struct config_pos pos_make(enum config_origin origin, const char *file, int line, int column,
                                  const char *where) {
    struct config_pos pos = {origin, copy_string(file), line, column, copy_string(where)};
    return pos;
}

static struct config_pos pos_copy(const struct config_pos *pos) {
    return pos_make(pos->origin, pos->file, pos->line, pos->column, pos->where);
}

static void pos_free(struct config_pos *pos) {
    free(pos->file);
    free(pos->where);
    pos->file = pos->where = NULL;
}

void config_pos_format(const struct config_pos *pos, char *buf, size_t size) {
    switch (pos->origin) {
    case CONFIG_FROM_YAML:
        if (pos->line > 0) snprintf(buf, size, "%s:%d:%d", pos->file, pos->line, pos->column);
        else snprintf(buf, size, "%s", pos->file);
        break;
    case CONFIG_FROM_JSON:
        if (pos->where && pos->where[0]) snprintf(buf, size, "%s (key %s)", pos->file, pos->where);
        else snprintf(buf, size, "%s", pos->file);
        break;
    case CONFIG_FROM_SET:
        snprintf(buf, size, "--set %s", pos->where ? pos->where : "");
        break;
    }
}

/* ---- nodes ------------------------------------------------------------------------- */

static struct config_node *node_new(enum config_node_kind kind, struct config_pos pos) {
    struct config_node *node = hyla_calloc(1, sizeof *node);
    node->kind = kind;
    node->pos = pos; /* takes ownership */
    return node;
}

static struct config_node *scalar_new(const char *text, int quoted, struct config_pos pos) {
    struct config_node *node = node_new(CONFIG_NODE_SCALAR, pos);
    node->text = copy_string(text);
    node->quoted = quoted;
    return node;
}

static void seq_append(struct config_node *seq, struct config_node *item) {
    if (seq->n_items == seq->capacity) {
        seq->capacity = seq->capacity ? 2 * seq->capacity : 8;
        struct config_node **grown = realloc(seq->items, seq->capacity * sizeof *grown);
        if (!grown) hyla_die("out of memory growing a config sequence");
        seq->items = grown;
    }
    seq->items[seq->n_items++] = item;
}

/* Appends an entry; takes ownership of key_pos and value (value may be NULL for a moment). */
static struct config_entry *map_append(struct config_node *map, const char *key, struct config_pos key_pos,
                                       struct config_node *value) {
    if (map->n_entries == map->capacity) {
        map->capacity = map->capacity ? 2 * map->capacity : 8;
        struct config_entry *grown = realloc(map->entries, map->capacity * sizeof *grown);
        if (!grown) hyla_die("out of memory growing a config mapping");
        map->entries = grown;
    }
    struct config_entry *entry = &map->entries[map->n_entries++];
    entry->key = copy_string(key);
    entry->key_pos = key_pos;
    entry->value = value;
    return entry;
}

static struct config_entry *map_find(const struct config_node *map, const char *key) {
    for (size_t i = 0; i < map->n_entries; i++)
        if (map->entries[i].key && !strcmp(map->entries[i].key, key)) return &map->entries[i];
    return NULL;
}

const struct config_node *config_map_get(const struct config_node *map, const char *key) {
    if (!map || map->kind != CONFIG_NODE_MAP) return NULL;
    const struct config_entry *entry = map_find(map, key);
    return entry ? entry->value : NULL;
}

void config_node_free(struct config_node *node) {
    if (!node) return;
    for (size_t i = 0; i < node->n_items; i++) config_node_free(node->items[i]);
    for (size_t i = 0; i < node->n_entries; i++) {
        free(node->entries[i].key);
        pos_free(&node->entries[i].key_pos);
        config_node_free(node->entries[i].value);
    }
    free(node->items);
    free(node->entries);
    free(node->text);
    pos_free(&node->pos);
    free(node);
}

static struct config_node *node_clone(const struct config_node *node) {
    struct config_node *copy = node_new(node->kind, pos_copy(&node->pos));
    copy->text = copy_string(node->text);
    copy->quoted = node->quoted;
    for (size_t i = 0; i < node->n_items; i++) seq_append(copy, node_clone(node->items[i]));
    for (size_t i = 0; i < node->n_entries; i++)
        map_append(copy, node->entries[i].key, pos_copy(&node->entries[i].key_pos),
                   node_clone(node->entries[i].value));
    return copy;
}

int config_node_is_null(const struct config_node *node) {
    if (node->kind != CONFIG_NODE_SCALAR || node->quoted) return 0;
    const char *t = node->text;
    return !t[0] || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") || !strcmp(t, "NULL");
}

/* ---- trees ------------------------------------------------------------------------- */

struct config_tree *config_tree_new(void) {
    struct config_tree *tree = hyla_calloc(1, sizeof *tree);
    tree->root = node_new(CONFIG_NODE_MAP, pos_make(CONFIG_FROM_SET, NULL, 0, 0, "(empty config)"));
    return tree;
}

static struct config_tree *tree_with_root(struct config_node *root) {
    struct config_tree *tree = hyla_calloc(1, sizeof *tree);
    tree->root = root;
    return tree;
}

struct config_tree *config_tree_clone(const struct config_tree *tree) {
    return tree_with_root(node_clone(tree->root));
}

void config_tree_free(struct config_tree *tree) {
    if (!tree) return;
    config_node_free(tree->root);
    free(tree);
}

/* ---- reading files ----------------------------------------------------------------- */

static FILE *open_config_file(const char *path, const char *what, struct hyla_config_error *err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        hyla_config_fail(err, "cannot read %s '%s': %s", what, path, strerror(errno));
        return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
        hyla_config_fail(err, "cannot read %s '%s': it is a directory, not a file", what, path);
        return NULL;
    }
    FILE *file = fopen(path, "rb");
    if (!file) hyla_config_fail(err, "cannot read %s '%s': %s", what, path, strerror(errno));
    return file;
}

/* ---- YAML -------------------------------------------------------------------------- */

/* source: the file path, or the override text for --set values. */
struct yaml_reader {
    yaml_document_t *doc;
    const char *file;  /* NULL for --set values */
    const char *where; /* --set: the override text */
    size_t nodes_left;
    struct hyla_config_error *err;
};

static struct config_pos yaml_pos(const struct yaml_reader *r, yaml_mark_t mark) {
    if (!r->file) return pos_make(CONFIG_FROM_SET, NULL, 0, 0, r->where);
    return pos_make(CONFIG_FROM_YAML, r->file, (int)mark.line + 1, (int)mark.column + 1, NULL);
}

static int yaml_parse_error(const yaml_parser_t *parser, const char *source, int is_file,
                            struct hyla_config_error *err) {
    if (!is_file) /* a one-line --set value: a character index says more than line:column */
        return hyla_config_fail(err, "%s: malformed value at character %zu: %s", source, parser->problem_mark.index + 1,
                    parser->problem ? parser->problem : "syntax error");
    switch (parser->error) {
    case YAML_MEMORY_ERROR:
        return hyla_config_fail(err, "%s: out of memory while parsing YAML", source);
    case YAML_READER_ERROR:
        return hyla_config_fail(err, "%s: malformed YAML at byte %zu: %s", source, parser->problem_offset,
                    parser->problem ? parser->problem : "unreadable input");
    case YAML_SCANNER_ERROR:
    case YAML_PARSER_ERROR:
    case YAML_COMPOSER_ERROR:
        if (parser->context)
            return hyla_config_fail(err, "%s:%zu:%zu: malformed YAML: %s (%s at line %zu, column %zu)", source,
                        parser->problem_mark.line + 1, parser->problem_mark.column + 1,
                        parser->problem ? parser->problem : "syntax error", parser->context,
                        parser->context_mark.line + 1, parser->context_mark.column + 1);
        return hyla_config_fail(err, "%s:%zu:%zu: malformed YAML: %s", source, parser->problem_mark.line + 1,
                    parser->problem_mark.column + 1, parser->problem ? parser->problem : "syntax error");
    default:
        return hyla_config_fail(err, "%s: malformed YAML (libyaml error %d)", source, (int)parser->error);
    }
}

static struct config_node *from_yaml(struct yaml_reader *r, yaml_node_t *yn, int depth);

static struct config_node *from_yaml_map(struct yaml_reader *r, yaml_node_t *yn, int depth) {
    struct config_node *map = node_new(CONFIG_NODE_MAP, yaml_pos(r, yn->start_mark));
    for (yaml_node_pair_t *pair = yn->data.mapping.pairs.start; pair < yn->data.mapping.pairs.top; pair++) {
        yaml_node_t *key = yaml_document_get_node(r->doc, pair->key);
        yaml_node_t *value = yaml_document_get_node(r->doc, pair->value);
        char at[POS_TEXT];
        struct config_pos key_pos = yaml_pos(r, key ? key->start_mark : yn->start_mark);
        config_pos_format(&key_pos, at, sizeof at);
        if (!key || !value || key->type != YAML_SCALAR_NODE) {
            hyla_config_fail(r->err, "%s: a mapping key must be a plain name, not a sequence or mapping", at);
            goto bad_pair;
        }
        const char *name = (const char *)key->data.scalar.value;
        if (strlen(name) != key->data.scalar.length) {
            hyla_config_fail(r->err, "%s: a mapping key contains a NUL character", at);
            goto bad_pair;
        }
        const struct config_entry *previous = map_find(map, name);
        if (previous) {
            hyla_config_fail(r->err, "%s: duplicate key '%s' (first given at line %d)", at, name, previous->key_pos.line);
            goto bad_pair;
        }
        struct config_node *child = from_yaml(r, value, depth + 1);
        if (!child) goto bad_pair;
        map_append(map, name, key_pos, child);
        continue;
    bad_pair:
        pos_free(&key_pos);
        config_node_free(map);
        return NULL;
    }
    return map;
}

static struct config_node *from_yaml(struct yaml_reader *r, yaml_node_t *yn, int depth) {
    char at[POS_TEXT];
    struct config_pos pos = yaml_pos(r, yn->start_mark);
    config_pos_format(&pos, at, sizeof at);
    if (depth > MAX_DEPTH || r->nodes_left == 0) {
        pos_free(&pos);
        hyla_config_fail(r->err, "%s: the YAML nests deeper than %d levels or expands to more than %d values "
                     "(recursive or repeated aliases?)", at, MAX_DEPTH, MAX_NODES);
        return NULL;
    }
    r->nodes_left--;
    switch (yn->type) {
    case YAML_SCALAR_NODE: {
        const char *text = (const char *)yn->data.scalar.value;
        if (strlen(text) != yn->data.scalar.length) {
            pos_free(&pos);
            hyla_config_fail(r->err, "%s: a value contains a NUL character", at);
            return NULL;
        }
        return scalar_new(text, yn->data.scalar.style != YAML_PLAIN_SCALAR_STYLE, pos);
    }
    case YAML_SEQUENCE_NODE: {
        struct config_node *seq = node_new(CONFIG_NODE_SEQ, pos);
        for (yaml_node_item_t *item = yn->data.sequence.items.start; item < yn->data.sequence.items.top; item++) {
            yaml_node_t *child_yn = yaml_document_get_node(r->doc, *item);
            struct config_node *child = child_yn ? from_yaml(r, child_yn, depth + 1) : NULL;
            if (!child) {
                if (!child_yn) hyla_config_fail(r->err, "%s: broken YAML sequence", at);
                config_node_free(seq);
                return NULL;
            }
            seq_append(seq, child);
        }
        return seq;
    }
    case YAML_MAPPING_NODE:
        pos_free(&pos);
        return from_yaml_map(r, yn, depth);
    default:
        pos_free(&pos);
        hyla_config_fail(r->err, "%s: empty YAML node", at);
        return NULL;
    }
}

/* Parse one YAML document from an initialised parser. file == NULL: an override value. */
static int load_yaml_document(yaml_parser_t *parser, const char *source, const char *file, const char *where,
                              struct config_node **out, struct hyla_config_error *err) {
    yaml_document_t doc;
    if (!yaml_parser_load(parser, &doc)) return yaml_parse_error(parser, source, file != NULL, err);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    struct yaml_reader reader = {&doc, file, where, MAX_NODES, err};
    struct config_node *node;
    if (root) {
        node = from_yaml(&reader, root, 0);
    } else if (file) { /* an empty file is an empty config */
        node = node_new(CONFIG_NODE_MAP, pos_make(CONFIG_FROM_YAML, file, 1, 1, NULL));
    } else { /* --set key= gives null */
        node = scalar_new("", 0, pos_make(CONFIG_FROM_SET, NULL, 0, 0, where));
    }
    yaml_document_delete(&doc);
    if (!node) return -1;

    /* A second document would be silently ignored: refuse it instead. */
    yaml_document_t next;
    if (!yaml_parser_load(parser, &next)) {
        config_node_free(node);
        return yaml_parse_error(parser, source, file != NULL, err);
    }
    int more = yaml_document_get_root_node(&next) != NULL;
    yaml_mark_t mark = next.start_mark;
    yaml_document_delete(&next);
    if (more) {
        config_node_free(node);
        if (!file) return hyla_config_fail(err, "%s: the value holds more than one YAML document", source);
        return hyla_config_fail(err, "%s:%zu:%zu: a second YAML document starts here; a config holds one document",
                    source, mark.line + 1, mark.column + 1);
    }
    *out = node;
    return 0;
}

int config_tree_load_yaml(const char *path, struct config_tree **out, struct hyla_config_error *err) {
    FILE *file = open_config_file(path, "config file", err);
    if (!file) return -1;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        fclose(file);
        return hyla_config_fail(err, "%s: out of memory initialising the YAML parser", path);
    }
    yaml_parser_set_input_file(&parser, file);
    struct config_node *root = NULL;
    int rc = load_yaml_document(&parser, path, path, NULL, &root, err);
    yaml_parser_delete(&parser);
    if (ferror(file) && rc == 0) {
        rc = hyla_config_fail(err, "cannot read config file '%s': read error", path);
        config_node_free(root);
    }
    if (fclose(file) != 0 && rc == 0) {
        rc = hyla_config_fail(err, "cannot read config file '%s': %s", path, strerror(errno));
        config_node_free(root);
    }
    if (rc == 0) *out = tree_with_root(root);
    return rc;
}

int config_node_parse(const char *value_text, const char *where, struct config_node **out,
                      struct hyla_config_error *err) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return hyla_config_fail(err, "--set %s: out of memory", where);
    yaml_parser_set_input_string(&parser, (const unsigned char *)value_text, strlen(value_text));
    char source[POS_TEXT];
    snprintf(source, sizeof source, "--set %s", where);
    int rc = load_yaml_document(&parser, source, NULL, where, out, err);
    yaml_parser_delete(&parser);
    return rc;
}

/* ---- JSON -------------------------------------------------------------------------- */

static struct config_node *from_json(const json_t *json, const char *file, const char *key_path, int depth,
                                     struct hyla_config_error *err) {
    struct config_pos pos = pos_make(CONFIG_FROM_JSON, file, 0, 0, key_path);
    if (depth > MAX_DEPTH) {
        hyla_config_fail(err, "%s: the JSON nests deeper than %d levels", file, MAX_DEPTH);
        pos_free(&pos);
        return NULL;
    }
    char text[64];
    switch (json_typeof(json)) {
    case JSON_OBJECT: {
        struct config_node *map = node_new(CONFIG_NODE_MAP, pos);
        const char *key;
        json_t *value;
        json_object_foreach((json_t *)json, key, value) {
            size_t n = strlen(key_path) + strlen(key) + 2;
            char *child_path = hyla_malloc(n);
            snprintf(child_path, n, "%s%s%s", key_path, key_path[0] ? "." : "", key);
            struct config_node *child = from_json(value, file, child_path, depth + 1, err);
            if (child) map_append(map, key, pos_make(CONFIG_FROM_JSON, file, 0, 0, child_path), child);
            free(child_path);
            if (!child) {
                config_node_free(map);
                return NULL;
            }
        }
        return map;
    }
    case JSON_ARRAY: {
        struct config_node *seq = node_new(CONFIG_NODE_SEQ, pos);
        for (size_t i = 0; i < json_array_size(json); i++) {
            size_t n = strlen(key_path) + 32;
            char *child_path = hyla_malloc(n);
            snprintf(child_path, n, "%s[%zu]", key_path, i);
            struct config_node *child = from_json(json_array_get(json, i), file, child_path, depth + 1, err);
            free(child_path);
            if (!child) {
                config_node_free(seq);
                return NULL;
            }
            seq_append(seq, child);
        }
        return seq;
    }
    case JSON_STRING:
        return scalar_new(json_string_value(json), 1, pos);
    case JSON_INTEGER:
        snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(json));
        return scalar_new(text, 0, pos);
    case JSON_REAL:
        config_format_double(json_real_value(json), text, sizeof text);
        return scalar_new(text, 0, pos);
    case JSON_TRUE:
        return scalar_new("true", 0, pos);
    case JSON_FALSE:
        return scalar_new("false", 0, pos);
    case JSON_NULL:
    default:
        return scalar_new("null", 0, pos);
    }
}

int config_tree_load_json(const char *path, struct config_tree **out, struct hyla_config_error *err) {
    FILE *file = open_config_file(path, "JSON config", err);
    if (!file) return -1;
    json_error_t jerr;
    json_t *json = json_loadf(file, JSON_REJECT_DUPLICATES, &jerr);
    int close_failed = fclose(file) != 0;
    if (!json) {
        if (jerr.line > 0)
            return hyla_config_fail(err, "%s:%d:%d: malformed JSON: %s", path, jerr.line, jerr.column, jerr.text);
        return hyla_config_fail(err, "%s: malformed JSON: %s", path, jerr.text);
    }
    if (close_failed) {
        json_decref(json);
        return hyla_config_fail(err, "cannot read JSON config '%s': %s", path, strerror(errno));
    }
    struct config_node *root = from_json(json, path, "", 0, err);
    json_decref(json);
    if (!root) return -1;
    *out = tree_with_root(root);
    return 0;
}

/* ---- dotted keys ------------------------------------------------------------------- */

/* Split "a.b.c" into components in buf; returns the count, or -1 (empty component, too long). */
static int split_key(const char *dotted_key, char *buf, size_t size, char **parts, int max_parts) {
    size_t n = strlen(dotted_key);
    if (n == 0 || n >= size) return -1;
    memcpy(buf, dotted_key, n + 1);
    int count = 0;
    char *start = buf;
    for (char *p = buf;; p++) {
        if (*p == '.' || *p == '\0') {
            int end = *p == '\0';
            *p = '\0';
            if (!*start || count == max_parts) return -1;
            parts[count++] = start;
            if (end) break;
            start = p + 1;
        }
    }
    return count;
}

/* The slot holding the value at dotted_key: intermediate mappings are created (a null on
 * the way becomes a mapping), and the last entry is created with a NULL value if absent. */
static struct config_node **slot_for_key(struct config_tree *tree, const char *dotted_key,
                                         const struct config_pos *pos, struct hyla_config_error *err) {
    char buf[MAX_KEY], *parts[32];
    int n = split_key(dotted_key, buf, sizeof buf, parts, 32);
    if (n < 0) {
        hyla_config_fail(err, "invalid key '%s': expected names joined by dots, such as model.attn.window_size", dotted_key);
        return NULL;
    }
    struct config_node **slot = &tree->root;
    for (int i = 0; i < n; i++) {
        struct config_node *node = *slot;
        if (config_node_is_null(node)) { /* "train:" with nothing under it */
            struct config_pos keep = pos_copy(&node->pos);
            config_node_free(node);
            node = *slot = node_new(CONFIG_NODE_MAP, keep);
        }
        if (node->kind != CONFIG_NODE_MAP) {
            char at[POS_TEXT];
            config_pos_format(&node->pos, at, sizeof at);
            hyla_config_fail(err, "cannot set %s: the value at %s is a %s, not a mapping", dotted_key, at,
                 node->kind == CONFIG_NODE_SEQ ? "sequence" : "scalar");
            return NULL;
        }
        struct config_entry *entry = map_find(node, parts[i]);
        if (!entry) {
            struct config_node *child = i + 1 < n ? node_new(CONFIG_NODE_MAP, pos_copy(pos)) : NULL;
            entry = map_append(node, parts[i], pos_copy(pos), child);
        }
        slot = &entry->value;
    }
    return slot;
}

int config_tree_set(struct config_tree *tree, const char *dotted_key, const char *value_text,
                    struct hyla_config_error *err) {
    size_t n = strlen(dotted_key) + strlen(value_text) + 2;
    char *where = hyla_malloc(n);
    snprintf(where, n, "%s=%s", dotted_key, value_text);
    char buf[MAX_KEY], *parts[32];
    if (split_key(dotted_key, buf, sizeof buf, parts, 32) < 0) {
        hyla_config_fail(err, "--set %s: invalid key '%s': expected names joined by dots, such as model.attn.window_size", where,
             dotted_key);
        free(where);
        return -1;
    }
    struct config_node *value = NULL;
    int rc = config_node_parse(value_text, where, &value, err);
    if (rc == 0) {
        struct config_pos pos = pos_make(CONFIG_FROM_SET, NULL, 0, 0, where);
        struct config_node **slot = slot_for_key(tree, dotted_key, &pos, err);
        pos_free(&pos);
        if (slot) {
            config_node_free(*slot);
            *slot = value;
        } else {
            config_node_free(value);
            rc = -1;
        }
    }
    free(where);
    return rc;
}

static struct config_entry *find_entry(const struct config_tree *tree, const char *dotted_key,
                                       struct config_node **parent) {
    char buf[MAX_KEY], *parts[32];
    int n = split_key(dotted_key, buf, sizeof buf, parts, 32);
    if (n < 0) return NULL;
    struct config_node *node = tree->root;
    struct config_entry *entry = NULL;
    for (int i = 0; i < n; i++) {
        if (!node || node->kind != CONFIG_NODE_MAP) return NULL;
        entry = map_find(node, parts[i]);
        if (!entry) return NULL;
        if (parent) *parent = node;
        node = entry->value;
    }
    return entry;
}

const struct config_node *config_tree_get(const struct config_tree *tree, const char *dotted_key) {
    const struct config_entry *entry = find_entry(tree, dotted_key, NULL);
    return entry ? entry->value : NULL;
}

const struct config_pos *config_tree_key_pos(const struct config_tree *tree, const char *dotted_key) {
    const struct config_entry *entry = find_entry(tree, dotted_key, NULL);
    return entry ? &entry->key_pos : NULL;
}

struct config_node *config_tree_take(struct config_tree *tree, const char *dotted_key) {
    struct config_node *parent = NULL;
    struct config_entry *entry = find_entry(tree, dotted_key, &parent);
    if (!entry) return NULL;
    struct config_node *value = entry->value;
    free(entry->key);
    pos_free(&entry->key_pos);
    size_t index = (size_t)(entry - parent->entries);
    memmove(entry, entry + 1, (parent->n_entries - index - 1) * sizeof *entry);
    parent->n_entries--;
    return value;
}

/* Merge overlay into base, key by key; overlay is consumed. */
static void merge_maps(struct config_node *base, struct config_node *overlay) {
    for (size_t i = 0; i < overlay->n_entries; i++) {
        struct config_entry *src = &overlay->entries[i];
        struct config_entry *dst = map_find(base, src->key);
        if (!dst) {
            map_append(base, src->key, src->key_pos, src->value);
        } else if (dst->value->kind == CONFIG_NODE_MAP && src->value->kind == CONFIG_NODE_MAP) {
            merge_maps(dst->value, src->value);
            pos_free(&src->key_pos);
        } else {
            config_node_free(dst->value);
            pos_free(&dst->key_pos);
            dst->value = src->value;
            dst->key_pos = src->key_pos;
        }
        free(src->key);
        src->key = NULL;
        src->value = NULL;
    }
    overlay->n_entries = 0;
    config_node_free(overlay);
}

int config_tree_underlay(struct config_tree *tree, const char *dotted_key, struct config_node *base,
                         struct hyla_config_error *err) {
    char at[POS_TEXT];
    config_pos_format(&base->pos, at, sizeof at);
    if (base->kind != CONFIG_NODE_MAP) {
        config_node_free(base);
        return hyla_config_fail(err, "%s: expected a mapping of keys to values for %s", at, dotted_key);
    }
    struct config_node **slot = slot_for_key(tree, dotted_key, &base->pos, err);
    if (!slot) {
        config_node_free(base);
        return -1;
    }
    if (*slot && !config_node_is_null(*slot) && (*slot)->kind != CONFIG_NODE_MAP) {
        config_pos_format(&(*slot)->pos, at, sizeof at);
        config_node_free(base);
        return hyla_config_fail(err, "%s: %s must be a mapping", at, dotted_key);
    }
    if (*slot && (*slot)->kind == CONFIG_NODE_MAP) merge_maps(base, *slot);
    else config_node_free(*slot);
    *slot = base;
    return 0;
}

/* ---- numbers ----------------------------------------------------------------------- */

void config_format_double(double x, char *buf, size_t size) {
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(buf, size, "%.*g", precision, x);
        if (strtod(buf, NULL) == x) break;
    }
    /* Integral values print without exponent where that stays short ("10000.0", not "1e+04"). */
    if (strchr(buf, 'e') && x > -1e15 && x < 1e15 && x == (double)(long long)x) snprintf(buf, size, "%.0f", x);
    /* Keep it recognisably a real number, as JSON and YAML readers expect. */
    if (!strpbrk(buf, ".eEn")) {
        size_t n = strlen(buf);
        if (n + 3 <= size) memcpy(buf + n, ".0", 3);
    }
}
