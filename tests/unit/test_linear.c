/* Linear layer y = x W^T + b: backward vs finite differences, fp32 vs double, accumulation;
 * projections of one input (projections_fwd / _bwd): the gradients vs finite differences. */
#include <stdlib.h>

#include "harness.h"

enum { N = 7, IN = 11, OUT = 5 };

struct ctx {
    double x[N * IN], w[OUT * IN], b[OUT], y[N * OUT], proj[N * OUT];
};

static double loss(void *p) {
    struct ctx *c = p;
    cpu_f64_linear_fwd(c->y, c->x, c->w, c->b, N, IN, OUT);
    return dot_f64(c->proj, c->y, N * OUT);
}

/* Three projections of one input (widths 5, 3, 4): loss = sum_i <proj_i, y_i>. */
enum { P = 3, OUT_SUM = 12 };
static const int proj_outs[P] = {5, 3, 4};
struct pctx {
    double x[N * IN], w[OUT_SUM * IN], y[N * OUT_SUM], proj[N * OUT_SUM];
};
static void proj_pointers(struct pctx *c, double **ys, const double **ws, const double **dys) {
    for (int i = 0, at = 0; i < P; at += proj_outs[i], i++) {
        ys[i] = c->y + (size_t)N * at, ws[i] = c->w + (size_t)IN * at;
        if (dys) dys[i] = c->proj + (size_t)N * at;
    }
}
static double proj_loss(void *p) {
    struct pctx *c = p;
    double *ys[P];
    const double *ws[P];
    proj_pointers(c, ys, ws, NULL);
    cpu_f64_projections_fwd(P, ys, c->x, ws, proj_outs, N, IN);
    return dot_f64(c->proj, c->y, N * OUT_SUM);
}
static void test_projections(void) {
    struct pctx c;
    fill_uniform_f64(c.x, N * IN, -1, 1, 11);
    fill_uniform_f64(c.w, OUT_SUM * IN, -1, 1, 12);
    fill_uniform_f64(c.proj, N * OUT_SUM, -1, 1, 13);
    double *ys[P], dx[N * IN], dx_acc[N * IN], dw[OUT_SUM * IN] = {0}, *dws[P];
    const double *ws[P], *dys[P];
    proj_pointers(&c, ys, ws, dys);
    for (int i = 0, at = 0; i < P; at += proj_outs[i], i++) dws[i] = dw + (size_t)IN * at;
    cpu_f64_projections_bwd(P, dx, 0, dws, dys, c.x, ws, proj_outs, N, IN);
    fd_check("projections dx", c.x, N * IN, dx, proj_loss, &c, 1e-5);
    fd_check("projections dweights", c.w, OUT_SUM * IN, dw, proj_loss, &c, 1e-5);
    /* accumulate: dx added onto what is there, dweights added again */
    for (int i = 0; i < N * IN; i++) dx_acc[i] = dx[i];
    cpu_f64_projections_bwd(P, dx_acc, 1, dws, dys, c.x, ws, proj_outs, N, IN);
    for (int i = 0; i < N * IN; i++) dx[i] *= 2;
    check_le("projections_bwd with accumulate adds dx", rel_err_f64(dx_acc, dx, N * IN), 1e-15);
}

int main(void) {
    test_projections();
    struct ctx c;
    fill_uniform_f64(c.x, N * IN, -1, 1, 1);
    fill_uniform_f64(c.w, OUT * IN, -1, 1, 2);
    fill_uniform_f64(c.b, OUT, -1, 1, 3);
    fill_uniform_f64(c.proj, N * OUT, -1, 1, 4);

    double dx[N * IN], dw[OUT * IN] = {0}, db[OUT] = {0};
    cpu_f64_linear_bwd(dx, dw, db, c.proj, c.x, c.w, N, IN, OUT);
    fd_check("linear dx", c.x, N * IN, dx, loss, &c, 1e-5);
    fd_check("linear dweight", c.w, OUT * IN, dw, loss, &c, 1e-5);
    fd_check("linear dbias", c.b, OUT, db, loss, &c, 1e-5);

    /* linear_bwd_accumulate adds dx on top of what is there. */
    double dx2[N * IN], dw2[OUT * IN] = {0};
    for (int i = 0; i < N * IN; i++) dx2[i] = dx[i];
    cpu_f64_linear_bwd_accumulate(dx2, dw2, NULL, c.proj, c.x, c.w, N, IN, OUT);
    for (int i = 0; i < N * IN; i++) dx[i] *= 2;
    check_le("linear_bwd_accumulate adds dx", rel_err_f64(dx2, dx, N * IN), 1e-15);

    /* fp32 against double on the same rounded inputs. */
    float xf[N * IN], wf[OUT * IN], bf[OUT], yf[N * OUT];
    copy_f64_to_f32(xf, c.x, N * IN), copy_f64_to_f32(wf, c.w, OUT * IN), copy_f64_to_f32(bf, c.b, OUT);
    copy_f32_to_f64(c.x, xf, N * IN), copy_f32_to_f64(c.w, wf, OUT * IN), copy_f32_to_f64(c.b, bf, OUT);
    cpu_f32_linear_fwd(yf, xf, wf, bf, N, IN, OUT);
    loss(&c);
    double yd[N * OUT];
    copy_f32_to_f64(yd, yf, N * OUT);
    check_le("linear fp32 forward vs double", rel_err_f64(yd, c.y, N * OUT), 1e-6);
    return test_finish();
}
