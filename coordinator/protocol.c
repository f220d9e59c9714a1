#include "protocol.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/hyla_error.h"

static void check_mpi(int rc, const char *call) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    hyla_die("%s failed: %s", call, text);
}

void hyla_msg_send(MPI_Comm comm, int dest, enum hyla_msg_type type, int run_id, int step, const double *values,
                   uint32_t n_values, const char *text) {
    const uint32_t text_bytes = text ? (uint32_t)strlen(text) : 0;
    const size_t bytes = sizeof(struct hyla_msg_header) + n_values * sizeof(double) + text_bytes;
    unsigned char *buf = hyla_malloc(bytes);
    struct hyla_msg_header h = {.magic = HYLA_PROTOCOL_MAGIC, .version = HYLA_PROTOCOL_VERSION, .type = (uint16_t)type,
                                .run_id = run_id, .step = step, .n_values = n_values, .text_bytes = text_bytes};
    memcpy(buf, &h, sizeof h);
    if (n_values) memcpy(buf + sizeof h, values, n_values * sizeof(double));
    if (text_bytes) memcpy(buf + sizeof h + n_values * sizeof(double), text, text_bytes);
    check_mpi(MPI_Send(buf, (int)bytes, MPI_BYTE, dest, (int)type, comm), "MPI_Send");
    free(buf);
}

void hyla_msg_recv(MPI_Comm comm, const MPI_Status *status, struct hyla_msg *msg) {
    int bytes = 0;
    check_mpi(MPI_Get_count(status, MPI_BYTE, &bytes), "MPI_Get_count");
    unsigned char *buf = hyla_malloc((size_t)bytes);
    check_mpi(MPI_Recv(buf, bytes, MPI_BYTE, status->MPI_SOURCE, status->MPI_TAG, comm, MPI_STATUS_IGNORE),
              "MPI_Recv");
    memset(msg, 0, sizeof *msg);
    if ((size_t)bytes < sizeof msg->header) hyla_die("protocol: a message of %d bytes is shorter than its header", bytes);
    memcpy(&msg->header, buf, sizeof msg->header);
    const struct hyla_msg_header *h = &msg->header;
    if (h->magic != HYLA_PROTOCOL_MAGIC || h->version != HYLA_PROTOCOL_VERSION)
        hyla_die("protocol: rank %d speaks version %u (magic %08x), this coordinator version %d; run the same hyla "
                 "build on every rank", status->MPI_SOURCE, h->version, h->magic, HYLA_PROTOCOL_VERSION);
    if ((size_t)bytes != sizeof *h + h->n_values * sizeof(double) + h->text_bytes)
        hyla_die("protocol: message of type %u from rank %d has %d bytes, its header says otherwise", h->type,
                 status->MPI_SOURCE, bytes);
    msg->source = status->MPI_SOURCE;
    msg->values = hyla_calloc(h->n_values + 1, sizeof(double));
    memcpy(msg->values, buf + sizeof *h, h->n_values * sizeof(double));
    msg->text = hyla_calloc(h->text_bytes + 1, 1);
    memcpy(msg->text, buf + sizeof *h + h->n_values * sizeof(double), h->text_bytes);
    free(buf);
}

void hyla_msg_free(struct hyla_msg *msg) {
    free(msg->values);
    free(msg->text);
    memset(msg, 0, sizeof *msg);
}

void hyla_msg_wait(MPI_Comm comm, int source, struct hyla_msg *msg) {
    /* The coordinator shares cores with the workers (mpirun -np 3 on 2 cores): it must not
     * spin. 1 ms between probes costs nothing against steps of tens of milliseconds. */
    const struct timespec nap = {.tv_sec = 0, .tv_nsec = 1000000};
    for (;;) {
        int flag = 0;
        MPI_Status status;
        check_mpi(MPI_Iprobe(source, MPI_ANY_TAG, comm, &flag, &status), "MPI_Iprobe");
        if (flag) {
            hyla_msg_recv(comm, &status, msg);
            return;
        }
        nanosleep(&nap, NULL);
    }
}
