/* A training step never makes the host wait for the backend inside it (issue #7, "no host
 * synchronisation inside a step"): run through a CPU backend that counts its device-to-host
 * copies and synchronisations, a step with 2 micro-batches makes exactly 2 copies — the step's
 * statistics (model_take_stats) and its gradient norm (fsdp_grad_norm), both after the
 * optimizer step has been queued — and no synchronisation, for every model type. The losses
 * are those of the plain CPU backend, bit for bit. */
#include <stdlib.h>
#include <string.h>

#include "experiments/config_schema.h"
#include "harness.h"
#include "worker/train.h"

static const char *const models[] = {"tiny_gdn", "tiny_gdn_swa", "tiny_gdn_attn", "tiny_gdn_lte", "tiny_gdn_nsa",
                                     "tiny_transformer", "tiny_nsa"};
enum { STEPS = 3 };

static struct hyla_backend counting;
static const struct hyla_backend *cpu;
static int copies_to_host, synchronisations;

static void counted_to_host(void *dst, const void *src, size_t bytes) {
    copies_to_host++;
    cpu->to_host(dst, src, bytes);
}
static void counted_synchronize(void) {
    synchronisations++;
    cpu->synchronize();
}

static struct hyla_run_config load(const char *model) {
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/models/%s.yaml", HYLA_SOURCE_DIR, model);
    const char *ov[] = {"train.seq_len=48", "train.micro_batch=2", "train.grad_accum=2", "train.steps=3",
                        "train.warmup_steps=1", "data.mqar_num_pairs=6", "data.mqar_num_queries=6"};
    struct hyla_run_config cfg;
    struct hyla_config_error err;
    if (hyla_config_load(&cfg, path, ov, (int)(sizeof ov / sizeof ov[0]), &err)) hyla_die("%s", err.message);
    return cfg;
}

/* losses of STEPS steps; the most copies and synchronisations any one step made */
static void train(const struct hyla_run_config *cfg, const struct hyla_backend *be, double *losses, int *copies,
                  int *syncs) {
    struct trainer t;
    struct hyla_data_error err;
    if (trainer_init(&t, cfg, be, NULL, &err)) hyla_die("%s", err.message);
    *copies = *syncs = 0;
    for (int s = 0; s < STEPS; s++) {
        copies_to_host = synchronisations = 0;
        struct step_report r;
        if (trainer_step(&t, &r, &err)) hyla_die("%s", err.message);
        losses[s] = r.loss;
        *copies = copies_to_host > *copies ? copies_to_host : *copies;
        *syncs = synchronisations > *syncs ? synchronisations : *syncs;
    }
    trainer_free(&t);
}

int main(void) {
    cpu = hyla_backend_cpu();
    counting = *cpu;
    counting.name = "cpu (counting)";
    counting.to_host = counted_to_host, counting.synchronize = counted_synchronize;
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        const struct hyla_run_config cfg = load(models[i]);
        double plain[STEPS], counted[STEPS];
        int copies, syncs, unused;
        train(&cfg, cpu, plain, &unused, &unused);
        train(&cfg, &counting, counted, &copies, &syncs);
        char label[160];
        snprintf(label, sizeof label, "%s: device-to-host copies in a step of 2 micro-batches (%d) == 2", models[i],
                 copies);
        check_true(label, copies == 2);
        snprintf(label, sizeof label, "%s: synchronisations in a step (%d) == 0", models[i], syncs);
        check_true(label, syncs == 0);
        snprintf(label, sizeof label, "%s: losses through the counting backend are the plain CPU's", models[i]);
        check_bitwise_equal(label, counted, plain, sizeof plain);
    }
    return test_finish();
}
