/* GPU-side benchmarks: `hyla bench kernels --backend cuda` (bench_gpu_kernels.c) and
 * `hyla bench train` (bench_train.c, any backend). */
#ifndef HYLA_BENCH_GPU_H
#define HYLA_BENCH_GPU_H

/* The GPU's matrix-product rates and the sequence-mixing ops at the reference's shapes. */
/* only: run the ops whose name contains it (NULL: all). */
int bench_kernels_gpu(int json, double min_seconds, const char *only, int bf16);
/* argv[0] is "train". Returns the exit status. */
int bench_train_main(int argc, char **argv);

#endif
