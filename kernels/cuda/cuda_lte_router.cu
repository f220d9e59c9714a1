// CUDA: the LTE router CNN (MODEL.md §5.2) with the CPU twin's semantics, including its
// dropout masks (regenerated from the same counter-based keys and element indices, see
// kernels/cpu/op_lte_router.c) and its saved activations (a_1 .. a_n, z). No atomics: the same
// bits every run.
//
// Two forms. The fused kernels do a whole router pass for a tile of tokens of one (batch, kv
// head) in one block, the default since their GPU run (H100, 2026-12-07: test_cuda_ops
// lte_router, memcheck and racecheck clean); the per-tap form (cuBLAS, cuda_lte_router_taps.cu)
// is the fallback for shapes whose tile does not fit in shared memory, forced by
// HYLA_ROUTER_TAPS=1. In bf16 mode the fused kernels can run their products on the tensor cores
// (HYLA_ROUTER_MMA, below; cuda_lte_router_fused.cu).
// This file picks the form; cuda_lte_router.cuh holds what they share.
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cuda_lte_router.cuh"
#include "cuda_lte_router_plan.cuh"
#include "cuda_switch.h"

// HYLA_ROUTER_TAPS=1 takes the per-tap form for every shape, =0 the fused kernels where the
// shape fits; unset, FUSED_BY_DEFAULT decides (fused; ctest emu.router checks them on the CPU).
static const bool FUSED_BY_DEFAULT = true;
static bool taps_forced(void) { return cuda_switch("HYLA_ROUTER_TAPS", !FUSED_BY_DEFAULT); }

// HYLA_ROUTER_MMA=1 runs the fused kernels' products on the tensor cores (the convs' and input
// gradients' on tf32 operands, the weight gradients' on bf16 ones; fp32 sums) in bf16 mode
// (cuda_matmul_bf16()) both ways, =fwd / =bwd one way only, =0 on the CUDA cores in fp32 as in
// fp32 mode; unset, MMA_BY_DEFAULT decides (ctest emu.router checks the form on the CPU). On an
// H100 (2026-12-07, docs/gpu-runs/2026-12-07f-h100, one row a launch) the backward took 398 us a
// call on the tensor cores against 509 on the CUDA cores, the forward 339 against 248; with
// the forward's 8-row launches and 16-byte accesses (docs/gpu-runs/2026-12-07g-h100) the
// forward took 740 us a 4-row launch on the tensor cores (0.755 ms against 0.880 in the kernel
// bench) and laLTE trained at 80,396 tokens/s against 79,927: both ways are the default.
// Shapes the tensor-core form cannot take run on the CUDA cores.
static const char *const MMA_BY_DEFAULT = "1";
static bool mma_on(bool backward) {
    if (!cuda_matmul_bf16()) return false;
    const char *e = getenv("HYLA_ROUTER_MMA");
    if (!e || !*e) e = MMA_BY_DEFAULT;
    return atoi(e) == 1 || !strcmp(e, backward ? "bwd" : "fwd");
}

// HYLA_ROUTER_FIXED=1 runs the router at the papers' shape on its own kernels
// (cuda_lte_router_fixed.cu, _fixed_bwd.cu: every dimension a constant, a head's weights kept in
// shared memory by a block for all its tiles) both ways where the tensor-core form would run,
// =fwd / =bwd one way only, =0 on the fused kernels; unset, FIXED_BY_DEFAULT decides: on since
// its H100 run (2026-12-08, docs/gpu-runs/2026-12-08-h100: test_cuda_ops lte_router with the
// fused form's bits, memcheck clean; the router's kernel bench 0.573 -> 0.457 ms forward, 1.809
// -> 1.633 forward + backward; laLTE 182.2 -> 179.7 ms a step). The emulation (ctest
// emu.router) checks them against the fused kernels' bits: the forward's all, the backward's dk
// and dv.
static const char *const FIXED_BY_DEFAULT = "1";
static bool fixed_on(bool backward) {
    const char *e = getenv("HYLA_ROUTER_FIXED");
    if (!e || !*e) e = FIXED_BY_DEFAULT;
    return atoi(e) == 1 || !strcmp(e, backward ? "bwd" : "fwd");
}

// The rows (sequences) are independent problems (ops_lte.h): the forward launches up to
// ROUTER_ROWS of them at once (the model's micro-batch in one launch: at B 1 a launch's 560
// blocks left its third wave nearly empty), the backward one at a time (its plan fills the SMs
// with one row's segments; a launch per row also keeps the parameter gradient's sums in the
// order of one call per row). The per-tap form takes one row at a time.
static const int FWD_ROWS = ROUTER_ROWS, BWD_ROWS = 1;

// Row row0's offsets: score, dscore at row0 L H tokens; k, v, dk, dv at row0 L H d values;
// acts at row0 blocks.
struct router_rows {
    size_t tokens, kv, acts;
};
static router_rows rows_at(const struct hyla_lte_router_shape *s, int row0, int L) {
    const size_t tokens = (size_t)row0 * L * s->heads;
    return router_rows{tokens, tokens * s->head_dim, (size_t)row0 * lte_router_acts_size(s, 1, L)};
}

// `fused` on groups of up to `group` rows (their offsets and one launch's dims); where it
// declines (a shape whose tile does not fit), `taps` on each row of the group.
template <class Fused, class Taps>
static void by_row_groups(const struct hyla_lte_router_shape *s, int B, int L, float p, const uint64_t *keys,
                          int group, Fused fused, Taps taps) {
    for (int row0 = 0; row0 < B; row0 += group) {
        const int rows = B - row0 < group ? B - row0 : group;
        if (!taps_forced() && fused(rows_at(s, row0, L), dims_of(s, rows, L, p, keys + (p > 0 ? row0 : 0))))
            continue;
        for (int row = row0; row < row0 + rows; row++)
            taps(rows_at(s, row, L), dims_of(s, 1, L, p, keys + (p > 0 ? row : 0)));
    }
}

static void cuda_lte_router_fwd(float *score, float *acts, const float *k, const float *v, const float *params,
                                const struct hyla_lte_router_shape *shape, int B, int L, float p,
                                const uint64_t *keys) {
    by_row_groups(
        shape, B, L, p, keys, FWD_ROWS,
        [&](const router_rows &at, const router_dims &r) {
            const bool mma = mma_on(false);
            if (mma && fixed_on(false) && fixed::forward(score + at.tokens, acts + at.acts, k + at.kv, v + at.kv, params, r))
                return true;
            return fused::forward(score + at.tokens, acts + at.acts, k + at.kv, v + at.kv, params, r, mma);
        },
        [&](const router_rows &at, const router_dims &r) {
            taps_router_fwd(score + at.tokens, acts + at.acts, k + at.kv, v + at.kv, params, shape, r);
        });
}

static void cuda_lte_router_bwd(float *dk, float *dv, float *dparams, const float *dscore, const float *k,
                                const float *v, const float *params, const float *acts,
                                const struct hyla_lte_router_shape *shape, int B, int L, float p,
                                const uint64_t *keys) {
    fused::weight_stage stage; // the rows' launches share one staging of the weights (each form)
    fixed::bwd_stage fixed_stage;
    by_row_groups(
        shape, B, L, p, keys, BWD_ROWS,
        [&](const router_rows &at, const router_dims &r) {
            const bool mma = mma_on(true);
            if (mma && fixed_on(true) &&
                fixed::backward(dk + at.kv, dv + at.kv, dparams, dscore + at.tokens, k + at.kv, v + at.kv, params,
                                acts + at.acts, r, fixed_stage))
                return true;
            return fused::backward(dk + at.kv, dv + at.kv, dparams, dscore + at.tokens, k + at.kv, v + at.kv, params,
                                   acts + at.acts, r, mma, stage);
        },
        [&](const router_rows &at, const router_dims &r) {
            taps_router_bwd(dk + at.kv, dv + at.kv, dparams, dscore + at.tokens, k + at.kv, v + at.kv, params,
                            acts + at.acts, shape, r);
        });
}

extern "C" void cuda_register_lte_router(struct hyla_backend *t) {
    t->lte_router_fwd = cuda_lte_router_fwd, t->lte_router_bwd = cuda_lte_router_bwd;
}
