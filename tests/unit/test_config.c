/* The configuration system: every reference JSON config loads as is with the expected
 * values; hyla's YAML configs equal them; overrides; error messages; dump round trip;
 * hash; ledger rows; docs/config.md in step with the schema.
 *
 * The reference configs live at $HYLA_REFERENCE_CONFIGS, <repo root>/../shared/reference-configs
 * or <repo root>/tests/reference-configs; the repo root is found from this file's path. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "experiments/config_dump.h"
#include "experiments/config_schema.h"
#include "harness.h"

enum { PATH_TEXT = 2048 };

static char repo_root[PATH_TEXT], refs_dir[PATH_TEXT], tmp_dir[PATH_TEXT];

/* ---- helpers ------------------------------------------------------------------------- */

static void join(char *buf, const char *a, const char *b) {
    int n = snprintf(buf, PATH_TEXT, "%s/%s", a, b);
    if (n < 0 || n >= PATH_TEXT) hyla_die("path too long: %s/%s", a, b);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) hyla_die("cannot write %s: %s", path, strerror(errno));
    if (fputs(text, f) < 0 || fclose(f) != 0) hyla_die("cannot write %s: %s", path, strerror(errno));
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = hyla_malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            cap *= 2;
            char *grown = realloc(buf, cap);
            if (!grown) hyla_die("out of memory");
            buf = grown;
        }
    }
    buf[n] = '\0';
    if (ferror(f)) hyla_die("cannot read %s", path);
    fclose(f);
    return buf;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Load a YAML text written to a temporary file; returns the rc, err filled on failure. */
static int load_text(struct hyla_run_config *cfg, const char *name, const char *yaml, const char *const *overrides,
                     int n_overrides, struct hyla_config_error *err) {
    char path[PATH_TEXT];
    join(path, tmp_dir, name);
    write_text(path, yaml);
    return hyla_config_load(cfg, path, overrides, n_overrides, err);
}

/* The load fails and the message contains every needle. */
static void expect_error(const char *what, int rc, const struct hyla_config_error *err, const char *const *needles) {
    int ok = rc != 0;
    for (int i = 0; ok && needles[i]; i++) ok = strstr(err->message, needles[i]) != NULL;
    char label[256];
    snprintf(label, sizeof label, "error: %s", what);
    check_true(label, ok);
    printf("       -> %s\n", rc ? err->message : "(loaded without error)");
}

/* ---- reference configs --------------------------------------------------------------- */

struct expected {
    const char *file;
    enum hyla_model_type type;
    int hidden, heads, kv_heads, head_dim, tie, intermediate, pad;
    int attn; /* -1 = no attn section, else enum hyla_attn_type */
    int attn_heads, attn_kv_heads, attn_head_dim, window;
    /* LTE */
    int buffer, sinks;
    /* NSA (attn or top level) */
    int block_size, block_counts, nsa_window;
};

#define GDN HYLA_MODEL_GATED_DELTANET
#define HYB HYLA_MODEL_HYBRID_GATED_DELTANET
static const struct expected REFERENCE[] = {
    {"gated_delta_net_0.4B.json", GDN, 1024, 8, 0, 128, 1, 2816, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"gated_delta_net_1.4B.json", GDN, 2048, 8, 0, 256, 0, 5632, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"gated_delta_net_attn_0.4B.json", GDN, 1024, 8, 0, 128, 1, 2816, -1, HYLA_ATTN_STANDARD, 16, 16, 0, -1, 0, 0, 0, 0, 0},
    {"gated_delta_net_attn_1.4B.json", GDN, 2048, 8, 0, 256, 0, 5632, -1, HYLA_ATTN_STANDARD, 32, 8, 0, -1, 0, 0, 0, 0, 0},
    {"gated_delta_net_swa_0.4B.json", GDN, 1024, 8, 0, 128, 1, 2816, -1, HYLA_ATTN_STANDARD, 16, 16, 0, 1024, 0, 0, 0, 0, 0},
    {"gated_delta_net_swa_1.4B.json", GDN, 2048, 8, 0, 256, 0, 5632, -1, HYLA_ATTN_STANDARD, 32, 8, 0, 1024, 0, 0, 0, 0, 0},
    {"gated_delta_net_lte_0.4B.json", HYB, 1024, 8, 0, 128, 1, 2816, -1, HYLA_ATTN_LTE, 16, 16, 0, 768, 512, 4, 0, 0, 0},
    {"gated_delta_net_lte_1.4B.json", HYB, 2048, 8, 0, 256, 0, 5632, -1, HYLA_ATTN_LTE, 32, 8, 0, 768, 512, 4, 0, 0, 0},
    {"gated_delta_net_nsa_0.4B.json", HYB, 1024, 8, 0, 128, 1, 2816, -1, HYLA_ATTN_NSA, 32, 2, 64, 512, 0, 0, 64, 16, 512},
    {"gated_delta_net_nsa_1.4B.json", HYB, 2048, 8, 0, 256, 0, 5632, -1, HYLA_ATTN_NSA, 32, 2, 64, 512, 0, 0, 64, 16, 512},
    {"transformer_0.4B.json", HYLA_MODEL_TRANSFORMER, 1024, 16, 0, 0, 1, 2816, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"transformer_1.4B.json", HYLA_MODEL_TRANSFORMER, 2048, 32, 8, 0, 0, 5632, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"nsa_0.4B.json", HYLA_MODEL_NSA, 1024, 32, 2, 64, 1, 2816, 2, -1, 0, 0, 0, 0, 0, 0, 64, 16, 512},
    {"nsa_1.4B.json", HYLA_MODEL_NSA, 2048, 32, 2, 64, 0, 5632, 2, -1, 0, 0, 0, 0, 0, 0, 64, 16, 512},
};
enum { N_REFERENCE = sizeof REFERENCE / sizeof REFERENCE[0] };

static int model_matches(const struct hyla_model_config *m, const struct expected *e) {
    int ok = m->model_type == e->type && m->hidden_size == e->hidden && m->num_heads == e->heads &&
             m->num_kv_heads == e->kv_heads && m->head_dim == e->head_dim && m->tie_word_embeddings == e->tie &&
             hyla_intermediate_size(m) == e->intermediate && m->pad_token_id == e->pad &&
             m->num_hidden_layers == 24 && m->vocab_size == 32000 && m->norm_eps == 1e-6 &&
             m->initializer_range == 0.006 && m->max_position_embeddings == 4096 && m->bos_token_id == 1 &&
             m->eos_token_id == 2 && m->intermediate_size == 0;
    if (e->type == GDN || e->type == HYB)
        ok = ok && m->expand_v == 1 && m->conv_size == 4 && m->use_short_conv && m->use_gate;
    if (e->type == HYLA_MODEL_NSA)
        ok = ok && m->block_size == e->block_size && m->block_counts == e->block_counts &&
             m->window_size == e->nsa_window;
    else ok = ok && m->window_size == -1;
    ok = ok && m->attn.present == (e->attn >= 0);
    if (e->attn < 0) return ok;
    const struct hyla_attn_config *a = &m->attn;
    ok = ok && (int)a->attn_type == e->attn && a->n_layers == 12 && a->num_heads == e->attn_heads &&
         a->num_kv_heads == e->attn_kv_heads && a->head_dim == e->attn_head_dim && a->window_size == e->window &&
         a->rope_theta == 10000.0;
    for (int i = 0; i < a->n_layers; i++) ok = ok && a->layers[i] == 2 * i + 1;
    for (int l = 0; l < 24; l++) ok = ok && hyla_layer_uses_attention(m, l) == (l % 2 == 1);
    if (e->attn == HYLA_ATTN_LTE)
        ok = ok && a->buffer_size == e->buffer && a->sink_size == e->sinks && a->n_convs == 3 &&
             a->n_conv_dilation == 3 && a->conv_size[0] == 3 && a->conv_size[2] == 3 && a->conv_dilation[1] == 2 &&
             a->dropout_prob == 0.1 && a->routing_grad == 1 && a->routing_freeze_steps == 0 &&
             a->l1_lambda_init == 1e-9 && a->l1_lambda_min == 1e-9 && a->l1_lambda_max == 1.0 &&
             a->l1_alpha == 1.5 && a->l1_alpha_neg == 2.0 && a->l1_warmup_steps == 0 &&
             a->l1_lambda_initial_steps == 0 && a->l1_lambda_update_steps == 32 &&
             a->l1_lambda_tolerate[0] == 0.95 && a->l1_lambda_tolerate[1] == 1.0;
    if (e->attn == HYLA_ATTN_NSA) ok = ok && a->block_size == e->block_size && a->block_counts == e->block_counts;
    return ok;
}

static void test_reference_configs(void) {
    /* Every JSON file in the folder is in the table (a new reference config needs a row). */
    DIR *dir = opendir(refs_dir);
    int n_json = 0, all_known = 1;
    struct dirent *entry;
    while (dir && (entry = readdir(dir))) {
        size_t n = strlen(entry->d_name);
        if (n < 5 || strcmp(entry->d_name + n - 5, ".json")) continue;
        n_json++;
        int known = 0;
        for (int i = 0; i < N_REFERENCE; i++) known |= !strcmp(REFERENCE[i].file, entry->d_name);
        if (!known) printf("       reference config %s has no expected values in this test\n", entry->d_name);
        all_known &= known;
    }
    if (dir) closedir(dir);
    check_true("reference-configs holds the 14 known JSON configs", n_json == N_REFERENCE && all_known);

    for (int i = 0; i < N_REFERENCE; i++) {
        char path[PATH_TEXT], label[256];
        join(path, refs_dir, REFERENCE[i].file);
        struct hyla_model_config model;
        struct hyla_config_error err;
        int rc = hyla_config_load_model_json(&model, path, &err);
        if (rc) printf("       %s\n", err.message);
        snprintf(label, sizeof label, "%s loads as is with the expected values", REFERENCE[i].file);
        check_true(label, rc == 0 && model_matches(&model, &REFERENCE[i]));
        /* The same file given to hyla_config_load is read as the model section. */
        struct hyla_run_config cfg;
        rc = hyla_config_load(&cfg, path, NULL, 0, &err);
        snprintf(label, sizeof label, "%s via hyla_config_load equals hyla_config_load_model_json", REFERENCE[i].file);
        check_true(label, rc == 0 && !memcmp(&cfg.model, &model, sizeof model));
    }
}

/* configs/models/<short>_<size>.yaml against the reference JSON. */
static void test_yaml_equals_json(void) {
    static const char *const PAIRS[][2] = {
        {"gdn", "gated_delta_net"},         {"gdn_swa", "gated_delta_net_swa"}, {"gdn_attn", "gated_delta_net_attn"},
        {"gdn_lte", "gated_delta_net_lte"}, {"gdn_nsa", "gated_delta_net_nsa"}, {"transformer", "transformer"},
        {"nsa", "nsa"},
    };
    static const char *const SIZES[] = {"0.4B", "1.4B"};
    for (size_t p = 0; p < sizeof PAIRS / sizeof PAIRS[0]; p++) {
        for (int s = 0; s < 2; s++) {
            char yaml_path[PATH_TEXT], json_path[PATH_TEXT], name[128], label[256];
            snprintf(name, sizeof name, "configs/models/%s_%s.yaml", PAIRS[p][0], SIZES[s]);
            join(yaml_path, repo_root, name);
            snprintf(name, sizeof name, "%s_%s.json", PAIRS[p][1], SIZES[s]);
            join(json_path, refs_dir, name);
            struct hyla_run_config from_yaml, from_json;
            struct hyla_config_error err;
            int rc = hyla_config_load(&from_yaml, yaml_path, NULL, 0, &err);
            if (rc) printf("       %s\n", err.message);
            hyla_config_defaults(&from_json);
            if (!rc) rc = hyla_config_load_model_json(&from_json.model, json_path, &err);
            if (rc) printf("       %s\n", err.message);
            snprintf(label, sizeof label, "configs/models/%s_%s.yaml equals %s (model struct)", PAIRS[p][0],
                     SIZES[s], name);
            check_true(label, rc == 0 && !memcmp(&from_yaml.model, &from_json.model, sizeof from_json.model));
            /* Field by field through the canonical dump, with the same name. */
            memcpy(from_json.name, from_yaml.name, sizeof from_json.name);
            char *a = hyla_config_dump_yaml(&from_yaml), *b = hyla_config_dump_yaml(&from_json);
            snprintf(label, sizeof label, "  ... and its canonical dump equals the reference's");
            check_true(label, rc == 0 && !strcmp(a, b));
            snprintf(label, sizeof label, "  ... and its name defaults/sets to %s_%s", PAIRS[p][0], SIZES[s]);
            char expect_name[64];
            snprintf(expect_name, sizeof expect_name, "%s_%s", PAIRS[p][0], SIZES[s]);
            check_true(label, !strcmp(from_yaml.name, expect_name));
            free(a);
            free(b);
        }
    }
}

/* ---- overrides ------------------------------------------------------------------------ */

static void test_overrides(void) {
    char path[PATH_TEXT];
    join(path, repo_root, "configs/models/tiny_gdn_lte.yaml");
    const char *const overrides[] = {
        "model.hidden_size=128",        /* int */
        "train.lr=1e-3",                /* double */
        "model.attn.layers=[0, 2, 3]",  /* list */
        "model.attn.buffer_size=8",     /* nested */
        "model.attn.l1_lambda_tolerate=[0.9, 1.1]",
        "checkpoint.dir=ckpt/run1",     /* a section the file lacks */
        "data.mqar_num_pairs=8",
        "data.mqar_num_queries=4",
        "train.seed=18446744073709551615",
        "model.attn.conv_size=[5, 3]",
        "model.attn.conv_dilation=[1, 1]",
        "name='tiny override'",
        "model.hidden_size=96",         /* later overrides win */
    };
    struct hyla_run_config cfg;
    struct hyla_config_error err;
    int rc = hyla_config_load(&cfg, path, overrides, (int)(sizeof overrides / sizeof overrides[0]), &err);
    if (rc) printf("       %s\n", err.message);
    const struct hyla_attn_config *a = &cfg.model.attn;
    check_true("overrides load", rc == 0);
    check_true("override int (the later of two wins)", cfg.model.hidden_size == 96);
    check_true("override double", cfg.train.lr == 1e-3);
    check_true("override list", a->n_layers == 3 && a->layers[0] == 0 && a->layers[1] == 2 && a->layers[2] == 3);
    check_true("override nested key", a->buffer_size == 8 && a->window_size == 32 && a->sink_size == 2);
    check_true("override pair", a->l1_lambda_tolerate[0] == 0.9 && a->l1_lambda_tolerate[1] == 1.1);
    check_true("override creates a missing section", !strcmp(cfg.checkpoint.dir, "ckpt/run1"));
    check_true("override mqar settings", cfg.data.mqar_num_pairs == 8 && cfg.data.mqar_num_queries == 4);
    check_true("override uint64 seed", cfg.train.seed == UINT64_MAX);
    check_true("override list lengths", a->n_convs == 2 && a->conv_size[0] == 5 && a->n_conv_dilation == 2);
    check_true("override quoted string", !strcmp(cfg.name, "tiny override"));
    check_true("untouched keys keep the file's values", cfg.train.seq_len == 256 && cfg.data.task == HYLA_DATA_MQAR &&
                                                            cfg.model.num_heads == 2 && cfg.train.micro_batch == 8);

    /* An override can create the attn section of a pure GDN model. */
    join(path, repo_root, "configs/models/tiny_gdn.yaml");
    const char *const add_attn[] = {"model.attn.layers=[3]", "model.attn.num_heads=4", "model.attn.window_size=16"};
    rc = hyla_config_load(&cfg, path, add_attn, 3, &err);
    if (rc) printf("       %s\n", err.message);
    check_true("override creates model.attn (present, standard, window 16)",
               rc == 0 && cfg.model.attn.present && cfg.model.attn.attn_type == HYLA_ATTN_STANDARD &&
                   cfg.model.attn.window_size == 16 && hyla_layer_uses_attention(&cfg.model, 3) &&
                   !hyla_layer_uses_attention(&cfg.model, 2));

    /* Without a file: defaults plus overrides. */
    const char *const only[] = {"train.steps=7"};
    rc = hyla_config_load(&cfg, NULL, only, 1, &err);
    check_true("no file: defaults + overrides", rc == 0 && cfg.train.steps == 7 && cfg.name[0] == '\0');

    const char *const unknown[] = {"model.attn.windw_size=3"};
    join(path, repo_root, "configs/models/tiny_gdn_lte.yaml");
    rc = hyla_config_load(&cfg, path, unknown, 1, &err);
    expect_error("an override of an unknown key fails", rc, &err,
                 (const char *const[]){"model.attn.windw_size", "--set", "did you mean 'window_size'", NULL});
    const char *const no_equals[] = {"train.lr"};
    rc = hyla_config_load(&cfg, path, no_equals, 1, &err);
    expect_error("an override without '=' fails", rc, &err, (const char *const[]){"key=value", NULL});
    const char *const bad_list[] = {"model.attn.layers=[1, 3"};
    rc = hyla_config_load(&cfg, path, bad_list, 1, &err);
    expect_error("a malformed override value fails", rc, &err, (const char *const[]){"malformed value", NULL});
    const char *const through_scalar[] = {"model.hidden_size.x=1"};
    rc = hyla_config_load(&cfg, path, through_scalar, 1, &err);
    expect_error("an override through a scalar fails", rc, &err, (const char *const[]){"not a mapping", NULL});
}

/* ---- model.config --------------------------------------------------------------------- */

static void test_model_include(void) {
    char src[PATH_TEXT], dst[PATH_TEXT];
    join(src, refs_dir, "gated_delta_net_lte_0.4B.json");
    join(dst, tmp_dir, "lte.json");
    char *json = read_text(src);
    check_true("read the LTE reference JSON", json != NULL);
    if (!json) return;
    write_text(dst, json);
    free(json);

    struct hyla_run_config cfg;
    struct hyla_config_error err;
    int rc = load_text(&cfg, "include.yaml",
                       "model:\n"
                       "  config: lte.json        # relative to this file\n"
                       "  tie_word_embeddings: false\n"
                       "  attn:\n"
                       "    window_size: 256\n"
                       "train:\n"
                       "  steps: 5\n",
                       NULL, 0, &err);
    if (rc) printf("       %s\n", err.message);
    check_true("model.config reads the JSON (relative path) as the model section",
               rc == 0 && cfg.model.model_type == HYLA_MODEL_HYBRID_GATED_DELTANET && cfg.model.hidden_size == 1024 &&
                   cfg.model.attn.attn_type == HYLA_ATTN_LTE && cfg.model.attn.buffer_size == 512);
    check_true("keys beside model.config override the JSON's (nested ones too)",
               rc == 0 && !cfg.model.tie_word_embeddings && cfg.model.attn.window_size == 256 &&
                   cfg.model.attn.num_heads == 16 && cfg.train.steps == 5);
    const char *const over[] = {"model.attn.sink_size=8"};
    rc = load_text(&cfg, "include.yaml", "model:\n  config: lte.json\n", over, 1, &err);
    check_true("--set overrides a key read from model.config", rc == 0 && cfg.model.attn.sink_size == 8);
    rc = load_text(&cfg, "include_missing.yaml", "model:\n  config: missing.json\n", NULL, 0, &err);
    expect_error("model.config names a missing file", rc, &err,
                 (const char *const[]){"include_missing.yaml:2:11", "missing.json", "No such file or directory", NULL});
    const char *const bad_json_value[] = {"model.attn.window_size=abc"};
    rc = hyla_config_load(&cfg, dst, bad_json_value, 1, &err);
    expect_error("a bad value from --set over a JSON config", rc, &err,
                 (const char *const[]){"model.attn.window_size", "expected an integer", "abc", NULL});
    char bad[PATH_TEXT];
    join(bad, tmp_dir, "bad_value.json");
    write_text(bad, "{\"model_type\": \"gated_deltanet\",\n \"hidden_size\": \"wide\"}\n");
    rc = hyla_config_load(&cfg, bad, NULL, 0, &err);
    expect_error("a bad value inside a JSON config names the file and key", rc, &err,
                 (const char *const[]){"bad_value.json (key hidden_size)", "model.hidden_size", "\"wide\"", NULL});
}

/* ---- error messages ------------------------------------------------------------------- */

static void test_errors(void) {
    struct hyla_run_config cfg;
    struct hyla_config_error err;
    int rc;
    rc = load_text(&cfg, "unknown.yaml", "model:\n  hidden_size: 64\n  hiden_layers: 3\n", NULL, 0, &err);
    expect_error("unknown key: key, file:line:column, valid keys", rc, &err,
                 (const char *const[]){"model.hiden_layers", "unknown.yaml:3:3", "num_hidden_layers", "hidden_size",
                                       NULL});
    rc = load_text(&cfg, "unknown_top.yaml", "modle:\n  hidden_size: 64\n", NULL, 0, &err);
    expect_error("unknown top-level key lists the sections", rc, &err,
                 (const char *const[]){"modle", "unknown_top.yaml:1:1", "model, train, data", NULL});
    rc = load_text(&cfg, "type.yaml", "train:\n  steps: many\n", NULL, 0, &err);
    expect_error("wrong type: key, position, expected type, value", rc, &err,
                 (const char *const[]){"train.steps", "type.yaml:2:10", "expected an integer", "many", NULL});
    rc = load_text(&cfg, "type_list.yaml", "model:\n  attn:\n    layers: 3\n", NULL, 0, &err);
    expect_error("wrong type: a scalar for a list", rc, &err,
                 (const char *const[]){"model.attn.layers", "a list of integers", NULL});
    rc = load_text(&cfg, "type_item.yaml", "model:\n  attn:\n    layers: [1, x]\n", NULL, 0, &err);
    expect_error("wrong type: a list item", rc, &err, (const char *const[]){"model.attn.layers[1]", "'x'", NULL});
    rc = load_text(&cfg, "enum.yaml", "model:\n  model_type: mamba\n", NULL, 0, &err);
    expect_error("bad enum lists the choices", rc, &err,
                 (const char *const[]){"model.model_type", "mamba", "gated_deltanet", "hybrid_gated_deltanet",
                                       "transformer", "nsa", NULL});
    rc = load_text(&cfg, "compat.yaml", "model:\n  hidden_act: gelu\n", NULL, 0, &err);
    expect_error("a reference key with an unimplemented value names the supported one", rc, &err,
                 (const char *const[]){"model.hidden_act", "gelu", "'swish'", NULL});
    rc = load_text(&cfg, "compat_bool.yaml", "model:\n  attn:\n    qkv_bias: true\n", NULL, 0, &err);
    expect_error("qkv_bias true is refused", rc, &err, (const char *const[]){"model.attn.qkv_bias", "false", NULL});
    rc = load_text(&cfg, "range.yaml", "train:\n  lr: -0.1\n", NULL, 0, &err);
    expect_error("out of range", rc, &err, (const char *const[]){"train.lr", "-0.1", "> 0", NULL});
    rc = load_text(&cfg, "conv_width.yaml", "model:\n  conv_size: 9\n", NULL, 0, &err);
    expect_error("a short convolution wider than the ops take", rc, &err,
                 (const char *const[]){"model.conv_size", "9", "[1, 8]", NULL});
    rc = load_text(&cfg, "malformed.yaml", "model:\n  hidden_size: 64\n   num_heads: 2\n", NULL, 0, &err);
    expect_error("malformed YAML: file:line:column and the parser's message", rc, &err,
                 (const char *const[]){"malformed.yaml:3:", "malformed YAML", "not allowed", NULL});
    rc = load_text(&cfg, "duplicate.yaml", "train:\n  steps: 1\n  steps: 2\n", NULL, 0, &err);
    expect_error("duplicate key", rc, &err, (const char *const[]){"duplicate.yaml:3:3", "duplicate key 'steps'", NULL});
    char missing[PATH_TEXT];
    join(missing, tmp_dir, "no_such_config.yaml");
    rc = hyla_config_load(&cfg, missing, NULL, 0, &err);
    expect_error("missing file: the path and the OS reason", rc, &err,
                 (const char *const[]){"no_such_config.yaml", "No such file or directory", NULL});
    rc = hyla_config_load(&cfg, tmp_dir, NULL, 0, &err);
    expect_error("a directory instead of a file", rc, &err, (const char *const[]){"directory", NULL});
    char bad_json[PATH_TEXT];
    join(bad_json, tmp_dir, "malformed.json");
    write_text(bad_json, "{\n  \"hidden_size\": 64,\n  \"num_heads\": ]\n}\n");
    rc = hyla_config_load(&cfg, bad_json, NULL, 0, &err);
    expect_error("malformed JSON: file:line:column", rc, &err,
                 (const char *const[]){"malformed.json:3:", "malformed JSON", NULL});

    /* Cross-field checks. */
    rc = load_text(&cfg, "kv.yaml", "model:\n  model_type: transformer\n  num_heads: 16\n  num_kv_heads: 5\n", NULL, 0,
                   &err);
    expect_error("num_heads not a multiple of num_kv_heads", rc, &err,
                 (const char *const[]){"kv.yaml:4:3", "model.num_kv_heads", "16", "5", NULL});
    rc = load_text(&cfg, "div.yaml", "model:\n  hidden_size: 100\n  num_heads: 3\n", NULL, 0, &err);
    expect_error("hidden_size not divisible by the heads", rc, &err,
                 (const char *const[]){"model.head_dim", "100", "3", NULL});
    rc = load_text(&cfg, "layers.yaml",
                   "model:\n  num_hidden_layers: 4\n  attn:\n    layers: [1, 4]\n    num_heads: 8\n", NULL, 0, &err);
    expect_error("attention layer out of range", rc, &err,
                 (const char *const[]){"model.attn.layers", "layer 4 does not exist", "0..3", NULL});
    rc = load_text(&cfg, "order.yaml", "model:\n  attn:\n    layers: [3, 1]\n    num_heads: 8\n", NULL, 0, &err);
    expect_error("attention layers must increase", rc, &err, (const char *const[]){"found 1 after 3", NULL});
    rc = load_text(&cfg, "heads.yaml", "model:\n  attn:\n    layers: [1]\n", NULL, 0, &err);
    expect_error("attn without num_heads", rc, &err, (const char *const[]){"model.attn.num_heads", "required", NULL});
    rc = load_text(&cfg, "lte_type.yaml", "model:\n  attn:\n    attn_type: lte\n    layers: [1]\n    num_heads: 8\n",
                   NULL, 0, &err);
    expect_error("lte needs the hybrid model type", rc, &err,
                 (const char *const[]){"model.attn.attn_type", "hybrid_gated_deltanet", NULL});
    rc = load_text(&cfg, "lte_window.yaml",
                   "model:\n  model_type: hybrid_gated_deltanet\n  attn:\n    attn_type: lte\n    layers: [1]\n"
                   "    num_heads: 8\n    window_size: null\n",
                   NULL, 0, &err);
    expect_error("lte with a null window", rc, &err, (const char *const[]){"model.attn.window_size", "lte", NULL});
    rc = load_text(&cfg, "sinks.yaml",
                   "model:\n  model_type: hybrid_gated_deltanet\n  attn:\n    attn_type: lte\n    layers: [1]\n"
                   "    num_heads: 8\n    window_size: 64\n    buffer_size: 4\n    sink_size: 8\n",
                   NULL, 0, &err);
    expect_error("more sinks than buffer", rc, &err, (const char *const[]){"model.attn.sink_size", "buffer_size", NULL});
    rc = load_text(&cfg, "mqar.yaml", "data:\n  task: mqar\n  mqar_num_pairs: 4\n  mqar_num_queries: 8\n", NULL, 0, &err);
    expect_error("more mqar queries than pairs", rc, &err, (const char *const[]){"data.mqar_num_queries", NULL});
    rc = load_text(&cfg, "transformer_attn.yaml",
                   "model:\n  model_type: transformer\n  num_heads: 16\n  attn:\n    layers: [1]\n    num_heads: 8\n",
                   NULL, 0, &err);
    expect_error("a transformer with an attn section", rc, &err, (const char *const[]){"model.attn", "transformer", NULL});

    /* Errors leave the struct untouched. */
    struct hyla_run_config before, after;
    hyla_config_defaults(&before);
    after = before;
    rc = load_text(&after, "type.yaml", "train:\n  steps: many\n", NULL, 0, &err);
    check_true("a failed load leaves *cfg unchanged", rc != 0 && !memcmp(&before, &after, sizeof before));
}

/* ---- dump, hash, ledger rows ---------------------------------------------------------- */

static int same_after_round_trip(const struct hyla_run_config *cfg) {
    char path[PATH_TEXT];
    join(path, tmp_dir, "dump.yaml");
    struct hyla_config_error err;
    if (hyla_config_write_yaml(cfg, path, &err)) {
        printf("       %s\n", err.message);
        return 0;
    }
    struct hyla_run_config loaded;
    if (hyla_config_load(&loaded, path, NULL, 0, &err)) {
        printf("       %s\n", err.message);
        return 0;
    }
    char *a = hyla_config_dump_yaml(cfg), *b = hyla_config_dump_yaml(&loaded);
    int same = !strcmp(a, b) && !memcmp(cfg, &loaded, sizeof loaded);
    if (!same) printf("--- dumped\n%s--- reloaded\n%s", a, b);
    free(a);
    free(b);
    return same;
}

static void test_dump_and_hash(void) {
    char dir_path[PATH_TEXT];
    join(dir_path, repo_root, "configs/models");
    DIR *dir = opendir(dir_path);
    check_true("configs/models exists", dir != NULL);
    struct dirent *entry;
    int n_files = 0, all_ok = 1;
    while (dir && (entry = readdir(dir))) {
        size_t n = strlen(entry->d_name);
        if (n < 5 || strcmp(entry->d_name + n - 5, ".yaml")) continue;
        char path[PATH_TEXT];
        join(path, dir_path, entry->d_name);
        struct hyla_run_config cfg;
        struct hyla_config_error err;
        int ok = hyla_config_load(&cfg, path, NULL, 0, &err) == 0;
        if (!ok) printf("       %s\n", err.message);
        ok = ok && same_after_round_trip(&cfg);
        if (!ok) printf("FAIL   round trip of configs/models/%s\n", entry->d_name);
        all_ok &= ok;
        n_files++;
    }
    if (dir) closedir(dir);
    check_true("every configs/models/*.yaml loads, and dump -> load gives the identical struct",
               all_ok && n_files >= 20);

    /* Odd values survive the round trip: strings needing quotes, nulls, extreme numbers. */
    struct hyla_run_config cfg, again;
    struct hyla_config_error err;
    const char *const odd[] = {"name='null'",
                               "data.path='a \"quoted\" path: with # and \\\\ '",
                               "data.eval_path=123",
                               "train.lr=0.1",
                               "train.weight_decay=1e-300",
                               "train.max_norm=-2.5e+10",
                               "train.seed=0",
                               "model.pad_token_id=0",
                               "model.hidden_ratio=2.6666666666666665"};
    int rc = hyla_config_load(&cfg, NULL, odd, (int)(sizeof odd / sizeof odd[0]), &err);
    if (rc) printf("       %s\n", err.message);
    check_true("odd values load", rc == 0 && !strcmp(cfg.name, "null") && !strcmp(cfg.data.eval_path, "123") &&
                                      cfg.model.hidden_ratio == 8.0 / 3.0 && cfg.train.max_norm == -2.5e10);
    check_true("odd values survive dump -> load", rc == 0 && same_after_round_trip(&cfg));

    /* The hash: stable, 16 hex digits, changes with any value. */
    char path[PATH_TEXT], hex1[17], hex2[17], hex3[17];
    join(path, repo_root, "configs/models/tiny_gdn_lte.yaml");
    rc = hyla_config_load(&cfg, path, NULL, 0, &err) || hyla_config_load(&again, path, NULL, 0, &err);
    hyla_config_hash_hex(&cfg, hex1);
    hyla_config_hash_hex(&again, hex2);
    check_true("hash: 16 lowercase hex digits", rc == 0 && strlen(hex1) == 16 && strspn(hex1, "0123456789abcdef") == 16);
    check_true("hash is stable across loads", rc == 0 && !strcmp(hex1, hex2) &&
                                                  hyla_config_hash64(&cfg) == hyla_config_hash64(&again));
    again.train.lr *= 1.0000001;
    hyla_config_hash_hex(&again, hex3);
    check_true("hash changes when a value changes", strcmp(hex1, hex3) != 0);
    again = cfg;
    again.model.attn.layers[1] = 2;
    check_true("hash changes when a list item changes", hyla_config_hash64(&again) != hyla_config_hash64(&cfg));
    printf("       tiny_gdn_lte hash %s\n", hex1);

    /* Ledger rows. */
    size_t n_rows;
    struct hyla_config_param *rows = hyla_config_params(&cfg, &n_rows);
    int found_hidden = 0, found_task = 0, found_layers = 0, found_null = 0, all_text = 1;
    for (size_t i = 0; i < n_rows; i++) {
        const struct hyla_config_param *r = &rows[i];
        int may_be_empty = !strcmp(r->key, "data.path") || !strcmp(r->key, "data.eval_path") ||
                           !strcmp(r->key, "checkpoint.dir");
        all_text &= r->key[0] && (r->text[0] != '\0' || may_be_empty);
        if (!strcmp(r->key, "model.hidden_size")) found_hidden = r->value == 64 && !strcmp(r->text, "64");
        if (!strcmp(r->key, "data.task")) found_task = isnan(r->value) && !strcmp(r->text, "mqar");
        if (!strcmp(r->key, "model.attn.layers")) found_layers = isnan(r->value) && !strcmp(r->text, "[1, 3]");
        if (!strcmp(r->key, "model.intermediate_size")) found_null = isnan(r->value) && !strcmp(r->text, "null");
    }
    check_true("ledger rows: int with its number", found_hidden);
    check_true("ledger rows: enum as text, NaN", found_task);
    check_true("ledger rows: list as text", found_layers);
    check_true("ledger rows: null as text, NaN", found_null);
    check_true("ledger rows: keys and texts filled", all_text && n_rows > 60);
    free(rows);

    join(path, repo_root, "configs/models/tiny_gdn.yaml");
    rc = hyla_config_load(&cfg, path, NULL, 0, &err);
    rows = hyla_config_params(&cfg, &n_rows);
    int has_attn = 0;
    for (size_t i = 0; i < n_rows; i++) has_attn |= !strncmp(rows[i].key, "model.attn.", 11);
    check_true("ledger rows and dump leave out an absent attn section", rc == 0 && !has_attn);
    free(rows);
}

/* ---- defaults and docs ---------------------------------------------------------------- */

static void test_defaults(void) {
    struct hyla_run_config cfg;
    hyla_config_defaults(&cfg);
    const struct hyla_train_config *t = &cfg.train;
    check_true("defaults: the reference recipe", t->lr == 3e-4 && t->lr_min_ratio == 0.1 && t->beta1 == 0.9 &&
                                                     t->beta2 == 0.95 && t->eps == 1e-15 && t->weight_decay == 0.1 &&
                                                     t->max_norm == 1.0 && t->warmup_steps == 1024 && t->seed == 42);
    check_true("defaults: model", cfg.model.vocab_size == 32000 && cfg.model.norm_eps == 1e-6 &&
                                      cfg.model.initializer_range == 0.006 && cfg.model.rope_theta == 1e4 &&
                                      cfg.model.max_position_embeddings == 4096 && cfg.model.expand_v == 1 &&
                                      cfg.model.conv_size == 4 && cfg.model.use_short_conv && cfg.model.use_gate &&
                                      cfg.model.hidden_ratio == 4 && !cfg.model.attn.present);
    check_true("defaults: LTE settings as in gated_delta_net_lte_0.4B.json",
               cfg.model.attn.l1_lambda_init == 1e-9 && cfg.model.attn.l1_lambda_update_steps == 32 &&
                   cfg.model.attn.n_convs == 3 && cfg.model.attn.dropout_prob == 0.1 &&
                   cfg.model.attn.l1_lambda_tolerate[0] == 0.95);
    check_true("defaults: the rest", t->log_every == 10 && t->max_bad_steps == 10 && cfg.data.task == HYLA_DATA_TOKENS &&
                                         !strcmp(cfg.ledger.path, "runs/ledger.db") &&
                                         cfg.ledger.head_stats_every == 10 && cfg.checkpoint.keep_last == 3 &&
                                         cfg.dist.workers_per_run == 0 && cfg.data.mqar_num_pairs == 16 &&
                                         cfg.data.passkey_digits == 5 && cfg.data.passkey_depth == -1 &&
                                         cfg.data.eval_samples == 256);
    struct hyla_config_error err;
    check_true("defaults validate", hyla_config_validate(&cfg, &err) == 0);
}

/* docs/config.md holds the key reference generated from the schema, between markers. */
static void test_docs(void) {
    char path[PATH_TEXT];
    join(path, repo_root, "docs/config.md");
    char *doc = read_text(path);
    char *generated = hyla_config_describe_markdown();
    int in_step = doc && strstr(doc, generated) != NULL;
    check_true("docs/config.md holds the key reference generated from the schema", in_step);
    if (!in_step) {
        write_text("config_keys.md", generated);
        printf("       regenerate it: paste %s/config_keys.md between the keys markers of docs/config.md\n",
               getcwd(path, sizeof path) ? path : ".");
    }
    free(doc);
    free(generated);
}

/* ---- main ----------------------------------------------------------------------------- */

static void remove_tmp_dir(void) {
    DIR *dir = opendir(tmp_dir);
    struct dirent *entry;
    while (dir && (entry = readdir(dir))) {
        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, "..")) continue;
        char path[PATH_TEXT];
        join(path, tmp_dir, entry->d_name);
        remove(path);
    }
    if (dir) closedir(dir);
    rmdir(tmp_dir);
}

int main(void) {
    /* <repo>/tests/unit/test_config.c -> <repo> */
    snprintf(repo_root, sizeof repo_root, "%s", __FILE__);
    for (int up = 0; up < 3; up++) {
        char *slash = strrchr(repo_root, '/');
        if (slash) *slash = '\0';
    }
    /* $HYLA_REFERENCE_CONFIGS, else the shared folder beside the repository, else a vendored copy. */
    const char *env = getenv("HYLA_REFERENCE_CONFIGS");
    if (env) snprintf(refs_dir, sizeof refs_dir, "%s", env);
    else join(refs_dir, repo_root, "../shared/reference-configs");
    if (!env && !is_dir(refs_dir)) {
        char vendored[PATH_TEXT];
        join(vendored, repo_root, "tests/reference-configs");
        if (is_dir(vendored)) memcpy(refs_dir, vendored, sizeof refs_dir);
    }
    printf("       reference configs: %s\n", refs_dir);
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/hyla_test_config_XXXXXX");
    if (!mkdtemp(tmp_dir)) hyla_die("cannot create a temporary directory: %s", strerror(errno));

    int have_refs = is_dir(refs_dir);
    check_true("the repository root holds configs/models", is_dir(repo_root) && strstr(__FILE__, "/tests/unit/"));
    if (!have_refs)
        printf("FAIL   the reference configs folder %s is missing: it should sit beside the repository as "
               "../shared/reference-configs (or tests/reference-configs), or be named by $HYLA_REFERENCE_CONFIGS\n", refs_dir);
    check_true("reference-configs folder found", have_refs);
    if (have_refs) {
        test_reference_configs();
        test_yaml_equals_json();
        test_model_include();
    }
    test_defaults();
    test_overrides();
    test_errors();
    test_dump_and_hash();
    test_docs();
    remove_tmp_dir();
    return test_finish();
}
