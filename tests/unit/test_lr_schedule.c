/* The learning-rate multiplier f(s) of MODEL.md §8 at hand-computed points. */
#include "harness.h"
#include "worker/lr_schedule.h"

int main(void) {
    /* W = 4 warm-up steps, N = 14 total, floor 0.1. */
    check_le("f(0) = 1/4", fabs(lr_multiplier(0, 4, 14, 0.1) - 0.25), 1e-15);
    check_le("f(3) = 4/4", fabs(lr_multiplier(3, 4, 14, 0.1) - 1.0), 1e-15);
    check_le("f(4) = 1 (the stable step)", fabs(lr_multiplier(4, 4, 14, 0.1) - 1.0), 1e-15);
    /* s = 9: progress 5/10, cos(pi/2) = 0: 0.1 + 0.9 * 0.5 = 0.55 */
    check_le("f(9) = 0.55 (half way)", fabs(lr_multiplier(9, 4, 14, 0.1) - 0.55), 1e-15);
    check_le("f(14) = 0.1 (the floor)", fabs(lr_multiplier(14, 4, 14, 0.1) - 0.1), 1e-15);
    check_le("f(20) stays at the floor", fabs(lr_multiplier(20, 4, 14, 0.1) - 0.1), 1e-15);
    check_le("no warm-up: f(0) = 1", fabs(lr_multiplier(0, 0, 10, 0.1) - 1.0), 1e-15);
    return test_finish();
}
