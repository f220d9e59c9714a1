/* `hyla bench train CONFIG [--backend cpu|cuda] [--set key=value]... [--steps N] [--warmup W]
 * [--format table|json]`: training throughput of one process. Runs W + N optimizer steps of
 * the config (synthetic MQAR data unless data.task is set otherwise) and reports, over the
 * last N: tokens/s, ms per step, MFU and the peak device memory. MFU counts 6 FLOPs per
 * parameter and token (the dense products; attention and the delta rule are left out, so it
 * is a lower bound) over the GPU's measured bf16 matrix-product rate. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_gpu.h"
#include "common/timer.h"
#include "coordinator/cli_args.h"
#include "experiments/config_schema.h"
#include "worker/train.h"
#ifdef HYLA_WITH_CUDA
#include "kernels/cuda/cuda_device.h"
#endif

static int usage(void) {
    fputs("usage: hyla bench train CONFIG.yaml [--backend cpu|cuda] [--set key=value]... [--steps N] [--warmup W]\n"
          "                        [--format table|json]\n"
          "  synthetic MQAR data (data.task=mqar) unless --set data.task=... says otherwise;\n"
          "  HYLA_PROFILE_OPS=1 adds a per-op time table (cuda)\n",
          stderr);
    return 2;
}

/* Peak device memory, sampled every millisecond by a helper thread while steps run. */
struct memory_watch {
    pthread_t thread;
    volatile int stop;
    size_t peak;
};
static void *watch_memory(void *arg) {
    struct memory_watch *w = arg;
    while (!w->stop) {
#ifdef HYLA_WITH_CUDA
        size_t used = hyla_cuda_memory_used();
        if (used > w->peak) w->peak = used;
#endif
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    return NULL;
}

int bench_train_main(int argc, char **argv) {
    const char *config_path = NULL, *backend = "cpu";
    struct cli_overrides ov = {0};
    int steps = 5, warmup = 2, json = 0;
    ov.items[ov.count++] = "data.task=mqar"; /* a later --set data.task=... wins */
    for (int i = 1; i < argc; i++) {
        int taken = cli_take_override(argc, argv, &i, &ov);
        if (taken < 0) return 2;
        if (taken) continue;
        const char *value;
        if (!strcmp(argv[i], "--backend")) {
            if (!(backend = cli_option_value(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--steps") || !strcmp(argv[i], "--warmup")) {
            const char *opt = argv[i];
            if (!(value = cli_option_value(argc, argv, &i))) return 2;
            char *end;
            long n = strtol(value, &end, 10);
            if (*end || n < (strcmp(opt, "--steps") ? 0 : 1) || n > 100000) {
                fprintf(stderr, "hyla: error: %s needs a whole number (%s), got '%s'\n", opt,
                        strcmp(opt, "--steps") ? ">= 0" : ">= 1", value);
                return 2;
            }
            *(strcmp(opt, "--steps") ? &warmup : &steps) = (int)n;
        } else if (!strcmp(argv[i], "--format")) {
            if (!(value = cli_option_value(argc, argv, &i))) return 2;
            if (!strcmp(value, "json")) json = 1;
            else if (strcmp(value, "table") != 0) {
                fprintf(stderr, "hyla: error: unknown --format '%s'; choose table or json\n", value);
                return 2;
            }
        } else if (cli_take_config(argv[i], &config_path)) {
            return usage();
        }
    }
    if (!config_path) return usage();
    const struct hyla_backend *be = cli_backend(backend);
    if (!be) return 1;

    struct hyla_run_config cfg;
    struct hyla_config_error cerr;
    if (hyla_config_load(&cfg, config_path, ov.items, ov.count, &cerr)) {
        fprintf(stderr, "hyla: error: %s\n", cerr.message);
        return 1;
    }
    cfg.train.steps = warmup + steps;
    struct trainer t;
    struct hyla_data_error derr;
    if (trainer_init(&t, &cfg, be, NULL, &derr)) {
        fprintf(stderr, "hyla: error: %s\n", derr.message);
        return 1;
    }
    const int grad_accum = t.grad_accum;
    const double tokens_per_step = (double)grad_accum * cfg.train.micro_batch * cfg.train.seq_len;
    const double params = (double)model_param_count(&t.model.lay);
    struct step_report r;
    struct memory_watch watch = {.peak = 0};
    pthread_create(&watch.thread, NULL, watch_memory, &watch);
    double start = 0, last_loss = 0;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) be->synchronize(), start = hyla_now_seconds();
        if (trainer_step(&t, &r, &derr)) {
            fprintf(stderr, "hyla: error: %s\n", derr.message);
            return 1;
        }
        last_loss = r.loss;
    }
    be->synchronize();
    const double seconds = hyla_now_seconds() - start;
    watch.stop = 1;
    pthread_join(watch.thread, NULL);
    trainer_free(&t);

    const double tokens_per_s = tokens_per_step * steps / seconds;
    double bf16_tflops = 0, mfu = 0;
#ifdef HYLA_WITH_CUDA
    if (!strcmp(be->name, "cuda") || !strcmp(backend, "cuda")) {
        bf16_tflops = hyla_cuda_gemm_tflops(8192, HYLA_GEMM_BF16, 0.3);
        mfu = 6.0 * params * tokens_per_s / (bf16_tflops * 1e12);
    }
#endif
    const char *precision = cfg.train.precision == HYLA_PRECISION_BF16 ? "bf16" : "fp32";
    if (json) {
        json_t *root = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f}", "config", config_path,
                                 "backend", backend, "precision", precision, "micro_batch", cfg.train.micro_batch,
                                 "seq_len", cfg.train.seq_len, "grad_accum", grad_accum, "steps", steps, "params",
                                 params, "tokens_per_s", tokens_per_s, "ms_per_step", 1e3 * seconds / steps,
                                 "last_loss", last_loss);
        if (bf16_tflops > 0) {
            json_object_set_new(root, "bf16_tflops", json_real(bf16_tflops));
            json_object_set_new(root, "mfu", json_real(mfu));
        }
        if (watch.peak) json_object_set_new(root, "peak_device_bytes", json_integer((json_int_t)watch.peak));
        char *text = json_dumps(root, JSON_INDENT(2));
        puts(text);
        free(text);
        json_decref(root);
    } else {
        printf("%s on %s (%s): %d x %d tokens x %d micro-batches per step, %.1fM parameters\n", config_path, backend,
               precision, cfg.train.micro_batch, cfg.train.seq_len, grad_accum, params / 1e6);
        printf("  %.0f tokens/s, %.1f ms per step over %d steps (after %d warm-up), last loss %.4f\n", tokens_per_s,
               1e3 * seconds / steps, steps, warmup, last_loss);
        if (bf16_tflops > 0)
            printf("  MFU %.2f%% (6 x params x tokens/s over the measured bf16 rate, %.0f TFLOP/s)\n", 100 * mfu,
                   bf16_tflops);
        if (watch.peak) printf("  peak device memory %.2f GB (in use on the GPU, sampled every ms)\n", watch.peak / 1e9);
    }
    return 0;
}
