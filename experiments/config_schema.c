#include "experiments/config_schema.h"
#include "kernels/ops/op_shapes.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hyla_error.h"

/* Enum fields are stored through an int. */
_Static_assert(sizeof(enum hyla_model_type) == sizeof(int), "enum size");
_Static_assert(sizeof(enum hyla_attn_type) == sizeof(int), "enum size");
_Static_assert(sizeof(enum hyla_data_task) == sizeof(int), "enum size");

enum { KEY_MAX = 256, POS_TEXT = 1200 };

/* ---- the table ----------------------------------------------------------------------- */

static const char *const MODEL_TYPES[] = {"gated_deltanet", "hybrid_gated_deltanet", "transformer", "nsa", NULL};
static const char *const ATTN_TYPES[] = {"standard", "lte", "nsa", NULL};
static const char *const DATA_TASKS[] = {"tokens", "mqar", "passkey", NULL};
static const char *const PRECISIONS[] = {"fp32", "bf16", NULL};
/* Reference keys whose other values would need behaviour hyla does not implement. */
static const char *const ATTN_MODES[] = {"chunk", "fused_recurrent", NULL};
static const char *const HIDDEN_ACTS[] = {"swish", NULL};
static const char *const ROUTING_METHODS[] = {"sigmoid", NULL};
static const char *const SHARED_PER_HEAD[] = {"head", NULL};

#define FIELD(f) offsetof(struct hyla_run_config, f)
#define FIELD_SIZE(f) sizeof(((struct hyla_run_config *)0)->f)

#define SECTION_KEY(p, present_field, d) \
    {.path = p, .type = HYLA_CFG_SECTION, .offset = FIELD(present_field), .doc = d}
#define INCLUDE_KEY(p, d) {.path = p, .type = HYLA_CFG_INCLUDE, .offset = HYLA_CFG_NO_FIELD, .doc = d}
#define INT_KEY(p, f, def, low, high, d) \
    {.path = p, .type = HYLA_CFG_INT, .offset = FIELD(f), .default_text = def, .lo = low, .hi = high, .doc = d}
#define NULLABLE_INT_KEY(p, f, null_stored, low, high, d)                                               \
    {.path = p, .type = HYLA_CFG_INT, .offset = FIELD(f), .default_text = "null",                        \
     .flags = HYLA_CFG_NULLABLE, .null_value = null_stored, .lo = low, .hi = high, .doc = d}
#define UINT64_KEY(p, f, def, d) \
    {.path = p, .type = HYLA_CFG_UINT64, .offset = FIELD(f), .default_text = def, .lo = 0, .hi = INFINITY, .doc = d}
#define DOUBLE_KEY(p, f, def, low, high, fl, d) \
    {.path = p, .type = HYLA_CFG_DOUBLE, .offset = FIELD(f), .default_text = def, .flags = fl, .lo = low, .hi = high, .doc = d}
#define BOOL_KEY(p, f, def, d) {.path = p, .type = HYLA_CFG_BOOL, .offset = FIELD(f), .default_text = def, .doc = d}
#define STRING_KEY(p, f, def, d) \
    {.path = p, .type = HYLA_CFG_STRING, .offset = FIELD(f), .capacity = FIELD_SIZE(f), .default_text = def, .doc = d}
#define ENUM_KEY(p, f, def, names, d) \
    {.path = p, .type = HYLA_CFG_ENUM, .offset = FIELD(f), .default_text = def, .choices = names, .doc = d}
#define LIST_KEY(p, f, count_field, def, low, high, d)                                                  \
    {.path = p, .type = HYLA_CFG_INT_LIST, .offset = FIELD(f), .count_offset = FIELD(count_field),       \
     .capacity = FIELD_SIZE(f) / sizeof(int), .default_text = def, .lo = low, .hi = high, .doc = d}
#define PAIR_KEY(p, f, def, low, high, d) \
    {.path = p, .type = HYLA_CFG_DOUBLE_PAIR, .offset = FIELD(f), .default_text = def, .lo = low, .hi = high, .doc = d}
/* Accepted for compatibility with the reference configs, stored nowhere. */
#define COMPAT_BOOL_KEY(p, def, fl, d) \
    {.path = p, .type = HYLA_CFG_BOOL, .offset = HYLA_CFG_NO_FIELD, .default_text = def, .flags = fl, .doc = d}
#define COMPAT_ENUM_KEY(p, def, names, d)                                                                \
    {.path = p, .type = HYLA_CFG_ENUM, .offset = HYLA_CFG_NO_FIELD, .default_text = def, .choices = names, \
     .flags = HYLA_CFG_FIXED, .doc = d}

static const struct hyla_config_key SCHEMA[] = {
    STRING_KEY("name", name, "\"\"", "run name (ledger, logs); default: the config file's name without extension"),

    /* model: the reference configs' keys (MODEL.md §1-2); defaults give the 0.4B GDN */
    ENUM_KEY("model.model_type", model.model_type, "gated_deltanet", MODEL_TYPES,
             "gated_deltanet: GDN, standard attention in attn.layers; hybrid_gated_deltanet: GDN + LTE/NSA "
             "with the residual rescale; transformer; nsa"),
    INT_KEY("model.vocab_size", model.vocab_size, "32000", 1, INT_MAX, "vocabulary size V"),
    INT_KEY("model.hidden_size", model.hidden_size, "1024", 1, INT_MAX, "model width D"),
    INT_KEY("model.num_hidden_layers", model.num_hidden_layers, "24", 1, HYLA_MAX_LAYERS, "number of blocks"),
    INT_KEY("model.num_heads", model.num_heads, "8", 1, INT_MAX,
            "GDN heads (GDN models) or attention query heads (transformer, nsa)"),
    NULLABLE_INT_KEY("model.num_kv_heads", model.num_kv_heads, 0, 1, INT_MAX,
                     "transformer / nsa key-value heads; null = num_heads"),
    NULLABLE_INT_KEY("model.head_dim", model.head_dim, 0, 1, INT_MAX,
                     "GDN key dim d_k per head (GDN models) or attention head dim; null = hidden_size / num_heads"),
    INT_KEY("model.expand_v", model.expand_v, "1", 1, INT_MAX, "GDN value dim d_v = head_dim * expand_v"),
    INT_KEY("model.conv_size", model.conv_size, "4", 1, HYLA_SHORTCONV_MAX_WIDTH,
            "GDN short convolution width (the reference's kernels take 2-4; hyla's ops up to 8)"),
    BOOL_KEY("model.use_short_conv", model.use_short_conv, "true", "GDN short convolutions on q, k, v"),
    BOOL_KEY("model.use_gate", model.use_gate, "true", "GDN output gate"),
    DOUBLE_KEY("model.hidden_ratio", model.hidden_ratio, "4.0", 0, INFINITY, HYLA_CFG_LO_OPEN,
               "MLP width ratio (used when intermediate_size is null)"),
    NULLABLE_INT_KEY("model.intermediate_size", model.intermediate_size, 0, 1, INT_MAX,
                     "MLP width; null = 256 * ceil(floor(hidden_size * hidden_ratio * 2/3) / 256)"),
    DOUBLE_KEY("model.norm_eps", model.norm_eps, "1e-06", 0, INFINITY, HYLA_CFG_LO_OPEN, "RMSNorm epsilon"),
    DOUBLE_KEY("model.initializer_range", model.initializer_range, "0.006", 0, INFINITY, HYLA_CFG_LO_OPEN,
               "std of the normal init of linear and embedding weights"),
    INT_KEY("model.max_position_embeddings", model.max_position_embeddings, "4096", 1, INT_MAX,
            "RoPE table length (at least the sequence length is used)"),
    DOUBLE_KEY("model.rope_theta", model.rope_theta, "10000.0", 0, INFINITY, HYLA_CFG_LO_OPEN,
               "RoPE base of transformer / nsa layers"),
    BOOL_KEY("model.tie_word_embeddings", model.tie_word_embeddings, "false", "LM head shares the embedding matrix"),
    NULLABLE_INT_KEY("model.pad_token_id", model.pad_token_id, -1, 0, INT_MAX,
                     "embedding row without lookup gradient; null = none"),
    INT_KEY("model.bos_token_id", model.bos_token_id, "1", 0, INT_MAX, "beginning-of-sequence token"),
    INT_KEY("model.eos_token_id", model.eos_token_id, "2", 0, INT_MAX, "end-of-sequence token"),
    INT_KEY("model.block_size", model.block_size, "64", 1, INT_MAX, "nsa model: NSA block size"),
    INT_KEY("model.block_counts", model.block_counts, "16", 1, INT_MAX, "nsa model: selected blocks per query"),
    NULLABLE_INT_KEY("model.window_size", model.window_size, -1, 1, INT_MAX,
                     "nsa model: sliding-window branch, in keys including the query (required for nsa)"),
    COMPAT_ENUM_KEY("model.attn_mode", "chunk", ATTN_MODES, "reference GDN kernel choice; hyla picks its own kernels"),
    COMPAT_ENUM_KEY("model.hidden_act", "swish", HIDDEN_ACTS, "MLP activation; hyla implements swish (SiLU) only"),
    COMPAT_BOOL_KEY("model.fuse_cross_entropy", "true", 0, "reference kernel fusion; no effect in hyla"),
    COMPAT_BOOL_KEY("model.fuse_norm", "true", 0, "reference kernel fusion; no effect in hyla"),
    COMPAT_BOOL_KEY("model.fuse_swiglu", "true", 0, "reference kernel fusion; no effect in hyla"),
    COMPAT_BOOL_KEY("model.use_cache", "true", 0, "reference inference cache flag; no effect in training"),
    COMPAT_BOOL_KEY("model.elementwise_affine", "true", HYLA_CFG_FIXED, "RMSNorm weights; hyla implements true only"),
    INCLUDE_KEY("model.config", "a reference JSON config read as this model section (path relative to this "
                                "file's folder); keys beside it override the JSON's"),

    /* model.attn: the attention layers of GDN hybrids (MODEL.md §4-6) */
    SECTION_KEY("model.attn", model.attn.present,
                "attention layers of a GDN model; absent = GDN in every layer"),
    ENUM_KEY("model.attn.attn_type", model.attn.attn_type, "standard", ATTN_TYPES,
             "standard (softmax, window or full), lte or nsa"),
    LIST_KEY("model.attn.layers", model.attn.layers, model.attn.n_layers, "[]", 0, HYLA_MAX_LAYERS - 1,
             "layer indices that use attention, increasing"),
    NULLABLE_INT_KEY("model.attn.num_heads", model.attn.num_heads, 0, 1, INT_MAX, "query heads (required)"),
    NULLABLE_INT_KEY("model.attn.num_kv_heads", model.attn.num_kv_heads, 0, 1, INT_MAX,
                     "key-value heads; null = num_heads"),
    NULLABLE_INT_KEY("model.attn.head_dim", model.attn.head_dim, 0, 1, INT_MAX,
                     "head dim; null = hidden_size / num_heads"),
    NULLABLE_INT_KEY("model.attn.window_size", model.attn.window_size, -1, 1, INT_MAX,
                     "null = full causal (standard only); standard/nsa: w keys incl. the query; lte: w+1 keys"),
    DOUBLE_KEY("model.attn.rope_theta", model.attn.rope_theta, "10000.0", 0, INFINITY, HYLA_CFG_LO_OPEN, "RoPE base"),
    COMPAT_BOOL_KEY("model.attn.qkv_bias", "false", HYLA_CFG_FIXED, "q/k/v projection biases; hyla implements false only"),
    LIST_KEY("model.attn.conv_size", model.attn.conv_size, model.attn.n_convs, "[3, 3, 3]", 1, INT_MAX,
             "lte: router CNN kernel sizes (odd), one per CNN layer"),
    LIST_KEY("model.attn.conv_dilation", model.attn.conv_dilation, model.attn.n_conv_dilation, "[2, 2, 2]", 1,
             INT_MAX, "lte: router CNN dilations, one per CNN layer"),
    DOUBLE_KEY("model.attn.dropout_prob", model.attn.dropout_prob, "0.1", 0, 1, HYLA_CFG_HI_OPEN,
               "lte: dropout on the router CNN inputs (training only)"),
    INT_KEY("model.attn.buffer_size", model.attn.buffer_size, "512", 1, INT_MAX, "lte: R, target kept tokens per head"),
    INT_KEY("model.attn.sink_size", model.attn.sink_size, "4", 0, INT_MAX, "lte: first tokens always kept"),
    COMPAT_ENUM_KEY("model.attn.routing_method", "sigmoid", ROUTING_METHODS, "lte: router score sigma(z) - 0.5"),
    BOOL_KEY("model.attn.routing_grad", model.attn.routing_grad, "true", "lte: router gradient flows into k and v"),
    COMPAT_ENUM_KEY("model.attn.routing_shared", "head", SHARED_PER_HEAD, "lte: one router CNN per kv head"),
    INT_KEY("model.attn.routing_freeze_steps", model.attn.routing_freeze_steps, "0", 0, INT_MAX,
            "lte: router parameters get no gradient up to this step"),
    DOUBLE_KEY("model.attn.l1_lambda_init", model.attn.l1_lambda_init, "1e-09", 0, INFINITY, 0,
               "lte: lambda at the first controller update where kept > tolerate[0] * R"),
    DOUBLE_KEY("model.attn.l1_lambda_min", model.attn.l1_lambda_min, "1e-09", 0, INFINITY, 0,
               "lte: lambda below this becomes 0"),
    DOUBLE_KEY("model.attn.l1_lambda_max", model.attn.l1_lambda_max, "1.0", 0, INFINITY, 0, "lte: lambda cap"),
    DOUBLE_KEY("model.attn.l1_alpha", model.attn.l1_alpha, "1.5", 0, INFINITY, HYLA_CFG_LO_OPEN,
               "lte: lambda growth factor when too many tokens are kept"),
    DOUBLE_KEY("model.attn.l1_alpha_neg", model.attn.l1_alpha_neg, "2.0", 0, INFINITY, HYLA_CFG_LO_OPEN,
               "lte: lambda is divided by this when too few are kept"),
    INT_KEY("model.attn.l1_warmup_steps", model.attn.l1_warmup_steps, "0", 0, INT_MAX,
            "lte: routers disabled (all tokens kept) up to this step"),
    INT_KEY("model.attn.l1_lambda_initial_steps", model.attn.l1_lambda_initial_steps, "0", 0, INT_MAX,
            "lte: lambda stays 0 up to this step"),
    INT_KEY("model.attn.l1_lambda_update_steps", model.attn.l1_lambda_update_steps, "32", 1, INT_MAX,
            "lte: lambda controller interval (steps)"),
    COMPAT_ENUM_KEY("model.attn.l1_lambda_shared", "head", SHARED_PER_HEAD, "lte: one lambda per (layer, kv head)"),
    PAIR_KEY("model.attn.l1_lambda_tolerate", model.attn.l1_lambda_tolerate, "[0.95, 1.0]", 0, INFINITY,
             "lte: kept-token band (lo * R, hi * R) in which lambda holds"),
    INT_KEY("model.attn.block_size", model.attn.block_size, "64", 1, INT_MAX, "nsa: block size"),
    INT_KEY("model.attn.block_counts", model.attn.block_counts, "16", 1, INT_MAX, "nsa: selected blocks per query"),

    /* train: the reference recipe (MODEL.md §8, fla.toml) */
    UINT64_KEY("train.seed", train.seed, "42", "seed of init, dropout and data order"),
    INT_KEY("train.steps", train.steps, "20480", 1, INT_MAX, "optimizer steps"),
    INT_KEY("train.micro_batch", train.micro_batch, "32", 1, INT_MAX, "sequences per micro-batch per worker"),
    INT_KEY("train.grad_accum", train.grad_accum, "1", 1, INT_MAX,
            "micro-batches per optimizer step (derived from train.global_batch when that is set)"),
    INT_KEY("train.global_batch", train.global_batch, "0", 0, INT_MAX,
            "sequences per optimizer step over all workers of a run; 0 = micro_batch x grad_accum x workers"),
    INT_KEY("train.seq_len", train.seq_len, "4096", 2, INT_MAX, "tokens per training sequence"),
    DOUBLE_KEY("train.lr", train.lr, "0.0003", 0, INFINITY, HYLA_CFG_LO_OPEN, "peak learning rate"),
    DOUBLE_KEY("train.lr_min_ratio", train.lr_min_ratio, "0.1", 0, 1, 0, "cosine floor as a fraction of lr"),
    INT_KEY("train.warmup_steps", train.warmup_steps, "1024", 0, INT_MAX, "linear warmup steps"),
    DOUBLE_KEY("train.beta1", train.beta1, "0.9", 0, 1, HYLA_CFG_HI_OPEN, "AdamW beta1"),
    DOUBLE_KEY("train.beta2", train.beta2, "0.95", 0, 1, HYLA_CFG_HI_OPEN, "AdamW beta2"),
    DOUBLE_KEY("train.eps", train.eps, "1e-15", 0, INFINITY, HYLA_CFG_LO_OPEN, "AdamW epsilon"),
    DOUBLE_KEY("train.weight_decay", train.weight_decay, "0.1", 0, INFINITY, 0,
               "AdamW decoupled weight decay, on every parameter"),
    DOUBLE_KEY("train.max_norm", train.max_norm, "1.0", -INFINITY, INFINITY, 0, "global gradient-norm clip; <= 0 disables"),
    INT_KEY("train.log_every", train.log_every, "10", 1, INT_MAX, "progress line every N steps"),
    INT_KEY("train.max_bad_steps", train.max_bad_steps, "10", 1, INT_MAX,
            "this many non-finite steps in a row mark the run diverged"),
    ENUM_KEY("train.precision", train.precision, "fp32", PRECISIONS,
             "matrix products: fp32, or bf16 operands with fp32 accumulation (--backend cuda only)"),
    INT_KEY("train.eval_every", train.eval_every, "0", 0, INT_MAX, "held-out evaluation every N steps; 0 = at the end"),

    /* data */
    ENUM_KEY("data.task", data.task, "tokens", DATA_TASKS,
             "tokens (llm.c shards), mqar (multi-query associative recall) or passkey"),
    STRING_KEY("data.path", data.path, "\"\"", "tokens: a shard file or a directory of shards"),
    STRING_KEY("data.eval_path", data.eval_path, "\"\"", "tokens: held-out shard; \"\" = none"),
    INT_KEY("data.eval_samples", data.eval_samples, "256", 1, INT_MAX, "held-out samples of synthetic tasks"),
    INT_KEY("data.mqar_num_pairs", data.mqar_num_pairs, "16", 1, INT_MAX, "mqar: key-value pairs per sequence"),
    INT_KEY("data.mqar_num_queries", data.mqar_num_queries, "16", 1, INT_MAX,
            "mqar: queries per sequence (at most num_pairs)"),
    INT_KEY("data.mqar_key_vocab", data.mqar_key_vocab, "64", 1, INT_MAX, "mqar: distinct key tokens"),
    INT_KEY("data.mqar_value_vocab", data.mqar_value_vocab, "64", 1, INT_MAX, "mqar: distinct value tokens"),
    INT_KEY("data.passkey_digits", data.passkey_digits, "5", 1, 18, "passkey: digits of the hidden number"),
    DOUBLE_KEY("data.passkey_depth", data.passkey_depth, "-1.0", -1, 1, 0,
               "passkey: position in the filler as a fraction in [0, 1]; -1 = random"),

    /* checkpoint */
    STRING_KEY("checkpoint.dir", checkpoint.dir, "\"\"", "directory of step_NNNNNNNN checkpoints; \"\" = none"),
    INT_KEY("checkpoint.interval", checkpoint.interval, "2048", 0, INT_MAX, "steps between checkpoints; 0 = at the end only"),
    INT_KEY("checkpoint.keep_last", checkpoint.keep_last, "3", 0, INT_MAX, "keep the newest N; 0 = keep all"),
    INT_KEY("checkpoint.keep_every", checkpoint.keep_every, "0", 0, INT_MAX,
            "also keep steps that are multiples of N; 0 = none"),

    /* ledger */
    STRING_KEY("ledger.path", ledger.path, "\"runs/ledger.db\"", "SQLite experiment ledger"),
    INT_KEY("ledger.head_stats_every", ledger.head_stats_every, "10", 0, INT_MAX,
            "record LTE per-head kept / sparsity / lambda every N steps; 0 = never"),

    /* dist */
    INT_KEY("dist.workers_per_run", dist.workers_per_run, "0", 0, INT_MAX,
            "workers that train one run together (FSDP group); 0 = all workers"),
};

const struct hyla_config_key *hyla_config_schema(size_t *count) {
    *count = sizeof SCHEMA / sizeof SCHEMA[0];
    return SCHEMA;
}

const struct hyla_config_key *hyla_config_find_key(const char *path) {
    for (size_t i = 0; i < sizeof SCHEMA / sizeof SCHEMA[0]; i++)
        if (!strcmp(SCHEMA[i].path, path)) return &SCHEMA[i];
    return NULL;
}

void *hyla_config_field(struct hyla_run_config *cfg, const struct hyla_config_key *key) {
    return key->offset == HYLA_CFG_NO_FIELD ? NULL : (char *)cfg + key->offset;
}

const void *hyla_config_field_const(const struct hyla_run_config *cfg, const struct hyla_config_key *key) {
    return key->offset == HYLA_CFG_NO_FIELD ? NULL : (const char *)cfg + key->offset;
}

/* prefix is a proper ancestor of path ("model.attn" of "model.attn.layers"). */
static int is_under(const char *path, const char *prefix) {
    size_t n = strlen(prefix);
    return !strncmp(path, prefix, n) && path[n] == '.';
}

int hyla_config_key_absent(const struct hyla_run_config *cfg, const struct hyla_config_key *key) {
    for (size_t i = 0; i < sizeof SCHEMA / sizeof SCHEMA[0]; i++) {
        const struct hyla_config_key *section = &SCHEMA[i];
        if (section->type != HYLA_CFG_SECTION || !is_under(key->path, section->path)) continue;
        int present;
        memcpy(&present, hyla_config_field_const(cfg, section), sizeof present);
        if (!present) return 1;
    }
    return 0;
}

#define CHOICE_NAME(choices, index) \
    ((index) >= 0 && (size_t)(index) + 1 < sizeof choices / sizeof choices[0] ? choices[index] : "?")

const char *hyla_model_type_name(enum hyla_model_type type) { return CHOICE_NAME(MODEL_TYPES, (int)type); }
const char *hyla_attn_type_name(enum hyla_attn_type type) { return CHOICE_NAME(ATTN_TYPES, (int)type); }
const char *hyla_data_task_name(enum hyla_data_task task) { return CHOICE_NAME(DATA_TASKS, (int)task); }

/* ---- errors ------------------------------------------------------------------------- */



/* Append to a fixed buffer, truncating quietly. */
static void append(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void append(char *buf, size_t size, const char *fmt, ...) {
    size_t used = strlen(buf);
    if (used + 1 >= size) return;
    va_list args;
    va_start(args, fmt);
    vsnprintf(buf + used, size - used, fmt, args);
    va_end(args);
}

/* "<where>: <key>: <message>". */
static int key_fail(struct hyla_config_error *err, const struct config_pos *pos, const char *path,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int key_fail(struct hyla_config_error *err, const struct config_pos *pos, const char *path,
                    const char *fmt, ...) {
    char at[POS_TEXT], message[900];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    if (!pos) return hyla_config_fail(err, "%s: %s", path, message);
    config_pos_format(pos, at, sizeof at);
    return hyla_config_fail(err, "%s: %s: %s", at, path, message);
}

/* ---- scalars (YAML 1.2 core schema) ---------------------------------------------------- */

static void describe_found(const struct config_node *node, char *buf, size_t size) {
    if (node->kind == CONFIG_NODE_MAP) snprintf(buf, size, "a mapping");
    else if (node->kind == CONFIG_NODE_SEQ) snprintf(buf, size, "a sequence of %zu items", node->n_items);
    else if (config_node_is_null(node)) snprintf(buf, size, "null");
    else if (node->quoted) snprintf(buf, size, "the quoted string \"%.200s\"", node->text);
    else snprintf(buf, size, "'%.200s'", node->text);
}

static int type_error(struct hyla_config_error *err, const char *path, const struct config_node *node,
                      const char *expected) {
    char found[256];
    describe_found(node, found, sizeof found);
    return key_fail(err, &node->pos, path, "expected %s, found %s", expected, found);
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* 0, -1 (not an integer) or -2 (too large). */
static int parse_integer(const char *text, long long *out) {
    const char *p = text;
    if (*p == '+' || *p == '-') p++;
    if (!is_digit(*p)) return -1;
    while (is_digit(*p)) p++;
    if (*p) return -1;
    errno = 0;
    *out = strtoll(text, NULL, 10);
    return errno == ERANGE ? -2 : 0;
}

/* YAML 1.2 core float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?, finite. */
static int parse_number(const char *text, double *out) {
    const char *p = text;
    int digits = 0;
    if (*p == '+' || *p == '-') p++;
    for (; is_digit(*p); p++) digits++;
    if (*p == '.')
        for (p++; is_digit(*p); p++) digits++;
    if (!digits) return -1;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!is_digit(*p)) return -1;
        while (is_digit(*p)) p++;
    }
    if (*p) return -1;
    *out = strtod(text, NULL);
    return isfinite(*out) ? 0 : -2;
}

static int parse_bool(const struct config_node *node, int *out) {
    if (node->kind != CONFIG_NODE_SCALAR || node->quoted) return -1;
    const char *t = node->text;
    if (!strcmp(t, "true") || !strcmp(t, "True") || !strcmp(t, "TRUE")) *out = 1;
    else if (!strcmp(t, "false") || !strcmp(t, "False") || !strcmp(t, "FALSE")) *out = 0;
    else return -1;
    return 0;
}

/* ---- ranges -------------------------------------------------------------------------- */

static int bounded_above(const struct hyla_config_key *key) {
    return isfinite(key->hi) && !(key->type != HYLA_CFG_DOUBLE && key->type != HYLA_CFG_DOUBLE_PAIR &&
                                  key->hi >= INT_MAX);
}

static int in_range(const struct hyla_config_key *key, double v) {
    int lo_ok = key->flags & HYLA_CFG_LO_OPEN ? v > key->lo : v >= key->lo;
    int hi_ok = key->flags & HYLA_CFG_HI_OPEN ? v < key->hi : v <= key->hi;
    return lo_ok && hi_ok;
}

void hyla_config_range_text(const struct hyla_config_key *key, char *buf, size_t size) {
    int lo_open = key->flags & HYLA_CFG_LO_OPEN, hi_open = key->flags & HYLA_CFG_HI_OPEN;
    if (isfinite(key->lo) && bounded_above(key))
        snprintf(buf, size, "in %c%g, %g%c", lo_open ? '(' : '[', key->lo, key->hi, hi_open ? ')' : ']');
    else if (isfinite(key->lo)) snprintf(buf, size, "%s %g", lo_open ? ">" : ">=", key->lo);
    else if (bounded_above(key)) snprintf(buf, size, "%s %g", hi_open ? "<" : "<=", key->hi);
    else if (size) buf[0] = '\0';
}

static int range_error(struct hyla_config_error *err, const struct hyla_config_key *key, const char *what,
                       const struct config_node *node) {
    char range[96];
    hyla_config_range_text(key, range, sizeof range);
    return key_fail(err, &node->pos, what, "%s is out of range: must be %s", node->text, range);
}

/* An int item of key (what: the key, or "key[i]" for list items). */
static int read_int(struct hyla_config_error *err, const struct hyla_config_key *key, const char *what,
                    const struct config_node *node, int *out) {
    long long v = 0;
    int rc = node->kind == CONFIG_NODE_SCALAR && !node->quoted ? parse_integer(node->text, &v) : -1;
    if (rc == -1) return type_error(err, what, node, "an integer");
    if (rc == -2 || v < INT_MIN || v > INT_MAX)
        return key_fail(err, &node->pos, what, "%s does not fit in a 32-bit integer", node->text);
    if (!in_range(key, (double)v)) return range_error(err, key, what, node);
    *out = (int)v;
    return 0;
}

static int read_double(struct hyla_config_error *err, const struct hyla_config_key *key, const char *what,
                       const struct config_node *node, double *out) {
    int rc = node->kind == CONFIG_NODE_SCALAR && !node->quoted ? parse_number(node->text, out) : -1;
    if (rc == -1) return type_error(err, what, node, "a number");
    if (rc == -2) return key_fail(err, &node->pos, what, "%s is not a finite number", node->text);
    if (!in_range(key, *out)) return range_error(err, key, what, node);
    return 0;
}

/* ---- binding one value ---------------------------------------------------------------- */

static int choice_index(const char *const *choices, const char *text) {
    for (int i = 0; choices[i]; i++)
        if (!strcmp(choices[i], text)) return i;
    return -1;
}

static void join_choices(const char *const *choices, const char *separator, char *buf, size_t size) {
    buf[0] = '\0';
    for (int i = 0; choices[i]; i++) append(buf, size, "%s%s", i ? separator : "", choices[i]);
}

static int bind_enum(struct hyla_config_error *err, const struct hyla_config_key *key,
                     const struct config_node *node, void *field) {
    if (node->kind != CONFIG_NODE_SCALAR || config_node_is_null(node)) {
        char names[512];
        join_choices(key->choices, ", ", names, sizeof names);
        char expected[600];
        snprintf(expected, sizeof expected, "one of: %s", names);
        return type_error(err, key->path, node, expected);
    }
    int index = choice_index(key->choices, node->text);
    if (index < 0) {
        char names[512];
        if (key->flags & HYLA_CFG_FIXED) {
            join_choices(key->choices, "' or '", names, sizeof names);
            return key_fail(err, &node->pos, key->path,
                            "'%.200s' is not supported: hyla implements only '%s' (the reference configs' value)",
                            node->text, names);
        }
        join_choices(key->choices, ", ", names, sizeof names);
        return key_fail(err, &node->pos, key->path, "'%.200s' is not one of: %s", node->text, names);
    }
    if (field) memcpy(field, &index, sizeof index);
    return 0;
}

static int bind_bool(struct hyla_config_error *err, const struct hyla_config_key *key,
                     const struct config_node *node, void *field) {
    int v;
    if (parse_bool(node, &v)) return type_error(err, key->path, node, "true or false");
    if (key->flags & HYLA_CFG_FIXED && v != !strcmp(key->default_text, "true"))
        return key_fail(err, &node->pos, key->path,
                        "%s is not supported: hyla implements only %s (the reference configs' value)",
                        v ? "true" : "false", key->default_text);
    if (field) memcpy(field, &v, sizeof v);
    return 0;
}

static int bind_string(struct hyla_config_error *err, const struct hyla_config_key *key,
                       const struct config_node *node, char *field) {
    if (node->kind != CONFIG_NODE_SCALAR) return type_error(err, key->path, node, "a string");
    const char *text = config_node_is_null(node) ? "" : node->text;
    size_t n = strlen(text);
    if (n >= key->capacity)
        return key_fail(err, &node->pos, key->path, "the value is %zu characters long; at most %zu are supported", n,
                        key->capacity - 1);
    memset(field, 0, key->capacity);
    memcpy(field, text, n);
    return 0;
}

static int bind_int_list(struct hyla_config_error *err, const struct hyla_config_key *key,
                         const struct config_node *node, struct hyla_run_config *cfg) {
    if (node->kind != CONFIG_NODE_SEQ) return type_error(err, key->path, node, "a list of integers such as [1, 3]");
    if (node->n_items > key->capacity)
        return key_fail(err, &node->pos, key->path, "%zu entries given; at most %zu are supported", node->n_items,
                        key->capacity);
    int values[HYLA_MAX_LAYERS] = {0};
    for (size_t i = 0; i < node->n_items; i++) {
        char what[KEY_MAX + 16];
        snprintf(what, sizeof what, "%s[%zu]", key->path, i);
        if (read_int(err, key, what, node->items[i], &values[i])) return -1;
    }
    int count = (int)node->n_items;
    memset((char *)cfg + key->offset, 0, key->capacity * sizeof(int));
    memcpy((char *)cfg + key->offset, values, (size_t)count * sizeof(int));
    memcpy((char *)cfg + key->count_offset, &count, sizeof count);
    return 0;
}

static int bind_double_pair(struct hyla_config_error *err, const struct hyla_config_key *key,
                            const struct config_node *node, void *field) {
    if (node->kind != CONFIG_NODE_SEQ || node->n_items != 2)
        return type_error(err, key->path, node, "a pair [lo, hi] of numbers");
    double pair[2];
    for (int i = 0; i < 2; i++) {
        char what[KEY_MAX + 16];
        snprintf(what, sizeof what, "%s[%d]", key->path, i);
        if (read_double(err, key, what, node->items[i], &pair[i])) return -1;
    }
    memcpy(field, pair, sizeof pair);
    return 0;
}

static int bind_value(struct hyla_run_config *cfg, const struct hyla_config_key *key, const struct config_node *node,
                      struct hyla_config_error *err) {
    void *field = hyla_config_field(cfg, key);
    switch (key->type) {
    case HYLA_CFG_INT: {
        int v = key->null_value;
        if (!(key->flags & HYLA_CFG_NULLABLE && config_node_is_null(node)) && read_int(err, key, key->path, node, &v))
            return -1;
        if (field) memcpy(field, &v, sizeof v);
        return 0;
    }
    case HYLA_CFG_UINT64: {
        const char *t = node->text;
        if (node->kind != CONFIG_NODE_SCALAR || node->quoted || !is_digit(t[0]))
            return type_error(err, key->path, node, "a non-negative integer");
        for (const char *p = t; *p; p++)
            if (!is_digit(*p)) return type_error(err, key->path, node, "a non-negative integer");
        errno = 0;
        unsigned long long v = strtoull(t, NULL, 10);
        if (errno == ERANGE) return key_fail(err, &node->pos, key->path, "%s does not fit in 64 bits", t);
        uint64_t u = (uint64_t)v;
        if (field) memcpy(field, &u, sizeof u);
        return 0;
    }
    case HYLA_CFG_DOUBLE: {
        double v;
        if (read_double(err, key, key->path, node, &v)) return -1;
        if (field) memcpy(field, &v, sizeof v);
        return 0;
    }
    case HYLA_CFG_BOOL: return bind_bool(err, key, node, field);
    case HYLA_CFG_STRING: return bind_string(err, key, node, field);
    case HYLA_CFG_ENUM: return bind_enum(err, key, node, field);
    case HYLA_CFG_INT_LIST: return bind_int_list(err, key, node, cfg);
    case HYLA_CFG_DOUBLE_PAIR: return bind_double_pair(err, key, node, field);
    case HYLA_CFG_SECTION:
    case HYLA_CFG_INCLUDE: break;
    }
    return hyla_config_fail(err, "internal error: %s cannot be bound as a value", key->path);
}

/* ---- binding the tree ----------------------------------------------------------------- */

/* Whether some key lies below path (path names a section). */
static int has_children(const char *path) {
    for (size_t i = 0; i < sizeof SCHEMA / sizeof SCHEMA[0]; i++)
        if (is_under(SCHEMA[i].path, path)) return 1;
    return 0;
}

/* The names one level below prefix ("" = top level), in table order, without repeats. */
static int child_names(const char *prefix, char names[][64], int max_names) {
    int count = 0;
    size_t skip = prefix[0] ? strlen(prefix) + 1 : 0;
    for (size_t i = 0; i < sizeof SCHEMA / sizeof SCHEMA[0]; i++) {
        const char *path = SCHEMA[i].path;
        if (prefix[0] && !is_under(path, prefix)) continue;
        const char *name = path + skip;
        size_t n = strcspn(name, ".");
        if (n >= 64) continue;
        int seen = 0;
        for (int j = 0; j < count && !seen; j++) seen = strlen(names[j]) == n && !strncmp(names[j], name, n);
        if (seen || count == max_names) continue;
        memcpy(names[count], name, n);
        names[count][n] = '\0';
        count++;
    }
    return count;
}

static size_t edit_distance(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b), row[64];
    if (na >= 64 || nb >= 64) return 64;
    for (size_t j = 0; j <= nb; j++) row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t best = diagonal + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diagonal = up;
        }
    }
    return row[nb];
}

static int unknown_key(struct hyla_config_error *err, const char *prefix, const struct config_entry *entry) {
    char names[128][64], list[700] = "", hint[128] = "", at[POS_TEXT];
    int count = child_names(prefix, names, 128);
    size_t best = 3;
    for (int i = 0; i < count; i++) {
        append(list, sizeof list, "%s%s", i ? ", " : "", names[i]);
        size_t d = edit_distance(entry->key, names[i]);
        if (d < best && d < strlen(entry->key)) {
            best = d;
            snprintf(hint, sizeof hint, " (did you mean '%s'?)", names[i]);
        }
    }
    config_pos_format(&entry->key_pos, at, sizeof at);
    if (!prefix[0])
        return hyla_config_fail(err, "%s: unknown key '%s'%s; valid top-level keys: %s", at, entry->key, hint, list);
    return hyla_config_fail(err, "%s: unknown key '%s.%s'%s; valid keys in %s: %s", at, prefix, entry->key, hint, prefix, list);
}

static int bind_map(struct hyla_run_config *cfg, const struct config_node *map, const char *prefix,
                    struct hyla_config_error *err) {
    for (size_t i = 0; i < map->n_entries; i++) {
        const struct config_entry *entry = &map->entries[i];
        char path[KEY_MAX];
        int n = snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", entry->key);
        const struct hyla_config_key *key = n < KEY_MAX ? hyla_config_find_key(path) : NULL;
        if (key && key->type == HYLA_CFG_INCLUDE)
            return key_fail(err, &entry->key_pos, path,
                            "a JSON config can be named once, in a YAML file's model section, not inside the JSON");
        if (key && key->type != HYLA_CFG_SECTION) {
            if (bind_value(cfg, key, entry->value, err)) return -1;
            continue;
        }
        if (n >= KEY_MAX || !has_children(path)) return unknown_key(err, prefix, entry);
        if (config_node_is_null(entry->value)) continue; /* "train:" with nothing under it */
        if (entry->value->kind != CONFIG_NODE_MAP)
            return type_error(err, path, entry->value, "a mapping (a section of key: value lines)");
        if (key) { /* a section whose presence matters */
            int present = 1;
            memcpy(hyla_config_field(cfg, key), &present, sizeof present);
        }
        if (bind_map(cfg, entry->value, path, err)) return -1;
    }
    return 0;
}

/* ---- defaults ------------------------------------------------------------------------- */

void hyla_config_defaults(struct hyla_run_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < sizeof SCHEMA / sizeof SCHEMA[0]; i++) {
        const struct hyla_config_key *key = &SCHEMA[i];
        if (!key->default_text) continue;
        /* Defaults go through the same parser and checks as user values: the table cannot
         * hold a default that a config file could not. Compatibility keys are checked too. */
        struct hyla_config_error err;
        struct config_node *node = NULL;
        if (config_node_parse(key->default_text, key->path, &node, &err) || bind_value(cfg, key, node, &err))
            hyla_die("internal error: the schema default of %s is invalid: %s", key->path, err.message);
        config_node_free(node);
    }
}

/* ---- cross-field checks --------------------------------------------------------------- */

struct checker {
    const struct hyla_run_config *cfg;
    const struct config_tree *tree; /* for positions; may be NULL */
    struct hyla_config_error *err;
};

/* Blame key, at its position in the tree (or its nearest written ancestor's). */
static int bad(const struct checker *c, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int bad(const struct checker *c, const char *key, const char *fmt, ...) {
    char message[900], path[KEY_MAX];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    const struct config_pos *pos = NULL;
    snprintf(path, sizeof path, "%s", key);
    while (c->tree && !pos && path[0]) {
        pos = config_tree_key_pos(c->tree, path);
        char *dot = strrchr(path, '.');
        if (dot) *dot = '\0';
        else path[0] = '\0';
    }
    return key_fail(c->err, pos, key, "%s", message);
}

/* head_dim, or hidden_size / heads for null. */
static int resolve_head_dim(const struct checker *c, const char *dim_key, int head_dim, const char *heads_key,
                            int heads, int *out) {
    int hidden = c->cfg->model.hidden_size;
    if (head_dim > 0) {
        *out = head_dim;
        return 0;
    }
    if (hidden % heads)
        return bad(c, dim_key, "null means model.hidden_size / %s, but %d is not divisible by %d; give %s", heads_key,
                   hidden, heads, dim_key);
    *out = hidden / heads;
    return 0;
}

static int check_kv_heads(const struct checker *c, const char *kv_key, int kv, const char *heads_key, int heads) {
    if (kv > 0 && heads % kv)
        return bad(c, kv_key, "%s = %d is not a multiple of %s = %d (each kv head serves a whole group of query heads)",
                   heads_key, heads, kv_key, kv);
    return 0;
}

static int check_lte(const struct checker *c, const struct hyla_attn_config *a, int head_dim) {
    if (a->window_size < 0)
        return bad(c, "model.attn.window_size", "lte needs a finite local window (768 in the reference); "
                                                "null (full attention) is not supported");
    if (a->n_convs < 1) return bad(c, "model.attn.conv_size", "lte needs at least one router CNN layer, e.g. [3, 3, 3]");
    if (a->n_conv_dilation != a->n_convs)
        return bad(c, "model.attn.conv_dilation",
                   "%d entries, but model.attn.conv_size has %d; give one dilation per router CNN layer",
                   a->n_conv_dilation, a->n_convs);
    for (int i = 0; i < a->n_convs; i++)
        if (a->conv_size[i] % 2 == 0)
            return bad(c, "model.attn.conv_size", "kernel size %d is even; the router CNN pads 'same' on both "
                                                  "sides, which needs odd kernel sizes", a->conv_size[i]);
    if ((2 * head_dim) % (1 << a->n_convs))
        return bad(c, "model.attn.conv_size", "the router CNN halves its 2 * head_dim = %d channels in each of its %d "
                                              "layers, so 2 * head_dim must be divisible by %d",
                   2 * head_dim, a->n_convs, 1 << a->n_convs);
    if (a->sink_size > a->buffer_size)
        return bad(c, "model.attn.sink_size", "%d sinks exceed model.attn.buffer_size = %d (sinks count towards the "
                                              "buffer)", a->sink_size, a->buffer_size);
    if (a->l1_lambda_min > a->l1_lambda_max)
        return bad(c, "model.attn.l1_lambda_min", "%g exceeds model.attn.l1_lambda_max = %g", a->l1_lambda_min,
                   a->l1_lambda_max);
    if (a->l1_lambda_tolerate[0] > a->l1_lambda_tolerate[1])
        return bad(c, "model.attn.l1_lambda_tolerate", "the band [%g, %g] needs lo <= hi", a->l1_lambda_tolerate[0],
                   a->l1_lambda_tolerate[1]);
    return 0;
}

static int check_attn(const struct checker *c) {
    const struct hyla_model_config *m = &c->cfg->model;
    const struct hyla_attn_config *a = &m->attn;
    if (a->n_layers < 1)
        return bad(c, "model.attn.layers", "the attn section needs at least one layer index, e.g. [1, 3, 5]");
    for (int i = 0; i < a->n_layers; i++) {
        if (a->layers[i] >= m->num_hidden_layers)
            return bad(c, "model.attn.layers", "layer %d does not exist: model.num_hidden_layers = %d, so layers are "
                                               "0..%d", a->layers[i], m->num_hidden_layers, m->num_hidden_layers - 1);
        if (i > 0 && a->layers[i] <= a->layers[i - 1])
            return bad(c, "model.attn.layers", "must increase without repeats; found %d after %d", a->layers[i],
                       a->layers[i - 1]);
    }
    if (a->num_heads < 1)
        return bad(c, "model.attn.num_heads", "required when model.attn is present (query heads of the attention "
                                              "layers)");
    if (check_kv_heads(c, "model.attn.num_kv_heads", a->num_kv_heads, "model.attn.num_heads", a->num_heads)) return -1;
    int head_dim = 0;
    if (resolve_head_dim(c, "model.attn.head_dim", a->head_dim, "model.attn.num_heads", a->num_heads, &head_dim))
        return -1;
    if (a->attn_type == HYLA_ATTN_LTE) return check_lte(c, a, head_dim);
    if (a->attn_type == HYLA_ATTN_NSA && a->window_size < 0)
        return bad(c, "model.attn.window_size", "nsa layers need the width of their sliding-window branch (512 in the "
                                                "reference); null is not supported");
    return 0;
}

static int check_token_id(const struct checker *c, const char *key, int id) {
    if (id >= c->cfg->model.vocab_size)
        return bad(c, key, "token %d is outside the vocabulary (model.vocab_size = %d)", id, c->cfg->model.vocab_size);
    return 0;
}

static int check_model(const struct checker *c) {
    const struct hyla_model_config *m = &c->cfg->model;
    const char *type = hyla_model_type_name(m->model_type);
    int gdn = m->model_type == HYLA_MODEL_GATED_DELTANET || m->model_type == HYLA_MODEL_HYBRID_GATED_DELTANET;
    int head_dim = 0;
    if (resolve_head_dim(c, "model.head_dim", m->head_dim, "model.num_heads", m->num_heads, &head_dim)) return -1;
    if (!gdn && check_kv_heads(c, "model.num_kv_heads", m->num_kv_heads, "model.num_heads", m->num_heads)) return -1;
    if (check_token_id(c, "model.bos_token_id", m->bos_token_id) ||
        check_token_id(c, "model.eos_token_id", m->eos_token_id) ||
        (m->pad_token_id >= 0 && check_token_id(c, "model.pad_token_id", m->pad_token_id)))
        return -1;
    if (m->model_type == HYLA_MODEL_NSA && m->window_size < 0)
        return bad(c, "model.window_size", "model_type nsa needs the width of its sliding-window branch (512 in the "
                                           "reference); null is not supported");
    if (m->model_type != HYLA_MODEL_NSA && m->window_size >= 0)
        return bad(c, "model.window_size", "only model_type nsa has a top-level window; %s",
                   gdn ? "windowed attention layers of a GDN model take model.attn.window_size"
                       : "hyla's transformer uses full causal attention (a windowed transformer is not implemented)");
    if (!gdn && m->attn.present)
        return bad(c, "model.attn", "model_type %s has attention in every layer and takes no attn section; its heads, "
                                    "window and blocks sit at the top level of model", type);
    if (m->model_type == HYLA_MODEL_HYBRID_GATED_DELTANET) {
        if (!m->attn.present)
            return bad(c, "model.attn", "model_type hybrid_gated_deltanet needs an attn section with attn_type lte or "
                                        "nsa; for GDN in every layer use model_type gated_deltanet");
        if (m->attn.attn_type == HYLA_ATTN_STANDARD)
            return bad(c, "model.attn.attn_type", "hybrid_gated_deltanet mixes GDN with lte or nsa layers; for standard "
                                                  "attention layers use model_type gated_deltanet");
    }
    if (m->model_type == HYLA_MODEL_GATED_DELTANET && m->attn.present && m->attn.attn_type != HYLA_ATTN_STANDARD)
        return bad(c, "model.attn.attn_type", "%s layers need model_type hybrid_gated_deltanet (gated_deltanet takes "
                                              "standard attention layers only)", hyla_attn_type_name(m->attn.attn_type));
    return m->attn.present ? check_attn(c) : 0;
}

static int check_data(const struct checker *c) {
    const struct hyla_data_config *d = &c->cfg->data;
    if (d->passkey_depth < 0 && d->passkey_depth != -1)
        return bad(c, "data.passkey_depth", "%g is neither -1 (random) nor a fraction in [0, 1]", d->passkey_depth);
    if (d->task != HYLA_DATA_MQAR) return 0;
    if (d->mqar_num_queries > d->mqar_num_pairs)
        return bad(c, "data.mqar_num_queries", "%d queries exceed the %d stored pairs (data.mqar_num_pairs); each "
                                               "query asks for a distinct stored key", d->mqar_num_queries,
                   d->mqar_num_pairs);
    if (d->mqar_num_pairs > d->mqar_key_vocab)
        return bad(c, "data.mqar_num_pairs", "%d pairs need as many distinct keys, but data.mqar_key_vocab = %d",
                   d->mqar_num_pairs, d->mqar_key_vocab);
    /* The token layout (and so the vocab_size and seq_len it needs) is the task's: hyla_mqar_init checks it. */
    return 0;
}

static int check_config(const struct hyla_run_config *cfg, const struct config_tree *tree,
                        struct hyla_config_error *err) {
    struct checker c = {cfg, tree, err};
    return check_model(&c) || check_data(&c) ? -1 : 0;
}

int hyla_config_validate(const struct hyla_run_config *cfg, struct hyla_config_error *err) {
    return check_config(cfg, NULL, err);
}

/* ---- loading -------------------------------------------------------------------------- */

/* Read model.config's JSON file under the model section (keys beside it win). */
static int resolve_model_include(struct config_tree *tree, struct hyla_config_error *err) {
    const struct config_node *include = config_tree_get(tree, "model.config");
    if (!include) return 0;
    if (include->kind != CONFIG_NODE_SCALAR || config_node_is_null(include))
        return type_error(err, "model.config", include, "a JSON file name");
    /* Relative to the folder of the file that names it; --set paths are relative to the working directory. */
    char path[2 * HYLA_PATH_MAX];
    const char *file = include->pos.origin == CONFIG_FROM_SET ? NULL : include->pos.file;
    const char *slash = file ? strrchr(file, '/') : NULL;
    int n;
    if (include->text[0] != '/' && slash)
        n = snprintf(path, sizeof path, "%.*s/%s", (int)(slash - file), file, include->text);
    else
        n = snprintf(path, sizeof path, "%s", include->text);
    if (n < 0 || (size_t)n >= sizeof path)
        return key_fail(err, &include->pos, "model.config", "the path is too long");

    struct config_tree *json = NULL;
    struct hyla_config_error inner;
    if (config_tree_load_json(path, &json, &inner))
        return key_fail(err, &include->pos, "model.config", "%s", inner.message);
    config_node_free(config_tree_take(tree, "model.config"));
    struct config_node *base = json->root;
    json->root = NULL;
    config_tree_free(json);
    return config_tree_underlay(tree, "model", base, err);
}

int hyla_config_from_tree(struct hyla_run_config *cfg, struct config_tree *tree, struct hyla_config_error *err) {
    if (resolve_model_include(tree, err)) return -1;
    const struct config_node *root = tree->root;
    if (root->kind != CONFIG_NODE_MAP && !config_node_is_null(root)) {
        char names[16][64], list[512] = "";
        int count = child_names("", names, 16);
        for (int i = 0; i < count; i++) append(list, sizeof list, "%s%s", i ? ", " : "", names[i]);
        char expected[600];
        snprintf(expected, sizeof expected, "a mapping with the sections %s", list);
        return type_error(err, "config", root, expected);
    }
    struct hyla_run_config *bound = hyla_malloc(sizeof *bound);
    hyla_config_defaults(bound);
    int rc = root->kind == CONFIG_NODE_MAP ? bind_map(bound, root, "", err) : 0;
    if (rc == 0) rc = check_config(bound, tree, err);
    if (rc == 0) *cfg = *bound;
    free(bound);
    return rc;
}

int hyla_config_apply_override(struct config_tree *tree, const char *key_equals_value,
                               struct hyla_config_error *err) {
    const char *equals = strchr(key_equals_value, '=');
    if (!equals || equals == key_equals_value)
        return hyla_config_fail(err, "--set '%s': expected key=value, e.g. --set train.lr=1e-3 or --set model.attn.layers=[1,3]",
                    key_equals_value);
    size_t n = (size_t)(equals - key_equals_value);
    if (n >= KEY_MAX) return hyla_config_fail(err, "--set '%.100s...': the key is too long", key_equals_value);
    char key[KEY_MAX];
    memcpy(key, key_equals_value, n);
    key[n] = '\0';
    return config_tree_set(tree, key, equals + 1, err);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* A reference JSON model config as the model section of a new tree. */
static int tree_from_model_json(const char *json_path, struct config_tree **out, struct hyla_config_error *err) {
    struct config_tree *json;
    if (config_tree_load_json(json_path, &json, err)) return -1;
    struct config_tree *tree = config_tree_new();
    struct config_node *base = json->root;
    json->root = NULL;
    config_tree_free(json);
    if (config_tree_underlay(tree, "model", base, err)) {
        config_tree_free(tree);
        return -1;
    }
    *out = tree;
    return 0;
}

/* "configs/models/gdn_lte_0.4B.yaml" -> "gdn_lte_0.4B". */
static void file_stem(const char *path, char *buf, size_t size) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    if (n >= size) n = size - 1;
    memcpy(buf, base, n);
    buf[n] = '\0';
}

int hyla_config_load(struct hyla_run_config *cfg, const char *yaml_path, const char *const *overrides,
                     int n_overrides, struct hyla_config_error *err) {
    struct config_tree *tree = NULL;
    int rc;
    if (!yaml_path) {
        tree = config_tree_new();
        rc = 0;
    } else if (ends_with(yaml_path, ".json")) {
        rc = tree_from_model_json(yaml_path, &tree, err);
    } else {
        rc = config_tree_load_yaml(yaml_path, &tree, err);
    }
    for (int i = 0; rc == 0 && i < n_overrides; i++) rc = hyla_config_apply_override(tree, overrides[i], err);
    struct hyla_run_config *loaded = hyla_malloc(sizeof *loaded);
    if (rc == 0) rc = hyla_config_from_tree(loaded, tree, err);
    if (rc == 0 && yaml_path && !config_tree_get(tree, "name")) file_stem(yaml_path, loaded->name, sizeof loaded->name);
    if (rc == 0) *cfg = *loaded;
    free(loaded);
    config_tree_free(tree);
    return rc;
}

int hyla_config_load_model_json(struct hyla_model_config *model, const char *json_path,
                                struct hyla_config_error *err) {
    struct config_tree *tree;
    if (tree_from_model_json(json_path, &tree, err)) return -1;
    struct hyla_run_config *cfg = hyla_malloc(sizeof *cfg);
    int rc = hyla_config_from_tree(cfg, tree, err);
    if (rc == 0) *model = cfg->model;
    free(cfg);
    config_tree_free(tree);
    return rc;
}
