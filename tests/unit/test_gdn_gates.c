/* GDN gates beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias): forward against the
 * formula, backward against finite differences in double (db, da, dA_log, dt_bias with
 * accumulation), the softplus linear branch, fp32 against double, determinism; the logits
 * at a row stride (the model's [a | b] rows, ld = 2H) against the packed layout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { ROWS = 10, H = 3, N = ROWS * H };

struct ctx {
    double b[N], a[N], A_log[H], dt_bias[H], beta[N], g[N], pb[N], pg[N];
};

/* loss = <pb, beta> + <pg, g>: both outputs. */
static double loss(void *p) {
    struct ctx *c = p;
    cpu_f64_gdn_gates_fwd(c->beta, c->g, c->b, c->a, H, c->A_log, c->dt_bias, ROWS, H);
    return dot_f64(c->pb, c->beta, N) + dot_f64(c->pg, c->g, N);
}

static void test_backward(void) {
    struct ctx c;
    /* a + dt_bias stays within [-4, 4], far from softplus's branch at 20. */
    fill_uniform_f64(c.b, N, -3, 3, 1);
    fill_uniform_f64(c.a, N, -3, 3, 2);
    fill_uniform_f64(c.A_log, H, 0, 2.7, 3); /* exp(A_log) in [1, 15], like the init U(1,16) */
    fill_uniform_f64(c.dt_bias, H, -1, 1, 4);
    fill_uniform_f64(c.pb, N, -1, 1, 5);
    fill_uniform_f64(c.pg, N, -1, 1, 6);
    loss(&c);

    double rb[N], rg[N];
    for (int r = 0; r < ROWS; r++)
        for (int h = 0; h < H; h++) {
            int i = r * H + h;
            rb[i] = 1 / (1 + exp(-c.b[i]));
            rg[i] = -exp(c.A_log[h]) * log1p(exp(c.a[i] + c.dt_bias[h]));
        }
    check_le("gdn_gates forward beta vs formula", rel_err_f64(c.beta, rb, N), 1e-15);
    check_le("gdn_gates forward g vs formula", rel_err_f64(c.g, rg, N), 1e-15);

    double db[N], da[N], dA0[H], dt0[H], dA[H], dt[H], dAg[H], dtg[H];
    fill_uniform_f64(dA0, H, -1, 1, 7);
    fill_uniform_f64(dt0, H, -1, 1, 8);
    for (int h = 0; h < H; h++) dA[h] = dA0[h], dt[h] = dt0[h];
    cpu_f64_gdn_gates_bwd(db, da, dA, dt, c.pb, c.pg, c.b, c.a, H, c.A_log, c.dt_bias, ROWS, H);
    for (int h = 0; h < H; h++) dAg[h] = dA[h] - dA0[h], dtg[h] = dt[h] - dt0[h];
    fd_check("gdn_gates db_logits", c.b, N, db, loss, &c, 1e-5);
    fd_check("gdn_gates da_logits", c.a, N, da, loss, &c, 1e-5);
    fd_check("gdn_gates dA_log (accumulated onto non-zero)", c.A_log, H, dAg, loss, &c, 1e-6);
    fd_check("gdn_gates ddt_bias (accumulated onto non-zero)", c.dt_bias, H, dtg, loss, &c, 1e-5);
}

/* Above 20 softplus is the identity (PyTorch's threshold), with derivative 1. */
static void test_softplus_branch(void) {
    double b = 0, a = 24, A_log = 0.5, dt = 1, beta, g, dbeta = 0, dg = 1.5, db, da, dA = 0, ddt = 0;
    cpu_f64_gdn_gates_fwd(&beta, &g, &b, &a, 1, &A_log, &dt, 1, 1);
    check_le("gdn_gates softplus branch: g = -exp(A_log) (a + dt_bias)", fabs(g + exp(0.5) * 25) / fabs(g), 1e-15);
    cpu_f64_gdn_gates_bwd(&db, &da, &dA, &ddt, &dbeta, &dg, &b, &a, 1, &A_log, &dt, 1, 1);
    check_le("gdn_gates softplus branch: da = -dg exp(A_log)", fabs(da + 1.5 * exp(0.5)) / fabs(da), 1e-15);
}

static void test_fp32(void) {
    double b[N], a[N], Al[H], dtb[H], dbeta[N], dg[N], beta[N], g[N], db[N], da[N], dA[H] = {0}, ddt[H] = {0};
    float bf[N], af[N], Alf[H], dtbf[H], dbetaf[N], dgf[N], betaf[N], gf[N], dbf[N], daf[N], dAf[H] = {0},
        ddtf[H] = {0}, gf2[N], daf2[N], dAf2[H] = {0}, ddtf2[H] = {0}, dbf2[N];
    fill_uniform_f64(b, N, -3, 3, 11), fill_uniform_f64(a, N, -3, 3, 12);
    fill_uniform_f64(Al, H, 0, 2.7, 13), fill_uniform_f64(dtb, H, -1, 1, 14);
    fill_uniform_f64(dbeta, N, -1, 1, 15), fill_uniform_f64(dg, N, -1, 1, 16);
    copy_f64_to_f32(bf, b, N), copy_f64_to_f32(af, a, N), copy_f64_to_f32(Alf, Al, H);
    copy_f64_to_f32(dtbf, dtb, H), copy_f64_to_f32(dbetaf, dbeta, N), copy_f64_to_f32(dgf, dg, N);
    copy_f32_to_f64(b, bf, N), copy_f32_to_f64(a, af, N), copy_f32_to_f64(Al, Alf, H);
    copy_f32_to_f64(dtb, dtbf, H), copy_f32_to_f64(dbeta, dbetaf, N), copy_f32_to_f64(dg, dgf, N);
    cpu_f64_gdn_gates_fwd(beta, g, b, a, H, Al, dtb, ROWS, H);
    cpu_f64_gdn_gates_bwd(db, da, dA, ddt, dbeta, dg, b, a, H, Al, dtb, ROWS, H);
    cpu_f32_gdn_gates_fwd(betaf, gf, bf, af, H, Alf, dtbf, ROWS, H);
    cpu_f32_gdn_gates_bwd(dbf, daf, dAf, ddtf, dbetaf, dgf, bf, af, H, Alf, dtbf, ROWS, H);
    double t[N];
    copy_f32_to_f64(t, betaf, N);
    check_le("gdn_gates fp32 vs double (same rounded inputs): beta", rel_err_f64(t, beta, N), 1e-6);
    copy_f32_to_f64(t, gf, N);
    check_le("gdn_gates fp32 vs double (same rounded inputs): g", rel_err_f64(t, g, N), 1e-6);
    copy_f32_to_f64(t, dbf, N);
    check_le("gdn_gates fp32 vs double (same rounded inputs): db_logits", rel_err_f64(t, db, N), 1e-6);
    copy_f32_to_f64(t, daf, N);
    check_le("gdn_gates fp32 vs double (same rounded inputs): da_logits", rel_err_f64(t, da, N), 1e-6);
    copy_f32_to_f64(t, dAf, H);
    check_le("gdn_gates fp32 vs double (same rounded inputs): dA_log", rel_err_f64(t, dA, H), 1e-6);
    copy_f32_to_f64(t, ddtf, H);
    check_le("gdn_gates fp32 vs double (same rounded inputs): ddt_bias", rel_err_f64(t, ddt, H), 1e-6);
    cpu_f32_gdn_gates_fwd(betaf, gf2, bf, af, H, Alf, dtbf, ROWS, H);
    cpu_f32_gdn_gates_bwd(dbf2, daf2, dAf2, ddtf2, dbetaf, dgf, bf, af, H, Alf, dtbf, ROWS, H);
    check_bitwise_equal("gdn_gates fp32 forward is deterministic", gf, gf2, sizeof gf);
    check_bitwise_equal("gdn_gates fp32 backward da is deterministic", daf, daf2, sizeof daf);
    check_bitwise_equal("gdn_gates fp32 backward dA_log is deterministic", dAf, dAf2, sizeof dAf);
    check_bitwise_equal("gdn_gates fp32 backward ddt_bias is deterministic", ddtf, ddtf2, sizeof ddtf);
}

/* The model's layout: a row [a's H | b's H] (ld 2H): the packed layout's values, bit for bit,
 * the gradients written into the same slots. */
static void test_strided(void) {
    double b[N], a[N], Al[H], dtb[H], dbeta[N], dg[N], beta[N], g[N], db[N], da[N], dA[H] = {0}, ddt[H] = {0};
    double ab[2 * N], beta2[N], g2[N], dab[2 * N], dA2[H] = {0}, ddt2[H] = {0};
    fill_uniform_f64(b, N, -3, 3, 21), fill_uniform_f64(a, N, -3, 3, 22);
    fill_uniform_f64(Al, H, 0, 2.7, 23), fill_uniform_f64(dtb, H, -1, 1, 24);
    fill_uniform_f64(dbeta, N, -1, 1, 25), fill_uniform_f64(dg, N, -1, 1, 26);
    for (int r = 0; r < ROWS; r++)
        for (int h = 0; h < H; h++) ab[r * 2 * H + h] = a[r * H + h], ab[r * 2 * H + H + h] = b[r * H + h];
    cpu_f64_gdn_gates_fwd(beta, g, b, a, H, Al, dtb, ROWS, H);
    cpu_f64_gdn_gates_bwd(db, da, dA, ddt, dbeta, dg, b, a, H, Al, dtb, ROWS, H);
    cpu_f64_gdn_gates_fwd(beta2, g2, ab + H, ab, 2 * H, Al, dtb, ROWS, H);
    cpu_f64_gdn_gates_bwd(dab + H, dab, dA2, ddt2, dbeta, dg, ab + H, ab, 2 * H, Al, dtb, ROWS, H);
    int same = !memcmp(beta, beta2, sizeof beta) && !memcmp(g, g2, sizeof g) && !memcmp(dA, dA2, sizeof dA) &&
               !memcmp(ddt, ddt2, sizeof ddt);
    for (int r = 0; r < ROWS; r++)
        for (int h = 0; h < H; h++)
            same &= dab[r * 2 * H + h] == da[r * H + h] && dab[r * 2 * H + H + h] == db[r * H + h];
    check_true("gdn_gates with the logits in [a | b] rows (ld 2H): the packed layout's bits", same);
}

int main(void) {
    test_strided();
    test_backward();
    test_softplus_branch();
    test_fp32();
    return test_finish();
}
