/* Wall-clock time for progress lines and benchmarks. */
#ifndef HYLA_TIMER_H
#define HYLA_TIMER_H

#include <time.h>

static inline double hyla_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
