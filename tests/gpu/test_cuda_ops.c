/* Every CUDA op against its CPU twin on fresh random inputs (fp32: relative error <= 1e-5),
 * with sizes that are not multiples of the block sizes, parameter gradients accumulated
 * onto non-zero values, and two runs bit-identical. Exits 77 (skipped) without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/cuda/backend_cuda.h"
#include "kernels/cuda/cuda_device.h"

static const struct hyla_backend *gpu;
static uint64_t next_seed = 1;

static float *host_rand(size_t n, float lo, float hi) {
    float *p = alloc_f32(n);
    fill_uniform_f32(p, n, lo, hi, next_seed++);
    return p;
}
static float *dev_copy(const float *h, size_t n) {
    float *d = gpu->alloc(n * sizeof(float));
    gpu->to_device(d, h, n * sizeof(float));
    return d;
}
static float *back(const float *d, size_t n) {
    float *h = alloc_f32(n);
    gpu->to_host(h, d, n * sizeof(float));
    return h;
}
/* Compare device result d with host reference h; free both copies. */
static void compare(const char *what, const float *d, const float *h, size_t n) {
    float *got = back(d, n);
    check_le(what, rel_err_f32(got, h, n), 1e-5);
    free(got);
}

/* train.precision = bf16: the matrix products take bf16 operands (8 mantissa bits) with fp32
 * accumulation; a product over `dim` terms then differs from fp32 by about 2^-8 relative. */
static void test_bf16_matmul(int n, int dim, int out) {
    float *x = host_rand((size_t)n * dim, -1, 1), *w = host_rand((size_t)out * dim, -0.2f, 0.2f);
    float *y = alloc_f32((size_t)n * out), *X = dev_copy(x, (size_t)n * dim), *W = dev_copy(w, (size_t)out * dim);
    float *Y = gpu->alloc((size_t)n * out * 4);
    cpu_f32_linear_fwd(y, x, w, NULL, n, dim, out);
    gpu->set_matmul_precision(1);
    gpu->linear_fwd(Y, X, W, NULL, n, dim, out);
    gpu->set_matmul_precision(0);
    float *got = back(Y, (size_t)n * out);
    const double e = rel_err_f32(got, y, (size_t)n * out);
    char label[128];
    snprintf(label, sizeof label, "linear_fwd in bf16 %dx%d -> %d (bound 1e-2)", n, dim, out);
    check_le(label, e, 1e-2);
    /* and it really is not fp32: bf16 rounding shows */
    snprintf(label, sizeof label, "linear_fwd in bf16 differs from fp32 by more than 1e-6 (%.2g)", e);
    check_true(label, e > 1e-6);
    free(x), free(w), free(y), free(got), gpu->free(X), gpu->free(W), gpu->free(Y);
}

/* The MLP in bf16 mode (n x dim x inter past the copies' threshold): its products take bf16
 * operands, and with HYLA_MLP_BF16=1 z, dgate and dup are written in bf16 by the SwiGLU
 * kernels (cuda_mlp.cu). Forward onto a residual and backward against the fp32 CPU twin. */
static void test_bf16_mlp(int n, int dim, int inter) {
    const size_t nd = (size_t)n * dim, ni = (size_t)n * inter, wi = (size_t)inter * dim;
    float *x = host_rand(nd, -1, 1), *res = host_rand(nd, -1, 1), *wg = host_rand(wi, -0.1f, 0.1f);
    float *wu = host_rand(wi, -0.1f, 0.1f), *wd = host_rand(wi, -0.1f, 0.1f), *dy = host_rand(nd, -1, 1);
    float *y = alloc_f32(nd), *acts = alloc_f32(3 * ni), *scratch = alloc_f32(2 * ni), *dx = alloc_f32(nd);
    float *dwg = host_rand(wi, -1, 1), *dwu = host_rand(wi, -1, 1), *dwd = host_rand(wi, -1, 1);
    float *X = dev_copy(x, nd), *RES = dev_copy(res, nd), *WG = dev_copy(wg, wi), *WU = dev_copy(wu, wi);
    float *WD = dev_copy(wd, wi), *DY = dev_copy(dy, nd), *DWG = dev_copy(dwg, wi), *DWU = dev_copy(dwu, wi);
    float *DWD = dev_copy(dwd, wi), *Y = gpu->alloc(nd * 4), *ACTS = gpu->alloc(3 * ni * 4);
    float *SCR = gpu->alloc(2 * ni * 4), *DX = gpu->alloc(nd * 4);
    cpu_f32_mlp_fwd(y, acts, x, res, wg, wu, wd, n, dim, inter);
    cpu_f32_mlp_bwd(dx, dwg, dwu, dwd, dy, x, acts, wg, wu, wd, scratch, n, dim, inter);
    gpu->set_matmul_precision(1);
    gpu->mlp_fwd(Y, ACTS, X, RES, WG, WU, WD, n, dim, inter);
    gpu->mlp_bwd(DX, DWG, DWU, DWD, DY, X, ACTS, WG, WU, WD, SCR, n, dim, inter);
    gpu->set_matmul_precision(0);
    const float *want_of[5] = {y, dx, dwg, dwu, dwd}, *got_of[5] = {Y, DX, DWG, DWU, DWD};
    const size_t count[5] = {nd, nd, wi, wi, wi};
    const char *names[5] = {"y (onto a residual)", "dx", "dw_gate", "dw_up", "dw_down"};
    for (int i = 0; i < 5; i++) {
        float *got = back(got_of[i], count[i]);
        char label[128];
        snprintf(label, sizeof label, "mlp in bf16 %dx%d, inter %d: %s (bound 1e-2)", n, dim, inter, names[i]);
        check_le(label, rel_err_f32(got, want_of[i], count[i]), 1e-2);
        free(got);
    }
    free(x), free(res), free(wg), free(wu), free(wd), free(dy), free(y), free(acts), free(scratch), free(dx);
    free(dwg), free(dwu), free(dwd);
    gpu->free(X), gpu->free(RES), gpu->free(WG), gpu->free(WU), gpu->free(WD), gpu->free(DY), gpu->free(DWG);
    gpu->free(DWU), gpu->free(DWD), gpu->free(Y), gpu->free(ACTS), gpu->free(SCR), gpu->free(DX);
}

/* A bf16 product whose operands sit inside wider rows (lda > k, ldb > n) and that adds onto C
 * (beta = 1): the strided rounding into bf16 copies (cuda_gemm_bf16.cu) against a double sum. */
static void test_bf16_gemm_strided(int m, int n, int k) {
    const int lda = k + 5, ldb = n + 3, ldc = n + 1;
    float *a = host_rand((size_t)m * lda, -1, 1), *b = host_rand((size_t)k * ldb, -1, 1);
    float *c = host_rand((size_t)m * ldc, -1, 1), *want = malloc(sizeof(float) * (size_t)m * ldc);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++) {
            double acc = c[(size_t)i * ldc + j];
            if (j < n)
                for (int p = 0; p < k; p++) acc += (double)a[(size_t)i * lda + p] * b[(size_t)p * ldb + j];
            want[(size_t)i * ldc + j] = (float)acc;
        }
    float *A = dev_copy(a, (size_t)m * lda), *Bm = dev_copy(b, (size_t)k * ldb), *C = dev_copy(c, (size_t)m * ldc);
    gpu->set_matmul_precision(1);
    gpu->gemm(0, 0, m, n, k, 1.0f, A, lda, Bm, ldb, 1.0f, C, ldc);
    gpu->set_matmul_precision(0);
    float *got = back(C, (size_t)m * ldc);
    char label[128];
    snprintf(label, sizeof label, "gemm in bf16 %dx%dx%d, strided operands, beta 1 (bound 1e-2)", m, n, k);
    check_le(label, rel_err_f32(got, want, (size_t)m * ldc), 1e-2);
    free(a), free(b), free(c), free(want), free(got), gpu->free(A), gpu->free(Bm), gpu->free(C);
}

/* Projections of one input (projections_fwd / _bwd): three widths, so that in bf16 mode some
 * products take the op's shared bf16 copies (>= 2^26 multiply-adds) and some do not; dx added
 * onto random values (accumulate), dweights onto random values. Bound 1e-5 in fp32, 1e-2 in
 * bf16 (against the fp32 CPU twin). */
static void test_projections(int n, int in, const int outs[3], int bf16) {
    enum { P = 3 };
    float *x = host_rand((size_t)n * in, -1, 1), *dx = host_rand((size_t)n * in, -1, 1);
    float *X = dev_copy(x, (size_t)n * in), *DX = dev_copy(dx, (size_t)n * in);
    float *w[P], *y[P], *dy[P], *dw[P], *W[P], *Y[P], *DY[P], *DW[P];
    for (int i = 0; i < P; i++) {
        const size_t nw = (size_t)outs[i] * in, ny = (size_t)n * outs[i];
        w[i] = host_rand(nw, -0.2f, 0.2f), dy[i] = host_rand(ny, -1, 1), dw[i] = host_rand(nw, -1, 1);
        y[i] = alloc_f32(ny);
        W[i] = dev_copy(w[i], nw), DY[i] = dev_copy(dy[i], ny), DW[i] = dev_copy(dw[i], nw);
        Y[i] = gpu->alloc(ny * sizeof(float));
    }
    cpu_f32_projections_fwd(P, y, x, (const float *const *)w, outs, n, in);
    cpu_f32_projections_bwd(P, dx, 1, dw, (const float *const *)dy, x, (const float *const *)w, outs, n, in);
    gpu->set_matmul_precision(bf16);
    gpu->projections_fwd(P, Y, X, (const float *const *)W, outs, n, in);
    gpu->projections_bwd(P, DX, 1, DW, (const float *const *)DY, X, (const float *const *)W, outs, n, in);
    gpu->set_matmul_precision(0);
    const double bound = bf16 ? 1e-2 : 1e-5;
    char label[160];
    for (int i = 0; i < P; i++) {
        float *got = back(Y[i], (size_t)n * outs[i]);
        snprintf(label, sizeof label, "projections_fwd %s n=%d %d -> %d: y%d", bf16 ? "bf16" : "fp32", n, in, outs[i], i);
        check_le(label, rel_err_f32(got, y[i], (size_t)n * outs[i]), bound);
        free(got);
        got = back(DW[i], (size_t)outs[i] * in);
        snprintf(label, sizeof label, "projections_bwd %s: dweight%d (accumulated)", bf16 ? "bf16" : "fp32", i);
        check_le(label, rel_err_f32(got, dw[i], (size_t)outs[i] * in), bound);
        free(got);
    }
    float *got = back(DX, (size_t)n * in);
    snprintf(label, sizeof label, "projections_bwd %s n=%d in=%d: dx (accumulated)", bf16 ? "bf16" : "fp32", n, in);
    check_le(label, rel_err_f32(got, dx, (size_t)n * in), bound);
    free(got), free(x), free(dx), gpu->free(X), gpu->free(DX);
    for (int i = 0; i < P; i++) {
        free(w[i]), free(y[i]), free(dy[i]), free(dw[i]);
        gpu->free(W[i]), gpu->free(Y[i]), gpu->free(DY[i]), gpu->free(DW[i]);
    }
}

static void test_rmsnorm(int n, int dim, int fused) {
    float *x = host_rand((size_t)n * dim, -2, 2), *res = host_rand((size_t)n * dim, -1, 1), *w = host_rand(dim, 0.5f, 1.5f);
    float *dy = host_rand((size_t)n * dim, -1, 1), *dsum = host_rand((size_t)n * dim, -1, 1);
    float *dw0 = host_rand(dim, -1, 1);
    float *y = alloc_f32((size_t)n * dim), *sum = alloc_f32((size_t)n * dim), *r = alloc_f32(n);
    float *dx = alloc_f32((size_t)n * dim), *dw = alloc_f32(dim);
    memcpy(dw, dw0, dim * sizeof(float));
    float *X = dev_copy(x, (size_t)n * dim), *RES = dev_copy(res, (size_t)n * dim), *W = dev_copy(w, dim);
    float *DY = dev_copy(dy, (size_t)n * dim), *DSUM = dev_copy(dsum, (size_t)n * dim), *DW = dev_copy(dw0, dim);
    float *Y = gpu->alloc((size_t)n * dim * 4), *SUM = gpu->alloc((size_t)n * dim * 4), *R = gpu->alloc(n * 4);
    float *DX = gpu->alloc((size_t)n * dim * 4);
    char label[128];
    if (fused) {
        cpu_f32_add_rmsnorm_fwd(sum, y, r, x, res, w, n, dim, 1e-6f);
        gpu->add_rmsnorm_fwd(SUM, Y, R, X, RES, W, n, dim, 1e-6f);
        cpu_f32_add_rmsnorm_bwd(dx, dw, dy, dsum, sum, w, r, n, dim);
        gpu->add_rmsnorm_bwd(DX, DW, DY, DSUM, SUM, W, R, n, dim);
        snprintf(label, sizeof label, "add_rmsnorm n=%d dim=%d: sum", n, dim);
        compare(label, SUM, sum, (size_t)n * dim);
    } else {
        cpu_f32_rmsnorm_fwd(y, r, x, w, n, dim, 1e-6f);
        gpu->rmsnorm_fwd(Y, R, X, W, n, dim, 1e-6f);
        cpu_f32_rmsnorm_bwd(dx, dw, dy, x, w, r, n, dim);
        gpu->rmsnorm_bwd(DX, DW, DY, X, W, R, n, dim);
    }
    const char *op = fused ? "add_rmsnorm" : "rmsnorm";
    snprintf(label, sizeof label, "%s n=%d dim=%d: y", op, n, dim);
    compare(label, Y, y, (size_t)n * dim);
    snprintf(label, sizeof label, "%s n=%d dim=%d: dx", op, n, dim);
    compare(label, DX, dx, (size_t)n * dim);
    snprintf(label, sizeof label, "%s n=%d dim=%d: dweight (accumulated)", op, n, dim);
    compare(label, DW, dw, dim);
    float *a = x, *b = res; /* free everything */
    free(a), free(b), free(w), free(dy), free(dsum), free(dw0), free(y), free(sum), free(r), free(dx), free(dw);
    gpu->free(X), gpu->free(RES), gpu->free(W), gpu->free(DY), gpu->free(DSUM), gpu->free(DW), gpu->free(Y);
    gpu->free(SUM), gpu->free(R), gpu->free(DX);
}

static void test_linear_mlp(int n, int dim, int inter) {
    const size_t nd = (size_t)n * dim, ni = (size_t)n * inter, wi = (size_t)inter * dim;
    float *x = host_rand(nd, -1, 1), *wg = host_rand(wi, -0.2f, 0.2f), *wu = host_rand(wi, -0.2f, 0.2f);
    float *wd = host_rand(wi, -0.2f, 0.2f), *b = host_rand(inter, -1, 1), *dy = host_rand(nd, -1, 1);
    float *y = alloc_f32(ni), *acts = alloc_f32(3 * ni), *out = alloc_f32(nd), *scratch = alloc_f32(2 * ni);
    float *dx = alloc_f32(nd), *dwg = host_rand(wi, -1, 1), *dwu = host_rand(wi, -1, 1), *dwd = host_rand(wi, -1, 1);
    float *X = dev_copy(x, nd), *WG = dev_copy(wg, wi), *WU = dev_copy(wu, wi), *WD = dev_copy(wd, wi);
    float *B = dev_copy(b, inter), *DY = dev_copy(dy, nd), *DWG = dev_copy(dwg, wi), *DWU = dev_copy(dwu, wi);
    float *DWD = dev_copy(dwd, wi), *Y = gpu->alloc(ni * 4), *ACTS = gpu->alloc(3 * ni * 4), *OUT = gpu->alloc(nd * 4);
    float *SCR = gpu->alloc(2 * ni * 4), *DX = gpu->alloc(nd * 4);
    char label[128];
    cpu_f32_linear_fwd(y, x, wg, b, n, dim, inter);
    gpu->linear_fwd(Y, X, WG, B, n, dim, inter);
    snprintf(label, sizeof label, "linear_fwd with bias %dx%d -> %d", n, dim, inter);
    compare(label, Y, y, ni);
    cpu_f32_mlp_fwd(out, acts, x, NULL, wg, wu, wd, n, dim, inter);
    gpu->mlp_fwd(OUT, ACTS, X, NULL, WG, WU, WD, n, dim, inter);
    snprintf(label, sizeof label, "mlp_fwd n=%d dim=%d inter=%d: y", n, dim, inter);
    compare(label, OUT, out, nd);
    /* added onto a residual: into another buffer, and in place (y aliasing the residual) */
    float *res = host_rand(nd, -1, 1), *RES = dev_copy(res, nd);
    cpu_f32_mlp_fwd(out, acts, x, res, wg, wu, wd, n, dim, inter);
    gpu->mlp_fwd(OUT, ACTS, X, RES, WG, WU, WD, n, dim, inter);
    compare("mlp_fwd onto a residual", OUT, out, nd);
    gpu->mlp_fwd(RES, ACTS, X, RES, WG, WU, WD, n, dim, inter);
    compare("mlp_fwd onto a residual, in place", RES, out, nd);
    free(res), gpu->free(RES);
    cpu_f32_mlp_bwd(dx, dwg, dwu, dwd, dy, x, acts, wg, wu, wd, scratch, n, dim, inter);
    gpu->mlp_bwd(DX, DWG, DWU, DWD, DY, X, ACTS, WG, WU, WD, SCR, n, dim, inter);
    snprintf(label, sizeof label, "mlp_bwd n=%d dim=%d inter=%d: dx", n, dim, inter);
    compare(label, DX, dx, nd);
    snprintf(label, sizeof label, "mlp_bwd: dw_gate, dw_up, dw_down (accumulated)");
    float *g1 = back(DWG, wi), *g2 = back(DWU, wi), *g3 = back(DWD, wi);
    double e = rel_err_f32(g1, dwg, wi), e2 = rel_err_f32(g2, dwu, wi), e3 = rel_err_f32(g3, dwd, wi);
    check_le(label, e > e2 ? (e > e3 ? e : e3) : (e2 > e3 ? e2 : e3), 1e-5);
    free(g1), free(g2), free(g3);
    free(x), free(wg), free(wu), free(wd), free(b), free(dy), free(y), free(acts), free(out), free(scratch), free(dx);
    free(dwg), free(dwu), free(dwd);
    gpu->free(X), gpu->free(WG), gpu->free(WU), gpu->free(WD), gpu->free(B), gpu->free(DY), gpu->free(DWG);
    gpu->free(DWU), gpu->free(DWD), gpu->free(Y), gpu->free(ACTS), gpu->free(OUT), gpu->free(SCR), gpu->free(DX);
}

static void test_embedding_ce(int n, int dim, int vocab) {
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n), *tgt = malloc(sizeof(int32_t) * (size_t)n);
    uint64_t key = hyla_rng_key(9, HYLA_RNG_TEST, 0, 0);
    for (int i = 0; i < n; i++) {
        tok[i] = (int32_t)(hyla_rng_u64(key, (uint64_t)i) % (uint64_t)vocab);
        tgt[i] = i % 7 == 3 ? -100 : (int32_t)(hyla_rng_u64(key, (uint64_t)(i + n)) % (uint64_t)vocab);
    }
    const size_t vd = (size_t)vocab * dim, nd = (size_t)n * dim, nv = (size_t)n * vocab;
    float *table = host_rand(vd, -1, 1), *dout = host_rand(nd, -1, 1), *dtable = host_rand(vd, -1, 1);
    float *out = alloc_f32(nd), *logits = host_rand(nv, -4, 4), *losses = alloc_f32(n), *dlogits = alloc_f32(nv);
    int32_t *TOK = gpu->alloc(sizeof(int32_t) * (size_t)n), *TGT = gpu->alloc(sizeof(int32_t) * (size_t)n);
    gpu->to_device(TOK, tok, sizeof(int32_t) * (size_t)n), gpu->to_device(TGT, tgt, sizeof(int32_t) * (size_t)n);
    float *TABLE = dev_copy(table, vd), *DOUT = dev_copy(dout, nd), *DTABLE = dev_copy(dtable, vd);
    float *OUT = gpu->alloc(nd * 4), *LOGITS = dev_copy(logits, nv), *LOSSES = gpu->alloc((size_t)n * 4);
    float *DLOGITS = gpu->alloc(nv * 4);
    cpu_f32_embedding_fwd(out, tok, table, n, dim);
    gpu->embedding_fwd(OUT, TOK, TABLE, n, dim);
    compare("embedding_fwd", OUT, out, nd);
    cpu_f32_embedding_bwd(dtable, dout, tok, n, dim, 5);
    gpu->embedding_bwd(DTABLE, DOUT, TOK, n, dim, 5);
    compare("embedding_bwd (repeated tokens, padding row 5, accumulated)", DTABLE, dtable, vd);
    int valid_c = 0, valid_g = 0;
    float mean_c = cpu_f32_cross_entropy_fwd(losses, logits, tgt, n, vocab, -100, &valid_c);
    float mean_g = gpu->cross_entropy_fwd(LOSSES, LOGITS, TGT, n, vocab, -100, &valid_g);
    check_true("cross_entropy valid count", valid_c == valid_g);
    check_le("cross_entropy mean", fabs((double)mean_g - mean_c) / mean_c, 1e-5);
    compare("cross_entropy per-position losses", LOSSES, losses, (size_t)n);
    cpu_f32_cross_entropy_bwd(dlogits, logits, tgt, n, vocab, -100, valid_c, 0.5f);
    gpu->cross_entropy_bwd(DLOGITS, LOGITS, TGT, n, vocab, -100, valid_g, 0.5f);
    compare("cross_entropy_bwd dlogits", DLOGITS, dlogits, nv);
    gpu->cross_entropy_bwd(LOGITS, LOGITS, TGT, n, vocab, -100, valid_g, 0.5f);
    compare("cross_entropy_bwd in place", LOGITS, dlogits, nv);
    free(tok), free(tgt), free(table), free(dout), free(dtable), free(out), free(logits), free(losses), free(dlogits);
    gpu->free(TOK), gpu->free(TGT), gpu->free(TABLE), gpu->free(DOUT), gpu->free(DTABLE), gpu->free(OUT);
    gpu->free(LOGITS), gpu->free(LOSSES), gpu->free(DLOGITS);
}

static void test_optimizer(size_t count) {
    float *p = host_rand(count, -1, 1), *g = host_rand(count, -2, 2), *m = host_rand(count, -0.1f, 0.1f);
    float *v = host_rand(count, 0, 0.1f);
    float *P = dev_copy(p, count), *G = dev_copy(g, count), *M = dev_copy(m, count), *V = dev_copy(v, count);
    /* the norm, the clipping factor and AdamW all on the device, as fsdp_optimizer_step runs them */
    double sc = 0.25, sg = 0.25, sg2 = 0.25; /* added onto a non-zero accumulator */
    double *SG = gpu->alloc(sizeof(double));
    gpu->to_device(SG, &sg, sizeof sg);
    cpu_f32_sum_squares_add(&sc, g, count);
    gpu->sum_squares_add(SG, G, count);
    gpu->to_host(&sg, SG, sizeof sg);
    gpu->to_device(SG, &sg2, sizeof sg2);
    gpu->sum_squares_add(SG, G, count);
    gpu->to_host(&sg2, SG, sizeof sg2);
    check_le("sum_squares_add vs CPU", fabs(sg - sc) / sc, 1e-12);
    check_true("sum_squares_add twice: bit-identical", sg == sg2);
    const float max_norm = (float)(0.7 * sqrt(sc)); /* clips by about 0.7 */
    float scale_c = 0, scale_g = 0, *SCALE = gpu->alloc(sizeof(float));
    cpu_f32_grad_clip_scale(&scale_c, &sc, max_norm);
    gpu->grad_clip_scale(SCALE, SG, max_norm);
    gpu->to_host(&scale_g, SCALE, sizeof scale_g);
    check_true("grad_clip_scale: the GPU's factor is the CPU's, bit for bit", scale_g == scale_c && scale_c < 0.71f);
    cpu_f32_adamw_step(p, g, m, v, count, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, &scale_c, 5);
    gpu->adamw_step(P, G, M, V, count, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, SCALE, 5);
    compare("adamw_step params", P, p, count);
    compare("adamw_step m", M, m, count);
    compare("adamw_step v", V, v, count);
    /* a non-finite norm: the factor is NaN and AdamW changes nothing */
    const double inf = INFINITY;
    gpu->to_device(SG, &inf, sizeof inf);
    gpu->grad_clip_scale(SCALE, SG, max_norm);
    float *before = back(P, count);
    gpu->adamw_step(P, G, M, V, count, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, SCALE, 6);
    float *after = back(P, count);
    check_bitwise_equal("adamw_step after an infinite norm: parameters untouched (skipped step)", after, before,
                        count * sizeof(float));
    free(before), free(after), gpu->free(SG), gpu->free(SCALE);
    /* step statistics: acc += weight * x in double */
    double acc_c[5] = {1, 2, 3, 4, 5}, acc_g[5];
    double *ACC = gpu->alloc(sizeof acc_c);
    gpu->to_device(ACC, acc_c, sizeof acc_c);
    cpu_f32_accumulate_f64(acc_c, g, 5, 37.0);
    gpu->accumulate_f64(ACC, G, 5, 37.0);
    gpu->to_host(acc_g, ACC, sizeof acc_g);
    check_bitwise_equal("accumulate_f64: the GPU's sums are the CPU's", acc_g, acc_c, sizeof acc_c);
    gpu->free(ACC);
    cpu_f32_axpy(p, g, -0.5f, count);
    gpu->axpy(P, G, -0.5f, count);
    compare("axpy", P, p, count);
    free(p), free(g), free(m), free(v);
    gpu->free(P), gpu->free(G), gpu->free(M), gpu->free(V);
}

/* Upload n random values in [lo, hi): the host copy and the device copy. */
struct pair { float *h, *d; size_t n; };
static struct pair rand_pair(size_t n, float lo, float hi) {
    struct pair p = {host_rand(n, lo, hi), NULL, n};
    p.d = dev_copy(p.h, n);
    return p;
}
static struct pair zero_pair(size_t n) {
    struct pair p = {alloc_f32(n), gpu->alloc(n * sizeof(float)), n};
    gpu->zero(p.d, n * sizeof(float));
    return p;
}
static void check_pair(const char *what, struct pair p) { compare(what, p.d, p.h, p.n); }
/* bf16 mode (train.precision = bf16): relative error within 1e-2. */
static void check_pair_bf16(const char *what, struct pair p) {
    float *got = back(p.d, p.n);
    check_le(what, rel_err_f32(got, p.h, p.n), 1e-2);
    free(got);
}
static void free_pairs(struct pair *ps, int n) {
    for (int i = 0; i < n; i++) free(ps[i].h), gpu->free(ps[i].d);
}

static void test_gdn_parts(void) {
    enum { B = 2, L = 37, C = 70, KW = 4, ROWS = 37, H = 5, DIM = 130 };
    const size_t n = (size_t)B * L * C;
    struct pair x = rand_pair(n, -2, 2), w = rand_pair((size_t)C * KW, -1, 1), dy = rand_pair(n, -1, 1);
    struct pair y = zero_pair(n), dx = zero_pair(n), dw = rand_pair((size_t)C * KW, -1, 1);
    cpu_f32_shortconv_silu_fwd(y.h, x.h, w.h, B, L, C, KW);
    gpu->shortconv_silu_fwd(y.d, x.d, w.d, B, L, C, KW);
    check_pair("shortconv_silu_fwd B=2 L=37 C=70 kw=4", y);
    cpu_f32_shortconv_silu_bwd(dx.h, dw.h, dy.h, x.h, w.h, B, L, C, KW);
    gpu->shortconv_silu_bwd(dx.d, dw.d, dy.d, x.d, w.d, B, L, C, KW);
    check_pair("shortconv_silu_bwd dx", dx);
    check_pair("shortconv_silu_bwd dw (accumulated)", dw);
    struct pair conv[] = {x, w, dy, y, dx, dw};
    free_pairs(conv, 6);

    struct pair lx = rand_pair((size_t)ROWS * DIM, -2, 2), ly = zero_pair((size_t)ROWS * DIM), lr = zero_pair(ROWS);
    struct pair ldy = rand_pair((size_t)ROWS * DIM, -1, 1), ldx = zero_pair((size_t)ROWS * DIM);
    cpu_f32_l2norm_fwd(ly.h, lr.h, lx.h, ROWS, DIM, 1e-6f);
    gpu->l2norm_fwd(ly.d, lr.d, lx.d, ROWS, DIM, 1e-6f);
    check_pair("l2norm_fwd rows=37 dim=130: y", ly);
    check_pair("l2norm_fwd rstd", lr);
    cpu_f32_l2norm_bwd(ldx.h, ldy.h, ly.h, lr.h, ROWS, DIM);
    gpu->l2norm_bwd(ldx.d, ldy.d, ly.d, lr.d, ROWS, DIM);
    check_pair("l2norm_bwd dx", ldx);
    struct pair l2[] = {lx, ly, lr, ldy, ldx};
    free_pairs(l2, 5);

    /* the convolution and the norm over heads in one op: the fused kernel (heads of 128, C a
     * multiple of 128: the 0.4B's q and k, L 37 ending mid-run) and the two ops (heads of 64) */
    static const int shapes[][4] = {{2, 37, 1024, 128}, {1, 70, 256, 128}, {2, 37, 192, 64}};
    for (int i = 0; i < 3; i++) {
        const int b = shapes[i][0], l = shapes[i][1], c = shapes[i][2], hd = shapes[i][3];
        const size_t nc = (size_t)b * l * c, rows = nc / hd;
        struct pair cx = rand_pair(nc, -2, 2), cw = rand_pair((size_t)c * KW, -1, 1);
        struct pair cy = zero_pair(nc), cr = zero_pair(rows);
        char label[128];
        cpu_f32_shortconv_silu_l2norm_fwd(cy.h, cr.h, cx.h, cw.h, b, l, c, KW, hd, 1e-6f);
        gpu->shortconv_silu_l2norm_fwd(cy.d, cr.d, cx.d, cw.d, b, l, c, KW, hd, 1e-6f);
        snprintf(label, sizeof label, "shortconv_silu_l2norm_fwd B=%d L=%d C=%d head %d: y", b, l, c, hd);
        check_pair(label, cy);
        check_pair("shortconv_silu_l2norm_fwd rstd", cr);
        struct pair cl[] = {cx, cw, cy, cr};
        free_pairs(cl, 4);
    }

    /* a-logits up to 30: the softplus's linear branch above 20 is exercised; the logits and
     * their gradients at a row stride LD > H (the model's is 2H) */
    enum { LD = H + 3 };
    struct pair bl = rand_pair((size_t)ROWS * LD, -4, 4), al = rand_pair((size_t)ROWS * LD, -10, 30);
    struct pair A = rand_pair(H, -1, 2), dt = rand_pair(H, -3, 0), beta = zero_pair((size_t)ROWS * H);
    struct pair g = zero_pair((size_t)ROWS * H), dbeta = rand_pair((size_t)ROWS * H, -1, 1);
    struct pair dg = rand_pair((size_t)ROWS * H, -1, 1), dbl = zero_pair((size_t)ROWS * LD);
    struct pair dal = zero_pair((size_t)ROWS * LD), dA = rand_pair(H, -1, 1), ddt = rand_pair(H, -1, 1);
    cpu_f32_gdn_gates_fwd(beta.h, g.h, bl.h, al.h, LD, A.h, dt.h, ROWS, H);
    gpu->gdn_gates_fwd(beta.d, g.d, bl.d, al.d, LD, A.d, dt.d, ROWS, H);
    check_pair("gdn_gates_fwd beta", beta);
    check_pair("gdn_gates_fwd g (softplus both branches)", g);
    cpu_f32_gdn_gates_bwd(dbl.h, dal.h, dA.h, ddt.h, dbeta.h, dg.h, bl.h, al.h, LD, A.h, dt.h, ROWS, H);
    gpu->gdn_gates_bwd(dbl.d, dal.d, dA.d, ddt.d, dbeta.d, dg.d, bl.d, al.d, LD, A.d, dt.d, ROWS, H);
    check_pair("gdn_gates_bwd db_logits", dbl);
    check_pair("gdn_gates_bwd da_logits", dal);
    check_pair("gdn_gates_bwd dA_log (accumulated)", dA);
    check_pair("gdn_gates_bwd ddt_bias (accumulated)", ddt);
    struct pair gates[] = {bl, al, A, dt, beta, g, dbeta, dg, dbl, dal, dA, ddt};
    free_pairs(gates, 12);

    struct pair gx = rand_pair((size_t)ROWS * 13, -2, 2), gz = rand_pair((size_t)ROWS * 13, -3, 3);
    struct pair gw = rand_pair(13, 0.5f, 1.5f), gy = zero_pair((size_t)ROWS * 13), gr = zero_pair(ROWS);
    struct pair gdy = rand_pair((size_t)ROWS * 13, -1, 1), gdx = zero_pair((size_t)ROWS * 13);
    struct pair gdz = zero_pair((size_t)ROWS * 13), gdw = rand_pair(13, -1, 1);
    cpu_f32_gated_rmsnorm_fwd(gy.h, gr.h, gx.h, gz.h, gw.h, ROWS, 13, 1e-6f);
    gpu->gated_rmsnorm_fwd(gy.d, gr.d, gx.d, gz.d, gw.d, ROWS, 13, 1e-6f);
    check_pair("gated_rmsnorm_fwd rows=37 dim=13: y", gy);
    cpu_f32_gated_rmsnorm_bwd(gdx.h, gdz.h, gdw.h, gdy.h, gx.h, gz.h, gw.h, gr.h, ROWS, 13);
    gpu->gated_rmsnorm_bwd(gdx.d, gdz.d, gdw.d, gdy.d, gx.d, gz.d, gw.d, gr.d, ROWS, 13);
    check_pair("gated_rmsnorm_bwd dx", gdx);
    check_pair("gated_rmsnorm_bwd dgate", gdz);
    check_pair("gated_rmsnorm_bwd dweight (accumulated)", gdw);
    struct pair gn[] = {gx, gz, gw, gy, gr, gdy, gdx, gdz, gdw};
    free_pairs(gn, 9);

    const size_t rn = (size_t)2 * 37 * 3 * 16;
    struct pair rx = rand_pair(rn, -1, 1), ry = zero_pair(rn), rdx = zero_pair(rn);
    cpu_f32_rope_fwd(ry.h, rx.h, 2, 37, 3, 16, 10000.0f, 5);
    gpu->rope_fwd(ry.d, rx.d, 2, 37, 3, 16, 10000.0f, 5);
    check_pair("rope_fwd B=2 L=37 H=3 d=16 pos0=5", ry);
    cpu_f32_rope_bwd(rdx.h, ry.h, 2, 37, 3, 16, 10000.0f, 5);
    gpu->rope_bwd(rdx.d, ry.d, 2, 37, 3, 16, 10000.0f, 5);
    check_pair("rope_bwd", rdx);
    gpu->rope_fwd(rx.d, rx.d, 2, 37, 3, 16, 10000.0f, 5);
    compare("rope_fwd in place", rx.d, ry.h, rn);
    struct pair rp[] = {rx, ry, rdx};
    free_pairs(rp, 3);
}

/* attention with window_left wl (and LTE's selection when lte), GQA ratio Hq/Hkv */
static void test_attention_in(int L, int Hq, int Hkv, int d, int wl, int lte, int bf16) {
    enum { B = 2 };
    const size_t nq = (size_t)B * L * Hq * d, nk = (size_t)B * L * Hkv * d, nl = (size_t)B * L * Hq;
    struct pair q = rand_pair(nq, -1, 1), k = rand_pair(nk, -1, 1), v = rand_pair(nk, -1, 1), dO = rand_pair(nq, -1, 1);
    struct pair o = zero_pair(nq), lse = zero_pair(nl), dq = zero_pair(nq), dk = zero_pair(nk), dv = zero_pair(nk);
    const size_t ns = (size_t)B * L * Hkv;
    struct pair score = rand_pair(ns, -0.5f, 0.5f);
    uint8_t *sel = NULL, *SEL = NULL;
    if (lte) {
        sel = malloc(ns);
        cpu_f32_lte_select(sel, score.h, B, L, Hkv, 2);
        SEL = gpu->alloc(ns);
        gpu->lte_select(SEL, score.d, B, L, Hkv, 2);
        uint8_t *back_sel = malloc(ns);
        gpu->to_host(back_sel, SEL, ns);
        check_true("lte_select equals the CPU's (score > 0 or a sink)", memcmp(back_sel, sel, ns) == 0);
        free(back_sel);
    }
    const float scale = 1.0f / sqrtf((float)d);
    cpu_f32_attention_fwd(o.h, lse.h, q.h, k.h, v.h, sel, B, L, Hq, Hkv, d, wl, scale);
    if (bf16) gpu->set_matmul_precision(1); /* the tensor-core kernels */
    gpu->attention_fwd(o.d, lse.d, q.d, k.d, v.d, SEL, B, L, Hq, Hkv, d, wl, scale);
    cpu_f32_attention_bwd(dq.h, dk.h, dv.h, dO.h, q.h, k.h, v.h, o.h, lse.h, sel, B, L, Hq, Hkv, d, wl, scale);
    gpu->attention_bwd(dq.d, dk.d, dv.d, dO.d, q.d, k.d, v.d, o.d, lse.d, SEL, B, L, Hq, Hkv, d, wl, scale);
    gpu->set_matmul_precision(0);
    char label[160];
    const char *kind = lte ? "LTE window+selected" : wl < 0 ? "causal" : "sliding window";
    struct pair outs[] = {o, lse, dq, dk, dv};
    const char *names[] = {"o", "lse", "dq", "dk", "dv"};
    for (int i = 0; i < 5; i++) {
        snprintf(label, sizeof label, "attention %s%s L=%d Hq=%d Hkv=%d d=%d wl=%d: %s", kind, bf16 ? " bf16" : "", L,
                 Hq, Hkv, d, wl, names[i]);
        if (bf16) check_pair_bf16(label, outs[i]);
        else check_pair(label, outs[i]);
    }
    if (lte) { /* the STE and the L1 term on the same scores */
        const size_t nkr = nk; /* dv [B, L, Hkv, d] as dv' */
        struct pair dscore = zero_pair(ns), lam = rand_pair(Hkv, 0.1f, 1), kept = zero_pair(Hkv);
        gpu->to_device(dv.d, dv.h, nkr * sizeof(float)); /* the same dv' on both sides (bf16 attention differs) */
        cpu_f32_lte_ste_bwd(dscore.h, dv.h, v.h, B, L, Hkv, d);
        gpu->lte_ste_bwd(dscore.d, dv.d, v.d, B, L, Hkv, d);
        check_pair("lte_ste_bwd dscore = sum dv' v", dscore);
        double l1c = 0.5, l1g = 0.5, *L1G = gpu->alloc(sizeof(double)); /* added onto 0.5 */
        gpu->to_device(L1G, &l1g, sizeof l1g);
        cpu_f32_lte_l1_fwd(&l1c, kept.h, score.h, lam.h, 0.01f, B, L, Hkv, 6);
        gpu->lte_l1_fwd(L1G, kept.d, score.d, lam.d, 0.01f, B, L, Hkv, 6);
        gpu->to_host(&l1g, L1G, sizeof l1g);
        gpu->free(L1G);
        check_le("lte_l1_fwd loss (added onto the accumulator)", fabs(l1g - l1c) / fabs(l1c - 0.5), 1e-5);
        check_pair("lte_l1_fwd kept fraction", kept);
        cpu_f32_lte_l1_bwd(dscore.h, score.h, lam.h, 0.01f, B, L, Hkv, 6);
        gpu->lte_l1_bwd(dscore.d, score.d, lam.d, 0.01f, B, L, Hkv, 6);
        check_pair("lte_l1_bwd dscore (accumulated, last 6 positions excluded)", dscore);
        struct pair extra[] = {dscore, lam, kept};
        free_pairs(extra, 3);
        free(sel);
        gpu->free(SEL);
    }
    struct pair all[] = {q, k, v, dO, o, lse, dq, dk, dv, score};
    free_pairs(all, 10);
}

static void test_attention(int L, int Hq, int Hkv, int d, int wl, int lte) {
    test_attention_in(L, Hq, Hkv, d, wl, lte, 0);
}

/* The LTE router against the CPU twin: fp32 within 1e-5. bf16 (train.precision = bf16 with
 * HYLA_ROUTER_MMA=1: the fused kernels' products on the tensor cores, their convs' and input
 * gradients' operands rounded to tf32, the weight gradients' to bf16) within 1e-2:
 * tests/gpu/emu/run_router.sh measures score and acts ~5e-4, dk and dv up to 2.3e-3, dparams up
 * to 3.6e-3 from the exact values, and checks the form against an fp64 twin with the same
 * operands. The saved activations must differ from fp32 by more than 1.5e-6 (the tensor cores
 * ran) and a second run give the same bits. B <= 16 rows, each with its own dropout key. */
static void test_lte_router_in(int B, int L, int H, int d, float p, int bf16) {
    const struct hyla_lte_router_shape shape = {.heads = H, .head_dim = d, .n_convs = 3, .kernel = {3, 3, 3},
                                                .dilation = {2, 2, 2}};
    const size_t nkv = (size_t)B * L * H * d, np = lte_router_param_count(&shape);
    const size_t na = lte_router_acts_size(&shape, B, L), ns = (size_t)B * L * H;
    struct pair k = rand_pair(nkv, -1, 1), v = rand_pair(nkv, -1, 1), params = rand_pair(np, -0.3f, 0.3f);
    struct pair score = zero_pair(ns), acts = zero_pair(na), dscore = rand_pair(ns, -1, 1);
    struct pair dk = zero_pair(nkv), dv = zero_pair(nkv), dparams = rand_pair(np, -1, 1);
    float *dparams0 = alloc_f32(np); /* the values the gradient is added onto */
    memcpy(dparams0, dparams.h, np * sizeof(float));
    uint64_t key[16]; /* one dropout key per row */
    for (int b = 0; b < B && b < 16; b++) key[b] = 12345 + 7919 * (uint64_t)b;
    const double bound = bf16 ? 1e-2 : 1e-5;
    const char *env = getenv("HYLA_ROUTER_MMA");
    char *saved_env = env ? strdup(env) : NULL;
    if (bf16) setenv("HYLA_ROUTER_MMA", "1", 1), gpu->set_matmul_precision(1);
    const char *mode = bf16 ? " bf16" : "";
    char label[160];
    cpu_f32_lte_router_fwd(score.h, acts.h, k.h, v.h, params.h, &shape, B, L, p, key);
    gpu->lte_router_fwd(score.d, acts.d, k.d, v.d, params.d, &shape, B, L, p, key);
    cpu_f32_lte_router_bwd(dk.h, dv.h, dparams.h, dscore.h, k.h, v.h, params.h, acts.h, &shape, B, L, p, key);
    gpu->lte_router_bwd(dk.d, dv.d, dparams.d, dscore.d, k.d, v.d, params.d, acts.d, &shape, B, L, p, key);
    { /* a second run, dparams added onto the same values, dk and dv onto random ones (ops_lte.h:
       * the router's share is added onto the attention's): the same bits, the bases added */
        float *s2 = gpu->alloc(ns * sizeof(float)), *a2 = gpu->alloc(na * sizeof(float));
        float *base_k = host_rand(nkv, -1, 1), *base_v = host_rand(nkv, -1, 1);
        float *k2 = dev_copy(base_k, nkv), *v2 = dev_copy(base_v, nkv);
        float *p2 = dev_copy(dparams0, np);
        gpu->lte_router_fwd(s2, a2, k.d, v.d, params.d, &shape, B, L, p, key);
        gpu->lte_router_bwd(k2, v2, p2, dscore.d, k.d, v.d, params.d, acts.d, &shape, B, L, p, key);
        const struct { float *first, *second; const float *base; size_t n; } runs[] = {
            {score.d, s2, NULL, ns}, {acts.d, a2, NULL, na}, {dk.d, k2, base_k, nkv}, {dv.d, v2, base_v, nkv},
            {dparams.d, p2, NULL, np}};
        int same = 1;
        for (int i = 0; i < 5; i++) {
            float *x = back(runs[i].first, runs[i].n), *y = back(runs[i].second, runs[i].n);
            if (runs[i].base)
                for (size_t j = 0; j < runs[i].n; j++) x[j] = runs[i].base[j] + x[j];
            same &= memcmp(x, y, runs[i].n * sizeof(float)) == 0;
            free(x), free(y), gpu->free(runs[i].second);
        }
        free(base_k), free(base_v);
        snprintf(label, sizeof label,
                 "lte_router%s B=%d L=%d H=%d d=%d: a second run gives the same bits (dk, dv: added onto their bases)",
                 mode, B, L, H, d);
        check_true(label, same);
    }
    if (bf16 && d == 64) { /* the router at the papers' shape on its own kernels (HYLA_ROUTER_FIXED,
                              * cuda_lte_router_fixed*.cu) and on the fused tensor-core form: the same
                              * forward bits, the same dk and dv bits, dparams within 1e-4 (other tiles) */
        const char *fx = getenv("HYLA_ROUTER_FIXED");
        char *saved_fx = fx ? strdup(fx) : NULL;
        float *out[2][5];
        const size_t n[5] = {ns, na, nkv, nkv, np};
        for (int on = 0; on < 2; on++) {
            setenv("HYLA_ROUTER_FIXED", on ? "1" : "0", 1);
            float *dev[5];
            for (int i = 0; i < 5; i++) dev[i] = gpu->alloc(n[i] * sizeof(float));
            for (int i = 2; i < 5; i++) gpu->zero(dev[i], n[i] * sizeof(float));
            gpu->lte_router_fwd(dev[0], dev[1], k.d, v.d, params.d, &shape, B, L, p, key);
            gpu->lte_router_bwd(dev[2], dev[3], dev[4], dscore.d, k.d, v.d, params.d, dev[1], &shape, B, L, p, key);
            for (int i = 0; i < 5; i++) out[on][i] = back(dev[i], n[i]), gpu->free(dev[i]);
        }
        if (saved_fx) setenv("HYLA_ROUTER_FIXED", saved_fx, 1);
        else unsetenv("HYLA_ROUTER_FIXED");
        free(saved_fx);
        int same = 1;
        for (int i = 0; i < 4; i++) same &= !memcmp(out[0][i], out[1][i], n[i] * sizeof(float));
        snprintf(label, sizeof label,
                 "lte_router bf16 B=%d L=%d H=%d: the fixed-shape kernels give the fused form's bits (score, acts, dk, dv)",
                 B, L, H);
        check_true(label, same);
        snprintf(label, sizeof label, "lte_router_bwd bf16 B=%d L=%d H=%d: fixed-shape dparams against the fused form's",
                 B, L, H);
        check_le(label, rel_err_f32(out[1][4], out[0][4], np), 1e-4);
        for (int i = 0; i < 10; i++) free(out[i / 5][i % 5]);
    }
    if (bf16) {
        gpu->set_matmul_precision(0);
        if (saved_env) setenv("HYLA_ROUTER_MMA", saved_env, 1);
        else unsetenv("HYLA_ROUTER_MMA");
        float *got = back(acts.d, na);
        const double e = rel_err_f32(got, acts.h, na);
        snprintf(label, sizeof label, "lte_router_fwd bf16: the activations differ from fp32 by more than 1.5e-6 (%.2g)",
                 e);
        check_true(label, e > 1.5e-6);
        free(got);
    }
    free(saved_env);
    const struct { const char *what; struct pair p; } outs[] = {
        {"lte_router_fwd: score", score}, {"lte_router_fwd: saved activations (same layout, same dropout masks)", acts},
        {"lte_router_bwd: dk", dk}, {"lte_router_bwd: dv", dv}, {"lte_router_bwd: dparams (accumulated)", dparams}};
    for (int i = 0; i < 5; i++) {
        float *got = back(outs[i].p.d, outs[i].p.n);
        snprintf(label, sizeof label, "%s%s B=%d L=%d H=%d d=%d p=%.1f (bound %.0e)", outs[i].what, mode, B, L, H, d, p,
                 bound);
        check_le(label, rel_err_f32(got, outs[i].p.h, outs[i].p.n), bound);
        free(got);
    }
    free(dparams0);
    struct pair all[] = {k, v, params, score, acts, dscore, dk, dv, dparams};
    free_pairs(all, 9);
}
static void test_lte_router(int B, int L, int H, int d, float p) { test_lte_router_in(B, L, H, d, p, 0); }

/* The delta rule's inputs (q, k L2-normalised as in training), outputs and gradients, on the
 * host and the device. */
struct gdr_case {
    struct pair q, k, v, beta, g, S0, o, S, dO, dS, dq, dk, dv, db, dg, dS0;
    float scale;
};
static struct gdr_case gdr_case_make(int B, int L, int H, int dk, int dv) {
    const size_t nq = (size_t)B * L * H * dk, nv = (size_t)B * L * H * dv, ng = (size_t)B * L * H;
    const size_t ns = (size_t)B * H * dk * dv;
    struct gdr_case c;
    c.q = rand_pair(nq, -1, 1), c.k = rand_pair(nq, -1, 1), c.v = rand_pair(nv, -1, 1);
    for (size_t r = 0; r < ng; r++) {
        double sq = 0, sk = 0;
        for (int i = 0; i < dk; i++) sq += c.q.h[r * dk + i] * c.q.h[r * dk + i], sk += c.k.h[r * dk + i] * c.k.h[r * dk + i];
        for (int i = 0; i < dk; i++) c.q.h[r * dk + i] /= (float)sqrt(sq), c.k.h[r * dk + i] /= (float)sqrt(sk);
    }
    gpu->to_device(c.q.d, c.q.h, nq * 4), gpu->to_device(c.k.d, c.k.h, nq * 4);
    c.beta = rand_pair(ng, 0.1f, 0.9f), c.g = rand_pair(ng, -0.5f, -0.01f), c.S0 = rand_pair(ns, -0.5f, 0.5f);
    c.o = zero_pair(nv), c.S = zero_pair(ns), c.dO = rand_pair(nv, -1, 1), c.dS = rand_pair(ns, -1, 1);
    c.dq = zero_pair(nq), c.dk = zero_pair(nq), c.dv = zero_pair(nv), c.db = zero_pair(ng), c.dg = zero_pair(ng);
    c.dS0 = zero_pair(ns);
    c.scale = 1.0f / sqrtf((float)dk);
    return c;
}
static void gdr_case_free(struct gdr_case *c) {
    struct pair all[] = {c->q, c->k, c->v, c->beta, c->g, c->S0, c->o, c->S, c->dO, c->dS, c->dq, c->dk, c->dv, c->db, c->dg, c->dS0};
    free_pairs(all, 16);
}

static void test_gdr(int B, int L, int H, int dk, int dv) {
    struct gdr_case c = gdr_case_make(B, L, H, dk, dv);
    cpu_f32_gdr_chunk_fwd(c.o.h, c.S.h, c.q.h, c.k.h, c.v.h, c.beta.h, c.g.h, c.S0.h, c.scale, B, L, H, dk, dv, NULL);
    gpu->gdr_chunk_fwd(c.o.d, c.S.d, c.q.d, c.k.d, c.v.d, c.beta.d, c.g.d, c.S0.d, c.scale, B, L, H, dk, dv, NULL);
    char label[160];
    snprintf(label, sizeof label, "gated delta rule B=%d L=%d H=%d dk=%d dv=%d (vs CPU chunked): o", B, L, H, dk, dv);
    check_pair(label, c.o);
    check_pair("gated delta rule: final state", c.S);
    cpu_f32_gdr_chunk_bwd(c.dq.h, c.dk.h, c.dv.h, c.db.h, c.dg.h, c.dS0.h, c.dO.h, c.dS.h, c.q.h, c.k.h, c.v.h, c.beta.h,
                          c.g.h, c.S0.h, c.scale, B, L, H, dk, dv, NULL);
    gpu->gdr_chunk_bwd(c.dq.d, c.dk.d, c.dv.d, c.db.d, c.dg.d, c.dS0.d, c.dO.d, c.dS.d, c.q.d, c.k.d, c.v.d, c.beta.d,
                       c.g.d, c.S0.d, c.scale, B, L, H, dk, dv, NULL);
    struct pair grads[] = {c.dq, c.dk, c.dv, c.db, c.dg, c.dS0};
    const char *names[] = {"dq", "dk", "dv", "dbeta", "dg", "dinitial_state"};
    for (int i = 0; i < 6; i++) {
        snprintf(label, sizeof label, "gated delta rule backward: %s", names[i]);
        compare(label, grads[i].d, grads[i].h, grads[i].n);
    }
    gdr_case_free(&c);
}

/* bf16 mode: gdr_chunk_* run the chunked tensor-core kernels (cuda_gdr_chunk_*.cu); against
 * the fp32 CPU twin within 1e-2, and a second run bit-identical to the first: the first with
 * saved = NULL (the backward computes the forward's chunk quantities again), the second with
 * the forward keeping them in `saved` for the backward. with_states = 0 passes NULL
 * initial/final states and state gradients (as the model does). */
static void test_gdr_bf16(int B, int L, int H, int dk, int dv, int with_states) {
    struct gdr_case c = gdr_case_make(B, L, H, dk, dv);
    struct pair q = c.q, k = c.k, v = c.v, beta = c.beta, g = c.g, S0 = c.S0, o = c.o, S = c.S, dO = c.dO, dS = c.dS;
    struct pair dq = c.dq, dkk = c.dk, dvv = c.dv, db = c.db, dg = c.dg, dS0 = c.dS0;
    const float scale = c.scale;
    const float *s0h = with_states ? S0.h : NULL, *s0d = with_states ? S0.d : NULL;
    const float *dsh = with_states ? dS.h : NULL, *dsd = with_states ? dS.d : NULL;
    cpu_f32_gdr_chunk_fwd(o.h, S.h, q.h, k.h, v.h, beta.h, g.h, s0h, scale, B, L, H, dk, dv, NULL);
    cpu_f32_gdr_chunk_bwd(dq.h, dkk.h, dvv.h, db.h, dg.h, dS0.h, dO.h, dsh, q.h, k.h, v.h, beta.h, g.h, s0h, scale, B, L,
                          H, dk, dv, NULL);
    struct pair outs[] = {o, S, dq, dkk, dvv, db, dg, dS0};
    const char *names[] = {"o", "final state", "dq", "dk", "dv", "dbeta", "dg", "dinitial_state"};
    float *first[8];
    gpu->set_matmul_precision(1);
    /* 0 while the saved path is switched off (HYLA_GDR_SAVED=1 switches it on; then > 0) */
    const size_t n_saved = gpu->gdr_chunk_saved_floats(B, L, H, dk, dv);
    const char *saved_env = getenv("HYLA_GDR_SAVED");
    if (saved_env && atoi(saved_env) == 1)
        check_true("gdr_chunk_saved_floats: room for the forward's chunk quantities (HYLA_GDR_SAVED=1)", n_saved > 0);
    float *saved = n_saved ? gpu->alloc(n_saved * sizeof(float)) : NULL;
    for (int run = 0; run < 2; run++) {
        float *keep = run == 0 ? NULL : saved;
        gpu->gdr_chunk_fwd(o.d, S.d, q.d, k.d, v.d, beta.d, g.d, s0d, scale, B, L, H, dk, dv, keep);
        gpu->gdr_chunk_bwd(dq.d, dkk.d, dvv.d, db.d, dg.d, dS0.d, dO.d, dsd, q.d, k.d, v.d, beta.d, g.d, s0d, scale, B,
                           L, H, dk, dv, keep);
        for (int i = 0; i < 8; i++) {
            char label[160];
            if (run == 0) {
                first[i] = back(outs[i].d, outs[i].n);
                snprintf(label, sizeof label, "gated delta rule in bf16 (chunked) B=%d L=%d H=%d dk=%d dv=%d%s: %s", B, L,
                         H, dk, dv, with_states ? " with states" : "", names[i]);
                check_le(label, rel_err_f32(first[i], outs[i].h, outs[i].n), 1e-2);
            } else {
                float *again = back(outs[i].d, outs[i].n);
                snprintf(label, sizeof label, "gated delta rule in bf16: %s bit-identical with the forward's saved quantities",
                         names[i]);
                check_bitwise_equal(label, first[i], again, outs[i].n * sizeof(float));
                free(again), free(first[i]);
            }
        }
    }
    gpu->set_matmul_precision(0);
    if (saved) gpu->free(saved);
    gdr_case_free(&c);
}

/* gdr_chunk_l2norm_bwd (the delta rule's backward with q's and k's L2-norm backward, in place)
 * in bf16 mode: against the CPU's three ops (gdr_chunk_bwd, l2norm_bwd twice) within 1e-2, and
 * the same bits as the GPU's own three ops; with HYLA_GDR_L2_FUSED=1 the norms run inside the
 * delta rule's last kernels, otherwise as the three ops. */
static void test_gdr_l2norm_bf16(int B, int L, int H, int dk, int dv) {
    check_true("the CUDA backend has gdr_chunk_l2norm_bwd", gpu->gdr_chunk_l2norm_bwd != NULL);
    if (!gpu->gdr_chunk_l2norm_bwd) return;
    struct gdr_case c = gdr_case_make(B, L, H, dk, dv);
    const size_t ng = (size_t)B * L * H;
    struct pair rq = rand_pair(ng, 0.5f, 2.0f), rk = rand_pair(ng, 0.5f, 2.0f);
    cpu_f32_gdr_chunk_bwd(c.dq.h, c.dk.h, c.dv.h, c.db.h, c.dg.h, c.dS0.h, c.dO.h, NULL, c.q.h, c.k.h, c.v.h, c.beta.h,
                          c.g.h, NULL, c.scale, B, L, H, dk, dv, NULL);
    cpu_f32_l2norm_bwd(c.dq.h, c.dq.h, c.q.h, rq.h, (int)ng, dk);
    cpu_f32_l2norm_bwd(c.dk.h, c.dk.h, c.k.h, rk.h, (int)ng, dk);
    gpu->set_matmul_precision(1);
    const size_t n_saved = gpu->gdr_chunk_saved_floats(B, L, H, dk, dv);
    float *saved = n_saved ? gpu->alloc(n_saved * sizeof(float)) : NULL;
    gpu->gdr_chunk_fwd(c.o.d, NULL, c.q.d, c.k.d, c.v.d, c.beta.d, c.g.d, NULL, c.scale, B, L, H, dk, dv, saved);
    gpu->gdr_chunk_l2norm_bwd(c.dq.d, c.dk.d, c.dv.d, c.db.d, c.dg.d, c.dS0.d, c.dO.d, NULL, c.q.d, c.k.d, c.v.d,
                              c.beta.d, c.g.d, NULL, c.scale, B, L, H, dk, dv, saved, rq.d, rk.d);
    struct pair outs[] = {c.dq, c.dk, c.dv, c.db, c.dg};
    const char *names[] = {"dq (raw)", "dk (raw)", "dv", "dbeta", "dg"};
    float *fused[5];
    char label[200];
    for (int i = 0; i < 5; i++) {
        fused[i] = back(outs[i].d, outs[i].n);
        snprintf(label, sizeof label, "gdr_chunk_l2norm_bwd in bf16 B=%d L=%d H=%d dk=%d dv=%d (fused: %s): %s", B, L, H,
                 dk, dv, getenv("HYLA_GDR_L2_FUSED") ? getenv("HYLA_GDR_L2_FUSED") : "default", names[i]);
        check_le(label, rel_err_f32(fused[i], outs[i].h, outs[i].n), 1e-2);
    }
    gpu->gdr_chunk_bwd(c.dq.d, c.dk.d, c.dv.d, c.db.d, c.dg.d, c.dS0.d, c.dO.d, NULL, c.q.d, c.k.d, c.v.d, c.beta.d,
                       c.g.d, NULL, c.scale, B, L, H, dk, dv, saved);
    struct pair dq_raw = zero_pair(c.dq.n), dk_raw = zero_pair(c.dk.n); /* out of place, as the model ran them */
    gpu->l2norm_bwd(dq_raw.d, c.dq.d, c.q.d, rq.d, (int)ng, dk);
    gpu->l2norm_bwd(dk_raw.d, c.dk.d, c.k.d, rk.d, (int)ng, dk);
    const float *three_ops[] = {dq_raw.d, dk_raw.d, c.dv.d, c.db.d, c.dg.d};
    for (int i = 0; i < 5; i++) {
        float *three = back(three_ops[i], outs[i].n);
        snprintf(label, sizeof label, "gdr_chunk_l2norm_bwd in bf16: %s the same bits as the GPU's three ops", names[i]);
        check_bitwise_equal(label, fused[i], three, outs[i].n * sizeof(float));
        free(three), free(fused[i]);
    }
    gpu->set_matmul_precision(0);
    if (saved) gpu->free(saved);
    struct pair norms[] = {rq, rk, dq_raw, dk_raw};
    free_pairs(norms, 4);
    gdr_case_free(&c);
}

/* The delta rule's kernel forms that replace default kernels one for one, each switched on
 * (alone, or with the one it works with) against the defaults (all switched off): every output
 * and gradient the same bits, with `saved` (the model's way; local2 then reads the P that the
 * output kernel saved). The emulation finds them equal on the CPU (emu.gdr_chunk); this is
 * the same check on the GPU's own tensor cores and memory. */
static void test_gdr_forms_bf16(int B, int L, int H, int dk, int dv) {
    static const struct {
        const char *name, *value, *also; /* also: a switch set to 1 with it (NULL: none) */
    } forms[] = {{"HYLA_GDR_STATE3", "1", NULL},  {"HYLA_GDR_STATE3_WARPS", "2", "HYLA_GDR_STATE3"},
                 {"HYLA_GDR_STATE3_WARPS", "8", "HYLA_GDR_STATE3"},
                 {"HYLA_GDR_OVERLAP", "1", "HYLA_GDR_STATE3"}, {"HYLA_GDR_OUT3", "1", NULL},
                 {"HYLA_GDR_LOCAL2", "1", NULL}, {"HYLA_GDR_OUT3", "1", "HYLA_GDR_LOCAL2"}};
    enum { FORMS = sizeof forms / sizeof forms[0] };
    static const char *const switches[] = {"HYLA_GDR_STATE3", "HYLA_GDR_STATE3_WARPS", "HYLA_GDR_OVERLAP",
                                           "HYLA_GDR_OUT3", "HYLA_GDR_LOCAL2"};
    enum { SWITCHES = sizeof switches / sizeof switches[0] };
    char *kept[SWITCHES]; /* the caller's settings (NEW_PATHS), off here, back at the end */
    for (int i = 0; i < SWITCHES; i++) {
        const char *e = getenv(switches[i]);
        kept[i] = e ? strdup(e) : NULL;
        unsetenv(switches[i]);
    }
    struct gdr_case c = gdr_case_make(B, L, H, dk, dv);
    gpu->set_matmul_precision(1);
    const size_t n_saved = gpu->gdr_chunk_saved_floats(B, L, H, dk, dv);
    float *saved = n_saved ? gpu->alloc(n_saved * sizeof(float)) : NULL;
    struct pair outs[] = {c.o, c.S, c.dq, c.dk, c.dv, c.db, c.dg, c.dS0};
    const char *out_names[] = {"o", "final state", "dq", "dk", "dv", "dbeta", "dg", "dinitial_state"};
    float *base[8];
    for (int f = -1; f < FORMS; f++) { /* -1: the defaults */
        if (f >= 0) {
            setenv(forms[f].name, forms[f].value, 1);
            if (forms[f].also) setenv(forms[f].also, "1", 1);
        }
        gpu->gdr_chunk_fwd(c.o.d, c.S.d, c.q.d, c.k.d, c.v.d, c.beta.d, c.g.d, c.S0.d, c.scale, B, L, H, dk, dv, saved);
        gpu->gdr_chunk_bwd(c.dq.d, c.dk.d, c.dv.d, c.db.d, c.dg.d, c.dS0.d, c.dO.d, c.dS.d, c.q.d, c.k.d, c.v.d,
                           c.beta.d, c.g.d, c.S0.d, c.scale, B, L, H, dk, dv, saved);
        for (int i = 0; i < 8; i++) {
            float *got = back(outs[i].d, outs[i].n);
            if (f < 0) {
                base[i] = got;
                continue;
            }
            char label[200];
            snprintf(label, sizeof label, "gated delta rule bf16 B=%d L=%d H=%d dk=%d dv=%d, %s=%s%s%s: %s, the defaults' bits",
                     B, L, H, dk, dv, forms[f].name, forms[f].value, forms[f].also ? " and " : "",
                     forms[f].also ? forms[f].also : "", out_names[i]);
            check_bitwise_equal(label, got, base[i], outs[i].n * sizeof(float));
            free(got);
        }
        for (int i = 0; i < SWITCHES; i++) unsetenv(switches[i]);
    }
    for (int i = 0; i < 8; i++) free(base[i]);
    for (int i = 0; i < SWITCHES; i++) {
        if (kept[i]) setenv(switches[i], kept[i], 1);
        free(kept[i]);
    }
    gpu->set_matmul_precision(0);
    if (saved) gpu->free(saved);
    gdr_case_free(&c);
}

/* NSA against the CPU twin: o, the saved tensors, block_idx (identical), dq, dk, dv, dgate_logits;
 * then a second run with reuse_block_idx = 1 must give the same bits (no atomics). bf16: the
 * window branch's products on the tensor cores, within 1e-2. */
static void test_nsa_in(int B, int L, int Hq, int Hkv, int d, int block, int n_select, int window, int bf16) {
    const struct hyla_nsa_shape shape = {.q_heads = Hq, .kv_heads = Hkv, .head_dim = d, .block_size = block,
                                         .n_select = n_select, .window = window, .scale = 1.0 / sqrt((double)d)};
    const size_t nq = (size_t)B * L * Hq * d, nk = (size_t)B * L * Hkv * d, ng = (size_t)B * L * 3 * Hq;
    const size_t nsv = nsa_saved_size(&shape, B, L), nidx = (size_t)B * L * Hkv * n_select;
    struct pair q = rand_pair(nq, -1, 1), k = rand_pair(nk, -1, 1), v = rand_pair(nk, -1, 1);
    struct pair gl = rand_pair(ng, -2, 2), o = zero_pair(nq), saved = zero_pair(nsv), dO = rand_pair(nq, -1, 1);
    struct pair dq = zero_pair(nq), dk = zero_pair(nk), dv = zero_pair(nk), dgl = zero_pair(ng);
    int32_t *idx = malloc(nidx * sizeof(int32_t) + 1), *IDX = gpu->alloc(nidx * sizeof(int32_t) + 1);
    void (*check)(const char *, struct pair) = bf16 ? check_pair_bf16 : check_pair;
    if (bf16) gpu->set_matmul_precision(1);
    cpu_f32_nsa_fwd(o.h, saved.h, idx, q.h, k.h, v.h, gl.h, &shape, B, L, 0);
    gpu->nsa_fwd(o.d, saved.d, IDX, q.d, k.d, v.d, gl.d, &shape, B, L, 0);
    char label[200];
    snprintf(label, sizeof label, "nsa_fwd%s B=%d L=%d Hq=%d Hkv=%d d=%d block=%d S=%d w=%d: o", bf16 ? " (bf16)" : "",
             B, L, Hq, Hkv, d, block, n_select, window);
    check(label, o);
    check("nsa_fwd: saved tensors (pooled k, v; branch outputs, lse; gates)", saved);
    int32_t *got = malloc(nidx * sizeof(int32_t) + 1);
    gpu->to_host(got, IDX, nidx * sizeof(int32_t));
    check_true("nsa_fwd: the GPU selects the same blocks as the CPU", memcmp(got, idx, nidx * sizeof(int32_t)) == 0);
    gpu->to_device(IDX, idx, nidx * sizeof(int32_t)); /* the backward pass reads the CPU's selection too */
    cpu_f32_nsa_bwd(dq.h, dk.h, dv.h, dgl.h, dO.h, saved.h, idx, q.h, k.h, v.h, gl.h, &shape, B, L);
    gpu->nsa_bwd(dq.d, dk.d, dv.d, dgl.d, dO.d, saved.d, IDX, q.d, k.d, v.d, gl.d, &shape, B, L);
    check("nsa_bwd: dq", dq);
    check("nsa_bwd: dk", dk);
    check("nsa_bwd: dv", dv);
    check("nsa_bwd: dgate_logits", dgl);
    /* again, the selection given (reuse_block_idx = 1): the same bits */
    struct pair first[] = {o, dq, dk, dv, dgl};
    float *before[5];
    for (int i = 0; i < 5; i++) before[i] = back(first[i].d, first[i].n);
    gpu->nsa_fwd(o.d, saved.d, IDX, q.d, k.d, v.d, gl.d, &shape, B, L, 1);
    gpu->nsa_bwd(dq.d, dk.d, dv.d, dgl.d, dO.d, saved.d, IDX, q.d, k.d, v.d, gl.d, &shape, B, L);
    const char *names[] = {"o", "dq", "dk", "dv", "dgate_logits"};
    for (int i = 0; i < 5; i++) {
        float *again = back(first[i].d, first[i].n);
        snprintf(label, sizeof label, "nsa: a second run (block_idx given) gives the same bits: %s", names[i]);
        check_bitwise_equal(label, before[i], again, first[i].n * sizeof(float));
        free(again), free(before[i]);
    }
    if (bf16) gpu->set_matmul_precision(0);
    free(idx), free(got), gpu->free(IDX);
    struct pair all[] = {q, k, v, gl, o, saved, dO, dq, dk, dv, dgl};
    free_pairs(all, 11);
}
static void test_nsa(int B, int L, int Hq, int Hkv, int d, int block, int n_select, int window) {
    test_nsa_in(B, L, Hq, Hkv, d, block, n_select, window, 0);
}

/* FSDP's bf16 gathers: the GPU rounds to bf16 exactly as the CPU does (ties to even, NaN,
 * infinities, values that round up to infinity) and widens exactly. */
static void test_bf16_convert(size_t n) {
    float *x = host_rand(n, -3, 3);
    const uint32_t special[] = {0x3F808000u, 0x3F818000u, 0x3F808001u, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x7F800000u,
                                0x7FC00001u, 0xFF800001u, 0x00000001u, 0x80000000u};
    for (size_t i = 0; i < sizeof special / sizeof special[0] && i < n; i++) memcpy(&x[i * 7 % n], &special[i], 4);
    uint16_t *want = malloc(n * 2), *got = malloc(n * 2);
    float *wide = alloc_f32(n), *wide_got = alloc_f32(n);
    const struct hyla_backend *cpu = hyla_backend_cpu();
    cpu->round_to_bf16(want, x, n);
    cpu->widen_bf16(wide, want, n);
    float *X = dev_copy(x, n), *W = gpu->alloc(n * 4);
    uint16_t *H = gpu->alloc(n * 2);
    gpu->round_to_bf16(H, X, n);
    gpu->to_host(got, H, n * 2);
    gpu->widen_bf16(W, H, n);
    gpu->to_host(wide_got, W, n * 4);
    char label[128];
    snprintf(label, sizeof label, "round_to_bf16 n = %zu: the GPU's bits are the CPU's", n);
    check_bitwise_equal(label, got, want, n * 2);
    snprintf(label, sizeof label, "widen_bf16 n = %zu: the GPU's bits are the CPU's", n);
    check_bitwise_equal(label, wide_got, wide, n * 4);
    free(x), free(want), free(got), free(wide), free(wide_got), gpu->free(X), gpu->free(W), gpu->free(H);
}

/* The LM head fused with cross-entropy against its CPU twin: per-row losses and lse, dh,
 * dweight accumulated onto non-zero values (fp32 1e-5; bf16 mode, the products' operands in
 * bf16, 1e-2), the argmax (a row may differ only where the CPU's two picks are within tol
 * of each other), and dweight bit-identical over two runs. chunk 0: the default chunking. */
static void test_lm_head_ce(int n, int dim, int vocab, int chunk, int bf16) {
    char label0[160];
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)n), *pred = malloc(sizeof(int32_t) * (size_t)n);
    int32_t *pred_g = malloc(sizeof(int32_t) * (size_t)n);
    uint64_t key = hyla_rng_key(11, HYLA_RNG_TEST, 0, 0);
    int valid = 0;
    for (int i = 0; i < n; i++) {
        tgt[i] = i % 5 == 1 ? -100 : (int32_t)(hyla_rng_u64(key, (uint64_t)i) % (uint64_t)vocab);
        valid += tgt[i] != -100;
    }
    const size_t nd = (size_t)n * dim, vd = (size_t)vocab * dim;
    struct pair h = rand_pair(nd, -1, 1), w = rand_pair(vd, -0.3f, 0.3f), dw = rand_pair(vd, -1, 1);
    struct pair losses = zero_pair(n), lse = zero_pair(n), dh = zero_pair(nd);
    int32_t *TGT = gpu->alloc(sizeof(int32_t) * (size_t)n), *PRED = gpu->alloc(sizeof(int32_t) * (size_t)n);
    gpu->to_device(TGT, tgt, sizeof(int32_t) * (size_t)n);
    cpu_f32_lm_head_ce_fwd(losses.h, lse.h, h.h, w.h, tgt, n, dim, vocab, -100, chunk);
    cpu_f32_lm_head_ce_bwd(dh.h, dw.h, h.h, w.h, lse.h, tgt, n, dim, vocab, -100, valid, 0.7f, chunk);
    cpu_f32_lm_head_argmax(pred, h.h, w.h, n, dim, vocab, chunk);
    if (bf16) gpu->set_matmul_precision(1);
    gpu->lm_head_ce_fwd(losses.d, lse.d, h.d, w.d, TGT, n, dim, vocab, -100, chunk);
    gpu->lm_head_ce_bwd(dh.d, dw.d, h.d, w.d, lse.d, TGT, n, dim, vocab, -100, valid, 0.7f, chunk);
    gpu->lm_head_argmax(PRED, h.d, w.d, n, dim, vocab, chunk);
    gpu->set_matmul_precision(0);
    /* the mean loss into a device accumulator (no copy of the losses to the host) */
    double mean_c = 0.25, mean_g = 0.25, *MEAN = gpu->alloc(sizeof(double));
    gpu->to_device(MEAN, &mean_g, sizeof mean_g);
    cpu_f32_loss_mean_add(&mean_c, losses.h, n, valid);
    gpu->loss_mean_add(MEAN, losses.d, n, valid);
    gpu->to_host(&mean_g, MEAN, sizeof mean_g);
    gpu->free(MEAN);
    snprintf(label0, sizeof label0, "loss_mean_add%s n=%d: added onto 0.25, vs the CPU", bf16 ? " bf16" : "", n);
    check_le(label0, fabs(mean_g - mean_c) / fabs(mean_c - 0.25), bf16 ? 1e-2 : 1e-6);
    struct pair outs[] = {losses, lse, dh, dw};
    const char *names[] = {"losses", "lse", "dh", "dweight (accumulated)"};
    char label[160];
    for (int i = 0; i < 4; i++) {
        snprintf(label, sizeof label, "lm_head_ce%s n=%d dim=%d vocab=%d chunk=%d: %s", bf16 ? " bf16" : "", n, dim,
                 vocab, chunk, names[i]);
        if (bf16) check_pair_bf16(label, outs[i]);
        else check_pair(label, outs[i]);
    }
    /* argmax: the CPU's logits tell whether a differing pick is a near tie */
    float *logits = alloc_f32((size_t)n * vocab);
    cpu_f32_linear_fwd(logits, h.h, w.h, NULL, n, dim, vocab);
    gpu->to_host(pred_g, PRED, sizeof(int32_t) * (size_t)n);
    const double tol = bf16 ? 5e-2 : 1e-4;
    int far = 0;
    for (int i = 0; i < n; i++) {
        const float *row = logits + (size_t)i * vocab;
        if (pred_g[i] < 0 || pred_g[i] >= vocab) far++;
        else if (pred_g[i] != pred[i] && fabs((double)row[pred[i]] - row[pred_g[i]]) > tol) far++;
    }
    snprintf(label, sizeof label, "lm_head_argmax%s n=%d vocab=%d chunk=%d: rows that differ beyond a near tie",
             bf16 ? " bf16" : "", n, vocab, chunk);
    check_le(label, far, 0);
    { /* both in one pass (lm_head_ce_fwd_bwd): the two ops' bits (dweight within 1e-6 of the
       * backward's from zero: its first chunk's product has beta 0, for which cuBLAS may pick
       * another kernel, so another order of the sums) */
        float *l1 = gpu->alloc(n * sizeof(float)), *lse1 = gpu->alloc(n * sizeof(float));
        float *dh1 = gpu->alloc(nd * sizeof(float)), *dw1 = gpu->alloc(vd * sizeof(float));
        float *l2 = gpu->alloc(n * sizeof(float)), *lse2 = gpu->alloc(n * sizeof(float));
        float *dh2 = gpu->alloc(nd * sizeof(float)), *dw2 = dev_copy(dw.h, vd); /* written over */
        if (bf16) gpu->set_matmul_precision(1);
        gpu->zero(dw1, vd * sizeof(float));
        gpu->lm_head_ce_fwd(l1, lse1, h.d, w.d, TGT, n, dim, vocab, -100, chunk);
        gpu->lm_head_ce_bwd(dh1, dw1, h.d, w.d, lse1, TGT, n, dim, vocab, -100, valid, 0.7f, chunk);
        gpu->lm_head_ce_fwd_bwd(l2, lse2, dh2, dw2, h.d, w.d, TGT, n, dim, vocab, -100, valid, 0.7f, chunk);
        gpu->set_matmul_precision(0);
        float *const one[4] = {l1, lse1, dh1, dw1}, *const two[4] = {l2, lse2, dh2, dw2};
        const size_t counts[4] = {(size_t)n, (size_t)n, nd, vd};
        int same = 1;
        double dw_err = 0;
        for (int i = 0; i < 4; i++) {
            float *a = back(one[i], counts[i]), *b = back(two[i], counts[i]);
            if (i < 3) same &= !memcmp(a, b, counts[i] * sizeof(float));
            else dw_err = rel_err_f32(b, a, counts[i]);
            free(a), free(b), gpu->free(one[i]), gpu->free(two[i]);
        }
        snprintf(label, sizeof label, "lm_head_ce_fwd_bwd%s n=%d chunk=%d: losses, lse, dh: lm_head_ce_fwd + _bwd's bits",
                 bf16 ? " bf16" : "", n, chunk);
        check_true(label, same);
        snprintf(label, sizeof label, "lm_head_ce_fwd_bwd%s n=%d chunk=%d: dweight vs lm_head_ce_bwd's from zero",
                 bf16 ? " bf16" : "", n, chunk);
        check_le(label, dw_err, 1e-6);
    }
    if (!bf16) { /* the backward pass twice from the same start: the same bits */
        float *r[2];
        for (int k = 0; k < 2; k++) {
            gpu->to_device(dw.d, dw.h, vd * sizeof(float));
            gpu->lm_head_ce_bwd(dh.d, dw.d, h.d, w.d, lse.d, TGT, n, dim, vocab, -100, valid, 0.7f, chunk);
            r[k] = back(dw.d, vd);
        }
        snprintf(label, sizeof label, "lm_head_ce_bwd n=%d chunk=%d: dweight of two runs bit-identical", n, chunk);
        check_bitwise_equal(label, r[0], r[1], vd * sizeof(float));
        free(r[0]), free(r[1]);
    }
    free(logits), free(tgt), free(pred), free(pred_g);
    free_pairs(outs, 4), free_pairs(&h, 1), free_pairs(&w, 1);
    gpu->free(TGT), gpu->free(PRED);
}

/* The ops that write a held array's bf16 copy beside it (backend.h's expect_bf16_copy; written
 * at the source with HYLA_COPIES_AT_SOURCE=1, rounded by the hold without): a bf16 product that
 * reads the held array gives the same bits either way, and the fp32 output is the same. Each
 * producer writes y [rows, cols] (cols = heads of 64 for the per-head ops), a product of
 * rows x cols x 384 past the copies' threshold reads it. With the switch on (its default), every
 * producer must have written its copy, and with it off none (hyla_cuda_copies_at_source). */
enum producer { P_RMSNORM, P_ADD_RMSNORM, P_RMSNORM_BWD, P_ADD_RMSNORM_BWD, P_GATED, P_GATED_BWD, P_ROPE, P_CONV_BWD,
                P_ATTENTION, P_COUNT };
static const char *const producer_names[P_COUNT] = {"rmsnorm_fwd",       "add_rmsnorm_fwd",   "rmsnorm_bwd",
                                                    "add_rmsnorm_bwd",   "gated_rmsnorm_fwd", "gated_rmsnorm_bwd (dgate)",
                                                    "rope_fwd (in place)", "shortconv_silu_bwd", "attention_fwd (o)"};
struct producer_inputs {
    float *x, *z, *dy, *w, *wconv, *rstd, *sum, *dw, *scratch;
    int rows, cols;
};
static void produce(enum producer p, float *y, const struct producer_inputs *in) {
    const int n = in->rows, c = in->cols, heads = n * (c / 64);
    switch (p) {
    case P_RMSNORM: gpu->rmsnorm_fwd(y, in->rstd, in->x, in->w, n, c, 1e-6f); break;
    case P_ADD_RMSNORM: gpu->add_rmsnorm_fwd(in->sum, y, in->rstd, in->x, in->z, in->w, n, c, 1e-6f); break;
    case P_RMSNORM_BWD:
        gpu->rmsnorm_fwd(in->scratch, in->rstd, in->x, in->w, n, c, 1e-6f);
        gpu->rmsnorm_bwd(y, in->dw, in->dy, in->x, in->w, in->rstd, n, c);
        break;
    case P_ADD_RMSNORM_BWD:
        gpu->rmsnorm_fwd(in->scratch, in->rstd, in->x, in->w, n, c, 1e-6f);
        gpu->add_rmsnorm_bwd(y, in->dw, in->dy, in->z, in->x, in->w, in->rstd, n, c);
        break;
    case P_GATED: gpu->gated_rmsnorm_fwd(y, in->rstd, in->x, in->z, in->w, heads, 64, 1e-6f); break;
    case P_GATED_BWD:
        gpu->gated_rmsnorm_fwd(in->scratch, in->rstd, in->x, in->z, in->w, heads, 64, 1e-6f);
        gpu->gated_rmsnorm_bwd(in->scratch, y, in->dw, in->dy, in->x, in->z, in->w, in->rstd, heads, 64);
        break;
    case P_ROPE: gpu->rope_fwd(y, y, 1, n, c / 64, 64, 10000.0f, 0); break; /* y holds x's values */
    case P_CONV_BWD: gpu->shortconv_silu_bwd(y, in->dw, in->dy, in->x, in->wconv, 1, n, c, 4); break;
    case P_ATTENTION: /* causal, heads of 64: the tensor-core kernels */
        gpu->attention_fwd(y, in->rstd, in->x, in->z, in->dy, NULL, 1, n, c / 64, c / 64, 64, -1, 0.125f);
        break;
    default: break;
    }
}
static void test_copies_at_source(int rows, int cols) {
    const size_t n = (size_t)rows * cols;
    const int out = 384;
    float *hx = host_rand(n, -2, 2), *hw = host_rand((size_t)cols, 0.5f, 1.5f);
    float *hW = host_rand((size_t)out * cols, -0.2f, 0.2f);
    struct producer_inputs in = {dev_copy(hx, n), NULL, NULL, dev_copy(hw, (size_t)cols), NULL, NULL, NULL, NULL, NULL,
                                 rows, cols};
    float *hz = host_rand(n, -2, 2), *hdy = host_rand(n, -1, 1), *hwc = host_rand((size_t)cols * 4, -1, 1);
    in.z = dev_copy(hz, n), in.dy = dev_copy(hdy, n), in.wconv = dev_copy(hwc, (size_t)cols * 4);
    in.rstd = gpu->alloc(n * sizeof(float)), in.sum = gpu->alloc(n * sizeof(float));
    in.dw = gpu->alloc((size_t)cols * 4 * sizeof(float)), in.scratch = gpu->alloc(n * sizeof(float));
    gpu->zero(in.dw, (size_t)cols * 4 * sizeof(float));
    float *W = dev_copy(hW, (size_t)out * cols), *y = gpu->alloc(n * sizeof(float));
    float *Z = gpu->alloc((size_t)rows * out * sizeof(float));
    const int at_source = hyla_cuda_copies_at_source_on(); /* the switch, or its default */
    gpu->set_matmul_precision(1);
    for (int p = 0; p < P_COUNT; p++) {
        float *got[2][2]; /* [expected?][y, the product] */
        const unsigned long before = hyla_cuda_copies_at_source();
        for (int expect = 0; expect < 2; expect++) {
            if (p == P_ROPE) gpu->to_device(y, hx, n * sizeof(float)); /* rotated in place, as q */
            if (expect) gpu->expect_bf16_copy(y, n);
            produce((enum producer)p, y, &in);
            gpu->hold_bf16_copy(y, n);
            gpu->linear_fwd(Z, y, W, NULL, rows, cols, out);
            gpu->forget_bf16_twin(y);
            got[expect][0] = back(y, n), got[expect][1] = back(Z, (size_t)rows * out);
        }
        const unsigned long written = hyla_cuda_copies_at_source() - before;
        char label[200];
        snprintf(label, sizeof label,
                 "%s %dx%d: the same fp32 output and bf16 product with the copy expected (%s, copies written %lu)",
                 producer_names[p], rows, cols, at_source ? "written at the source" : "switched off", written);
        check_true(label, !memcmp(got[0][0], got[1][0], n * sizeof(float)) &&
                              !memcmp(got[0][1], got[1][1], (size_t)rows * out * sizeof(float)) &&
                              written == (unsigned long)at_source);
        for (int e = 0; e < 2; e++) free(got[e][0]), free(got[e][1]);
    }
    gpu->set_matmul_precision(0);
    float *devs[] = {in.x, in.z, in.dy, in.w, in.wconv, in.rstd, in.sum, in.dw, in.scratch, W, y, Z};
    for (size_t i = 0; i < sizeof devs / sizeof *devs; i++) gpu->free(devs[i]);
    free(hx), free(hw), free(hW), free(hz), free(hdy), free(hwc);
}

static void test_determinism(void) {
    enum { N = 37, DIM = 1000 };
    float *x = host_rand((size_t)N * DIM, -1, 1), *w = host_rand(DIM, 0.5f, 1.5f), *dy = host_rand((size_t)N * DIM, -1, 1);
    float *X = dev_copy(x, (size_t)N * DIM), *W = dev_copy(w, DIM), *DY = dev_copy(dy, (size_t)N * DIM);
    float *Y = gpu->alloc((size_t)N * DIM * 4), *R = gpu->alloc(N * 4), *DX = gpu->alloc((size_t)N * DIM * 4);
    float *DW1 = gpu->alloc(DIM * 4), *DW2 = gpu->alloc(DIM * 4);
    gpu->zero(DW1, DIM * 4), gpu->zero(DW2, DIM * 4);
    gpu->rmsnorm_fwd(Y, R, X, W, N, DIM, 1e-6f);
    gpu->rmsnorm_bwd(DX, DW1, DY, X, W, R, N, DIM);
    gpu->rmsnorm_bwd(DX, DW2, DY, X, W, R, N, DIM);
    float *a = back(DW1, DIM), *b = back(DW2, DIM);
    check_bitwise_equal("rmsnorm_bwd weight gradient: two runs bit-identical", a, b, DIM * sizeof(float));
    free(a), free(b), free(x), free(w), free(dy);
    gpu->free(X), gpu->free(W), gpu->free(DY), gpu->free(Y), gpu->free(R), gpu->free(DX), gpu->free(DW1);
    gpu->free(DW2);
}

/* `test_cuda_ops [GROUP...]` runs only the named groups (rmsnorm linear embedding_ce lm_head_ce
 * optimizer gdn_parts attention lte_router gdr nsa nsa_bf16 convert determinism); no arguments: all. */
static int n_wanted;
static char **wanted;
static int want(const char *group) {
    if (n_wanted == 0) return 1;
    for (int i = 0; i < n_wanted; i++)
        if (strcmp(wanted[i], group) == 0) return 1;
    return 0;
}

int main(int argc, char **argv) {
    n_wanted = argc - 1, wanted = argv + 1;
    if (hyla_cuda_device_count() == 0) {
        puts("SKIP: no CUDA device");
        return 77;
    }
    char name[256];
    hyla_cuda_device_name(0, name, sizeof name);
    printf("device: %s\n", name);
    gpu = hyla_backend_cuda();
    if (want("rmsnorm")) test_rmsnorm(37, 1000, 0);
    if (want("rmsnorm")) test_rmsnorm(5, 13, 1);
    if (want("rmsnorm")) test_rmsnorm(130, 1024, 1);
    if (want("linear")) test_linear_mlp(37, 127, 301);
    if (want("linear")) test_bf16_matmul(300, 1024, 520);
    if (want("linear")) test_bf16_mlp(515, 256, 704); /* 93M multiply-adds a product: copies */
    if (want("linear")) test_bf16_gemm_strided(260, 520, 700); /* past the copies' threshold */
    if (want("linear")) test_bf16_gemm_strided(33, 17, 9);     /* below it: cuBLAS rounds */
    for (int bf16 = 0; want("linear") && bf16 < 2; bf16++) {
        static const int mixed[3] = {384, 200, 96}, wide[3] = {256, 256, 72};
        test_projections(600, 320, mixed, bf16); /* 600 x 320 x 384 takes copies, the others not */
        test_projections(1030, 256, wide, bf16); /* two past the copies' threshold */
    }
    if (want("embedding_ce")) test_embedding_ce(129, 96, 1000);
    if (want("embedding_ce")) test_embedding_ce(5000, 130, 7); /* runs of ~700 rows over many backward chunks */
    if (want("lm_head_ce")) test_lm_head_ce(300, 96, 1000, 37, 0); /* chunks of 37 rows: the last one short */
    if (want("lm_head_ce")) test_lm_head_ce(129, 127, 5003, 0, 0);  /* the default: one chunk */
    if (want("lm_head_ce")) test_lm_head_ce(1030, 64, 32000, 256, 0);
    if (want("lm_head_ce")) test_lm_head_ce(300, 96, 1000, 37, 1);
    if (want("lm_head_ce")) test_lm_head_ce(1030, 64, 32000, 256, 1);
    if (want("optimizer")) test_optimizer(100003);
    if (want("optimizer")) test_optimizer(5000011); /* more partial sums than the reducing block has threads */
    if (want("gdn_parts")) test_gdn_parts();
    if (want("attention")) test_attention(37, 4, 2, 24, -1, 0);
    if (want("attention")) test_attention(70, 4, 1, 64, 4, 0);
    if (want("attention")) test_attention(45, 2, 2, 40, 3, 1);
    if (want("attention")) test_attention(130, 8, 2, 64, 16, 1);
    /* the tiled kernels: lengths and head dims off the 64 x 64 tiles */
    if (want("attention")) test_attention(300, 4, 2, 64, 70, 1);
    if (want("attention")) test_attention(200, 2, 1, 128, -1, 0);
    if (want("attention")) test_attention(257, 4, 4, 32, 100, 0);
    if (want("attention")) test_attention(150, 2, 2, 100, 20, 1);
    /* bf16 tensor-core kernels (head dims 64, 128) against the fp32 CPU: within 1e-2 */
    if (want("attention")) test_attention_in(300, 4, 2, 64, 70, 1, 1);
    if (want("attention")) test_attention_in(200, 2, 1, 128, -1, 0, 1);
    if (want("attention")) test_attention_in(257, 4, 4, 64, 100, 0, 1);
    if (want("attention")) test_attention_in(130, 8, 2, 64, 16, 1, 1);
    if (want("lte_router")) test_lte_router(2, 37, 3, 8, 0.0f);
    if (want("lte_router")) test_lte_router(1, 70, 2, 64, 0.1f);
    /* sequences shorter than a tap's shift (taps that read only padding), several sequences */
    if (want("lte_router")) test_lte_router(1, 2, 2, 8, 0.1f);
    if (want("lte_router")) test_lte_router(3, 130, 2, 16, 0.1f);
    if (want("lte_router")) test_lte_router(10, 40, 2, 16, 0.1f); /* more rows than a launch takes (8) */
    /* bf16 mode, the products on the tensor cores (HYLA_ROUTER_MMA=1): the 0.4B head, a short
     * sequence, channels not multiples of 16 */
    if (want("lte_router")) test_lte_router_in(1, 70, 2, 64, 0.1f, 1);
    if (want("lte_router")) test_lte_router_in(2, 300, 2, 64, 0.1f, 1);
    if (want("lte_router")) test_lte_router_in(4, 1000, 16, 64, 0.1f, 1); /* the 0.4B heads: persistent blocks */
    if (want("lte_router")) test_lte_router_in(1, 2, 2, 8, 0.1f, 1);
    if (want("lte_router")) test_lte_router_in(3, 130, 2, 24, 0.0f, 1);
    if (want("lte_router")) test_lte_router_in(10, 40, 2, 16, 0.1f, 1);
    if (want("gdr")) test_gdr(2, 37, 2, 16, 8);
    if (want("gdr")) test_gdr(1, 70, 2, 64, 64);
    if (want("gdr")) test_gdr(1, 130, 3, 128, 128);
    if (want("gdr")) test_gdr(2, 45, 1, 40, 24);
    /* bf16: the chunked tensor-core kernels, lengths off the 64-token chunks; only while they
     * are on (the default; HYLA_GDR_CHUNKED=0 switches them off) */
    const char *chunked = getenv("HYLA_GDR_CHUNKED");
    const int chunked_on = !(chunked && *chunked && atoi(chunked) == 0);
    if (want("gdr") && chunked_on) test_gdr_bf16(2, 37, 2, 16, 8, 1);
    if (want("gdr") && chunked_on) test_gdr_bf16(1, 130, 3, 40, 24, 1);
    if (want("gdr") && chunked_on) test_gdr_bf16(2, 200, 2, 64, 64, 0);
    if (want("gdr") && chunked_on) test_gdr_bf16(1, 300, 2, 128, 128, 1);
    if (want("gdr") && chunked_on) test_gdr_l2norm_bf16(2, 130, 2, 40, 24);
    if (want("gdr") && chunked_on) test_gdr_forms_bf16(2, 130, 2, 40, 24);
    if (want("gdr") && chunked_on) test_gdr_forms_bf16(1, 200, 3, 128, 128);
    if (want("gdr") && chunked_on) test_gdr_forms_bf16(1, 70, 1, 33, 20);
    if (want("gdr") && chunked_on) test_gdr_l2norm_bf16(1, 300, 2, 128, 128);
    if (want("gdr") && chunked_on) test_gdr_bf16(1, 64, 1, 128, 128, 0);
    if (want("gdr") && chunked_on) test_gdr_bf16(2, 1000, 2, 128, 128, 1);
    if (want("nsa")) test_nsa(2, 40, 4, 2, 8, 4, 4, 5);
    if (want("nsa")) test_nsa(1, 130, 8, 2, 64, 16, 4, 32);
    /* the tiled kernels (on unless HYLA_NSA_TILED=0; cuda_nsa.cu): one query head per group
     * (G = 1) and 16, 32 (two head chunks); lengths off the blocks; windows below and above the
     * block; blocks of 16, 32, 64, 128 (two key parts); blocks chosen by more queries than one
     * work item holds (L = 1000, block 16); the 0.4B layout; bf16 mode on the tensor cores */
    const char *tiled_env = getenv("HYLA_NSA_TILED");
    const int nsa_tiled = want("nsa") && !(tiled_env && strcmp(tiled_env, "0") == 0);
    if (nsa_tiled) test_nsa(1, 300, 2, 2, 64, 64, 3, 100);
    if (nsa_tiled) test_nsa(2, 1000, 16, 1, 8, 32, 16, 20);
    if (nsa_tiled) test_nsa(1, 130, 16, 2, 64, 64, 1, 512);
    if (nsa_tiled) test_nsa(1, 300, 4, 1, 32, 128, 2, 64);
    if (nsa_tiled) test_nsa(1, 200, 32, 1, 16, 32, 4, 50);
    if (nsa_tiled) test_nsa(1, 1000, 16, 1, 64, 16, 16, 40);
    if (nsa_tiled) test_nsa(1, 2048, 32, 2, 64, 64, 16, 512); /* the 0.4B layout */
    /* bf16 mode (also alone, as group nsa_bf16: the sanitizers' quick run of the tensor-core
     * tiles); block 128: two 64-key tiles a selected block in the query tiles' pipeline */
    const int nsa_bf16 = nsa_tiled || (want("nsa_bf16") && !(tiled_env && strcmp(tiled_env, "0") == 0));
    if (nsa_bf16) test_nsa_in(1, 300, 8, 2, 64, 64, 4, 100, 1);
    if (nsa_bf16) test_nsa_in(1, 600, 32, 2, 64, 32, 8, 100, 1);
    if (nsa_bf16) test_nsa_in(1, 200, 4, 1, 128, 64, 3, 70, 1);
    if (nsa_bf16) test_nsa_in(1, 400, 16, 2, 64, 128, 2, 64, 1);
    if (want("copies")) test_copies_at_source(600, 320);
    if (want("copies")) test_copies_at_source(1030, 256);
    if (want("convert")) test_bf16_convert(1000);
    if (want("convert")) test_bf16_convert(20000003);
    if (want("determinism")) test_determinism();
    const char *missing[128];
    int n = hyla_backend_cuda_missing(missing, 128);
    printf("CUDA ops not implemented yet (%d):", n);
    for (int i = 0; i < n && i < 128; i++) printf(" %s", missing[i]);
    printf("\n");
    return test_finish();
}
