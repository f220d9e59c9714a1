#include "run_recorder.h"

#include <stdio.h>
#include <string.h>

static const char *const step_keys[] = {"loss", "ce", "l1", "lr", "grad_norm", "tokens_per_s"};

static void check(struct run_recorder *r, int rc, const struct hyla_ledger_error *err) {
    if (rc && !r->failed) {
        r->failed = 1;
        snprintf(r->error, sizeof r->error, "%s", err->message);
    }
}

static void record_step(struct run_recorder *r, const struct hyla_msg *m) {
    struct hyla_ledger_error err;
    const double *v = m->values;
    double values[6] = {v[HYLA_STEP_LOSS], v[HYLA_STEP_CE], v[HYLA_STEP_L1], v[HYLA_STEP_LR],
                        v[HYLA_STEP_GRAD_NORM], v[HYLA_STEP_TOKENS_PER_S]};
    check(r, hyla_ledger_add_metrics(r->ledger, r->run_id, m->header.step, 0, step_keys, values, 6, &err), &err);
    r->last_step = m->header.step;
}

/* values: n_lte, heads, counted positions L', then (kept, λ) per (layer, head). */
static void record_heads(struct run_recorder *r, const struct hyla_msg *m) {
    const double *v = m->values;
    const int n_lte = (int)v[0], H = (int)v[1];
    const double counted = v[2];
    if (n_lte <= 0 || H <= 0 || m->header.n_values != 3 + 2 * (uint32_t)(n_lte * H) || H > 1024) return;
    double kept[1024], sparsity[1024], lambda[1024];
    for (int l = 0; l < n_lte; l++) {
        for (int h = 0; h < H; h++) {
            kept[h] = v[3 + 2 * (l * H + h)];
            lambda[h] = v[4 + 2 * (l * H + h)];
            sparsity[h] = counted > 0 ? kept[h] / counted : 0;
        }
        struct hyla_ledger_error err;
        check(r, hyla_ledger_add_head_stats(r->ledger, r->run_id, m->header.step, l, H, kept, sparsity, lambda, &err),
              &err);
    }
}

static const char *event_kind(int kind) {
    switch (kind) {
    case HYLA_EVENT_NAN_SKIP: return "nan_skip";
    case HYLA_EVENT_LAMBDA_UPDATE: return "lambda_update";
    case HYLA_EVENT_DIVERGED: return "diverged";
    case HYLA_EVENT_CHECKPOINT: return "checkpoint";
    case HYLA_EVENT_CHECKPOINT_FAILED: return "checkpoint_failed";
    case HYLA_EVENT_RESUMED: return "resumed";
    default: return "event";
    }
}

void run_recorder_record(void *ctx, const struct hyla_msg *m) {
    struct run_recorder *r = ctx;
    struct hyla_ledger_error err;
    switch (m->header.type) {
    case HYLA_MSG_RUN_START:
        check(r, hyla_ledger_set_status(r->ledger, r->run_id, HYLA_RUN_RUNNING, NULL, &err), &err);
        break;
    case HYLA_MSG_STEP:
        record_step(r, m);
        break;
    case HYLA_MSG_HEAD_STATS:
        record_heads(r, m);
        break;
    case HYLA_MSG_EVENT:
        if ((int)m->values[0] == HYLA_EVENT_CHECKPOINT && m->header.n_values >= 2)
            check(r, hyla_ledger_add_checkpoint(r->ledger, r->run_id, m->header.step, m->text, (int64_t)m->values[1],
                                                &err), &err);
        check(r, hyla_ledger_add_event(r->ledger, r->run_id, m->header.step, event_kind((int)m->values[0]), m->text,
                                       &err), &err);
        break;
    case HYLA_MSG_RUN_END:
        if (m->values[0] == 0 && m->values[3] > 0) {
            check(r, hyla_ledger_add_metric(r->ledger, r->run_id, "eval_accuracy", r->last_step, m->values[1], 0,
                                            &err), &err);
            check(r, hyla_ledger_add_metric(r->ledger, r->run_id, "eval_loss", r->last_step, m->values[2], 0, &err),
                  &err);
        }
        check(r, hyla_ledger_set_status(r->ledger, r->run_id, m->values[0] == 0 ? HYLA_RUN_FINISHED : HYLA_RUN_FAILED,
                                        m->values[0] == 0 ? NULL : m->text, &err), &err);
        break;
    default:
        break;
    }
    check(r, hyla_ledger_flush_if_due(r->ledger, &err), &err);
}
