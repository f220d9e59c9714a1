#include "rng.h"

#include <math.h>

double hyla_rng_normal(uint64_t key, uint64_t index) {
    /* u1 in (0,1] so that log(u1) is finite. */
    double u1 = 1.0 - hyla_rng_uniform_f64(key, 2 * index);
    double u2 = hyla_rng_uniform_f64(key, 2 * index + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
