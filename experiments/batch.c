#include "batch.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/hyla_error.h"
#include "experiments/config_schema.h"

#define MAX_AXES 16
#define MAX_OVERRIDES 256

static const char *const top_keys[] = {"batch", "description", "base", "set", "sweep", "workers_per_run", "retry"};
static const char *const sweep_keys[] = {"grid", "variants", "seeds"};

static int fail(struct hyla_config_error *err, const struct config_pos *pos, const char *fmt, ...) {
    char where[512] = "";
    if (pos) config_pos_format(pos, where, sizeof where);
    va_list args;
    va_start(args, fmt);
    char text[768];
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    snprintf(err->message, sizeof err->message, "%s%s%s", where, *where ? ": " : "", text);
    return -1;
}

static int check_keys(const struct config_node *map, const char *const *valid, size_t n_valid, const char *section,
                      struct hyla_config_error *err) {
    for (size_t i = 0; i < map->n_entries; i++) {
        int known = 0;
        for (size_t j = 0; j < n_valid; j++) known |= !strcmp(map->entries[i].key, valid[j]);
        if (known) continue;
        char list[512] = "";
        for (size_t j = 0; j < n_valid; j++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", j ? ", " : "", valid[j]);
        return fail(err, &map->entries[i].key_pos, "unknown key '%s' in %s; valid keys: %s", map->entries[i].key,
                    section, list);
    }
    return 0;
}

/* A value as YAML flow text ("512", "[1, 1, 1]", "'text'"); compact drops the spaces (names). */
static void flow_text(const struct config_node *n, int compact, char *buf, size_t size) {
    size_t at = strlen(buf);
    if (at >= size) return;
    switch (n->kind) {
    case CONFIG_NODE_SCALAR:
        if (n->quoted) snprintf(buf + at, size - at, compact ? "%s" : "'%s'", n->text);
        else snprintf(buf + at, size - at, "%s", n->text ? n->text : "null");
        break;
    case CONFIG_NODE_SEQ:
        snprintf(buf + at, size - at, "[");
        for (size_t i = 0; i < n->n_items; i++) {
            if (i) snprintf(buf + strlen(buf), size - strlen(buf), compact ? "," : ", ");
            flow_text(n->items[i], compact, buf, size);
        }
        snprintf(buf + strlen(buf), size - strlen(buf), "]");
        break;
    case CONFIG_NODE_MAP:
        snprintf(buf + at, size - at, "{");
        for (size_t i = 0; i < n->n_entries; i++) {
            snprintf(buf + strlen(buf), size - strlen(buf), "%s%s: ", i ? ", " : "", n->entries[i].key);
            flow_text(n->entries[i].value, compact, buf, size);
        }
        snprintf(buf + strlen(buf), size - strlen(buf), "}");
        break;
    }
}

/* One sweep axis: a key and its values (or variants: names and their `set` mappings). */
struct axis {
    const char *key;                          /* dotted key; NULL for variants */
    const struct config_node *values;         /* a sequence */
};

struct expansion {
    const char *batch_name, *base_path;
    const char *const *batch_set;             /* the batch's `set` and the caller's overrides */
    int n_batch_set;
    struct axis axes[MAX_AXES];
    int n_axes;
    const struct config_node *variants;       /* sequence of {name, set} or NULL */
    const struct config_node *seeds;          /* sequence or NULL */
};

static char *dup_text(const char *s) {
    char *d = hyla_malloc(strlen(s) + 1);
    memcpy(d, s, strlen(s) + 1);
    return d;
}

/* "model.attn.buffer_size" -> "attn.buffer_size" for run names */
static const char *short_key(const char *key) { return strncmp(key, "model.", 6) ? key : key + 6; }

static void add_part(char *name, size_t size, const char *part) {
    size_t at = strlen(name);
    snprintf(name + at, size - at, "%s%s", name[at - 1] == '/' ? "" : ",", part);
}

/* Build the run of one point of the sweep: variant index v (or -1), grid indices, seed index s (or -1). */
static int make_run(const struct expansion *x, int v, const int *grid, int s, struct hyla_batch_run *run,
                    struct hyla_config_error *err) {
    const char *ov[MAX_OVERRIDES];
    char *owned[MAX_OVERRIDES];
    int n = 0, n_owned = 0, n_run = 0;
    char *run_ov[MAX_OVERRIDES];
    snprintf(run->name, sizeof run->name, "%s/", x->batch_name);
    for (int i = 0; i < x->n_batch_set && n < MAX_OVERRIDES; i++) ov[n++] = x->batch_set[i];
    if (v >= 0) {
        const struct config_node *variant = x->variants->items[v];
        add_part(run->name, sizeof run->name, config_map_get(variant, "name")->text);
        const struct config_node *set = config_map_get(variant, "set");
        for (size_t i = 0; set && i < set->n_entries && n < MAX_OVERRIDES; i++) {
            char text[1024];
            snprintf(text, sizeof text, "%s=", set->entries[i].key);
            flow_text(set->entries[i].value, 0, text, sizeof text);
            ov[n++] = owned[n_owned++] = dup_text(text);
            run_ov[n_run++] = dup_text(text);
        }
    }
    for (int a = 0; a < x->n_axes && n < MAX_OVERRIDES; a++) {
        char text[1024], part[512];
        snprintf(text, sizeof text, "%s=", x->axes[a].key);
        flow_text(x->axes[a].values->items[grid[a]], 0, text, sizeof text);
        snprintf(part, sizeof part, "%s=", short_key(x->axes[a].key));
        flow_text(x->axes[a].values->items[grid[a]], 1, part, sizeof part);
        add_part(run->name, sizeof run->name, part);
        ov[n++] = owned[n_owned++] = dup_text(text);
        run_ov[n_run++] = dup_text(text);
    }
    if (s >= 0 && n < MAX_OVERRIDES) {
        char text[256], part[128];
        snprintf(text, sizeof text, "train.seed=%s", x->seeds->items[s]->text);
        snprintf(part, sizeof part, "seed=%s", x->seeds->items[s]->text);
        add_part(run->name, sizeof run->name, part);
        ov[n++] = owned[n_owned++] = dup_text(text);
        run_ov[n_run++] = dup_text(text);
    }
    if (run->name[strlen(run->name) - 1] == '/') add_part(run->name, sizeof run->name, "base");
    int rc = hyla_config_load(&run->cfg, x->base_path, ov, n, err);
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    run->overrides = hyla_calloc((size_t)n_run + 1, sizeof(char *));
    memcpy(run->overrides, run_ov, sizeof(char *) * (size_t)n_run);
    run->n_overrides = n_run;
    if (!rc) snprintf(run->cfg.name, sizeof run->cfg.name, "%s", run->name);
    return rc;
}

static int seq_count(const struct config_node *n) { return n ? (int)n->n_items : 0; }

static int expand(const struct expansion *x, struct hyla_batch *b, struct hyla_config_error *err) {
    int total = 1;
    for (int a = 0; a < x->n_axes; a++) total *= seq_count(x->axes[a].values);
    const int n_variants = x->variants ? seq_count(x->variants) : 0, n_seeds = x->seeds ? seq_count(x->seeds) : 0;
    total *= (n_variants ? n_variants : 1) * (n_seeds ? n_seeds : 1);
    b->runs = hyla_calloc((size_t)total, sizeof *b->runs);
    int grid[MAX_AXES] = {0};
    for (int v = 0; v < (n_variants ? n_variants : 1); v++) {
        for (int g = 0; g < total / ((n_variants ? n_variants : 1) * (n_seeds ? n_seeds : 1)); g++) {
            /* the grid index g in mixed radix, the first key varying slowest */
            for (int a = x->n_axes - 1, rest = g; a >= 0; a--) {
                grid[a] = rest % seq_count(x->axes[a].values);
                rest /= seq_count(x->axes[a].values);
            }
            for (int s = 0; s < (n_seeds ? n_seeds : 1); s++) {
                struct hyla_batch_run *run = &b->runs[b->n_runs];
                if (make_run(x, n_variants ? v : -1, grid, n_seeds ? s : -1, run, err)) {
                    char msg[sizeof err->message];
                    memcpy(msg, err->message, sizeof msg);
                    size_t at = (size_t)snprintf(err->message, sizeof err->message, "batch run %s: ", run->name);
                    if (at < sizeof err->message) memcpy(err->message + at, msg, sizeof err->message - at - 1);
                    err->message[sizeof err->message - 1] = '\0';
                    b->n_runs++;
                    return -1;
                }
                for (int r = 0; r < b->n_runs; r++)
                    if (!strcmp(b->runs[r].name, run->name))
                        return fail(err, NULL, "two runs of the batch are both named %s; give the variants "
                                               "different names or remove a repeated value", run->name);
                b->n_runs++;
            }
        }
    }
    return 0;
}

static int read_sweep(const struct config_node *sweep, struct expansion *x, struct hyla_config_error *err) {
    if (!sweep) return 0;
    if (sweep->kind != CONFIG_NODE_MAP) return fail(err, &sweep->pos, "sweep must be a mapping of grid, variants, seeds");
    if (check_keys(sweep, sweep_keys, 3, "sweep", err)) return -1;
    const struct config_node *grid = config_map_get(sweep, "grid");
    if (grid) {
        if (grid->kind != CONFIG_NODE_MAP) return fail(err, &grid->pos, "sweep.grid must map dotted keys to lists");
        for (size_t i = 0; i < grid->n_entries; i++) {
            const struct config_entry *e = &grid->entries[i];
            if (x->n_axes == MAX_AXES) return fail(err, &e->key_pos, "at most %d grid keys", MAX_AXES);
            if (e->value->kind != CONFIG_NODE_SEQ || e->value->n_items == 0)
                return fail(err, &e->value->pos, "sweep.grid.%s needs a non-empty list of values", e->key);
            if (!hyla_config_find_key(e->key))
                return fail(err, &e->key_pos, "unknown sweep key '%s'; grid keys are dotted config keys such as "
                                              "model.attn.buffer_size or train.lr (see docs/config.md)", e->key);
            x->axes[x->n_axes++] = (struct axis){.key = e->key, .values = e->value};
        }
    }
    x->variants = config_map_get(sweep, "variants");
    if (x->variants) {
        if (x->variants->kind != CONFIG_NODE_SEQ || !x->variants->n_items)
            return fail(err, &x->variants->pos, "sweep.variants needs a list of {name: ..., set: {...}}");
        for (size_t i = 0; i < x->variants->n_items; i++) {
            const struct config_node *v = x->variants->items[i], *name = config_map_get(v, "name");
            const struct config_node *set = config_map_get(v, "set");
            if (v->kind != CONFIG_NODE_MAP || !name || name->kind != CONFIG_NODE_SCALAR || !name->text)
                return fail(err, &v->pos, "every sweep variant needs a name: {name: lte, set: {...}}");
            if (set && set->kind != CONFIG_NODE_MAP && !config_node_is_null(set))
                return fail(err, &set->pos, "variant %s: set must map dotted keys to values", name->text);
        }
    }
    x->seeds = config_map_get(sweep, "seeds");
    if (x->seeds && (x->seeds->kind != CONFIG_NODE_SEQ || !x->seeds->n_items))
        return fail(err, &x->seeds->pos, "sweep.seeds needs a list of integers, e.g. [1, 2, 3]");
    return 0;
}

static int read_int(const struct config_node *n, int *out, int low, const char *what, struct hyla_config_error *err) {
    char *end = NULL;
    long v = n && n->kind == CONFIG_NODE_SCALAR && n->text ? strtol(n->text, &end, 10) : 0;
    if (!n || n->kind != CONFIG_NODE_SCALAR || !end || *end || v < low)
        return fail(err, n ? &n->pos : NULL, "%s must be an integer >= %d", what, low);
    *out = (int)v;
    return 0;
}

static void base_name(const char *path, char *out, size_t size) {
    const char *slash = strrchr(path, '/');
    snprintf(out, size, "%s", slash ? slash + 1 : path);
    char *dot = strrchr(out, '.');
    if (dot) *dot = '\0';
}

int hyla_batch_load(const char *path, const char *const *overrides, int n_overrides, struct hyla_batch *b,
                    struct hyla_config_error *err) {
    memset(b, 0, sizeof *b);
    struct config_tree *tree;
    if (config_tree_load_yaml(path, &tree, err)) return -1;
    const struct config_node *root = tree->root;
    struct expansion x = {0};
    char *set_texts[MAX_OVERRIDES];
    const char *batch_set[MAX_OVERRIDES];
    int n_set = 0, rc = -1;
    if (root->kind != CONFIG_NODE_MAP) {
        fail(err, &root->pos, "a batch file is a mapping with base:, sweep: ... (see docs/batches.md)");
        goto done;
    }
    if (check_keys(root, top_keys, sizeof top_keys / sizeof top_keys[0], "the batch file", err)) goto done;
    const struct config_node *name = config_map_get(root, "batch"), *base = config_map_get(root, "base");
    if (name && name->kind == CONFIG_NODE_SCALAR && name->text) snprintf(b->name, sizeof b->name, "%s", name->text);
    else base_name(path, b->name, sizeof b->name);
    if (!base || base->kind != CONFIG_NODE_SCALAR || !base->text) {
        fail(err, base ? &base->pos : &root->pos, "the batch needs `base: CONFIG.yaml` (a run config, relative to "
                                                  "the batch file)");
        goto done;
    }
    const char *slash = strrchr(path, '/');
    if (base->text[0] == '/' || !slash) snprintf(b->base_path, sizeof b->base_path, "%s", base->text);
    else snprintf(b->base_path, sizeof b->base_path, "%.*s/%s", (int)(slash - path), path, base->text);
    b->workers_per_run = 1;
    b->max_attempts = 1;
    const struct config_node *wpr = config_map_get(root, "workers_per_run"), *retry = config_map_get(root, "retry");
    if (wpr && read_int(wpr, &b->workers_per_run, 0, "workers_per_run", err)) goto done;
    if (retry) {
        static const char *const retry_keys[] = {"max_attempts"};
        if (retry->kind != CONFIG_NODE_MAP) {
            fail(err, &retry->pos, "retry must be a mapping, e.g. {max_attempts: 2}");
            goto done;
        }
        if (check_keys(retry, retry_keys, 1, "retry", err)) goto done;
        const struct config_node *ma = config_map_get(retry, "max_attempts");
        if (ma && read_int(ma, &b->max_attempts, 1, "retry.max_attempts", err)) goto done;
    }
    const struct config_node *set = config_map_get(root, "set");
    if (set && set->kind != CONFIG_NODE_MAP) {
        fail(err, &set->pos, "set must map dotted keys to values, e.g. {train.steps: 100}");
        goto done;
    }
    for (size_t i = 0; set && i < set->n_entries && n_set < MAX_OVERRIDES; i++) {
        char text[1024];
        snprintf(text, sizeof text, "%s=", set->entries[i].key);
        flow_text(set->entries[i].value, 0, text, sizeof text);
        batch_set[n_set] = set_texts[n_set] = dup_text(text);
        n_set++;
    }
    int n_all = n_set;
    for (int i = 0; i < n_overrides && n_all < MAX_OVERRIDES; i++) batch_set[n_all++] = overrides[i];
    x.batch_name = b->name, x.base_path = b->base_path, x.batch_set = batch_set, x.n_batch_set = n_all;
    if (read_sweep(config_map_get(root, "sweep"), &x, err)) goto done;
    rc = expand(&x, b, err);
done:
    for (int i = 0; i < n_set; i++) free(set_texts[i]);
    config_tree_free(tree);
    if (rc) hyla_batch_free(b);
    return rc;
}

void hyla_batch_free(struct hyla_batch *b) {
    for (int i = 0; i < b->n_runs; i++) {
        for (int j = 0; j < b->runs[i].n_overrides; j++) free(b->runs[i].overrides[j]);
        free(b->runs[i].overrides);
    }
    free(b->runs);
    b->runs = NULL;
    b->n_runs = 0;
}

void hyla_run_dry_run(const struct hyla_batch *b, FILE *out) {
    fprintf(out, "batch %s: %d runs from %s, %d worker(s) per run, up to %d attempt(s) each\n", b->name, b->n_runs,
            b->base_path, b->workers_per_run, b->max_attempts);
    fprintf(out, "%-4s %-56s %8s %s\n", "#", "run", "steps", "overrides");
    for (int i = 0; i < b->n_runs; i++) {
        const struct hyla_batch_run *r = &b->runs[i];
        fprintf(out, "%-4d %-56s %8d ", i, r->name, r->cfg.train.steps);
        for (int j = 0; j < r->n_overrides; j++) fprintf(out, "%s%s", j ? " " : "", r->overrides[j]);
        fprintf(out, "\n");
    }
}
