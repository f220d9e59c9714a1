/* The resolved configuration of one run: plain data, filled by experiments/ (YAML, the
 * reference's JSON configs, --set overrides) and read by every other part of hyla.
 * Field names follow the config keys: model.attn.window_size is cfg.model.attn.window_size.
 * Keys of the reference implementation's configs keep their names and meanings. */
#ifndef HYLA_RUN_CONFIG_H
#define HYLA_RUN_CONFIG_H

#include <stdint.h>

#define HYLA_MAX_LAYERS 128
#define HYLA_MAX_CONVS 4
#define HYLA_NAME_MAX 64
#define HYLA_PATH_MAX 1024

/* model.model_type */
enum hyla_model_type {
    HYLA_MODEL_GATED_DELTANET,        /* GDN everywhere, or standard attention in attn.layers */
    HYLA_MODEL_HYBRID_GATED_DELTANET, /* GDN + LTE or NSA in attn.layers, with the residual rescale */
    HYLA_MODEL_TRANSFORMER,           /* standard attention in every layer */
    HYLA_MODEL_NSA,                   /* NSA in every layer */
};

/* model.attn.attn_type; "standard" when absent (softmax attention, window or full). */
enum hyla_attn_type { HYLA_ATTN_STANDARD, HYLA_ATTN_LTE, HYLA_ATTN_NSA };

struct hyla_attn_config {
    int present;                       /* the attn section exists */
    enum hyla_attn_type attn_type;
    int layers[HYLA_MAX_LAYERS];       /* layer indices that use attention */
    int n_layers;
    int num_heads;
    int num_kv_heads;                  /* 0 = num_heads */
    int head_dim;                      /* 0 = hidden_size / num_heads */
    int window_size;                   /* -1 = null (full causal); convention per attn_type, MODEL.md §10.3 */
    double rope_theta;
    /* LTE */
    int conv_size[HYLA_MAX_CONVS];     /* router CNN kernel sizes */
    int conv_dilation[HYLA_MAX_CONVS];
    int n_convs;                       /* entries of conv_size */
    int n_conv_dilation;               /* entries of conv_dilation (validated equal to n_convs) */
    double dropout_prob;
    int buffer_size;                   /* R: target kept tokens per head */
    int sink_size;
    int routing_grad;                  /* router gradient flows into k and v */
    int routing_freeze_steps;
    double l1_lambda_init, l1_lambda_min, l1_lambda_max, l1_alpha, l1_alpha_neg;
    int l1_warmup_steps, l1_lambda_initial_steps, l1_lambda_update_steps;
    double l1_lambda_tolerate[2];      /* band (lo*R, hi*R) */
    /* NSA */
    int block_size, block_counts;
};

struct hyla_model_config {
    enum hyla_model_type model_type;
    int hidden_size;
    int num_hidden_layers;
    int num_heads;                     /* GDN heads (GDN models) or attention heads (transformer, nsa) */
    int num_kv_heads;                  /* transformer / nsa; 0 = num_heads */
    int head_dim;                      /* GDN d_k (GDN models); attention d (transformer/nsa); 0 = D/H */
    int expand_v;
    int conv_size;                     /* GDN short convolution width */
    int use_short_conv, use_gate;
    double hidden_ratio;
    int intermediate_size;             /* 0 = null: 256 * ceil(floor(D * ratio * 2/3) / 256) */
    int vocab_size;
    double norm_eps;
    double initializer_range;
    int max_position_embeddings;
    double rope_theta;
    int tie_word_embeddings;
    int pad_token_id;                  /* -1 = none */
    int bos_token_id, eos_token_id;
    /* NSA model (model_type nsa): its settings sit at the top level of the reference config */
    int block_size, block_counts, window_size;
    struct hyla_attn_config attn;
};

/* train.precision: fp32 everywhere, or bf16 operands in the GPU's matrix products with fp32
 * accumulation and fp32 master weights, gradients and optimizer state (docs/cuda.md). */
enum hyla_precision { HYLA_PRECISION_FP32, HYLA_PRECISION_BF16 };

struct hyla_train_config {
    uint64_t seed;
    int steps;                         /* optimizer steps */
    int micro_batch;                   /* sequences per micro-batch per worker */
    int grad_accum;                    /* micro-batches per optimizer step */
    int global_batch;                  /* sequences per step over the run's workers; 0 = derived */
    int seq_len;
    double lr, lr_min_ratio;           /* peak lr; cosine floor = lr_min_ratio * lr */
    int warmup_steps;
    double beta1, beta2, eps, weight_decay;
    double max_norm;                   /* global-norm clip; <= 0 disables */
    int log_every;                     /* progress line every N steps */
    int max_bad_steps;                 /* this many non-finite steps in a row = diverged */
    int eval_every;                    /* held-out evaluation every N steps (0 = only at the end) */
    enum hyla_precision precision;     /* matrix products: fp32, or bf16 operands (GPU only) */
};

/* data.task */
enum hyla_data_task { HYLA_DATA_TOKENS, HYLA_DATA_MQAR, HYLA_DATA_PASSKEY };

struct hyla_data_config {
    enum hyla_data_task task;
    char path[HYLA_PATH_MAX];          /* tokens: a shard file or a directory of shards */
    char eval_path[HYLA_PATH_MAX];     /* tokens: held-out shard ("" = none) */
    int eval_samples;                  /* held-out samples for synthetic tasks */
    /* mqar: N key-value pairs, then num_queries queries of shuffled keys */
    int mqar_num_pairs, mqar_num_queries, mqar_key_vocab, mqar_value_vocab;
    /* passkey: a digits-long number hidden at depth (fraction of the filler, -1 = random) */
    int passkey_digits;
    double passkey_depth;
};

struct hyla_checkpoint_config {
    char dir[HYLA_PATH_MAX];           /* "" = no checkpoints */
    int interval;                      /* steps; 0 = only at the end */
    int keep_last, keep_every;
};

struct hyla_ledger_config {
    char path[HYLA_PATH_MAX];
    int head_stats_every;
};

struct hyla_dist_config {
    int workers_per_run;               /* 0 = all workers */
};

struct hyla_run_config {
    char name[HYLA_NAME_MAX];
    struct hyla_model_config model;
    struct hyla_train_config train;
    struct hyla_data_config data;
    struct hyla_checkpoint_config checkpoint;
    struct hyla_ledger_config ledger;
    struct hyla_dist_config dist;
};

/* Derived values, from one place. */
int hyla_intermediate_size(const struct hyla_model_config *m);
int hyla_layer_uses_attention(const struct hyla_model_config *m, int layer);

#endif
