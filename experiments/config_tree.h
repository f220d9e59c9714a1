/* A generic config tree: mappings, sequences and scalars read from YAML (libyaml) or JSON
 * (jansson), each node remembering where it came from, so that every later error can
 * name the file, line and column (or the JSON key path, or the --set override).
 *
 * The tree knows nothing about hyla's keys: typing and checking happen in config_schema.c.
 * Scalars keep their text and whether they were quoted, so that "512" (a string) and 512
 * (a number) stay distinguishable, as YAML means them to be. */
#ifndef HYLA_CONFIG_TREE_H
#define HYLA_CONFIG_TREE_H

#include <stddef.h>

/* Every config error: a complete, printable message (no trailing newline). */
struct hyla_config_error {
    char message[1024];
};

/* Fill err (may be NULL) with a printf-style message; returns -1. */
int hyla_config_fail(struct hyla_config_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

enum config_node_kind { CONFIG_NODE_MAP, CONFIG_NODE_SEQ, CONFIG_NODE_SCALAR };

enum config_origin {
    CONFIG_FROM_YAML, /* file, line, column */
    CONFIG_FROM_JSON, /* file and key path (jansson keeps no per-value position) */
    CONFIG_FROM_SET,  /* a --set key=value override; where = the override text */
};

/* Where a node was written. The strings are owned by the node. */
struct config_pos {
    enum config_origin origin;
    char *file;       /* YAML/JSON file as given; NULL for --set */
    int line, column; /* 1-based; 0 when unknown */
    char *where;      /* JSON: key path inside the file ("attn.layers[2]"); --set: "key=value" */
};

struct config_node;

struct config_entry {
    char *key;
    struct config_pos key_pos;
    struct config_node *value;
};

struct config_node {
    enum config_node_kind kind;
    struct config_pos pos;
    /* scalar */
    char *text;
    int quoted; /* written quoted (or as a block scalar / JSON string): a string, never null or a number */
    /* sequence */
    struct config_node **items;
    size_t n_items;
    /* mapping, in file order */
    struct config_entry *entries;
    size_t n_entries;
    size_t capacity; /* of items or entries */
};

struct config_tree {
    struct config_node *root;
};

/* Loaders: 0 on success (*out owns a new tree), -1 with err filled. A missing or
 * unreadable file names the path and the OS reason; malformed text names file:line:column
 * and the parser's message. An empty YAML file gives an empty mapping. */
int config_tree_load_yaml(const char *path, struct config_tree **out, struct hyla_config_error *err);
int config_tree_load_json(const char *path, struct config_tree **out, struct hyla_config_error *err);

/* Parse value_text as one YAML value (a flow scalar, sequence or mapping; "" is null).
 * Every node remembers the override text `where` (e.g. "model.attn.layers=[1,3]"). */
int config_node_parse(const char *value_text, const char *where, struct config_node **out,
                      struct hyla_config_error *err);

/* A tree whose root is an empty mapping. */
struct config_tree *config_tree_new(void);
struct config_tree *config_tree_clone(const struct config_tree *tree);
void config_tree_free(struct config_tree *tree);

/* Set (or create) the dotted key, e.g. "model.attn.window_size", to value_text parsed as a
 * YAML flow value ("512", "[1, 3]", "null", "'text'"). Missing mappings on the way are
 * created; a null on the way becomes a mapping. The new nodes remember the override. */
int config_tree_set(struct config_tree *tree, const char *dotted_key, const char *value_text,
                    struct hyla_config_error *err);

/* The node at a dotted key, or NULL. */
const struct config_node *config_tree_get(const struct config_tree *tree, const char *dotted_key);
/* Where the dotted key itself was written (the key, not its value), or NULL. */
const struct config_pos *config_tree_key_pos(const struct config_tree *tree, const char *dotted_key);
/* Remove the dotted key from its mapping and hand its value to the caller (NULL if absent). */
struct config_node *config_tree_take(struct config_tree *tree, const char *dotted_key);
/* Make base the lower layer of the mapping at dotted_key: the result holds base's entries,
 * with the mapping's own entries merged over them (mappings merge key by key, anything
 * else replaces). base is consumed, also on error. The key is created if absent. */
int config_tree_underlay(struct config_tree *tree, const char *dotted_key, struct config_node *base,
                         struct hyla_config_error *err);

/* A plain null scalar: null, Null, NULL, ~ or nothing (YAML 1.2 core schema). */
int config_node_is_null(const struct config_node *node);
/* The value of key in a mapping node, or NULL. */
const struct config_node *config_map_get(const struct config_node *map, const char *key);
void config_node_free(struct config_node *node);

/* "file.yaml:12:5", "file.json (key attn.window_size)" or "--set model.x=1". */
void config_pos_format(const struct config_pos *pos, char *buf, size_t size);

/* The shortest decimal text that reads back (strtod) as exactly x; x must be finite. */
void config_format_double(double x, char *buf, size_t size);

#endif
