/* FSDP shards: layout arithmetic (n not divisible by G, n < G, n = 0), gather of shards
 * == the unit bit for bit, reduce-scatter MEAN == the local mean of every rank's
 * gradient with zero padding kept zero, the global sum of squares == the unit's, and
 * reshard pieces that cover every new shard exactly once (G -> G' in {1,2,3,4}). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "mpi_checks.h"
#include "common/bf16.h"
#include "sharding/fsdp_shard.h"

static const size_t unit_sizes[] = {0, 1, 2, 3, 5, 10, 12, 13, 1001, 4099};
enum { UNIT_SIZE_COUNT = sizeof unit_sizes / sizeof *unit_sizes };

/* The unit's values (the same on every rank) and rank k's gradient of it. */
static float unit_value(size_t i) { return -1.0f + 2.0f * hyla_rng_uniform(hyla_rng_key(42, HYLA_RNG_TEST, 0, 0), i); }
static float grad_value(int rank, size_t i) {
    return -1.0f + 2.0f * hyla_rng_uniform(hyla_rng_key(43, HYLA_RNG_TEST, 0, (uint32_t)rank), i);
}

static float *make_unit(size_t n) {
    float *u = alloc_f32(n);
    for (size_t i = 0; i < n; i++) u[i] = unit_value(i);
    return u;
}

static int all_zero(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (x[i] != 0.0f || signbit(x[i])) return 0;
    return 1;
}

/* ---- layout arithmetic (the same on every rank) --------------------------------------- */

static int layout_consistent(size_t n, int groups) {
    size_t next = 0;
    int ok = 1;
    for (int r = 0; r < groups; r++) {
        struct fsdp_layout l = fsdp_layout_make(n, groups, r);
        size_t shard = (n + (size_t)groups - 1) / (size_t)groups;
        ok &= l.unit_count == n && l.group_size == groups && l.rank == r;
        ok &= l.shard_count == shard && l.padded_count == shard * (size_t)groups;
        ok &= l.padded_count >= n && l.padded_count - n < (size_t)groups;
        ok &= l.shard_begin == (size_t)r * shard && l.owned_count <= shard;
        /* Owned ranges tile [0, n) in rank order; ranks past the end own nothing. */
        ok &= l.owned_count == 0 ? l.shard_begin >= n : l.shard_begin == next;
        next += l.owned_count;
        ok &= l.owned_count == shard || l.shard_begin + l.owned_count == n || l.owned_count == 0;
    }
    return ok && next == n;
}

static void test_layout(void) {
    int ok = 1;
    for (size_t u = 0; u < UNIT_SIZE_COUNT; u++)
        for (int groups = 1; groups <= 6; groups++) ok &= layout_consistent(unit_sizes[u], groups);
    mpi_check_true("layout: P = ceil(n/G)*G, S = P/G, owned ranges tile [0, n) (n = 0..4099, G = 1..6)", ok);

    /* The documented example: n = 10, G = 4 -> P = 12, S = 3, owned 3, 3, 3, 1. */
    const size_t owned_10_4[] = {3, 3, 3, 1};
    ok = 1;
    for (int r = 0; r < 4; r++) {
        struct fsdp_layout l = fsdp_layout_make(10, 4, r);
        ok &= l.padded_count == 12 && l.shard_count == 3 && l.shard_begin == (size_t)r * 3 &&
              l.owned_count == owned_10_4[r];
    }
    mpi_check_true("layout: n = 10, G = 4 gives P = 12, S = 3, owned 3, 3, 3, 1", ok);

    /* n < G: one value per shard, the last ranks own padding only. */
    const size_t owned_2_4[] = {1, 1, 0, 0};
    ok = 1;
    for (int r = 0; r < 4; r++) {
        struct fsdp_layout l = fsdp_layout_make(2, 4, r);
        ok &= l.padded_count == 4 && l.shard_count == 1 && l.owned_count == owned_2_4[r];
    }
    mpi_check_true("layout: n = 2 < G = 4 gives P = 4, S = 1, owned 1, 1, 0, 0", ok);

    struct fsdp_layout empty = fsdp_layout_make(0, 3, 2);
    mpi_check_true("layout: n = 0 gives P = S = 0",
                   empty.padded_count == 0 && empty.shard_count == 0 && empty.owned_count == 0);
}

/* ---- shard copy and gather ------------------------------------------------------------- */

static void test_copy_out_and_gather(struct hyla_comm *comm, const struct hyla_backend *cpu) {
    for (size_t u = 0; u < UNIT_SIZE_COUNT; u++) {
        size_t n = unit_sizes[u];
        struct fsdp_layout l = fsdp_layout_make(n, hyla_comm_size(comm), hyla_comm_rank(comm));
        float *unit = make_unit(n), *shard = alloc_f32(l.shard_count);
        for (size_t i = 0; i < l.shard_count; i++) shard[i] = NAN; /* copy_out must write every value */
        fsdp_shard_copy_out(&l, cpu, unit, shard);
        char label[160];
        snprintf(label, sizeof label, "copy_out n = %zu: owned values are the unit's, padding is +0", n);
        int owned_ok = l.owned_count == 0 || memcmp(shard, unit + l.shard_begin, l.owned_count * sizeof *shard) == 0;
        mpi_check_true(label, owned_ok && all_zero(shard + l.owned_count, l.shard_count - l.owned_count));

        for (int blocking = 1; blocking >= 0; blocking--) {
            float *full = alloc_f32(l.padded_count);
            for (size_t i = 0; i < l.padded_count; i++) full[i] = NAN;
            if (blocking)
                fsdp_unit_gather(&l, comm, shard, full);
            else
                hyla_comm_wait(fsdp_unit_gather_start(&l, comm, shard, full));
            snprintf(label, sizeof label, "gather n = %zu (%s): full[0, n) == unit bit for bit, full[n, P) == +0", n,
                     blocking ? "blocking" : "start/wait");
            mpi_check_true(label, (n == 0 || memcmp(full, unit, n * sizeof *full) == 0) &&
                                      all_zero(full + n, l.padded_count - n));
            free(full);
        }
        /* bf16: each rank rounds its shard into its own slot, the gather fills the rest in place */
        uint16_t *full16 = malloc(l.padded_count * sizeof *full16 + 1);
        for (size_t i = 0; i < l.padded_count; i++) full16[i] = 0xffffu;
        uint16_t *own = full16 + l.shard_begin;
        cpu->round_to_bf16(own, shard, l.shard_count);
        hyla_comm_wait(fsdp_unit_gather_bf16_start(&l, comm, own, full16));
        int bf16_ok = 1;
        for (size_t i = 0; i < l.padded_count; i++)
            bf16_ok &= full16[i] == (i < n ? hyla_bf16_round(unit[i]) : 0);
        snprintf(label, sizeof label, "gather in bf16 n = %zu: full[0, n) == the unit rounded to bf16, padding +0", n);
        mpi_check_true(label, bf16_ok);
        free(full16);
        free(unit);
        free(shard);
    }
}

/* ---- gradient reduce-scatter ------------------------------------------------------------ */

static void test_grad_reduce_scatter(struct hyla_comm *comm) {
    int size = hyla_comm_size(comm), rank = hyla_comm_rank(comm);
    for (size_t u = 0; u < UNIT_SIZE_COUNT; u++) {
        size_t n = unit_sizes[u];
        struct fsdp_layout l = fsdp_layout_make(n, size, rank);
        float *grad = alloc_f32(l.padded_count); /* zero padding */
        for (size_t i = 0; i < n; i++) grad[i] = grad_value(rank, i);
        /* The reference: the mean of every rank's gradient over this rank's owned values. */
        float *want = alloc_f32(l.owned_count);
        for (size_t i = 0; i < l.owned_count; i++) {
            double sum = 0;
            for (int k = 0; k < size; k++) sum += grad_value(k, l.shard_begin + i);
            want[i] = (float)(sum / size);
        }
        for (int blocking = 1; blocking >= 0; blocking--) {
            float *shard = alloc_f32(l.shard_count);
            for (size_t i = 0; i < l.shard_count; i++) shard[i] = NAN;
            if (blocking)
                fsdp_grad_reduce_scatter(&l, comm, grad, shard);
            else
                hyla_comm_wait(fsdp_grad_reduce_scatter_start(&l, comm, grad, shard));
            char label[160];
            const char *how = blocking ? "blocking" : "start/wait";
            snprintf(label, sizeof label, "reduce_scatter mean n = %zu (%s) vs local mean: relative error", n, how);
            mpi_check_le(label, rel_err_f32(shard, want, l.owned_count), 1e-6);
            snprintf(label, sizeof label, "reduce_scatter mean n = %zu (%s): shard padding stays +0", n, how);
            mpi_check_true(label, all_zero(shard + l.owned_count, l.shard_count - l.owned_count));
            free(shard);
        }
        free(grad);
        free(want);
    }
}

/* ---- grad-norm terms ------------------------------------------------------------------- */

static void test_global_sum_squares(struct hyla_comm *comm, const struct hyla_backend *cpu) {
    for (size_t u = 0; u < UNIT_SIZE_COUNT; u++) {
        size_t n = unit_sizes[u];
        struct fsdp_layout l = fsdp_layout_make(n, hyla_comm_size(comm), hyla_comm_rank(comm));
        float *unit = make_unit(n), *shard = alloc_f32(l.shard_count);
        fsdp_shard_copy_out(&l, cpu, unit, shard);
        double global = 0;
        fsdp_shard_sum_squares_add(&l, cpu, shard, &global);
        hyla_comm_wait(fsdp_global_sum_squares_start(comm, &global));
        double want = 0;
        for (size_t i = 0; i < n; i++) want += (double)unit[i] * unit[i];
        char label[160];
        snprintf(label, sizeof label, "global sum of squares n = %zu vs the full unit's: relative error", n);
        mpi_check_le(label, want == 0 ? fabs(global) : fabs(global - want) / want, 1e-12);
        double root = global;
        MPI_Bcast(&root, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        snprintf(label, sizeof label, "global sum of squares n = %zu: same bits on every rank", n);
        mpi_check_bitwise_equal(label, &global, &root, sizeof global);
        free(unit);
        free(shard);
    }
}

/* ---- resharding ------------------------------------------------------------------------ */

/* Pieces for new rank r': in order, covering [0, owned') once, mapping to the same unit
 * indices, inside the old shards' owned values. */
static int pieces_valid(size_t n, int old_groups, int new_groups, int new_rank) {
    struct fsdp_reshard_piece pieces[8];
    size_t count = fsdp_reshard_pieces(n, old_groups, new_groups, new_rank, pieces, 8);
    if (count > (size_t)old_groups || fsdp_reshard_pieces(n, old_groups, new_groups, new_rank, NULL, 0) != count)
        return 0;
    struct fsdp_layout target = fsdp_layout_make(n, new_groups, new_rank);
    size_t covered = 0;
    for (size_t k = 0; k < count; k++) {
        const struct fsdp_reshard_piece *p = &pieces[k];
        if (p->old_rank < 0 || p->old_rank >= old_groups || p->count == 0) return 0;
        struct fsdp_layout source = fsdp_layout_make(n, old_groups, p->old_rank);
        if (p->new_offset != covered) return 0; /* contiguous, in order, no overlap */
        if (p->old_offset + p->count > source.owned_count) return 0;
        if (source.shard_begin + p->old_offset != target.shard_begin + p->new_offset) return 0;
        covered += p->count;
    }
    return covered == target.owned_count;
}

/* Data through the pieces: old shards -> new shards == slicing the unit directly. */
static int reshard_moves_data(size_t n, int old_groups, int new_groups, const struct hyla_backend *cpu) {
    float *unit = make_unit(n);
    float **old_shards = hyla_calloc((size_t)old_groups, sizeof *old_shards);
    for (int q = 0; q < old_groups; q++) {
        struct fsdp_layout l = fsdp_layout_make(n, old_groups, q);
        old_shards[q] = alloc_f32(l.shard_count);
        fsdp_shard_copy_out(&l, cpu, unit, old_shards[q]);
    }
    int ok = 1;
    for (int r = 0; r < new_groups; r++) {
        struct fsdp_layout l = fsdp_layout_make(n, new_groups, r);
        float *assembled = alloc_f32(l.shard_count), *direct = alloc_f32(l.shard_count);
        struct fsdp_reshard_piece pieces[8];
        size_t count = fsdp_reshard_pieces(n, old_groups, new_groups, r, pieces, 8);
        for (size_t k = 0; k < count; k++)
            memcpy(assembled + pieces[k].new_offset, old_shards[pieces[k].old_rank] + pieces[k].old_offset,
                   pieces[k].count * sizeof *assembled);
        fsdp_shard_copy_out(&l, cpu, unit, direct);
        ok &= l.shard_count == 0 || memcmp(assembled, direct, l.shard_count * sizeof *direct) == 0;
        free(assembled);
        free(direct);
    }
    for (int q = 0; q < old_groups; q++) free(old_shards[q]);
    free(old_shards);
    free(unit);
    return ok;
}

static void test_reshard(const struct hyla_backend *cpu) {
    for (int old_groups = 1; old_groups <= 4; old_groups++) {
        for (int new_groups = 1; new_groups <= 4; new_groups++) {
            int ok = 1, moves = 1;
            for (size_t u = 0; u < UNIT_SIZE_COUNT; u++) {
                for (int r = 0; r < new_groups; r++) ok &= pieces_valid(unit_sizes[u], old_groups, new_groups, r);
                moves &= reshard_moves_data(unit_sizes[u], old_groups, new_groups, cpu);
            }
            char label[160];
            snprintf(label, sizeof label, "reshard G = %d -> G' = %d: pieces cover every new shard exactly once",
                     old_groups, new_groups);
            mpi_check_true(label, ok);
            snprintf(label, sizeof label, "reshard G = %d -> G' = %d: old shards through the pieces == new shards",
                     old_groups, new_groups);
            mpi_check_true(label, moves);
        }
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    const struct hyla_backend *cpu = hyla_backend_cpu();
    struct hyla_comm *comm = hyla_comm_create_mpi(MPI_COMM_WORLD);
    test_layout();
    test_copy_out_and_gather(comm, cpu);
    test_grad_reduce_scatter(comm);
    test_global_sum_squares(comm, cpu);
    test_reshard(cpu);
    hyla_comm_destroy(comm);
    if (world_rank() == 0) printf("world of %d ranks\n", world_size());
    int status = mpi_test_finish();
    MPI_Finalize();
    return status;
}
