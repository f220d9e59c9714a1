/* `hyla bench kernels`: GFLOP/s of the CPU matrix product and time per call of every op
 * at a tiny model's shapes, as a table or as JSON. Speed is measured here, never in tests. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "bench_gpu.h"
#include "bench_checkpoint.h"
#include "bench_ledger.h"
#include "common/hyla_error.h"
#include "common/rng.h"
#include "common/timer.h"
#include "kernels/backend.h"

/* The tiny model's shapes: a byte-level model of width 128 on 512-token sequences. */
enum {
    B = 2, L = 512, D = 128, V = 256, INTER = 384,
    GDN_H = 2, GDN_DK = 64,                  /* GDN heads x head dim */
    ATT_HQ = 4, ATT_HKV = 2, ATT_D = 32,      /* attention (GQA 2) */
    LTE_WINDOW = 64, NSA_BLOCK = 16, NSA_SELECT = 4, NSA_WINDOW = 64,
};

struct bufs {
    const struct hyla_backend *be;
    float *x, *y, *z, *w, *dx, *dy, *dw, *res, *rstd, *acts, *scratch;
    float *q, *k, *v, *o, *lse, *dq, *dk, *dv, *beta, *g, *dbeta, *dg, *state;
    float *score, *router, *drouter, *router_acts, *gates, *dgates, *nsa_saved;
    float *no_clipping; /* AdamW's gradient scale: 1 */
    int32_t *tokens, *block_idx;
    uint8_t *selected;
    struct hyla_lte_router_shape lte;
    struct hyla_nsa_shape nsa;
};

static float *rand_buf(size_t n, uint64_t seed, float lo, float hi) {
    float *p = hyla_malloc(n * sizeof(float));
    uint64_t key = hyla_rng_key(seed, HYLA_RNG_TEST, 0, 0);
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * hyla_rng_uniform(key, i);
    return p;
}

static void bufs_init(struct bufs *b) {
    const size_t big = (size_t)B * L * (INTER * 3 > V ? INTER * 3 : V); /* largest activation */
    b->be = hyla_backend_cpu();
    b->x = rand_buf(big, 1, -1, 1), b->y = rand_buf(big, 2, -1, 1), b->z = rand_buf(big, 3, -1, 1);
    b->w = rand_buf((size_t)INTER * D * 3, 4, -0.1f, 0.1f), b->dw = rand_buf((size_t)INTER * D * 3, 5, 0, 0);
    b->dx = rand_buf(big, 6, -1, 1), b->dy = rand_buf(big, 7, -1, 1), b->res = rand_buf(big, 8, -1, 1);
    b->rstd = rand_buf(big, 9, 0, 1), b->acts = rand_buf(big, 10, 0, 1), b->scratch = rand_buf(big, 11, 0, 1);
    const size_t heads = (size_t)B * L * GDN_H * GDN_DK;
    b->q = rand_buf(heads, 12, -1, 1), b->k = rand_buf(heads, 13, -1, 1), b->v = rand_buf(heads, 14, -1, 1);
    b->o = rand_buf(heads, 15, 0, 0), b->dq = rand_buf(heads, 16, 0, 0), b->dk = rand_buf(heads, 17, 0, 0);
    b->dv = rand_buf(heads, 18, 0, 0), b->lse = rand_buf((size_t)B * L * ATT_HQ, 19, 0, 0);
    b->beta = rand_buf((size_t)B * L * GDN_H, 20, 0.1f, 0.9f), b->g = rand_buf((size_t)B * L * GDN_H, 21, -0.3f, -0.01f);
    b->dbeta = rand_buf((size_t)B * L * GDN_H, 22, 0, 0), b->dg = rand_buf((size_t)B * L * GDN_H, 23, 0, 0);
    b->state = rand_buf((size_t)B * GDN_H * GDN_DK * GDN_DK * 2, 24, 0, 0);
    /* q, k are used L2-normalised by the gated delta rule. */
    b->be->l2norm_fwd(b->q, b->rstd, b->q, B * L * GDN_H, GDN_DK, 1e-6f);
    b->be->l2norm_fwd(b->k, b->rstd, b->k, B * L * GDN_H, GDN_DK, 1e-6f);
    b->tokens = hyla_malloc((size_t)B * L * sizeof(int32_t));
    for (int i = 0; i < B * L; i++) b->tokens[i] = (int32_t)(hyla_rng_u64(7, (uint64_t)i) % V);
    b->lte = (struct hyla_lte_router_shape){.heads = ATT_HKV, .head_dim = ATT_D, .n_convs = 3,
                                             .kernel = {3, 3, 3}, .dilation = {2, 2, 2}};
    b->router = rand_buf(lte_router_param_count(&b->lte), 25, -0.1f, 0.1f);
    b->drouter = rand_buf(lte_router_param_count(&b->lte), 26, 0, 0);
    b->router_acts = rand_buf(lte_router_acts_size(&b->lte, B, L), 27, 0, 0);
    b->score = rand_buf((size_t)B * L * ATT_HKV, 28, -0.5f, 0.5f);
    b->selected = hyla_malloc((size_t)B * L * ATT_HKV);
    b->be->lte_select(b->selected, b->score, B, L, ATT_HKV, 4);
    b->nsa = (struct hyla_nsa_shape){.q_heads = ATT_HQ, .kv_heads = ATT_HKV, .head_dim = ATT_D,
                                     .block_size = NSA_BLOCK, .n_select = NSA_SELECT, .window = NSA_WINDOW,
                                     .scale = 0.17677669529663687};
    b->gates = rand_buf((size_t)B * L * 3 * ATT_HQ, 29, -1, 1), b->dgates = rand_buf((size_t)B * L * 3 * ATT_HQ, 30, 0, 0);
    b->nsa_saved = rand_buf(nsa_saved_size(&b->nsa, B, L), 31, 0, 0);
    b->block_idx = hyla_malloc((size_t)B * L * ATT_HKV * NSA_SELECT * sizeof(int32_t));
    b->no_clipping = rand_buf(1, 32, 1, 1);
}

/* ---- one function per benchmarked call ---------------------------------------------- */
#define N_TOK (B * L)
static void embedding_fwd(struct bufs *b) { b->be->embedding_fwd(b->y, b->tokens, b->w, N_TOK, D); }
static void embedding_bwd(struct bufs *b) { b->be->embedding_bwd(b->dw, b->dy, b->tokens, N_TOK, D, -1); }
static void add_rmsnorm_fwd(struct bufs *b) { b->be->add_rmsnorm_fwd(b->z, b->y, b->rstd, b->x, b->res, b->w, N_TOK, D, 1e-6f); }
static void add_rmsnorm_bwd(struct bufs *b) { b->be->add_rmsnorm_bwd(b->dx, b->dw, b->dy, b->res, b->x, b->w, b->rstd, N_TOK, D); }
static void linear_fwd(struct bufs *b) { b->be->linear_fwd(b->y, b->x, b->w, NULL, N_TOK, D, D); }
static void linear_bwd(struct bufs *b) { b->be->linear_bwd(b->dx, b->dw, NULL, b->dy, b->x, b->w, N_TOK, D, D); }
static void mlp_fwd(struct bufs *b) { b->be->mlp_fwd(b->y, b->acts, b->x, NULL, b->w, b->w, b->w, N_TOK, D, INTER); }
static void mlp_bwd(struct bufs *b) {
    b->be->mlp_bwd(b->dx, b->dw, b->dw, b->dw, b->dy, b->x, b->acts, b->w, b->w, b->w, b->scratch, N_TOK, D, INTER);
}
static void shortconv_fwd(struct bufs *b) { b->be->shortconv_silu_fwd(b->y, b->x, b->w, B, L, D, 4); }
static void shortconv_bwd(struct bufs *b) { b->be->shortconv_silu_bwd(b->dx, b->dw, b->dy, b->x, b->w, B, L, D, 4); }
static void gdr_chunk_fwd(struct bufs *b) {
    b->be->gdr_chunk_fwd(b->o, b->state, b->q, b->k, b->v, b->beta, b->g, NULL, 0.125f, B, L, GDN_H, GDN_DK, GDN_DK, NULL);
}
static void gdr_chunk_bwd(struct bufs *b) {
    b->be->gdr_chunk_bwd(b->dq, b->dk, b->dv, b->dbeta, b->dg, NULL, b->dy, NULL, b->q, b->k, b->v, b->beta, b->g,
                         NULL, 0.125f, B, L, GDN_H, GDN_DK, GDN_DK, NULL);
}
static void gdr_recurrent_fwd(struct bufs *b) {
    b->be->gdr_recurrent_fwd(b->o, b->state, b->q, b->k, b->v, b->beta, b->g, NULL, 0.125f, B, L, GDN_H, GDN_DK,
                             GDN_DK);
}
static void gated_rmsnorm_fwd(struct bufs *b) {
    b->be->gated_rmsnorm_fwd(b->y, b->rstd, b->x, b->z, b->w, N_TOK * GDN_H, GDN_DK, 1e-6f);
}
static void gated_rmsnorm_bwd(struct bufs *b) {
    b->be->gated_rmsnorm_bwd(b->dx, b->dq, b->dw, b->dy, b->x, b->z, b->w, b->rstd, N_TOK * GDN_H, GDN_DK);
}
static void rope_fwd(struct bufs *b) { b->be->rope_fwd(b->y, b->x, B, L, ATT_HQ, ATT_D, 10000.0f, 0); }
static void swa_fwd(struct bufs *b) {
    b->be->attention_fwd(b->o, b->lse, b->q, b->k, b->v, NULL, B, L, ATT_HQ, ATT_HKV, ATT_D, LTE_WINDOW - 1, 0.17677669f);
}
static void swa_bwd(struct bufs *b) {
    b->be->attention_bwd(b->dq, b->dk, b->dv, b->dy, b->q, b->k, b->v, b->o, b->lse, NULL, B, L, ATT_HQ, ATT_HKV,
                         ATT_D, LTE_WINDOW - 1, 0.17677669f);
}
static void causal_fwd(struct bufs *b) {
    b->be->attention_fwd(b->o, b->lse, b->q, b->k, b->v, NULL, B, L, ATT_HQ, ATT_HKV, ATT_D, -1, 0.17677669f);
}
static void causal_bwd(struct bufs *b) {
    b->be->attention_bwd(b->dq, b->dk, b->dv, b->dy, b->q, b->k, b->v, b->o, b->lse, NULL, B, L, ATT_HQ, ATT_HKV,
                         ATT_D, -1, 0.17677669f);
}
static void lte_attention_fwd(struct bufs *b) {
    b->be->attention_fwd(b->o, b->lse, b->q, b->k, b->v, b->selected, B, L, ATT_HQ, ATT_HKV, ATT_D, LTE_WINDOW,
                         0.17677669f);
}
static void lte_attention_bwd(struct bufs *b) {
    b->be->attention_bwd(b->dq, b->dk, b->dv, b->dy, b->q, b->k, b->v, b->o, b->lse, b->selected, B, L, ATT_HQ,
                         ATT_HKV, ATT_D, LTE_WINDOW, 0.17677669f);
}
/* The router's dropout keys, one per row (B rows). */
static const uint64_t ROUTER_KEYS[B] = {99, 100};
static void lte_router_fwd(struct bufs *b) {
    b->be->lte_router_fwd(b->score, b->router_acts, b->k, b->v, b->router, &b->lte, B, L, 0.1f, ROUTER_KEYS);
}
static void lte_router_bwd(struct bufs *b) {
    b->be->lte_router_bwd(b->dk, b->dv, b->drouter, b->dy, b->k, b->v, b->router, b->router_acts, &b->lte, B, L,
                          0.1f, ROUTER_KEYS);
}
static void nsa_fwd(struct bufs *b) {
    b->be->nsa_fwd(b->o, b->nsa_saved, b->block_idx, b->q, b->k, b->v, b->gates, &b->nsa, B, L, 0);
}
static void nsa_bwd(struct bufs *b) {
    b->be->nsa_bwd(b->dq, b->dk, b->dv, b->dgates, b->dy, b->nsa_saved, b->block_idx, b->q, b->k, b->v, b->gates,
                   &b->nsa, B, L);
}
static void cross_entropy_fwd(struct bufs *b) {
    int valid;
    b->be->cross_entropy_fwd(b->rstd, b->x, b->tokens, N_TOK, V, -100, &valid);
}
static void cross_entropy_bwd(struct bufs *b) { b->be->cross_entropy_bwd(b->dx, b->x, b->tokens, N_TOK, V, -100, N_TOK, 1.0f); }
/* the LM head (V x D weights in w) fused with cross-entropy: x holds h, rstd the losses, y the lse */
static void lm_head_ce_fwd(struct bufs *b) {
    b->be->lm_head_ce_fwd(b->rstd, b->y, b->x, b->w, b->tokens, N_TOK, D, V, -100, 0);
}
static void lm_head_ce_bwd(struct bufs *b) {
    b->be->lm_head_ce_bwd(b->dx, b->dw, b->x, b->w, b->y, b->tokens, N_TOK, D, V, -100, N_TOK, 1.0f, 0);
}
static void adamw(struct bufs *b) {
    b->be->adamw_step(b->x, b->dx, b->y, b->z, (size_t)N_TOK * D, 3e-4f, 0.9f, 0.95f, 1e-15f, 0.1f, b->no_clipping, 3);
}

struct bench_case {
    const char *op, *shape;
    void (*run)(struct bufs *);
};

static const struct bench_case cases[] = {
    {"embedding_fwd", "B2 L512 D128", embedding_fwd},
    {"embedding_bwd", "B2 L512 D128", embedding_bwd},
    {"add_rmsnorm_fwd", "B2 L512 D128", add_rmsnorm_fwd},
    {"add_rmsnorm_bwd", "B2 L512 D128", add_rmsnorm_bwd},
    {"linear_fwd", "1024x128 . 128x128", linear_fwd},
    {"linear_bwd", "1024x128 . 128x128", linear_bwd},
    {"mlp_fwd", "B2 L512 D128 I384", mlp_fwd},
    {"mlp_bwd", "B2 L512 D128 I384", mlp_bwd},
    {"shortconv_silu_fwd", "B2 L512 C128 k4", shortconv_fwd},
    {"shortconv_silu_bwd", "B2 L512 C128 k4", shortconv_bwd},
    {"gdr_recurrent_fwd", "B2 L512 H2 d64", gdr_recurrent_fwd},
    {"gdr_chunk_fwd", "B2 L512 H2 d64", gdr_chunk_fwd},
    {"gdr_chunk_bwd", "B2 L512 H2 d64", gdr_chunk_bwd},
    {"gated_rmsnorm_fwd", "B2 L512 H2 d64", gated_rmsnorm_fwd},
    {"gated_rmsnorm_bwd", "B2 L512 H2 d64", gated_rmsnorm_bwd},
    {"rope_fwd", "B2 L512 H4 d32", rope_fwd},
    {"attention_causal_fwd", "B2 L512 Hq4 Hkv2 d32", causal_fwd},
    {"attention_causal_bwd", "B2 L512 Hq4 Hkv2 d32", causal_bwd},
    {"attention_swa_fwd", "window 64", swa_fwd},
    {"attention_swa_bwd", "window 64", swa_bwd},
    {"lte_attention_fwd", "window 64 + selected", lte_attention_fwd},
    {"lte_attention_bwd", "window 64 + selected", lte_attention_bwd},
    {"lte_router_fwd", "Hkv2 d32 k3x3 dil2", lte_router_fwd},
    {"lte_router_bwd", "Hkv2 d32 k3x3 dil2", lte_router_bwd},
    {"nsa_fwd", "Hq4 Hkv2 b16 S4 w64", nsa_fwd},
    {"nsa_bwd", "Hq4 Hkv2 b16 S4 w64", nsa_bwd},
    {"cross_entropy_fwd", "1024 x V256", cross_entropy_fwd},
    {"cross_entropy_bwd", "1024 x V256", cross_entropy_bwd},
    {"lm_head_ce_fwd", "1024 x D128 x V256", lm_head_ce_fwd},
    {"lm_head_ce_bwd", "1024 x D128 x V256", lm_head_ce_bwd},
    {"adamw_step", "131072 params", adamw},
};

/* Median-free but stable enough: warm up once, then repeat for at least min_seconds. */
static double time_call(void (*run)(struct bufs *), struct bufs *b, double min_seconds) {
    run(b);
    int reps = 0;
    double start = hyla_now_seconds(), elapsed;
    do {
        run(b);
        reps++;
        elapsed = hyla_now_seconds() - start;
    } while (elapsed < min_seconds);
    return elapsed / reps;
}

static double gemm_gflops(int n, double min_seconds) {
    float *a = rand_buf((size_t)n * n, 40, -1, 1), *bm = rand_buf((size_t)n * n, 41, -1, 1);
    float *c = rand_buf((size_t)n * n, 42, 0, 0);
    const struct hyla_backend *be = hyla_backend_cpu();
    be->gemm(0, 0, n, n, n, 1.0f, a, n, bm, n, 0.0f, c, n);
    int reps = 0;
    double start = hyla_now_seconds(), elapsed;
    do {
        be->gemm(0, 0, n, n, n, 1.0f, a, n, bm, n, 0.0f, c, n);
        reps++;
        elapsed = hyla_now_seconds() - start;
    } while (elapsed < min_seconds);
    free(a), free(bm), free(c);
    return 2.0 * n * n * n * reps / elapsed / 1e9;
}

int bench_main(int argc, char **argv) {
    int json = 0;
    double min_seconds = 0.2;
    if (argc >= 2 && !strcmp(argv[1], "ledger")) return bench_ledger_main(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "checkpoint")) return bench_checkpoint_main(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "train")) return bench_train_main(argc - 1, argv + 1);
    if (argc < 2 || strcmp(argv[1], "kernels") != 0) {
        fprintf(stderr, "hyla: error: usage: hyla bench kernels|train|ledger|checkpoint [--format table|json]\n");
        return 2;
    }
    int gpu = 0;
    const char *only = NULL;
    int bf16 = 1;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            const char *name = argv[++i];
            if (!strcmp(name, "cuda")) gpu = 1;
            else if (strcmp(name, "cpu") != 0) {
                fprintf(stderr, "hyla: error: unknown --backend '%s'; choose cpu or cuda\n", name);
                return 2;
            }
        } else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
            const char *p = argv[++i];
            if (strcmp(p, "bf16") && strcmp(p, "fp32")) {
                fprintf(stderr, "hyla: error: unknown --precision '%s'; choose fp32 or bf16\n", p);
                return 2;
            }
            bf16 = !strcmp(p, "bf16");
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = argv[++i];
        } else if (!strcmp(argv[i], "--format") && i + 1 < argc) {
            const char *f = argv[++i];
            if (!strcmp(f, "json")) json = 1;
            else if (strcmp(f, "table") != 0) {
                fprintf(stderr, "hyla: error: unknown --format '%s'; choose table or json\n", f);
                return 2;
            }
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            min_seconds = atof(argv[++i]);
            if (min_seconds <= 0) {
                fprintf(stderr, "hyla: error: --seconds needs a positive number, got '%s'\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "hyla: error: unknown option '%s'; usage: hyla bench kernels [--backend cpu|cuda] "
                            "[--only NAME] [--precision fp32|bf16] [--format table|json] [--seconds S]\n", argv[i]);
            return 2;
        }
    }
    if (gpu) return bench_kernels_gpu(json, min_seconds, only, bf16);

    struct bufs b;
    bufs_init(&b);
    static const int gemm_sizes[] = {128, 256, 512, 1024};
    enum { N_GEMM = sizeof gemm_sizes / sizeof gemm_sizes[0], N_CASES = sizeof cases / sizeof cases[0] };
    double gflops[N_GEMM], seconds[N_CASES];
    for (int i = 0; i < N_GEMM; i++) gflops[i] = gemm_gflops(gemm_sizes[i], min_seconds);
    for (int i = 0; i < N_CASES; i++) seconds[i] = time_call(cases[i].run, &b, min_seconds);

    if (json) {
        json_t *root = json_object(), *g = json_array(), *ops = json_array();
        for (int i = 0; i < N_GEMM; i++)
            json_array_append_new(g, json_pack("{s:i, s:f}", "n", gemm_sizes[i], "gflops", gflops[i]));
        for (int i = 0; i < N_CASES; i++)
            json_array_append_new(ops, json_pack("{s:s, s:s, s:f}", "op", cases[i].op, "shape", cases[i].shape,
                                                 "ms", seconds[i] * 1e3));
        json_object_set_new(root, "backend", json_string("cpu"));
        json_object_set_new(root, "gemm", g);
        json_object_set_new(root, "ops", ops);
        char *text = json_dumps(root, JSON_INDENT(2));
        puts(text);
        free(text);
        json_decref(root);
    } else {
        printf("CPU fp32 matrix product (sgemm, n x n x n)\n");
        for (int i = 0; i < N_GEMM; i++) printf("  n = %-5d %8.1f GFLOP/s\n", gemm_sizes[i], gflops[i]);
        printf("\n%-22s %-24s %10s\n", "op", "shape", "ms/call");
        for (int i = 0; i < N_CASES; i++) printf("%-22s %-24s %10.3f\n", cases[i].op, cases[i].shape, seconds[i] * 1e3);
    }
    return 0;
}
