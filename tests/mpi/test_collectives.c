/* The MPI collectives backend against values computed locally: every rank regenerates
 * every rank's inputs (counter-based RNG keyed by rank), so each result has a reference.
 * Each operation runs blocking, as start + wait, and in place where the interface allows,
 * on the whole world and on groups of two (a split communicator, as worker groups are).
 * Counts are not multiples of the group size; MEAN is checked against SUM x (1/size) bit
 * for bit, and reductions must give the same bits on every rank and on every repeat. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpi_checks.h"
#include "sharding/collectives.h"

enum input_kind {
    INPUT_RANDOM,  /* uniform in [-1, 1): sums round */
    INPUT_INTEGER, /* small integers: sums are exact in any order */
};

enum mode {
    MODE_BLOCKING,
    MODE_START_WAIT,
    MODE_IN_PLACE,
};
static const char *const mode_names[] = {"blocking", "start/wait", "in place"};

struct group {
    struct hyla_comm *comm;
    MPI_Comm mpi; /* the same group, for checks with plain MPI */
    int rank, size;
    const char *name;
};

/* Rank k's input i, reproducible on any rank. */
static float input_value(enum input_kind kind, int rank, size_t i) {
    if (kind == INPUT_INTEGER) return (float)((int)(((size_t)rank * 7 + i * 13) % 17) - 8);
    uint64_t key = hyla_rng_key(1234, HYLA_RNG_TEST, 0, (uint32_t)rank);
    return -1.0f + 2.0f * hyla_rng_uniform(key, i); /* 24-bit uniform: exact in float */
}

static double input_f64(int rank, size_t i) {
    uint64_t key = hyla_rng_key(5678, HYLA_RNG_TEST, 0, (uint32_t)rank);
    return -1.0 + 2.0 * hyla_rng_uniform_f64(key, i);
}

static void fill_input(float *x, size_t n, enum input_kind kind, int rank, size_t first) {
    for (size_t i = 0; i < n; i++) x[i] = input_value(kind, rank, first + i);
}

static float *garbage_f32(size_t n) {
    float *x = alloc_f32(n);
    for (size_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}

/* Reference reduction over ranks of input(k, first + i), in double. */
static void expected_reduce(double *out, size_t count, int size, enum input_kind kind, size_t first,
                            enum hyla_reduce_op op) {
    for (size_t i = 0; i < count; i++) {
        double acc = op == HYLA_REDUCE_MAX ? -INFINITY : 0.0;
        for (int k = 0; k < size; k++) {
            double v = input_value(kind, k, first + i);
            acc = op == HYLA_REDUCE_MAX ? fmax(acc, v) : acc + v;
        }
        out[i] = op == HYLA_REDUCE_MEAN ? acc / size : acc;
    }
}

static const char *op_name(enum hyla_reduce_op op) {
    return op == HYLA_REDUCE_SUM ? "sum" : op == HYLA_REDUCE_MEAN ? "mean" : "max";
}

/* Compare a float result with its double reference: MAX and exact (integer) sums bit
 * for bit, rounded sums by relative error. */
static void check_reduced(const char *label, const float *got, const double *want, size_t count,
                          enum input_kind kind, enum hyla_reduce_op op) {
    float *want_f32 = alloc_f32(count);
    copy_f64_to_f32(want_f32, want, count);
    int exact = op == HYLA_REDUCE_MAX || (kind == INPUT_INTEGER && op == HYLA_REDUCE_SUM);
    if (exact)
        mpi_check_bitwise_equal(label, got, want_f32, count * sizeof *got);
    else
        mpi_check_le(label, rel_err_f32(got, want_f32, count), 1e-6);
    free(want_f32);
}

/* Reductions must hand every rank the same bits (the grad-norm skip decision depends on it). */
static void check_same_on_all_ranks(const struct group *g, const char *label, const void *data, size_t bytes) {
    unsigned char *root_copy = hyla_malloc(bytes);
    memcpy(root_copy, data, bytes);
    MPI_Bcast(root_copy, (int)bytes, MPI_BYTE, 0, g->mpi);
    mpi_check_bitwise_equal(label, data, root_copy, bytes);
    free(root_copy);
}

/* ---- all_gather ---------------------------------------------------------------------- */

static void run_all_gather(const struct group *g, enum mode mode, const float *send, float *recv, size_t count) {
    if (mode == MODE_BLOCKING) {
        hyla_comm_all_gather(g->comm, send, recv, count);
    } else if (mode == MODE_START_WAIT) {
        struct hyla_comm_request *r = hyla_comm_all_gather_start(g->comm, send, recv, count);
        hyla_comm_wait(r);
    } else {
        float *own_block = recv + (size_t)g->rank * count;
        if (count > 0) memcpy(own_block, send, count * sizeof *send);
        hyla_comm_all_gather(g->comm, own_block, recv, count);
    }
}

static void test_all_gather(const struct group *g) {
    const size_t counts[] = {0, 1, 5, 1003};
    for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
        size_t count = counts[c], total = count * (size_t)g->size;
        float *send = alloc_f32(count), *want = alloc_f32(total);
        fill_input(send, count, INPUT_RANDOM, g->rank, 0);
        for (int k = 0; k < g->size; k++) fill_input(want + (size_t)k * count, count, INPUT_RANDOM, k, 0);
        for (int mode = MODE_BLOCKING; mode <= MODE_IN_PLACE; mode++) {
            float *recv = garbage_f32(total);
            run_all_gather(g, (enum mode)mode, send, recv, count);
            char label[160];
            snprintf(label, sizeof label, "%s: all_gather %zu per rank (%s) == every rank's input", g->name, count,
                     mode_names[mode]);
            mpi_check_bitwise_equal(label, recv, want, total * sizeof *recv);
            free(recv);
        }
        free(send);
        free(want);
    }
}

/* bf16 values are moved as 16-bit patterns: every pattern, NaN payloads included, arrives. */
static uint16_t bf16_pattern(int rank, size_t i) { return (uint16_t)(rank * 40503u + i * 2654435761u); }

static void test_all_gather_bf16(const struct group *g) {
    const size_t counts[] = {0, 3, 1001};
    for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
        size_t count = counts[c], total = count * (size_t)g->size;
        uint16_t *send = hyla_calloc(count, sizeof *send), *want = hyla_calloc(total, sizeof *want);
        for (size_t i = 0; i < count; i++) send[i] = bf16_pattern(g->rank, i);
        for (size_t i = 0; i < total; i++) want[i] = bf16_pattern((int)(i / count), i % count);
        for (int mode = MODE_BLOCKING; mode <= MODE_IN_PLACE; mode++) {
            uint16_t *recv = hyla_calloc(total, sizeof *recv);
            uint16_t *own_block = recv + (size_t)g->rank * count;
            if (mode == MODE_BLOCKING) {
                hyla_comm_all_gather_bf16(g->comm, send, recv, count);
            } else if (mode == MODE_START_WAIT) {
                hyla_comm_wait(hyla_comm_all_gather_bf16_start(g->comm, send, recv, count));
            } else {
                if (count > 0) memcpy(own_block, send, count * sizeof *send);
                hyla_comm_all_gather_bf16(g->comm, own_block, recv, count);
            }
            char label[160];
            snprintf(label, sizeof label, "%s: all_gather_bf16 %zu per rank (%s) == every rank's patterns", g->name,
                     count, mode_names[mode]);
            mpi_check_bitwise_equal(label, recv, want, total * sizeof *recv);
            free(recv);
        }
        free(send);
        free(want);
    }
}

/* ---- reduce_scatter ------------------------------------------------------------------ */

static void run_reduce_scatter(const struct group *g, enum mode mode, const float *send, float *recv, size_t count,
                               enum hyla_reduce_op op) {
    if (mode == MODE_BLOCKING) {
        hyla_comm_reduce_scatter(g->comm, send, recv, count, op);
    } else {
        hyla_comm_wait(hyla_comm_reduce_scatter_start(g->comm, send, recv, count, op));
    }
}

static void test_reduce_scatter(const struct group *g) {
    const size_t counts[] = {1, 7, 333};
    const enum hyla_reduce_op ops[] = {HYLA_REDUCE_SUM, HYLA_REDUCE_MEAN, HYLA_REDUCE_MAX};
    for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
        size_t count = counts[c], total = count * (size_t)g->size;
        for (int kind = INPUT_RANDOM; kind <= INPUT_INTEGER; kind++) {
            float *send = alloc_f32(total);
            fill_input(send, total, (enum input_kind)kind, g->rank, 0);
            for (size_t o = 0; o < sizeof ops / sizeof *ops; o++) {
                double *want = alloc_f64(count);
                expected_reduce(want, count, g->size, (enum input_kind)kind, (size_t)g->rank * count, ops[o]);
                for (int mode = MODE_BLOCKING; mode <= MODE_START_WAIT; mode++) {
                    float *recv = garbage_f32(count);
                    run_reduce_scatter(g, (enum mode)mode, send, recv, count, ops[o]);
                    char label[160];
                    snprintf(label, sizeof label, "%s: reduce_scatter %s, %zu per rank, %s inputs (%s)", g->name,
                             op_name(ops[o]), count, kind == INPUT_INTEGER ? "integer" : "random", mode_names[mode]);
                    check_reduced(label, recv, want, count, (enum input_kind)kind, ops[o]);
                    free(recv);
                }
                free(want);
            }
            free(send);
        }
    }
}

/* MEAN is SUM then x (1/size), bit for bit; a repeat gives the same bits. */
static void test_reduce_scatter_mean_is_scaled_sum(const struct group *g) {
    size_t count = 257, total = count * (size_t)g->size;
    float *send = alloc_f32(total), *sum = alloc_f32(count), *again = alloc_f32(count), *mean = alloc_f32(count);
    fill_input(send, total, INPUT_RANDOM, g->rank, 0);
    hyla_comm_reduce_scatter(g->comm, send, sum, count, HYLA_REDUCE_SUM);
    hyla_comm_reduce_scatter(g->comm, send, again, count, HYLA_REDUCE_SUM);
    hyla_comm_reduce_scatter(g->comm, send, mean, count, HYLA_REDUCE_MEAN);
    char label[160];
    snprintf(label, sizeof label, "%s: reduce_scatter sum repeated gives the same bits", g->name);
    mpi_check_bitwise_equal(label, sum, again, count * sizeof *sum);
    float inv = 1.0f / (float)g->size;
    for (size_t i = 0; i < count; i++) sum[i] *= inv;
    snprintf(label, sizeof label, "%s: reduce_scatter mean == sum x (1/size) bit for bit", g->name);
    mpi_check_bitwise_equal(label, mean, sum, count * sizeof *sum);
    free(send);
    free(sum);
    free(again);
    free(mean);
}

/* ---- all_reduce ---------------------------------------------------------------------- */

static void run_all_reduce_f32(const struct group *g, enum mode mode, const float *send, float *recv, size_t count,
                               enum hyla_reduce_op op) {
    if (mode == MODE_BLOCKING) {
        hyla_comm_all_reduce_f32(g->comm, send, recv, count, op);
    } else if (mode == MODE_START_WAIT) {
        hyla_comm_wait(hyla_comm_all_reduce_f32_start(g->comm, send, recv, count, op));
    } else {
        memcpy(recv, send, count * sizeof *send);
        hyla_comm_all_reduce_f32(g->comm, recv, recv, count, op);
    }
}

static void test_all_reduce_f32(const struct group *g) {
    const size_t counts[] = {1, 7, 1001};
    const enum hyla_reduce_op ops[] = {HYLA_REDUCE_SUM, HYLA_REDUCE_MEAN, HYLA_REDUCE_MAX};
    for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
        size_t count = counts[c];
        for (int kind = INPUT_RANDOM; kind <= INPUT_INTEGER; kind++) {
            float *send = alloc_f32(count);
            fill_input(send, count, (enum input_kind)kind, g->rank, 0);
            for (size_t o = 0; o < sizeof ops / sizeof *ops; o++) {
                double *want = alloc_f64(count);
                expected_reduce(want, count, g->size, (enum input_kind)kind, 0, ops[o]);
                for (int mode = MODE_BLOCKING; mode <= MODE_IN_PLACE; mode++) {
                    float *recv = garbage_f32(count);
                    run_all_reduce_f32(g, (enum mode)mode, send, recv, count, ops[o]);
                    char label[160];
                    snprintf(label, sizeof label, "%s: all_reduce_f32 %s, %zu values, %s inputs (%s)", g->name,
                             op_name(ops[o]), count, kind == INPUT_INTEGER ? "integer" : "random", mode_names[mode]);
                    check_reduced(label, recv, want, count, (enum input_kind)kind, ops[o]);
                    strncat(label, ": same bits on every rank", sizeof label - strlen(label) - 1);
                    check_same_on_all_ranks(g, label, recv, count * sizeof *recv);
                    free(recv);
                }
                free(want);
            }
            free(send);
        }
    }
}

static void test_all_reduce_mean_is_scaled_sum(const struct group *g) {
    size_t count = 1001;
    float *send = alloc_f32(count), *sum = alloc_f32(count), *mean = alloc_f32(count);
    fill_input(send, count, INPUT_RANDOM, g->rank, 0);
    hyla_comm_all_reduce_f32(g->comm, send, sum, count, HYLA_REDUCE_SUM);
    hyla_comm_all_reduce_f32(g->comm, send, mean, count, HYLA_REDUCE_MEAN);
    float inv = 1.0f / (float)g->size;
    for (size_t i = 0; i < count; i++) sum[i] *= inv;
    char label[160];
    snprintf(label, sizeof label, "%s: all_reduce_f32 mean == sum x (1/size) bit for bit", g->name);
    mpi_check_bitwise_equal(label, mean, sum, count * sizeof *sum);
    free(send);
    free(sum);
    free(mean);
}

static void run_all_reduce_f64(const struct group *g, enum mode mode, const double *send, double *recv,
                               size_t count, enum hyla_reduce_op op) {
    if (mode == MODE_BLOCKING) {
        hyla_comm_all_reduce_f64(g->comm, send, recv, count, op);
    } else if (mode == MODE_START_WAIT) {
        hyla_comm_wait(hyla_comm_all_reduce_f64_start(g->comm, send, recv, count, op));
    } else {
        memcpy(recv, send, count * sizeof *send);
        hyla_comm_all_reduce_f64(g->comm, recv, recv, count, op);
    }
}

static void test_all_reduce_f64(const struct group *g) {
    const size_t counts[] = {1, 3, 100};
    const enum hyla_reduce_op ops[] = {HYLA_REDUCE_SUM, HYLA_REDUCE_MEAN, HYLA_REDUCE_MAX};
    for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
        size_t count = counts[c];
        double *send = alloc_f64(count), *want = alloc_f64(count);
        for (size_t i = 0; i < count; i++) send[i] = input_f64(g->rank, i);
        for (size_t o = 0; o < sizeof ops / sizeof *ops; o++) {
            for (size_t i = 0; i < count; i++) {
                double acc = ops[o] == HYLA_REDUCE_MAX ? -INFINITY : 0.0;
                for (int k = 0; k < g->size; k++)
                    acc = ops[o] == HYLA_REDUCE_MAX ? fmax(acc, input_f64(k, i)) : acc + input_f64(k, i);
                want[i] = ops[o] == HYLA_REDUCE_MEAN ? acc * (1.0 / g->size) : acc;
            }
            for (int mode = MODE_BLOCKING; mode <= MODE_IN_PLACE; mode++) {
                double *recv = alloc_f64(count);
                run_all_reduce_f64(g, (enum mode)mode, send, recv, count, ops[o]);
                char label[160];
                snprintf(label, sizeof label, "%s: all_reduce_f64 %s, %zu values (%s)", g->name, op_name(ops[o]),
                         count, mode_names[mode]);
                if (ops[o] == HYLA_REDUCE_MAX)
                    mpi_check_bitwise_equal(label, recv, want, count * sizeof *recv);
                else
                    mpi_check_le(label, rel_err_f64(recv, want, count), 1e-14);
                strncat(label, ": same bits on every rank", sizeof label - strlen(label) - 1);
                check_same_on_all_ranks(g, label, recv, count * sizeof *recv);
                free(recv);
            }
        }
        free(send);
        free(want);
    }
}

/* ---- broadcast, barrier -------------------------------------------------------------------- */

static unsigned char pattern_byte(int root, size_t i) { return (unsigned char)(root * 31 + i * 7 + 1); }

static void test_broadcast(const struct group *g) {
    const size_t sizes[] = {0, 1, 37, 4096};
    for (int which_root = 0; which_root < 2; which_root++) {
        int root = which_root == 0 ? 0 : g->size - 1;
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            size_t bytes = sizes[s];
            unsigned char *buffer = hyla_malloc(bytes), *want = hyla_malloc(bytes);
            for (size_t i = 0; i < bytes; i++) want[i] = pattern_byte(root, i);
            for (int mode = MODE_BLOCKING; mode <= MODE_START_WAIT; mode++) {
                for (size_t i = 0; i < bytes; i++) buffer[i] = g->rank == root ? want[i] : 0xAB;
                if (mode == MODE_BLOCKING)
                    hyla_comm_broadcast(g->comm, buffer, bytes, root);
                else
                    hyla_comm_wait(hyla_comm_broadcast_start(g->comm, buffer, bytes, root));
                char label[160];
                snprintf(label, sizeof label, "%s: broadcast %zu bytes from the %s rank (%s)", g->name, bytes,
                         which_root == 0 ? "first" : "last", mode_names[mode]);
                mpi_check_bitwise_equal(label, buffer, want, bytes);
            }
            free(buffer);
            free(want);
        }
    }
}

/* A barrier must hold every rank until the slowest (rank 0, asleep) arrives. */
static void test_barrier(const struct group *g) {
    const double sleep_s = 0.2, must_wait_s = 0.1; /* margin for ranks leaving MPI_Barrier late */
    for (int mode = MODE_BLOCKING; mode <= MODE_START_WAIT; mode++) {
        MPI_Barrier(g->mpi);
        double start = MPI_Wtime();
        if (g->rank == 0) {
            struct timespec nap = {0, (long)(sleep_s * 1e9)};
            if (nanosleep(&nap, NULL) != 0) hyla_die("nanosleep failed in the barrier test");
        }
        if (mode == MODE_BLOCKING)
            hyla_comm_barrier(g->comm);
        else
            hyla_comm_wait(hyla_comm_barrier_start(g->comm));
        double waited = MPI_Wtime() - start;
        char label[160];
        snprintf(label, sizeof label, "%s: barrier (%s) held the ranks for the sleeper: shortfall in s", g->name,
                 mode_names[mode]);
        mpi_check_le(label, waited < must_wait_s ? must_wait_s - waited : 0.0, 0.0);
    }
}

/* ---- several requests at once -------------------------------------------------------------- */

/* Start one of each operation before waiting for any; wait in reverse order. */
static void test_outstanding_requests(const struct group *g) {
    size_t count = 101, total = count * (size_t)g->size;
    float *gather_send = alloc_f32(count), *gather_recv = garbage_f32(total), *gather_want = alloc_f32(total);
    float *reduce_send = alloc_f32(count), *reduce_recv = garbage_f32(count);
    float *scatter_send = alloc_f32(total), *scatter_recv = garbage_f32(count);
    double *reduce_want = alloc_f64(count), *scatter_want = alloc_f64(count);
    unsigned char bytes[19];
    fill_input(gather_send, count, INPUT_RANDOM, g->rank, 0);
    for (int k = 0; k < g->size; k++) fill_input(gather_want + (size_t)k * count, count, INPUT_RANDOM, k, 0);
    fill_input(reduce_send, count, INPUT_INTEGER, g->rank, 0);
    expected_reduce(reduce_want, count, g->size, INPUT_INTEGER, 0, HYLA_REDUCE_SUM);
    fill_input(scatter_send, total, INPUT_RANDOM, g->rank, 0);
    expected_reduce(scatter_want, count, g->size, INPUT_RANDOM, (size_t)g->rank * count, HYLA_REDUCE_MEAN);
    for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = g->rank == 0 ? pattern_byte(0, i) : 0;

    struct hyla_comm_request *requests[] = {
        hyla_comm_all_gather_start(g->comm, gather_send, gather_recv, count),
        hyla_comm_all_reduce_f32_start(g->comm, reduce_send, reduce_recv, count, HYLA_REDUCE_SUM),
        hyla_comm_reduce_scatter_start(g->comm, scatter_send, scatter_recv, count, HYLA_REDUCE_MEAN),
        hyla_comm_broadcast_start(g->comm, bytes, sizeof bytes, 0),
        hyla_comm_barrier_start(g->comm),
    };
    int n = (int)(sizeof requests / sizeof *requests), answers_valid = 1;
    for (int i = 0; i < n; i++) {
        int done = hyla_comm_test(requests[i]); /* drives progress; never blocks */
        answers_valid &= done == 0 || done == 1;
    }
    for (int i = n - 1; i >= 0; i--) hyla_comm_wait(requests[i]);

    char label[160];
    snprintf(label, sizeof label, "%s: 5 requests in flight: hyla_comm_test answers 0 or 1", g->name);
    mpi_check_true(label, answers_valid);
    snprintf(label, sizeof label, "%s: 5 requests in flight: all_gather", g->name);
    mpi_check_bitwise_equal(label, gather_recv, gather_want, total * sizeof *gather_recv);
    snprintf(label, sizeof label, "%s: 5 requests in flight: all_reduce sum (integers, exact)", g->name);
    check_reduced(label, reduce_recv, reduce_want, count, INPUT_INTEGER, HYLA_REDUCE_SUM);
    snprintf(label, sizeof label, "%s: 5 requests in flight: reduce_scatter mean", g->name);
    check_reduced(label, scatter_recv, scatter_want, count, INPUT_RANDOM, HYLA_REDUCE_MEAN);
    int broadcast_ok = 1;
    for (size_t i = 0; i < sizeof bytes; i++) broadcast_ok &= bytes[i] == pattern_byte(0, i);
    snprintf(label, sizeof label, "%s: 5 requests in flight: broadcast", g->name);
    mpi_check_true(label, broadcast_ok);

    free(gather_send);
    free(gather_recv);
    free(gather_want);
    free(reduce_send);
    free(reduce_recv);
    free(scatter_send);
    free(scatter_recv);
    free(reduce_want);
    free(scatter_want);
}

static void test_queries(const struct group *g) {
    int rank = -1, size = -1;
    MPI_Comm_rank(g->mpi, &rank);
    MPI_Comm_size(g->mpi, &size);
    char label[160];
    snprintf(label, sizeof label, "%s: rank, size, backend and memory of the comm", g->name);
    mpi_check_true(label, hyla_comm_rank(g->comm) == rank && hyla_comm_size(g->comm) == size &&
                              strcmp(hyla_comm_backend_name(g->comm), "mpi") == 0 &&
                              hyla_comm_memory(g->comm) == HYLA_COMM_HOST_MEMORY);
}

static void test_group(MPI_Comm mpi, const char *name) {
    struct group g = {.comm = hyla_comm_create_mpi(mpi), .mpi = mpi, .name = name};
    g.rank = hyla_comm_rank(g.comm);
    g.size = hyla_comm_size(g.comm);
    test_queries(&g);
    test_all_gather(&g);
    test_all_gather_bf16(&g);
    test_reduce_scatter(&g);
    test_reduce_scatter_mean_is_scaled_sum(&g);
    test_all_reduce_f32(&g);
    test_all_reduce_mean_is_scaled_sum(&g);
    test_all_reduce_f64(&g);
    test_broadcast(&g);
    test_barrier(&g);
    test_outstanding_requests(&g);
    hyla_comm_destroy(g.comm);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    test_group(MPI_COMM_WORLD, "world");
    /* Worker groups are split communicators: groups of two (the last may hold one). */
    MPI_Comm pairs;
    MPI_Comm_split(MPI_COMM_WORLD, world_rank() / 2, world_rank(), &pairs);
    test_group(pairs, "pairs");
    MPI_Comm_free(&pairs);
    if (world_rank() == 0) printf("world of %d ranks\n", world_size());
    int status = mpi_test_finish();
    MPI_Finalize();
    return status;
}
