/* Softmax attention: every variant (causal, sliding window in both conventions, GQA 1/2/4,
 * LTE selections with and without sinks) against a dense brute force that builds the full
 * L x L mask; the backward against finite differences (double); fp32 against the brute
 * force; determinism. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

struct shape {
    const char *name;
    int B, L, Hq, Hkv, d, window_left;
    int select;  /* 0: selected = NULL; 1: random keys selected */
    int sinks;   /* with select: the first `sinks` positions are always selected */
};

struct tensors {
    double *q, *k, *v, *dout;
    uint8_t *sel; /* NULL when the shape selects nothing */
    size_t nq, nkv, nrow;
};

static struct tensors make_inputs(const struct shape *s, uint64_t seed) {
    struct tensors x;
    x.nq = (size_t)s->B * s->L * s->Hq * s->d;
    x.nkv = (size_t)s->B * s->L * s->Hkv * s->d;
    x.nrow = (size_t)s->B * s->L * s->Hq;
    x.q = alloc_f64(x.nq), x.k = alloc_f64(x.nkv), x.v = alloc_f64(x.nkv), x.dout = alloc_f64(x.nq);
    fill_uniform_f64(x.q, x.nq, -2, 2, seed);
    fill_uniform_f64(x.k, x.nkv, -1, 1, seed + 1);
    fill_uniform_f64(x.v, x.nkv, -1, 1, seed + 2);
    fill_uniform_f64(x.dout, x.nq, -1, 1, seed + 3);
    x.sel = NULL;
    if (s->select) {
        size_t n = (size_t)s->B * s->L * s->Hkv;
        double *u = alloc_f64(n);
        fill_uniform_f64(u, n, 0, 1, seed + 4);
        x.sel = hyla_calloc(n, 1);
        for (size_t i = 0; i < n; i++) {
            int j = (int)(i / s->Hkv % s->L);
            x.sel[i] = u[i] < 0.3 || j < s->sinks;
        }
        free(u);
    }
    return x;
}

static void free_inputs(struct tensors *x) { free(x->q), free(x->k), free(x->v), free(x->dout), free(x->sel); }

/* Key j visible to query t, written from the definition (MODEL.md §4, §5.4). */
static int visible(const struct shape *s, const uint8_t *sel, int b, int g, int t, int j) {
    if (j > t) return 0;
    if (s->window_left < 0 || t - j <= s->window_left) return 1;
    return sel && sel[((size_t)b * s->L + j) * s->Hkv + g];
}

/* Dense attention: full score matrix, masked entries get P = 0; backward through the
 * softmax Jacobian dS_j = P_j (dP_j - sum_k P_k dP_k). */
static void brute_force(double *o, double *lse, double *dq, double *dk, double *dv, const struct shape *s,
                        const struct tensors *x) {
    int L = s->L, d = s->d, G = s->Hq / s->Hkv;
    double scale = 1 / sqrt((double)d);
    double *P = alloc_f64((size_t)L * L), *dP = alloc_f64((size_t)L * L);
    uint8_t *mask = hyla_calloc((size_t)L * L, 1);
    for (size_t i = 0; i < x->nkv; i++) dk[i] = 0, dv[i] = 0;
    for (int b = 0; b < s->B; b++) {
        for (int hq = 0; hq < s->Hq; hq++) {
            int g = hq / G;
#define QAT(t) (x->q + (((size_t)b * L + (t)) * s->Hq + hq) * d)
#define KAT(arr, j) ((arr) + (((size_t)b * L + (j)) * s->Hkv + g) * d)
#define OAT(arr, t) ((arr) + (((size_t)b * L + (t)) * s->Hq + hq) * d)
            for (int t = 0; t < L; t++)
                for (int j = 0; j < L; j++) mask[(size_t)t * L + j] = (uint8_t)visible(s, x->sel, b, g, t, j);
            for (int t = 0; t < L; t++) {
                double *p = P + (size_t)t * L, m = -INFINITY, sum = 0;
                for (int j = 0; j < L; j++) {
                    double sc = 0;
                    for (int c = 0; c < d; c++) sc += QAT(t)[c] * KAT(x->k, j)[c];
                    p[j] = scale * sc;
                    if (mask[(size_t)t * L + j] && p[j] > m) m = p[j];
                }
                for (int j = 0; j < L; j++) {
                    p[j] = mask[(size_t)t * L + j] ? exp(p[j] - m) : 0;
                    sum += p[j];
                }
                for (int j = 0; j < L; j++) p[j] /= sum;
                lse[((size_t)b * L + t) * s->Hq + hq] = m + log(sum);
                double *ot = OAT(o, t);
                for (int c = 0; c < d; c++) {
                    double acc = 0;
                    for (int j = 0; j < L; j++) acc += p[j] * KAT(x->v, j)[c];
                    ot[c] = acc;
                }
            }
            for (int t = 0; t < L; t++) {
                const double *p = P + (size_t)t * L, *go = OAT(x->dout, t);
                double *dp = dP + (size_t)t * L, pdp = 0;
                for (int j = 0; j < L; j++) {
                    double acc = 0;
                    for (int c = 0; c < d; c++) acc += go[c] * KAT(x->v, j)[c];
                    dp[j] = acc;
                    pdp += p[j] * acc;
                }
                double *gq = OAT(dq, t);
                for (int c = 0; c < d; c++) gq[c] = 0;
                for (int j = 0; j < L; j++) {
                    double ds = p[j] * (dp[j] - pdp);
                    for (int c = 0; c < d; c++) {
                        gq[c] += scale * ds * KAT(x->k, j)[c];
                        KAT(dk, j)[c] += scale * ds * QAT(t)[c];
                        KAT(dv, j)[c] += p[j] * go[c];
                    }
                }
            }
#undef QAT
#undef KAT
#undef OAT
        }
    }
    free(P), free(dP), free(mask);
}

/* Both precisions against the brute force on the same (fp32-rounded) inputs. */
static void test_against_brute_force(const struct shape *s, uint64_t seed) {
    struct tensors x = make_inputs(s, seed);
    size_t nq = x.nq, nkv = x.nkv, nrow = x.nrow;
    /* Round the inputs to fp32 so that one brute force serves both precisions. */
    float *qf = alloc_f32(nq), *kf = alloc_f32(nkv), *vf = alloc_f32(nkv), *dof = alloc_f32(nq);
    copy_f64_to_f32(qf, x.q, nq), copy_f64_to_f32(kf, x.k, nkv), copy_f64_to_f32(vf, x.v, nkv);
    copy_f64_to_f32(dof, x.dout, nq);
    copy_f32_to_f64(x.q, qf, nq), copy_f32_to_f64(x.k, kf, nkv), copy_f32_to_f64(x.v, vf, nkv);
    copy_f32_to_f64(x.dout, dof, nq);

    double *ro = alloc_f64(nq), *rl = alloc_f64(nrow), *rdq = alloc_f64(nq), *rdk = alloc_f64(nkv),
           *rdv = alloc_f64(nkv);
    brute_force(ro, rl, rdq, rdk, rdv, s, &x);

    double scale = 1 / sqrt((double)s->d);
    double *o = alloc_f64(nq), *l = alloc_f64(nrow), *dq = alloc_f64(nq), *dk = alloc_f64(nkv), *dv = alloc_f64(nkv);
    cpu_f64_attention_fwd(o, l, x.q, x.k, x.v, x.sel, s->B, s->L, s->Hq, s->Hkv, s->d, s->window_left, scale);
    cpu_f64_attention_bwd(dq, dk, dv, x.dout, x.q, x.k, x.v, o, l, x.sel, s->B, s->L, s->Hq, s->Hkv, s->d,
                          s->window_left, scale);
    double worst = 0, e;
    const double *got[5] = {o, l, dq, dk, dv}, *want[5] = {ro, rl, rdq, rdk, rdv};
    size_t len[5] = {nq, nrow, nq, nkv, nkv};
    const char *what[5] = {"o", "lse", "dq", "dk", "dv"};
    char label[200];
    for (int i = 0; i < 5; i++) {
        e = rel_err_f64(got[i], want[i], len[i]);
        if (e > worst || isnan(e)) worst = e;
        if (!(e <= 1e-12)) printf("     %s %s: %.3e\n", s->name, what[i], e);
    }
    snprintf(label, sizeof label, "%s: double vs brute force (o, lse, dq, dk, dv; worst)", s->name);
    check_le(label, worst, 1e-12);

    float *of = alloc_f32(nq), *lf = alloc_f32(nrow), *dqf = alloc_f32(nq), *dkf = alloc_f32(nkv),
          *dvf = alloc_f32(nkv);
    cpu_f32_attention_fwd(of, lf, qf, kf, vf, x.sel, s->B, s->L, s->Hq, s->Hkv, s->d, s->window_left, (float)scale);
    cpu_f32_attention_bwd(dqf, dkf, dvf, dof, qf, kf, vf, of, lf, x.sel, s->B, s->L, s->Hq, s->Hkv, s->d,
                          s->window_left, (float)scale);
    const float *gotf[5] = {of, lf, dqf, dkf, dvf};
    worst = 0;
    for (int i = 0; i < 5; i++) {
        double *tmp = alloc_f64(len[i]);
        copy_f32_to_f64(tmp, gotf[i], len[i]);
        e = rel_err_f64(tmp, want[i], len[i]);
        if (e > worst || isnan(e)) worst = e;
        if (!(e <= 1e-5)) printf("     %s fp32 %s: %.3e\n", s->name, what[i], e);
        free(tmp);
    }
    snprintf(label, sizeof label, "%s: fp32 vs brute force (o, lse, dq, dk, dv; worst)", s->name);
    check_le(label, worst, 1e-5);

    free(qf), free(kf), free(vf), free(dof), free(ro), free(rl), free(rdq), free(rdk), free(rdv);
    free(o), free(l), free(dq), free(dk), free(dv), free(of), free(lf), free(dqf), free(dkf), free(dvf);
    free_inputs(&x);
}

/* ---- finite differences ---------------------------------------------------------------- */

struct fd_ctx {
    const struct shape *s;
    struct tensors *x;
    double *o, *lse;
};

/* loss = <dout, o>, so its gradient is the backward pass with dout as the incoming gradient. */
static double fd_loss(void *p) {
    struct fd_ctx *c = p;
    const struct shape *s = c->s;
    cpu_f64_attention_fwd(c->o, c->lse, c->x->q, c->x->k, c->x->v, c->x->sel, s->B, s->L, s->Hq, s->Hkv, s->d,
                          s->window_left, 1 / sqrt((double)s->d));
    return dot_f64(c->x->dout, c->o, c->x->nq);
}

static void test_finite_differences(const struct shape *s, uint64_t seed) {
    struct tensors x = make_inputs(s, seed);
    struct fd_ctx c = {s, &x, alloc_f64(x.nq), alloc_f64(x.nrow)};
    double *dq = alloc_f64(x.nq), *dk = alloc_f64(x.nkv), *dv = alloc_f64(x.nkv);
    fd_loss(&c);
    cpu_f64_attention_bwd(dq, dk, dv, x.dout, x.q, x.k, x.v, c.o, c.lse, x.sel, s->B, s->L, s->Hq, s->Hkv, s->d,
                          s->window_left, 1 / sqrt((double)s->d));
    char label[160];
    snprintf(label, sizeof label, "%s dq", s->name);
    fd_check(label, x.q, x.nq, dq, fd_loss, &c, 1e-5);
    snprintf(label, sizeof label, "%s dk", s->name);
    fd_check(label, x.k, x.nkv, dk, fd_loss, &c, 1e-5);
    snprintf(label, sizeof label, "%s dv", s->name);
    fd_check(label, x.v, x.nkv, dv, fd_loss, &c, 1e-5);
    free(c.o), free(c.lse), free(dq), free(dk), free(dv);
    free_inputs(&x);
}

/* ---- determinism ------------------------------------------------------------------------ */

static void test_determinism(const struct shape *s) {
    struct tensors x = make_inputs(s, 900);
    size_t nq = x.nq, nkv = x.nkv, nrow = x.nrow;
    float *q = alloc_f32(nq), *k = alloc_f32(nkv), *v = alloc_f32(nkv), *go = alloc_f32(nq);
    copy_f64_to_f32(q, x.q, nq), copy_f64_to_f32(k, x.k, nkv), copy_f64_to_f32(v, x.v, nkv);
    copy_f64_to_f32(go, x.dout, nq);
    float *o[2], *l[2], *dq[2], *dk[2], *dv[2];
    float scale = 1 / sqrtf((float)s->d);
    for (int r = 0; r < 2; r++) {
        o[r] = alloc_f32(nq), l[r] = alloc_f32(nrow), dq[r] = alloc_f32(nq), dk[r] = alloc_f32(nkv),
        dv[r] = alloc_f32(nkv);
        cpu_f32_attention_fwd(o[r], l[r], q, k, v, x.sel, s->B, s->L, s->Hq, s->Hkv, s->d, s->window_left, scale);
        cpu_f32_attention_bwd(dq[r], dk[r], dv[r], go, q, k, v, o[r], l[r], x.sel, s->B, s->L, s->Hq, s->Hkv, s->d,
                              s->window_left, scale);
    }
    check_true("attention fp32 forward (o, lse) is deterministic",
               !memcmp(o[0], o[1], nq * sizeof(float)) && !memcmp(l[0], l[1], nrow * sizeof(float)));
    check_true("attention fp32 backward (dq, dk, dv) is deterministic",
               !memcmp(dq[0], dq[1], nq * sizeof(float)) && !memcmp(dk[0], dk[1], nkv * sizeof(float)) &&
                   !memcmp(dv[0], dv[1], nkv * sizeof(float)));
    for (int r = 0; r < 2; r++) free(o[r]), free(l[r]), free(dq[r]), free(dk[r]), free(dv[r]);
    free(q), free(k), free(v), free(go);
    free_inputs(&x);
}

int main(void) {
    /* window_left: -1 full causal; w-1 standard SWA of w keys; w LTE window (w+1 keys). */
    static const struct shape cases[] = {
        {"causal L=37 G=1", 2, 37, 2, 2, 16, -1, 0, 0},
        {"causal L=130 G=4", 2, 130, 4, 1, 16, -1, 0, 0},
        {"causal L=1 G=2", 2, 1, 2, 1, 16, -1, 0, 0},
        {"SWA w=5 (wl=4) L=100 G=2", 2, 100, 4, 2, 16, 4, 0, 0},
        {"SWA w=17 (wl=16) L=130 G=4", 2, 130, 4, 1, 16, 16, 0, 0},
        {"SWA w=33 (wl=32) L=37 G=1", 2, 37, 2, 2, 8, 32, 0, 0},
        {"SWA w=1 (wl=0) L=37 G=2", 2, 37, 4, 2, 16, 0, 0, 0},
        {"LTE w=5 (wl=5) no selection L=37 G=2", 2, 37, 4, 2, 16, 5, 0, 0},
        {"LTE w=17 selected, no sinks L=100 G=1", 2, 100, 2, 2, 16, 17, 1, 0},
        {"LTE w=33 selected, 4 sinks L=130 G=2", 2, 130, 4, 2, 16, 33, 1, 4},
        {"LTE w=5 selected, 2 sinks L=130 G=4", 2, 130, 4, 1, 16, 5, 1, 2},
        {"LTE w=5 selected, 2 sinks L=1 G=2", 2, 1, 4, 2, 16, 5, 1, 2},
        {"LTE w=17 selected, 3 sinks L=37 G=4", 1, 37, 8, 2, 8, 17, 1, 3},
        {"causal L=100 G=2 d=12", 2, 100, 4, 2, 12, -1, 0, 0},
        {"LTE w=33 selected, 2 sinks L=100 G=2 d=20", 1, 100, 4, 2, 20, 33, 1, 2},
    };
    int n_cases = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n_cases; i++) test_against_brute_force(&cases[i], 100 + 10 * (uint64_t)i);

    static const struct shape fd_cases[] = {
        {"FD causal L=17 G=1 d=12", 2, 17, 2, 2, 12, -1, 0, 0},
        {"FD SWA w=5 L=19 G=4", 2, 19, 4, 1, 8, 4, 0, 0},
        {"FD LTE w=5 2 sinks L=23 G=2", 2, 23, 4, 2, 8, 5, 1, 2},
    };
    for (int i = 0; i < 3; i++) test_finite_differences(&fd_cases[i], 500 + 10 * (uint64_t)i);

    test_determinism(&cases[9]);
    return test_finish();
}
