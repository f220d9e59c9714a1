/* The run configuration's keys, in one table: path, type, struct field, default, choices,
 * range and a one-line doc. Loading, checking, dumping, the ledger's parameter rows and
 * docs/config.md all read this table; no other list of keys exists.
 *
 * A run config is one YAML tree with the sections name, model, train, data, checkpoint,
 * ledger and dist. model uses the reference implementation's keys; `model.config: F.json`
 * reads a reference JSON config as the model section (see docs/config.md). */
#ifndef HYLA_CONFIG_SCHEMA_H
#define HYLA_CONFIG_SCHEMA_H

#include <stddef.h>

#include "common/run_config.h"
#include "experiments/config_tree.h"

enum hyla_config_type {
    HYLA_CFG_SECTION,     /* a mapping whose presence is recorded (model.attn) */
    HYLA_CFG_INCLUDE,     /* model.config: a JSON file read as the section; resolved before binding */
    HYLA_CFG_INT,
    HYLA_CFG_UINT64,
    HYLA_CFG_DOUBLE,
    HYLA_CFG_BOOL,        /* stored as int 0/1 */
    HYLA_CFG_STRING,      /* char array; null reads as "" */
    HYLA_CFG_ENUM,        /* stored as the index into choices */
    HYLA_CFG_INT_LIST,    /* int array plus an int count */
    HYLA_CFG_DOUBLE_PAIR, /* double[2] */
};

enum {
    HYLA_CFG_NULLABLE = 1 << 0, /* null is allowed and stored as null_value */
    HYLA_CFG_FIXED = 1 << 1,    /* accepted for compatibility; only the choices (bool: the default) are implemented */
    HYLA_CFG_LO_OPEN = 1 << 2,  /* value > lo rather than >= lo */
    HYLA_CFG_HI_OPEN = 1 << 3,  /* value < hi rather than <= hi */
};

/* Offset of a key that is accepted and checked but stored nowhere. */
#define HYLA_CFG_NO_FIELD ((size_t)-1)

struct hyla_config_key {
    const char *path;            /* "model.attn.window_size" */
    enum hyla_config_type type;
    size_t offset;               /* into struct hyla_run_config, or HYLA_CFG_NO_FIELD */
    size_t count_offset;         /* INT_LIST: the int holding the length */
    size_t capacity;             /* INT_LIST: items; STRING: bytes including the NUL */
    const char *default_text;    /* as YAML ("1e-06", "[3, 3, 3]", "null"); NULL: no default */
    const char *const *choices;  /* ENUM: NULL-terminated names */
    int flags;
    int null_value;              /* NULLABLE INT: what null stores */
    double lo, hi;               /* INT, DOUBLE, lists and pairs (per item): allowed range */
    const char *doc;
};

/* The table, in canonical (dump) order. */
const struct hyla_config_key *hyla_config_schema(size_t *count);
/* The entry for a dotted path, or NULL. */
const struct hyla_config_key *hyla_config_find_key(const char *path);
/* The key's field in cfg (NULL for keys stored nowhere). */
void *hyla_config_field(struct hyla_run_config *cfg, const struct hyla_config_key *key);
const void *hyla_config_field_const(const struct hyla_run_config *cfg, const struct hyla_config_key *key);
/* Whether key lies in a section that cfg does not have (model.attn.* without model.attn). */
int hyla_config_key_absent(const struct hyla_run_config *cfg, const struct hyla_config_key *key);
/* The allowed range of numeric keys (per item for lists): ">= 1", "in [0, 1)"; "" if none. */
void hyla_config_range_text(const struct hyla_config_key *key, char *buf, size_t size);

/* Every field to its default. */
void hyla_config_defaults(struct hyla_run_config *cfg);

/* Load a run config: the YAML file (or, for a .json path, a reference model config read
 * as the model section; yaml_path may be NULL for defaults), then the overrides
 * ("model.attn.window_size=512", values in YAML flow syntax), then model.config, then
 * bind and validate. name defaults to the file's name without its extension.
 * Returns 0, or -1 with err filled and *cfg unchanged. */
int hyla_config_load(struct hyla_run_config *cfg, const char *yaml_path, const char *const *overrides,
                     int n_overrides, struct hyla_config_error *err);

/* A reference JSON model config on its own (all other sections at their defaults). */
int hyla_config_load_model_json(struct hyla_model_config *model, const char *json_path,
                                struct hyla_config_error *err);

/* The steps of hyla_config_load, for callers that edit the tree in between (sweeps). */
int hyla_config_apply_override(struct config_tree *tree, const char *key_equals_value,
                               struct hyla_config_error *err);
/* Resolve model.config (the tree is modified), bind onto defaults and validate. */
int hyla_config_from_tree(struct hyla_run_config *cfg, struct config_tree *tree, struct hyla_config_error *err);

/* Cross-field checks on a bound config (hyla_config_load runs them). */
int hyla_config_validate(const struct hyla_run_config *cfg, struct hyla_config_error *err);

/* Names of enum values, for messages and logs. */
const char *hyla_model_type_name(enum hyla_model_type type);
const char *hyla_attn_type_name(enum hyla_attn_type type);
const char *hyla_data_task_name(enum hyla_data_task task);

#endif
