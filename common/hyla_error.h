/* Errors: every failure names where it happened, the cause and, where possible, the fix. */
#ifndef HYLA_ERROR_H
#define HYLA_ERROR_H

#include <stdio.h>
#include <stdlib.h>

/* Print "hyla: error: <message>" and exit with status 1. printf-style. */
void hyla_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Abort on a broken internal invariant (a bug in hyla, not bad input). */
#define HYLA_ASSERT(cond)                                                              \
    do {                                                                               \
        if (!(cond)) hyla_die("internal error at %s:%d: assertion `%s` failed; "       \
                              "please report this bug", __FILE__, __LINE__, #cond);    \
    } while (0)

/* Format an error message into buf (cut to size; a formatting failure leaves a note):
 * the one place every module's error struct is filled from a printf-style message. */
#include <stdarg.h>
void hyla_vmessage(char *buf, size_t size, const char *fmt, va_list args);

/* malloc that never returns NULL; names the size on failure. */
void *hyla_malloc(size_t bytes);
void *hyla_calloc(size_t count, size_t size);

#endif
