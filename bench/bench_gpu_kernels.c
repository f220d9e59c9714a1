/* `hyla bench kernels --backend cuda`: the GPU's matrix-product rates and the time per call
 * of the sequence-mixing ops at the shapes the reference implementation was measured at
 * (issue #7: B = 4, T = 4096; the 0.4B models' heads), as a table or as JSON. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_gpu.h"
#include "common/hyla_error.h"
#include "common/rng.h"
#include "common/timer.h"
#include "kernels/backend.h"
#ifdef HYLA_WITH_CUDA
#include "kernels/cuda/backend_cuda.h"
#include "kernels/cuda/cuda_device.h"
#endif

/* The reference's shapes (issue #7, "Benchmarks"). */
enum {
    B = 4, T = 4096, N = B * T,
    GDR_H = 8, GDR_D = 128,                        /* chunked gated delta rule */
    LTE_H = 16, LTE_D = 64, LTE_WINDOW = 768,      /* laLTE attention; about 512 kept keys per head */
    LTE_KEPT = 512,
    NSA_HQ = 32, NSA_HKV = 2, NSA_D = 64, NSA_BLOCK = 64, NSA_SELECT = 16, NSA_WINDOW = 512,
    DIM = 1024, VOCAB = 32000,
};

struct gpu_bufs {
    const struct hyla_backend *be;
    float *q, *k, *v, *o, *lse, *dq, *dk, *dv, *dout, *beta, *g, *dbeta, *dg, *state;
    float *gates, *dgates, *nsa_saved, *score, *router, *drouter, *router_acts, *dscore;
    float *w, *dw;     /* a projection's weights: [2 DIM][DIM] */
    float *gdr_saved;  /* the delta rule's forward quantities kept for its backward (as the model does) */
    int gdr_saved_set; /* gdr_saved allocated (in the precision of the first fwd + bwd) */
    int32_t *block_idx;
    uint8_t *selected;
    struct hyla_nsa_shape nsa;
    struct hyla_lte_router_shape lte;
};

/* Device buffer of n uniform values in [lo, hi). */
static float *dev_rand(const struct hyla_backend *be, size_t n, uint64_t seed, float lo, float hi) {
    float *host = hyla_malloc(n * sizeof(float));
    const uint64_t key = hyla_rng_key(seed, HYLA_RNG_TEST, 0, 0);
    for (size_t i = 0; i < n; i++) host[i] = lo + (hi - lo) * hyla_rng_uniform(key, i);
    float *dev = be->alloc(n * sizeof(float));
    be->to_device(dev, host, n * sizeof(float));
    free(host);
    return dev;
}

static void bufs_init(struct gpu_bufs *b, const struct hyla_backend *be) {
    memset(b, 0, sizeof *b);
    b->be = be;
    /* the largest head layout: NSA's 32 x 64 = GDN's 8 x 128 (x 2) = LTE's 16 x 64 (x 2) */
    const size_t heads = (size_t)N * 2048;
    b->q = dev_rand(be, heads, 1, -1, 1), b->k = dev_rand(be, heads, 2, -1, 1), b->v = dev_rand(be, heads, 3, -1, 1);
    b->dout = dev_rand(be, heads, 4, -1, 1);
    b->o = dev_rand(be, heads, 5, 0, 0), b->dq = dev_rand(be, heads, 6, 0, 0), b->dk = dev_rand(be, heads, 7, 0, 0);
    b->dv = dev_rand(be, heads, 8, 0, 0), b->lse = dev_rand(be, (size_t)N * NSA_HQ, 9, 0, 0);
    b->beta = dev_rand(be, (size_t)N * GDR_H, 10, 0.1f, 0.9f), b->g = dev_rand(be, (size_t)N * GDR_H, 11, -0.3f, -0.01f);
    b->dbeta = dev_rand(be, (size_t)N * GDR_H, 12, 0, 0), b->dg = dev_rand(be, (size_t)N * GDR_H, 13, 0, 0);
    b->state = dev_rand(be, (size_t)B * GDR_H * GDR_D * GDR_D, 14, 0, 0);
    /* the gated delta rule reads L2-normalised q and k */
    be->l2norm_fwd(b->q, b->lse, b->q, N * GDR_H, GDR_D, 1e-6f);
    be->l2norm_fwd(b->k, b->lse, b->k, N * GDR_H, GDR_D, 1e-6f);
    /* LTE: keep about LTE_KEPT of the T - window keys outside each head's window */
    const size_t sel_n = (size_t)N * LTE_H;
    uint8_t *sel = hyla_malloc(sel_n);
    const double keep = (double)LTE_KEPT / (T - LTE_WINDOW);
    for (size_t i = 0; i < sel_n; i++) sel[i] = hyla_rng_uniform(hyla_rng_key(15, HYLA_RNG_TEST, 0, 0), i) < keep;
    b->selected = be->alloc(sel_n);
    be->to_device(b->selected, sel, sel_n);
    free(sel);
    b->lte = (struct hyla_lte_router_shape){.heads = LTE_H, .head_dim = LTE_D, .n_convs = 3,
                                             .kernel = {3, 3, 3}, .dilation = {2, 2, 2}};
    b->router = dev_rand(be, lte_router_param_count(&b->lte), 16, -0.1f, 0.1f);
    b->drouter = dev_rand(be, lte_router_param_count(&b->lte), 17, 0, 0);
    b->router_acts = dev_rand(be, lte_router_acts_size(&b->lte, B, T), 18, 0, 0);
    b->score = dev_rand(be, sel_n, 19, -0.5f, 0.5f), b->dscore = dev_rand(be, sel_n, 20, -1e-3f, 1e-3f);
    b->nsa = (struct hyla_nsa_shape){.q_heads = NSA_HQ, .kv_heads = NSA_HKV, .head_dim = NSA_D,
                                     .block_size = NSA_BLOCK, .n_select = NSA_SELECT, .window = NSA_WINDOW,
                                     .scale = 0.125};
    b->gates = dev_rand(be, (size_t)N * 3 * NSA_HQ, 21, -1, 1), b->dgates = dev_rand(be, (size_t)N * 3 * NSA_HQ, 22, 0, 0);
    b->nsa_saved = dev_rand(be, nsa_saved_size(&b->nsa, B, T), 23, 0, 0);
    b->block_idx = be->alloc((size_t)N * NSA_HKV * NSA_SELECT * sizeof(int32_t));
    b->w = dev_rand(be, (size_t)2 * DIM * DIM, 24, -0.03f, 0.03f), b->dw = dev_rand(be, (size_t)2 * DIM * DIM, 25, 0, 0);
}

/* ---- one function per benchmarked call ---------------------------------------------- */
static void gdr_fwd(struct gpu_bufs *b) {
    b->be->gdr_chunk_fwd(b->o, b->state, b->q, b->k, b->v, b->beta, b->g, NULL, 0.08838835f, B, T, GDR_H, GDR_D,
                         GDR_D, NULL);
}
/* The forward keeping its chunk quantities for the backward, as the model's GDN layers do. */
static void gdr_fwd_bwd(struct gpu_bufs *b) {
    if (!b->gdr_saved_set) {
        const size_t n = b->be->gdr_chunk_saved_floats ? b->be->gdr_chunk_saved_floats(B, T, GDR_H, GDR_D, GDR_D) : 0;
        b->gdr_saved = n ? b->be->alloc(n * sizeof(float)) : NULL, b->gdr_saved_set = 1;
    }
    b->be->gdr_chunk_fwd(b->o, b->state, b->q, b->k, b->v, b->beta, b->g, NULL, 0.08838835f, B, T, GDR_H, GDR_D,
                         GDR_D, b->gdr_saved);
    b->be->gdr_chunk_bwd(b->dq, b->dk, b->dv, b->dbeta, b->dg, NULL, b->dout, NULL, b->q, b->k, b->v, b->beta, b->g,
                         NULL, 0.08838835f, B, T, GDR_H, GDR_D, GDR_D, b->gdr_saved);
}
static void attention(struct gpu_bufs *b, const uint8_t *selected, int window, int backward) {
    b->be->attention_fwd(b->o, b->lse, b->q, b->k, b->v, selected, B, T, LTE_H, LTE_H, LTE_D, window, 0.125f);
    if (backward)
        b->be->attention_bwd(b->dq, b->dk, b->dv, b->dout, b->q, b->k, b->v, b->o, b->lse, selected, B, T, LTE_H,
                             LTE_H, LTE_D, window, 0.125f);
}
static void lte_fwd(struct gpu_bufs *b) { attention(b, b->selected, LTE_WINDOW, 0); }
static void lte_fwd_bwd(struct gpu_bufs *b) { attention(b, b->selected, LTE_WINDOW, 1); }
static void causal_fwd(struct gpu_bufs *b) { attention(b, NULL, -1, 0); }
static void causal_fwd_bwd(struct gpu_bufs *b) { attention(b, NULL, -1, 1); }
/* The router's dropout keys, one per row (B rows). */
static const uint64_t ROUTER_KEYS[B] = {99, 100, 101, 102};
static void router_fwd(struct gpu_bufs *b) {
    b->be->lte_router_fwd(b->score, b->router_acts, b->k, b->v, b->router, &b->lte, B, T, 0.1f, ROUTER_KEYS);
}
static void router_fwd_bwd(struct gpu_bufs *b) {
    router_fwd(b);
    b->be->lte_router_bwd(b->dk, b->dv, b->drouter, b->dscore, b->k, b->v, b->router, b->router_acts, &b->lte, B, T,
                          0.1f, ROUTER_KEYS);
}
static void nsa_fwd(struct gpu_bufs *b) {
    b->be->nsa_fwd(b->o, b->nsa_saved, b->block_idx, b->q, b->k, b->v, b->gates, &b->nsa, B, T, 0);
}
static void nsa_fwd_bwd(struct gpu_bufs *b) {
    nsa_fwd(b);
    b->be->nsa_bwd(b->dq, b->dk, b->dv, b->dgates, b->dout, b->nsa_saved, b->block_idx, b->q, b->k, b->v, b->gates,
                   &b->nsa, B, T);
}

/* The 0.4B models' projections (hidden 1024): the matrix products that take most of a step. */
static void linear_fwd(struct gpu_bufs *b) { b->be->linear_fwd(b->o, b->q, b->w, NULL, N, DIM, DIM); }
static void linear_wide_fwd_bwd(struct gpu_bufs *b) {
    b->be->linear_fwd(b->o, b->q, b->w, NULL, N, DIM, 2 * DIM);
    b->be->linear_bwd(b->dq, b->dw, NULL, b->dout, b->q, b->w, N, DIM, 2 * DIM);
}
/* The delta rule's gate projections (one output per head): thin, bound by reading x. */
static void linear_narrow_fwd_bwd(struct gpu_bufs *b) {
    b->be->linear_fwd(b->o, b->q, b->w, NULL, N, DIM, 8);
    b->be->linear_bwd_accumulate(b->dq, b->dw, NULL, b->dout, b->q, b->w, N, DIM, 8);
}

struct gpu_case {
    const char *op, *shape;
    void (*run)(struct gpu_bufs *);
    double reference_ms; /* the reference implementation on an H100 (issue #7); 0: not given */
};

static const struct gpu_case cases[] = {
    {"gdr_chunk fwd", "B4 T4096 H8 d128", gdr_fwd, 0.69},
    {"gdr_chunk fwd+bwd", "B4 T4096 H8 d128", gdr_fwd_bwd, 2.29},
    {"lte_attention fwd", "B4 T4096 H16 d64 w768 +512", lte_fwd, 0.92},
    {"lte_attention fwd+bwd", "B4 T4096 H16 d64 w768 +512", lte_fwd_bwd, 2.69},
    {"causal_attention fwd", "B4 T4096 H16 d64", causal_fwd, 0.34},
    {"causal_attention fwd+bwd", "B4 T4096 H16 d64", causal_fwd_bwd, 1.40},
    {"nsa fwd", "B4 T4096 Hq32 Hkv2 d64 b64 S16 w512", nsa_fwd, 5.25},
    {"nsa fwd+bwd", "B4 T4096 Hq32 Hkv2 d64 b64 S16 w512", nsa_fwd_bwd, 15.8},
    {"lte_router fwd", "B4 T4096 H16 d64 k3x3 dil2", router_fwd, 0},
    {"lte_router fwd+bwd", "B4 T4096 H16 d64 k3x3 dil2", router_fwd_bwd, 0},
    {"linear fwd", "N16384 1024->1024", linear_fwd, 0},
    {"linear fwd+bwd", "N16384 1024->2048", linear_wide_fwd_bwd, 0},
    {"linear fwd+bwd", "N16384 1024->8", linear_narrow_fwd_bwd, 0},
};

/* Warm up once, then repeat until min_seconds have passed (at least once). */
static double time_case(void (*run)(struct gpu_bufs *), struct gpu_bufs *b, double min_seconds) {
    run(b);
    b->be->synchronize();
    int reps = 0;
    const double start = hyla_now_seconds();
    double elapsed;
    do {
        run(b);
        b->be->synchronize();
        reps++;
        elapsed = hyla_now_seconds() - start;
    } while (elapsed < min_seconds);
    return elapsed / reps;
}

int bench_kernels_gpu(int json, double min_seconds, const char *only, int bf16) {
#ifdef HYLA_WITH_CUDA
    if (hyla_cuda_device_count() == 0) {
        fprintf(stderr, "hyla: error: --backend cuda: no CUDA device is visible; run on a GPU host\n");
        return 1;
    }
    char device[256] = "?";
    hyla_cuda_device_name(0, device, sizeof device);
    const int gemm_n = 8192;
    const double tf_fp32 = hyla_cuda_gemm_tflops(gemm_n, HYLA_GEMM_FP32, min_seconds);
    const double tf_fast = hyla_cuda_gemm_tflops(gemm_n, HYLA_GEMM_FP32_BF16_OPERANDS, min_seconds);
    const double tf_bf16 = hyla_cuda_gemm_tflops(gemm_n, HYLA_GEMM_BF16, min_seconds);
    struct gpu_bufs b;
    bufs_init(&b, hyla_backend_cuda());
    b.be->set_matmul_precision(bf16); /* attention's products on the tensor cores in bf16 */
    enum { N_CASES = sizeof cases / sizeof cases[0] };
    double ms[N_CASES];
    int chosen[N_CASES], any = 0;
    for (int i = 0; i < N_CASES; i++) any += chosen[i] = !only || strstr(cases[i].op, only) != NULL;
    if (!any) {
        fprintf(stderr, "hyla: error: --only '%s' matches no benchmarked op; ops are named like 'gdr_chunk fwd', "
                        "'lte_attention', 'causal_attention', 'nsa', 'lte_router', 'linear'\n", only);
        return 2;
    }
    if (!json) {
        printf("%s: matrix products %d x %d x %d\n", device, gemm_n, gemm_n, gemm_n);
        printf("  fp32 (no TF32)                 %8.1f TFLOP/s\n", tf_fp32);
        printf("  fp32 storage, bf16 operands    %8.1f TFLOP/s\n", tf_fast);
        printf("  bf16 storage and operands      %8.1f TFLOP/s\n", tf_bf16);
        printf("\nops in %s (train.precision)\n", bf16 ? "bf16" : "fp32");
        printf("%-26s %-36s %10s %14s %8s\n", "op", "shape", "ms/call", "reference ms", "ratio");
    }
    for (int i = 0; i < N_CASES; i++) {
        if (!chosen[i]) continue;
        ms[i] = time_case(cases[i].run, &b, min_seconds) * 1e3;
        if (json) continue;
        printf("%-26s %-36s %10.3f", cases[i].op, cases[i].shape, ms[i]);
        if (cases[i].reference_ms > 0)
            printf(" %14.2f %7.2fx\n", cases[i].reference_ms, ms[i] / cases[i].reference_ms);
        else
            printf(" %14s %8s\n", "-", "-");
        fflush(stdout); /* a row as soon as it is measured: slow ops do not hide the others */
    }
    if (json) {
        json_t *root = json_object(), *ops = json_array();
        json_object_set_new(root, "backend", json_string("cuda"));
        json_object_set_new(root, "device", json_string(device));
        json_object_set_new(root, "precision", json_string(bf16 ? "bf16" : "fp32"));
        json_object_set_new(root, "gemm", json_pack("{s:i, s:f, s:f, s:f}", "n", gemm_n, "fp32_tflops", tf_fp32,
                                                    "fp32_bf16_operands_tflops", tf_fast, "bf16_tflops", tf_bf16));
        for (int i = 0; i < N_CASES; i++) {
            if (!chosen[i]) continue;
            json_t *o = json_pack("{s:s, s:s, s:f}", "op", cases[i].op, "shape", cases[i].shape, "ms", ms[i]);
            if (cases[i].reference_ms > 0) json_object_set_new(o, "reference_ms", json_real(cases[i].reference_ms));
            json_array_append_new(ops, o);
        }
        json_object_set_new(root, "ops", ops);
        char *text = json_dumps(root, JSON_INDENT(2));
        puts(text);
        free(text);
        json_decref(root);
    } else {
        printf("(ratio = hyla's time / the reference's; below 1 is faster. Reference: PyTorch + Triton on an H100)\n");
    }
    return 0;
#else
    (void)json, (void)min_seconds, (void)only, (void)bf16;
    (void)bufs_init, (void)time_case, (void)cases;
    fprintf(stderr, "hyla: error: --backend cuda: this hyla was built without CUDA; rebuild with -DHYLA_CUDA=ON\n");
    return 1;
#endif
}
