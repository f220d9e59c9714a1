/* Checks for tests that run under mpirun. Every rank makes every check, in the same
 * order (a check is collective over MPI_COMM_WORLD); the verdicts are combined with
 * plain MPI, not with the code under test, and rank 0 records and prints them through
 * the harness. A rank whose own value fails also says so on stderr, with its rank. */
#ifndef HYLA_MPI_CHECKS_H
#define HYLA_MPI_CHECKS_H

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

static inline int world_rank(void) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

static inline int world_size(void) {
    int size = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    return size;
}

/* Passes when value <= bound on every rank; rank 0 prints the worst value (NaN: inf). */
static inline double mpi_check_le(const char *what, double value, double bound) {
    if (!(value <= bound)) fprintf(stderr, "rank %d: FAIL %s: %.3e (bound %.1e)\n", world_rank(), what, value, bound);
    double mine = isnan(value) ? INFINITY : value, worst = 0;
    MPI_Allreduce(&mine, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (world_rank() == 0) check_le(what, worst, bound);
    return worst;
}

/* Passes when cond holds on every rank. */
static inline void mpi_check_true(const char *what, int cond) {
    if (!cond) fprintf(stderr, "rank %d: FAIL %s\n", world_rank(), what);
    int mine = cond != 0, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (world_rank() == 0) check_true(what, all);
}

static inline void mpi_check_bitwise_equal(const char *what, const void *a, const void *b, size_t bytes) {
    mpi_check_true(what, bytes == 0 || memcmp(a, b, bytes) == 0);
}

/* Rank 0's summary; the exit code is the same on every rank (any failure fails all). */
static inline int mpi_test_finish(void) {
    int mine = world_rank() == 0 ? test_finish() : 0, any = 0;
    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any;
}

#endif
