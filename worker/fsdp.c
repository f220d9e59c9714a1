#include "fsdp.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/hyla_error.h"

static size_t unit_bytes(const struct fsdp_unit *u) { return u->layout.padded_count * sizeof(float); }

static float *alloc_zero(const struct hyla_backend *be, size_t count) {
    float *p = be->alloc(count * sizeof(float));
    be->zero(p, count * sizeof(float));
    return p;
}

static void track(struct fsdp *f, long delta) {
    f->memory.gathered_bytes = (size_t)((long)f->memory.gathered_bytes + delta);
    if (f->memory.gathered_bytes > f->memory.gathered_peak_bytes)
        f->memory.gathered_peak_bytes = f->memory.gathered_bytes;
}

/* Serialised mode (HYLA_FSDP_SERIAL=1, for measuring how much communication the overlap
 * hides): no prefetch, every collective starts after all queued compute has finished and
 * the host waits for it before queueing more. */
static void serialise_before(struct fsdp *f) {
    if (f->serial) f->be->synchronize();
}

static size_t bf16_bytes(const struct fsdp_unit *u) { return u->layout.padded_count * sizeof(uint16_t); }

/* Parameters gathered in bf16 (train.precision = bf16, not for evaluation or export): this
 * rank rounds its fp32 shard straight into its slot of a bf16 full buffer, the gather moves
 * half the bytes in place, and gather_finish widens the result into the fp32 full buffer the
 * ops read. One process rounds the same way, so one GPU computes what G GPUs compute. */
static void gather_start(struct fsdp *f, int u) {
    struct fsdp_unit *unit = &f->units[u];
    if (unit->full || u < 0 || u >= f->n_units) return;
    if (f->comm) serialise_before(f);
    unit->full = f->be->alloc(unit_bytes(unit));
    track(f, (long)unit_bytes(unit));
    if (f->gather_bf16 && !f->gathering_all) {
        const struct fsdp_layout *l = &unit->layout;
        unit->full_bf16 = f->be->alloc(bf16_bytes(unit));
        track(f, (long)bf16_bytes(unit));
        uint16_t *own = unit->full_bf16 + l->shard_begin;
        f->be->round_to_bf16(own, unit->param, l->shard_count);
        if (f->comm) unit->gathering = fsdp_unit_gather_bf16_start(l, f->data_comm, own, unit->full_bf16);
    } else if (f->comm) {
        unit->gathering = fsdp_unit_gather_start(&unit->layout, f->data_comm, unit->param, unit->full);
    } else {
        f->be->copy(unit->full, unit->param, unit->layout.unit_count * sizeof(float));
    }
}

/* Device memory: later kernels wait for the gather on the GPU, the host goes on queueing. */
static void finish_request(struct fsdp *f, struct hyla_comm_request *request) {
    if (hyla_comm_memory(f->data_comm) == HYLA_COMM_DEVICE_MEMORY && !f->serial) hyla_comm_wait_on_stream(request, NULL);
    else hyla_comm_wait(request);
}

static void free_bf16(struct fsdp *f, struct fsdp_unit *unit) {
    if (f->be->forget_bf16_twin && unit->full) f->be->forget_bf16_twin(unit->full);
    f->be->free(unit->full_bf16);
    track(f, -(long)bf16_bytes(unit));
    unit->full_bf16 = NULL;
}

static void gather_finish(struct fsdp *f, int u) {
    struct fsdp_unit *unit = &f->units[u];
    if (!unit->full) gather_start(f, u);
    if (unit->gathering) {
        finish_request(f, unit->gathering);
        unit->gathering = NULL;
    }
    if (unit->full_bf16 && !unit->widened) {
        f->be->widen_bf16(unit->full, unit->full_bf16, unit->layout.padded_count);
        unit->widened = 1;
        /* the bf16 values stay with the fp32 ones until release: the products' operands */
        if (!f->be->know_bf16_twin || !f->be->know_bf16_twin(unit->full, unit->full_bf16, unit->layout.padded_count))
            free_bf16(f, unit);
    }
    f->model->params[u] = unit->full;
}

static void release(struct fsdp *f, int u) {
    struct fsdp_unit *unit = &f->units[u];
    if (!unit->full) return;
    if (unit->gathering) finish_request(f, unit->gathering), unit->gathering = NULL;
    if (unit->full_bf16) free_bf16(f, unit);
    unit->widened = 0;
    f->be->free(unit->full);
    track(f, -(long)unit_bytes(unit));
    unit->full = NULL;
    f->model->params[u] = NULL;
}

/* A group of one keeps each unit gathered from its forward to its backward (keep_units): the
 * parameters do not change in between and nothing is shared, so the backward's second gather
 * (a rounding to bf16, a widening back and their allocations: ~60 us a layer unit at the 0.4B
 * shape on an H100, ~1.5 ms a step) buys nothing but memory — a whole gathered model, which
 * one rank holding every shard has room beside. HYLA_FSDP_KEEP_UNITS=0 gathers twice. */
static int keep_units_wanted(const struct fsdp *f) {
    const char *e = getenv("HYLA_FSDP_KEEP_UNITS");
    return f->group_size == 1 && !f->serial && !(e && !strcmp(e, "0"));
}

/* A group of one: the shard is the whole unit and the group's mean is the rank's own
 * gradient, so the backward adds straight into the shard (as the model without FSDP adds into
 * its gradients) — no full buffer to allocate and zero, no reduction and no add of it into the
 * shard per unit (on an H100 at the 0.4B shape ~55 us a layer unit, 1.3 ms a step). */
static int grads_in_shard(const struct fsdp *f) { return f->group_size == 1; }

static void grad_begin(struct fsdp *f, int u) {
    struct fsdp_unit *unit = &f->units[u];
    if (grads_in_shard(f)) {
        f->model->grads[u] = unit->grad;
        return;
    }
    if (unit->full_grad) return;
    unit->full_grad = alloc_zero(f->be, unit->layout.padded_count);
    track(f, (long)unit_bytes(unit));
    f->model->grads[u] = unit->full_grad;
}

/* Reduce-scatter the unit's full gradient (mean over the group) and add it to the shard:
 * gradients of several micro-batches accumulate in the shard, not in full buffers. */
static void grad_end(struct fsdp *f, int u) {
    struct fsdp_unit *unit = &f->units[u];
    const size_t S = unit->layout.shard_count;
    if (grads_in_shard(f)) {
        f->model->grads[u] = NULL;
        return;
    }
    if (f->comm) {
        serialise_before(f);
        finish_request(f, fsdp_grad_reduce_scatter_start(&unit->layout, f->data_comm, unit->full_grad, f->scatter_tmp));
        f->be->axpy(unit->grad, f->scatter_tmp, 1.0f, S);
    } else {
        f->be->axpy(unit->grad, unit->full_grad, 1.0f, unit->layout.unit_count);
    }
    f->be->free(unit->full_grad);
    track(f, -(long)unit_bytes(unit));
    unit->full_grad = NULL;
    f->model->grads[u] = NULL;
}

/* The model's unit hooks. Units run in index order forward (embeddings, layers, final)
 * and in reverse backward; tied embeddings also serve the LM head inside `final`. */
static void on_unit(void *ctx, int u, enum unit_event ev) {
    struct fsdp *f = ctx;
    const struct hyla_model_layout *lay = &f->model->lay;
    const int embed = lay->embed_unit, final = lay->final_unit, tied = lay->tied;
    switch (ev) {
    case UNIT_FORWARD_BEGIN:
        gather_finish(f, u);
        if (u + 1 < f->n_units && !f->serial) gather_start(f, u + 1); /* prefetch: overlaps this unit's compute */
        if (u == final && tied) gather_finish(f, embed);
        break;
    case UNIT_FORWARD_END:
        /* final stays for the backward pass; tied embeddings stay for the LM head */
        if (u != final && !(u == embed && tied) && !f->keep_units) release(f, u);
        break;
    case UNIT_BACKWARD_BEGIN:
        gather_finish(f, u);
        if (u - 1 >= 0 && !f->serial) gather_start(f, u - 1);
        grad_begin(f, u);
        if (u == final && tied) grad_begin(f, embed);
        break;
    case UNIT_BACKWARD_END:
        /* with tied embeddings, the embedding's gradient (begun with final's) keeps growing
         * until the embedding's own backward ends */
        grad_end(f, u);
        release(f, u);
        break;
    }
}

void fsdp_init(struct fsdp *f, struct hyla_model *m, struct hyla_comm *comm, struct hyla_comm *data_comm) {
    memset(f, 0, sizeof *f);
    f->be = m->be;
    f->comm = comm;
    f->data_comm = data_comm ? data_comm : comm;
    f->serial = getenv("HYLA_FSDP_SERIAL") && !strcmp(getenv("HYLA_FSDP_SERIAL"), "1");
    f->group_size = comm ? hyla_comm_size(comm) : 1;
    f->rank = comm ? hyla_comm_rank(comm) : 0;
    f->keep_units = keep_units_wanted(f);
    f->model = m;
    f->n_units = m->lay.table.n_units;
    f->units = hyla_calloc((size_t)f->n_units, sizeof *f->units);
    size_t largest_shard = 0;
    for (int u = 0; u < f->n_units; u++) {
        struct fsdp_unit *unit = &f->units[u];
        unit->layout = fsdp_layout_make(m->lay.table.units[u].size, f->group_size, f->rank);
        const size_t S = unit->layout.shard_count;
        unit->param = alloc_zero(f->be, S), unit->grad = alloc_zero(f->be, S);
        unit->adam_m = alloc_zero(f->be, S), unit->adam_v = alloc_zero(f->be, S);
        fsdp_shard_copy_out(&unit->layout, f->be, m->params[u], unit->param);
        /* the model's own full buffers are replaced by gathered ones from now on */
        f->be->free(m->params[u]);
        f->be->free(m->grads[u]);
        m->params[u] = m->grads[u] = NULL;
        largest_shard = S > largest_shard ? S : largest_shard;
        f->memory.sharded_bytes += 4 * S * sizeof(float);
        f->memory.unsharded_bytes += 4 * unit->layout.unit_count * sizeof(float);
    }
    f->scatter_tmp = alloc_zero(f->be, largest_shard);
    f->norm_squared = f->be->alloc(sizeof(double));
    f->be->zero(f->norm_squared, sizeof(double));
    f->clip_scale = alloc_zero(f->be, 1);
    m->hooks.fn = on_unit;
    m->hooks.ctx = f;
}

void fsdp_free(struct fsdp *f) {
    fsdp_release_all(f);
    for (int u = 0; u < f->n_units; u++) {
        struct fsdp_unit *unit = &f->units[u];
        if (unit->full_grad) f->be->free(unit->full_grad), f->model->grads[u] = NULL;
        if (f->model->grads[u] == unit->grad) f->model->grads[u] = NULL; /* grads_in_shard, mid-backward */
        f->be->free(unit->param), f->be->free(unit->grad), f->be->free(unit->adam_m), f->be->free(unit->adam_v);
    }
    f->be->free(f->scatter_tmp);
    f->be->free(f->norm_squared);
    f->be->free(f->clip_scale);
    free(f->units);
    f->model->hooks.fn = NULL;
    f->model->hooks.ctx = NULL;
}

void fsdp_zero_grads(struct fsdp *f) {
    for (int u = 0; u < f->n_units; u++)
        f->be->zero(f->units[u].grad, f->units[u].layout.shard_count * sizeof(float));
}

/* The norm, the clipping factor and the skip decision never leave the device: the host
 * queues the whole optimizer step without waiting (the data comm is in the backend's
 * memory, so the group's all-reduce of the squared norm runs there too). */
void fsdp_optimizer_step(struct fsdp *f, float lr, float beta1, float beta2, float eps, float weight_decay,
                         float max_norm, int step) {
    if (f->keep_units) fsdp_release_all(f); /* a forward without its backward (evaluation) kept them */
    f->be->zero(f->norm_squared, sizeof(double));
    for (int u = 0; u < f->n_units; u++)
        fsdp_shard_sum_squares_add(&f->units[u].layout, f->be, f->units[u].grad, f->norm_squared);
    if (f->comm) {
        serialise_before(f);
        finish_request(f, fsdp_global_sum_squares_start(f->data_comm, f->norm_squared));
    }
    f->be->grad_clip_scale(f->clip_scale, f->norm_squared, max_norm);
    for (int u = 0; u < f->n_units; u++) {
        struct fsdp_unit *unit = &f->units[u];
        /* the padding of a shard is 0 with gradient 0, and AdamW keeps it 0 */
        f->be->adamw_step(unit->param, unit->grad, unit->adam_m, unit->adam_v, unit->layout.shard_count, lr, beta1,
                          beta2, eps, weight_decay, f->clip_scale, step);
    }
}

double fsdp_grad_norm(struct fsdp *f) {
    double squared = 0;
    f->be->to_host(&squared, f->norm_squared, sizeof squared);
    return sqrt(squared);
}

void fsdp_set_gather_bf16(struct fsdp *f, int on) {
    if (on && (!f->be->round_to_bf16 || !f->be->widen_bf16))
        hyla_die("internal error: gathering parameters in bf16 on the %s backend, which cannot convert to bf16; "
                 "please report this bug", f->be->name);
    f->gather_bf16 = on;
}

/* Evaluation and export see the exact fp32 parameters. */
void fsdp_gather_all(struct fsdp *f) {
    fsdp_release_all(f); /* units gathered in bf16 by a step are gathered again exactly */
    f->gathering_all = 1;
    for (int u = 0; u < f->n_units; u++) gather_start(f, u);
    for (int u = 0; u < f->n_units; u++) gather_finish(f, u);
    f->gathering_all = 0;
    f->model->hooks.fn = NULL; /* everything is in place: no hooks until released */
}

void fsdp_release_all(struct fsdp *f) {
    for (int u = 0; u < f->n_units; u++) release(f, u);
    f->model->hooks.fn = on_unit;
    f->model->hooks.ctx = f;
}
