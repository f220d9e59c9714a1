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

void coordinator_follow_run(MPI_Comm world, int leader, FILE *out, int log_every, struct run_outcome *o) {
    memset(o, 0, sizeof *o);
    for (;;) {
        struct hyla_msg m;
        hyla_msg_wait(world, leader, &m);
        const double *v = m.values;
        switch (m.header.type) {
        case HYLA_MSG_RUN_START:
            fprintf(out, "hyla train: %s | %.0f parameters | %.0f worker(s) x %.0f x %.0f tokens x %.0f accumulation "
                         "per step | %.0f steps\n", m.text, v[1], v[0], v[4], v[3], v[5], v[2]);
            break;
        case HYLA_MSG_MEMORY:
            print_memory(out, (int)v[3], v[0], v[1], v[2]);
            break;
        case HYLA_MSG_STEP: {
            struct step_report r;
            step_from_message(&m, &r);
            print_step(out, &r, log_every);
            break;
        }
        case HYLA_MSG_RUN_END:
            o->failed = (int)v[0];
            o->eval.accuracy = v[1], o->eval.loss = v[2], o->eval.answers = (size_t)v[3];
            o->evaluated = !o->failed && o->eval.answers > 0;
            snprintf(o->error, sizeof o->error, "%s", m.text);
            hyla_msg_free(&m);
            return;
        default:
            break;
        }
        hyla_msg_free(&m);
    }
}
