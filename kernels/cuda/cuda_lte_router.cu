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

// HYLA_ROUTER_TAPS=1 takes the per-tap form for every shape, =0 the fused kernels where the
// shape fits; unset, FUSED_BY_DEFAULT decides (fused; ctest emu.router checks them on the CPU).
static const bool FUSED_BY_DEFAULT = true;
static bool taps_forced(void) {
    const char *e = getenv("HYLA_ROUTER_TAPS");
    return e && *e ? atoi(e) == 1 : !FUSED_BY_DEFAULT;
}

// HYLA_ROUTER_MMA=1 runs the fused kernels' products on the tensor cores (the convs' and input
// gradients' on tf32 operands, the weight gradients' on bf16 ones; fp32 sums) in bf16 mode
// (cuda_matmul_bf16()) both ways, =fwd / =bwd one way only, =0 on the CUDA cores in fp32 as in
// fp32 mode; unset, MMA_BY_DEFAULT decides (off until a GPU run validates the form; ctest
// emu.router checks it on the CPU). On an H100 (2026-12-07, before the quads' 16-byte
// accesses) the backward took 398 us a call on the tensor cores against 509 on the CUDA cores,
// the forward 339 against 248. Shapes the tensor-core form cannot take run on the CUDA cores.
static const char *const MMA_BY_DEFAULT = "0";
static bool mma_on(bool backward) {
    if (!cuda_matmul_bf16()) return false;
    const char *e = getenv("HYLA_ROUTER_MMA");
    if (!e || !*e) e = MMA_BY_DEFAULT;
    return atoi(e) == 1 || !strcmp(e, backward ? "bwd" : "fwd");
}

static void cuda_lte_router_fwd(float *score, float *acts, const float *k, const float *v, const float *params,
                                const struct hyla_lte_router_shape *shape, int B, int L, float p, uint64_t key) {
    const struct router_dims r = dims_of(shape, B, L, p, key);
    if (taps_forced() || !fused::forward(score, acts, k, v, params, r, mma_on(false)))
        taps_router_fwd(score, acts, k, v, params, shape, B, L, p, key);
}

static void cuda_lte_router_bwd(float *dk, float *dv, float *dparams, const float *dscore, const float *k,
                                const float *v, const float *params, const float *acts,
                                const struct hyla_lte_router_shape *shape, int B, int L, float p, uint64_t key) {
    const struct router_dims r = dims_of(shape, B, L, p, key);
    if (taps_forced() || !fused::backward(dk, dv, dparams, dscore, k, v, params, acts, r, mma_on(true)))
        taps_router_bwd(dk, dv, dparams, dscore, k, v, params, acts, shape, B, L, p, key);
}

extern "C" void cuda_register_lte_router(struct hyla_backend *t) {
    t->lte_router_fwd = cuda_lte_router_fwd, t->lte_router_bwd = cuda_lte_router_bwd;
}
