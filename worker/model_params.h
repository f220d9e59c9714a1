/* The model's parameters: names (the reference's state-dict names), shapes, init rules,
 * and their placement in FSDP units. A unit is one flat fp32 buffer: the embedding, each
 * block, and the final norm (+ the untied LM head). Sharding, checkpoints, export and the
 * optimizer all work on units; the forward pass finds a weight by its offset in its unit. */
#ifndef HYLA_MODEL_PARAMS_H
#define HYLA_MODEL_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "common/run_config.h"

#define HYLA_PARAM_NAME_MAX 96

enum hyla_init_rule {
    HYLA_INIT_NORMAL,          /* N(0, a^2) */
    HYLA_INIT_UNIFORM,         /* U(-a, a) */
    HYLA_INIT_CONST,           /* a */
    HYLA_INIT_A_LOG,           /* log U(0, 16) (GDN decay rate, MODEL.md §1.3) */
    HYLA_INIT_DT_BIAS,         /* softplus^-1 of a log-uniform dt in [1e-3, 1e-1] */
};

struct hyla_param {
    char name[HYLA_PARAM_NAME_MAX];
    int ndim;
    int shape[4];
    int unit;                  /* index of the unit that holds it */
    size_t offset;             /* in values, inside the unit */
    size_t count;
    enum hyla_init_rule init;
    double init_a;
};

struct hyla_unit {
    char name[48];             /* "embeddings", "layers.3", "final" */
    size_t size;               /* values */
    int first_param, n_params;
};

struct hyla_param_table {
    struct hyla_param *params;
    int n_params, capacity;
    struct hyla_unit units[HYLA_MAX_LAYERS + 2];
    int n_units;
    size_t total;              /* all values of all units */
};

void param_table_init(struct hyla_param_table *t);
void param_table_free(struct hyla_param_table *t);
/* Start a new unit; later params go into it. Returns its index. */
int param_table_begin_unit(struct hyla_param_table *t, const char *name);
/* Add a parameter to the current unit; returns its offset in the unit. */
size_t param_table_add(struct hyla_param_table *t, const char *name, int ndim, const int *shape,
                       enum hyla_init_rule init, double init_a);
const struct hyla_param *param_table_find(const struct hyla_param_table *t, const char *name);

/* Fill a unit's values from the counter-based RNG: element i of parameter p is a pure
 * function of (seed, p's name, i), whatever the unit layout or the sharding. */
void param_table_init_unit(const struct hyla_param_table *t, int unit, float *values, uint64_t seed);

#endif
