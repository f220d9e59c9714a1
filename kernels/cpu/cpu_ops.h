/* Declarations of every CPU op in both precisions: cpu_f32_<op> and cpu_f64_<op>.
 * The op lists live in kernels/ops/ops_<family>.h as HYLA_OP(return, name, (arguments)) entries
 * written against REAL; this header expands them once per precision. */
#ifndef HYLA_CPU_OPS_H
#define HYLA_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

#define HYLA_OP(ret, name, args) ret K(name) args;

#define REAL float
#define K(name) cpu_f32_##name
#include "../ops/all_ops.h"
#undef REAL
#undef K

#define REAL double
#define K(name) cpu_f64_##name
#include "../ops/all_ops.h"
#undef REAL
#undef K

#undef HYLA_OP

#endif
