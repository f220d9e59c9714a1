/* The NCCL collectives backend (device memory) against the MPI backend (host memory) on
 * the same inputs: every operation blocking, as start + wait, and as start + a device-side
 * wait on a consumer stream; inputs written on a compute stream just before a start (the
 * start must order itself after them). One GPU per rank of a node; with fewer GPUs the
 * test says SKIP and exits 77 (ctest: skipped). */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpi/mpi_checks.h"
#include "sharding/collectives.h"

static void cuda_check(cudaError_t rc, const char *call) {
    if (rc != cudaSuccess) hyla_die("%s failed: %s", call, cudaGetErrorString(rc));
}

static void *device_copy_of(const void *host, size_t bytes) {
    void *device = NULL;
    cuda_check(cudaMalloc(&device, bytes ? bytes : 1), "cudaMalloc");
    if (bytes) cuda_check(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
    return device;
}

static void copy_to_host(void *host, const void *device, size_t bytes) {
    if (bytes) cuda_check(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
}

static float input_value(int rank, size_t i) {
    return -1.0f + 2.0f * hyla_rng_uniform(hyla_rng_key(99, HYLA_RNG_TEST, 0, (uint32_t)rank), i);
}

struct comms {
    struct hyla_comm *nccl, *host;
    int rank, size;
};

enum mode { MODE_BLOCKING, MODE_START_WAIT, MODE_STREAM_WAIT };
static const char *const mode_names[] = {"blocking", "start/wait", "start/wait on stream"};

static void finish(struct hyla_comm_request *r, enum mode mode) {
    if (mode == MODE_STREAM_WAIT) {
        hyla_comm_wait_on_stream(r, NULL);
        cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    } else {
        hyla_comm_wait(r);
    }
}

static void test_all_gather(const struct comms *c, enum mode mode) {
    size_t count = 1003, total = count * (size_t)c->size;
    float *send = alloc_f32(count), *want = alloc_f32(total), *got = alloc_f32(total);
    for (size_t i = 0; i < count; i++) send[i] = input_value(c->rank, i);
    hyla_comm_all_gather(c->host, send, want, count);
    float *d_send = device_copy_of(send, count * sizeof *send), *d_recv = device_copy_of(got, total * sizeof *got);
    if (mode == MODE_BLOCKING)
        hyla_comm_all_gather(c->nccl, d_send, d_recv, count);
    else
        finish(hyla_comm_all_gather_start(c->nccl, d_send, d_recv, count), mode);
    copy_to_host(got, d_recv, total * sizeof *got);
    char label[120];
    snprintf(label, sizeof label, "nccl all_gather (%s) == mpi all_gather", mode_names[mode]);
    mpi_check_bitwise_equal(label, got, want, total * sizeof *got);
    cuda_check(cudaFree(d_send), "cudaFree");
    cuda_check(cudaFree(d_recv), "cudaFree");
    free(send);
    free(want);
    free(got);
}

static void test_all_gather_bf16(const struct comms *c) {
    size_t count = 1001, total = count * (size_t)c->size;
    uint16_t *send = hyla_calloc(count, sizeof *send), *want = hyla_calloc(total, sizeof *want);
    uint16_t *got = hyla_calloc(total, sizeof *got);
    for (size_t i = 0; i < count; i++) send[i] = (uint16_t)(c->rank * 40503u + i * 2654435761u);
    hyla_comm_all_gather_bf16(c->host, send, want, count);
    uint16_t *d_recv = device_copy_of(got, total * sizeof *got);
    uint16_t *d_own = d_recv + (size_t)c->rank * count; /* in place */
    cuda_check(cudaMemcpy(d_own, send, count * sizeof *send, cudaMemcpyHostToDevice), "cudaMemcpy to device");
    hyla_comm_all_gather_bf16(c->nccl, d_own, d_recv, count);
    copy_to_host(got, d_recv, total * sizeof *got);
    mpi_check_bitwise_equal("nccl all_gather_bf16 in place == mpi", got, want, total * sizeof *got);
    cuda_check(cudaFree(d_recv), "cudaFree");
    free(send);
    free(want);
    free(got);
}

static void test_reductions(const struct comms *c, enum mode mode, enum hyla_reduce_op op) {
    size_t count = 333, total = count * (size_t)c->size;
    float *send = alloc_f32(total), *want = alloc_f32(total), *got = alloc_f32(total);
    for (size_t i = 0; i < total; i++) send[i] = input_value(c->rank, i);
    float *d_send = device_copy_of(send, total * sizeof *send), *d_recv = device_copy_of(got, total * sizeof *got);
    const char *op_name = op == HYLA_REDUCE_SUM ? "sum" : op == HYLA_REDUCE_MEAN ? "mean" : "max";
    char label[120];

    hyla_comm_reduce_scatter(c->host, send, want, count, op);
    if (mode == MODE_BLOCKING)
        hyla_comm_reduce_scatter(c->nccl, d_send, d_recv, count, op);
    else
        finish(hyla_comm_reduce_scatter_start(c->nccl, d_send, d_recv, count, op), mode);
    copy_to_host(got, d_recv, count * sizeof *got);
    snprintf(label, sizeof label, "nccl reduce_scatter %s (%s) vs mpi", op_name, mode_names[mode]);
    mpi_check_le(label, rel_err_f32(got, want, count), op == HYLA_REDUCE_MAX ? 0.0 : 1e-6);

    hyla_comm_all_reduce_f32(c->host, send, want, total, op);
    if (mode == MODE_BLOCKING)
        hyla_comm_all_reduce_f32(c->nccl, d_send, d_recv, total, op);
    else
        finish(hyla_comm_all_reduce_f32_start(c->nccl, d_send, d_recv, total, op), mode);
    copy_to_host(got, d_recv, total * sizeof *got);
    snprintf(label, sizeof label, "nccl all_reduce_f32 %s (%s) vs mpi", op_name, mode_names[mode]);
    mpi_check_le(label, rel_err_f32(got, want, total), op == HYLA_REDUCE_MAX ? 0.0 : 1e-6);

    double send64[3] = {input_value(c->rank, 0), input_value(c->rank, 1) * 1e10, -1e-10}, want64[3], got64[3];
    double *d64 = device_copy_of(send64, sizeof send64);
    hyla_comm_all_reduce_f64(c->host, send64, want64, 3, op);
    hyla_comm_all_reduce_f64(c->nccl, d64, d64, 3, op); /* in place */
    copy_to_host(got64, d64, sizeof got64);
    snprintf(label, sizeof label, "nccl all_reduce_f64 %s in place vs mpi", op_name);
    mpi_check_le(label, rel_err_f64(got64, want64, 3), op == HYLA_REDUCE_MAX ? 0.0 : 1e-14);

    cuda_check(cudaFree(d64), "cudaFree");
    cuda_check(cudaFree(d_send), "cudaFree");
    cuda_check(cudaFree(d_recv), "cudaFree");
    free(send);
    free(want);
    free(got);
}

static void test_broadcast_and_barrier(const struct comms *c) {
    unsigned char host[37], got[37];
    for (size_t i = 0; i < sizeof host; i++) host[i] = c->rank == c->size - 1 ? (unsigned char)(i * 7 + 3) : 0;
    unsigned char *d = device_copy_of(host, sizeof host);
    hyla_comm_wait(hyla_comm_broadcast_start(c->nccl, d, sizeof host, c->size - 1));
    hyla_comm_broadcast(c->host, host, sizeof host, c->size - 1);
    copy_to_host(got, d, sizeof got);
    mpi_check_bitwise_equal("nccl broadcast from the last rank == mpi broadcast", got, host, sizeof host);
    cuda_check(cudaFree(d), "cudaFree");
    hyla_comm_barrier(c->nccl);
    hyla_comm_wait(hyla_comm_barrier_start(c->nccl));
    mpi_check_true("nccl barrier, blocking and start/wait, returns", 1);
}

/* Inputs copied on a compute stream right before the start: the collective must see them. */
static void test_compute_stream_ordering(const struct comms *c) {
    size_t count = 1 << 20;
    float *send = alloc_f32(count), *want = alloc_f32(count), *got = alloc_f32(count);
    for (size_t i = 0; i < count; i++) send[i] = input_value(c->rank, i);
    hyla_comm_all_reduce_f32(c->host, send, want, count, HYLA_REDUCE_SUM);
    cudaStream_t compute;
    cuda_check(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    float *d_send = device_copy_of(got, count * sizeof *got), *d_recv = device_copy_of(got, count * sizeof *got);
    cuda_check(cudaMemcpyAsync(d_send, send, count * sizeof *send, cudaMemcpyHostToDevice, compute), "cudaMemcpyAsync");
    hyla_comm_set_compute_stream(c->nccl, compute);
    struct hyla_comm_request *r = hyla_comm_all_reduce_f32_start(c->nccl, d_send, d_recv, count, HYLA_REDUCE_SUM);
    hyla_comm_wait_on_stream(r, compute);
    cuda_check(cudaMemcpyAsync(got, d_recv, count * sizeof *got, cudaMemcpyDeviceToHost, compute), "cudaMemcpyAsync");
    cuda_check(cudaStreamSynchronize(compute), "cudaStreamSynchronize");
    hyla_comm_set_compute_stream(c->nccl, NULL);
    mpi_check_le("nccl all_reduce ordered after a compute-stream copy, consumed on that stream",
                 rel_err_f32(got, want, count), 1e-6);
    cuda_check(cudaFree(d_send), "cudaFree");
    cuda_check(cudaFree(d_recv), "cudaFree");
    cuda_check(cudaStreamDestroy(compute), "cudaStreamDestroy");
    free(send);
    free(want);
    free(got);
}

/* One GPU per rank of this node, or skip (on every rank alike). */
static int local_device(void) {
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank(), MPI_INFO_NULL, &node);
    int local_rank = 0, local_size = 1, devices = 0;
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_size(node, &local_size);
    MPI_Comm_free(&node);
    if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0; /* no driver: no device */
    int mine = devices >= local_size, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (all) return local_rank;
    if (world_rank() == 0) {
        if (devices == 0)
            printf("SKIP: no CUDA device\n");
        else
            printf("SKIP: %d CUDA device(s) for %d ranks on a node\n", devices, local_size);
    }
    return -1;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int device = local_device();
    if (device < 0) {
        MPI_Finalize();
        return 77;
    }
    struct comms c = {.nccl = hyla_comm_create_nccl(MPI_COMM_WORLD, device),
                      .host = hyla_comm_create_mpi(MPI_COMM_WORLD)};
    c.rank = hyla_comm_rank(c.nccl);
    c.size = hyla_comm_size(c.nccl);
    mpi_check_true("nccl comm: backend nccl, device memory, same rank and size as mpi",
                   strcmp(hyla_comm_backend_name(c.nccl), "nccl") == 0 &&
                       hyla_comm_memory(c.nccl) == HYLA_COMM_DEVICE_MEMORY && c.rank == hyla_comm_rank(c.host) &&
                       c.size == hyla_comm_size(c.host));
    for (int mode = MODE_BLOCKING; mode <= MODE_STREAM_WAIT; mode++) {
        test_all_gather(&c, (enum mode)mode);
        test_reductions(&c, (enum mode)mode, HYLA_REDUCE_SUM);
        test_reductions(&c, (enum mode)mode, HYLA_REDUCE_MEAN);
        test_reductions(&c, (enum mode)mode, HYLA_REDUCE_MAX);
    }
    test_all_gather_bf16(&c);
    test_broadcast_and_barrier(&c);
    test_compute_stream_ordering(&c);
    hyla_comm_destroy(c.nccl);
    hyla_comm_destroy(c.host);
    int status = mpi_test_finish();
    MPI_Finalize();
    return status;
}
