#include "model_params.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "common/hyla_error.h"
#include "common/rng.h"

void param_table_init(struct hyla_param_table *t) {
    memset(t, 0, sizeof *t);
    t->capacity = 64;
    t->params = hyla_malloc(sizeof(struct hyla_param) * (size_t)t->capacity);
}

void param_table_free(struct hyla_param_table *t) {
    free(t->params);
    memset(t, 0, sizeof *t);
}

int param_table_begin_unit(struct hyla_param_table *t, const char *name) {
    HYLA_ASSERT(t->n_units < HYLA_MAX_LAYERS + 2);
    struct hyla_unit *u = &t->units[t->n_units];
    snprintf(u->name, sizeof u->name, "%s", name);
    u->size = 0;
    u->first_param = t->n_params;
    u->n_params = 0;
    return t->n_units++;
}

size_t param_table_add(struct hyla_param_table *t, const char *name, int ndim, const int *shape,
                       enum hyla_init_rule init, double init_a) {
    HYLA_ASSERT(t->n_units > 0 && ndim >= 1 && ndim <= 4 && strlen(name) < HYLA_PARAM_NAME_MAX);
    if (t->n_params == t->capacity) {
        t->capacity *= 2;
        struct hyla_param *grown = realloc(t->params, sizeof(struct hyla_param) * (size_t)t->capacity);
        if (!grown) hyla_die("out of memory growing the parameter table");
        t->params = grown;
    }
    struct hyla_unit *u = &t->units[t->n_units - 1];
    struct hyla_param *p = &t->params[t->n_params++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->count = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->count *= (size_t)shape[i];
    }
    p->unit = t->n_units - 1;
    p->offset = u->size;
    p->init = init;
    p->init_a = init_a;
    u->size += p->count;
    u->n_params++;
    t->total += p->count;
    return p->offset;
}

const struct hyla_param *param_table_find(const struct hyla_param_table *t, const char *name) {
    for (int i = 0; i < t->n_params; i++)
        if (!strcmp(t->params[i].name, name)) return &t->params[i];
    return NULL;
}

static double init_value(const struct hyla_param *p, uint64_t key, size_t i) {
    switch (p->init) {
    case HYLA_INIT_NORMAL:
        return p->init_a * hyla_rng_normal(key, i);
    case HYLA_INIT_UNIFORM:
        return p->init_a * (2.0 * hyla_rng_uniform_f64(key, i) - 1.0);
    case HYLA_INIT_CONST:
        return p->init_a;
    case HYLA_INIT_A_LOG: /* A ~ U(0, 16), strictly positive */
        return log(16.0 * (1.0 - hyla_rng_uniform_f64(key, i)));
    case HYLA_INIT_DT_BIAS: {
        double dt = exp(hyla_rng_uniform_f64(key, i) * (log(0.1) - log(0.001)) + log(0.001));
        if (dt < 1e-4) dt = 1e-4;
        return dt + log(-expm1(-dt)); /* inverse softplus */
    }
    }
    return 0;
}

void param_table_init_unit(const struct hyla_param_table *t, int unit, float *values, uint64_t seed) {
    const struct hyla_unit *u = &t->units[unit];
    uint64_t base = hyla_rng_key(seed, HYLA_RNG_INIT, 0, 0);
    for (int j = 0; j < u->n_params; j++) {
        const struct hyla_param *p = &t->params[u->first_param + j];
        uint64_t key = hyla_rng_subkey(base, XXH64(p->name, strlen(p->name), 0));
        for (size_t i = 0; i < p->count; i++) values[p->offset + i] = (float)init_value(p, key, i);
    }
}
