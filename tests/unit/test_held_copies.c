/* The model's held activations (backend.h's hold_bf16_copy: the CUDA backend rounds an activation
 * to bf16 once and lets both passes' products read that copy) keep their contract, for every
 * model type: a held array does not change until it is released (else a product would read a
 * stale copy), every release is of a held array, and a backward pass leaves nothing held. The
 * CPU backend with recording hold / forget entries runs two training steps (forward, backward)
 * and an evaluation's forward pass (held arrays stay held: the next forward holds them again).
 * Expected copies (expect_bf16_copy: the producing op may write the copy) are each held next
 * with the same count (none left pending); an expect of a held array ends that hold, as a
 * second hold replaces the first (after an evaluation's forward pass). */
#include <stdlib.h>

#include "harness.h"
#include "model_fixtures.h"
#include "worker/model.h"

enum { B = 2, T = 16, VOCAB = 32, MAX_HELD = 256 };

static struct held {
    const float *x;
    size_t count;
    uint64_t hash; /* of the values when held */
} held[MAX_HELD];
static int n_held, changed, stray_releases, overflow;
static struct {
    const float *x;
    size_t count;
} pending[MAX_HELD];
static int n_pending, n_expects, hold_count_differs;

static uint64_t hash_of(const float *x, size_t count) { /* FNV-1a over the bytes */
    const unsigned char *p = (const unsigned char *)x;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < count * sizeof(float); i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}
static int find(const float *x) {
    for (int i = 0; i < n_held; i++)
        if (held[i].x == x) return i;
    return -1;
}
static void record_expect(const float *x, size_t count) {
    n_expects++;
    const int i = find(x);
    if (i >= 0) held[i] = held[--n_held]; /* the hold ends here, as a second hold replaces the first */
    if (n_pending == MAX_HELD) {
        overflow++;
        return;
    }
    pending[n_pending].x = x, pending[n_pending++].count = count;
}
static void record_hold(const float *x, size_t count) {
    for (int p = 0; p < n_pending; p++)
        if (pending[p].x == x) {
            hold_count_differs += pending[p].count != count;
            pending[p] = pending[--n_pending];
            break;
        }
    int i = find(x);
    if (i < 0) {
        if (n_held == MAX_HELD) {
            overflow++;
            return;
        }
        i = n_held++;
    }
    held[i] = (struct held){x, count, hash_of(x, count)}; /* a second hold replaces the first */
}
static void record_forget(const float *x) {
    const int i = find(x);
    if (i < 0) {
        stray_releases++;
        return;
    }
    changed += hash_of(held[i].x, held[i].count) != held[i].hash;
    held[i] = held[--n_held];
}
/* Held arrays that changed since they were held (checked without releasing them). */
static int changed_while_held(void) {
    int n = 0;
    for (int i = 0; i < n_held; i++) n += hash_of(held[i].x, held[i].count) != held[i].hash;
    return n;
}

static void check_kind(enum tiny_kind kind) {
    struct hyla_backend be = *hyla_backend_cpu();
    be.hold_bf16_copy = record_hold, be.forget_bf16_twin = record_forget, be.expect_bf16_copy = record_expect;
    struct hyla_model_config cfg = tiny_model_config(kind, VOCAB);
    cfg.attn.dropout_prob = 0.1;
    struct hyla_model m;
    model_create(&m, &be, &cfg, B, T, 7);
    m.training = 1;
    model_set_dropout_keys(&m, 3);
    int32_t in[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) in[i] = (int32_t)((i * 7 + 3) % VOCAB);
    for (int i = 0; i < B * T; i++) tg[i] = (i % T == T - 1) ? -100 : in[i + 1];
    n_held = changed = stray_releases = overflow = 0;
    n_pending = n_expects = hold_count_differs = 0;
    int held_after_forward = 0, left_after_backward = 0, changed_in_eval = 0, left_pending = 0;
    for (int step = 0; step < 2; step++) {
        model_zero_grads(&m);
        model_forward_loss(&m, in, tg);
        held_after_forward += n_held, left_pending += n_pending;
        model_backward(&m);
        left_after_backward += n_held, left_pending += n_pending;
    }
    m.training = 0; /* an evaluation's forward pass, then a training step again */
    model_forward_loss(&m, in, tg);
    changed_in_eval = changed_while_held();
    left_pending += n_pending;
    m.training = 1;
    model_zero_grads(&m);
    model_forward_loss(&m, in, tg);
    model_backward(&m);
    left_after_backward += n_held, left_pending += n_pending;

    char label[160];
    const char *name = tiny_kind_names[kind];
    snprintf(label, sizeof label, "%s: activations held by the forward passes", name);
    check_true(label, held_after_forward > 0 && overflow == 0);
    snprintf(label, sizeof label, "%s: held arrays changed before their release", name);
    check_le(label, changed + changed_in_eval, 0);
    snprintf(label, sizeof label, "%s: releases of arrays not held", name);
    check_le(label, stray_releases, 0);
    snprintf(label, sizeof label, "%s: arrays still held after a backward pass", name);
    check_le(label, left_after_backward, 0);
    snprintf(label, sizeof label, "%s: copies expected (norm outputs, the residual's gradient)", name);
    check_true(label, n_expects > 0);
    snprintf(label, sizeof label, "%s: expected copies not held next, or held with another count", name);
    check_le(label, left_pending + hold_count_differs, 0);
    model_free(&m);
}

int main(void) {
    for (int k = 0; k < TINY_KINDS; k++) check_kind((enum tiny_kind)k);
    return test_finish();
}
