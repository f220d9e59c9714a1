/* Batch files: deterministic expansion (variants × grid × seeds), stable readable names,
 * overrides applied through the config schema, and clear errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "experiments/batch.h"
#include "harness.h"

static char dir[] = "/tmp/hyla_batch_XXXXXX";

static const char *write_file(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) hyla_die("cannot write %s", path);
    fputs(text, f);
    fclose(f);
    return path;
}

static void expect_error(const char *what, const char *file_text, const char *fragment) {
    struct hyla_batch b;
    struct hyla_config_error err;
    int rc = hyla_batch_load(write_file("bad.yaml", file_text), NULL, 0, &b, &err);
    char label[1400];
    snprintf(label, sizeof label, "%s -> %s", what, rc ? err.message : "(no error)");
    check_true(label, rc != 0 && strstr(err.message, fragment) != NULL);
}

int main(void) {
    if (!mkdtemp(dir)) hyla_die("mkdtemp failed");
    char base[1200];
    snprintf(base, sizeof base, "base: %s/configs/demo/mqar_lte.yaml\n", HYLA_SOURCE_DIR);
    char text[4096];
    snprintf(text, sizeof text,
             "batch: ablation\n%s"
             "set:\n  train.steps: 7\n"
             "sweep:\n"
             "  variants:\n"
             "    - {name: lte, set: {}}\n"
             "    - {name: no-context, set: {model.attn.conv_size: [1, 1, 1]}}\n"
             "  grid:\n"
             "    model.attn.buffer_size: [8, 16]\n"
             "    train.lr: [1.0e-3, 2.0e-3, 3.0e-3]\n"
             "  seeds: [1, 2]\n"
             "workers_per_run: 2\n"
             "retry: {max_attempts: 3}\n", base);
    struct hyla_batch b;
    struct hyla_config_error err;
    int rc = hyla_batch_load(write_file("ablation.yaml", text), NULL, 0, &b, &err);
    check_true(rc ? err.message : "a 2 x 2 x 3 x 2 batch loads", rc == 0);
    if (rc) return test_finish();
    check_true("24 runs", b.n_runs == 24);
    check_true("workers_per_run and retry read", b.workers_per_run == 2 && b.max_attempts == 3);
    check_true("first run name", !strcmp(b.runs[0].name, "ablation/lte,attn.buffer_size=8,train.lr=1.0e-3,seed=1"));
    check_true("seeds vary fastest", !strcmp(b.runs[1].name, "ablation/lte,attn.buffer_size=8,train.lr=1.0e-3,seed=2"));
    check_true("then the last grid key", !strcmp(b.runs[2].name, "ablation/lte,attn.buffer_size=8,train.lr=2.0e-3,seed=1"));
    check_true("variants vary slowest",
               !strcmp(b.runs[12].name, "ablation/no-context,attn.buffer_size=8,train.lr=1.0e-3,seed=1"));
    check_true("overrides reach the config", b.runs[23].cfg.model.attn.buffer_size == 16 &&
                                                 b.runs[23].cfg.train.lr == 3.0e-3 && b.runs[23].cfg.train.seed == 2);
    check_true("variant set applied", b.runs[12].cfg.model.attn.conv_size[0] == 1 &&
                                          b.runs[0].cfg.model.attn.conv_size[0] == 3);
    check_true("batch set applied to every run", b.runs[0].cfg.train.steps == 7 && b.runs[23].cfg.train.steps == 7);
    check_true("the run config carries the run's name", !strcmp(b.runs[5].cfg.name, b.runs[5].name));
    /* the same file expands the same way again */
    struct hyla_batch again;
    hyla_batch_load(write_file("ablation.yaml", text), NULL, 0, &again, &err);
    int same = again.n_runs == b.n_runs;
    for (int i = 0; same && i < b.n_runs; i++) same = !strcmp(again.runs[i].name, b.runs[i].name);
    check_true("expansion is deterministic", same);
    hyla_batch_free(&again);
    hyla_batch_free(&b);

    /* the shipped demo batch */
    char demo[1200];
    snprintf(demo, sizeof demo, "%s/configs/batches/demo_lte_budget.yaml", HYLA_SOURCE_DIR);
    rc = hyla_batch_load(demo, NULL, 0, &b, &err);
    check_true(rc ? err.message : "the demo batch loads with 4 runs", rc == 0 && b.n_runs == 4);
    if (!rc) hyla_batch_free(&b);

    char bad[2048];
    snprintf(bad, sizeof bad, "%ssweep:\n  grid:\n    model.attn.bufer_size: [1, 2]\n", base);
    expect_error("unknown sweep key", bad, "unknown sweep key 'model.attn.bufer_size'");
    snprintf(bad, sizeof bad, "%ssweep:\n  grid: {model.attn.buffer_size: [1, 2]\n", base);
    expect_error("malformed YAML names line and column", bad, "bad.yaml:");
    snprintf(bad, sizeof bad, "%sswep: {}\n", base);
    expect_error("unknown top-level key lists valid keys", bad, "valid keys: batch, description, base");
    expect_error("missing base file", "base: nowhere.yaml\n", "nowhere.yaml");
    snprintf(bad, sizeof bad, "%ssweep:\n  variants:\n    - {name: a, set: {}}\n    - {name: a, set: {}}\n", base);
    expect_error("two runs with one name", bad, "both named");
    snprintf(bad, sizeof bad, "%sset:\n  model.attn.window_size: wide\n", base);
    expect_error("a bad value names the key", bad, "model.attn.window_size");
    unlink(write_file("bad.yaml", "")), unlink(write_file("ablation.yaml", "")), rmdir(dir);
    return test_finish();
}
