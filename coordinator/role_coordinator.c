/* The coordinator's side of a run: receive what the group leader reports and show it. */
#include <string.h>

#include "protocol.h"
#include "roles.h"

void print_step(FILE *out, const struct step_report *r, int log_every) {
    if (!(r->step % log_every == 0 || r->step == 1 || r->step == r->steps)) return;
    char line[512];
    format_progress(r, line, sizeof line);
    fprintf(out, "%s\n", line);
    fflush(out);
}

void print_memory(FILE *out, int group_size, double sharded, double unsharded, double gathered_peak) {
    const double mb = 1024.0 * 1024.0;
    fprintf(out, "memory per worker: params + grads + AdamW m, v sharded %.2f MB (%.2f MB unsharded / %d workers) "
                 "| gathered units peak %.2f MB\n", sharded / mb, unsharded / mb, group_size, gathered_peak / mb);
    fflush(out);
}

static void step_from_message(const struct hyla_msg *m, struct step_report *r) {
    const double *v = m->values;
    memset(r, 0, sizeof *r);
    r->step = m->header.step;
    r->loss = v[HYLA_STEP_LOSS], r->ce = v[HYLA_STEP_CE], r->l1 = v[HYLA_STEP_L1], r->lr = v[HYLA_STEP_LR];
    r->grad_norm = v[HYLA_STEP_GRAD_NORM], r->tokens_per_s = v[HYLA_STEP_TOKENS_PER_S];
    r->elapsed_s = v[HYLA_STEP_ELAPSED], r->skipped = (int)v[HYLA_STEP_SKIPPED];
    r->skipped_total = (int)v[HYLA_STEP_SKIPPED_TOTAL], r->lambda_action = (int)v[HYLA_STEP_LAMBDA_ACTION];
    r->steps = (int)v[HYLA_STEP_STEPS];
    r->n_lte = (int)v[HYLA_STEP_N_LTE];
    if (r->n_lte > HYLA_MAX_LTE_LAYERS || HYLA_STEP_FIXED + (uint32_t)r->n_lte > m->header.n_values) r->n_lte = 0;
    for (int l = 0; l < r->n_lte; l++) r->kept[l] = v[HYLA_STEP_FIXED + l];
}

void run_follower_handle(struct run_follower *f, const struct hyla_msg *m) {
    const double *v = m->values;
    switch (m->header.type) {
    case HYLA_MSG_RUN_START:
        if (f->out)
            fprintf(f->out, "hyla train: %s | %.0f parameters | %.0f worker(s) x %.0f x %.0f tokens x %.0f "
                            "accumulation per step | %.0f steps\n", m->text, v[1], v[0], v[4], v[3], v[5], v[2]);
        break;
    case HYLA_MSG_MEMORY:
        if (f->out) print_memory(f->out, (int)v[3], v[0], v[1], v[2]);
        break;
    case HYLA_MSG_STEP: {
        struct step_report r;
        step_from_message(m, &r);
        if (f->out) print_step(f->out, &r, f->log_every);
        if (f->metrics) fprintf(f->metrics, "%d %.17g\n", r.step, r.loss), fflush(f->metrics);
        break;
    }
    case HYLA_MSG_EVENT:
        if (f->out && (int)v[0] >= HYLA_EVENT_CHECKPOINT)
            fprintf(f->out, "%s %s\n", (int)v[0] == HYLA_EVENT_CHECKPOINT ? "checkpoint" : "note:", m->text), fflush(f->out);
        break;
    case HYLA_MSG_RUN_END: {
        struct run_outcome *o = f->outcome;
        o->failed = (int)v[0];
        o->eval.accuracy = v[1], o->eval.loss = v[2], o->eval.answers = (size_t)v[3];
        o->evaluated = !o->failed && o->eval.answers > 0;
        if (o->failed) snprintf(o->error, sizeof o->error, "%s", m->text);
        f->ended = 1;
        break;
    }
    default:
        break;
    }
    if (f->record) f->record(f->record_ctx, m);
}

void local_follower_emit(void *ctx, int type, int run_id, int step, const double *values, uint32_t n_values,
                         const char *text) {
    struct hyla_msg m = {.header = {.magic = HYLA_PROTOCOL_MAGIC, .version = HYLA_PROTOCOL_VERSION,
                                    .type = (uint16_t)type, .run_id = run_id, .step = step, .n_values = n_values,
                                    .text_bytes = text ? (uint32_t)strlen(text) : 0},
                         .source = 0, .values = (double *)values, .text = (char *)(text ? text : "")};
    run_follower_handle(ctx, &m);
}

void coordinator_follow_run(MPI_Comm world, int leader, struct run_follower *f) {
    f->ended = 0;
    while (!f->ended) {
        struct hyla_msg m;
        hyla_msg_wait(world, leader, &m);
        run_follower_handle(f, &m);
        hyla_msg_free(&m);
    }
}
