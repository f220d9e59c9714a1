/* Causal depthwise short convolution + SiLU: forward against a direct evaluation of the
 * formula, backward (dx, dw) against finite differences in double, dw accumulation,
 * fp32 against double, determinism; followed by the L2 norm over heads in one op, against the
 * two ops one after the other. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { B = 2, L = 9, C = 5 };

struct ctx {
    int kw;
    double x[B * L * C], w[C * 8], y[B * L * C], proj[B * L * C];
};

static double loss(void *p) {
    struct ctx *c = p;
    cpu_f64_shortconv_silu_fwd(c->y, c->x, c->w, B, L, C, c->kw);
    return dot_f64(c->proj, c->y, B * L * C);
}

/* y[b,t,c] = silu(sum_i w[c,i] x[b,t-kw+1+i,c]) written out with explicit padding. */
static void naive_fwd(double *y, const double *x, const double *w, int kw) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++)
            for (int c = 0; c < C; c++) {
                double pre = 0;
                for (int i = 0; i < kw; i++) {
                    int ts = t - kw + 1 + i;
                    double xv = ts < 0 ? 0.0 : x[((size_t)b * L + ts) * C + c];
                    pre += w[c * kw + i] * xv;
                }
                y[((size_t)b * L + t) * C + c] = pre / (1 + exp(-pre));
            }
}

static void test_kw(int kw) {
    struct ctx c = {.kw = kw};
    char label[96];
    fill_uniform_f64(c.x, B * L * C, -2, 2, 10 + kw);
    fill_uniform_f64(c.w, C * kw, -1, 1, 20 + kw);
    fill_uniform_f64(c.proj, B * L * C, -1, 1, 30 + kw);

    double ref[B * L * C];
    naive_fwd(ref, c.x, c.w, kw);
    loss(&c);
    snprintf(label, sizeof label, "shortconv_silu kw=%d forward vs direct formula", kw);
    check_le(label, rel_err_f64(c.y, ref, B * L * C), 1e-14);

    /* dw starts non-zero: the op must add to it. */
    double dx[B * L * C], dw0[C * 8], dw[C * 8], dwg[C * 8];
    fill_uniform_f64(dw0, C * kw, -1, 1, 40 + kw);
    for (int i = 0; i < C * kw; i++) dw[i] = dw0[i];
    cpu_f64_shortconv_silu_bwd(dx, dw, c.proj, c.x, c.w, B, L, C, kw);
    for (int i = 0; i < C * kw; i++) dwg[i] = dw[i] - dw0[i];
    snprintf(label, sizeof label, "shortconv_silu kw=%d dx", kw);
    fd_check(label, c.x, B * L * C, dx, loss, &c, 1e-5);
    snprintf(label, sizeof label, "shortconv_silu kw=%d dw (accumulated onto non-zero)", kw);
    fd_check(label, c.w, C * kw, dwg, loss, &c, 1e-5);
}

static void test_fp32(void) {
    enum { KW = 4, N = B * L * C };
    double x[N], w[C * KW], dy[N], y[N], dx[N], dw[C * KW] = {0};
    float xf[N], wf[C * KW], dyf[N], yf[N], dxf[N], dwf[C * KW] = {0}, yf2[N], dxf2[N], dwf2[C * KW] = {0};
    fill_uniform_f64(x, N, -2, 2, 50);
    fill_uniform_f64(w, C * KW, -1, 1, 51);
    fill_uniform_f64(dy, N, -1, 1, 52);
    copy_f64_to_f32(xf, x, N), copy_f64_to_f32(wf, w, C * KW), copy_f64_to_f32(dyf, dy, N);
    copy_f32_to_f64(x, xf, N), copy_f32_to_f64(w, wf, C * KW), copy_f32_to_f64(dy, dyf, N);
    cpu_f64_shortconv_silu_fwd(y, x, w, B, L, C, KW);
    cpu_f64_shortconv_silu_bwd(dx, dw, dy, x, w, B, L, C, KW);
    cpu_f32_shortconv_silu_fwd(yf, xf, wf, B, L, C, KW);
    cpu_f32_shortconv_silu_bwd(dxf, dwf, dyf, xf, wf, B, L, C, KW);
    double t[N];
    copy_f32_to_f64(t, yf, N);
    check_le("shortconv_silu fp32 vs double (same rounded inputs): y", rel_err_f64(t, y, N), 1e-6);
    copy_f32_to_f64(t, dxf, N);
    check_le("shortconv_silu fp32 vs double (same rounded inputs): dx", rel_err_f64(t, dx, N), 1e-6);
    copy_f32_to_f64(t, dwf, C * KW);
    check_le("shortconv_silu fp32 vs double (same rounded inputs): dw", rel_err_f64(t, dw, C * KW), 1e-6);
    cpu_f32_shortconv_silu_fwd(yf2, xf, wf, B, L, C, KW);
    cpu_f32_shortconv_silu_bwd(dxf2, dwf2, dyf, xf, wf, B, L, C, KW);
    check_bitwise_equal("shortconv_silu fp32 forward is deterministic", yf, yf2, sizeof yf);
    check_bitwise_equal("shortconv_silu fp32 backward dx is deterministic", dxf, dxf2, sizeof dxf);
    check_bitwise_equal("shortconv_silu fp32 backward dw is deterministic", dwf, dwf2, sizeof dwf);
}

/* More channels than one dw block (32), so the blocked dw loop is covered past a boundary. */
static void test_wide(void) {
    enum { CW = 70, LW = 6, KW = 4 };
    double *x = alloc_f64(CW * LW), *w = alloc_f64(CW * KW), *dy = alloc_f64(CW * LW), *dx = alloc_f64(CW * LW);
    double *dw = alloc_f64(CW * KW), *ref = alloc_f64(CW * KW);
    fill_uniform_f64(x, CW * LW, -2, 2, 60);
    fill_uniform_f64(w, CW * KW, -1, 1, 61);
    fill_uniform_f64(dy, CW * LW, -1, 1, 62);
    cpu_f64_shortconv_silu_bwd(dx, dw, dy, x, w, 1, LW, CW, KW);
    /* dw[c,i] = sum_t dy silu'(pre) x[t-3+i], pre from a direct evaluation. */
    for (int c = 0; c < CW; c++)
        for (int t = 0; t < LW; t++) {
            double pre = 0;
            for (int i = 0; i < KW; i++)
                if (t - KW + 1 + i >= 0) pre += w[c * KW + i] * x[(t - KW + 1 + i) * CW + c];
            double s = 1 / (1 + exp(-pre)), dp = dy[t * CW + c] * s * (1 + pre * (1 - s));
            for (int i = 0; i < KW; i++)
                if (t - KW + 1 + i >= 0) ref[c * KW + i] += dp * x[(t - KW + 1 + i) * CW + c];
        }
    check_le("shortconv_silu C=70 (3 dw blocks) dw vs direct formula", rel_err_f64(dw, ref, CW * KW), 1e-14);
    free(x), free(w), free(dy), free(dx), free(dw), free(ref);
}

/* shortconv_silu_l2norm_fwd: shortconv_silu_fwd then l2norm_fwd over rows of head_dim, bit for
 * bit (rows B L C / head_dim: a wrong count would leave rows unnormalised or read past y). */
static void test_with_l2norm(void) {
    enum { CH = 12, HD = 4, KW = 3, N = B * L * CH, ROWS = N / HD };
    double x[N], w[CH * KW], y[N], r[ROWS], y2[N], r2[ROWS];
    fill_uniform_f64(x, N, -2, 2, 70);
    fill_uniform_f64(w, CH * KW, -1, 1, 71);
    cpu_f64_shortconv_silu_l2norm_fwd(y, r, x, w, B, L, CH, KW, HD, 1e-6);
    double pre[N];
    cpu_f64_shortconv_silu_fwd(pre, x, w, B, L, CH, KW);
    cpu_f64_l2norm_fwd(y2, r2, pre, ROWS, HD, 1e-6);
    check_bitwise_equal("shortconv_silu_l2norm_fwd y = l2norm(shortconv_silu(x))", y, y2, sizeof y);
    check_bitwise_equal("shortconv_silu_l2norm_fwd rstd", r, r2, sizeof r);
    double worst = 0; /* and every row normalised */
    for (int row = 0; row < ROWS; row++) {
        double ss = 0;
        for (int i = 0; i < HD; i++) ss += y[row * HD + i] * y[row * HD + i];
        worst = fmax(worst, fabs(ss - 1));
    }
    check_le("shortconv_silu_l2norm_fwd rows of unit norm: |sum y^2 - 1|", worst, 1e-5);
}

int main(void) {
    test_with_l2norm();
    test_kw(4);
    test_kw(3);
    test_kw(1);
    test_fp32();
    test_wide();
    return test_finish();
}
