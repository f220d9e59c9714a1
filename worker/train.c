#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/hyla_error.h"
#include "common/rng.h"
#include "common/timer.h"
#include "checkpoint/checkpoint.h"
#include "worker/lr_schedule.h"

static struct lte_controller controller_from_config(const struct hyla_run_config *cfg) {
    const struct hyla_attn_config *a = &cfg->model.attn;
    return (struct lte_controller){.update_steps = a->l1_lambda_update_steps > 0 ? a->l1_lambda_update_steps : 32,
                                   .initial_steps = a->l1_lambda_initial_steps,
                                   .warmup_steps = a->l1_warmup_steps,
                                   .seq_len = cfg->train.seq_len,
                                   .budget = a->buffer_size,
                                   .lambda_init = a->l1_lambda_init,
                                   .lambda_min = a->l1_lambda_min,
                                   .lambda_max = a->l1_lambda_max,
                                   .alpha = a->l1_alpha,
                                   .alpha_neg = a->l1_alpha_neg,
                                   .tol_lo = a->l1_lambda_tolerate[0],
                                   .tol_hi = a->l1_lambda_tolerate[1]};
}

int trainer_accumulation(const struct hyla_train_config *tc, int group_size, char *why, size_t why_size) {
    if (tc->global_batch <= 0) return tc->grad_accum;
    const long per_step = (long)group_size * tc->micro_batch;
    if (tc->global_batch % per_step != 0) {
        snprintf(why, why_size,
                 "train.global_batch = %d sequences cannot be split over %d workers x train.micro_batch = %d "
                 "(it must be a multiple of %ld); change train.global_batch, train.micro_batch or the number "
                 "of workers",
                 tc->global_batch, group_size, tc->micro_batch, per_step);
        return 0;
    }
    return (int)(tc->global_batch / per_step);
}

int trainer_init(struct trainer *t, const struct hyla_run_config *cfg, const struct hyla_backend *be,
                 struct hyla_comm *comm, struct hyla_data_error *err) {
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    t->be = be;
    t->comm = comm;
    t->group_size = comm ? hyla_comm_size(comm) : 1;
    t->rank = comm ? hyla_comm_rank(comm) : 0;
    char why[512];
    t->grad_accum = trainer_accumulation(&cfg->train, t->group_size, why, sizeof why);
    if (!t->grad_accum) return hyla_data_fail(err, HYLA_DATA_ECONFIG, "%s", why), 1;
    if (cfg->train.precision == HYLA_PRECISION_BF16) {
        if (!be->set_matmul_precision)
            return hyla_data_fail(err, HYLA_DATA_ECONFIG,
                                  "train.precision = bf16 needs a GPU: the %s backend computes in fp32 only; "
                                  "use --backend cuda or set train.precision=fp32", be->name), 1;
        be->set_matmul_precision(1);
    } else if (be->set_matmul_precision) {
        be->set_matmul_precision(0);
    }
    if (hyla_data_loader_open(&t->train_data, cfg, HYLA_DATA_TRAIN, t->rank, t->group_size, err)) return 1;
    /* A GPU group moves its units with NCCL on this process's device (chosen at start-up,
     * hyla_cuda_use_device); the MPI comm keeps the host-side scalars. */
    if (comm && be->device_memory) {
        if (!hyla_comm_nccl_available())
            return hyla_data_fail(err, HYLA_DATA_ECONFIG, "a GPU group of %d needs NCCL, and this hyla was built "
                                  "without it; rebuild with -DHYLA_CUDA=ON", t->group_size), 1;
        t->device_comm = hyla_comm_create_nccl(hyla_comm_mpi_handle(comm), be->current_device());
    }
    model_create(&t->model, be, &cfg->model, cfg->train.micro_batch, cfg->train.seq_len, cfg->train.seed);
    t->model.training = 1;
    fsdp_init(&t->fsdp, &t->model, comm, t->device_comm);
    /* bf16: the parameters travel (and are computed with) as bf16; gradients reduce in fp32 */
    fsdp_set_gather_bf16(&t->fsdp, cfg->train.precision == HYLA_PRECISION_BF16);
    t->lte = controller_from_config(cfg);
    const size_t n = (size_t)cfg->train.micro_batch * cfg->train.seq_len;
    t->inputs = hyla_malloc(n * sizeof(int32_t));
    t->targets = hyla_malloc(n * sizeof(int32_t));
    t->started = hyla_now_seconds();
    return 0;
}

void trainer_free(struct trainer *t) {
    fsdp_free(&t->fsdp);
    hyla_comm_destroy(t->device_comm);
    t->device_comm = NULL;
    free(t->inputs);
    free(t->targets);
    model_free(&t->model);
    hyla_data_loader_close(&t->train_data);
}

double trainer_mean_kept(const struct hyla_model *m, int lte_layer) {
    const int H = m->lay.att_kv_heads;
    double s = 0;
    for (int h = 0; h < H; h++) s += m->num_kept[(size_t)lte_layer * H + h];
    return H ? s / H : 0;
}

/* The controller's resynchronisation: num_kept averaged over the group (update steps). */
static void average_over_group(float *values, int n, void *ctx) {
    struct hyla_comm *comm = ctx;
    if (comm) hyla_comm_all_reduce_f32(comm, values, values, (size_t)n, HYLA_REDUCE_MEAN);
}

static void lte_update(struct trainer *t, struct step_report *r) {
    struct hyla_model *m = &t->model;
    const int n = m->lay.n_lte_layers * m->lay.att_kv_heads;
    if (!n) return;
    double *kept = hyla_malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < n; i++) kept[i] = m->kept_sum[i] / (m->kept_micro_batches ? m->kept_micro_batches : 1);
    r->lambda_action = lte_controller_step(&t->lte, t->step, kept, m->num_kept, m->l1_lambda, n, average_over_group,
                                           t->comm);
    free(kept);
    memset(m->kept_sum, 0, sizeof(double) * (size_t)n);
    m->kept_micro_batches = 0;
    r->n_lte = m->lay.n_lte_layers < HYLA_MAX_LTE_LAYERS ? m->lay.n_lte_layers : HYLA_MAX_LTE_LAYERS;
    for (int l = 0; l < r->n_lte; l++) r->kept[l] = trainer_mean_kept(m, l);
}

void format_progress(const struct step_report *r, char *line, size_t size) {
    double eta = r->step ? r->elapsed_s / r->step * (r->steps - r->step) : 0;
    size_t at = (size_t)snprintf(line, size, "step %5d/%d | loss %.4f | lr %.2e | gnorm %.3f | %6.0f tok/s", r->step,
                                 r->steps, r->loss, r->lr, r->grad_norm, r->tokens_per_s);
    if (r->n_lte && at < size) {
        at += (size_t)snprintf(line + at, size - at, " | kept");
        for (int n = 0; n < r->n_lte && at < size; n++) at += (size_t)snprintf(line + at, size - at, " %.1f", r->kept[n]);
    }
    if (r->skipped_total && at < size) at += (size_t)snprintf(line + at, size - at, " | skipped %d", r->skipped_total);
    if (at < size) snprintf(line + at, size - at, " | ETA %dm%02ds", (int)(eta / 60), (int)eta % 60);
}

/* HYLA_LM_HEAD_ONE_PASS=1 / 0: the LM head's backward runs in the forward pass from the same
 * logits (model.backward_follows: lm_head_ce_fwd_bwd), one [tokens x dim x vocab] product a
 * micro-batch fewer. The same gradients (test_model_backward); on by default since its H100
 * run (2026-12-07 ~22:25, docs/gpu-runs/2026-12-07l-h100: laLTE 191.3 -> 190.2 ms a step
 * alone, the same loss bits). */
enum { ONE_PASS_BY_DEFAULT = 1 };
static int head_one_pass(void) {
    const char *e = getenv("HYLA_LM_HEAD_ONE_PASS");
    return e && *e ? atoi(e) != 0 : ONE_PASS_BY_DEFAULT;
}

int trainer_step(struct trainer *t, struct step_report *r, struct hyla_data_error *err) {
    const struct hyla_train_config *tc = &t->cfg.train;
    struct hyla_model *m = &t->model;
    const double start = hyla_now_seconds();
    memset(r, 0, sizeof *r);
    t->step++;
    r->step = t->step;
    r->steps = tc->steps;
    fsdp_zero_grads(&t->fsdp);
    m->dloss = 1.0 / t->grad_accum;
    /* LTE schedule (MODEL.md §8): router off during the L1 warm-up, weights frozen until
     * routing_freeze_steps; both 0 in the reference configs */
    m->router_disabled = t->step <= t->cfg.model.attn.l1_warmup_steps;
    m->router_frozen = t->step <= t->cfg.model.attn.routing_freeze_steps;
    /* The whole step is queued without the host waiting for the device: losses, LTE
     * statistics and the gradient norm accumulate in device memory and come back once, at
     * the end (model_take_stats, fsdp_grad_norm). */
    for (int micro = 0; micro < t->grad_accum; micro++) {
        const uint64_t cursor = t->train_data.cursor;
        if (hyla_data_loader_next(&t->train_data, tc->micro_batch, t->inputs, t->targets, err)) return 1;
        /* dropout of a sequence: keyed by (seed, step, its global index) */
        const uint64_t step_key = hyla_rng_key(tc->seed, HYLA_RNG_DROPOUT, (uint64_t)t->step, 0);
        for (int b = 0; b < tc->micro_batch; b++)
            m->row_keys[b] = hyla_rng_subkey(step_key, hyla_data_global_index(&t->train_data, cursor, b));
        m->backward_follows = head_one_pass(); /* the LM head's gradients from the forward pass's logits */
        model_forward(m, t->inputs, t->targets);
        model_backward(m);
    }
    /* torch clip_grad_norm_ (scale by max_norm / (norm + 1e-6) when that is < 1) and AdamW;
     * skip_nan_inf: a non-finite norm skips the update on the device, and the schedule still
     * advances (MODEL.md §8). The bias correction counts the steps taken before this one. */
    r->lr = tc->lr * lr_multiplier(t->step - 1, tc->warmup_steps, tc->steps, tc->lr_min_ratio);
    fsdp_optimizer_step(&t->fsdp, (float)r->lr, (float)tc->beta1, (float)tc->beta2, (float)tc->eps,
                        (float)tc->weight_decay, (float)tc->max_norm, t->step - t->skipped_steps);

    /* the end of the step: its statistics come back */
    struct forward_stats st;
    model_take_stats(m, &st);
    double local[2] = {st.ce_loss / t->grad_accum, st.l1_loss / t->grad_accum}; /* CE, L1 */
    if (t->comm) hyla_comm_all_reduce_f64(t->comm, local, local, 2, HYLA_REDUCE_MEAN);
    r->ce = local[0], r->l1 = local[1], r->loss = local[0] + local[1];
    lte_update(t, r);
    r->grad_norm = fsdp_grad_norm(&t->fsdp); /* identical on every rank */
    if (!isfinite(r->grad_norm)) {
        r->skipped = 1;
        t->skipped_steps++;
        t->bad_in_row++;
    } else {
        t->bad_in_row = 0;
    }
    r->skipped_total = t->skipped_steps;
    const double now = hyla_now_seconds();
    r->tokens_per_s = (double)t->group_size * t->grad_accum * tc->micro_batch * tc->seq_len / (now - start);
    r->elapsed_s = now - t->started;
    return 0;
}

int evaluate_model(struct hyla_model *m, const struct hyla_run_config *cfg, int samples, struct eval_result *res,
                   struct hyla_data_error *err) {
    struct hyla_data_loader eval;
    if (hyla_data_loader_open(&eval, cfg, HYLA_DATA_EVAL, 0, 1, err)) return 1;
    const int B = m->B, T = m->T;
    int32_t *in = hyla_malloc(sizeof(int32_t) * (size_t)B * T), *tg = hyla_malloc(sizeof(int32_t) * (size_t)B * T);
    int32_t *pred = hyla_malloc(sizeof(int32_t) * (size_t)B * T);
    const int was_training = m->training;
    m->training = 0;
    memset(res, 0, sizeof *res);
    size_t correct = 0, total = 0;
    double loss_sum = 0;
    int batches = (samples + B - 1) / B, rc = 0;
    for (int i = 0; i < batches; i++) {
        if (hyla_data_loader_next(&eval, B, in, tg, err)) {
            rc = 1;
            break;
        }
        struct forward_stats st;
        model_forward(m, in, tg);
        model_take_stats(m, &st);
        model_argmax(m, pred);
        size_t c = 0, n = 0;
        hyla_answer_accuracy(pred, tg, (size_t)B * T, &c, &n);
        correct += c, total += n;
        loss_sum += st.ce_loss;
        res->samples += B;
    }
    m->training = was_training;
    /* The eval forward passes must not feed the λ controller's statistics. */
    memset(m->kept_sum, 0, sizeof(double) * (size_t)m->lay.n_lte_layers * m->lay.att_kv_heads);
    m->kept_micro_batches = 0;
    res->answers = total;
    res->accuracy = total ? (double)correct / total : 0;
    res->loss = batches ? loss_sum / batches : 0;
    free(in), free(tg), free(pred);
    hyla_data_loader_close(&eval);
    return rc;
}

/* The trainer's state as a checkpoint sees it: the shards and the counters. Checkpoint files
 * are written and read from host memory: a GPU's shards go through host copies (to_host
 * here for a save; checkpoint_view_to_device after a load). */
static void checkpoint_view(struct trainer *t, struct ckpt_rank_data *d, struct ckpt_unit *units) {
    struct fsdp *f = &t->fsdp;
    memset(d, 0, sizeof *d);
    d->rank = t->rank, d->world_size = t->group_size, d->n_units = f->n_units, d->units = units;
    d->param = hyla_calloc((size_t)f->n_units, sizeof(float *));
    d->adam_m = hyla_calloc((size_t)f->n_units, sizeof(float *));
    d->adam_v = hyla_calloc((size_t)f->n_units, sizeof(float *));
    for (int u = 0; u < f->n_units; u++) {
        units[u] = (struct ckpt_unit){.name = t->model.lay.table.units[u].name, .unit_count = f->units[u].layout.unit_count};
        d->param[u] = f->units[u].param, d->adam_m[u] = f->units[u].adam_m, d->adam_v[u] = f->units[u].adam_v;
        if (t->be->device_memory) {
            const size_t bytes = f->units[u].layout.shard_count * sizeof(float);
            d->param[u] = hyla_malloc(bytes), d->adam_m[u] = hyla_malloc(bytes), d->adam_v[u] = hyla_malloc(bytes);
            t->be->to_host(d->param[u], f->units[u].param, bytes);
            t->be->to_host(d->adam_m[u], f->units[u].adam_m, bytes);
            t->be->to_host(d->adam_v[u], f->units[u].adam_v, bytes);
        }
    }
    d->data_cursor = t->train_data.cursor;
    d->step = t->step, d->skipped_steps = t->skipped_steps, d->bad_in_row = t->bad_in_row;
    d->n_lte = t->model.lay.n_lte_layers * t->model.lay.att_kv_heads;
    d->lte_lambda = t->model.l1_lambda, d->lte_num_kept = t->model.num_kept;
}

static void checkpoint_view_to_device(struct trainer *t, struct ckpt_rank_data *d) {
    for (int u = 0; t->be->device_memory && u < t->fsdp.n_units; u++) {
        const size_t bytes = t->fsdp.units[u].layout.shard_count * sizeof(float);
        t->be->to_device(t->fsdp.units[u].param, d->param[u], bytes);
        t->be->to_device(t->fsdp.units[u].adam_m, d->adam_m[u], bytes);
        t->be->to_device(t->fsdp.units[u].adam_v, d->adam_v[u], bytes);
    }
}

static void checkpoint_view_free(struct trainer *t, struct ckpt_rank_data *d) {
    for (int u = 0; t->be->device_memory && u < t->fsdp.n_units; u++) free(d->param[u]), free(d->adam_m[u]), free(d->adam_v[u]);
    free(d->param), free(d->adam_m), free(d->adam_v);
}

int trainer_save_checkpoint(struct trainer *t, const char *root, const char *config_hash, double *bytes,
                            char *error, size_t error_size) {
    struct ckpt_unit *units = hyla_calloc((size_t)t->fsdp.n_units, sizeof *units);
    struct ckpt_rank_data d;
    checkpoint_view(t, &d, units);
    snprintf(d.config_hash, sizeof d.config_hash, "%s", config_hash ? config_hash : "");
    struct ckpt_error err;
    int rc = ckpt_save(root, &d, t->comm, bytes, &err);
    if (rc) snprintf(error, error_size, "%s", err.message);
    checkpoint_view_free(t, &d);
    free(units);
    return rc;
}

int trainer_resume(struct trainer *t, const char *root, FILE *log, char *error, size_t error_size) {
    char dir[4096];
    int64_t step;
    if (!ckpt_find_latest(root, dir, sizeof dir, &step, log)) return 0;
    struct ckpt_unit *units = hyla_calloc((size_t)t->fsdp.n_units, sizeof *units);
    struct ckpt_rank_data d;
    checkpoint_view(t, &d, units);
    struct ckpt_error err;
    int rc = ckpt_load(dir, &d, &err);
    if (rc) {
        snprintf(error, error_size, "%s", err.message);
    } else {
        struct hyla_data_error derr;
        uint64_t cursor = d.data_cursor;
        if (d.saved_world_size != t->group_size &&
            hyla_data_cursor_reshard(d.data_cursor, d.saved_world_size, t->group_size, &cursor, &derr)) {
            snprintf(error, error_size, "%s", derr.message);
            rc = -1;
        } else {
            checkpoint_view_to_device(t, &d);
            t->step = (int)d.step, t->skipped_steps = d.skipped_steps, t->bad_in_row = d.bad_in_row;
            t->train_data.cursor = cursor;
        }
    }
    checkpoint_view_free(t, &d);
    free(units);
    return rc ? -1 : 1;
}
