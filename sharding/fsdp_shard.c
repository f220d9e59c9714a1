/* FSDP shard layout, shard copies, gather / reduce-scatter of units, grad-norm terms
 * and reshard ranges. */
#include "fsdp_shard.h"

#include <stdint.h>

#include "common/hyla_error.h"

struct fsdp_layout fsdp_layout_make(size_t unit_count, int group_size, int rank) {
    if (group_size < 1 || rank < 0 || rank >= group_size)
        hyla_die("invalid FSDP layout: rank %d of a group of %d; the group size must be >= 1 and the rank in "
                 "[0, group size)",
                 rank, group_size);
    size_t g = (size_t)group_size;
    if (unit_count > SIZE_MAX - g) hyla_die("invalid FSDP layout: a unit of %zu values is too large", unit_count);
    struct fsdp_layout l = {.unit_count = unit_count, .group_size = group_size, .rank = rank};
    l.shard_count = (unit_count + g - 1) / g;
    l.padded_count = l.shard_count * g;
    l.shard_begin = (size_t)rank * l.shard_count;
    size_t end = l.shard_begin + l.shard_count;
    if (end > unit_count) end = unit_count;
    l.owned_count = end > l.shard_begin ? end - l.shard_begin : 0;
    return l;
}

void fsdp_shard_copy_out(const struct fsdp_layout *layout, const struct hyla_backend *backend, const float *unit,
                         float *shard) {
    size_t owned = layout->owned_count;
    if (owned > 0) backend->copy(shard, unit + layout->shard_begin, owned * sizeof *shard);
    if (layout->shard_count > owned) backend->zero(shard + owned, (layout->shard_count - owned) * sizeof *shard);
}

/* A layout used with a comm of another group is a bug in the caller, not bad input. */
static void require_matching_group(const struct fsdp_layout *layout, const struct hyla_comm *comm, const char *op) {
    if (layout->group_size != hyla_comm_size(comm) || layout->rank != hyla_comm_rank(comm))
        hyla_die("internal error: %s with a layout for rank %d of %d on a comm of rank %d of %d; please report "
                 "this bug",
                 op, layout->rank, layout->group_size, hyla_comm_rank(comm), hyla_comm_size(comm));
}

struct hyla_comm_request *fsdp_unit_gather_start(const struct fsdp_layout *layout, struct hyla_comm *comm,
                                                 const float *shard, float *full) {
    require_matching_group(layout, comm, "fsdp_unit_gather");
    return hyla_comm_all_gather_start(comm, shard, full, layout->shard_count);
}

struct hyla_comm_request *fsdp_unit_gather_bf16_start(const struct fsdp_layout *layout, struct hyla_comm *comm,
                                                      const uint16_t *shard, uint16_t *full) {
    require_matching_group(layout, comm, "fsdp_unit_gather_bf16");
    return hyla_comm_all_gather_bf16_start(comm, shard, full, layout->shard_count);
}

void fsdp_unit_gather(const struct fsdp_layout *layout, struct hyla_comm *comm, const float *shard, float *full) {
    hyla_comm_wait(fsdp_unit_gather_start(layout, comm, shard, full));
}

struct hyla_comm_request *fsdp_grad_reduce_scatter_start(const struct fsdp_layout *layout, struct hyla_comm *comm,
                                                         const float *full_grad, float *shard_grad) {
    require_matching_group(layout, comm, "fsdp_grad_reduce_scatter");
    return hyla_comm_reduce_scatter_start(comm, full_grad, shard_grad, layout->shard_count, HYLA_REDUCE_MEAN);
}

void fsdp_grad_reduce_scatter(const struct fsdp_layout *layout, struct hyla_comm *comm, const float *full_grad,
                              float *shard_grad) {
    hyla_comm_wait(fsdp_grad_reduce_scatter_start(layout, comm, full_grad, shard_grad));
}

void fsdp_shard_sum_squares_add(const struct fsdp_layout *layout, const struct hyla_backend *backend,
                                const float *shard, double *acc) {
    if (layout->owned_count > 0) backend->sum_squares_add(acc, shard, layout->owned_count);
}

struct hyla_comm_request *fsdp_global_sum_squares_start(struct hyla_comm *comm, double *acc) {
    return hyla_comm_all_reduce_f64_start(comm, acc, acc, 1, HYLA_REDUCE_SUM);
}

size_t fsdp_reshard_pieces(size_t unit_count, int old_group_size, int new_group_size, int new_rank,
                           struct fsdp_reshard_piece *pieces, size_t capacity) {
    struct fsdp_layout target = fsdp_layout_make(unit_count, new_group_size, new_rank);
    struct fsdp_layout source = fsdp_layout_make(unit_count, old_group_size, 0);
    size_t begin = target.shard_begin, end = target.shard_begin + target.owned_count;
    size_t found = 0;
    /* Walk the old shards that intersect [begin, end): each gives one contiguous piece. */
    for (size_t at = begin; at < end; found++) {
        size_t old_rank = at / source.shard_count; /* shard_count > 0 since n > at */
        size_t old_begin = old_rank * source.shard_count;
        size_t old_end = old_begin + source.shard_count < end ? old_begin + source.shard_count : end;
        if (found < capacity)
            pieces[found] = (struct fsdp_reshard_piece){
                .old_rank = (int)old_rank,
                .old_offset = at - old_begin,
                .new_offset = at - begin,
                .count = old_end - at,
            };
        at = old_end;
    }
    return found;
}
