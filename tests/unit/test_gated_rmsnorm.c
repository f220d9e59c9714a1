/* Gated RMSNorm y = x rstd w silu(gate): forward against the formula, backward (dx,
 * dgate, dweight with accumulation) against finite differences in double, fp32 against
 * double, determinism. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { ROWS = 12, DIM = 8, N = ROWS * DIM }; /* rows = B*L*H, weight shared by heads */
#define EPS 1e-6

struct ctx {
    double x[N], gate[N], w[DIM], y[N], rstd[ROWS], proj[N];
};

static double loss(void *p) {
    struct ctx *c = p;
    cpu_f64_gated_rmsnorm_fwd(c->y, c->rstd, c->x, c->gate, c->w, ROWS, DIM, EPS);
    return dot_f64(c->proj, c->y, N);
}

static void test_backward(void) {
    struct ctx c;
    fill_uniform_f64(c.x, N, -1, 1, 1);
    fill_uniform_f64(c.gate, N, -3, 3, 2);
    fill_uniform_f64(c.w, DIM, 0.5, 1.5, 3);
    fill_uniform_f64(c.proj, N, -1, 1, 4);
    loss(&c);

    double ref[N];
    for (int r = 0; r < ROWS; r++) {
        double ss = 0;
        for (int i = 0; i < DIM; i++) ss += c.x[r * DIM + i] * c.x[r * DIM + i];
        double rs = 1 / sqrt(ss / DIM + EPS);
        for (int i = 0; i < DIM; i++) {
            double z = c.gate[r * DIM + i];
            ref[r * DIM + i] = c.x[r * DIM + i] * rs * c.w[i] * z / (1 + exp(-z));
        }
    }
    check_le("gated_rmsnorm forward vs formula", rel_err_f64(c.y, ref, N), 1e-15);

    double dx[N], dgate[N], dw0[DIM], dw[DIM], dwg[DIM];
    fill_uniform_f64(dw0, DIM, -1, 1, 5);
    for (int i = 0; i < DIM; i++) dw[i] = dw0[i];
    cpu_f64_gated_rmsnorm_bwd(dx, dgate, dw, c.proj, c.x, c.gate, c.w, c.rstd, ROWS, DIM);
    for (int i = 0; i < DIM; i++) dwg[i] = dw[i] - dw0[i];
    fd_check("gated_rmsnorm dx", c.x, N, dx, loss, &c, 1e-5);
    fd_check("gated_rmsnorm dgate", c.gate, N, dgate, loss, &c, 1e-5);
    fd_check("gated_rmsnorm dweight (accumulated onto non-zero)", c.w, DIM, dwg, loss, &c, 1e-5);
}

static void test_fp32(void) {
    double x[N], z[N], w[DIM], dy[N], y[N], r[ROWS], dx[N], dz[N], dw[DIM] = {0}, t[N];
    float xf[N], zf[N], wf[DIM], dyf[N], yf[N], rf[ROWS], dxf[N], dzf[N], dwf[DIM] = {0};
    float yf2[N], rf2[ROWS], dxf2[N], dzf2[N], dwf2[DIM] = {0};
    fill_uniform_f64(x, N, -2, 2, 11), fill_uniform_f64(z, N, -3, 3, 12);
    fill_uniform_f64(w, DIM, 0.5, 1.5, 13), fill_uniform_f64(dy, N, -1, 1, 14);
    copy_f64_to_f32(xf, x, N), copy_f64_to_f32(zf, z, N), copy_f64_to_f32(wf, w, DIM), copy_f64_to_f32(dyf, dy, N);
    copy_f32_to_f64(x, xf, N), copy_f32_to_f64(z, zf, N), copy_f32_to_f64(w, wf, DIM), copy_f32_to_f64(dy, dyf, N);
    cpu_f64_gated_rmsnorm_fwd(y, r, x, z, w, ROWS, DIM, EPS);
    cpu_f64_gated_rmsnorm_bwd(dx, dz, dw, dy, x, z, w, r, ROWS, DIM);
    cpu_f32_gated_rmsnorm_fwd(yf, rf, xf, zf, wf, ROWS, DIM, (float)EPS);
    cpu_f32_gated_rmsnorm_bwd(dxf, dzf, dwf, dyf, xf, zf, wf, rf, ROWS, DIM);
    copy_f32_to_f64(t, yf, N);
    check_le("gated_rmsnorm fp32 vs double (same rounded inputs): y", rel_err_f64(t, y, N), 1e-6);
    copy_f32_to_f64(t, dxf, N);
    check_le("gated_rmsnorm fp32 vs double (same rounded inputs): dx", rel_err_f64(t, dx, N), 1e-6);
    copy_f32_to_f64(t, dzf, N);
    check_le("gated_rmsnorm fp32 vs double (same rounded inputs): dgate", rel_err_f64(t, dz, N), 1e-6);
    copy_f32_to_f64(t, dwf, DIM);
    check_le("gated_rmsnorm fp32 vs double (same rounded inputs): dweight", rel_err_f64(t, dw, DIM), 1e-6);
    cpu_f32_gated_rmsnorm_fwd(yf2, rf2, xf, zf, wf, ROWS, DIM, (float)EPS);
    cpu_f32_gated_rmsnorm_bwd(dxf2, dzf2, dwf2, dyf, xf, zf, wf, rf2, ROWS, DIM);
    check_bitwise_equal("gated_rmsnorm fp32 forward is deterministic", yf, yf2, sizeof yf);
    check_bitwise_equal("gated_rmsnorm fp32 backward dx is deterministic", dxf, dxf2, sizeof dxf);
    check_bitwise_equal("gated_rmsnorm fp32 backward dgate is deterministic", dzf, dzf2, sizeof dzf);
    check_bitwise_equal("gated_rmsnorm fp32 backward dweight is deterministic", dwf, dwf2, sizeof dwf);
}

int main(void) {
    test_backward();
    test_fp32();
    return test_finish();
}
