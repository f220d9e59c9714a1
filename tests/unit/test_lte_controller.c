/* The λ_h controller (MODEL.md §5.7) against hand-computed sequences, every branch:
 * EMA, first update (λ_init where large), ×α above the band, ×1/α_neg below it, no change
 * inside it, the λ_max clamp, the λ_min floor to 0, the re-start at λ_min, initial steps,
 * warm-up, and the update interval. */
#include "harness.h"
#include "worker/lte_controller.h"

enum { N = 4 };

static struct lte_controller make(void) {
    return (struct lte_controller){.update_steps = 4, .initial_steps = 0, .warmup_steps = 0, .seq_len = 256,
                                   .budget = 100, .lambda_init = 0.01, .lambda_min = 0.001, .lambda_max = 0.05,
                                   .alpha = 2, .alpha_neg = 4, .tol_lo = 0.95, .tol_hi = 1.0};
}

static void expect_lambda(const char *what, const float *lambda, const float *expected) {
    double err = 0;
    for (int i = 0; i < N; i++) err += fabs((double)lambda[i] - expected[i]);
    check_le(what, err, 1e-9);
}

int main(void) {
    struct lte_controller c = make();
    float num_kept[N] = {256, 256, 256, 256}, lambda[N] = {0};
    /* head 0 far above the budget, 1 inside the band (95, 100), 2 far below, 3 exactly R (above). */
    double kept[N] = {200, 97, 10, 100};
    enum lte_controller_action act = LTE_LAMBDA_KEPT;
    for (int k = 1; k <= 3; k++) {
        act = lte_controller_step(&c, k, kept, num_kept, lambda, N, NULL, NULL);
        check_true("no λ update between update steps", act == LTE_LAMBDA_KEPT);
    }
    /* EMA with a = 2/(1 + 4/2) = 2/3: num_kept_k = kept + (256 - kept) / 3^k. */
    check_le("EMA after 3 steps (head 0) = 200 + 56/27", fabs(num_kept[0] - (200 + 56.0 / 27)), 1e-4);
    check_le("EMA after 3 steps (head 2) = 10 + 246/27", fabs(num_kept[2] - (10 + 246.0 / 27)), 1e-4);

    act = lte_controller_step(&c, 4, kept, num_kept, lambda, N, NULL, NULL);
    check_true("step 4 is the first update", act == LTE_LAMBDA_FIRST_UPDATE);
    expect_lambda("first update: λ_init where kept > 0.95 R, else 0", lambda, (float[]){0.01f, 0.01f, 0, 0.01f});

    for (int k = 5; k <= 8; k++) act = lte_controller_step(&c, k, kept, num_kept, lambda, N, NULL, NULL);
    check_true("step 8 is a regular update", act == LTE_LAMBDA_UPDATED);
    expect_lambda("above: ×2; band: ×1; below from 0: 0; at R: ×2", lambda, (float[]){0.02f, 0.01f, 0, 0.02f});
    for (int k = 9; k <= 16; k++) lte_controller_step(&c, k, kept, num_kept, lambda, N, NULL, NULL);
    expect_lambda("two more updates: 0.08 clamped to λ_max 0.05", lambda, (float[]){0.05f, 0.01f, 0, 0.05f});

    /* Head 0 now keeps nothing: its EMA falls below the band within a few steps. */
    kept[0] = 0;
    for (int k = 17; k <= 20; k++) lte_controller_step(&c, k, kept, num_kept, lambda, N, NULL, NULL);
    /* num_kept[0] = 200.0.. / 81 = 2.47 < 95: ×1/4. */
    check_le("head 0 EMA fell below the band", num_kept[0], 95);
    check_le("below the band: λ × 1/α_neg = 0.0125", fabs(lambda[0] - 0.0125f), 1e-9);
    for (int k = 21; k <= 28; k++) lte_controller_step(&c, k, kept, num_kept, lambda, N, NULL, NULL);
    check_le("0.0125 → 0.003125 → 0.00078 < λ_min → 0", fabs(lambda[0]), 0);

    /* Head 2 suddenly keeps too much: λ = 0 × 2 = 0 → below λ_min → 0 → restarts at λ_min. */
    kept[2] = 500;
    for (int k = 29; k <= 32; k++) lte_controller_step(&c, k, kept, num_kept, lambda, N, NULL, NULL);
    check_le("large with λ = 0: restarts at λ_min", fabs(lambda[2] - 0.001f), 1e-12);

    /* initial_steps = 5: no update at 4; the first update is at ⌊k/4⌋ = ⌊5/4⌋ + 1, k = 8. */
    c = make();
    c.initial_steps = 5;
    float nk2[N] = {256, 256, 256, 256}, l2[N] = {0};
    double kept2[N] = {200, 200, 200, 200};
    int first_at = -1;
    for (int k = 1; k <= 12 && first_at < 0; k++)
        if (lte_controller_step(&c, k, kept2, nk2, l2, N, NULL, NULL) == LTE_LAMBDA_FIRST_UPDATE) first_at = k;
    check_true("initial_steps = 5: first update at step 8", first_at == 8);

    /* warm-up: num_kept is held at seq_len. */
    c = make();
    c.warmup_steps = 3;
    float nk3[N] = {256, 256, 256, 256}, l3[N] = {0};
    for (int k = 1; k <= 3; k++) lte_controller_step(&c, k, kept2, nk3, l3, N, NULL, NULL);
    check_le("warm-up holds num_kept at seq_len", fabs(nk3[0] - 256), 0);
    lte_controller_step(&c, 4, kept2, nk3, l3, N, NULL, NULL);
    check_le("after warm-up the EMA moves: 256/3 + 400/3", fabs(nk3[0] - (256.0 / 3 + 400.0 / 3)), 1e-4);

    /* Reference settings (α 1.5, α_neg 2, λ 1e-9 .. 1): λ_min survives a step inside the band. */
    struct lte_controller ref = {.update_steps = 32, .seq_len = 4096, .budget = 512, .lambda_init = 1e-9,
                                 .lambda_min = 1e-9, .lambda_max = 1.0, .alpha = 1.5, .alpha_neg = 2,
                                 .tol_lo = 0.95, .tol_hi = 1.0};
    float nk4[1] = {500}, l4[1] = {(float)1e-9};
    double kept4[1] = {500};
    lte_controller_step(&ref, 64, kept4, nk4, l4, 1, NULL, NULL);
    check_le("fp32 λ_min stays λ_min inside the band (fp32 comparisons)", fabs(l4[0] - (float)1e-9), 0);
    return test_finish();
}
