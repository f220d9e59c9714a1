/* A worker's side of one run: train, report, evaluate, write outputs. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "common/hyla_error.h"
#include "checkpoint/checkpoint.h"
#include "experiments/config_dump.h"
#include "protocol.h"
#include "roles.h"
#include "worker/model_io.h"

static void emit(struct run_reporter *rep, int type, int step, const double *v, uint32_t n, const char *text) {
    if (rep->emit) rep->emit(rep->ctx, type, rep->run_id, step, v, n, text);
}

void mpi_sink_emit(void *ctx, int type, int run_id, int step, const double *values, uint32_t n_values,
                   const char *text) {
    const struct mpi_sink *sink = ctx;
    hyla_msg_send(sink->comm, sink->dest, (enum hyla_msg_type)type, run_id, step, values, n_values, text);
}

static void report_step(struct run_reporter *rep, const struct step_report *r) {
    double v[HYLA_STEP_FIXED + HYLA_MAX_LTE_LAYERS];
    v[HYLA_STEP_LOSS] = r->loss, v[HYLA_STEP_CE] = r->ce, v[HYLA_STEP_L1] = r->l1, v[HYLA_STEP_LR] = r->lr;
    v[HYLA_STEP_GRAD_NORM] = r->grad_norm, v[HYLA_STEP_TOKENS_PER_S] = r->tokens_per_s;
    v[HYLA_STEP_ELAPSED] = r->elapsed_s, v[HYLA_STEP_SKIPPED] = r->skipped;
    v[HYLA_STEP_SKIPPED_TOTAL] = r->skipped_total, v[HYLA_STEP_LAMBDA_ACTION] = r->lambda_action;
    v[HYLA_STEP_STEPS] = r->steps, v[HYLA_STEP_N_LTE] = r->n_lte;
    for (int l = 0; l < r->n_lte; l++) v[HYLA_STEP_FIXED + l] = r->kept[l];
    emit(rep, HYLA_MSG_STEP, r->step, v, (uint32_t)(HYLA_STEP_FIXED + r->n_lte), NULL);
    if (r->skipped) emit(rep, HYLA_MSG_EVENT, r->step, (double[]){HYLA_EVENT_NAN_SKIP}, 1,
                         "non-finite gradient norm: step skipped");
    if (r->lambda_action) emit(rep, HYLA_MSG_EVENT, r->step, (double[]){HYLA_EVENT_LAMBDA_UPDATE}, 1,
                               r->lambda_action == 1 ? "first lambda update" : "lambda update");
}

/* Per-head LTE statistics: kept-token EMA and λ of every (LTE layer, kv head). */
static void report_heads(struct run_reporter *rep, const struct trainer *t) {
    const struct hyla_model *m = &t->model;
    const int n_lte = m->lay.n_lte_layers, H = m->lay.att_kv_heads;
    if (!n_lte || !rep->head_stats_every || t->step % rep->head_stats_every != 0) return;
    const int margin = lte_router_receptive_field(&m->lay.router) / 2;
    double *v = hyla_malloc(sizeof(double) * (3 + 2 * (size_t)n_lte * H));
    v[0] = n_lte, v[1] = H, v[2] = t->cfg.train.seq_len - margin;
    for (int i = 0; i < n_lte * H; i++) v[3 + 2 * i] = m->num_kept[i], v[4 + 2 * i] = m->l1_lambda[i];
    emit(rep, HYLA_MSG_HEAD_STATS, t->step, v, (uint32_t)(3 + 2 * n_lte * H), NULL);
    free(v);
}

static void report_memory(struct run_reporter *rep, const struct trainer *t) {
    const struct fsdp_memory *mem = &t->fsdp.memory;
    double v[4] = {(double)mem->sharded_bytes, (double)mem->unsharded_bytes, (double)mem->gathered_peak_bytes,
                   t->group_size};
    emit(rep, HYLA_MSG_MEMORY, t->step, v, 4, NULL);
}

static int write_outputs(struct trainer *t, const char *out_dir, char *error, size_t size) {
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        snprintf(error, size, "cannot create output folder %s: %s", out_dir, strerror(errno));
        return 1;
    }
    char path[HYLA_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    struct hyla_st_error serr;
    const struct hyla_st_meta meta[] = {{"format", "pt"}, {"producer", "hyla"}};
    if (model_save_safetensors(&t->model, path, HYLA_ST_F32, meta, 2, &serr)) {
        snprintf(error, size, "%s", serr.message);
        return 1;
    }
    snprintf(path, sizeof path, "%s/config.yaml", out_dir);
    struct hyla_config_error cerr;
    if (hyla_config_write_yaml(&t->cfg, path, &cerr)) {
        snprintf(error, size, "%s", cerr.message);
        return 1;
    }
    return 0;
}

/* Evaluation and export need every parameter: gather all units (collective), then the
 * group's rank 0 does the work alone. */
static void keep_lte_state(const struct trainer *t, struct run_outcome *o) {
    const struct hyla_model *m = &t->model;
    o->parameters = model_param_count(&m->lay);
    const int n = m->lay.n_lte_layers * m->lay.att_kv_heads;
    if (!n || n > HYLA_MAX_LTE_STATS || m->lay.n_lte_layers > HYLA_MAX_LTE_LAYERS) return;
    o->n_lte = m->lay.n_lte_layers, o->lte_heads = m->lay.att_kv_heads;
    for (int l = 0; l < m->lay.n_layers; l++)
        if (m->lay.layers[l].lte_index >= 0) o->lte_layers[m->lay.layers[l].lte_index] = l;
    memcpy(o->lambda, m->l1_lambda, sizeof(float) * (size_t)n);
    memcpy(o->kept, m->num_kept, sizeof(float) * (size_t)n);
}

static void finish_run(struct trainer *t, const char *out_dir, struct run_outcome *o) {
    keep_lte_state(t, o);
    fsdp_gather_all(&t->fsdp);
    if (t->rank == 0 && !o->failed && t->cfg.data.task != HYLA_DATA_TOKENS) {
        struct hyla_data_error derr;
        if (evaluate_model(&t->model, &t->cfg, t->cfg.data.eval_samples, &o->eval, &derr)) {
            o->failed = 1;
            snprintf(o->error, sizeof o->error, "%s", derr.message);
        } else {
            o->evaluated = 1;
        }
    }
    if (t->rank == 0 && !o->failed && out_dir) o->failed = write_outputs(t, out_dir, o->error, sizeof o->error);
    fsdp_release_all(&t->fsdp);
}

/* Save a checkpoint (collective); a failure is an event, not the end of the run. */
static void save_checkpoint(struct trainer *t, struct run_reporter *rep) {
    const struct hyla_checkpoint_config *c = &t->cfg.checkpoint;
    char hash[17], error[1024];
    hyla_config_hash_hex(&t->cfg, hash);
    double bytes = 0;
    if (trainer_save_checkpoint(t, c->dir, hash, &bytes, error, sizeof error)) {
        emit(rep, HYLA_MSG_EVENT, t->step, (double[]){HYLA_EVENT_CHECKPOINT_FAILED}, 1, error);
        return;
    }
    char dir[HYLA_PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/step_%08d", c->dir, t->step);
    emit(rep, HYLA_MSG_EVENT, t->step, (double[]){HYLA_EVENT_CHECKPOINT, bytes}, 2, dir);
    if (t->rank == 0) {
        struct ckpt_error cerr;
        ckpt_apply_retention(c->dir, c->keep_last, c->keep_every, &cerr);
    }
}

static int resume_run(struct trainer *t, struct run_reporter *rep, struct run_outcome *o) {
    char error[900];
    int rc = trainer_resume(t, t->cfg.checkpoint.dir, t->rank == 0 ? stderr : NULL, error, sizeof error);
    if (rc < 0) {
        o->failed = 1;
        snprintf(o->error, sizeof o->error, "cannot resume: %s", error);
    } else if (rc > 0) {
        char text[64];
        snprintf(text, sizeof text, "resumed from step %d", t->step);
        emit(rep, HYLA_MSG_EVENT, t->step, (double[]){HYLA_EVENT_RESUMED}, 1, text);
    }
    return rc < 0;
}

void worker_run(const struct hyla_run_config *cfg, const struct hyla_backend *be, struct hyla_comm *group,
                struct run_reporter *rep, const char *out_dir, int resume, struct run_outcome *o) {
    memset(o, 0, sizeof *o);
    struct trainer t;
    struct hyla_data_error derr;
    const int leader = !group || hyla_comm_rank(group) == 0;
    struct run_reporter quiet = {0};
    if (!leader) rep = &quiet; /* only the leader reports */
    if (trainer_init(&t, cfg, be, group, &derr)) {
        /* the same config and data on every rank: every rank fails alike */
        o->failed = 1;
        snprintf(o->error, sizeof o->error, "%s", derr.message);
    } else {
        double v[6] = {t.group_size, (double)model_param_count(&t.model.lay), cfg->train.steps, cfg->train.seq_len,
                       cfg->train.micro_batch, t.grad_accum};
        emit(rep, HYLA_MSG_RUN_START, 0, v, 6, cfg->name);
        const int checkpoints = cfg->checkpoint.dir[0] != '\0';
        if (checkpoints && resume) resume_run(&t, rep, o);
        int saved_at = t.step;
        for (int s = t.step; s < cfg->train.steps && !o->failed; s++) {
            struct step_report r;
            if (trainer_step(&t, &r, &derr)) {
                o->failed = 1;
                snprintf(o->error, sizeof o->error, "%s", derr.message);
                break;
            }
            if (s == 0) report_memory(rep, &t);
            report_step(rep, &r);
            report_heads(rep, &t);
            if (checkpoints && cfg->checkpoint.interval > 0 && t.step % cfg->checkpoint.interval == 0)
                save_checkpoint(&t, rep), saved_at = t.step;
            if (t.bad_in_row >= cfg->train.max_bad_steps) {
                o->failed = 1;
                snprintf(o->error, sizeof o->error,
                         "the run diverged: %d steps in a row had a non-finite gradient norm (train.max_bad_steps = "
                         "%d); lower train.lr or raise train.warmup_steps", t.bad_in_row, cfg->train.max_bad_steps);
            }
        }
        if (checkpoints && !o->failed && saved_at != t.step) save_checkpoint(&t, rep);
        finish_run(&t, out_dir, o);
        trainer_free(&t);
    }
    double v[4] = {o->failed, o->eval.accuracy, o->eval.loss, (double)o->evaluated ? (double)o->eval.answers : 0};
    emit(rep, HYLA_MSG_RUN_END, 0, v, 4, o->failed ? o->error : "");
}
