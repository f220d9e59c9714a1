/* Collectives over one worker group: one interface, two backends.
 *
 *   MPI  (hyla_comm_create_mpi):  buffers in host memory; MPI_I* collectives.
 *   NCCL (hyla_comm_create_nccl): buffers in device memory; NCCL on a dedicated stream.
 *
 * Every buffer handed to a comm lives in that comm's memory (hyla_comm_memory()). A
 * group that trains on GPUs and also needs host-side scalars (the grad-norm sum, a
 * `num_kept` count) creates an MPI comm over the same group next to the NCCL one.
 *
 * Collective rules (as in MPI and NCCL): every rank of the group calls the same
 * operations with the same counts, in the same order. Failures of MPI/NCCL/CUDA calls
 * end the process with a message that names the call and the cause (the launcher then
 * ends the job); misuse (NULL buffers, overlapping buffers, requests never waited for)
 * ends it with a message that names the mistake.
 *
 * Requests: `..._start` begins an operation and returns a request; the buffers belong to
 * the operation until hyla_comm_wait(request) returns, which also frees the request.
 * Every request must be waited for, exactly once, before hyla_comm_destroy. The blocking
 * functions are `_start` + wait. See docs/sharding.md for each backend's progress and
 * overlap semantics and for the determinism assumptions. */
#ifndef HYLA_COLLECTIVES_H
#define HYLA_COLLECTIVES_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

enum hyla_reduce_op {
    HYLA_REDUCE_SUM,
    HYLA_REDUCE_MEAN, /* SUM, then x (1/size) on the result (NCCL: ncclAvg, see docs) */
    HYLA_REDUCE_MAX,
};

enum hyla_comm_memory {
    HYLA_COMM_HOST_MEMORY,
    HYLA_COMM_DEVICE_MEMORY,
};

struct hyla_comm;
struct hyla_comm_request;

/* ---- creation --------------------------------------------------------------------- */

/* Collective over `group` (MPI must be initialised). The comm works on a duplicate of
 * `group`, so its traffic never matches other messages on `group`. */
struct hyla_comm *hyla_comm_create_mpi(MPI_Comm group);

/* Collective over `group`: makes cuda_device current, lets the group's rank 0 create the
 * NCCL unique id and broadcast it over `group`, then ncclCommInitRank. Dies with a
 * message when hyla was built without CUDA (hyla_comm_nccl_available() says which). */
struct hyla_comm *hyla_comm_create_nccl(MPI_Comm group, int cuda_device);
int hyla_comm_nccl_available(void);

/* The MPI communicator an MPI comm works on (its duplicate of the group): to create an
 * NCCL comm over the same group next to it. Dies for other backends. */
MPI_Comm hyla_comm_mpi_handle(const struct hyla_comm *mpi_comm);

/* Collective. Every request must have been waited for. NULL is a no-op. */
void hyla_comm_destroy(struct hyla_comm *comm);

int hyla_comm_rank(const struct hyla_comm *comm);
int hyla_comm_size(const struct hyla_comm *comm);
const char *hyla_comm_backend_name(const struct hyla_comm *comm); /* "mpi" or "nccl" */
enum hyla_comm_memory hyla_comm_memory(const struct hyla_comm *comm);

/* NCCL only (a no-op for MPI): the CUDA stream (a cudaStream_t; NULL = the legacy
 * default stream, the initial setting) whose work produces the inputs of collectives.
 * Each `_start` orders the communication stream after the work enqueued on it so far,
 * with an event, without blocking the host. */
void hyla_comm_set_compute_stream(struct hyla_comm *comm, void *cuda_stream);

/* ---- non-blocking operations ------------------------------------------------------- */

/* recv[k·count + i] = rank k's send[i], for count values per rank (recv holds
 * count·size). In place when send == recv + rank·count. */
struct hyla_comm_request *hyla_comm_all_gather_start(struct hyla_comm *comm, const float *send, float *recv,
                                                     size_t count);
/* The same for bf16 values (raw 16-bit patterns, moved, never reduced): the GPU path
 * gathers bf16 copies of fp32 shards for compute. */
struct hyla_comm_request *hyla_comm_all_gather_bf16_start(struct hyla_comm *comm, const uint16_t *send,
                                                          uint16_t *recv, size_t count);
/* recv[i] = op over ranks k of rank k's send[rank·count + i]: send holds count·size
 * values, recv count; send and recv must not overlap. */
struct hyla_comm_request *hyla_comm_reduce_scatter_start(struct hyla_comm *comm, const float *send, float *recv,
                                                         size_t count, enum hyla_reduce_op op);
/* recv[i] = op over ranks of send[i]. In place when send == recv. */
struct hyla_comm_request *hyla_comm_all_reduce_f32_start(struct hyla_comm *comm, const float *send, float *recv,
                                                         size_t count, enum hyla_reduce_op op);
struct hyla_comm_request *hyla_comm_all_reduce_f64_start(struct hyla_comm *comm, const double *send,
                                                         double *recv, size_t count, enum hyla_reduce_op op);
/* buffer[0..bytes) of rank `root` to every rank's buffer. */
struct hyla_comm_request *hyla_comm_broadcast_start(struct hyla_comm *comm, void *buffer, size_t bytes, int root);
struct hyla_comm_request *hyla_comm_barrier_start(struct hyla_comm *comm);

/* Block until the operation is complete and its results are final, then free the
 * request. NULL is a no-op. */
void hyla_comm_wait(struct hyla_comm_request *request);
/* 1 when the transfer has completed (MPI_Test / cudaEventQuery), 0 otherwise; it never
 * blocks and drives MPI's progress. The request stays valid: hyla_comm_wait it. */
int hyla_comm_test(struct hyla_comm_request *request);
/* NCCL: make work enqueued later on cuda_stream (a cudaStream_t; NULL = legacy default)
 * wait for the operation, without blocking the host, then free the request. MPI: the
 * same as hyla_comm_wait. */
void hyla_comm_wait_on_stream(struct hyla_comm_request *request, void *cuda_stream);

/* ---- blocking operations (start + wait) ------------------------------------------- */

void hyla_comm_all_gather(struct hyla_comm *comm, const float *send, float *recv, size_t count);
void hyla_comm_all_gather_bf16(struct hyla_comm *comm, const uint16_t *send, uint16_t *recv, size_t count);
void hyla_comm_reduce_scatter(struct hyla_comm *comm, const float *send, float *recv, size_t count,
                              enum hyla_reduce_op op);
void hyla_comm_all_reduce_f32(struct hyla_comm *comm, const float *send, float *recv, size_t count,
                              enum hyla_reduce_op op);
void hyla_comm_all_reduce_f64(struct hyla_comm *comm, const double *send, double *recv, size_t count,
                              enum hyla_reduce_op op);
void hyla_comm_broadcast(struct hyla_comm *comm, void *buffer, size_t bytes, int root);
void hyla_comm_barrier(struct hyla_comm *comm);

#endif
