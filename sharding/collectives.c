/* The backend-independent half of the collectives: argument checks, request
 * accounting, blocking = start + wait, and the helpers both backends share. */
#include "collectives_backend.h"

#include <stdint.h>

#include "common/hyla_error.h"

size_t hyla_comm_dtype_size(enum hyla_comm_dtype dtype) {
    switch (dtype) {
    case HYLA_COMM_F32: return sizeof(float);
    case HYLA_COMM_F64: return sizeof(double);
    case HYLA_COMM_BF16: return sizeof(uint16_t);
    case HYLA_COMM_BYTE: return 1;
    }
    hyla_die("internal error: unknown collective data type %d; please report this bug", (int)dtype);
}

void hyla_mpi_check(int rc, const char *call) {
    if (rc == MPI_SUCCESS) return;
    char message[MPI_MAX_ERROR_STRING + 1];
    int length = 0;
    if (MPI_Error_string(rc, message, &length) != MPI_SUCCESS) length = 0;
    message[length] = '\0';
    hyla_die("%s failed: %s (MPI error %d); the worker group cannot continue", call,
             length ? message : "unknown MPI error", rc);
}

MPI_Comm hyla_comm_duplicate_group(MPI_Comm group, const char *backend) {
    int initialized = 0;
    hyla_mpi_check(MPI_Initialized(&initialized), "MPI_Initialized");
    if (!initialized)
        hyla_die("cannot create the %s collectives: MPI is not initialised; call MPI_Init first", backend);
    if (group == MPI_COMM_NULL)
        hyla_die("cannot create the %s collectives on MPI_COMM_NULL; pass the group's communicator", backend);
    MPI_Comm dup;
    hyla_mpi_check(MPI_Comm_dup(group, &dup), "MPI_Comm_dup (collectives communicator)");
    hyla_mpi_check(MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    return dup;
}

/* ---- queries ------------------------------------------------------------------------ */

int hyla_comm_rank(const struct hyla_comm *comm) { return comm->rank; }
int hyla_comm_size(const struct hyla_comm *comm) { return comm->size; }
const char *hyla_comm_backend_name(const struct hyla_comm *comm) { return comm->ops->name; }
enum hyla_comm_memory hyla_comm_memory(const struct hyla_comm *comm) { return comm->ops->memory; }

void hyla_comm_set_compute_stream(struct hyla_comm *comm, void *cuda_stream) {
    comm->ops->set_compute_stream(comm, cuda_stream);
}

void hyla_comm_destroy(struct hyla_comm *comm) {
    if (!comm) return;
    if (comm->outstanding != 0)
        hyla_die("hyla_comm_destroy (%s): %ld request(s) were never waited for; call hyla_comm_wait on "
                 "every request first",
                 comm->ops->name, comm->outstanding);
    comm->ops->destroy(comm);
    free(comm);
}

#ifndef HYLA_WITH_NCCL
int hyla_comm_nccl_available(void) { return 0; }

struct hyla_comm *hyla_comm_create_nccl(MPI_Comm group, int cuda_device) {
    (void)group;
    hyla_die("cannot create NCCL collectives for CUDA device %d: hyla was built without CUDA; "
             "rebuild with -DHYLA_CUDA=ON or use the MPI collectives",
             cuda_device);
}
#endif

/* ---- argument checks ---------------------------------------------------------------- */

static void require_buffer(const struct hyla_comm *comm, const char *op, const char *which, const void *ptr,
                           size_t count) {
    if (count > 0 && !ptr) hyla_die("%s (%s): %s buffer is NULL for %zu values", op, comm->ops->name, which, count);
}

/* Whether [a, a+a_bytes) and [b, b+b_bytes) share a byte (addresses compared as integers:
 * the two buffers need not belong to one object). */
static int ranges_overlap(const void *a, size_t a_bytes, const void *b, size_t b_bytes) {
    uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    return a_bytes > 0 && b_bytes > 0 && a0 < b0 + b_bytes && b0 < a0 + a_bytes;
}

static void require_op(const struct hyla_comm *comm, const char *name, enum hyla_reduce_op op) {
    if (op != HYLA_REDUCE_SUM && op != HYLA_REDUCE_MEAN && op != HYLA_REDUCE_MAX)
        hyla_die("%s (%s): unknown reduction %d; use HYLA_REDUCE_SUM, _MEAN or _MAX", name, comm->ops->name, (int)op);
}

static struct hyla_comm_request *started(struct hyla_comm *comm, struct hyla_comm_request *request) {
    request->comm = comm;
    comm->outstanding++;
    return request;
}

/* ---- non-blocking operations ---------------------------------------------------------- */

static struct hyla_comm_request *all_gather_start(struct hyla_comm *comm, const void *send, void *recv,
                                                  size_t count, enum hyla_comm_dtype dtype) {
    const char *name = dtype == HYLA_COMM_BF16 ? "all_gather_bf16" : "all_gather";
    require_buffer(comm, name, "send", send, count);
    require_buffer(comm, name, "receive", recv, count);
    size_t block = count * hyla_comm_dtype_size(dtype);
    int in_place = count > 0 && send == (const char *)recv + (size_t)comm->rank * block;
    if (!in_place && ranges_overlap(send, block, recv, block * (size_t)comm->size))
        hyla_die("%s (%s): send and receive buffers overlap; use separate buffers or send = recv + rank*count",
                 name, comm->ops->name);
    return started(comm, comm->ops->all_gather(comm, send, recv, count, dtype));
}

struct hyla_comm_request *hyla_comm_all_gather_start(struct hyla_comm *comm, const float *send, float *recv,
                                                     size_t count) {
    return all_gather_start(comm, send, recv, count, HYLA_COMM_F32);
}

struct hyla_comm_request *hyla_comm_all_gather_bf16_start(struct hyla_comm *comm, const uint16_t *send,
                                                          uint16_t *recv, size_t count) {
    return all_gather_start(comm, send, recv, count, HYLA_COMM_BF16);
}

struct hyla_comm_request *hyla_comm_reduce_scatter_start(struct hyla_comm *comm, const float *send, float *recv,
                                                         size_t count, enum hyla_reduce_op op) {
    const char *name = "reduce_scatter";
    require_op(comm, name, op);
    require_buffer(comm, name, "send", send, count);
    require_buffer(comm, name, "receive", recv, count);
    if (ranges_overlap(send, count * (size_t)comm->size * sizeof *send, recv, count * sizeof *recv))
        hyla_die("%s (%s): send and receive buffers overlap; use separate buffers", name, comm->ops->name);
    return started(comm, comm->ops->reduce_scatter(comm, send, recv, count, HYLA_COMM_F32, op));
}

static struct hyla_comm_request *all_reduce_start(struct hyla_comm *comm, const void *send, void *recv,
                                                  size_t count, enum hyla_comm_dtype dtype, enum hyla_reduce_op op) {
    const char *name = dtype == HYLA_COMM_F32 ? "all_reduce_f32" : "all_reduce_f64";
    require_op(comm, name, op);
    require_buffer(comm, name, "send", send, count);
    require_buffer(comm, name, "receive", recv, count);
    size_t bytes = count * hyla_comm_dtype_size(dtype);
    if (send != recv && ranges_overlap(send, bytes, recv, bytes))
        hyla_die("%s (%s): send and receive buffers overlap; use separate buffers or send == recv", name,
                 comm->ops->name);
    return started(comm, comm->ops->all_reduce(comm, send, recv, count, dtype, op));
}

struct hyla_comm_request *hyla_comm_all_reduce_f32_start(struct hyla_comm *comm, const float *send, float *recv,
                                                         size_t count, enum hyla_reduce_op op) {
    return all_reduce_start(comm, send, recv, count, HYLA_COMM_F32, op);
}

struct hyla_comm_request *hyla_comm_all_reduce_f64_start(struct hyla_comm *comm, const double *send,
                                                         double *recv, size_t count, enum hyla_reduce_op op) {
    return all_reduce_start(comm, send, recv, count, HYLA_COMM_F64, op);
}

struct hyla_comm_request *hyla_comm_broadcast_start(struct hyla_comm *comm, void *buffer, size_t bytes, int root) {
    require_buffer(comm, "broadcast", "the", buffer, bytes);
    if (root < 0 || root >= comm->size)
        hyla_die("broadcast (%s): root %d is not a rank of this group of %d", comm->ops->name, root, comm->size);
    return started(comm, comm->ops->broadcast(comm, buffer, bytes, root));
}

struct hyla_comm_request *hyla_comm_barrier_start(struct hyla_comm *comm) {
    return started(comm, comm->ops->barrier(comm));
}

/* ---- completion ------------------------------------------------------------------------- */

void hyla_comm_wait(struct hyla_comm_request *request) {
    if (!request) return;
    struct hyla_comm *comm = request->comm;
    comm->ops->wait(request);
    comm->outstanding--;
}

int hyla_comm_test(struct hyla_comm_request *request) {
    if (!request) return 1;
    return request->comm->ops->test(request);
}

void hyla_comm_wait_on_stream(struct hyla_comm_request *request, void *cuda_stream) {
    if (!request) return;
    struct hyla_comm *comm = request->comm;
    comm->ops->wait_on_stream(request, cuda_stream);
    comm->outstanding--;
}

/* ---- blocking operations ------------------------------------------------------------------ */

void hyla_comm_all_gather(struct hyla_comm *comm, const float *send, float *recv, size_t count) {
    hyla_comm_wait(hyla_comm_all_gather_start(comm, send, recv, count));
}

void hyla_comm_all_gather_bf16(struct hyla_comm *comm, const uint16_t *send, uint16_t *recv, size_t count) {
    hyla_comm_wait(hyla_comm_all_gather_bf16_start(comm, send, recv, count));
}

void hyla_comm_reduce_scatter(struct hyla_comm *comm, const float *send, float *recv, size_t count,
                              enum hyla_reduce_op op) {
    hyla_comm_wait(hyla_comm_reduce_scatter_start(comm, send, recv, count, op));
}

void hyla_comm_all_reduce_f32(struct hyla_comm *comm, const float *send, float *recv, size_t count,
                              enum hyla_reduce_op op) {
    hyla_comm_wait(hyla_comm_all_reduce_f32_start(comm, send, recv, count, op));
}

void hyla_comm_all_reduce_f64(struct hyla_comm *comm, const double *send, double *recv, size_t count,
                              enum hyla_reduce_op op) {
    hyla_comm_wait(hyla_comm_all_reduce_f64_start(comm, send, recv, count, op));
}

void hyla_comm_broadcast(struct hyla_comm *comm, void *buffer, size_t bytes, int root) {
    hyla_comm_wait(hyla_comm_broadcast_start(comm, buffer, bytes, root));
}

void hyla_comm_barrier(struct hyla_comm *comm) { hyla_comm_wait(hyla_comm_barrier_start(comm)); }
