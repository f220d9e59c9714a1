#include "model_io.h"

#include <stdio.h>
#include <string.h>

#include "common/hyla_error.h"

static const char *const LTE_LAMBDA = "model.l1_lambda", *const LTE_NUM_KEPT = "model.num_kept";

int model_save_safetensors(const struct hyla_model *m, const char *path, enum hyla_st_dtype dtype,
                           const struct hyla_st_meta *meta, int num_meta, struct hyla_st_error *err) {
    const struct hyla_param_table *t = &m->lay.table;
    const int n_lte = m->lay.n_lte_layers ? 2 : 0;
    const int n = t->n_params + n_lte;
    struct hyla_st_entry *e = hyla_calloc((size_t)n, sizeof *e);
    int64_t(*shapes)[4] = hyla_calloc((size_t)n, sizeof *shapes);
    float **host = hyla_calloc((size_t)t->n_units, sizeof(float *));
    for (int u = 0; u < t->n_units; u++) {
        host[u] = hyla_malloc(t->units[u].size * sizeof(float));
        m->be->to_host(host[u], m->params[u], t->units[u].size * sizeof(float));
    }
    for (int i = 0; i < t->n_params; i++) {
        const struct hyla_param *p = &t->params[i];
        for (int d = 0; d < p->ndim; d++) shapes[i][d] = p->shape[d];
        e[i] = (struct hyla_st_entry){.name = p->name, .dtype = dtype, .ndim = p->ndim, .shape = shapes[i],
                                      .f32 = host[p->unit] + p->offset};
    }
    if (n_lte) { /* buffers stay fp32, as in the reference */
        for (int j = 0; j < 2; j++) {
            int i = t->n_params + j;
            shapes[i][0] = m->lay.n_lte_layers, shapes[i][1] = m->lay.att_kv_heads;
            e[i] = (struct hyla_st_entry){.name = j ? LTE_NUM_KEPT : LTE_LAMBDA, .dtype = HYLA_ST_F32, .ndim = 2,
                                          .shape = shapes[i], .f32 = j ? m->num_kept : m->l1_lambda};
        }
    }
    int rc = hyla_st_write(path, e, n, meta, num_meta, err);
    for (int u = 0; u < t->n_units; u++) free(host[u]);
    free(host), free(e), free(shapes);
    return rc;
}

static int fail(struct hyla_st_error *err, const char *fmt, const char *a, const char *b) {
    err->code = HYLA_ST_EARG;
    snprintf(err->message, sizeof err->message, fmt, a, b);
    return HYLA_ST_EARG;
}

static int shape_matches(const struct hyla_st_tensor *x, const int *shape, int ndim) {
    if (x->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (x->shape[d] != shape[d]) return 0;
    return 1;
}

static int load_buffer(const struct hyla_st_file *f, const char *name, float *dst, int rows, int cols,
                       const char *path, struct hyla_st_error *err) {
    const struct hyla_st_tensor *x = hyla_st_find(f, name);
    if (!x) return 0; /* optional: a model trained elsewhere may not carry the controller state */
    if (!shape_matches(x, (const int[]){rows, cols}, 2))
        return fail(err, "%s: tensor %s has the wrong shape for this model's LTE layers", path, name);
    return hyla_st_to_f32(x, dst, err);
}

int model_load_safetensors(struct hyla_model *m, const char *path, struct hyla_st_error *err) {
    struct hyla_st_file f;
    if (hyla_st_open(&f, path, err)) return err->code;
    const struct hyla_param_table *t = &m->lay.table;
    int rc = 0;
    /* Every tensor of the file must be something this model has. */
    for (int i = 0; i < f.num_tensors && !rc; i++) {
        const char *name = f.tensors[i].name;
        int known = param_table_find(t, name) || (m->lay.tied && !strcmp(name, "lm_head.weight")) ||
                    (m->lay.n_lte_layers && (!strcmp(name, LTE_LAMBDA) || !strcmp(name, LTE_NUM_KEPT)));
        if (!known)
            rc = fail(err, "%s: tensor %s is not a parameter of this model; check that the config (model type, "
                           "layers, attn.layers) matches the weights", path, name);
    }
    for (int i = 0; i < t->n_params && !rc; i++) {
        const struct hyla_param *p = &t->params[i];
        const struct hyla_st_tensor *x = hyla_st_find(&f, p->name);
        if (!x) {
            rc = fail(err, "%s: missing tensor %s; the weights were saved from another model config", path, p->name);
            break;
        }
        if (!shape_matches(x, p->shape, p->ndim)) {
            rc = fail(err, "%s: tensor %s has another shape than this model's; check hidden_size, heads and "
                           "head_dim of the config", path, p->name);
            break;
        }
        float *host = hyla_malloc(p->count * sizeof(float));
        rc = hyla_st_to_f32(x, host, err);
        if (!rc) m->be->to_device(m->params[p->unit] + p->offset, host, p->count * sizeof(float));
        free(host);
    }
    if (!rc && m->lay.n_lte_layers) {
        rc = load_buffer(&f, LTE_LAMBDA, m->l1_lambda, m->lay.n_lte_layers, m->lay.att_kv_heads, path, err);
        if (!rc) rc = load_buffer(&f, LTE_NUM_KEPT, m->num_kept, m->lay.n_lte_layers, m->lay.att_kv_heads, path, err);
    }
    hyla_st_close(&f);
    return rc;
}
