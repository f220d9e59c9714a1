/* The resolved config written back out: canonical YAML (every stored key, schema order,
 * sections that the config lacks left out), so that loading the dump gives the identical
 * struct; flat (key, text, number) rows for the experiment ledger; and a 64-bit hash of
 * the canonical YAML that names the config in checkpoints and the ledger. */
#ifndef HYLA_CONFIG_DUMP_H
#define HYLA_CONFIG_DUMP_H

#include <stddef.h>
#include <stdint.h>

#include "common/run_config.h"
#include "experiments/config_tree.h"

/* Canonical YAML text; the caller frees it. */
char *hyla_config_dump_yaml(const struct hyla_run_config *cfg);
/* The canonical YAML with a comment header, written to path (atomically replaced). */
int hyla_config_write_yaml(const struct hyla_run_config *cfg, const char *path, struct hyla_config_error *err);

/* One ledger parameter: the dotted key, the value as text (strings unquoted, lists as
 * "[1, 3]", null as "null"), and the value as a number (ints, floats, bools as 0/1;
 * NaN for strings, enums, lists and null). */
struct hyla_config_param {
    char key[96];
    char text[HYLA_PATH_MAX + 8];
    double value;
};
/* Every stored key in dump order; the caller frees the array. */
struct hyla_config_param *hyla_config_params(const struct hyla_run_config *cfg, size_t *count);

/* XXH64 (seed 0) of the canonical YAML; hex: 16 lowercase digits plus NUL. */
uint64_t hyla_config_hash64(const struct hyla_run_config *cfg);
void hyla_config_hash_hex(const struct hyla_run_config *cfg, char hex[17]);

/* Markdown tables of every key (type, default, description), from the schema, for
 * docs/config.md and `--help`-style listings; the caller frees it. */
char *hyla_config_describe_markdown(void);

#endif
