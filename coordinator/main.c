/* The hyla command: dispatches to the subcommands. */
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"
#include "commands.h"
#ifdef HYLA_WITH_CUDA
#include "kernels/cuda/cuda_device.h"
#endif

static void usage(FILE *out) {
    fputs("usage: hyla <command> [options]\n"
          "commands:\n"
          "  train CONFIG [--set k=v]... [--out DIR]  train one run in this process\n"
          "  run BATCH [--dry-run] [--set k=v]...  a batch of runs (sweeps), recorded in the ledger\n"
          "  ckpt ls|verify|inspect DIR            sharded checkpoints\n"
          "  eval --weights W --task T [...]       held-out accuracy or loss of trained weights\n"
          "  export --weights W --config C -o OUT [--dtype f32|bf16]   weights as safetensors\n"
          "  data pack TEXT... -o DIR              byte-level token shards from text files\n"
          "  demo [--json]                         forgetfulness demo: tiny GDN vs laLTE on MQAR\n"
          "  ledger runs|show|metrics|heads|compare|events|sql ...   query the experiment ledger\n"
          "  report [--batch B] -o report.html     an HTML report of the ledger's runs\n"
          "  bench kernels|ledger [--format table|json]   benchmarks\n"
          "  version                               print the version\n",
          out);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        puts("hyla 0.1.0");
#ifdef HYLA_WITH_CUDA
        printf("CUDA backend: built, %d device(s) visible\n", hyla_cuda_device_count());
#else
        puts("CUDA backend: not built");
#endif
        return 0;
    }
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "bench")) return bench_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "run")) return cmd_run(argc - 1, argv + 1);
    if (!strcmp(argv[1], "ckpt")) return cmd_ckpt(argc - 1, argv + 1);
    if (!strcmp(argv[1], "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(argv[1], "export")) return cmd_export(argc - 1, argv + 1);
    if (!strcmp(argv[1], "data")) return cmd_data(argc - 1, argv + 1);
    if (!strcmp(argv[1], "demo")) return cmd_demo(argc - 1, argv + 1);
    if (!strcmp(argv[1], "ledger")) return cmd_ledger(argc - 1, argv + 1);
    if (!strcmp(argv[1], "report")) return cmd_report(argc - 1, argv + 1);
    fprintf(stderr, "hyla: error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
