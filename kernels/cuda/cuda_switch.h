// The CUDA backend's environment switches: each path that replaced an older one (or waits for a
// GPU run to replace it) has a variable that picks it, NAME=0 off, another number on, unset or
// empty its default (docs/cuda.md lists them). Read when called, so that a test can run both
// forms in one process; a caller that wants one decision per process keeps the result in a
// static.
#ifndef HYLA_CUDA_SWITCH_H
#define HYLA_CUDA_SWITCH_H

#include <stdlib.h>

static inline bool cuda_switch(const char *name, bool by_default) {
    const char *e = getenv(name);
    return e && *e ? atoi(e) != 0 : by_default;
}

#endif
