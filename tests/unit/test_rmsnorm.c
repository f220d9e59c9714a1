/* RMSNorm and fused add + RMSNorm: backward against finite differences (double), the
 * fp32 build against the double build, determinism. */
#include <stdlib.h>

#include "harness.h"

enum { N = 6, DIM = 13 };

struct ctx {
    double *x, *res, *w, *proj_y, *proj_sum; /* inputs and the random projections */
    double y[N * DIM], sum[N * DIM], rstd[N];
    int fused;
};

/* loss = <proj_y, y> (+ <proj_sum, sum> for the fused op). */
static double loss(void *p) {
    struct ctx *c = p;
    if (c->fused) {
        cpu_f64_add_rmsnorm_fwd(c->sum, c->y, c->rstd, c->x, c->res, c->w, N, DIM, 1e-6);
        return dot_f64(c->proj_y, c->y, N * DIM) + dot_f64(c->proj_sum, c->sum, N * DIM);
    }
    cpu_f64_rmsnorm_fwd(c->y, c->rstd, c->x, c->w, N, DIM, 1e-6);
    return dot_f64(c->proj_y, c->y, N * DIM);
}

static void test_backward(int fused) {
    struct ctx c = {.fused = fused};
    c.x = alloc_f64(N * DIM), c.res = alloc_f64(N * DIM), c.w = alloc_f64(DIM);
    c.proj_y = alloc_f64(N * DIM), c.proj_sum = alloc_f64(N * DIM);
    fill_uniform_f64(c.x, N * DIM, -1, 1, 1);
    fill_uniform_f64(c.res, N * DIM, -1, 1, 2);
    fill_uniform_f64(c.w, DIM, 0.5, 1.5, 3);
    fill_uniform_f64(c.proj_y, N * DIM, -1, 1, 4);
    fill_uniform_f64(c.proj_sum, N * DIM, -1, 1, 5);

    double *dx = alloc_f64(N * DIM), *dw = alloc_f64(DIM);
    loss(&c);
    if (fused) {
        cpu_f64_add_rmsnorm_bwd(dx, dw, c.proj_y, c.proj_sum, c.sum, c.w, c.rstd, N, DIM);
        fd_check("add_rmsnorm dx", c.x, N * DIM, dx, loss, &c, 1e-5);
        fd_check("add_rmsnorm dresidual", c.res, N * DIM, dx, loss, &c, 1e-5);
        fd_check("add_rmsnorm dweight", c.w, DIM, dw, loss, &c, 1e-5);
    } else {
        cpu_f64_rmsnorm_bwd(dx, dw, c.proj_y, c.x, c.w, c.rstd, N, DIM);
        fd_check("rmsnorm dx", c.x, N * DIM, dx, loss, &c, 1e-5);
        fd_check("rmsnorm dweight", c.w, DIM, dw, loss, &c, 1e-5);
    }
    free(c.x), free(c.res), free(c.w), free(c.proj_y), free(c.proj_sum), free(dx), free(dw);
}

static void test_fp32_matches_double(void) {
    double x[N * DIM], w[DIM], y[N * DIM], r[N];
    float xf[N * DIM], wf[DIM], yf[N * DIM], rf[N], yf2[N * DIM], rf2[N];
    fill_uniform_f64(x, N * DIM, -2, 2, 7);
    fill_uniform_f64(w, DIM, 0.5, 1.5, 8);
    copy_f64_to_f32(xf, x, N * DIM);
    copy_f64_to_f32(wf, w, DIM);
    copy_f32_to_f64(x, xf, N * DIM); /* same rounded inputs for both */
    copy_f32_to_f64(w, wf, DIM);
    cpu_f64_rmsnorm_fwd(y, r, x, w, N, DIM, 1e-6);
    cpu_f32_rmsnorm_fwd(yf, rf, xf, wf, N, DIM, 1e-6f);
    double yd[N * DIM];
    copy_f32_to_f64(yd, yf, N * DIM);
    check_le("rmsnorm fp32 forward vs double", rel_err_f64(yd, y, N * DIM), 1e-6);
    cpu_f32_rmsnorm_fwd(yf2, rf2, xf, wf, N, DIM, 1e-6f);
    check_bitwise_equal("rmsnorm fp32 forward is deterministic", yf, yf2, sizeof yf);
}

int main(void) {
    test_backward(0);
    test_backward(1);
    test_fp32_matches_double();
    return test_finish();
}
