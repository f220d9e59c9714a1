/* The small Gated DeltaNet ops around the delta rule (MODEL.md §3.2): causal short
 * convolution + SiLU, row-wise L2 norm, the beta/g gates and the gated RMSNorm.
 * Parameter gradients are summed over rows in a fixed order (one output element per
 * loop iteration), so every result is independent of the thread count. */
#include "cpu_ops.h"
#include "real.h"

#include "../../common/hyla_error.h"

enum { CONV_CB = 32, CONV_KW_MAX = HYLA_SHORTCONV_MAX_WIDTH }; /* channels per dw block; widest conv */

/* ---- causal depthwise short convolution + SiLU ---------------------------------------- */

/* Pre-activation at (b, t, c): sum_i w[c,i] x[t-kw+1+i, c], zero left padding.
 * xb points at x[b, 0, 0]. */
static REAL conv_pre(const REAL *xb, const REAL *wc, int t, int c, int C, int kw) {
    REAL acc = 0;
    for (int i = 0; i < kw; i++) {
        int ts = t - kw + 1 + i;
        if (ts >= 0) acc += wc[i] * xb[(size_t)ts * C + c];
    }
    return acc;
}

void K(shortconv_silu_fwd)(REAL *y, const REAL *x, const REAL *w, int B, int L, int C, int kw) {
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * L; bt++) {
        int b = bt / L, t = bt % L;
        const REAL *xb = x + (size_t)b * L * C;
        REAL *yr = y + (size_t)bt * C;
        for (int c = 0; c < C; c++) yr[c] = real_silu(conv_pre(xb, w + (size_t)c * kw, t, c, C, kw));
    }
}

/* Gradient of the pre-activation at (b, t, c); recomputed rather than stored. */
static REAL conv_dpre(const REAL *xb, const REAL *dyb, const REAL *wc, int t, int c, int C, int kw) {
    return dyb[(size_t)t * C + c] * real_silu_grad(conv_pre(xb, wc, t, c, C, kw));
}

/* dx[t] = sum_i w[c,i] dpre[t+kw-1-i]: token t feeds outputs t .. t+kw-1. */
static void conv_dx_row(REAL *dxr, const REAL *xb, const REAL *dyb, const REAL *w, int t, int L, int C, int kw) {
    for (int c = 0; c < C; c++) {
        const REAL *wc = w + (size_t)c * kw;
        REAL acc = 0;
        for (int i = 0; i < kw; i++) {
            int to = t + kw - 1 - i;
            if (to < L) acc += wc[i] * conv_dpre(xb, dyb, wc, to, c, C, kw);
        }
        dxr[c] = acc;
    }
}

void K(shortconv_silu_bwd)(REAL *dx, REAL *dw, const REAL *dy, const REAL *x, const REAL *w, int B, int L,
                           int C, int kw) {
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * L; bt++) {
        int b = bt / L, t = bt % L;
        size_t boff = (size_t)b * L * C;
        conv_dx_row(dx + (size_t)bt * C, x + boff, dy + boff, w, t, L, C, kw);
    }
    /* dw[c,i] = sum_{b,t} dpre[b,t,c] x[b,t-kw+1+i,c]. One block of channels per
     * iteration, tokens in order: contiguous reads, and a fixed summation order. */
    HYLA_ASSERT(kw <= CONV_KW_MAX);
    int nblocks = (C + CONV_CB - 1) / CONV_CB;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * CONV_CB, c1 = c0 + CONV_CB < C ? c0 + CONV_CB : C;
        REAL acc[CONV_CB * CONV_KW_MAX] = {0};
        for (int b = 0; b < B; b++) {
            size_t boff = (size_t)b * L * C;
            for (int t = 0; t < L; t++) {
                for (int c = c0; c < c1; c++) {
                    REAL dp = conv_dpre(x + boff, dy + boff, w + (size_t)c * kw, t, c, C, kw);
                    for (int i = 0; i < kw; i++) {
                        int ts = t - kw + 1 + i;
                        if (ts >= 0) acc[(c - c0) * CONV_KW_MAX + i] += dp * x[boff + (size_t)ts * C + c];
                    }
                }
            }
        }
        for (int c = c0; c < c1; c++)
            for (int i = 0; i < kw; i++) dw[(size_t)c * kw + i] += acc[(c - c0) * CONV_KW_MAX + i];
    }
}

/* ---- L2 norm -------------------------------------------------------------------------- */

void K(l2norm_fwd)(REAL *y, REAL *rstd, const REAL *x, int rows, int dim, REAL eps) {
#pragma omp parallel for schedule(static)
    for (int row = 0; row < rows; row++) {
        size_t off = (size_t)row * dim;
        REAL ss = 0;
        for (int i = 0; i < dim; i++) ss += x[off + i] * x[off + i];
        REAL r = (REAL)1 / sqrt(ss + eps);
        rstd[row] = r;
        for (int i = 0; i < dim; i++) y[off + i] = x[off + i] * r;
    }
}

void K(shortconv_silu_l2norm_fwd)(REAL *y, REAL *rstd, const REAL *x, const REAL *w, int B, int L, int C, int kw,
                                  int head_dim, REAL eps) {
    K(shortconv_silu_fwd)(y, x, w, B, L, C, kw);
    K(l2norm_fwd)(y, rstd, y, (int)((size_t)B * L * C / head_dim), head_dim, eps); /* in place: row by row */
}

void K(l2norm_bwd)(REAL *dx, const REAL *dy, const REAL *y, const REAL *rstd, int rows, int dim) {
#pragma omp parallel for schedule(static)
    for (int row = 0; row < rows; row++) {
        size_t off = (size_t)row * dim;
        REAL p = 0;
        for (int i = 0; i < dim; i++) p += dy[off + i] * y[off + i];
        for (int i = 0; i < dim; i++) dx[off + i] = rstd[row] * (dy[off + i] - p * y[off + i]);
    }
}

/* ---- gates: beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias) ------------------- */

void K(gdn_gates_fwd)(REAL *beta, REAL *g, const REAL *b_logits, const REAL *a_logits, int ld, const REAL *A_log,
                      const REAL *dt_bias, int rows, int H) {
#pragma omp parallel for schedule(static)
    for (int row = 0; row < rows; row++) {
        for (int h = 0; h < H; h++) {
            size_t i = (size_t)row * H + h, li = (size_t)row * ld + h;
            beta[i] = real_sigmoid(b_logits[li]);
            g[i] = -exp(A_log[h]) * real_softplus(a_logits[li] + dt_bias[h]);
        }
    }
}

/* Derivative of real_softplus, including its linear branch above 20. */
static REAL softplus_grad(REAL x) { return x > (REAL)20 ? (REAL)1 : real_sigmoid(x); }

void K(gdn_gates_bwd)(REAL *db_logits, REAL *da_logits, REAL *dA_log, REAL *ddt_bias, const REAL *dbeta,
                      const REAL *dg, const REAL *b_logits, const REAL *a_logits, int ld, const REAL *A_log,
                      const REAL *dt_bias, int rows, int H) {
#pragma omp parallel for schedule(static)
    for (int row = 0; row < rows; row++) {
        for (int h = 0; h < H; h++) {
            size_t i = (size_t)row * H + h, li = (size_t)row * ld + h;
            REAL s = real_sigmoid(b_logits[li]);
            db_logits[li] = dbeta[i] * s * ((REAL)1 - s);
            da_logits[li] = -dg[i] * exp(A_log[h]) * softplus_grad(a_logits[li] + dt_bias[h]);
        }
    }
    /* Per-head sums over rows in row order: ddt_bias = sum da, dA_log = sum dg * g. */
#pragma omp parallel for schedule(static)
    for (int h = 0; h < H; h++) {
        REAL sa = 0, sg = 0;
        for (int row = 0; row < rows; row++) {
            size_t i = (size_t)row * H + h, li = (size_t)row * ld + h;
            sa += da_logits[li];
            sg += dg[i] * (-exp(A_log[h]) * real_softplus(a_logits[li] + dt_bias[h]));
        }
        ddt_bias[h] += sa;
        dA_log[h] += sg;
    }
}

/* ---- gated RMSNorm: y = x rstd w silu(gate) ------------------------------------------- */

void K(gated_rmsnorm_fwd)(REAL *y, REAL *rstd, const REAL *x, const REAL *gate, const REAL *weight, int rows,
                          int dim, REAL eps) {
#pragma omp parallel for schedule(static)
    for (int row = 0; row < rows; row++) {
        size_t off = (size_t)row * dim;
        REAL ss = 0;
        for (int i = 0; i < dim; i++) ss += x[off + i] * x[off + i];
        REAL r = (REAL)1 / sqrt(ss / (REAL)dim + eps);
        rstd[row] = r;
        for (int i = 0; i < dim; i++) y[off + i] = x[off + i] * r * weight[i] * real_silu(gate[off + i]);
    }
}

/* With n = x r and s = silu(gate): dgate = dy n w silu'(gate); dn = dy w s;
 * dx = r (dn - n mean(dn n)). */
static void gated_rmsnorm_row_bwd(REAL *dx, REAL *dgate, const REAL *dy, const REAL *x, const REAL *gate,
                                  const REAL *w, REAL r, int dim) {
    REAL c = 0;
    for (int i = 0; i < dim; i++) c += dy[i] * w[i] * real_silu(gate[i]) * x[i] * r;
    c /= (REAL)dim;
    for (int i = 0; i < dim; i++) {
        REAL n = x[i] * r;
        dgate[i] = dy[i] * n * w[i] * real_silu_grad(gate[i]);
        dx[i] = r * (dy[i] * w[i] * real_silu(gate[i]) - n * c);
    }
}

void K(gated_rmsnorm_bwd)(REAL *dx, REAL *dgate, REAL *dweight, const REAL *dy, const REAL *x, const REAL *gate,
                          const REAL *weight, const REAL *rstd, int rows, int dim) {
#pragma omp parallel for schedule(static)
    for (int row = 0; row < rows; row++) {
        size_t off = (size_t)row * dim;
        gated_rmsnorm_row_bwd(dx + off, dgate + off, dy + off, x + off, gate + off, weight, rstd[row], dim);
    }
    /* dweight[i] = sum_rows dy n silu(gate), one column per iteration, rows in order. */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < dim; i++) {
        REAL acc = 0;
        for (int row = 0; row < rows; row++) {
            size_t o = (size_t)row * dim + i;
            acc += dy[o] * x[o] * rstd[row] * real_silu(gate[o]);
        }
        dweight[i] += acc;
    }
}
