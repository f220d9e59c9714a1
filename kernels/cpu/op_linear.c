/* Linear layers (y = x W^T + b), SwiGLU and the SwiGLU MLP (MODEL.md §1.2). */
#include <string.h>

#include "cpu_ops.h"
#include "real.h"

void K(linear_fwd)(REAL *y, const REAL *x, const REAL *weight, const REAL *bias, int n, int in, int out) {
    real_gemm(0, 1, n, out, in, (REAL)1, x, in, weight, in, (REAL)0, y, out);
    if (!bias) return;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < out; j++) y[(size_t)i * out + j] += bias[j];
}

static void linear_param_grads(REAL *dweight, REAL *dbias, const REAL *dy, const REAL *x, int n, int in, int out) {
    real_gemm(1, 0, out, in, n, (REAL)1, dy, out, x, in, (REAL)1, dweight, in);
    if (!dbias) return;
#pragma omp parallel for schedule(static)
    for (int j = 0; j < out; j++) {
        REAL acc = 0;
        for (int i = 0; i < n; i++) acc += dy[(size_t)i * out + j];
        dbias[j] += acc;
    }
}

void K(linear_bwd)(REAL *dx, REAL *dweight, REAL *dbias, const REAL *dy, const REAL *x, const REAL *weight, int n,
                   int in, int out) {
    if (dx) real_gemm(0, 0, n, in, out, (REAL)1, dy, out, weight, in, (REAL)0, dx, in);
    linear_param_grads(dweight, dbias, dy, x, n, in, out);
}

void K(linear_bwd_accumulate)(REAL *dx, REAL *dweight, REAL *dbias, const REAL *dy, const REAL *x,
                              const REAL *weight, int n, int in, int out) {
    real_gemm(0, 0, n, in, out, (REAL)1, dy, out, weight, in, (REAL)1, dx, in);
    linear_param_grads(dweight, dbias, dy, x, n, in, out);
}

void K(projections_fwd)(int count, REAL *const *ys, const REAL *x, const REAL *const *weights, const int *outs,
                        int n, int in) {
    for (int i = 0; i < count; i++) K(linear_fwd)(ys[i], x, weights[i], NULL, n, in, outs[i]);
}

void K(projections_bwd)(int count, REAL *dx, int accumulate, REAL *const *dweights, const REAL *const *dys,
                        const REAL *x, const REAL *const *weights, const int *outs, int n, int in) {
    for (int i = 0; i < count; i++) {
        if (i == 0 && !accumulate) K(linear_bwd)(dx, dweights[i], NULL, dys[i], x, weights[i], n, in, outs[i]);
        else K(linear_bwd_accumulate)(dx, dweights[i], NULL, dys[i], x, weights[i], n, in, outs[i]);
    }
}

void K(swiglu_fwd)(REAL *z, const REAL *gate, const REAL *up, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) z[i] = real_silu(gate[i]) * up[i];
}

void K(swiglu_bwd)(REAL *dgate, REAL *dup, const REAL *dz, const REAL *gate, const REAL *up, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) {
        REAL d = dz[i];
        dup[i] = d * real_silu(gate[i]);
        dgate[i] = d * up[i] * real_silu_grad(gate[i]);
    }
}

void K(mlp_fwd)(REAL *y, REAL *acts, const REAL *x, const REAL *residual, const REAL *w_gate, const REAL *w_up,
                const REAL *w_down, int n, int dim, int inter) {
    size_t size = (size_t)n * inter;
    REAL *gate = acts, *up = acts + size, *z = acts + 2 * size;
    K(linear_fwd)(gate, x, w_gate, NULL, n, dim, inter);
    K(linear_fwd)(up, x, w_up, NULL, n, dim, inter);
    K(swiglu_fwd)(z, gate, up, size);
    if (residual && residual != y) memcpy(y, residual, (size_t)n * dim * sizeof(REAL));
    real_gemm(0, 1, n, dim, inter, (REAL)1, z, inter, w_down, inter, (REAL)(residual ? 1 : 0), y, dim);
}

void K(mlp_bwd)(REAL *dx, REAL *dw_gate, REAL *dw_up, REAL *dw_down, const REAL *dy, const REAL *x,
                const REAL *acts, const REAL *w_gate, const REAL *w_up, const REAL *w_down, REAL *scratch, int n,
                int dim, int inter) {
    size_t size = (size_t)n * inter;
    const REAL *gate = acts, *up = acts + size, *z = acts + 2 * size;
    REAL *dz = scratch, *dup = scratch + size;
    K(linear_bwd)(dz, dw_down, NULL, dy, z, w_down, n, inter, dim);
    K(swiglu_bwd)(dz, dup, dz, gate, up, size); /* dgate overwrites dz element by element */
    K(linear_bwd)(dx, dw_gate, NULL, dz, x, w_gate, n, dim, inter);
    K(linear_bwd_accumulate)(dx, dw_up, NULL, dup, x, w_up, n, dim, inter);
}
