/* LTE router CNN: parameter counts of the reference configs (MODEL.md §2), offsets and
 * receptive field; the forward pass against a naive evaluation with explicit loops; the
 * backward pass against finite differences on every parameter tensor and on k, v, with
 * and without dropout; fp32 against double; determinism; a call on B rows is B calls on one
 * row each, bit for bit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* One dropout key per row (sequence) of a call; up to 4 rows. */
static const uint64_t DROPOUT_KEYS[4] = {0x1234abcdULL, 0x9e3779b97f4a7c15ULL, 0x5bd1e995ULL, 0xdeadbeef01ULL};

/* ---- shapes ---------------------------------------------------------------------------- */

static struct hyla_lte_router_shape reference_shape(int heads, int head_dim) {
    struct hyla_lte_router_shape s = {heads, head_dim, 3, {3, 3, 3, 0}, {2, 2, 2, 0}};
    return s;
}

static void test_shapes(void) {
    struct hyla_lte_router_shape s16 = reference_shape(16, 64), s8 = reference_shape(8, 64);
    check_true("router params, d=64 H=16: 518,160 (MODEL.md §2)", lte_router_param_count(&s16) == 518160);
    check_true("router params, d=64 H=8: 259,080 (MODEL.md §2)", lte_router_param_count(&s8) == 259080);
    check_true("router receptive field k=[3,3,3] dil=[2,2,2]: 13", lte_router_receptive_field(&s16) == 13);
    check_true("router channels 128, 64, 32, 16",
               lte_router_channels(&s16, 0) == 128 && lte_router_channels(&s16, 1) == 64 &&
                   lte_router_channels(&s16, 2) == 32 && lte_router_channels(&s16, 3) == 16);
    /* State-dict order: convs.0.weight [1024,128,1,3], convs.0.bias [1024], ..., proj.weight [16,16,1,1], proj.bias. */
    struct hyla_lte_router_offsets o = lte_router_offsets(&s16);
    size_t want[8] = {0, 393216, 394240, 492544, 493056, 517632, 517888, 518144};
    size_t got[8] = {o.conv_weight[0], o.conv_bias[0], o.conv_weight[1], o.conv_bias[1],
                     o.conv_weight[2], o.conv_bias[2], o.proj_weight, o.proj_bias};
    check_true("router offsets in state-dict order", !memcmp(want, got, sizeof want) && o.total == 518160);
    check_true("router acts size = B L H (64 + 32 + 16 + 1)",
               lte_router_acts_size(&s16, 3, 10) == (size_t)3 * 10 * 16 * 113);
    struct hyla_lte_router_shape odd = {3, 8, 2, {5, 3, 0, 0}, {1, 3, 0, 0}};
    check_true("router receptive field k=[5,3] dil=[1,3]: 11", lte_router_receptive_field(&odd) == 11);
}

/* ---- naive reference ----------------------------------------------------------------- */

/* Row b's mask of element e (its index within the row) of conv `layer`'s input. */
static double naive_keep(int layer, int b, size_t e, double p) {
    if (p == 0) return 1;
    uint64_t key = hyla_rng_subkey(DROPOUT_KEYS[b], (uint64_t)layer);
    return hyla_rng_uniform(key, e) >= (float)p ? 1 / (1 - p) : 0;
}

/* Explicit loops over heads, output channels, taps and input channels; u[l] is [B, L, H, c_l]. */
static void router_naive(double *score, const double *k, const double *v, const double *params,
                         const struct hyla_lte_router_shape *s, int B, int L, double p) {
    int H = s->heads, d = s->head_dim, n = s->n_convs;
    int c[HYLA_LTE_MAX_CONVS + 1];
    c[0] = 2 * d;
    for (int l = 0; l < n; l++) c[l + 1] = c[l] / 2;
    double *u = alloc_f64((size_t)B * L * H * c[0]);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++)
            for (int h = 0; h < H; h++)
                for (int ch = 0; ch < 2 * d; ch++) {
                    size_t tok = ((size_t)b * L + t) * H + h;
                    u[tok * 2 * d + ch] = ch < d ? k[tok * d + ch] : v[tok * d + ch - d];
                }
    const double *at = params; /* walk the flat parameters in state-dict order */
    for (int l = 0; l < n; l++) {
        int cin = c[l], cout = c[l + 1], kk = s->kernel[l], dil = s->dilation[l];
        const double *W = at, *bias = at + (size_t)cout * H * cin * kk;
        at = bias + (size_t)cout * H;
        double *next = alloc_f64((size_t)B * L * H * cout);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < L; t++)
                for (int h = 0; h < H; h++)
                    for (int o = 0; o < cout; o++) {
                        double acc = bias[h * cout + o];
                        for (int i = 0; i < kk; i++) {
                            int src = t + dil * (i - (kk - 1) / 2);
                            if (src < 0 || src >= L) continue;
                            for (int ch = 0; ch < cin; ch++) {
                                size_t e_row = ((size_t)src * H + h) * cin + ch;
                                double x = u[(size_t)b * L * H * cin + e_row] * naive_keep(l, b, e_row, p);
                                acc += W[(((size_t)h * cout + o) * cin + ch) * kk + i] * x;
                            }
                        }
                        next[(((size_t)b * L + t) * H + h) * cout + o] = acc / (1 + exp(-acc)); /* silu */
                    }
        free(u);
        u = next;
    }
    const double *pw = at, *pb = at + (size_t)H * c[n];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++)
            for (int h = 0; h < H; h++) {
                size_t tok = ((size_t)b * L + t) * H + h;
                double z = pb[h];
                for (int ch = 0; ch < c[n]; ch++) z += pw[h * c[n] + ch] * u[tok * c[n] + ch];
                score[tok] = 1 / (1 + exp(-z)) - 0.5;
            }
    free(u);
}

/* ---- inputs ---------------------------------------------------------------------------- */

struct router_case {
    struct hyla_lte_router_shape s;
    int B, L;
    double p;
    double *k, *v, *params, *proj, *score, *acts;
    size_t nkv, np, nscore;
};

/* Weights U(+-1.5/sqrt(fan_in)) so that every layer stays in SiLU's curved range. */
static void init_params(double *params, const struct hyla_lte_router_shape *s, uint64_t seed) {
    struct hyla_lte_router_offsets o = lte_router_offsets(s);
    fill_uniform_f64(params, o.total, -0.4, 0.4, seed); /* biases keep this range */
    for (int l = 0; l < s->n_convs; l++) {
        double bound = 1.5 / sqrt((double)lte_router_channels(s, l) * s->kernel[l]);
        for (size_t i = o.conv_weight[l]; i < o.conv_bias[l]; i++) params[i] *= bound / 0.4;
    }
    double bound = 1.5 / sqrt((double)lte_router_channels(s, s->n_convs));
    for (size_t i = o.proj_weight; i < o.proj_bias; i++) params[i] *= bound / 0.4;
}

static struct router_case make_case(struct hyla_lte_router_shape s, int B, int L, double p, uint64_t seed) {
    struct router_case c = {.s = s, .B = B, .L = L, .p = p};
    c.nkv = (size_t)B * L * s.heads * s.head_dim;
    c.np = lte_router_param_count(&s);
    c.nscore = (size_t)B * L * s.heads;
    c.k = alloc_f64(c.nkv), c.v = alloc_f64(c.nkv), c.params = alloc_f64(c.np), c.proj = alloc_f64(c.nscore);
    c.score = alloc_f64(c.nscore), c.acts = alloc_f64(lte_router_acts_size(&s, B, L));
    fill_uniform_f64(c.k, c.nkv, -1, 1, seed);
    fill_uniform_f64(c.v, c.nkv, -1, 1, seed + 1);
    init_params(c.params, &s, seed + 2);
    fill_uniform_f64(c.proj, c.nscore, -1, 1, seed + 3);
    return c;
}

static void free_case(struct router_case *c) {
    free(c->k), free(c->v), free(c->params), free(c->proj), free(c->score), free(c->acts);
}

static double router_loss(void *p) {
    struct router_case *c = p;
    cpu_f64_lte_router_fwd(c->score, c->acts, c->k, c->v, c->params, &c->s, c->B, c->L, c->p, DROPOUT_KEYS);
    return dot_f64(c->proj, c->score, c->nscore);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_forward_naive(struct hyla_lte_router_shape s, int B, int L, double p, const char *name) {
    struct router_case c = make_case(s, B, L, p, 40);
    double *ref = alloc_f64(c.nscore);
    router_loss(&c);
    router_naive(ref, c.k, c.v, c.params, &s, B, L, p);
    char label[160];
    snprintf(label, sizeof label, "router forward vs naive loops, %s, p=%.1f", name, p);
    check_le(label, rel_err_f64(c.score, ref, c.nscore), 1e-13);
    free(ref);
    free_case(&c);
}

static void test_backward_fd(struct hyla_lte_router_shape s, int B, int L, double p, const char *name) {
    struct router_case c = make_case(s, B, L, p, 60);
    double *dk = alloc_f64(c.nkv), *dv = alloc_f64(c.nkv), *dparams = alloc_f64(c.np);
    router_loss(&c);
    cpu_f64_lte_router_bwd(dk, dv, dparams, c.proj, c.k, c.v, c.params, c.acts, &s, B, L, p, DROPOUT_KEYS);
    struct hyla_lte_router_offsets o = lte_router_offsets(&s);
    char label[200];
    for (int l = 0; l < s.n_convs; l++) {
        snprintf(label, sizeof label, "router %s p=%.1f convs.%d.weight", name, p, l);
        fd_check(label, c.params + o.conv_weight[l], o.conv_bias[l] - o.conv_weight[l], dparams + o.conv_weight[l],
                 router_loss, &c, 1e-5);
        size_t end = l + 1 < s.n_convs ? o.conv_weight[l + 1] : o.proj_weight;
        snprintf(label, sizeof label, "router %s p=%.1f convs.%d.bias", name, p, l);
        fd_check(label, c.params + o.conv_bias[l], end - o.conv_bias[l], dparams + o.conv_bias[l], router_loss, &c,
                 1e-5);
    }
    snprintf(label, sizeof label, "router %s p=%.1f proj.weight", name, p);
    fd_check(label, c.params + o.proj_weight, o.proj_bias - o.proj_weight, dparams + o.proj_weight, router_loss, &c,
             1e-5);
    snprintf(label, sizeof label, "router %s p=%.1f proj.bias", name, p);
    fd_check(label, c.params + o.proj_bias, o.total - o.proj_bias, dparams + o.proj_bias, router_loss, &c, 1e-5);
    snprintf(label, sizeof label, "router %s p=%.1f dk", name, p);
    fd_check(label, c.k, c.nkv, dk, router_loss, &c, 1e-5);
    snprintf(label, sizeof label, "router %s p=%.1f dv", name, p);
    fd_check(label, c.v, c.nkv, dv, router_loss, &c, 1e-5);

    /* Every gradient accumulates (ops_lte.h): a second call adds the same values again, onto
     * dparams and onto dk, dv (there, the attention's share in the model). */
    router_loss(&c); /* fd_check left acts at a perturbed point */
    double *dp2 = alloc_f64(c.np), *dk2 = alloc_f64(c.nkv), *dv2 = alloc_f64(c.nkv);
    memset(dparams, 0, c.np * sizeof(double));
    memset(dk, 0, c.nkv * sizeof(double)), memset(dv, 0, c.nkv * sizeof(double));
    cpu_f64_lte_router_bwd(dk, dv, dparams, c.proj, c.k, c.v, c.params, c.acts, &s, B, L, p, DROPOUT_KEYS);
    memcpy(dp2, dparams, c.np * sizeof(double));
    memcpy(dk2, dk, c.nkv * sizeof(double)), memcpy(dv2, dv, c.nkv * sizeof(double));
    cpu_f64_lte_router_bwd(dk2, dv2, dp2, c.proj, c.k, c.v, c.params, c.acts, &s, B, L, p, DROPOUT_KEYS);
    for (size_t i = 0; i < c.np; i++) dparams[i] *= 2;
    for (size_t i = 0; i < c.nkv; i++) dk[i] *= 2, dv[i] *= 2;
    snprintf(label, sizeof label, "router %s p=%.1f dparams accumulate: second call adds the same", name, p);
    check_le(label, rel_err_f64(dp2, dparams, c.np), 1e-14);
    snprintf(label, sizeof label, "router %s p=%.1f dk, dv accumulate: second call adds the same", name, p);
    check_le(label, fmax(rel_err_f64(dk2, dk, c.nkv), rel_err_f64(dv2, dv, c.nkv)), 1e-14);
    free(dk2), free(dv2);
    free(dk), free(dv), free(dparams), free(dp2);
    free_case(&c);
}

/* Directional finite differences on a shape whose convs span several im2col tiles:
 * (loss(x + h u) - loss(x - h u)) / 2h against <grad, u> for random directions u. */
static void test_backward_directional(struct hyla_lte_router_shape s, int B, int L, double p) {
    struct router_case c = make_case(s, B, L, p, 80);
    double *dk = alloc_f64(c.nkv), *dv = alloc_f64(c.nkv), *dparams = alloc_f64(c.np);
    router_loss(&c);
    cpu_f64_lte_router_bwd(dk, dv, dparams, c.proj, c.k, c.v, c.params, c.acts, &s, B, L, p, DROPOUT_KEYS);
    double *xs[3] = {c.params, c.k, c.v}, *gs[3] = {dparams, dk, dv};
    size_t ns[3] = {c.np, c.nkv, c.nkv};
    const char *names[3] = {"params", "k", "v"};
    double h = 1e-5;
    for (int which = 0; which < 3; which++) {
        double worst = 0;
        double *u = alloc_f64(ns[which]), *saved = alloc_f64(ns[which]);
        memcpy(saved, xs[which], ns[which] * sizeof(double));
        for (int dir = 0; dir < 3; dir++) {
            fill_uniform_f64(u, ns[which], -1, 1, 1000 + 10 * (uint64_t)which + (uint64_t)dir);
            for (size_t i = 0; i < ns[which]; i++) xs[which][i] = saved[i] + h * u[i];
            double up = router_loss(&c);
            for (size_t i = 0; i < ns[which]; i++) xs[which][i] = saved[i] - h * u[i];
            double down = router_loss(&c);
            memcpy(xs[which], saved, ns[which] * sizeof(double));
            double num = (up - down) / (2 * h), ana = dot_f64(gs[which], u, ns[which]);
            worst = fmax(worst, fabs(num - ana) / fabs(ana));
        }
        char label[200];
        snprintf(label, sizeof label, "router d=%d H=%d L=%d p=%.1f (multi-tile) d%s: directional FD (3 dirs)",
                 s.head_dim, s.heads, L, p, names[which]);
        check_le(label, worst, FD_TOLERANCE);
        free(u), free(saved);
    }
    free(dk), free(dv), free(dparams);
    free_case(&c);
}

/* fp32 against double on the same rounded inputs, and bit-identical repeated calls. */
static void test_fp32(struct hyla_lte_router_shape s, int B, int L, double p) {
    struct router_case c = make_case(s, B, L, p, 90);
    size_t nacts = lte_router_acts_size(&s, B, L);
    float *k = alloc_f32(c.nkv), *v = alloc_f32(c.nkv), *params = alloc_f32(c.np), *proj = alloc_f32(c.nscore);
    copy_f64_to_f32(k, c.k, c.nkv), copy_f64_to_f32(v, c.v, c.nkv), copy_f64_to_f32(params, c.params, c.np);
    copy_f64_to_f32(proj, c.proj, c.nscore);
    copy_f32_to_f64(c.k, k, c.nkv), copy_f32_to_f64(c.v, v, c.nkv), copy_f32_to_f64(c.params, params, c.np);
    copy_f32_to_f64(c.proj, proj, c.nscore);
    double *dk = alloc_f64(c.nkv), *dv = alloc_f64(c.nkv), *dparams = alloc_f64(c.np);
    router_loss(&c);
    cpu_f64_lte_router_bwd(dk, dv, dparams, c.proj, c.k, c.v, c.params, c.acts, &s, B, L, p, DROPOUT_KEYS);

    float *score[2], *acts[2], *fdk[2], *fdv[2], *fdp[2];
    for (int r = 0; r < 2; r++) {
        score[r] = alloc_f32(c.nscore), acts[r] = alloc_f32(nacts), fdk[r] = alloc_f32(c.nkv),
        fdv[r] = alloc_f32(c.nkv), fdp[r] = alloc_f32(c.np);
        cpu_f32_lte_router_fwd(score[r], acts[r], k, v, params, &s, B, L, (float)p, DROPOUT_KEYS);
        cpu_f32_lte_router_bwd(fdk[r], fdv[r], fdp[r], proj, k, v, params, acts[r], &s, B, L, (float)p, DROPOUT_KEYS);
    }
    char label[200];
    double *tmp = alloc_f64(c.np > c.nkv ? c.np : c.nkv);
    copy_f32_to_f64(tmp, score[0], c.nscore);
    snprintf(label, sizeof label, "router fp32 vs double score (d=%d H=%d L=%d p=%.1f)", s.head_dim, s.heads, L, p);
    check_le(label, rel_err_f64(tmp, c.score, c.nscore), 1e-5);
    double worst = 0;
    copy_f32_to_f64(tmp, fdk[0], c.nkv);
    worst = fmax(worst, rel_err_f64(tmp, dk, c.nkv));
    copy_f32_to_f64(tmp, fdv[0], c.nkv);
    worst = fmax(worst, rel_err_f64(tmp, dv, c.nkv));
    copy_f32_to_f64(tmp, fdp[0], c.np);
    worst = fmax(worst, rel_err_f64(tmp, dparams, c.np));
    snprintf(label, sizeof label, "router fp32 vs double dk, dv, dparams (worst)");
    check_le(label, worst, 1e-5);
    check_true("router fp32 forward (score, acts) is deterministic",
               !memcmp(score[0], score[1], c.nscore * sizeof(float)) &&
                   !memcmp(acts[0], acts[1], nacts * sizeof(float)));
    check_true("router fp32 backward (dk, dv, dparams) is deterministic",
               !memcmp(fdk[0], fdk[1], c.nkv * sizeof(float)) && !memcmp(fdv[0], fdv[1], c.nkv * sizeof(float)) &&
                   !memcmp(fdp[0], fdp[1], c.np * sizeof(float)));

    /* Dropout does something: about a fraction p of the first conv's inputs are dropped. */
    if (p > 0) {
        uint64_t key = hyla_rng_subkey(DROPOUT_KEYS[0], 0);
        size_t n = c.nkv * 2 / (size_t)B, dropped = 0; /* row 0's */
        for (size_t e = 0; e < n; e++) dropped += hyla_rng_uniform(key, e) < (float)p;
        snprintf(label, sizeof label, "router dropout: |dropped fraction - p| on conv 0 (%zu inputs)", n);
        check_le(label, fabs((double)dropped / (double)n - p), 0.01);
    }
    for (int r = 0; r < 2; r++) free(score[r]), free(acts[r]), free(fdk[r]), free(fdv[r]), free(fdp[r]);
    free(k), free(v), free(params), free(proj), free(dk), free(dv), free(dparams), free(tmp);
    free_case(&c);
}

/* A call on B rows against B calls on one row each (ops_lte.h: the rows are independent
 * problems): score, the rows' blocks of acts, dk, dv, and the parameter gradient summed row
 * after row, all bit for bit. */
static void test_rows(struct hyla_lte_router_shape s, int B, int L, double p) {
    struct router_case c = make_case(s, B, L, p, 120);
    const size_t row_acts = lte_router_acts_size(&s, 1, L), row_tok = (size_t)L * s.heads;
    const size_t row_kv = row_tok * s.head_dim;
    double *acts1 = alloc_f64(lte_router_acts_size(&s, B, L)), *score1 = alloc_f64(c.nscore);
    double *dk = alloc_f64(c.nkv), *dv = alloc_f64(c.nkv), *dp = alloc_f64(c.np);
    double *dk1 = alloc_f64(c.nkv), *dv1 = alloc_f64(c.nkv), *dp1 = alloc_f64(c.np);
    router_loss(&c);
    cpu_f64_lte_router_bwd(dk, dv, dp, c.proj, c.k, c.v, c.params, c.acts, &s, B, L, p, DROPOUT_KEYS);
    for (int b = 0; b < B; b++) {
        cpu_f64_lte_router_fwd(score1 + b * row_tok, acts1 + b * row_acts, c.k + b * row_kv, c.v + b * row_kv,
                               c.params, &s, 1, L, p, DROPOUT_KEYS + b);
        cpu_f64_lte_router_bwd(dk1 + b * row_kv, dv1 + b * row_kv, dp1, c.proj + b * row_tok, c.k + b * row_kv,
                               c.v + b * row_kv, c.params, acts1 + b * row_acts, &s, 1, L, p, DROPOUT_KEYS + b);
    }
    char label[200];
    snprintf(label, sizeof label, "router B=%d rows in one call = %d calls of one row (p=%.1f): bit for bit", B, B, p);
    check_true(label, !memcmp(c.score, score1, c.nscore * sizeof(double)) &&
                          !memcmp(c.acts, acts1, lte_router_acts_size(&s, B, L) * sizeof(double)) &&
                          !memcmp(dk, dk1, c.nkv * sizeof(double)) && !memcmp(dv, dv1, c.nkv * sizeof(double)) &&
                          !memcmp(dp, dp1, c.np * sizeof(double)));
    free(acts1), free(score1), free(dk), free(dv), free(dp), free(dk1), free(dv1), free(dp1);
    free_case(&c);
}

int main(void) {
    test_shapes();

    struct hyla_lte_router_shape small = reference_shape(2, 8);
    struct hyla_lte_router_shape odd = {3, 8, 2, {5, 3, 0, 0}, {1, 3, 0, 0}};
    struct hyla_lte_router_shape wide = reference_shape(2, 64); /* im2col tiles of 21, 42, 85 rows */
    for (int i = 0; i < 2; i++) {
        double p = i ? 0.1 : 0.0;
        test_forward_naive(small, 2, 20, p, "d=8 H=2 L=20");
        test_forward_naive(small, 1, 1, p, "d=8 H=2 L=1");
        test_forward_naive(odd, 2, 9, p, "d=8 H=3 L=9 k=[5,3] dil=[1,3]");
        test_forward_naive(small, 1, 400, p, "d=8 H=2 L=400 (3 tiles)");
        test_forward_naive(wide, 1, 70, p, "d=64 H=2 L=70 (multi-tile)");
        test_backward_fd(small, 2, 20, p, "d=8 H=2 L=20");
        test_backward_fd(odd, 2, 9, p, "d=8 H=3 L=9 k=[5,3] dil=[1,3]");
        test_backward_directional(wide, 2, 70, p);
    }
    test_backward_fd(small, 1, 1, 0.1, "d=8 H=2 L=1");
    test_fp32(reference_shape(4, 64), 2, 150, 0.1);
    test_rows(odd, 3, 9, 0.1);
    test_rows(small, 2, 20, 0.0);
    return test_finish();
}
