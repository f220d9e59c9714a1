/* Rotary position embedding, non-interleaved "rotate-half" (MODEL.md §4.1). */
#include "cpu_ops.h"
#include "real.h"

/* Rotates the pairs (i, i + d/2) of every head of one token by the angle p th_i, with
 * sign = +1 (forward) or -1 (backward, the transpose). The frequencies are computed in
 * REAL the way the reference computes them in fp32: 1 / theta^(2i/d), then p * that. */
static void rope_row(REAL *y, const REAL *x, int H, int d, REAL theta, int pos, REAL sign) {
    int half = d / 2;
    for (int i = 0; i < half; i++) {
        REAL inv_freq = (REAL)1 / pow(theta, (REAL)(2 * i) / (REAL)d);
        REAL angle = (REAL)pos * inv_freq;
        REAL c = cos(angle), s = sign * sin(angle);
        for (int h = 0; h < H; h++) {
            size_t lo = (size_t)h * d + i, hi = lo + half;
            REAL a = x[lo], b = x[hi]; /* read both first: y may alias x */
            y[lo] = a * c - b * s;
            y[hi] = b * c + a * s;
        }
    }
}

/* Below this many values the threads' start-up costs more than they save. */
#define PARALLEL_MIN_WORK 16384

static void rope_apply(REAL *y, const REAL *x, int B, int L, int H, int d, REAL theta, int pos0, REAL sign) {
    int rows = B * L, parallel = (size_t)rows * H * d >= PARALLEL_MIN_WORK;
#pragma omp parallel for schedule(static) if (parallel)
    for (int r = 0; r < rows; r++) {
        size_t off = (size_t)r * H * d;
        rope_row(y + off, x + off, H, d, theta, pos0 + r % L, sign);
    }
}

void K(rope_fwd)(REAL *y, const REAL *x, int B, int L, int H, int d, REAL theta, int pos0) {
    rope_apply(y, x, B, L, H, d, theta, pos0, (REAL)1);
}

void K(rope_bwd)(REAL *dx, const REAL *dy, int B, int L, int H, int d, REAL theta, int pos0) {
    rope_apply(dx, dy, B, L, H, d, theta, pos0, (REAL)-1);
}
