/* SwiGLU (elementwise) and the SwiGLU MLP: backward vs finite differences. */
#include <math.h>
#include <stdlib.h>

#include "harness.h"

enum { N = 5, DIM = 6, INTER = 10, COUNT = 23 };

struct mlp_ctx {
    double x[N * DIM], wg[INTER * DIM], wu[INTER * DIM], wd[DIM * INTER];
    double y[N * DIM], acts[3 * N * INTER], proj[N * DIM];
};

static double mlp_loss(void *p) {
    struct mlp_ctx *c = p;
    cpu_f64_mlp_fwd(c->y, c->acts, c->x, NULL, c->wg, c->wu, c->wd, N, DIM, INTER);
    return dot_f64(c->proj, c->y, N * DIM);
}

struct swiglu_ctx {
    double gate[COUNT], up[COUNT], z[COUNT], proj[COUNT];
};

static double swiglu_loss(void *p) {
    struct swiglu_ctx *c = p;
    cpu_f64_swiglu_fwd(c->z, c->gate, c->up, COUNT);
    return dot_f64(c->proj, c->z, COUNT);
}

int main(void) {
    struct swiglu_ctx s;
    fill_uniform_f64(s.gate, COUNT, -4, 4, 1);
    fill_uniform_f64(s.up, COUNT, -2, 2, 2);
    fill_uniform_f64(s.proj, COUNT, -1, 1, 3);
    double dgate[COUNT], dup[COUNT];
    cpu_f64_swiglu_bwd(dgate, dup, s.proj, s.gate, s.up, COUNT);
    fd_check("swiglu dgate", s.gate, COUNT, dgate, swiglu_loss, &s, 1e-5);
    fd_check("swiglu dup", s.up, COUNT, dup, swiglu_loss, &s, 1e-5);

    struct mlp_ctx *c = calloc(1, sizeof *c);
    fill_uniform_f64(c->x, N * DIM, -1, 1, 4);
    fill_uniform_f64(c->wg, INTER * DIM, -0.5, 0.5, 5);
    fill_uniform_f64(c->wu, INTER * DIM, -0.5, 0.5, 6);
    fill_uniform_f64(c->wd, DIM * INTER, -0.5, 0.5, 7);
    fill_uniform_f64(c->proj, N * DIM, -1, 1, 8);
    mlp_loss(c);
    double *dx = alloc_f64(N * DIM), *dwg = alloc_f64(INTER * DIM), *dwu = alloc_f64(INTER * DIM);
    double *dwd = alloc_f64(DIM * INTER), *scratch = alloc_f64(2 * N * INTER);
    cpu_f64_mlp_bwd(dx, dwg, dwu, dwd, c->proj, c->x, c->acts, c->wg, c->wu, c->wd, scratch, N, DIM, INTER);
    fd_check("mlp dx", c->x, N * DIM, dx, mlp_loss, c, 1e-5);
    fd_check("mlp dw_gate", c->wg, INTER * DIM, dwg, mlp_loss, c, 1e-5);
    fd_check("mlp dw_up", c->wu, INTER * DIM, dwu, mlp_loss, c, 1e-5);
    fd_check("mlp dw_down", c->wd, DIM * INTER, dwd, mlp_loss, c, 1e-5);
    /* onto a residual: y - residual is the MLP alone, into another buffer and in place */
    double *res = alloc_f64(N * DIM), *y = alloc_f64(N * DIM), *acts = alloc_f64(3 * N * INTER);
    fill_uniform_f64(res, N * DIM, -1, 1, 9);
    mlp_loss(c); /* c->y: the MLP alone at the unperturbed inputs */
    cpu_f64_mlp_fwd(y, acts, c->x, res, c->wg, c->wu, c->wd, N, DIM, INTER);
    double worst = 0;
    for (int i = 0; i < N * DIM; i++) worst = fmax(worst, fabs(y[i] - res[i] - c->y[i]));
    check_le("mlp onto a residual: y - residual vs the MLP alone", worst, 1e-12);
    for (int i = 0; i < N * DIM; i++) y[i] = res[i];
    cpu_f64_mlp_fwd(y, acts, c->x, y, c->wg, c->wu, c->wd, N, DIM, INTER);
    worst = 0;
    for (int i = 0; i < N * DIM; i++) worst = fmax(worst, fabs(y[i] - res[i] - c->y[i]));
    check_le("mlp onto a residual, in place", worst, 1e-12);
    free(res), free(y), free(acts);
    free(c), free(dx), free(dwg), free(dwu), free(dwd), free(scratch);
    return test_finish();
}
