/* `hyla run BATCH.yaml [--dry-run] [--set key=value]... [--ledger PATH]`: a batch of runs.
 * Under `mpirun -np 1+W`, the coordinator (rank 0) splits the W workers into groups of
 * workers_per_run, hands queued runs to idle groups, and records everything the group
 * leaders report in the ledger. Alone, one process trains the runs one after another.
 * A relaunch skips finished runs and restarts the others (a new attempt). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli_args.h"
#include "commands.h"
#include "experiments/batch.h"
#include "experiments/config_dump.h"
#include "experiments/ledger.h"
#include "roles.h"
#include "run_recorder.h"

static int usage(void) {
    fputs("usage: hyla run BATCH.yaml [--dry-run] [--set key=value]... [--ledger PATH] [--backend cpu|cuda]\n"
          "       mpirun -np 1+W hyla run BATCH.yaml ...   (W workers in groups of workers_per_run)\n",
          stderr);
    return 2;
}

/* The workers' backend (--backend): every run of the batch trains on it. */
static const struct hyla_backend *run_backend;

/* What the coordinator keeps per run of the batch. */
struct batch_run_state {
    int64_t ledger_id;
    int attempt;
    int todo;                  /* queued for this launch */
};

struct scheduler {
    const struct hyla_batch *batch;
    struct hyla_ledger *ledger;
    struct batch_run_state *runs;
    int *queue, queue_len, queue_head;
    int finished, failed, skipped;
};

static int ledger_fail(const struct hyla_ledger_error *err) {
    fprintf(stderr, "hyla: error: ledger: %s\n", err->message);
    return 1;
}

/* Register every run in the ledger; queue those not finished (and not out of attempts). */
static int plan_runs(struct scheduler *s, const char *batch_path) {
    struct hyla_ledger_error err;
    int64_t batch_id;
    if (hyla_ledger_add_batch(s->ledger, s->batch->name, batch_path, &batch_id, &err)) return ledger_fail(&err);
    for (int i = 0; i < s->batch->n_runs; i++) {
        const struct hyla_batch_run *run = &s->batch->runs[i];
        struct batch_run_state *st = &s->runs[i];
        /* the ledger keeps (batch, name): the name without the "<batch>/" prefix */
        const char *name = run->name + strlen(s->batch->name) + 1;
        struct hyla_ledger_run_state found;
        if (hyla_ledger_find_run(s->ledger, batch_id, name, &found, &err)) return ledger_fail(&err);
        char hash[17];
        hyla_config_hash_hex(&run->cfg, hash);
        if (!found.found) {
            char *yaml = hyla_config_dump_yaml(&run->cfg);
            size_t n_params = 0;
            struct hyla_config_param *params = hyla_config_params(&run->cfg, &n_params);
            int rc = hyla_ledger_add_run(s->ledger, batch_id, name, yaml, hash, s->batch->workers_per_run, 1,
                                         &st->ledger_id, &err) ||
                     hyla_ledger_add_config_params(s->ledger, st->ledger_id, params, n_params, &err);
            free(yaml);
            free(params);
            if (rc) return ledger_fail(&err);
            st->attempt = 1;
        } else {
            st->ledger_id = found.id;
            if (strcmp(found.config_hash, hash) != 0)
                fprintf(stderr, "hyla: warning: run %s: the config changed since it was recorded (hash %s, now %s); "
                                "its ledger rows keep the old config\n", run->name, found.config_hash, hash);
            if (found.status == HYLA_RUN_FINISHED) {
                printf("skip %s (finished)\n", run->name);
                s->skipped++;
                continue;
            }
            if (found.status == HYLA_RUN_FAILED && found.attempt >= s->batch->max_attempts) {
                printf("skip %s (failed %d times; raise retry.max_attempts to try again)\n", run->name, found.attempt);
                s->skipped++;
                continue;
            }
            /* unfinished: restart it as a new attempt */
            st->attempt = found.attempt + (found.status == HYLA_RUN_QUEUED ? 0 : 1);
            if (hyla_ledger_begin_attempt(s->ledger, st->ledger_id, st->attempt, s->batch->workers_per_run, &err) ||
                hyla_ledger_add_event(s->ledger, st->ledger_id, -1, "restart", "relaunched: new attempt", &err))
                return ledger_fail(&err);
        }
        st->todo = 1;
        s->queue[s->queue_len++] = i;
    }
    return 0;
}

/* After a run ends: count it, or queue it again while attempts remain. */
static int after_run(struct scheduler *s, int i, const struct run_outcome *o) {
    struct batch_run_state *st = &s->runs[i];
    const char *name = s->batch->runs[i].name;
    if (!o->failed) {
        s->finished++;
        if (o->evaluated) printf("done %s: held-out accuracy %.4f\n", name, o->eval.accuracy), fflush(stdout);
        else printf("done %s\n", name);
        return 0;
    }
    fprintf(stderr, "hyla: run %s failed (attempt %d): %s\n", name, st->attempt, o->error);
    if (st->attempt >= s->batch->max_attempts) {
        s->failed++;
        return 0;
    }
    struct hyla_ledger_error err;
    st->attempt++;
    if (hyla_ledger_begin_attempt(s->ledger, st->ledger_id, st->attempt, s->batch->workers_per_run, &err) ||
        hyla_ledger_add_event(s->ledger, st->ledger_id, -1, "retry", o->error, &err))
        return ledger_fail(&err);
    s->queue[s->queue_len++] = i;
    return 0;
}

static double process_cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + 1e-6 * u.ru_utime.tv_usec + (double)u.ru_stime.tv_sec + 1e-6 * u.ru_stime.tv_usec;
}

static int next_run(struct scheduler *s) { return s->queue_head < s->queue_len ? s->queue[s->queue_head++] : -1; }

/* One process: the runs one after another, recorded through the same message handling. */
static int run_alone(struct scheduler *s) {
    for (int i; (i = next_run(s)) >= 0;) {
        const struct hyla_run_config *cfg = &s->batch->runs[i].cfg;
        struct run_outcome seen, outcome;
        struct run_recorder rec = {.ledger = s->ledger, .run_id = s->runs[i].ledger_id};
        struct run_follower follower = {.out = stdout, .log_every = cfg->train.log_every, .outcome = &seen,
                                        .record = run_recorder_record, .record_ctx = &rec};
        struct run_reporter rep = {.emit = local_follower_emit, .ctx = &follower, .run_id = i,
                                   .head_stats_every = cfg->ledger.head_stats_every};
        printf("== %s (attempt %d)\n", s->batch->runs[i].name, s->runs[i].attempt);
        worker_run(cfg, run_backend, NULL, &rep, NULL, 1, &outcome);
        if (rec.failed) return fprintf(stderr, "hyla: error: ledger: %s\n", rec.error), 1;
        if (after_run(s, i, &outcome)) return 1;
    }
    return 0;
}

static void assign(int leader, int run) {
    double v = run;
    hyla_msg_send(MPI_COMM_WORLD, leader, HYLA_MSG_RUN_ASSIGN, run, 0, &v, 1, NULL);
}

/* The coordinator under mpirun: hand runs to idle group leaders, follow every run. */
static int coordinate(struct scheduler *s, int n_groups, int group_size) {
    const int n = s->batch->n_runs;
    struct run_outcome *outcomes = calloc((size_t)n, sizeof *outcomes);
    struct run_recorder *recorders = calloc((size_t)n, sizeof *recorders);
    struct run_follower *followers = calloc((size_t)n, sizeof *followers);
    int active = 0, rc = 0;
    /* the coordinator's own cost: its CPU time against the workers' training time */
    double *train_seconds = calloc((size_t)n, sizeof(double));
    const double cpu_start = process_cpu_seconds();
    for (int g = 0; g < n_groups; g++) {
        int run = next_run(s);
        assign(1 + g * group_size, run);
        if (run >= 0) active++;
    }
    while (active > 0 && !rc) {
        struct hyla_msg m;
        hyla_msg_wait(MPI_COMM_WORLD, MPI_ANY_SOURCE, &m);
        const int i = m.header.run_id;
        if (i < 0 || i >= n) {
            hyla_msg_free(&m);
            continue;
        }
        if (m.header.type == HYLA_MSG_RUN_START) {
            memset(&outcomes[i], 0, sizeof outcomes[i]);
            recorders[i] = (struct run_recorder){.ledger = s->ledger, .run_id = s->runs[i].ledger_id};
            followers[i] = (struct run_follower){.out = NULL, .outcome = &outcomes[i],
                                                 .record = run_recorder_record, .record_ctx = &recorders[i]};
            printf("start %s on workers %d..%d (attempt %d)\n", s->batch->runs[i].name, m.source,
                   m.source + group_size - 1, s->runs[i].attempt);
        }
        if (!followers[i].outcome) { /* a message before RUN_START: protocol misuse */
            hyla_msg_free(&m);
            continue;
        }
        run_follower_handle(&followers[i], &m);
        if (m.header.type == HYLA_MSG_STEP) train_seconds[i] = m.values[HYLA_STEP_ELAPSED];
        if (m.header.type == HYLA_MSG_STEP && m.header.step % s->batch->runs[i].cfg.train.log_every == 0)
            printf("  %s step %d loss %.4f\n", s->batch->runs[i].name, m.header.step, m.values[HYLA_STEP_LOSS]);
        if (recorders[i].failed) {
            fprintf(stderr, "hyla: error: ledger: %s\n", recorders[i].error);
            rc = 1;
        }
        if (m.header.type == HYLA_MSG_RUN_END) {
            if (after_run(s, i, &outcomes[i])) rc = 1;
            int run = rc ? -1 : next_run(s);
            assign(m.source, run);
            if (run < 0) active--;
        }
        hyla_msg_free(&m);
    }
    double trained = 0;
    for (int i = 0; i < n; i++) trained += train_seconds[i];
    if (trained > 0)
        printf("coordinator: %.3f s of CPU for %.1f s of training on the groups (%.2f%%)\n",
               process_cpu_seconds() - cpu_start, trained, 100 * (process_cpu_seconds() - cpu_start) / trained);
    free(train_seconds);
    free(outcomes), free(recorders), free(followers);
    return rc;
}

/* A worker under mpirun: its group trains what the coordinator assigns until told to stop. */
static void work(const struct hyla_batch *batch, int world_rank, int group_size) {
    MPI_Comm group;
    MPI_Comm_split(MPI_COMM_WORLD, (world_rank - 1) / group_size, world_rank, &group);
    int group_rank;
    MPI_Comm_rank(group, &group_rank);
    struct hyla_comm *comm = hyla_comm_create_mpi(group);
    struct mpi_sink sink = {.comm = MPI_COMM_WORLD, .dest = 0};
    for (;;) {
        int run = -1;
        if (group_rank == 0) {
            struct hyla_msg m;
            hyla_msg_wait(MPI_COMM_WORLD, 0, &m);
            run = m.header.type == HYLA_MSG_RUN_ASSIGN ? m.header.run_id : -1;
            hyla_msg_free(&m);
        }
        MPI_Bcast(&run, 1, MPI_INT, 0, group);
        if (run < 0 || run >= batch->n_runs) break;
        const struct hyla_run_config *cfg = &batch->runs[run].cfg;
        struct run_reporter rep = {.emit = mpi_sink_emit, .ctx = &sink, .run_id = run,
                                   .head_stats_every = cfg->ledger.head_stats_every};
        struct run_outcome outcome;
        worker_run(cfg, run_backend, comm, &rep, NULL, 1, &outcome);
    }
    hyla_comm_destroy(comm);
    MPI_Comm_free(&group);
}

int cmd_run(int argc, char **argv) {
    const char *batch_path = NULL, *ledger_path = NULL, *backend = "cpu";
    int dry_run = 0;
    struct cli_overrides ov = {0};
    for (int i = 1; i < argc; i++) {
        int taken = cli_take_override(argc, argv, &i, &ov);
        if (taken < 0) return 2;
        if (taken) continue;
        if (!strcmp(argv[i], "--dry-run")) dry_run = 1;
        else if (!strcmp(argv[i], "--ledger")) {
            if (!(ledger_path = cli_option_value(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--backend")) {
            if (!(backend = cli_option_value(argc, argv, &i))) return 2;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "hyla: error: unknown option '%s'\n", argv[i]);
            return usage();
        } else if (!batch_path) batch_path = argv[i];
        else return usage();
    }
    if (!batch_path) return usage();
    if (!(run_backend = cli_backend(backend))) return strcmp(backend, "cpu") && strcmp(backend, "cuda") ? 2 : 1;

    int world_rank, world_size;
    hyla_mpi_start(&argc, &argv, &world_rank, &world_size);
    if (run_backend->device_memory && world_size > 1 && hyla_pick_worker_gpu(world_rank > 0)) {
        hyla_mpi_stop();
        return 1;
    }
    struct hyla_batch batch;
    struct hyla_config_error cerr;
    if (hyla_batch_load(batch_path, ov.items, ov.count, &batch, &cerr)) {
        if (world_rank == 0) fprintf(stderr, "hyla: error: %s\n", cerr.message);
        hyla_mpi_stop();
        return 1;
    }
    if (dry_run) {
        if (world_rank == 0) hyla_run_dry_run(&batch, stdout);
        hyla_batch_free(&batch);
        hyla_mpi_stop();
        return 0;
    }
    const int workers = world_size > 1 ? world_size - 1 : 1;
    const int G = batch.workers_per_run > 0 ? batch.workers_per_run : workers;
    if (workers % G != 0) {
        if (world_rank == 0)
            fprintf(stderr, "hyla: error: %d worker(s) cannot form groups of workers_per_run = %d; launch "
                            "mpirun -np %d (1 coordinator + a multiple of %d workers) or change workers_per_run\n",
                    workers, G, 1 + G * ((workers + G - 1) / G), G);
        hyla_batch_free(&batch);
        hyla_mpi_stop();
        return 1;
    }
    batch.workers_per_run = G;
    /* each run checkpoints into its own folder: checkpoint.dir/<run name, '/' -> '_'> */
    for (int i = 0; i < batch.n_runs; i++) {
        struct hyla_checkpoint_config *c = &batch.runs[i].cfg.checkpoint;
        if (!c->dir[0]) continue;
        char sub[HYLA_BATCH_NAME_MAX];
        snprintf(sub, sizeof sub, "%s", batch.runs[i].name);
        for (char *p = sub; *p; p++) *p = *p == '/' ? '_' : *p;
        char dir[HYLA_PATH_MAX + HYLA_BATCH_NAME_MAX + 2];
        snprintf(dir, sizeof dir, "%s/%s", c->dir, sub);
        if (strlen(dir) >= sizeof c->dir) {
            if (world_rank == 0) fprintf(stderr, "hyla: error: checkpoint folder %s is too long\n", dir);
            hyla_batch_free(&batch);
            hyla_mpi_stop();
            return 1;
        }
        memcpy(c->dir, dir, strlen(dir) + 1);
    }
    for (int i = 0; i < batch.n_runs; i++) {
        char why[512];
        if (!trainer_accumulation(&batch.runs[i].cfg.train, G, why, sizeof why)) {
            if (world_rank == 0) fprintf(stderr, "hyla: error: run %s: %s\n", batch.runs[i].name, why);
            hyla_batch_free(&batch);
            hyla_mpi_stop();
            return 1;
        }
    }

    int rc = 0;
    if (world_rank == 0) {
        if (world_size > 1) { /* MPI_Comm_split is collective: the coordinator takes part, in no group */
            MPI_Comm none;
            MPI_Comm_split(MPI_COMM_WORLD, MPI_UNDEFINED, 0, &none);
        }
        struct scheduler s = {.batch = &batch};
        s.runs = calloc((size_t)batch.n_runs, sizeof *s.runs);
        s.queue = calloc((size_t)batch.n_runs * (size_t)(batch.max_attempts + 1), sizeof(int));
        const char *path = ledger_path ? ledger_path : batch.runs[0].cfg.ledger.path;
        struct hyla_ledger_error lerr;
        if (hyla_ledger_open(path, NULL, &s.ledger, &lerr)) rc = ledger_fail(&lerr);
        if (!rc) rc = plan_runs(&s, batch_path);
        if (!rc) {
            printf("batch %s: %d runs, %d to train, %d skipped | %d worker group(s) of %d | ledger %s\n", batch.name,
                   batch.n_runs, s.queue_len, s.skipped, world_size > 1 ? workers / G : 1, G, path);
            fflush(stdout);
        }
        if (world_size == 1) {
            if (!rc) rc = run_alone(&s);
        } else {
            if (rc) s.queue_len = 0; /* tell every group to stop */
            int crc = coordinate(&s, workers / G, G);
            rc = rc ? rc : crc;
        }
        if (s.ledger && hyla_ledger_close(s.ledger, &lerr)) rc = ledger_fail(&lerr);
        if (!rc) printf("batch %s: %d finished, %d failed, %d skipped\n", batch.name, s.finished, s.failed, s.skipped);
        if (!rc && s.failed) rc = 1;
        free(s.runs), free(s.queue);
    } else {
        work(&batch, world_rank, G);
    }
    hyla_batch_free(&batch);
    hyla_mpi_stop();
    return rc;
}
