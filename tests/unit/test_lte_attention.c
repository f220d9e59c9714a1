/* LTE pieces around the attention (MODEL.md §5.3-5.6): selection, the straight-through
 * estimator, the L1 term, and the composite layer
 *   router(raw k, v) -> select (sinks) -> RoPE(q), RoPE(k) -> attention(window w, selected)
 * against a brute-force masked attention, with every gradient (q, k, v, router parameters)
 * against finite differences of the STE's surrogate v' = v (1 + score - stop_grad(score)). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* lte_l1_fwd adds its term into an accumulator; these return the term alone. */
static double l1_f64(double *kept, const double *score, const double *lambda, double coef, int B, int L, int H,
                     int margin) {
    double acc = 0;
    cpu_f64_lte_l1_fwd(&acc, kept, score, lambda, coef, B, L, H, margin);
    return acc;
}
static double l1_f32(float *kept, const float *score, const float *lambda, float coef, int B, int L, int H,
                     int margin) {
    double acc = 0;
    cpu_f32_lte_l1_fwd(&acc, kept, score, lambda, coef, B, L, H, margin);
    return acc;
}

static const double THETA = 10000.0;
static const uint64_t DROPOUT_KEYS[4] = {77, 78, 79, 80}; /* one per row (CB <= 4) */

/* ---- selection --------------------------------------------------------------------------- */

static void test_select(void) {
    enum { B = 2, L = 30, H = 3, N = B * L * H };
    double score[N];
    fill_uniform_f64(score, N, -0.5, 0.5, 1);
    score[5] = 0, score[40] = 0, score[N - 1] = 0; /* exactly 0 is not selected */
    uint8_t sel[N];
    int sinks = 4, ok = 1;
    cpu_f64_lte_select(sel, score, B, L, H, sinks);
    for (int i = 0; i < N; i++) ok &= sel[i] == (score[i] > 0 || (i / H) % L < sinks);
    check_true("lte_select: score > 0 or j < sinks (double)", ok);
    float sf[N];
    uint8_t self[N];
    copy_f64_to_f32(sf, score, N);
    cpu_f32_lte_select(self, sf, B, L, H, 0);
    ok = 1;
    for (int i = 0; i < N; i++) ok &= self[i] == (sf[i] > 0);
    check_true("lte_select: no sinks (fp32)", ok);
}

/* ---- STE --------------------------------------------------------------------------------- */

static void test_ste(void) {
    enum { B = 2, L = 21, H = 3, D = 16, N = B * L * H };
    double *dv = alloc_f64(N * D), *v = alloc_f64(N * D), ds[N], want[N];
    fill_uniform_f64(dv, N * D, -1, 1, 2);
    fill_uniform_f64(v, N * D, -1, 1, 3);
    cpu_f64_lte_ste_bwd(ds, dv, v, B, L, H, D);
    for (int i = 0; i < N; i++) {
        want[i] = 0;
        for (int c = 0; c < D; c++) want[i] += dv[(size_t)i * D + c] * v[(size_t)i * D + c];
    }
    check_le("lte_ste_bwd = sum_c dv' v (double)", rel_err_f64(ds, want, N), 1e-15);
    float *dvf = alloc_f32(N * D), *vf = alloc_f32(N * D), dsf[N];
    copy_f64_to_f32(dvf, dv, N * D), copy_f64_to_f32(vf, v, N * D);
    copy_f32_to_f64(dv, dvf, N * D), copy_f32_to_f64(v, vf, N * D);
    cpu_f64_lte_ste_bwd(ds, dv, v, B, L, H, D);
    cpu_f32_lte_ste_bwd(dsf, dvf, vf, B, L, H, D);
    double got[N];
    copy_f32_to_f64(got, dsf, N);
    check_le("lte_ste_bwd fp32 vs double", rel_err_f64(got, ds, N), 1e-6);
    free(dv), free(v), free(dvf), free(vf);
}

/* ---- L1 term ------------------------------------------------------------------------------ */

enum { L1_B = 2, L1_L = 40, L1_H = 3, L1_N = L1_B * L1_L * L1_H, L1_MARGIN = 6 };

struct l1_ctx {
    double score[L1_N], lambda[L1_H], coef;
};

static double l1_loss(void *p) {
    struct l1_ctx *c = p;
    return l1_f64(NULL, c->score, c->lambda, c->coef, L1_B, L1_L, L1_H, L1_MARGIN);
}

static void test_l1(void) {
    struct l1_ctx c;
    /* |score| in [0.05, 0.5]: finite differences with h = 1e-5 never cross relu's kink. */
    fill_uniform_f64(c.score, L1_N, 0.05, 0.5, 4);
    double sign[L1_N];
    fill_uniform_f64(sign, L1_N, -1, 1, 5);
    for (int i = 0; i < L1_N; i++) c.score[i] *= sign[i] < 0 ? -1 : 1;
    /* The sinks are negative (they count only if their score is positive); the last
     * `margin` positions are positive (they must not count). */
    for (int b = 0; b < L1_B; b++)
        for (int h = 0; h < L1_H; h++) {
            for (int j = 0; j < 2; j++) c.score[((size_t)b * L1_L + j) * L1_H + h] = -0.3;
            for (int j = L1_L - L1_MARGIN; j < L1_L; j++) c.score[((size_t)b * L1_L + j) * L1_H + h] = 0.4;
        }
    c.lambda[0] = 0.5, c.lambda[1] = 2.0, c.lambda[2] = 1e-3;
    c.coef = 1.0 / (L1_B * (L1_L - L1_MARGIN) * 12 * L1_H);

    double want = 0, want_kept[L1_H] = {0};
    for (int b = 0; b < L1_B; b++)
        for (int j = 0; j < L1_L - L1_MARGIN; j++)
            for (int h = 0; h < L1_H; h++) {
                double s = c.score[((size_t)b * L1_L + j) * L1_H + h];
                want += c.coef * c.lambda[h] * (s > 0 ? s : 0);
                want_kept[h] += (s > 0) / (double)(L1_B * (L1_L - L1_MARGIN));
            }
    double kept[L1_H];
    double got = l1_f64(kept, c.score, c.lambda, c.coef, L1_B, L1_L, L1_H, L1_MARGIN);
    check_le("lte_l1_fwd vs direct sum over j < L - margin", fabs(got - want) / want, 1e-14);
    check_le("lte_l1_fwd kept_fraction counts score > 0 over j < L - margin", rel_err_f64(kept, want_kept, L1_H),
             1e-15);
    /* Counting `selected` (sinks forced in) or the margin would change the fraction. */
    check_true("lte_l1_fwd kept_fraction: sinks with negative score and the margin not counted",
               kept[0] < 1 && kept[0] > 0 && fabs(kept[0] - want_kept[0]) < 1e-15);

    double grad[L1_N], base[L1_N];
    fill_uniform_f64(base, L1_N, -1, 1, 6);
    for (int i = 0; i < L1_N; i++) grad[i] = base[i];
    cpu_f64_lte_l1_bwd(grad, c.score, c.lambda, c.coef, L1_B, L1_L, L1_H, L1_MARGIN);
    for (int i = 0; i < L1_N; i++) grad[i] -= base[i]; /* it accumulates */
    fd_check("lte_l1 dscore (accumulated onto a random dscore)", c.score, L1_N, grad, l1_loss, &c, 1e-5);
    double margin_grad = 0;
    for (int b = 0; b < L1_B; b++)
        for (int j = L1_L - L1_MARGIN; j < L1_L; j++)
            for (int h = 0; h < L1_H; h++) margin_grad += fabs(grad[((size_t)b * L1_L + j) * L1_H + h]);
    check_le("lte_l1_bwd: no gradient in the last `margin` positions", margin_grad, 0);

    float sf[L1_N], lf[L1_H], keptf[L1_H];
    copy_f64_to_f32(sf, c.score, L1_N), copy_f64_to_f32(lf, c.lambda, L1_H);
    double sd[L1_N], ld[L1_H];
    copy_f32_to_f64(sd, sf, L1_N), copy_f32_to_f64(ld, lf, L1_H);
    double wantf = l1_f64(NULL, sd, ld, c.coef, L1_B, L1_L, L1_H, L1_MARGIN);
    float gotf = (float)l1_f32(keptf, sf, lf, (float)c.coef, L1_B, L1_L, L1_H, L1_MARGIN);
    check_le("lte_l1_fwd fp32 vs double", fabs(gotf - wantf) / wantf, 1e-6);

    double none[L1_H];
    double zero = l1_f64(none, c.score, c.lambda, c.coef, L1_B, 5, L1_H, 6);
    check_true("lte_l1_fwd with margin >= L: 0 and kept_fraction 0",
               zero == 0 && none[0] == 0 && none[1] == 0 && none[2] == 0);
}

/* ---- composite LTE layer ----------------------------------------------------------------- */

enum { CB = 2, CL = 32, HQ = 4, HKV = 2, D = 8, W = 5, SINKS = 2 };
enum { NQ = CB * CL * HQ * D, NKV = CB * CL * HKV * D, NS = CB * CL * HKV, NROW = CB * CL * HQ };

struct layer {
    struct hyla_lte_router_shape rs;
    double p;
    double *q, *k, *v, *params, *dout;
    double *score0;    /* the score at the unperturbed point (stop-gradient in the surrogate) */
    uint8_t *sel;      /* fixed selection */
    double *acts, *score, *qr, *kr, *vs, *o, *lse;
    size_t np;
};

/* Forward of the layer with the selection held fixed; v' = v (1 + score - score0). */
static void layer_fwd(struct layer *x) {
    cpu_f64_lte_router_fwd(x->score, x->acts, x->k, x->v, x->params, &x->rs, CB, CL, x->p, DROPOUT_KEYS);
    cpu_f64_rope_fwd(x->qr, x->q, CB, CL, HQ, D, THETA, 0);
    cpu_f64_rope_fwd(x->kr, x->k, CB, CL, HKV, D, THETA, 0);
    for (int i = 0; i < NS; i++)
        for (int c = 0; c < D; c++)
            x->vs[(size_t)i * D + c] = x->v[(size_t)i * D + c] * (1 + x->score[i] - x->score0[i]);
    cpu_f64_attention_fwd(x->o, x->lse, x->qr, x->kr, x->vs, x->sel, CB, CL, HQ, HKV, D, W, 1 / sqrt((double)D));
}

static double layer_loss(void *p) {
    struct layer *x = p;
    layer_fwd(x);
    return dot_f64(x->dout, x->o, NQ);
}

/* RoPE and masked dense attention written from MODEL.md §4.1 and §5.4. */
static void brute_force_layer(double *o, const struct layer *x) {
    double *qr = alloc_f64(NQ), *kr = alloc_f64(NKV);
    const double *src[2] = {x->q, x->k};
    double *dst[2] = {qr, kr};
    int heads[2] = {HQ, HKV};
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < CB; b++)
            for (int t = 0; t < CL; t++)
                for (int h = 0; h < heads[a]; h++)
                    for (int i = 0; i < D / 2; i++) {
                        size_t at = (((size_t)b * CL + t) * heads[a] + h) * D;
                        double ang = t / pow(THETA, 2.0 * i / D), u = src[a][at + i], w = src[a][at + i + D / 2];
                        dst[a][at + i] = u * cos(ang) - w * sin(ang);
                        dst[a][at + i + D / 2] = w * cos(ang) + u * sin(ang);
                    }
    double p[CL];
    for (int b = 0; b < CB; b++)
        for (int hq = 0; hq < HQ; hq++) {
            int g = hq / (HQ / HKV);
            for (int t = 0; t < CL; t++) {
                double m = -INFINITY, sum = 0;
                for (int j = 0; j < CL; j++) {
                    double sc = x->score[((size_t)b * CL + j) * HKV + g];
                    int vis = j <= t && (t - j <= W || sc > 0 || j < SINKS);
                    const double *qt = qr + (((size_t)b * CL + t) * HQ + hq) * D;
                    const double *kj = kr + (((size_t)b * CL + j) * HKV + g) * D;
                    double s = 0;
                    for (int c = 0; c < D; c++) s += qt[c] * kj[c];
                    p[j] = vis ? s / sqrt((double)D) : -INFINITY;
                    if (p[j] > m) m = p[j];
                }
                for (int j = 0; j < CL; j++) sum += p[j] = exp(p[j] - m);
                for (int c = 0; c < D; c++) {
                    double acc = 0;
                    for (int j = 0; j < CL; j++) acc += p[j] / sum * x->v[(((size_t)b * CL + j) * HKV + g) * D + c];
                    o[(((size_t)b * CL + t) * HQ + hq) * D + c] = acc;
                }
            }
        }
    free(qr), free(kr);
}

/* Weights U(+-1.5/sqrt(fan_in)), biases U(+-0.3), proj bias 0: scores of both signs. */
static void init_router_params(double *params, const struct hyla_lte_router_shape *s, uint64_t seed) {
    struct hyla_lte_router_offsets o = lte_router_offsets(s);
    fill_uniform_f64(params, o.total, -1, 1, seed);
    for (int l = 0; l < s->n_convs; l++) {
        double bound = 1.5 / sqrt((double)lte_router_channels(s, l) * s->kernel[l]);
        for (size_t i = o.conv_weight[l]; i < o.conv_bias[l]; i++) params[i] *= bound;
        size_t end = l + 1 < s->n_convs ? o.conv_weight[l + 1] : o.proj_weight;
        for (size_t i = o.conv_bias[l]; i < end; i++) params[i] *= 0.3;
    }
    double proj_bound = 1.5 / sqrt((double)lte_router_channels(s, s->n_convs));
    for (size_t i = o.proj_weight; i < o.proj_bias; i++) params[i] *= proj_bound;
    for (size_t i = o.proj_bias; i < o.total; i++) params[i] = 0;
}

/* The full layer against the brute force; with fd != 0 every gradient against finite
 * differences as well. */
static void test_composite(double p, int fd) {
    struct layer x = {.rs = {HKV, D, 3, {3, 3, 3, 0}, {2, 2, 2, 0}}, .p = p};
    x.np = lte_router_param_count(&x.rs);
    x.q = alloc_f64(NQ), x.k = alloc_f64(NKV), x.v = alloc_f64(NKV), x.params = alloc_f64(x.np);
    x.dout = alloc_f64(NQ), x.score0 = alloc_f64(NS), x.sel = hyla_calloc(NS, 1);
    x.acts = alloc_f64(lte_router_acts_size(&x.rs, CB, CL)), x.score = alloc_f64(NS);
    x.qr = alloc_f64(NQ), x.kr = alloc_f64(NKV), x.vs = alloc_f64(NKV), x.o = alloc_f64(NQ), x.lse = alloc_f64(NROW);
    fill_uniform_f64(x.q, NQ, -2, 2, 20);
    fill_uniform_f64(x.k, NKV, -1, 1, 21);
    fill_uniform_f64(x.v, NKV, -1, 1, 22);
    init_router_params(x.params, &x.rs, 23);
    fill_uniform_f64(x.dout, NQ, -1, 1, 24);

    /* Router on the raw k, v; selection held fixed from here on. */
    cpu_f64_lte_router_fwd(x.score0, x.acts, x.k, x.v, x.params, &x.rs, CB, CL, p, DROPOUT_KEYS);
    cpu_f64_lte_select(x.sel, x.score0, CB, CL, HKV, SINKS);
    int evicted = 0, kept_old = 0;
    for (int i = 0; i < NS; i++) {
        int j = i / HKV % CL;
        evicted += !x.sel[i];
        kept_old += x.sel[i] && j >= SINKS;
    }
    char label[200];
    snprintf(label, sizeof label, "LTE layer p=%.1f: the router both keeps (%d) and evicts (%d) tokens", p, kept_old,
             evicted);
    check_true(label, evicted > 0 && kept_old > 0);

    layer_fwd(&x);
    double *ref = alloc_f64(NQ);
    brute_force_layer(ref, &x);
    snprintf(label, sizeof label, "LTE layer p=%.1f: router+select+RoPE+attention vs brute force", p);
    check_le(label, rel_err_f64(x.o, ref, NQ), 1e-12);

    /* Backward: attention, the STE into the score, RoPE, the router. */
    double scale = 1 / sqrt((double)D);
    double *dqr = alloc_f64(NQ), *dkr = alloc_f64(NKV), *dvs = alloc_f64(NKV), *dscore = alloc_f64(NS);
    double *dq = alloc_f64(NQ), *dk = alloc_f64(NKV), *dv = alloc_f64(NKV), *dparams = alloc_f64(x.np);
    cpu_f64_attention_bwd(dqr, dkr, dvs, x.dout, x.qr, x.kr, x.vs, x.o, x.lse, x.sel, CB, CL, HQ, HKV, D, W, scale);
    cpu_f64_lte_ste_bwd(dscore, dvs, x.v, CB, CL, HKV, D);
    double *want = alloc_f64(NS);
    for (int i = 0; i < NS; i++)
        for (int c = 0; c < D; c++) want[i] += dvs[(size_t)i * D + c] * x.v[(size_t)i * D + c];
    snprintf(label, sizeof label, "LTE layer p=%.1f: dscore = sum_c dv' v", p);
    check_le(label, rel_err_f64(dscore, want, NS), 1e-15);
    cpu_f64_rope_bwd(dq, dqr, CB, CL, HQ, D, THETA, 0);
    cpu_f64_rope_bwd(dk, dkr, CB, CL, HKV, D, THETA, 0);
    memcpy(dv, dvs, sizeof(double) * NKV);
    /* as the model does it: the router's share added onto the attention's (ops_lte.h) */
    cpu_f64_lte_router_bwd(dk, dv, dparams, dscore, x.k, x.v, x.params, x.acts, &x.rs, CB, CL, p, DROPOUT_KEYS);

    if (fd) {
        snprintf(label, sizeof label, "LTE layer p=%.1f dq (through RoPE)", p);
        fd_check(label, x.q, NQ, dq, layer_loss, &x, 1e-5);
        snprintf(label, sizeof label, "LTE layer p=%.1f dk (RoPE + router)", p);
        fd_check(label, x.k, NKV, dk, layer_loss, &x, 1e-5);
        snprintf(label, sizeof label, "LTE layer p=%.1f dv (STE pass-through + router)", p);
        fd_check(label, x.v, NKV, dv, layer_loss, &x, 1e-5);
        snprintf(label, sizeof label, "LTE layer p=%.1f router params (through the STE)", p);
        fd_check(label, x.params, x.np, dparams, layer_loss, &x, 1e-5);
    }

    free(x.q), free(x.k), free(x.v), free(x.params), free(x.dout), free(x.score0), free(x.sel), free(x.acts);
    free(x.score), free(x.qr), free(x.kr), free(x.vs), free(x.o), free(x.lse), free(ref);
    free(dqr), free(dkr), free(dvs), free(dscore), free(dq), free(dk), free(dv), free(dparams);
    free(want);
}

int main(void) {
    test_select();
    test_ste();
    test_l1();
    test_composite(0.0, 0);
    test_composite(0.1, 1);
    return test_finish();
}
