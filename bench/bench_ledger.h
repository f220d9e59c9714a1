#ifndef HYLA_BENCH_LEDGER_H
#define HYLA_BENCH_LEDGER_H
/* `hyla bench ledger ...`: argv[0] is "ledger". Ingest rate of metric and head-stat rows and
 * the latency of the `hyla ledger` queries on a ledger of 1M metric rows and 100k head-stat
 * rows. Returns the exit status. */
int bench_ledger_main(int argc, char **argv);
#endif
