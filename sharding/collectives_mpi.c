/* The MPI collectives backend: host buffers, MPI_I* non-blocking collectives.
 *
 * Progress: Open MPI moves a non-blocking collective forward only inside MPI calls (no
 * progress thread by default), so compute between `_start` and wait overlaps with little
 * of the transfer; hyla_comm_test drives progress when a caller has a moment to spare.
 * MEAN is MPI_SUM followed by x (1/size) on the result, applied in wait. */
#include <limits.h>

#include "collectives_backend.h"
#include "common/hyla_error.h"

struct mpi_context {
    MPI_Comm comm; /* our duplicate of the group, errors returned */
};

struct mpi_request {
    struct hyla_comm_request base; /* first: converts to and from the generic request */
    MPI_Request mpi;
    const char *call;  /* the MPI_I* call, for messages from wait */
    void *mean_result; /* non-NULL: scale mean_count values by 1/size once complete */
    size_t mean_count;
    enum hyla_comm_dtype mean_dtype;
};

static MPI_Comm mpi_comm_of(const struct hyla_comm *comm) { return ((const struct mpi_context *)comm->context)->comm; }

/* MPI counts are int: a larger count is a unit too big for one MPI call. */
static int mpi_count(size_t count, const char *call) {
    if (count > INT_MAX)
        hyla_die("%s: %zu elements exceed MPI's count limit of %d; shard the unit into smaller units", call, count,
                 INT_MAX);
    return (int)count;
}

static MPI_Datatype mpi_datatype(enum hyla_comm_dtype dtype) {
    switch (dtype) {
    case HYLA_COMM_F32: return MPI_FLOAT;
    case HYLA_COMM_F64: return MPI_DOUBLE;
    case HYLA_COMM_BF16: return MPI_UINT16_T;
    case HYLA_COMM_BYTE: return MPI_BYTE;
    }
    hyla_die("internal error: unknown collective data type %d; please report this bug", (int)dtype);
}

static MPI_Op mpi_op(enum hyla_reduce_op op) { return op == HYLA_REDUCE_MAX ? MPI_MAX : MPI_SUM; }

static struct mpi_request *new_request(const char *call) {
    struct mpi_request *r = hyla_calloc(1, sizeof *r);
    r->mpi = MPI_REQUEST_NULL;
    r->call = call;
    return r;
}

/* MEAN: remember where the sum lands so that wait can scale it. */
static void want_mean(struct mpi_request *r, enum hyla_reduce_op op, void *result, size_t count,
                      enum hyla_comm_dtype dtype) {
    if (op != HYLA_REDUCE_MEAN) return;
    r->mean_result = result;
    r->mean_count = count;
    r->mean_dtype = dtype;
}

static struct hyla_comm_request *mpi_all_gather(struct hyla_comm *comm, const void *send, void *recv, size_t count,
                                                enum hyla_comm_dtype dtype) {
    const char *call = "MPI_Iallgather";
    size_t block_bytes = count * hyla_comm_dtype_size(dtype);
    int in_place = count > 0 && send == (const char *)recv + (size_t)comm->rank * block_bytes;
    struct mpi_request *r = new_request(call);
    int n = mpi_count(count, call);
    MPI_Datatype type = mpi_datatype(dtype);
    hyla_mpi_check(MPI_Iallgather(in_place ? MPI_IN_PLACE : send, n, type, recv, n, type, mpi_comm_of(comm), &r->mpi),
                   call);
    return &r->base;
}

static struct hyla_comm_request *mpi_reduce_scatter(struct hyla_comm *comm, const void *send, void *recv,
                                                    size_t count, enum hyla_comm_dtype dtype,
                                                    enum hyla_reduce_op op) {
    const char *call = "MPI_Ireduce_scatter_block";
    struct mpi_request *r = new_request(call);
    int n = mpi_count(count, call);
    hyla_mpi_check(
        MPI_Ireduce_scatter_block(send, recv, n, mpi_datatype(dtype), mpi_op(op), mpi_comm_of(comm), &r->mpi), call);
    want_mean(r, op, recv, count, dtype);
    return &r->base;
}

static struct hyla_comm_request *mpi_all_reduce(struct hyla_comm *comm, const void *send, void *recv, size_t count,
                                                enum hyla_comm_dtype dtype, enum hyla_reduce_op op) {
    const char *call = "MPI_Iallreduce";
    struct mpi_request *r = new_request(call);
    int n = mpi_count(count, call);
    hyla_mpi_check(MPI_Iallreduce(send == recv ? MPI_IN_PLACE : send, recv, n, mpi_datatype(dtype), mpi_op(op),
                                  mpi_comm_of(comm), &r->mpi),
                   call);
    want_mean(r, op, recv, count, dtype);
    return &r->base;
}

static struct hyla_comm_request *mpi_broadcast(struct hyla_comm *comm, void *buffer, size_t bytes, int root) {
    const char *call = "MPI_Ibcast";
    struct mpi_request *r = new_request(call);
    hyla_mpi_check(MPI_Ibcast(buffer, mpi_count(bytes, call), MPI_BYTE, root, mpi_comm_of(comm), &r->mpi), call);
    return &r->base;
}

static struct hyla_comm_request *mpi_barrier(struct hyla_comm *comm) {
    const char *call = "MPI_Ibarrier";
    struct mpi_request *r = new_request(call);
    hyla_mpi_check(MPI_Ibarrier(mpi_comm_of(comm), &r->mpi), call);
    return &r->base;
}

/* SUM then x (1/size): one rounding after the deterministic sum; exact when size is a
 * power of two, so MEAN over G = 1, 2, 4 equals SUM scaled bit for bit. */
static void scale_mean(struct mpi_request *r, int size) {
    if (r->mean_dtype == HYLA_COMM_F32) {
        float *x = r->mean_result, inv = 1.0f / (float)size;
        for (size_t i = 0; i < r->mean_count; i++) x[i] *= inv;
    } else {
        double *x = r->mean_result, inv = 1.0 / (double)size;
        for (size_t i = 0; i < r->mean_count; i++) x[i] *= inv;
    }
}

static void mpi_wait(struct hyla_comm_request *request) {
    struct mpi_request *r = (struct mpi_request *)request;
    char call[64];
    snprintf(call, sizeof call, "MPI_Wait (%s)", r->call);
    hyla_mpi_check(MPI_Wait(&r->mpi, MPI_STATUS_IGNORE), call);
    if (r->mean_result) scale_mean(r, request->comm->size);
    free(r);
}

static int mpi_test(struct hyla_comm_request *request) {
    struct mpi_request *r = (struct mpi_request *)request;
    char call[64];
    snprintf(call, sizeof call, "MPI_Test (%s)", r->call);
    int done = 0;
    hyla_mpi_check(MPI_Test(&r->mpi, &done, MPI_STATUS_IGNORE), call);
    return done;
}

/* Host buffers: there is no stream to order; completing on the host is the answer. */
static void mpi_wait_on_stream(struct hyla_comm_request *request, void *cuda_stream) {
    (void)cuda_stream;
    mpi_wait(request);
}

static void mpi_set_compute_stream(struct hyla_comm *comm, void *cuda_stream) {
    (void)comm;
    (void)cuda_stream;
}

static void mpi_destroy(struct hyla_comm *comm) {
    struct mpi_context *ctx = comm->context;
    hyla_mpi_check(MPI_Comm_free(&ctx->comm), "MPI_Comm_free (collectives communicator)");
    free(ctx);
}

static const struct hyla_comm_ops mpi_ops = {
    .name = "mpi",
    .memory = HYLA_COMM_HOST_MEMORY,
    .all_gather = mpi_all_gather,
    .reduce_scatter = mpi_reduce_scatter,
    .all_reduce = mpi_all_reduce,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .wait = mpi_wait,
    .test = mpi_test,
    .wait_on_stream = mpi_wait_on_stream,
    .set_compute_stream = mpi_set_compute_stream,
    .destroy = mpi_destroy,
};

MPI_Comm hyla_comm_mpi_handle(const struct hyla_comm *comm) {
    if (!comm || comm->ops != &mpi_ops) hyla_die("hyla_comm_mpi_handle needs an MPI comm");
    return mpi_comm_of(comm);
}

struct hyla_comm *hyla_comm_create_mpi(MPI_Comm group) {
    struct mpi_context *ctx = hyla_calloc(1, sizeof *ctx);
    ctx->comm = hyla_comm_duplicate_group(group, "MPI");
    struct hyla_comm *comm = hyla_calloc(1, sizeof *comm);
    comm->ops = &mpi_ops;
    comm->context = ctx;
    hyla_mpi_check(MPI_Comm_rank(ctx->comm, &comm->rank), "MPI_Comm_rank");
    hyla_mpi_check(MPI_Comm_size(ctx->comm, &comm->size), "MPI_Comm_size");
    return comm;
}
