/* FSDP shard bookkeeping: the padded 1/G slice of one flat unit, and the collectives
 * that move a unit between its full form and its shards. Independent of the model: it
 * knows (n, G, rank) and buffers, nothing else.
 *
 * A unit of n values in a group of G ranks is padded to P = ceil(n/G)·G values; every
 * shard holds S = P/G values and rank r owns unit indices [r·S, (r+1)·S) ∩ [0, n). The
 * shard's tail past the owned values is padding: zero, and it stays zero (gathered
 * padding lands in full[n..P), reduce-scattered padding of a zero-padded gradient is 0).
 * Example n = 10, G = 4: P = 12, S = 3; rank 3 owns index 9 only, its shard is
 * [u9, 0, 0]. See docs/sharding.md.
 *
 * Buffers: `unit`/`full` buffers and shards live in the memory of the backend (copies,
 * sums of squares) and of the comm (collectives) that a call takes; the two must agree
 * (cpu backend + MPI comm, cuda backend + NCCL comm). */
#ifndef HYLA_FSDP_SHARD_H
#define HYLA_FSDP_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "sharding/collectives.h"

struct fsdp_layout {
    size_t unit_count;   /* n: the unit's real values */
    int group_size;      /* G */
    int rank;            /* r, in [0, G) */
    size_t padded_count; /* P = ceil(n/G)·G */
    size_t shard_count;  /* S = P/G: every shard's length, padding included */
    size_t shard_begin;  /* r·S: the unit index of the shard's first value */
    size_t owned_count;  /* |[r·S, (r+1)·S) ∩ [0, n)|: real values in this shard (0..S) */
};

/* Dies with a message unless group_size >= 1 and 0 <= rank < group_size. */
struct fsdp_layout fsdp_layout_make(size_t unit_count, int group_size, int rank);

/* shard[0..S) = unit[r·S ..) for the owned values, 0 for the padding. unit holds at
 * least n values (P not needed). */
void fsdp_shard_copy_out(const struct fsdp_layout *layout, const struct hyla_backend *backend, const float *unit,
                         float *shard);

/* full[0..P) = every rank's shard in rank order; full[0..n) is the unit. The comm must be
 * the group the layout describes (same size, same rank). */
void fsdp_unit_gather(const struct fsdp_layout *layout, struct hyla_comm *comm, const float *shard, float *full);
struct hyla_comm_request *fsdp_unit_gather_start(const struct fsdp_layout *layout, struct hyla_comm *comm,
                                                 const float *shard, float *full);

/* The same in bf16: full[0..P) = every rank's bf16 shard; in place when shard = full + r·S. */
struct hyla_comm_request *fsdp_unit_gather_bf16_start(const struct fsdp_layout *layout, struct hyla_comm *comm,
                                                      const uint16_t *shard, uint16_t *full);

/* shard_grad[0..S) = mean over ranks of full_grad[r·S .. (r+1)·S). full_grad holds P
 * values whose padding tail [n, P) is zero on every rank (then shard padding is 0). */
void fsdp_grad_reduce_scatter(const struct fsdp_layout *layout, struct hyla_comm *comm, const float *full_grad,
                              float *shard_grad);
struct hyla_comm_request *fsdp_grad_reduce_scatter_start(const struct fsdp_layout *layout, struct hyla_comm *comm,
                                                         const float *full_grad, float *shard_grad);

/* *acc += the sum of squares (in double) of the shard's owned values: this rank's term of
 * the global squared grad norm. acc is one double in the backend's memory (on a GPU the
 * host does not wait for it). Add every unit's, then fsdp_global_sum_squares_start once. */
void fsdp_shard_sum_squares_add(const struct fsdp_layout *layout, const struct hyla_backend *backend,
                                const float *shard, double *acc);
/* *acc = the sum of *acc over the group, in place (a double all-reduce in the comm's memory,
 * identical on every rank). */
struct hyla_comm_request *fsdp_global_sum_squares_start(struct hyla_comm *comm, double *acc);

/* Resharding (checkpoints saved with G ranks, loaded with G'): the pieces of the old
 * shards that make up new rank r'. Piece k copies count values from old rank old_rank's
 * shard at old_offset into the new shard at new_offset. The pieces are in increasing
 * new_offset and cover the new shard's owned values [0, owned') exactly once; the new
 * padding is not covered (it is zero). */
struct fsdp_reshard_piece {
    int old_rank;
    size_t old_offset; /* into the old shard */
    size_t new_offset; /* into the new shard */
    size_t count;
};

/* Writes at most `capacity` pieces and returns how many there are (as snprintf does:
 * call again with a larger array when the result exceeds capacity). There are never
 * more than old_group_size pieces. */
size_t fsdp_reshard_pieces(size_t unit_count, int old_group_size, int new_group_size, int new_rank,
                           struct fsdp_reshard_piece *pieces, size_t capacity);

#endif
