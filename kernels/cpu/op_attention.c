/* Softmax attention with GQA, causal / sliding-window / LTE-selected keys (MODEL.md §4, §5.4).
 * Each query row only visits its visible keys: the selected keys older than the window
 * (when `selected` is given), then the window. The forward pass uses an online softmax and
 * saves the log-sum-exp; the backward pass recomputes the probabilities from it. */
#include "cpu_ops.h"
#include "real.h"

/* Below this many multiply-adds (about B Hq L^2 d / 2) the threads' start-up costs more
 * than they save; the result does not depend on it. */
#define PARALLEL_MIN_WORK 131072

struct attn_dims {
    int B, L, Hq, Hkv, d, window_left;
    const uint8_t *selected; /* [B, L, Hkv] or NULL */
};

/* First key of query t's window (keys before it are visible only when selected). */
static int worth_threads(int B, int L, int Hq, int d) {
    return (double)B * Hq * L * L * d / 2 >= PARALLEL_MIN_WORK;
}

static int window_start(int t, int window_left) {
    return window_left < 0 || t <= window_left ? 0 : t - window_left;
}

/* Eight partial sums in a fixed order: deterministic, and written so that -O2 vectorises it. */
static REAL dot(const REAL *a, const REAL *b, int n) {
    REAL s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int u = 0; u < 8; u++) s[u] += a[i + u] * b[i + u];
    REAL r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

static void axpy(REAL *restrict y, REAL a, const REAL *restrict x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int u = 0; u < 8; u++) y[i + u] += a * x[i + u];
    for (; i < n; i++) y[i] += a * x[i];
}

/* The next visible key after j (start with j = -1), or t + 1 when there is none. */
static int next_key(const struct attn_dims *a, int b, int g, int t, int j) {
    int lo = window_start(t, a->window_left);
    j++;
    if (j < lo) {
        if (!a->selected) return lo;
        const uint8_t *sel = a->selected + (size_t)b * a->L * a->Hkv + g;
        while (j < lo && !sel[(size_t)j * a->Hkv]) j++;
    }
    return j;
}

/* One query row: o = softmax(scale q K^T) V over the visible keys, lse saved. The running
 * maximum m rescales the accumulated sum and output when a larger score arrives. */
static void attention_row(REAL *o, REAL *lse, const REAL *q, const REAL *k, const REAL *v, const struct attn_dims *a,
                          int b, int g, int t, REAL scale) {
    int d = a->d;
    size_t kv_stride = (size_t)a->Hkv * d, base = (size_t)b * a->L * kv_stride + (size_t)g * d;
    REAL m = -INFINITY, sum = 0;
    for (int i = 0; i < d; i++) o[i] = 0;
    for (int j = next_key(a, b, g, t, -1); j <= t; j = next_key(a, b, g, t, j)) {
        size_t kj = base + (size_t)j * kv_stride;
        REAL s = scale * dot(q, k + kj, d);
        if (s > m) {
            REAL r = exp(m - s); /* 0 for the first key */
            sum *= r;
            for (int i = 0; i < d; i++) o[i] *= r;
            m = s;
        }
        REAL p = exp(s - m);
        sum += p;
        axpy(o, p, v + kj, d);
    }
    for (int i = 0; i < d; i++) o[i] /= sum;
    *lse = m + log(sum);
}

void K(attention_fwd)(REAL *o, REAL *lse, const REAL *q, const REAL *k, const REAL *v, const uint8_t *selected,
                      int B, int L, int Hq, int Hkv, int d, int window_left, REAL scale) {
    struct attn_dims a = {B, L, Hq, Hkv, d, window_left, selected};
    int group = Hq / Hkv, rows = B * L * Hq, parallel = worth_threads(B, L, Hq, d);
#pragma omp parallel for schedule(static) if (parallel)
    for (int r = 0; r < rows; r++) { /* r = (b L + t) Hq + head */
        int head = r % Hq, t = (r / Hq) % L, b = r / (Hq * L);
        size_t qo = (size_t)r * d;
        attention_row(o + qo, lse + r, q + qo, k, v, &a, b, head / group, t, scale);
    }
}

/* Backward of one query row into dq (written) and the rows of dk, dv (accumulated):
 *   P = exp(scale q k^T - lse), dS = P (dO v^T - <dO, O>),
 *   dq = scale sum dS k,  dk += scale dS q,  dv += P dO. */
static void attention_row_bwd(REAL *dq, REAL *dk, REAL *dv, const REAL *dout, const REAL *q, const REAL *k,
                              const REAL *v, const REAL *o, REAL lse, const struct attn_dims *a, int b, int g, int t,
                              REAL scale) {
    int d = a->d;
    size_t kv_stride = (size_t)a->Hkv * d, base = (size_t)b * a->L * kv_stride + (size_t)g * d;
    REAL delta = dot(dout, o, d);
    for (int i = 0; i < d; i++) dq[i] = 0;
    for (int j = next_key(a, b, g, t, -1); j <= t; j = next_key(a, b, g, t, j)) {
        size_t kj = base + (size_t)j * kv_stride;
        REAL p = exp(scale * dot(q, k + kj, d) - lse);
        REAL ds = p * (dot(dout, v + kj, d) - delta);
        axpy(dq, scale * ds, k + kj, d);
        axpy(dk + kj, scale * ds, q, d);
        axpy(dv + kj, p, dout, d);
    }
}

/* One task per (b, kv head): it owns that slice of dk and dv and the dq rows of the group's
 * query heads, so no two threads write the same element and the sums run in a fixed order. */
void K(attention_bwd)(REAL *dq, REAL *dk, REAL *dv, const REAL *dout, const REAL *q, const REAL *k, const REAL *v,
                      const REAL *o, const REAL *lse, const uint8_t *selected, int B, int L, int Hq, int Hkv, int d,
                      int window_left, REAL scale) {
    struct attn_dims a = {B, L, Hq, Hkv, d, window_left, selected};
    int group = Hq / Hkv, tasks = B * Hkv, parallel = worth_threads(B, L, Hq, d);
#pragma omp parallel for schedule(static) if (parallel)
    for (int task = 0; task < tasks; task++) {
        int b = task / Hkv, g = task % Hkv;
        for (int t = 0; t < L; t++) {
            size_t kv = (((size_t)b * L + t) * Hkv + g) * d;
            for (int i = 0; i < d; i++) dk[kv + i] = 0, dv[kv + i] = 0;
        }
        for (int t = 0; t < L; t++) {
            for (int head = g * group; head < (g + 1) * group; head++) {
                size_t r = ((size_t)b * L + t) * Hq + head, qo = r * d;
                attention_row_bwd(dq + qo, dk, dv, dout + qo, q + qo, k, v, o + qo, lse[r], &a, b, g, t, scale);
            }
        }
    }
}
