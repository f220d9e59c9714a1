/* Row-wise L2 norm: forward against the formula, backward against finite differences in
 * double, fp32 against double, determinism. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { ROWS = 9, DIM = 16 };
#define EPS 1e-6

struct ctx {
    double x[ROWS * DIM], y[ROWS * DIM], rstd[ROWS], proj[ROWS * DIM];
};

static double loss(void *p) {
    struct ctx *c = p;
    cpu_f64_l2norm_fwd(c->y, c->rstd, c->x, ROWS, DIM, EPS);
    return dot_f64(c->proj, c->y, ROWS * DIM);
}

int main(void) {
    struct ctx c;
    fill_uniform_f64(c.x, ROWS * DIM, -1, 1, 1);
    /* A tiny row, where eps matters, and a large one. */
    for (int i = 0; i < DIM; i++) c.x[i] *= 1e-3, c.x[DIM + i] *= 30;
    fill_uniform_f64(c.proj, ROWS * DIM, -1, 1, 2);
    loss(&c);

    double ref[ROWS * DIM], rref[ROWS];
    for (int r = 0; r < ROWS; r++) {
        double ss = 0;
        for (int i = 0; i < DIM; i++) ss += c.x[r * DIM + i] * c.x[r * DIM + i];
        rref[r] = 1 / sqrt(ss + EPS);
        for (int i = 0; i < DIM; i++) ref[r * DIM + i] = c.x[r * DIM + i] * rref[r];
    }
    check_le("l2norm forward y vs formula", rel_err_f64(c.y, ref, ROWS * DIM), 1e-15);
    check_le("l2norm forward rstd vs formula", rel_err_f64(c.rstd, rref, ROWS), 1e-15);

    double dx[ROWS * DIM];
    cpu_f64_l2norm_bwd(dx, c.proj, c.y, c.rstd, ROWS, DIM);
    fd_check("l2norm dx", c.x, ROWS * DIM, dx, loss, &c, 1e-7);

    enum { N = ROWS * DIM };
    float xf[N], yf[N], rf[ROWS], dyf[N], dxf[N], yf2[N], rf2[ROWS], dxf2[N];
    double xd[N], y[N], r[ROWS], dxd[N], t[N];
    copy_f64_to_f32(xf, c.x, N), copy_f64_to_f32(dyf, c.proj, N);
    copy_f32_to_f64(xd, xf, N);
    double dyd[N];
    copy_f32_to_f64(dyd, dyf, N);
    cpu_f64_l2norm_fwd(y, r, xd, ROWS, DIM, EPS);
    cpu_f64_l2norm_bwd(dxd, dyd, y, r, ROWS, DIM);
    cpu_f32_l2norm_fwd(yf, rf, xf, ROWS, DIM, (float)EPS);
    cpu_f32_l2norm_bwd(dxf, dyf, yf, rf, ROWS, DIM);
    copy_f32_to_f64(t, yf, N);
    check_le("l2norm fp32 vs double (same rounded inputs): y", rel_err_f64(t, y, N), 1e-6);
    copy_f32_to_f64(t, dxf, N);
    check_le("l2norm fp32 vs double (same rounded inputs): dx", rel_err_f64(t, dxd, N), 1e-6);
    cpu_f32_l2norm_fwd(yf2, rf2, xf, ROWS, DIM, (float)EPS);
    cpu_f32_l2norm_bwd(dxf2, dyf, yf2, rf2, ROWS, DIM);
    check_bitwise_equal("l2norm fp32 forward is deterministic", yf, yf2, sizeof yf);
    check_bitwise_equal("l2norm fp32 backward is deterministic", dxf, dxf2, sizeof dxf);
    return test_finish();
}
