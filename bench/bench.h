#ifndef HYLA_BENCH_H
#define HYLA_BENCH_H
/* `hyla bench ...`: argv[0] is "bench". Returns the exit status. */
int bench_main(int argc, char **argv);
#endif
