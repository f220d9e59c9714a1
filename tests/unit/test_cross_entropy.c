/* Cross-entropy: value against a direct formula, ln(V) for uniform logits, ignore_index,
 * backward vs finite differences, in-place backward. */
#include <math.h>
#include <stdlib.h>

#include "harness.h"

enum { N = 6, V = 9, IGNORE = -100 };
static const int32_t targets[N] = {3, IGNORE, 0, 8, 8, IGNORE};

struct ctx {
    double logits[N * V], losses[N];
};

static double loss(void *p) {
    struct ctx *c = p;
    int valid;
    return cpu_f64_cross_entropy_fwd(c->losses, c->logits, targets, N, V, IGNORE, &valid);
}

int main(void) {
    struct ctx c;
    fill_uniform_f64(c.logits, N * V, -3, 3, 1);
    int valid;
    double mean = cpu_f64_cross_entropy_fwd(c.losses, c.logits, targets, N, V, IGNORE, &valid);
    check_true("cross_entropy counts 4 valid positions", valid == 4);
    double direct = 0;
    for (int i = 0; i < N; i++) {
        if (targets[i] == IGNORE) continue;
        double s = 0;
        for (int j = 0; j < V; j++) s += exp(c.logits[i * V + j]);
        direct += log(s) - c.logits[i * V + targets[i]];
    }
    check_le("cross_entropy mean vs direct formula", fabs(mean - direct / 4), 1e-14);
    check_le("cross_entropy ignored positions have zero loss", fabs(c.losses[1]) + fabs(c.losses[5]), 0);

    double dlogits[N * V];
    cpu_f64_cross_entropy_bwd(dlogits, c.logits, targets, N, V, IGNORE, valid, 1.0);
    fd_check("cross_entropy dlogits", c.logits, N * V, dlogits, loss, &c, 1e-5);

    /* In place (dlogits aliasing logits) gives the same gradient. */
    double inplace[N * V];
    for (int i = 0; i < N * V; i++) inplace[i] = c.logits[i];
    cpu_f64_cross_entropy_bwd(inplace, inplace, targets, N, V, IGNORE, valid, 1.0);
    check_le("cross_entropy in-place backward", rel_err_f64(inplace, dlogits, N * V), 0);

    /* Uniform logits: loss is ln(V) exactly. */
    float flat[N * V] = {0}, fl[N];
    float m = cpu_f32_cross_entropy_fwd(fl, flat, targets, N, V, IGNORE, &valid);
    check_le("cross_entropy of uniform logits is ln(V)", fabs(m - log((double)V)), 1e-6);
    return test_finish();
}
