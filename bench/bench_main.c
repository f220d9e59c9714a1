#include <stdio.h>
#include <string.h>

#include "bench.h"

int bench_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fputs("hyla: error: bench is not built yet\n", stderr);
    return 2;
}
