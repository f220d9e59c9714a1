/* Gated delta rule, chunkwise (chunk 64, MODEL.md §3.4-3.5):
 * - backward against finite differences in double for every input (q, k, v, beta, g,
 *   initial state), loss on o and the final state, with ragged last chunks;
 * - equality with the token-by-token recurrence (gdr_recurrent) for every output and
 *   gradient, L not a multiple of 64, non-zero initial state and dfinal_state: double
 *   chunk vs double recurrence, and fp32 chunk vs double recurrence on the same
 *   (rounded) inputs;
 * - strong decay (exp(gamma) underflows), NULL conventions, determinism (two calls, and
 *   1 vs 2 threads, bit for bit). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

struct dims {
    int B, L, H, dk, dv;
};

/* Inputs in double, and the loss projections (po on o, ps on the final state). */
struct set {
    struct dims d;
    size_t nk, nv, ng, ns;
    double *q, *k, *v, *beta, *g, *h0, *po, *ps, scale;
};

/* Every output and gradient of one fwd + bwd. */
struct res {
    double *o, *fin, *dq, *dk, *dv, *dbeta, *dg, *dh0;
};

static void set_make(struct set *s, struct dims d, uint64_t seed, double g_lo, double g_hi) {
    s->d = d;
    s->nk = (size_t)d.B * d.L * d.H * d.dk, s->nv = (size_t)d.B * d.L * d.H * d.dv;
    s->ng = (size_t)d.B * d.L * d.H, s->ns = (size_t)d.B * d.H * d.dk * d.dv;
    s->q = alloc_f64(s->nk), s->k = alloc_f64(s->nk), s->v = alloc_f64(s->nv);
    s->beta = alloc_f64(s->ng), s->g = alloc_f64(s->ng), s->h0 = alloc_f64(s->ns);
    s->po = alloc_f64(s->nv), s->ps = alloc_f64(s->ns);
    double *rstd = alloc_f64(s->ng);
    /* As in training: q, k L2-normalised by the l2norm op, beta in (0,1), g a log-decay. */
    fill_uniform_f64(s->q, s->nk, -1, 1, seed + 1);
    fill_uniform_f64(s->k, s->nk, -1, 1, seed + 2);
    cpu_f64_l2norm_fwd(s->q, rstd, s->q, (int)s->ng, d.dk, 1e-6);
    cpu_f64_l2norm_fwd(s->k, rstd, s->k, (int)s->ng, d.dk, 1e-6);
    fill_uniform_f64(s->v, s->nv, -1, 1, seed + 3);
    fill_uniform_f64(s->beta, s->ng, 0.05, 0.95, seed + 4);
    fill_uniform_f64(s->g, s->ng, g_lo, g_hi, seed + 5);
    fill_uniform_f64(s->h0, s->ns, -0.5, 0.5, seed + 6);
    fill_uniform_f64(s->po, s->nv, -1, 1, seed + 7);
    fill_uniform_f64(s->ps, s->ns, -1, 1, seed + 8);
    s->scale = 1 / sqrt((double)d.dk);
    free(rstd);
}

static void set_free(struct set *s) {
    free(s->q), free(s->k), free(s->v), free(s->beta), free(s->g), free(s->h0), free(s->po), free(s->ps);
}

static void round_f32(double *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (float)x[i];
}

/* Make every input exactly representable in float, so that fp32 and double runs see the same values. */
static void set_round(struct set *s) {
    round_f32(s->q, s->nk), round_f32(s->k, s->nk), round_f32(s->v, s->nv), round_f32(s->beta, s->ng);
    round_f32(s->g, s->ng), round_f32(s->h0, s->ns), round_f32(s->po, s->nv), round_f32(s->ps, s->ns);
    s->scale = (float)s->scale;
}

static void res_alloc(struct res *r, const struct set *s) {
    r->o = alloc_f64(s->nv), r->fin = alloc_f64(s->ns), r->dq = alloc_f64(s->nk), r->dk = alloc_f64(s->nk);
    r->dv = alloc_f64(s->nv), r->dbeta = alloc_f64(s->ng), r->dg = alloc_f64(s->ng), r->dh0 = alloc_f64(s->ns);
}

static void res_free(struct res *r) {
    free(r->o), free(r->fin), free(r->dq), free(r->dk), free(r->dv), free(r->dbeta), free(r->dg), free(r->dh0);
}

/* Forward and backward in double: chunk != 0 for gdr_chunk, else gdr_recurrent. */
static void run_f64(int chunk, const struct set *s, struct res *r) {
    struct dims d = s->d;
    if (chunk) {
        cpu_f64_gdr_chunk_fwd(r->o, r->fin, s->q, s->k, s->v, s->beta, s->g, s->h0, s->scale, d.B, d.L, d.H, d.dk,
                              d.dv, NULL);
        cpu_f64_gdr_chunk_bwd(r->dq, r->dk, r->dv, r->dbeta, r->dg, r->dh0, s->po, s->ps, s->q, s->k, s->v, s->beta,
                              s->g, s->h0, s->scale, d.B, d.L, d.H, d.dk, d.dv, NULL);
    } else {
        cpu_f64_gdr_recurrent_fwd(r->o, r->fin, s->q, s->k, s->v, s->beta, s->g, s->h0, s->scale, d.B, d.L, d.H,
                                  d.dk, d.dv);
        cpu_f64_gdr_recurrent_bwd(r->dq, r->dk, r->dv, r->dbeta, r->dg, r->dh0, s->po, s->ps, s->q, s->k, s->v,
                                  s->beta, s->g, s->h0, s->scale, d.B, d.L, d.H, d.dk, d.dv);
    }
}

/* The fp32 chunk kernel on the (rounded) inputs; results widened to double. */
struct f32_bufs {
    float *q, *k, *v, *beta, *g, *h0, *po, *ps;
    float *o, *fin, *dq, *dk, *dv, *dbeta, *dg, *dh0;
};

static float *to_f32(const double *x, size_t n) {
    float *y = alloc_f32(n);
    copy_f64_to_f32(y, x, n);
    return y;
}

static void f32_make(struct f32_bufs *f, const struct set *s) {
    f->q = to_f32(s->q, s->nk), f->k = to_f32(s->k, s->nk), f->v = to_f32(s->v, s->nv);
    f->beta = to_f32(s->beta, s->ng), f->g = to_f32(s->g, s->ng), f->h0 = to_f32(s->h0, s->ns);
    f->po = to_f32(s->po, s->nv), f->ps = to_f32(s->ps, s->ns);
    f->o = alloc_f32(s->nv), f->fin = alloc_f32(s->ns), f->dq = alloc_f32(s->nk), f->dk = alloc_f32(s->nk);
    f->dv = alloc_f32(s->nv), f->dbeta = alloc_f32(s->ng), f->dg = alloc_f32(s->ng), f->dh0 = alloc_f32(s->ns);
}

static void f32_free(struct f32_bufs *f) {
    float *all[] = {f->q, f->k, f->v, f->beta, f->g, f->h0, f->po, f->ps,
                    f->o, f->fin, f->dq, f->dk, f->dv, f->dbeta, f->dg, f->dh0};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static void f32_run(struct f32_bufs *f, const struct set *s) {
    struct dims d = s->d;
    float sc = (float)s->scale;
    cpu_f32_gdr_chunk_fwd(f->o, f->fin, f->q, f->k, f->v, f->beta, f->g, f->h0, sc, d.B, d.L, d.H, d.dk, d.dv, NULL);
    cpu_f32_gdr_chunk_bwd(f->dq, f->dk, f->dv, f->dbeta, f->dg, f->dh0, f->po, f->ps, f->q, f->k, f->v, f->beta, f->g,
                          f->h0, sc, d.B, d.L, d.H, d.dk, d.dv, NULL);
}

static void f32_widen(struct res *r, const struct f32_bufs *f, const struct set *s) {
    copy_f32_to_f64(r->o, f->o, s->nv), copy_f32_to_f64(r->fin, f->fin, s->ns);
    copy_f32_to_f64(r->dq, f->dq, s->nk), copy_f32_to_f64(r->dk, f->dk, s->nk);
    copy_f32_to_f64(r->dv, f->dv, s->nv), copy_f32_to_f64(r->dbeta, f->dbeta, s->ng);
    copy_f32_to_f64(r->dg, f->dg, s->ng), copy_f32_to_f64(r->dh0, f->dh0, s->ns);
}

/* One check per tensor: outputs against out_bound, gradients against grad_bound. */
static void compare(const char *what, const struct res *a, const struct res *ref, const struct set *s,
                    double out_bound, double grad_bound) {
    struct {
        const char *name;
        const double *x, *y;
        size_t n;
        double bound;
    } t[] = {
        {"o", a->o, ref->o, s->nv, out_bound},          {"final state", a->fin, ref->fin, s->ns, out_bound},
        {"dq", a->dq, ref->dq, s->nk, grad_bound},       {"dk", a->dk, ref->dk, s->nk, grad_bound},
        {"dv", a->dv, ref->dv, s->nv, grad_bound},       {"dbeta", a->dbeta, ref->dbeta, s->ng, grad_bound},
        {"dg", a->dg, ref->dg, s->ng, grad_bound},       {"dinitial_state", a->dh0, ref->dh0, s->ns, grad_bound},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char label[160];
        snprintf(label, sizeof label, "%s L=%d dk=%d dv=%d: %s", what, s->d.L, s->d.dk, s->d.dv, t[i].name);
        check_le(label, rel_err_f64(t[i].x, t[i].y, t[i].n), t[i].bound);
    }
}

/* ---- finite differences of the chunk kernel itself ------------------------------------- */

struct fd_ctx {
    struct set *s;
    double *o, *fin;
};

static double chunk_loss(void *p) {
    struct fd_ctx *c = p;
    struct set *s = c->s;
    struct dims d = s->d;
    cpu_f64_gdr_chunk_fwd(c->o, c->fin, s->q, s->k, s->v, s->beta, s->g, s->h0, s->scale, d.B, d.L, d.H, d.dk, d.dv, NULL);
    return dot_f64(s->po, c->o, s->nv) + dot_f64(s->ps, c->fin, s->ns);
}

static void test_fd(struct dims d, uint64_t seed) {
    struct set s;
    struct res r;
    set_make(&s, d, seed, -0.5, -0.001);
    res_alloc(&r, &s);
    run_f64(1, &s, &r);
    struct fd_ctx c = {&s, alloc_f64(s.nv), alloc_f64(s.ns)};
    char label[128];
    /* Thousands of tiny forward calls: one thread keeps them cheap on a busy machine
     * (the analytic gradients above ran with every thread). */
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
#define FD(name, x, n, grad)                                                                             \
    snprintf(label, sizeof label, "gdr_chunk L=%d dk=%d dv=%d %s", d.L, d.dk, d.dv, name);              \
    fd_check(label, x, n, grad, chunk_loss, &c, 1e-5)
    FD("dq", s.q, s.nk, r.dq);
    FD("dk", s.k, s.nk, r.dk);
    FD("dv", s.v, s.nv, r.dv);
    FD("dbeta", s.beta, s.ng, r.dbeta);
    FD("dg", s.g, s.ng, r.dg);
    FD("dinitial_state", s.h0, s.ns, r.dh0);
#undef FD
    omp_set_num_threads(nt);
    free(c.o), free(c.fin);
    res_free(&r);
    set_free(&s);
}

/* ---- equality with the recurrence ------------------------------------------------------- */

static void test_vs_recurrent(struct dims d, uint64_t seed, double g_lo, double g_hi, const char *tag) {
    struct set s;
    struct res rec, chk;
    char what[96];
    set_make(&s, d, seed, g_lo, g_hi);
    set_round(&s);
    res_alloc(&rec, &s), res_alloc(&chk, &s);
    run_f64(0, &s, &rec);
    run_f64(1, &s, &chk);
    snprintf(what, sizeof what, "%schunk f64 vs recurrent f64", tag);
    compare(what, &chk, &rec, &s, 1e-10, 1e-10);

    struct f32_bufs f;
    f32_make(&f, &s);
    f32_run(&f, &s);
    f32_widen(&chk, &f, &s);
    snprintf(what, sizeof what, "%schunk f32 vs recurrent f64 (same rounded inputs)", tag);
    compare(what, &chk, &rec, &s, 1e-5, 1e-4);
    f32_free(&f);
    res_free(&rec), res_free(&chk);
    set_free(&s);
}

/* ---- NULL conventions ------------------------------------------------------------------- */

static void test_nulls(void) {
    struct dims d = {2, 100, 2, 16, 8};
    struct set s;
    set_make(&s, d, 500, -0.5, -0.001);
    struct res a, b;
    res_alloc(&a, &s), res_alloc(&b, &s);
    double *zero = alloc_f64(s.ns);
    cpu_f64_gdr_chunk_fwd(a.o, NULL, s.q, s.k, s.v, s.beta, s.g, NULL, s.scale, d.B, d.L, d.H, d.dk, d.dv, NULL);
    cpu_f64_gdr_chunk_fwd(b.o, b.fin, s.q, s.k, s.v, s.beta, s.g, zero, s.scale, d.B, d.L, d.H, d.dk, d.dv, NULL);
    check_bitwise_equal("gdr_chunk: initial_state NULL equals zeros (o)", a.o, b.o, s.nv * sizeof(double));
    cpu_f64_gdr_chunk_bwd(a.dq, a.dk, a.dv, a.dbeta, a.dg, NULL, s.po, NULL, s.q, s.k, s.v, s.beta, s.g, NULL,
                          s.scale, d.B, d.L, d.H, d.dk, d.dv, NULL);
    cpu_f64_gdr_chunk_bwd(b.dq, b.dk, b.dv, b.dbeta, b.dg, b.dh0, s.po, zero, s.q, s.k, s.v, s.beta, s.g, zero,
                          s.scale, d.B, d.L, d.H, d.dk, d.dv, NULL);
    check_true("gdr_chunk: dfinal_state and initial_state NULL equal zeros (all gradients bitwise)",
               !memcmp(a.dq, b.dq, s.nk * 8) && !memcmp(a.dk, b.dk, s.nk * 8) && !memcmp(a.dv, b.dv, s.nv * 8) &&
                   !memcmp(a.dbeta, b.dbeta, s.ng * 8) && !memcmp(a.dg, b.dg, s.ng * 8));
    free(zero);
    res_free(&a), res_free(&b);
    set_free(&s);
}

/* ---- determinism ------------------------------------------------------------------------ */

static int f32_same(const struct f32_bufs *a, const struct f32_bufs *b, const struct set *s, int fwd) {
    size_t f = sizeof(float);
    if (fwd) return !memcmp(a->o, b->o, s->nv * f) && !memcmp(a->fin, b->fin, s->ns * f);
    return !memcmp(a->dq, b->dq, s->nk * f) && !memcmp(a->dk, b->dk, s->nk * f) &&
           !memcmp(a->dv, b->dv, s->nv * f) && !memcmp(a->dbeta, b->dbeta, s->ng * f) &&
           !memcmp(a->dg, b->dg, s->ng * f) && !memcmp(a->dh0, b->dh0, s->ns * f);
}

static void test_determinism(void) {
    struct dims d = {2, 200, 2, 32, 32};
    struct set s;
    set_make(&s, d, 600, -0.5, -0.001);
    struct f32_bufs a, b, c;
    f32_make(&a, &s), f32_make(&b, &s), f32_make(&c, &s);
    f32_run(&a, &s);
    f32_run(&b, &s);
    check_true("gdr_chunk fp32 forward is deterministic (two calls, bitwise)", f32_same(&a, &b, &s, 1));
    check_true("gdr_chunk fp32 backward is deterministic (two calls, bitwise)", f32_same(&a, &b, &s, 0));
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    f32_run(&c, &s);
    omp_set_num_threads(nt);
    char label[96];
    snprintf(label, sizeof label, "gdr_chunk fp32 fwd+bwd: 1 thread equals %d threads (bitwise)", nt);
    check_true(label, f32_same(&a, &c, &s, 1) && f32_same(&a, &c, &s, 0));
    f32_free(&a), f32_free(&b), f32_free(&c);
    set_free(&s);
}

int main(void) {
    test_fd((struct dims){1, 70, 2, 8, 8}, 100);
    test_fd((struct dims){1, 130, 1, 8, 4}, 110);
    const int lens[] = {1, 63, 64, 130, 200};
    const struct dims heads[] = {{2, 0, 2, 16, 8}, {2, 0, 2, 32, 32}};
    for (int hd = 0; hd < 2; hd++)
        for (int i = 0; i < 5; i++) {
            struct dims d = heads[hd];
            d.L = lens[i];
            test_vs_recurrent(d, 1000 + 10 * (uint64_t)(hd * 5 + i), -0.5, -0.001, "");
        }
    test_vs_recurrent((struct dims){1, 130, 2, 64, 64}, 2000, -0.5, -0.001, "");
    /* Strong decay: exp(gamma) underflows to 0 in fp32 within a chunk. */
    test_vs_recurrent((struct dims){2, 200, 2, 16, 8}, 3000, -8, -2, "strong decay g in [-8,-2]: ");
    test_nulls();
    test_determinism();
    return test_finish();
}
