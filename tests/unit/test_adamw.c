/* AdamW: a hand-computed first step, and several steps against an independent reference. */
#include <math.h>
#include <stdlib.h>

#include "harness.h"

enum { COUNT = 37, STEPS = 5 };

int main(void) {
    /* Step 1 by hand: m̂ = g, v̂ = g², so p = p(1 - lr wd) - lr g/(|g| + eps).
     * p = 1, g = 0.5, lr = 0.1, wd = 0.1: 0.99 - 0.1 = 0.89. */
    double p = 1, g = 0.5, m = 0, v = 0;
    const double one = 1.0;
    cpu_f64_adamw_step(&p, &g, &m, &v, 1, 0.1, 0.9, 0.95, 1e-15, 0.1, &one, 1);
    check_le("adamw first step equals hand value 0.89", fabs(p - 0.89), 1e-14);

    double param[COUNT], ref[COUNT], grads[STEPS][COUNT], mm[COUNT] = {0}, vv[COUNT] = {0};
    double rm[COUNT] = {0}, rv[COUNT] = {0};
    fill_uniform_f64(param, COUNT, -1, 1, 1);
    for (int i = 0; i < COUNT; i++) ref[i] = param[i];
    for (int s = 0; s < STEPS; s++) fill_uniform_f64(grads[s], COUNT, -2, 2, 10 + s);
    const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, scale = 0.5;
    for (int s = 1; s <= STEPS; s++) {
        cpu_f64_adamw_step(param, grads[s - 1], mm, vv, COUNT, lr, b1, b2, eps, wd, &scale, s);
        for (int i = 0; i < COUNT; i++) { /* textbook AdamW, written independently */
            double gi = grads[s - 1][i] * scale;
            ref[i] -= lr * wd * ref[i];
            rm[i] = b1 * rm[i] + (1 - b1) * gi;
            rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
            double mhat = rm[i] / (1 - pow(b1, s)), vhat = rv[i] / (1 - pow(b2, s));
            ref[i] -= lr * mhat / (sqrt(vhat) + eps);
        }
    }
    check_le("adamw 5 steps vs textbook reference", rel_err_f64(param, ref, COUNT), 1e-12);

    /* sum_squares is deterministic and exact enough. */
    float *x = alloc_f32(100003);
    fill_uniform_f32(x, 100003, -1, 1, 3);
    double direct = 0;
    for (int i = 0; i < 100003; i++) direct += (double)x[i] * x[i];
    double a = 0, b = 0, onto = 2.5;
    cpu_f32_sum_squares_add(&a, x, 100003), cpu_f32_sum_squares_add(&b, x, 100003);
    cpu_f32_sum_squares_add(&onto, x, 100003);
    check_le("sum_squares_add vs direct sum", fabs(a - direct) / direct, 1e-12);
    check_true("sum_squares_add is deterministic", a == b);
    check_le("sum_squares_add adds onto the accumulator", fabs(onto - 2.5 - direct) / direct, 1e-12);
    free(x);

    /* the clipping factor (torch's clip_grad_norm_) and the skip of a non-finite norm */
    float scale_f = 0;
    const double big = 16.0, small = 0.01, inf = INFINITY, nan_sq = NAN;
    cpu_f32_grad_clip_scale(&scale_f, &big, 1.0f);
    check_le("grad_clip_scale: norm 4, max 1 -> 1 / (4 + 1e-6)", fabs(scale_f - 1.0 / (4.0 + 1e-6)), 1e-7);
    cpu_f32_grad_clip_scale(&scale_f, &small, 1.0f);
    check_true("grad_clip_scale: norm 0.1 < max 1 -> 1", scale_f == 1.0f);
    cpu_f32_grad_clip_scale(&scale_f, &big, 0.0f);
    check_true("grad_clip_scale: max_norm 0 -> no clipping", scale_f == 1.0f);
    cpu_f32_grad_clip_scale(&scale_f, &inf, 1.0f);
    check_true("grad_clip_scale: infinite norm -> NaN (skip)", isnan(scale_f));
    cpu_f32_grad_clip_scale(&scale_f, &nan_sq, 1.0f);
    check_true("grad_clip_scale: NaN norm -> NaN (skip)", isnan(scale_f));
    float pf = 1.0f, gf = 0.5f, mf = 0.25f, vf = 0.125f;
    cpu_f32_adamw_step(&pf, &gf, &mf, &vf, 1, 0.1f, 0.9f, 0.95f, 1e-8f, 0.1f, &scale_f, 3);
    check_true("adamw_step with a NaN scale leaves param, m and v alone", pf == 1.0f && mf == 0.25f && vf == 0.125f);

    /* accumulate_f64: acc += weight * x in double */
    double acc[3] = {1, 2, 3};
    const float xs[3] = {0.5f, -1.0f, 2.0f};
    cpu_f32_accumulate_f64(acc, xs, 3, 4.0);
    check_true("accumulate_f64 adds weight * x", acc[0] == 3 && acc[1] == -2 && acc[2] == 11);
    return test_finish();
}
