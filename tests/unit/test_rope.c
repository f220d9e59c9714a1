/* RoPE: forward against the formula, backward against finite differences and as the
 * inverse rotation, in-place use, fp32 against double, determinism. */
#include <math.h>
#include <stdlib.h>

#include "harness.h"

enum { B = 2, L = 37, H = 3, D = 16, N = B * L * H * D };
static const double THETA = 10000.0;
static const int POS0 = 5;

/* The rotation written out from MODEL.md §4.1 in double. */
static void rope_naive(double *y, const double *x, int pos0) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < D / 2; i++) {
                    size_t at = (((size_t)b * L + t) * H + h) * D;
                    double ang = (pos0 + t) * (1.0 / pow(THETA, 2.0 * i / D));
                    double a = x[at + i], c = x[at + i + D / 2];
                    y[at + i] = a * cos(ang) - c * sin(ang);
                    y[at + i + D / 2] = c * cos(ang) + a * sin(ang);
                }
}

struct ctx {
    double *x, *proj, *y;
};

static double loss(void *p) {
    struct ctx *c = p;
    cpu_f64_rope_fwd(c->y, c->x, B, L, H, D, THETA, POS0);
    return dot_f64(c->proj, c->y, N);
}

int main(void) {
    double *x = alloc_f64(N), *y = alloc_f64(N), *ref = alloc_f64(N), *proj = alloc_f64(N), *dx = alloc_f64(N);
    fill_uniform_f64(x, N, -1, 1, 11);
    fill_uniform_f64(proj, N, -1, 1, 12);

    cpu_f64_rope_fwd(y, x, B, L, H, D, THETA, POS0);
    rope_naive(ref, x, POS0);
    check_le("rope forward vs formula (double)", rel_err_f64(y, ref, N), 1e-14);

    struct ctx c = {x, proj, alloc_f64(N)};
    cpu_f64_rope_bwd(dx, proj, B, L, H, D, THETA, POS0);
    fd_check("rope dx", x, N, dx, loss, &c, 1e-5);

    /* The backward is the inverse rotation: bwd(fwd(x)) = x. */
    double *back = alloc_f64(N);
    cpu_f64_rope_bwd(back, y, B, L, H, D, THETA, POS0);
    check_le("rope bwd(fwd(x)) = x", rel_err_f64(back, x, N), 1e-14);

    /* In place (y aliases x, dx aliases dy) gives the same values. */
    double *inplace = alloc_f64(N);
    for (size_t i = 0; i < N; i++) inplace[i] = x[i];
    cpu_f64_rope_fwd(inplace, inplace, B, L, H, D, THETA, POS0);
    check_true("rope forward in place equals out of place", rel_err_f64(inplace, y, N) == 0);
    cpu_f64_rope_bwd(inplace, inplace, B, L, H, D, THETA, POS0);
    check_le("rope backward in place inverts", rel_err_f64(inplace, x, N), 1e-14);

    /* fp32: cos/sin in float as in the reference; positions here are small. */
    float *xf = alloc_f32(N), *yf = alloc_f32(N), *yf2 = alloc_f32(N), *dxf = alloc_f32(N);
    copy_f64_to_f32(xf, x, N);
    copy_f32_to_f64(x, xf, N);
    rope_naive(ref, x, POS0);
    cpu_f32_rope_fwd(yf, xf, B, L, H, D, (float)THETA, POS0);
    double *yd = alloc_f64(N);
    copy_f32_to_f64(yd, yf, N);
    check_le("rope fp32 forward vs double formula", rel_err_f64(yd, ref, N), 1e-5);
    cpu_f32_rope_fwd(yf2, xf, B, L, H, D, (float)THETA, POS0);
    check_bitwise_equal("rope fp32 forward is deterministic", yf, yf2, N * sizeof(float));
    cpu_f32_rope_bwd(dxf, yf, B, L, H, D, (float)THETA, POS0);
    copy_f32_to_f64(yd, dxf, N);
    check_le("rope fp32 bwd(fwd(x)) = x", rel_err_f64(yd, x, N), 1e-6);

    free(x), free(y), free(ref), free(proj), free(dx), free(c.y), free(back), free(inplace);
    free(xf), free(yf), free(yf2), free(dxf), free(yd);
    return test_finish();
}
