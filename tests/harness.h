/* A small test harness. A test executable checks one op (family); every check prints
 * what it measured against its bound, and test_finish() turns failures into the exit code.
 *
 * Finite differences: fd_check() perturbs every element of one input by +-h in double,
 * calls the caller's loss (a fixed random projection of the op's outputs, computed with
 * the cpu_f64_* forward) and compares the central difference with the analytic gradient. */
#ifndef HYLA_TEST_HARNESS_H
#define HYLA_TEST_HARNESS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu/cpu_ops.h"
#include "common/hyla_error.h"
#include "common/rng.h"

/* Bound for backward passes against finite differences (double precision). */
#define FD_TOLERANCE 1e-6

/* Fail (and print) unless value <= bound; NaN fails. Returns value. */
double check_le(const char *what, double value, double bound);
/* Fail unless cond; prints what either way. */
void check_true(const char *what, int cond);
/* Fail unless a and b are equal bit for bit. */
void check_bitwise_equal(const char *what, const void *a, const void *b, size_t bytes);
/* Print the summary; return 0 when every check passed, 1 otherwise. */
int test_finish(void);

/* Uniform values in [lo, hi) from the counter-based RNG; seed names the stream. */
void fill_uniform_f64(double *x, size_t n, double lo, double hi, uint64_t seed);
void fill_uniform_f32(float *x, size_t n, float lo, float hi, uint64_t seed);
void copy_f64_to_f32(float *dst, const double *src, size_t n);
void copy_f32_to_f64(double *dst, const float *src, size_t n);

/* ||a - b|| / ||b|| (0 when both are zero). */
double rel_err_f64(const double *a, const double *b, size_t n);
double rel_err_f32(const float *a, const float *b, size_t n);
double dot_f64(const double *a, const double *b, size_t n);

/* Remove a folder and everything in it (tests' temporary folders). */
void remove_tree(const char *dir);

/* Allocation helpers for tests: zeroed, die on failure. */
double *alloc_f64(size_t n);
float *alloc_f32(size_t n);

/* Central finite differences of loss(ctx) with respect to every element of x (x is
 * restored afterwards), compared with analytic[0..n): returns the relative error and
 * records a check against FD_TOLERANCE. h = 1e-5 unless the test has a reason. */
typedef double (*fd_loss_fn)(void *ctx);
double fd_check(const char *what, double *x, size_t n, const double *analytic, fd_loss_fn loss, void *ctx,
                double h);

#endif
