/* The message protocol between a run's group leader (a worker) and the coordinator
 * (docs/protocol.md). Every message is one MPI_BYTE message whose tag is its type:
 * a fixed header, n doubles, then text bytes. The version lets a coordinator refuse a
 * worker of another hyla build instead of misreading it. */
#ifndef HYLA_PROTOCOL_H
#define HYLA_PROTOCOL_H

#include <mpi.h>
#include <stdint.h>

#define HYLA_PROTOCOL_MAGIC 0x414c5948u /* "HYLA" */
#define HYLA_PROTOCOL_VERSION 1

enum hyla_msg_type {
    HYLA_MSG_RUN_START = 1,  /* values: group size, parameters, steps, seq_len, micro_batch, accumulation; text: run name */
    HYLA_MSG_STEP = 2,       /* values: HYLA_STEP_* then kept per LTE layer */
    HYLA_MSG_HEAD_STATS = 3, /* values: n_lte, heads, counted positions, then (kept, λ) per (layer, head) */
    HYLA_MSG_EVENT = 4,      /* values: kind; text: what happened */
    HYLA_MSG_RUN_END = 5,    /* values: status (0 finished, 1 failed), eval accuracy, eval loss, answers; text: error */
    HYLA_MSG_MEMORY = 6,     /* values: sharded bytes, unsharded bytes, gathered peak bytes, group size */
    HYLA_MSG_RUN_ASSIGN = 7, /* coordinator -> group: values: run index (-1 = no more work) */
};

/* Layout of a HYLA_MSG_STEP's values. */
enum {
    HYLA_STEP_LOSS, HYLA_STEP_CE, HYLA_STEP_L1, HYLA_STEP_LR, HYLA_STEP_GRAD_NORM, HYLA_STEP_TOKENS_PER_S,
    HYLA_STEP_ELAPSED, HYLA_STEP_SKIPPED, HYLA_STEP_SKIPPED_TOTAL, HYLA_STEP_LAMBDA_ACTION, HYLA_STEP_STEPS,
    HYLA_STEP_N_LTE, HYLA_STEP_FIXED /* kept[n_lte] follow */
};

/* EVENT kinds. CHECKPOINT's values are [kind, bytes] and its text the folder. */
enum hyla_event_kind {
    HYLA_EVENT_NAN_SKIP = 1, HYLA_EVENT_LAMBDA_UPDATE = 2, HYLA_EVENT_DIVERGED = 3, HYLA_EVENT_CHECKPOINT = 4,
    HYLA_EVENT_CHECKPOINT_FAILED = 5, HYLA_EVENT_RESUMED = 6
};

struct hyla_msg_header {
    uint32_t magic;
    uint16_t version, type;
    int32_t run_id, step;
    uint32_t n_values, text_bytes;
};

struct hyla_msg {
    struct hyla_msg_header header;
    int source;                /* sender's rank in the communicator */
    double *values;            /* header.n_values */
    char *text;                /* header.text_bytes + a terminating 0 */
};

/* Send one message (blocking: messages are small and the coordinator always receives). */
void hyla_msg_send(MPI_Comm comm, int dest, enum hyla_msg_type type, int run_id, int step, const double *values,
                   uint32_t n_values, const char *text);
/* Receive the message that MPI_Iprobe reported (status); dies on a malformed message or a
 * protocol version mismatch. Free with hyla_msg_free. */
void hyla_msg_recv(MPI_Comm comm, const MPI_Status *status, struct hyla_msg *msg);
void hyla_msg_free(struct hyla_msg *msg);

/* Wait for the next message from anyone without spinning: MPI_Iprobe, then a short sleep. */
void hyla_msg_wait(MPI_Comm comm, int source, struct hyla_msg *msg);

#endif
