/* The NCCL collectives backend: device buffers, one dedicated communication stream.
 *
 * Ordering: each `_start` records an event on the compute stream (set with
 * hyla_comm_set_compute_stream) and makes the communication stream wait for it, so the
 * collective reads its inputs after the kernels that wrote them, without a host wait.
 * It then enqueues the NCCL call on the communication stream and records a completion
 * event: the request. Compute on other streams keeps running while NCCL moves data;
 * hyla_comm_wait_on_stream lets a consumer stream wait for the event on the device,
 * hyla_comm_wait blocks the host (a blocking-sync event: the thread sleeps, it does not
 * spin, which matters when ranks share cores).
 *
 * MEAN is ncclAvg. For floating types NCCL scales every contribution by 1/size before
 * summing; for a power-of-two group that equals SUM then x (1/size) bit for bit, otherwise
 * it may differ in the last bit (docs/sharding.md). */
#include <cuda_runtime.h>
#include <nccl.h>

#include "collectives_backend.h"
#include "common/hyla_error.h"

struct nccl_context {
    ncclComm_t nccl;
    MPI_Comm mpi;              /* duplicate of the group: bootstrap only */
    int device;
    cudaStream_t comm_stream;  /* all NCCL work of this comm */
    cudaStream_t compute_stream; /* producer of inputs; NULL = legacy default stream */
    cudaEvent_t inputs_ready;  /* re-recorded by every start */
    float *barrier_scratch;    /* one device float reduced by barrier */
};

struct nccl_request {
    struct hyla_comm_request base; /* first: converts to and from the generic request */
    cudaEvent_t done;
    const char *call;
};

static void cuda_check(cudaError_t rc, const char *call) {
    if (rc == cudaSuccess) return;
    hyla_die("%s failed: %s (%s); check the GPU and its driver (nvidia-smi)", call, cudaGetErrorString(rc),
             cudaGetErrorName(rc));
}

static void nccl_check(ncclResult_t rc, const char *call, ncclComm_t comm) {
    if (rc == ncclSuccess) return;
    const char *detail = comm ? ncclGetLastError(comm) : NULL;
    hyla_die("%s failed: %s%s%s; set NCCL_DEBUG=WARN for NCCL's own account", call, ncclGetErrorString(rc),
             detail && detail[0] ? ": " : "", detail ? detail : "");
}

static struct nccl_context *context_of(const struct hyla_comm *comm) { return comm->context; }

static ncclDataType_t nccl_datatype(enum hyla_comm_dtype dtype) {
    switch (dtype) {
    case HYLA_COMM_F32: return ncclFloat32;
    case HYLA_COMM_F64: return ncclFloat64;
    case HYLA_COMM_BF16: return ncclBfloat16;
    case HYLA_COMM_BYTE: return ncclUint8;
    }
    hyla_die("internal error: unknown collective data type %d; please report this bug", (int)dtype);
}

static ncclRedOp_t nccl_op(enum hyla_reduce_op op) {
    switch (op) {
    case HYLA_REDUCE_SUM: return ncclSum;
    case HYLA_REDUCE_MEAN: return ncclAvg;
    case HYLA_REDUCE_MAX: return ncclMax;
    }
    hyla_die("internal error: unknown reduction %d; please report this bug", (int)op);
}

/* Order the communication stream after the compute stream's work so far. */
static void begin_operation(struct nccl_context *ctx) {
    cuda_check(cudaEventRecord(ctx->inputs_ready, ctx->compute_stream), "cudaEventRecord (collective inputs ready)");
    cuda_check(cudaStreamWaitEvent(ctx->comm_stream, ctx->inputs_ready, 0),
               "cudaStreamWaitEvent (communication stream)");
}

/* The request: an event recorded after the NCCL call on the communication stream. */
static struct hyla_comm_request *finish_operation(struct nccl_context *ctx, const char *call) {
    struct nccl_request *r = hyla_calloc(1, sizeof *r);
    r->call = call;
    cuda_check(cudaEventCreateWithFlags(&r->done, cudaEventDisableTiming | cudaEventBlockingSync),
               "cudaEventCreateWithFlags (collective request)");
    cuda_check(cudaEventRecord(r->done, ctx->comm_stream), "cudaEventRecord (collective done)");
    return &r->base;
}

static struct hyla_comm_request *nccl_all_gather(struct hyla_comm *comm, const void *send, void *recv, size_t count,
                                                 enum hyla_comm_dtype dtype) {
    struct nccl_context *ctx = context_of(comm);
    begin_operation(ctx);
    nccl_check(ncclAllGather(send, recv, count, nccl_datatype(dtype), ctx->nccl, ctx->comm_stream), "ncclAllGather",
               ctx->nccl);
    return finish_operation(ctx, "ncclAllGather");
}

static struct hyla_comm_request *nccl_reduce_scatter(struct hyla_comm *comm, const void *send, void *recv,
                                                     size_t count, enum hyla_comm_dtype dtype,
                                                     enum hyla_reduce_op op) {
    struct nccl_context *ctx = context_of(comm);
    begin_operation(ctx);
    nccl_check(ncclReduceScatter(send, recv, count, nccl_datatype(dtype), nccl_op(op), ctx->nccl, ctx->comm_stream),
               "ncclReduceScatter", ctx->nccl);
    return finish_operation(ctx, "ncclReduceScatter");
}

static struct hyla_comm_request *nccl_all_reduce(struct hyla_comm *comm, const void *send, void *recv, size_t count,
                                                 enum hyla_comm_dtype dtype, enum hyla_reduce_op op) {
    struct nccl_context *ctx = context_of(comm);
    begin_operation(ctx);
    nccl_check(ncclAllReduce(send, recv, count, nccl_datatype(dtype), nccl_op(op), ctx->nccl, ctx->comm_stream),
               "ncclAllReduce", ctx->nccl);
    return finish_operation(ctx, "ncclAllReduce");
}

static struct hyla_comm_request *nccl_broadcast(struct hyla_comm *comm, void *buffer, size_t bytes, int root) {
    struct nccl_context *ctx = context_of(comm);
    begin_operation(ctx);
    nccl_check(ncclBroadcast(buffer, buffer, bytes, ncclUint8, root, ctx->nccl, ctx->comm_stream), "ncclBroadcast",
               ctx->nccl);
    return finish_operation(ctx, "ncclBroadcast");
}

/* NCCL has no barrier: a one-value all-reduce completes only when every rank joined. */
static struct hyla_comm_request *nccl_barrier(struct hyla_comm *comm) {
    struct nccl_context *ctx = context_of(comm);
    begin_operation(ctx);
    nccl_check(ncclAllReduce(ctx->barrier_scratch, ctx->barrier_scratch, 1, ncclFloat32, ncclSum, ctx->nccl,
                             ctx->comm_stream),
               "ncclAllReduce (barrier)", ctx->nccl);
    return finish_operation(ctx, "ncclAllReduce (barrier)");
}

/* NCCL reports some failures (a peer's network error) only asynchronously. */
static void check_async_error(struct nccl_context *ctx, const char *call) {
    ncclResult_t async = ncclSuccess;
    nccl_check(ncclCommGetAsyncError(ctx->nccl, &async), "ncclCommGetAsyncError", ctx->nccl);
    nccl_check(async, call, ctx->nccl);
}

static void free_request(struct nccl_request *r) {
    cuda_check(cudaEventDestroy(r->done), "cudaEventDestroy (collective request)");
    free(r);
}

static void nccl_wait(struct hyla_comm_request *request) {
    struct nccl_request *r = (struct nccl_request *)request;
    cuda_check(cudaEventSynchronize(r->done), r->call);
    check_async_error(context_of(request->comm), r->call);
    free_request(r);
}

static int nccl_test(struct hyla_comm_request *request) {
    struct nccl_request *r = (struct nccl_request *)request;
    cudaError_t rc = cudaEventQuery(r->done);
    if (rc == cudaErrorNotReady) return 0;
    cuda_check(rc, r->call);
    return 1;
}

/* The event stays valid for the stream's wait after we destroy our handle: CUDA releases
 * it once the device is done with it. */
static void nccl_wait_on_stream(struct hyla_comm_request *request, void *cuda_stream) {
    struct nccl_request *r = (struct nccl_request *)request;
    cuda_check(cudaStreamWaitEvent((cudaStream_t)cuda_stream, r->done, 0), "cudaStreamWaitEvent (collective consumer)");
    free_request(r);
}

static void nccl_set_compute_stream(struct hyla_comm *comm, void *cuda_stream) {
    context_of(comm)->compute_stream = (cudaStream_t)cuda_stream;
}

static void nccl_destroy(struct hyla_comm *comm) {
    struct nccl_context *ctx = context_of(comm);
    cuda_check(cudaStreamSynchronize(ctx->comm_stream), "cudaStreamSynchronize (communication stream)");
    nccl_check(ncclCommDestroy(ctx->nccl), "ncclCommDestroy", NULL);
    cuda_check(cudaFree(ctx->barrier_scratch), "cudaFree (barrier scratch)");
    cuda_check(cudaEventDestroy(ctx->inputs_ready), "cudaEventDestroy");
    cuda_check(cudaStreamDestroy(ctx->comm_stream), "cudaStreamDestroy (communication stream)");
    hyla_mpi_check(MPI_Comm_free(&ctx->mpi), "MPI_Comm_free (NCCL bootstrap communicator)");
    free(ctx);
}

static const struct hyla_comm_ops nccl_ops = {
    .name = "nccl",
    .memory = HYLA_COMM_DEVICE_MEMORY,
    .all_gather = nccl_all_gather,
    .reduce_scatter = nccl_reduce_scatter,
    .all_reduce = nccl_all_reduce,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .wait = nccl_wait,
    .test = nccl_test,
    .wait_on_stream = nccl_wait_on_stream,
    .set_compute_stream = nccl_set_compute_stream,
    .destroy = nccl_destroy,
};

int hyla_comm_nccl_available(void) { return 1; }

static void select_device(int cuda_device) {
    int devices = 0;
    cuda_check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    if (cuda_device < 0 || cuda_device >= devices)
        hyla_die("cannot create NCCL collectives on CUDA device %d: this process sees %d device(s); check "
                 "CUDA_VISIBLE_DEVICES and the rank-to-GPU mapping",
                 cuda_device, devices);
    cuda_check(cudaSetDevice(cuda_device), "cudaSetDevice");
}

/* The group's rank 0 creates the id; MPI carries it to the others. */
static ncclUniqueId bootstrap_id(MPI_Comm mpi, int rank) {
    ncclUniqueId id;
    if (rank == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId", NULL);
    hyla_mpi_check(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, mpi), "MPI_Bcast (NCCL unique id)");
    return id;
}

struct hyla_comm *hyla_comm_create_nccl(MPI_Comm group, int cuda_device) {
    struct nccl_context *ctx = hyla_calloc(1, sizeof *ctx);
    struct hyla_comm *comm = hyla_calloc(1, sizeof *comm);
    comm->ops = &nccl_ops;
    comm->context = ctx;
    ctx->mpi = hyla_comm_duplicate_group(group, "NCCL");
    hyla_mpi_check(MPI_Comm_rank(ctx->mpi, &comm->rank), "MPI_Comm_rank");
    hyla_mpi_check(MPI_Comm_size(ctx->mpi, &comm->size), "MPI_Comm_size");

    select_device(cuda_device);
    ctx->device = cuda_device;
    ncclUniqueId id = bootstrap_id(ctx->mpi, comm->rank);
    nccl_check(ncclCommInitRank(&ctx->nccl, comm->size, id, comm->rank), "ncclCommInitRank", NULL);

    /* Non-blocking: the communication stream must not serialise with the legacy default
     * stream, or compute there could never overlap with it. */
    cuda_check(cudaStreamCreateWithFlags(&ctx->comm_stream, cudaStreamNonBlocking),
               "cudaStreamCreateWithFlags (communication stream)");
    cuda_check(cudaEventCreateWithFlags(&ctx->inputs_ready, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    cuda_check(cudaMalloc((void **)&ctx->barrier_scratch, sizeof(float)), "cudaMalloc (barrier scratch)");
    cuda_check(cudaMemset(ctx->barrier_scratch, 0, sizeof(float)), "cudaMemset (barrier scratch)");
    ctx->compute_stream = NULL;
    return comm;
}
