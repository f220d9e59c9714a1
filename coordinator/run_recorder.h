/* The coordinator's recording of runs into the ledger: every protocol message of a run
 * becomes rows (metrics, head stats, events, status). The coordinator is the only writer. */
#ifndef HYLA_RUN_RECORDER_H
#define HYLA_RUN_RECORDER_H

#include <stdint.h>

#include "experiments/ledger.h"
#include "protocol.h"

struct run_recorder {
    struct hyla_ledger *ledger;
    int64_t run_id;            /* the ledger's id of the run being recorded */
    int last_step;
    int failed;                /* a ledger write failed: message in error */
    char error[1024];
};

/* A run_follower record callback (ctx = struct run_recorder). */
void run_recorder_record(void *ctx, const struct hyla_msg *msg);

#endif
