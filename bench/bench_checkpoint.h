#ifndef HYLA_BENCH_CHECKPOINT_H
#define HYLA_BENCH_CHECKPOINT_H
/* `hyla bench checkpoint ...`: argv[0] is "checkpoint". */
int bench_checkpoint_main(int argc, char **argv);
#endif
