/* Inside the collectives: what a backend (MPI, NCCL) provides. Not for users of
 * sharding/; they see only collectives.h. collectives.c checks arguments, counts
 * requests and dispatches through the table; a backend only moves data. */
#ifndef HYLA_COLLECTIVES_BACKEND_H
#define HYLA_COLLECTIVES_BACKEND_H

#include "collectives.h"

enum hyla_comm_dtype {
    HYLA_COMM_F32,
    HYLA_COMM_F64,
    HYLA_COMM_BF16, /* moved as 16-bit patterns, never reduced */
    HYLA_COMM_BYTE,
};

size_t hyla_comm_dtype_size(enum hyla_comm_dtype dtype);

/* A backend's request starts with this header (so a backend request converts to and
 * from it); collectives.c reads only `comm`. */
struct hyla_comm_request {
    struct hyla_comm *comm;
};

struct hyla_comm_ops {
    const char *name;
    enum hyla_comm_memory memory;

    struct hyla_comm_request *(*all_gather)(struct hyla_comm *comm, const void *send, void *recv, size_t count,
                                            enum hyla_comm_dtype dtype);
    struct hyla_comm_request *(*reduce_scatter)(struct hyla_comm *comm, const void *send, void *recv,
                                                size_t count, enum hyla_comm_dtype dtype, enum hyla_reduce_op op);
    struct hyla_comm_request *(*all_reduce)(struct hyla_comm *comm, const void *send, void *recv, size_t count,
                                            enum hyla_comm_dtype dtype, enum hyla_reduce_op op);
    struct hyla_comm_request *(*broadcast)(struct hyla_comm *comm, void *buffer, size_t bytes, int root);
    struct hyla_comm_request *(*barrier)(struct hyla_comm *comm);

    void (*wait)(struct hyla_comm_request *request); /* completes and frees */
    int (*test)(struct hyla_comm_request *request);
    void (*wait_on_stream)(struct hyla_comm_request *request, void *cuda_stream); /* completes and frees */
    void (*set_compute_stream)(struct hyla_comm *comm, void *cuda_stream);
    void (*destroy)(struct hyla_comm *comm); /* frees the backend's context */
};

struct hyla_comm {
    const struct hyla_comm_ops *ops;
    void *context; /* the backend's state */
    int rank, size;
    long outstanding; /* requests started and not yet waited for */
};

/* Checks for backends: die naming the call and the cause unless the call succeeded. */
void hyla_mpi_check(int rc, const char *call);

/* The MPI communicator a backend works on: a duplicate of `group`, with errors returned
 * (not fatal) so that hyla_mpi_check can name them. */
MPI_Comm hyla_comm_duplicate_group(MPI_Comm group, const char *backend);

#endif
