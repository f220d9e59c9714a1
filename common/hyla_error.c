#include "hyla_error.h"

#include <stdarg.h>

void hyla_die(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fputs("hyla: error: ", stderr);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    exit(1);
}

void *hyla_malloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) hyla_die("out of memory allocating %zu bytes; reduce the batch or model size", bytes);
    return p;
}

void *hyla_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) hyla_die("out of memory allocating %zu x %zu bytes; reduce the batch or model size",
                     count, size);
    return p;
}

void hyla_vmessage(char *buf, size_t size, const char *fmt, va_list args) {
    /* A message longer than the buffer is cut; that is acceptable for a message. */
    if (vsnprintf(buf, size, fmt, args) < 0) snprintf(buf, size, "(error message could not be formatted)");
}
