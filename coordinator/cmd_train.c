/* `hyla train CONFIG [--set key=value]... [--out DIR] [--quiet]`: one run.
 * Alone: this process trains. Under `mpirun -np 1+W`: rank 0 coordinates and prints, ranks
 * 1..W train the run FSDP-sharded (dist.workers_per_run must be 0 or W: several runs are
 * `hyla run`'s job). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli_args.h"
#include "commands.h"
#include "experiments/config_schema.h"
#include "roles.h"

static int usage(void) {
    fputs("usage: hyla train CONFIG.yaml [--set key=value]... [--out DIR] [--metrics FILE] [--resume]\n"
          "                  [--backend cpu|cuda] [--quiet]\n"
          "       mpirun -np 1+W hyla train CONFIG.yaml ...   (W workers, FSDP-sharded)\n"
          "  --out DIR writes DIR/model.safetensors and DIR/config.yaml\n"
          "  --resume continues from the newest valid checkpoint in checkpoint.dir\n"
          "  --metrics FILE appends every step's loss in full precision (\"step loss\" lines)\n",
          stderr);
    return 2;
}

static void print_outcome(const struct hyla_run_config *cfg, const struct run_outcome *o, const char *out_dir) {
    if (o->failed) {
        fprintf(stderr, "hyla: error: %s\n", o->error);
        return;
    }
    if (o->evaluated)
        printf("held-out %s: accuracy %.4f on %zu answers, loss %.4f\n", hyla_data_task_name(cfg->data.task),
               o->eval.accuracy, o->eval.answers, o->eval.loss);
    if (out_dir) printf("wrote %s/model.safetensors and %s/config.yaml\n", out_dir, out_dir);
}

int cmd_train(int argc, char **argv) {
    const char *config_path = NULL, *out_dir = NULL, *metrics_path = NULL, *backend = "cpu";
    struct cli_overrides ov = {0};
    int quiet = 0, resume = 0;
    for (int i = 1; i < argc; i++) {
        int taken = cli_take_override(argc, argv, &i, &ov);
        if (taken < 0) return 2;
        if (taken) continue;
        if (!strcmp(argv[i], "--out")) {
            if (!(out_dir = cli_option_value(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--metrics")) {
            if (!(metrics_path = cli_option_value(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--backend")) {
            if (!(backend = cli_option_value(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--resume")) {
            resume = 1;
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = 1;
        } else if (cli_take_config(argv[i], &config_path)) {
            return usage();
        }
    }
    if (!config_path) return usage();
    const struct hyla_backend *be = cli_backend(backend);
    if (!be) return strcmp(backend, "cpu") && strcmp(backend, "cuda") ? 2 : 1;

    int world_rank, world_size;
    hyla_mpi_start(&argc, &argv, &world_rank, &world_size);
    if (be->device_memory && world_size > 1 && hyla_pick_worker_gpu(world_rank > 0)) {
        hyla_mpi_stop();
        return 1;
    }
    struct hyla_run_config cfg;
    struct hyla_config_error cerr;
    if (hyla_config_load(&cfg, config_path, ov.items, ov.count, &cerr)) {
        if (world_rank == 0) fprintf(stderr, "hyla: error: %s\n", cerr.message);
        hyla_mpi_stop();
        return 1;
    }
    const int workers = world_size > 1 ? world_size - 1 : 1;
    if (cfg.dist.workers_per_run != 0 && cfg.dist.workers_per_run != workers) {
        if (world_rank == 0)
            fprintf(stderr, "hyla: error: dist.workers_per_run = %d, but this job has %d worker(s); hyla train runs "
                            "one run on all workers: set dist.workers_per_run to 0 or %d, or use `hyla run` to "
                            "train several runs side by side\n", cfg.dist.workers_per_run, workers, workers);
        hyla_mpi_stop();
        return 1;
    }
    /* Check the global batch before anything starts, the same way on every rank. */
    char why[512];
    if (!trainer_accumulation(&cfg.train, workers, why, sizeof why)) {
        if (world_rank == 0) fprintf(stderr, "hyla: error: %s\n", why);
        hyla_mpi_stop();
        return 1;
    }

    struct run_outcome outcome;
    FILE *out = quiet ? NULL : stdout;
    memset(&outcome, 0, sizeof outcome);
    struct run_follower follower = {.out = out, .log_every = cfg.train.log_every, .outcome = &outcome};
    if (metrics_path && world_rank == 0 && !(follower.metrics = fopen(metrics_path, "a"))) {
        fprintf(stderr, "hyla: error: cannot open --metrics file %s: %s\n", metrics_path, strerror(errno));
        hyla_mpi_stop();
        return 1;
    }
    if (world_size == 1) {
        struct run_outcome local;
        struct run_reporter rep = {.emit = local_follower_emit, .ctx = &follower};
        worker_run(&cfg, be, NULL, &rep, out_dir, resume, &local);
        outcome = local; /* the worker's outcome also carries what messages do not */
    } else {
        MPI_Comm group;
        MPI_Comm_split(MPI_COMM_WORLD, world_rank == 0 ? MPI_UNDEFINED : 0, world_rank, &group);
        if (world_rank == 0) {
            coordinator_follow_run(MPI_COMM_WORLD, 1, &follower);
        } else {
            struct hyla_comm *comm = hyla_comm_create_mpi(group);
            struct mpi_sink sink = {.comm = MPI_COMM_WORLD, .dest = 0};
            struct run_reporter rep = {.emit = mpi_sink_emit, .ctx = &sink};
            worker_run(&cfg, be, comm, &rep, out_dir, resume, &outcome);
            hyla_comm_destroy(comm);
            MPI_Comm_free(&group);
        }
    }
    if (world_rank == 0 && (out || outcome.failed)) print_outcome(&cfg, &outcome, outcome.failed ? NULL : out_dir);
    if (follower.metrics) fclose(follower.metrics);
    hyla_mpi_stop();
    return outcome.failed ? 1 : 0;
}
