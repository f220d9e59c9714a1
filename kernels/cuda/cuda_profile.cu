// Per-op profile of a backend: a copy of the table whose every entry synchronises, calls the
// real op, synchronises again and adds the wall time to the op's total. Turned on with
// HYLA_PROFILE_OPS=1 (`hyla train`, `hyla bench train`); the table of totals goes to stderr
// when the process exits. The synchronisation makes steps slower, so the totals say where
// the time goes, not how fast a step is.
#include <chrono>
#include <stdio.h>
#include <stdlib.h>
#include <type_traits>

#include "backend_cuda.h"

namespace {

enum op_index {
#define REAL float
#define HYLA_OP(ret, name, args) OP_##name,
#include "../ops/all_ops.h"
#undef HYLA_OP
#undef REAL
    OP_gemm,
    OP_COUNT
};

const char *const op_names[OP_COUNT + 1] = {
#define REAL float
#define HYLA_OP(ret, name, args) #name,
#include "../ops/all_ops.h"
#undef HYLA_OP
#undef REAL
    "gemm", NULL};

struct op_total {
    double seconds;
    long calls;
};
op_total totals[OP_COUNT];
const hyla_backend *profiled_base;

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// timed<I, F>::call has the signature of the op F and times the base table's entry.
template <int I, typename F> struct timed;
template <int I, typename R, typename... A> struct timed<I, R (*)(A...)> {
    static inline R (*inner)(A...) = nullptr;
    static R call(A... args) {
        profiled_base->synchronize();
        const double start = now_seconds();
        if constexpr (std::is_void<R>::value) {
            inner(args...);
            finish(start);
        } else {
            R result = inner(args...);
            finish(start);
            return result;
        }
    }
    static void finish(double start) {
        profiled_base->synchronize();
        totals[I].seconds += now_seconds() - start;
        totals[I].calls++;
    }
};

void print_profile(void) {
    double sum = 0;
    int order[OP_COUNT], n = 0;
    for (int i = 0; i < OP_COUNT; i++)
        if (totals[i].calls) sum += totals[i].seconds, order[n++] = i;
    for (int a = 1; a < n; a++) // insertion sort, largest total first
        for (int b = a; b > 0 && totals[order[b]].seconds > totals[order[b - 1]].seconds; b--) {
            int tmp = order[b];
            order[b] = order[b - 1], order[b - 1] = tmp;
        }
    fprintf(stderr, "\nper-op profile (%s backend, synchronised around every op): %.3f s in ops\n",
            profiled_base->name, sum);
    fprintf(stderr, "%-28s %8s %12s %12s %7s\n", "op", "calls", "total ms", "ms/call", "share");
    for (int k = 0; k < n; k++) {
        const op_total &t = totals[order[k]];
        fprintf(stderr, "%-28s %8ld %12.2f %12.4f %6.1f%%\n", op_names[order[k]], t.calls, t.seconds * 1e3,
                t.seconds * 1e3 / (double)t.calls, sum > 0 ? 100.0 * t.seconds / sum : 0.0);
    }
}

} // namespace

extern "C" const struct hyla_backend *hyla_backend_profiled(const struct hyla_backend *base) {
    static hyla_backend table;
    if (profiled_base) return &table;
    profiled_base = base;
    table = *base;
#define REAL float
#define HYLA_OP(ret, name, args)                                                                                   \
    timed<OP_##name, decltype(table.name)>::inner = base->name;                                                    \
    table.name = base->name ? timed<OP_##name, decltype(table.name)>::call : nullptr;
#include "../ops/all_ops.h"
#undef HYLA_OP
#undef REAL
    timed<OP_gemm, decltype(table.gemm)>::inner = base->gemm;
    table.gemm = timed<OP_gemm, decltype(table.gemm)>::call;
    atexit(print_profile);
    return &table;
}
