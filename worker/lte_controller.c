#include "lte_controller.h"

enum lte_controller_action lte_controller_step(const struct lte_controller *c, int k, const double *kept,
                                               float *num_kept, float *lambda, int n,
                                               void (*average_across_ranks)(float *values, int n, void *ctx),
                                               void *ctx) {
    const double a = 2.0 / (1.0 + (double)(c->update_steps / 2)); /* 2/17 for u = 32 */
    const float a32 = (float)a;
    for (int i = 0; i < n; i++)
        num_kept[i] = k <= c->warmup_steps ? (float)c->seq_len
                                           : (1.0f - a32) * num_kept[i] + a32 * (float)kept[i];
    if (k <= c->initial_steps || k % c->update_steps != 0) return LTE_LAMBDA_KEPT;

    if (average_across_ranks) average_across_ranks(num_kept, n, ctx);
    const int first = k / c->update_steps == c->initial_steps / c->update_steps + 1;
    /* The reference keeps λ and num_kept in fp32 tensors and compares them with Python
     * scalars in fp32, so every constant is rounded to float first. */
    const float lo = (float)(c->tol_lo * c->budget), hi = (float)(c->tol_hi * c->budget);
    const float up = (float)c->alpha, down = (float)(1.0 / c->alpha_neg);
    const float lmin = (float)c->lambda_min, lmax = (float)c->lambda_max, linit = (float)c->lambda_init;
    for (int i = 0; i < n; i++) {
        const int is_large = num_kept[i] > lo;
        const int is_small = num_kept[i] < hi;
        const int sign = is_large - is_small;
        float l = lambda[i];
        if (first) {
            l = is_large ? linit : 0.0f;
        } else {
            l *= sign > 0 ? up : sign < 0 ? down : 1.0f;
            if (l > lmax) l = lmax;
            if (l < lmin) l = 0.0f;
            if (l == 0.0f && is_large) l = lmin;
        }
        lambda[i] = l;
    }
    return first ? LTE_LAMBDA_FIRST_UPDATE : LTE_LAMBDA_UPDATED;
}
