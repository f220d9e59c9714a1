/* Training end to end in one process: the same seed gives bit-identical loss curves, one
 * batch is overfitted to near-zero loss (every model type), a gradient that is not finite
 * skips the step, and the weights survive a safetensors round trip bit for bit. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "experiments/config_schema.h"
#include "harness.h"
#include "model_fixtures.h"
#include "worker/model_io.h"
#include "worker/train.h"

static struct hyla_run_config tiny_run(const char *model_file) {
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/models/%s", HYLA_SOURCE_DIR, model_file);
    const char *ov[] = {"train.seq_len=64", "train.micro_batch=4", "train.grad_accum=2", "train.steps=6",
                        "train.warmup_steps=2", "data.mqar_num_pairs=8", "data.mqar_num_queries=8"};
    struct hyla_run_config cfg;
    struct hyla_config_error err;
    if (hyla_config_load(&cfg, path, ov, (int)(sizeof ov / sizeof ov[0]), &err)) hyla_die("%s", err.message);
    return cfg;
}

static void loss_curve(const struct hyla_run_config *cfg, double *losses, int steps) {
    struct trainer t;
    struct hyla_data_error err;
    if (trainer_init(&t, cfg, hyla_backend_cpu(), NULL, &err)) hyla_die("%s", err.message);
    for (int s = 0; s < steps; s++) {
        struct step_report r;
        if (trainer_step(&t, &r, &err)) hyla_die("%s", err.message);
        losses[s] = r.loss;
    }
    trainer_free(&t);
}

static void test_same_seed_same_curve(const char *model_file) {
    struct hyla_run_config cfg = tiny_run(model_file);
    double a[6], b[6], c[6];
    loss_curve(&cfg, a, 6);
    loss_curve(&cfg, b, 6);
    cfg.train.seed += 1;
    loss_curve(&cfg, c, 6);
    char label[200];
    snprintf(label, sizeof label, "%s: same seed, bit-identical loss curve over 6 steps", model_file);
    check_bitwise_equal(label, a, b, sizeof a);
    snprintf(label, sizeof label, "%s: another seed gives another curve", model_file);
    check_true(label, memcmp(a, c, sizeof a) != 0);
}

/* 300 AdamW steps on one fixed batch of random tokens. */
static void test_overfit(enum tiny_kind kind) {
    enum { B = 2, T = 16, V = 32, STEPS = 300 };
    struct hyla_model_config mc = tiny_model_config(kind, V);
    struct hyla_model m;
    model_create(&m, hyla_backend_cpu(), &mc, B, T, 7);
    m.training = 1;
    const struct hyla_param_table *tab = &m.lay.table;
    float **am = calloc((size_t)tab->n_units, sizeof(float *)), **av = calloc((size_t)tab->n_units, sizeof(float *));
    for (int u = 0; u < tab->n_units; u++) am[u] = alloc_f32(tab->units[u].size), av[u] = alloc_f32(tab->units[u].size);
    int32_t in[B * T], tg[B * T];
    uint64_t key = hyla_rng_key(3, HYLA_RNG_TEST, 0, 0);
    for (int i = 0; i < B * T; i++) in[i] = (int32_t)(hyla_rng_u64(key, (uint64_t)i) % V);
    for (int i = 0; i < B * T; i++) tg[i] = i % T == T - 1 ? -100 : in[i + 1];
    double first = 0, last = 0;
    for (int s = 1; s <= STEPS; s++) {
        model_zero_grads(&m);
        model_set_dropout_keys(&m, (uint64_t)s);
        struct forward_stats st;
        model_forward(&m, in, tg);
        model_take_stats(&m, &st);
        model_backward(&m);
        if (s == 1) first = st.ce_loss;
        last = st.ce_loss;
        const float no_clipping = 1.0f;
        for (int u = 0; u < tab->n_units; u++)
            cpu_f32_adamw_step(m.params[u], m.grads[u], am[u], av[u], tab->units[u].size, 1e-2f, 0.9f, 0.95f, 1e-15f,
                               0.0f, &no_clipping, s);
    }
    char label[160];
    snprintf(label, sizeof label, "%s: one batch overfitted: CE %.3f -> %.4f", tiny_kind_names[kind], first, last);
    check_le(label, last, 0.05);
    for (int u = 0; u < tab->n_units; u++) free(am[u]), free(av[u]);
    free(am), free(av);
    model_free(&m);
}

static void test_nonfinite_step_skipped(void) {
    struct hyla_run_config cfg = tiny_run("tiny_gdn.yaml");
    struct trainer t;
    struct hyla_data_error err;
    if (trainer_init(&t, &cfg, hyla_backend_cpu(), NULL, &err)) hyla_die("%s", err.message);
    /* A NaN in a weight makes the gradient norm NaN: the step must be skipped and the
     * weights (other than the poisoned one) left as they were. */
    float *w = t.fsdp.units[1].param; /* unit 1's shard: with one process, the whole unit */
    size_t n = t.fsdp.units[1].layout.unit_count;
    float *before = malloc(n * sizeof(float));
    w[0] = NAN;
    memcpy(before, w, n * sizeof(float));
    struct step_report r;
    trainer_step(&t, &r, &err);
    check_true("a NaN gradient norm skips the step and counts it", r.skipped == 1 && t.skipped_steps == 1);
    check_true("the skipped step leaves the weights untouched", memcmp(before + 1, w + 1, (n - 1) * sizeof(float)) == 0);
    free(before);
    trainer_free(&t);
}

static void test_safetensors_roundtrip(enum hyla_st_dtype dtype) {
    struct hyla_model_config mc = tiny_model_config(TINY_GDN_LTE, 64);
    struct hyla_model a, b;
    model_create(&a, hyla_backend_cpu(), &mc, 1, 8, 11);
    model_create(&b, hyla_backend_cpu(), &mc, 1, 8, 12);
    a.l1_lambda[1] = 0.25f, a.num_kept[0] = 7.0f;
    char dir[] = "/tmp/hyla_st_XXXXXX", path[64], path2[64];
    if (!mkdtemp(dir)) hyla_die("mkdtemp failed");
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    snprintf(path2, sizeof path2, "%s/b.safetensors", dir);
    struct hyla_st_error err;
    int rc = model_save_safetensors(&a, path, dtype, NULL, 0, &err) || model_load_safetensors(&b, path, &err) ||
             model_save_safetensors(&b, path2, dtype, NULL, 0, &err);
    check_true(dtype == HYLA_ST_F32 ? "safetensors F32 save/load/save works" : "safetensors BF16 save/load/save works",
               rc == 0);
    /* The second file must equal the first byte for byte. */
    FILE *fa = fopen(path, "rb"), *fb = fopen(path2, "rb");
    int same = fa && fb;
    for (int ca = 0, cb = 0; same && ca != EOF;) {
        ca = fgetc(fa), cb = fgetc(fb);
        same = ca == cb;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    check_true(dtype == HYLA_ST_F32 ? "F32 round trip is bit-exact" : "BF16 round trip is bit-exact", same);
    if (dtype == HYLA_ST_F32) {
        int equal = 1;
        for (int u = 0; u < a.lay.table.n_units; u++)
            equal &= !memcmp(a.params[u], b.params[u], a.lay.table.units[u].size * sizeof(float));
        check_true("loaded F32 weights equal the saved ones", equal && b.l1_lambda[1] == 0.25f && b.num_kept[0] == 7.0f);
    }
    unlink(path), unlink(path2), rmdir(dir);
    model_free(&a), model_free(&b);
}

int main(void) {
    test_same_seed_same_curve("tiny_gdn_lte.yaml");
    test_same_seed_same_curve("tiny_gdn_nsa.yaml");
    for (int k = 0; k < TINY_KINDS; k++) test_overfit((enum tiny_kind)k);
    test_nonfinite_step_skipped();
    test_safetensors_roundtrip(HYLA_ST_F32);
    test_safetensors_roundtrip(HYLA_ST_BF16);
    return test_finish();
}
