/* Gated delta rule, token-by-token reference (MODEL.md §3.3): forward against an
 * independent evaluation of S_t = a_t (I - b_t k k^T) S_{t-1} + b_t k v^T, backward against
 * finite differences in double for every input (q, k, v, beta, g, initial state) with a
 * loss on both outputs (o and the final state), NULL conventions, fp32 against double,
 * determinism. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { B = 2, L = 13, H = 2, DK = 6, DV = 4 };
enum { NK = B * L * H * DK, NV = B * L * H * DV, NG = B * L * H, NS = B * H * DK * DV };

struct ctx {
    double q[NK], k[NK], v[NV], beta[NG], g[NG], h0[NS];
    double o[NV], fin[NS], po[NV], ps[NS], scale;
};

static double loss(void *p) {
    struct ctx *c = p;
    cpu_f64_gdr_recurrent_fwd(c->o, c->fin, c->q, c->k, c->v, c->beta, c->g, c->h0, c->scale, B, L, H, DK, DV);
    return dot_f64(c->po, c->o, NV) + dot_f64(c->ps, c->fin, NS);
}

/* Inputs as in training: q, k L2-normalised by the l2norm op, beta in (0,1), g in [-0.5, -0.001]. */
static void make_inputs(struct ctx *c, uint64_t seed) {
    double rstd[B * L * H];
    fill_uniform_f64(c->q, NK, -1, 1, seed + 1);
    fill_uniform_f64(c->k, NK, -1, 1, seed + 2);
    cpu_f64_l2norm_fwd(c->q, rstd, c->q, B * L * H, DK, 1e-6);
    cpu_f64_l2norm_fwd(c->k, rstd, c->k, B * L * H, DK, 1e-6);
    fill_uniform_f64(c->v, NV, -1, 1, seed + 3);
    fill_uniform_f64(c->beta, NG, 0.05, 0.95, seed + 4);
    fill_uniform_f64(c->g, NG, -0.5, -0.001, seed + 5);
    fill_uniform_f64(c->h0, NS, -0.5, 0.5, seed + 6);
    fill_uniform_f64(c->po, NV, -1, 1, seed + 7);
    fill_uniform_f64(c->ps, NS, -1, 1, seed + 8);
    c->scale = 1 / sqrt((double)DK);
}

/* The transposed-orientation form of §3.2 step 5, with explicit matrices. */
static void naive_fwd(double *o, double *fin, const struct ctx *c) {
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            double S[DK][DV], Sn[DK][DV];
            for (int i = 0; i < DK; i++)
                for (int j = 0; j < DV; j++) S[i][j] = c->h0[((b * H + h) * DK + i) * DV + j];
            for (int t = 0; t < L; t++) {
                size_t tk = ((size_t)(b * L + t) * H + h);
                const double *k = c->k + tk * DK, *q = c->q + tk * DK, *v = c->v + tk * DV;
                double a = exp(c->g[tk]), be = c->beta[tk];
                for (int i = 0; i < DK; i++)
                    for (int j = 0; j < DV; j++) {
                        double acc = 0; /* ((I - be k k^T) S)_{ij} */
                        for (int m = 0; m < DK; m++) acc += ((i == m) - be * k[i] * k[m]) * S[m][j];
                        Sn[i][j] = a * acc + be * k[i] * v[j];
                    }
                for (int j = 0; j < DV; j++) {
                    double acc = 0;
                    for (int i = 0; i < DK; i++) acc += Sn[i][j] * q[i];
                    o[tk * DV + j] = c->scale * acc;
                }
                for (int i = 0; i < DK; i++)
                    for (int j = 0; j < DV; j++) S[i][j] = Sn[i][j];
            }
            for (int i = 0; i < DK; i++)
                for (int j = 0; j < DV; j++) fin[((b * H + h) * DK + i) * DV + j] = S[i][j];
        }
}

static void test_double(void) {
    static struct ctx c;
    make_inputs(&c, 100);
    loss(&c);
    double ro[NV], rfin[NS];
    naive_fwd(ro, rfin, &c);
    check_le("gdr_recurrent forward o vs explicit (I - b k k^T) form", rel_err_f64(c.o, ro, NV), 1e-13);
    check_le("gdr_recurrent forward final state vs explicit form", rel_err_f64(c.fin, rfin, NS), 1e-13);

    double dq[NK], dk[NK], dv[NV], dbeta[NG], dg[NG], dh0[NS];
    cpu_f64_gdr_recurrent_bwd(dq, dk, dv, dbeta, dg, dh0, c.po, c.ps, c.q, c.k, c.v, c.beta, c.g, c.h0, c.scale, B,
                              L, H, DK, DV);
    fd_check("gdr_recurrent dq", c.q, NK, dq, loss, &c, 1e-5);
    fd_check("gdr_recurrent dk", c.k, NK, dk, loss, &c, 1e-5);
    fd_check("gdr_recurrent dv", c.v, NV, dv, loss, &c, 1e-5);
    fd_check("gdr_recurrent dbeta", c.beta, NG, dbeta, loss, &c, 1e-5);
    fd_check("gdr_recurrent dg", c.g, NG, dg, loss, &c, 1e-5);
    fd_check("gdr_recurrent dinitial_state", c.h0, NS, dh0, loss, &c, 1e-5);

    /* NULL initial state = zeros; NULL dfinal_state = zeros; NULL final/dinitial accepted. */
    static double o1[NV], o2[NV], f2[NS], z[NS], d1[NK], d2[NK], e1[NK], e2[NK], v1[NV], v2[NV], b1[NG], b2[NG],
        g1[NG], g2[NG];
    cpu_f64_gdr_recurrent_fwd(o1, NULL, c.q, c.k, c.v, c.beta, c.g, NULL, c.scale, B, L, H, DK, DV);
    cpu_f64_gdr_recurrent_fwd(o2, f2, c.q, c.k, c.v, c.beta, c.g, z, c.scale, B, L, H, DK, DV);
    check_bitwise_equal("gdr_recurrent: initial_state NULL equals zeros", o1, o2, sizeof o1);
    cpu_f64_gdr_recurrent_bwd(d1, e1, v1, b1, g1, NULL, c.po, NULL, c.q, c.k, c.v, c.beta, c.g, NULL, c.scale, B, L,
                              H, DK, DV);
    cpu_f64_gdr_recurrent_bwd(d2, e2, v2, b2, g2, dh0, c.po, z, c.q, c.k, c.v, c.beta, c.g, z, c.scale, B, L, H, DK,
                              DV);
    check_true("gdr_recurrent: dfinal_state NULL equals zeros (all gradients bitwise)",
               !memcmp(d1, d2, sizeof d1) && !memcmp(e1, e2, sizeof e1) && !memcmp(v1, v2, sizeof v1) &&
                   !memcmp(b1, b2, sizeof b1) && !memcmp(g1, g2, sizeof g1));
}

static void test_fp32(void) {
    static struct ctx c;
    make_inputs(&c, 200);
    static float qf[NK], kf[NK], vf[NV], bf[NG], gf[NG], hf[NS], pof[NV], psf[NS];
    copy_f64_to_f32(qf, c.q, NK), copy_f64_to_f32(kf, c.k, NK), copy_f64_to_f32(vf, c.v, NV);
    copy_f64_to_f32(bf, c.beta, NG), copy_f64_to_f32(gf, c.g, NG), copy_f64_to_f32(hf, c.h0, NS);
    copy_f64_to_f32(pof, c.po, NV), copy_f64_to_f32(psf, c.ps, NS);
    copy_f32_to_f64(c.q, qf, NK), copy_f32_to_f64(c.k, kf, NK), copy_f32_to_f64(c.v, vf, NV);
    copy_f32_to_f64(c.beta, bf, NG), copy_f32_to_f64(c.g, gf, NG), copy_f32_to_f64(c.h0, hf, NS);
    copy_f32_to_f64(c.po, pof, NV), copy_f32_to_f64(c.ps, psf, NS);
    static double dq[NK], dk[NK], dv[NV], db[NG], dg[NG], dh[NS], t[NK];
    static float of[NV], ff[NS], dqf[NK], dkf[NK], dvf[NV], dbf[NG], dgf[NG], dhf[NS], of2[NV], dgf2[NG];
    loss(&c);
    cpu_f64_gdr_recurrent_bwd(dq, dk, dv, db, dg, dh, c.po, c.ps, c.q, c.k, c.v, c.beta, c.g, c.h0, c.scale, B, L,
                              H, DK, DV);
    float sc = (float)c.scale;
    cpu_f32_gdr_recurrent_fwd(of, ff, qf, kf, vf, bf, gf, hf, sc, B, L, H, DK, DV);
    cpu_f32_gdr_recurrent_bwd(dqf, dkf, dvf, dbf, dgf, dhf, pof, psf, qf, kf, vf, bf, gf, hf, sc, B, L, H, DK, DV);
    copy_f32_to_f64(t, of, NV);
    check_le("gdr_recurrent fp32 vs double (same rounded inputs): o", rel_err_f64(t, c.o, NV), 1e-5);
    copy_f32_to_f64(t, ff, NS);
    check_le("gdr_recurrent fp32 vs double (same rounded inputs): final state", rel_err_f64(t, c.fin, NS), 1e-5);
    copy_f32_to_f64(t, dqf, NK);
    check_le("gdr_recurrent fp32 vs double (same rounded inputs): dq", rel_err_f64(t, dq, NK), 1e-4);
    copy_f32_to_f64(t, dkf, NK);
    check_le("gdr_recurrent fp32 vs double (same rounded inputs): dk", rel_err_f64(t, dk, NK), 1e-4);
    copy_f32_to_f64(t, dvf, NV);
    check_le("gdr_recurrent fp32 vs double (same rounded inputs): dv", rel_err_f64(t, dv, NV), 1e-4);
    copy_f32_to_f64(t, dbf, NG);
    check_le("gdr_recurrent fp32 vs double (same rounded inputs): dbeta", rel_err_f64(t, db, NG), 1e-4);
    copy_f32_to_f64(t, dgf, NG);
    check_le("gdr_recurrent fp32 vs double (same rounded inputs): dg", rel_err_f64(t, dg, NG), 1e-4);
    copy_f32_to_f64(t, dhf, NS);
    check_le("gdr_recurrent fp32 vs double (same rounded inputs): dinitial_state", rel_err_f64(t, dh, NS), 1e-4);
    cpu_f32_gdr_recurrent_fwd(of2, ff, qf, kf, vf, bf, gf, hf, sc, B, L, H, DK, DV);
    cpu_f32_gdr_recurrent_bwd(dqf, dkf, dvf, dbf, dgf2, dhf, pof, psf, qf, kf, vf, bf, gf, hf, sc, B, L, H, DK, DV);
    check_bitwise_equal("gdr_recurrent fp32 forward is deterministic", of, of2, sizeof of);
    check_bitwise_equal("gdr_recurrent fp32 backward dg is deterministic", dgf, dgf2, sizeof dgf);
}

int main(void) {
    test_double();
    test_fp32();
    return test_finish();
}
