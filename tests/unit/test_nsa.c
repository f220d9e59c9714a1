/* NSA (MODEL.md §6): the forward pass against a direct, dense reading of §6.2 written here
 * (naive importance: group average, forced blocks = 1), block selection compared as sets;
 * the backward pass against finite differences in double with block_idx held fixed; fp32
 * against double; determinism and independence of the thread count. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { BATCH = 2, HKV = 2, DIM = 8, BLOCK = 4, WINDOW = 5, MAXL = 64, MAXB = MAXL / BLOCK, MAXG = 4 };

struct problem {
    struct hyla_nsa_shape s;
    int L, G;
    size_t nq, nkv, ngate, nidx, nsaved; /* element counts */
    double *q, *k, *v, *gl;              /* inputs; gl = gate logits */
};

static struct problem make_problem(int G, int L, int n_select, uint64_t seed) {
    struct problem p = {.L = L, .G = G};
    p.s = (struct hyla_nsa_shape){.q_heads = HKV * G, .kv_heads = HKV, .head_dim = DIM, .block_size = BLOCK,
                                  .n_select = n_select, .window = WINDOW, .scale = 1 / sqrt(DIM)};
    p.nq = (size_t)BATCH * L * HKV * G * DIM;
    p.nkv = (size_t)BATCH * L * HKV * DIM;
    p.ngate = (size_t)BATCH * L * HKV * G * 3;
    p.nidx = (size_t)BATCH * L * HKV * n_select;
    p.nsaved = nsa_saved_size(&p.s, BATCH, L);
    p.q = alloc_f64(p.nq), p.k = alloc_f64(p.nkv), p.v = alloc_f64(p.nkv), p.gl = alloc_f64(p.ngate);
    /* q.k scale has a spread of about 1.3: softmaxes are neither flat nor one-hot. */
    fill_uniform_f64(p.q, p.nq, -2, 2, seed);
    fill_uniform_f64(p.k, p.nkv, -2, 2, seed + 1);
    fill_uniform_f64(p.v, p.nkv, -1, 1, seed + 2);
    fill_uniform_f64(p.gl, p.ngate, -2, 2, seed + 3);
    return p;
}

static void free_problem(struct problem *p) { free(p->q), free(p->k), free(p->v), free(p->gl); }

/* ---- the reference: straightforward loops and dense masks ------------------------------ */

/* softmax over the masked keys j < n (rows at keys + j stride) of q.k_j scale, times v. */
static void ref_attend(double *o, double *lse, const double *q, const double *keys, const double *vals,
                       size_t stride, const int *mask, int n, double scale) {
    double s[MAXL], m = -INFINITY, z = 0;
    for (int j = 0; j < n; j++) {
        if (!mask[j]) continue;
        s[j] = 0;
        for (int x = 0; x < DIM; x++) s[j] += q[x] * keys[j * stride + x];
        s[j] *= scale;
        if (s[j] > m) m = s[j];
    }
    for (int x = 0; x < DIM; x++) o[x] = 0;
    *lse = 0;
    if (m == -INFINITY) return; /* no visible key: o = 0, lse = 0 */
    for (int j = 0; j < n; j++) {
        if (!mask[j]) continue;
        double e = exp(s[j] - m);
        z += e;
        for (int x = 0; x < DIM; x++) o[x] += e * vals[j * stride + x];
    }
    for (int x = 0; x < DIM; x++) o[x] /= z;
    *lse = m + log(z);
}

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

/* o [B, L, Hq, d]; chosen [B, L, HKV, MAXB] = 1 for the selected blocks; rs: what the
 * saved tensor should hold, in the layout of op_shapes.h. */
static void reference(double *o, unsigned char *chosen, double *rs, const struct problem *p) {
    int L = p->L, G = p->G, Hq = HKV * G, NB = (L + BLOCK - 1) / BLOCK, S = p->s.n_select;
    double scale = p->s.scale;
    size_t kvs = HKV * DIM; /* row stride of k, v, kbar, vbar */
    struct hyla_nsa_saved_offsets off = nsa_saved_offsets(&p->s, BATCH, L);
    double *kbar = rs + off.kbar, *vbar = rs + off.vbar;
    memset(rs, 0, off.total * sizeof *rs);
    for (int b = 0; b < BATCH; b++)
        for (int c = 0; c < NB; c++)
            for (int h = 0; h < HKV; h++) {
                int n = 0;
                for (int j = c * BLOCK; j < (c + 1) * BLOCK && j < L; j++, n++)
                    for (int x = 0; x < DIM; x++) {
                        kbar[((size_t)b * NB + c) * kvs + h * DIM + x] += p->k[((size_t)b * L + j) * kvs + h * DIM + x];
                        vbar[((size_t)b * NB + c) * kvs + h * DIM + x] += p->v[((size_t)b * L + j) * kvs + h * DIM + x];
                    }
                for (int x = 0; x < DIM; x++) {
                    kbar[((size_t)b * NB + c) * kvs + h * DIM + x] /= n;
                    vbar[((size_t)b * NB + c) * kvs + h * DIM + x] /= n;
                }
            }
    for (int b = 0; b < BATCH; b++)
        for (int t = 0; t < L; t++)
            for (int h = 0; h < HKV; h++) {
                double prob[MAXG][MAXB], imp[MAXB];
                int mask[MAXL], ic = t / BLOCK;
                size_t r0 = ((size_t)b * L + t) * Hq + h * G; /* row of the group's first query head */
                unsigned char *sel = chosen + (((size_t)b * L + t) * HKV + h) * MAXB;
                /* compressed attention over the complete blocks (c + 1) b - 1 <= t */
                for (int g = 0; g < G; g++) {
                    size_t r = r0 + g;
                    for (int c = 0; c < NB; c++) mask[c] = (c + 1) * BLOCK - 1 <= t;
                    ref_attend(rs + off.o[0] + r * DIM, rs + off.lse[0] + r, p->q + r * DIM,
                               kbar + (size_t)b * NB * kvs + h * DIM, vbar + (size_t)b * NB * kvs + h * DIM, kvs,
                               mask, NB, scale);
                    for (int c = 0; c < ic; c++) {
                        double s = 0;
                        for (int x = 0; x < DIM; x++)
                            s += p->q[r * DIM + x] * kbar[((size_t)b * NB + c) * kvs + h * DIM + x];
                        prob[g][c] = exp(s * scale - rs[off.lse[0] + r]);
                    }
                }
                /* importance: group mean for c < IC, forced 1 for {0, IC-1, IC}, c > IC invalid */
                for (int c = 0; c <= ic; c++) {
                    imp[c] = 0;
                    for (int g = 0; g < G && c < ic; g++) imp[c] += prob[g][c] / G;
                    if (c == 0 || c == ic - 1 || c == ic) imp[c] = 1;
                }
                memset(sel, 0, MAXB);
                for (int round = 0; round < S; round++) { /* arg max of the rest, lower index on ties */
                    int best = -1;
                    for (int c = 0; c <= ic; c++)
                        if (!sel[c] && (best < 0 || imp[c] > imp[best])) best = c;
                    if (best >= 0) sel[best] = 1;
                }
                for (int g = 0; g < G; g++) {
                    size_t r = r0 + g;
                    const double *kh = p->k + (size_t)b * L * kvs + h * DIM, *vh = p->v + (size_t)b * L * kvs + h * DIM;
                    for (int j = 0; j < L; j++) mask[j] = j <= t && sel[j / BLOCK];
                    ref_attend(rs + off.o[1] + r * DIM, rs + off.lse[1] + r, p->q + r * DIM, kh, vh, kvs, mask, L,
                               scale);
                    for (int j = 0; j < L; j++) mask[j] = j <= t && j >= t - WINDOW + 1;
                    ref_attend(rs + off.o[2] + r * DIM, rs + off.lse[2] + r, p->q + r * DIM, kh, vh, kvs, mask, L,
                               scale);
                    double *gate = rs + off.gate + r * 3; /* cmp, slc, swa */
                    for (int x = 0; x < 3; x++) gate[x] = sigmoid(p->gl[r * 3 + x]);
                    const double *oc = rs + off.o[0] + r * DIM, *os = rs + off.o[1] + r * DIM,
                                 *ow = rs + off.o[2] + r * DIM;
                    for (int x = 0; x < DIM; x++) o[r * DIM + x] = gate[1] * os[x] + gate[0] * oc[x] + gate[2] * ow[x];
                }
            }
}

/* ---- forward against the reference -------------------------------------------------------- */

static int ranked_rows; /* rows where the importance ranking dropped a candidate */

/* Selection errors of one problem: rows whose block set differs from the reference, or that
 * are malformed (out of range, repeated, wrong count of -1). */
static int compare_selection(const int32_t *idx, const unsigned char *chosen, const struct problem *p) {
    int bad = 0, S = p->s.n_select;
    for (size_t row = 0; row < (size_t)BATCH * p->L * HKV; row++) {
        int t = (int)(row / HKV % (size_t)p->L), ic = t / BLOCK, expect = ic + 1 < S ? ic + 1 : S, n = 0;
        unsigned char mine[MAXB] = {0};
        for (int x = 0; x < S; x++) {
            int c = idx[row * S + x];
            if (c < 0) continue;
            if (c > ic || mine[c] || x >= expect) bad++;
            else mine[c] = 1, n++;
        }
        if (n != expect || memcmp(mine, chosen + row * MAXB, MAXB) != 0) bad++;
        if (S > 3 && ic + 1 > S) ranked_rows++; /* a ranked slot, and more candidates than slots */
    }
    return bad;
}

static void test_forward(int G, int n_select) {
    static const int lengths[] = {1, 3, 9, 23, 40};
    double worst = 0, worst_saved = 0;
    int bad = 0, reuse_differs = 0, reuse_ignored = 0;
    for (size_t n = 0; n < sizeof lengths / sizeof *lengths; n++) {
        struct problem p = make_problem(G, lengths[n], n_select, 100 + 10 * n);
        double *o = alloc_f64(p.nq), *o2 = alloc_f64(p.nq), *ref = alloc_f64(p.nq), *saved = alloc_f64(p.nsaved);
        double *ref_saved = alloc_f64(p.nsaved);
        int32_t *idx = hyla_calloc(p.nidx, sizeof *idx);
        unsigned char *chosen = hyla_calloc((size_t)BATCH * p.L * HKV * MAXB, 1);
        cpu_f64_nsa_fwd(o, saved, idx, p.q, p.k, p.v, p.gl, &p.s, BATCH, p.L, 0);
        reference(ref, chosen, ref_saved, &p);
        double err = rel_err_f64(o, ref, p.nq), err_saved = rel_err_f64(saved, ref_saved, p.nsaved);
        if (!(err <= worst)) worst = err;
        if (!(err_saved <= worst_saved)) worst_saved = err_saved;
        bad += compare_selection(idx, chosen, &p);
        cpu_f64_nsa_fwd(o2, saved, idx, p.q, p.k, p.v, p.gl, &p.s, BATCH, p.L, 1);
        reuse_differs += memcmp(o, o2, p.nq * sizeof *o) != 0;
        /* an empty given selection must stay empty: o_slc = 0 everywhere */
        for (size_t x = 0; x < p.nidx; x++) idx[x] = -1;
        cpu_f64_nsa_fwd(o2, saved, idx, p.q, p.k, p.v, p.gl, &p.s, BATCH, p.L, 1);
        struct hyla_nsa_saved_offsets off = nsa_saved_offsets(&p.s, BATCH, p.L);
        for (size_t x = 0; x < p.nidx; x++) reuse_ignored += idx[x] != -1;
        for (size_t x = 0; x < p.nq; x++) reuse_ignored += saved[off.o[1] + x] != 0;
        free(o), free(o2), free(ref), free(saved), free(ref_saved), free(idx), free(chosen), free_problem(&p);
    }
    char what[120];
    snprintf(what, sizeof what, "forward vs reference, G=%d n_select=%d, L in {1,3,9,23,40}", G, n_select);
    check_le(what, worst, 1e-12);
    snprintf(what, sizeof what, "saved tensor vs reference (layout of op_shapes.h), G=%d n_select=%d", G, n_select);
    check_le(what, worst_saved, 1e-12);
    snprintf(what, sizeof what, "selection set mismatches vs reference, G=%d n_select=%d", G, n_select);
    check_le(what, bad, 0);
    snprintf(what, sizeof what, "reuse_block_idx reproduces the forward bit for bit, G=%d n_select=%d", G, n_select);
    check_true(what, reuse_differs == 0);
    snprintf(what, sizeof what, "reuse_block_idx with no block gives o_slc = 0, G=%d n_select=%d", G, n_select);
    check_true(what, reuse_ignored == 0);
}

/* ---- backward against finite differences -------------------------------------------------- */

struct fd_ctx {
    struct problem *p;
    int32_t *idx; /* held fixed: the forward runs with reuse_block_idx = 1 */
    const double *proj;
    double *o, *saved;
};

static double fd_loss(void *ptr) {
    struct fd_ctx *c = ptr;
    struct problem *p = c->p;
    cpu_f64_nsa_fwd(c->o, c->saved, c->idx, p->q, p->k, p->v, p->gl, &p->s, BATCH, p->L, 1);
    return dot_f64(c->proj, c->o, p->nq);
}

static void test_backward(int G, int L, int n_select) {
    struct problem p = make_problem(G, L, n_select, 200 + G);
    double *proj = alloc_f64(p.nq), *o = alloc_f64(p.nq), *saved = alloc_f64(p.nsaved);
    double *dq = alloc_f64(p.nq), *dk = alloc_f64(p.nkv), *dv = alloc_f64(p.nkv), *dg = alloc_f64(p.ngate);
    int32_t *idx = hyla_calloc(p.nidx, sizeof *idx);
    fill_uniform_f64(proj, p.nq, -1, 1, 300 + G);
    cpu_f64_nsa_fwd(o, saved, idx, p.q, p.k, p.v, p.gl, &p.s, BATCH, L, 0);
    cpu_f64_nsa_bwd(dq, dk, dv, dg, proj, saved, idx, p.q, p.k, p.v, p.gl, &p.s, BATCH, L);
    struct fd_ctx c = {.p = &p, .idx = idx, .proj = proj, .o = o, .saved = saved};
    char what[80];
    snprintf(what, sizeof what, "nsa dq (G=%d L=%d S=%d)", G, L, n_select);
    fd_check(what, p.q, p.nq, dq, fd_loss, &c, 1e-5);
    snprintf(what, sizeof what, "nsa dk (G=%d L=%d S=%d)", G, L, n_select);
    fd_check(what, p.k, p.nkv, dk, fd_loss, &c, 1e-5);
    snprintf(what, sizeof what, "nsa dv (G=%d L=%d S=%d)", G, L, n_select);
    fd_check(what, p.v, p.nkv, dv, fd_loss, &c, 1e-5);
    snprintf(what, sizeof what, "nsa dgate_logits (G=%d L=%d S=%d)", G, L, n_select);
    fd_check(what, p.gl, p.ngate, dg, fd_loss, &c, 1e-5);
    free(proj), free(o), free(saved), free(dq), free(dk), free(dv), free(dg), free(idx), free_problem(&p);
}

/* ---- fp32: against double, determinism, thread count -------------------------------------- */

struct f32_run {
    float *o, *saved, *dq, *dk, *dv, *dg;
    int32_t *idx;
};

static struct f32_run f32_alloc(const struct problem *p) {
    struct f32_run r = {alloc_f32(p->nq), alloc_f32(p->nsaved), alloc_f32(p->nq), alloc_f32(p->nkv),
                        alloc_f32(p->nkv), alloc_f32(p->ngate), hyla_calloc(p->nidx, sizeof(int32_t))};
    return r;
}

static void f32_free(struct f32_run *r) {
    free(r->o), free(r->saved), free(r->dq), free(r->dk), free(r->dv), free(r->dg), free(r->idx);
}

struct f32_inputs {
    float *q, *k, *v, *gl, *dout;
};

static void f32_forward_backward(struct f32_run *r, const struct f32_inputs *in, const struct problem *p) {
    cpu_f32_nsa_fwd(r->o, r->saved, r->idx, in->q, in->k, in->v, in->gl, &p->s, BATCH, p->L, 0);
    cpu_f32_nsa_bwd(r->dq, r->dk, r->dv, r->dg, in->dout, r->saved, r->idx, in->q, in->k, in->v, in->gl, &p->s,
                    BATCH, p->L);
}

static double f32_vs_f64(const float *a, const double *b, size_t n) {
    double *ad = alloc_f64(n);
    copy_f32_to_f64(ad, a, n);
    double e = rel_err_f64(ad, b, n);
    free(ad);
    return e;
}

static int same_f32_run(const struct f32_run *a, const struct f32_run *b, const struct problem *p) {
    size_t f = sizeof(float);
    return !memcmp(a->o, b->o, p->nq * f) && !memcmp(a->saved, b->saved, p->nsaved * f) &&
           !memcmp(a->idx, b->idx, p->nidx * sizeof(int32_t)) && !memcmp(a->dq, b->dq, p->nq * f) &&
           !memcmp(a->dk, b->dk, p->nkv * f) && !memcmp(a->dv, b->dv, p->nkv * f) &&
           !memcmp(a->dg, b->dg, p->ngate * f);
}

static void test_fp32(int G, int L, int n_select) {
    struct problem p = make_problem(G, L, n_select, 400 + G);
    struct f32_inputs in = {alloc_f32(p.nq), alloc_f32(p.nkv), alloc_f32(p.nkv), alloc_f32(p.ngate), alloc_f32(p.nq)};
    double *dout = alloc_f64(p.nq);
    fill_uniform_f64(dout, p.nq, -1, 1, 500 + G);
    /* the same rounded inputs for both precisions */
    double *src[] = {p.q, p.k, p.v, p.gl, dout};
    float *dst[] = {in.q, in.k, in.v, in.gl, in.dout};
    size_t len[] = {p.nq, p.nkv, p.nkv, p.ngate, p.nq};
    for (int x = 0; x < 5; x++) copy_f64_to_f32(dst[x], src[x], len[x]), copy_f32_to_f64(src[x], dst[x], len[x]);

    double *o = alloc_f64(p.nq), *saved = alloc_f64(p.nsaved);
    double *dq = alloc_f64(p.nq), *dk = alloc_f64(p.nkv), *dv = alloc_f64(p.nkv), *dg = alloc_f64(p.ngate);
    int32_t *idx = hyla_calloc(p.nidx, sizeof *idx);
    cpu_f64_nsa_fwd(o, saved, idx, p.q, p.k, p.v, p.gl, &p.s, BATCH, L, 0);
    cpu_f64_nsa_bwd(dq, dk, dv, dg, dout, saved, idx, p.q, p.k, p.v, p.gl, &p.s, BATCH, L);

    struct f32_run r = f32_alloc(&p), r2 = f32_alloc(&p), r3 = f32_alloc(&p);
    f32_forward_backward(&r, &in, &p);
    char what[100];
    snprintf(what, sizeof what, "fp32 selects the same blocks as double (G=%d L=%d)", G, L);
    check_true(what, memcmp(r.idx, idx, p.nidx * sizeof *idx) == 0);
    const char *names[] = {"o", "dq", "dk", "dv", "dgate_logits"};
    const float *got[] = {r.o, r.dq, r.dk, r.dv, r.dg};
    const double *want[] = {o, dq, dk, dv, dg};
    size_t n[] = {p.nq, p.nq, p.nkv, p.nkv, p.ngate};
    for (int x = 0; x < 5; x++) {
        snprintf(what, sizeof what, "fp32 %s vs double (G=%d L=%d)", names[x], G, L);
        check_le(what, f32_vs_f64(got[x], want[x], n[x]), 1e-5);
    }

    f32_forward_backward(&r2, &in, &p);
    snprintf(what, sizeof what, "fp32 forward and backward are deterministic (G=%d L=%d)", G, L);
    check_true(what, same_f32_run(&r, &r2, &p));
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    f32_forward_backward(&r2, &in, &p);
    omp_set_num_threads(3);
    f32_forward_backward(&r3, &in, &p);
    omp_set_num_threads(threads);
    snprintf(what, sizeof what, "fp32 results identical with 1, %d and 3 threads (G=%d L=%d)", threads, G, L);
    check_true(what, same_f32_run(&r, &r2, &p) && same_f32_run(&r, &r3, &p));

    f32_free(&r), f32_free(&r2), f32_free(&r3);
    free(in.q), free(in.k), free(in.v), free(in.gl), free(in.dout), free(dout);
    free(o), free(saved), free(dq), free(dk), free(dv), free(dg), free(idx), free_problem(&p);
}

int main(void) {
    static const int groups[] = {1, 2, 4};
    for (int x = 0; x < 3; x++) {
        test_forward(groups[x], 3);
        test_forward(groups[x], 4);
    }
    char what[120];
    snprintf(what, sizeof what, "the importance ranking decided selections (%d rows with more candidates than slots)",
             ranked_rows);
    check_true(what, ranked_rows > 0);
    for (int x = 0; x < 3; x++) test_backward(groups[x], 23, 4);
    test_backward(2, 9, 3);
    test_fp32(2, 23, 4);
    test_fp32(4, 40, 4);
    return test_finish();
}
