/* LTE router CNN (MODEL.md §5.2): per kv head h an independent stack of dilated 1-D convs
 * over the sequence, input u_0 = [k_h; v_h] (2d channels), then
 *   a_{l+1} = Conv_l(Dropout(u_l)),  u_{l+1} = silu(a_{l+1}),  z = Proj(u_n),  score = sigmoid(z) - 0.5,
 *   Conv_l: out[t] = b + sum_i W[:, :, i] in[t + dil (i - (k-1)/2)], zero outside [0, L).
 *
 * A conv is computed as im2col tiles times the head's weight block with real_gemm: the
 * weight [c_out H, c_in, 1, k] of head h is the contiguous row-major matrix [c_out, c_in k]
 * whose column c k + i multiplies input channel c at tap i, so a tile row holds the
 * (dropped-out) inputs in that same order.
 *
 * Each of the B rows (sequences) is a problem of its own, as if the op were called once per row:
 * its own dropout key and its own block of saved activations.
 * Dropout: element e of conv l's input in row b is kept iff
 *   hyla_rng_uniform(hyla_rng_subkey(dropout_keys[b], l), e) >= (float)p,
 *   e = (t H + h) c_l + c   (flat index in the row's [L, H, c_l] layout; for l = 0 the
 *   channel order of head h is [k_h (d values), v_h (d values)]),
 * and kept values are scaled by 1/(1-p). The comparison is made in float so that the fp32
 * and fp64 builds draw the same mask. Masks are regenerated, never stored.
 *
 * acts (lte_shape.c): per row, a_1 .. a_n as [L, H, c_l], then z as [L, H]. */
#include "cpu_ops.h"
#include "real.h"
#include "../../common/hyla_error.h"
#include "../../common/rng.h"

#include <stdlib.h>
#include <string.h>

/* Capacity, in values, of one im2col tile: tiles have TILE_CAP / (c_in k) rows. */
#define TILE_CAP 8192
/* Below this many multiply-adds in the first conv the threads' start-up costs more than
 * they save; the result does not depend on it. */
#define PARALLEL_MIN_WORK 131072

struct router {
    int B, L, H, d, n;
    int c[HYLA_LTE_MAX_CONVS + 1];         /* channels per head of u_0 .. u_n */
    int kernel[HYLA_LTE_MAX_CONVS], dilation[HYLA_LTE_MAX_CONVS];
    size_t act[HYLA_LTE_MAX_CONVS + 2];    /* offsets of a_1 .. a_n (index l) and z (index n+1) in a row's block */
    size_t row_acts;                       /* values of a row's block of acts */
    struct hyla_lte_router_offsets off;
    const REAL *k, *v, *params, *acts;
    REAL p, keep_scale;
    uint64_t *key; /* [B][n]: conv l's key of row b (p > 0), freed by router_free */
    int parallel;  /* worth starting threads */
};

static struct router router_init(const struct hyla_lte_router_shape *s, int B, int L, const REAL *k, const REAL *v,
                                 const REAL *params, const REAL *acts, REAL p, const uint64_t *dropout_keys) {
    if (s->n_convs < 1 || s->n_convs > HYLA_LTE_MAX_CONVS)
        hyla_die("lte router: n_convs = %d, expected 1..%d", s->n_convs, HYLA_LTE_MAX_CONVS);
    if (!(p >= 0 && p < 1)) hyla_die("lte router: dropout probability %g is outside [0, 1)", (double)p);
    struct router r = {.B = B, .L = L, .H = s->heads, .d = s->head_dim, .n = s->n_convs,
                       .off = lte_router_offsets(s), .k = k, .v = v, .params = params, .acts = acts,
                       .p = p, .keep_scale = (REAL)1 / ((REAL)1 - p)};
    const size_t row_tokens = (size_t)L * r.H;
    size_t at = 0;
    for (int l = 0; l <= r.n; l++) r.c[l] = lte_router_channels(s, l);
    for (int l = 0; l < r.n; l++) {
        r.kernel[l] = s->kernel[l], r.dilation[l] = s->dilation[l];
        if ((size_t)r.c[l] * r.kernel[l] > TILE_CAP)
            hyla_die("lte router: conv %d has %d x %d inputs per position, more than the tile capacity %d",
                     l, r.c[l], r.kernel[l], TILE_CAP);
    }
    r.key = NULL;
    if (p > 0) {
        r.key = hyla_malloc(sizeof(uint64_t) * (size_t)B * r.n);
        for (int b = 0; b < B; b++)
            for (int l = 0; l < r.n; l++) r.key[(size_t)b * r.n + l] = hyla_rng_subkey(dropout_keys[b], (uint64_t)l);
    }
    for (int l = 1; l <= r.n; l++) r.act[l] = at, at += row_tokens * r.c[l];
    r.act[r.n + 1] = at;
    r.row_acts = at + row_tokens;
    r.parallel = (double)B * row_tokens * r.c[0] * r.kernel[0] * r.c[1] >= PARALLEL_MIN_WORK;
    return r;
}
static void router_free(struct router *r) { free(r->key); }

/* Dropout factor of element e (index within row b) of conv l's input: 0 or 1/(1-p). */
static REAL dropout_factor(const struct router *r, int l, int b, size_t e) {
    if (r->p == 0) return 1;
    return hyla_rng_uniform(r->key[(size_t)b * r->n + l], e) >= (float)r->p ? r->keep_scale : 0;
}

/* Flat index of token (b, t), head h, in a [B, L, H] layout (k, v, score). */
static size_t token_index(const struct router *r, int b, int t, int h) {
    return ((size_t)b * r->L + t) * r->H + h;
}
/* The same within a row: (t, h) in [L, H] (dropout indices, a row's saved activations). */
static size_t row_token(const struct router *r, int t, int h) { return (size_t)t * r->H + h; }
/* Where a_l (l = 1 .. n; z: l = n + 1, one value a token) of token (b, t), head h, starts in acts. */
static size_t act_index(const struct router *r, int l, int b, int t, int h) {
    return (size_t)b * r->row_acts + r->act[l] + row_token(r, t, h) * (l <= r->n ? (size_t)r->c[l] : 1);
}

/* Conv l's input channel c at token (b, t), head h, after dropout. */
static REAL conv_input(const struct router *r, int l, int b, int t, int h, int c) {
    size_t tok = token_index(r, b, t, h);
    REAL x;
    if (l == 0) x = c < r->d ? r->k[tok * r->d + c] : r->v[tok * r->d + c - r->d];
    else x = real_silu(r->acts[act_index(r, l, b, t, h) + c]);
    return x * dropout_factor(r, l, b, row_token(r, t, h) * r->c[l] + c);
}

/* im2col rows t0 .. t0+rows-1 of conv l for (b, h): g[row, c k + i] = input c at t + dil (i - (k-1)/2). */
static void gather_tile(REAL *g, const struct router *r, int l, int b, int h, int t0, int rows) {
    int kk = r->kernel[l], dil = r->dilation[l], half = (kk - 1) / 2, cin = r->c[l];
    for (int row = 0; row < rows; row++) {
        for (int i = 0; i < kk; i++) {
            int src = t0 + row + dil * (i - half);
            REAL *dst = g + (size_t)row * cin * kk + i;
            for (int c = 0; c < cin; c++)
                dst[(size_t)c * kk] = src >= 0 && src < r->L ? conv_input(r, l, b, src, h, c) : 0;
        }
    }
}

/* Pre-activation a_{l+1} = Conv_l(Dropout(u_l)) for (b, h), written into acts. */
static void conv_fwd(REAL *acts, const struct router *r, int l, int b, int h) {
    int cout = r->c[l + 1], ck = r->c[l] * r->kernel[l], tile = TILE_CAP / ck, ld = r->H * cout;
    const REAL *w = r->params + r->off.conv_weight[l] + (size_t)h * cout * ck;
    const REAL *bias = r->params + r->off.conv_bias[l] + (size_t)h * cout;
    REAL *out = acts + act_index(r, l + 1, b, 0, h);
    REAL g[TILE_CAP];
    for (int t0 = 0; t0 < r->L; t0 += tile) {
        int rows = r->L - t0 < tile ? r->L - t0 : tile;
        gather_tile(g, r, l, b, h, t0, rows);
        REAL *o = out + (size_t)t0 * ld;
        real_gemm(0, 1, rows, cout, ck, 1, g, ck, w, ck, 0, o, ld);
        for (int row = 0; row < rows; row++)
            for (int j = 0; j < cout; j++) o[(size_t)row * ld + j] += bias[j];
    }
}

/* z = Proj(u_n) and the score, for (b, h). */
static void proj_fwd(REAL *score, REAL *acts, const struct router *r, int b, int h) {
    int cn = r->c[r->n];
    const REAL *w = r->params + r->off.proj_weight + (size_t)h * cn;
    REAL bias = r->params[r->off.proj_bias + h];
    for (int t = 0; t < r->L; t++) {
        const REAL *a = acts + act_index(r, r->n, b, t, h);
        REAL z = bias;
        for (int c = 0; c < cn; c++) z += w[c] * real_silu(a[c]);
        acts[act_index(r, r->n + 1, b, t, h)] = z;
        score[token_index(r, b, t, h)] = real_sigmoid(z) - (REAL)0.5;
    }
}

void K(lte_router_fwd)(REAL *score, REAL *acts, const REAL *k, const REAL *v, const REAL *params,
                       const struct hyla_lte_router_shape *shape, int B, int L, REAL dropout_p,
                       const uint64_t *dropout_keys) {
    struct router r = router_init(shape, B, L, k, v, params, acts, dropout_p, dropout_keys);
    int tasks = B * r.H;
#pragma omp parallel for schedule(static) if (r.parallel)
    for (int task = 0; task < tasks; task++) { /* (b, h): each writes only its own rows of acts */
        int b = task / r.H, h = task % r.H;
        for (int l = 0; l < r.n; l++) conv_fwd(acts, &r, l, b, h);
        proj_fwd(score, acts, &r, b, h);
    }
    router_free(&r);
}

/* ---- backward ------------------------------------------------------------------------- */

/* Per-thread scratch: dA_l = dLoss/da_l for l = 1..n over the whole sequence of one (b, h),
 * compact [L, c_l], and conv 0's input gradient (da[0], [L, c_0]: added into dk, dv at the
 * end), plus an im2col tile and its gradient. */
struct router_scratch {
    REAL *da[HYLA_LTE_MAX_CONVS + 1];
    REAL *g, *dg;
    REAL *base;
};

static struct router_scratch scratch_alloc(const struct router *r) {
    struct router_scratch s = {{0}, 0, 0, 0};
    size_t total = 2 * (size_t)TILE_CAP;
    for (int l = 0; l <= r->n; l++) total += (size_t)r->L * r->c[l];
    s.base = hyla_malloc(total * sizeof(REAL));
    REAL *at = s.base;
    for (int l = 0; l <= r->n; l++) s.da[l] = at, at += (size_t)r->L * r->c[l];
    s.g = at, s.dg = at + TILE_CAP;
    return s;
}

/* Through the projection: dz = dscore sigmoid'(z); dProj += dz u_n; dA_n = dz w silu'(a_n). */
static void proj_bwd(REAL *da_n, REAL *dparams, const REAL *dscore, const struct router *r, int b, int h) {
    int cn = r->c[r->n];
    const REAL *w = r->params + r->off.proj_weight + (size_t)h * cn;
    REAL *dw = dparams + r->off.proj_weight + (size_t)h * cn;
    for (int t = 0; t < r->L; t++) {
        size_t tok = token_index(r, b, t, h);
        REAL s = real_sigmoid(r->acts[act_index(r, r->n + 1, b, t, h)]);
        REAL dz = dscore[tok] * s * ((REAL)1 - s);
        const REAL *a = r->acts + act_index(r, r->n, b, t, h);
        dparams[r->off.proj_bias + h] += dz;
        for (int c = 0; c < cn; c++) {
            dw[c] += dz * real_silu(a[c]);
            da_n[(size_t)t * cn + c] = dz * w[c] * real_silu_grad(a[c]);
        }
    }
}

/* Conv 0's input gradient at (b, t, h), channel c, added into dk (c < d) or dv. */
static void add_input_grad(REAL *dk, REAL *dv, const struct router *r, int b, int t, int h, int c, REAL g) {
    size_t tok = token_index(r, b, t, h);
    if (c < r->d) dk[tok * r->d + c] += g;
    else dv[tok * r->d + c - r->d] += g;
}

/* Conv l for (b, h), from dA_{l+1}: dW += dA^T G and db += sum dA per im2col tile; the input
 * gradient dG = dA W is scattered back to the taps' source positions into dA_l, then
 * multiplied by the dropout factor and, for l > 0, silu'(a_l); for l = 0 added into dk, dv. */
static void conv_bwd(REAL *dk, REAL *dv, REAL *dparams, struct router_scratch *s, const struct router *r, int l, int b,
                     int h) {
    int cin = r->c[l], cout = r->c[l + 1], kk = r->kernel[l], dil = r->dilation[l], half = (kk - 1) / 2;
    int ck = cin * kk, tile = TILE_CAP / ck;
    const REAL *w = r->params + r->off.conv_weight[l] + (size_t)h * cout * ck;
    REAL *dw = dparams + r->off.conv_weight[l] + (size_t)h * cout * ck;
    REAL *dbias = dparams + r->off.conv_bias[l] + (size_t)h * cout;
    const REAL *da_out = s->da[l + 1];
    REAL *da_in = s->da[l];
    memset(da_in, 0, sizeof(REAL) * (size_t)r->L * cin);
    for (int t0 = 0; t0 < r->L; t0 += tile) {
        int rows = r->L - t0 < tile ? r->L - t0 : tile;
        const REAL *da = da_out + (size_t)t0 * cout;
        gather_tile(s->g, r, l, b, h, t0, rows);
        real_gemm(1, 0, cout, ck, rows, 1, da, cout, s->g, ck, 1, dw, ck);
        for (int row = 0; row < rows; row++)
            for (int j = 0; j < cout; j++) dbias[j] += da[(size_t)row * cout + j];
        real_gemm(0, 0, rows, ck, cout, 1, da, cout, w, ck, 0, s->dg, ck);
        for (int row = 0; row < rows; row++) {
            for (int i = 0; i < kk; i++) {
                int src = t0 + row + dil * (i - half);
                if (src < 0 || src >= r->L) continue;
                const REAL *dgi = s->dg + (size_t)row * ck + i;
                REAL *gx = da_in + (size_t)src * cin;
                for (int c = 0; c < cin; c++) gx[c] += dgi[(size_t)c * kk];
            }
        }
    }
    for (int t = 0; t < r->L; t++) {
        size_t tok = row_token(r, t, h);
        for (int c = 0; c < cin; c++) {
            REAL *gx = da_in + (size_t)t * cin + c;
            *gx *= dropout_factor(r, l, b, tok * cin + c);
            if (l > 0) *gx *= real_silu_grad(r->acts[act_index(r, l, b, t, h) + c]);
            else add_input_grad(dk, dv, r, b, t, h, c, *gx);
        }
    }
}

/* One task per head: it owns that head's parameter gradients and sums them over b and t
 * in a fixed order; the batch rows of dk, dv for that head are disjoint. */
void K(lte_router_bwd)(REAL *dk, REAL *dv, REAL *dparams, const REAL *dscore, const REAL *k, const REAL *v,
                       const REAL *params, const REAL *acts, const struct hyla_lte_router_shape *shape, int B, int L,
                       REAL dropout_p, const uint64_t *dropout_keys) {
    struct router r = router_init(shape, B, L, k, v, params, acts, dropout_p, dropout_keys);
#pragma omp parallel if (r.parallel)
    {
        struct router_scratch s = scratch_alloc(&r);
#pragma omp for schedule(static)
        for (int h = 0; h < r.H; h++) {
            for (int b = 0; b < B; b++) {
                proj_bwd(s.da[r.n], dparams, dscore, &r, b, h);
                for (int l = r.n - 1; l >= 0; l--) conv_bwd(dk, dv, dparams, &s, &r, l, b, h);
            }
        }
        free(s.base);
    }
    router_free(&r);
}
