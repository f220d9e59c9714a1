/* The processes of a job (DESIGN.md §1). Under mpirun, rank 0 is the coordinator and ranks
 * 1..W are workers, split into groups; a group trains one run at a time, FSDP-sharded, and
 * its leader reports to the coordinator. A process started without mpirun is both. */
#ifndef HYLA_ROLES_H
#define HYLA_ROLES_H

#include <mpi.h>
#include <stdio.h>

#include "common/run_config.h"
#include "protocol.h"
#include "sharding/collectives.h"
#include "worker/train.h"

/* 1 when this process was started by mpirun/srun (so MPI_Init must be called). */
int hyla_mpi_launched(void);
/* MPI_Init when launched; world rank and size (0 and 1 when not). */
void hyla_mpi_start(int *argc, char ***argv, int *world_rank, int *world_size);
void hyla_mpi_stop(void);

/* GPU workers: every process of the job calls this (collective over MPI_COMM_WORLD); a
 * worker then uses GPU (its index among the workers on its host) % (GPUs it sees), so W
 * workers on a host with W GPUs get one each. Returns 0, or 1 with a message. A process
 * not under mpirun keeps GPU 0. */
int hyla_pick_worker_gpu(int is_worker);

#define HYLA_MAX_LTE_STATS 1024

struct run_outcome {
    int failed;               /* 0 finished, 1 failed */
    char error[1024];
    int evaluated;
    struct eval_result eval;
    size_t parameters;
    /* LTE controller state at the end (rank 0 of the group): [n_lte * heads] */
    int n_lte, lte_heads;
    int lte_layers[HYLA_MAX_LTE_LAYERS];       /* model layer index of each LTE layer */
    float lambda[HYLA_MAX_LTE_STATS], kept[HYLA_MAX_LTE_STATS];
};

/* Where a run's reports go: every report is a protocol message (protocol.h). A group
 * leader under mpirun sends it to the coordinator; a process that is both roles hands it
 * to its own coordinator logic directly. Non-leaders report nothing. */
struct run_reporter {
    void (*emit)(void *ctx, int type, int run_id, int step, const double *values, uint32_t n_values,
                 const char *text);
    void *ctx;
    int run_id;
    int head_stats_every;     /* HEAD_STATS every this many steps (0 = never) */
};

/* A reporter that sends to rank `dest` of `comm` (ctx must stay valid: a struct mpi_sink). */
struct mpi_sink {
    MPI_Comm comm;
    int dest;
};
void mpi_sink_emit(void *ctx, int type, int run_id, int step, const double *values, uint32_t n_values,
                   const char *text);

/* The coordinator's view of one run, built from its messages. */
struct run_follower {
    FILE *out;                /* progress lines (NULL = quiet) */
    FILE *metrics;            /* every step's loss in full precision, "step loss" (NULL = none) */
    int log_every;
    int ended;
    struct run_outcome *outcome;
    /* optional recording (the ledger), called for every message after printing */
    void (*record)(void *ctx, const struct hyla_msg *msg);
    void *record_ctx;
};
/* Handle one message of a run: print, record, and on RUN_END fill the outcome. */
void run_follower_handle(struct run_follower *f, const struct hyla_msg *msg);
/* A reporter emit that feeds a run_follower in this process (ctx = the follower). */
void local_follower_emit(void *ctx, int type, int run_id, int step, const double *values, uint32_t n_values,
                         const char *text);

/* Train one run on this rank of `group` (NULL = alone), report as `rep` says (only the
 * group's rank 0 reports), evaluate and write --out on rank 0. Collective over the group.
 * With checkpoint.dir set: save every checkpoint.interval steps and at the end; with
 * resume, continue from the newest valid checkpoint there. */
void worker_run(const struct hyla_run_config *cfg, const struct hyla_backend *be, struct hyla_comm *group,
                struct run_reporter *rep, const char *out_dir, int resume, struct run_outcome *outcome);

/* Coordinator side of one run: receive the leader's messages until the run ends. */
void coordinator_follow_run(MPI_Comm world, int leader, struct run_follower *f);

/* Print one progress line when the step is due (every log_every, the first and the last). */
void print_step(FILE *out, const struct step_report *r, int log_every);
/* The memory report line. */
void print_memory(FILE *out, int group_size, double sharded, double unsharded, double gathered_peak);

#endif
