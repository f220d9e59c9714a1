/* The dynamic λ_h controller of LTE (MODEL.md §5.7, lte_utils.update_lte_lambda): an EMA of
 * the kept tokens per (LTE layer, head) and a multiplicative update of λ every u steps that
 * pushes the EMA into the band (tol_lo·R, tol_hi·R). */
#ifndef HYLA_LTE_CONTROLLER_H
#define HYLA_LTE_CONTROLLER_H

struct lte_controller {
    int update_steps;            /* u (l1_lambda_update_steps) */
    int initial_steps;           /* λ stays 0 up to this step (l1_lambda_initial_steps) */
    int warmup_steps;            /* router disabled, num_kept held at seq_len (l1_warmup_steps) */
    int seq_len;
    double budget;               /* R (buffer_size) */
    double lambda_init, lambda_min, lambda_max, alpha, alpha_neg, tol_lo, tol_hi;
};

/* What one call did, for events and tests. */
enum lte_controller_action { LTE_LAMBDA_KEPT = 0, LTE_LAMBDA_FIRST_UPDATE = 1, LTE_LAMBDA_UPDATED = 2 };

/* Called once per optimizer step k (1-based) after the backward passes.
 * kept[i]: tokens with score > 0 this step (mean over micro-batches); num_kept, lambda:
 * state [n]. average_across_ranks (may be NULL): averages num_kept over the data-parallel
 * group in place; it is called only on update steps, as the reference does. */
enum lte_controller_action lte_controller_step(const struct lte_controller *c, int k, const double *kept,
                                               float *num_kept, float *lambda, int n,
                                               void (*average_across_ranks)(float *values, int n, void *ctx),
                                               void *ctx);

#endif
