// CUDA: the SwiGLU MLP, with the CPU twin's semantics (kernels/cpu/op_linear.c); SwiGLU itself
// is in cuda_swiglu.cu.
//
// bf16 intermediates (bf16 mode, products large enough to take bf16 copies): the MLP's z (the
// SwiGLU output) and its backward's dgate, dup are only ever operands of products, which round
// them to bf16 copies first (cuda_linear.cu). So the SwiGLU kernels write them in bf16
// themselves, rounded the same way (round to nearest even): the same operand bits, no copy
// pass (a [16384 x 2816] copy reads 185 MB and writes 92 MB, ~124 µs on an H100: four of them
// per layer, z in the forward and the backward, dgate and dup) and half the write. z lives in
// acts' z slot (it takes half of it), dgate and dup in the second half of the scratch (dz, the
// down projection's fp32 output that the SwiGLU backward reads, stays in the first).
// On by default since its GPU run (H100, 2026-12-07, docs/gpu-runs/2026-12-07c-h100/); HYLA_MLP_BF16=0 switches it off.
#include <stdlib.h>

#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_products.cuh"
#include "cuda_swiglu.cuh"

using namespace products;
namespace {

typedef __nv_bfloat16 bf16;

constexpr bool MLP_BF16_BY_DEFAULT = true;
bool bf16_intermediates(int n, int dim, int inter) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("HYLA_MLP_BF16");
        on = e && *e ? atoi(e) != 0 : MLP_BF16_BY_DEFAULT;
    }
    // every product of the MLP has the dimensions n, dim, inter in some order: one decision
    return on && cuda_gemm_takes_copies(n, dim, inter);
}

// acts = [gate | up | z], each [n, inter] (z in bf16 in the first half of its slot with bf16
// intermediates); x copied once for the gate and up projections. The down projection adds
// onto the residual (copied into y first unless y is it): one pass fewer than a separate sum,
// and the block needs no buffer for the MLP's own output.
void cuda_mlp_fwd(float *y, float *acts, const float *x, const float *residual, const float *wg, const float *wu,
                  const float *wd, int n, int dim, int inter) {
    const size_t size = (size_t)n * inter;
    float *gate = acts, *up = acts + size, *z = acts + 2 * size;
    op_copies copies;
    linear_fwd(copies, gate, x, wg, NULL, n, dim, inter);
    linear_fwd(copies, up, x, wu, NULL, n, dim, inter);
    if (residual && residual != y)
        CUDA_CHECK(cudaMemcpyAsync(y, residual, (size_t)n * dim * sizeof(float), cudaMemcpyDeviceToDevice, 0));
    const float beta = residual ? 1.0f : 0.0f;
    if (bf16_intermediates(n, dim, inter)) {
        bf16 *zh = (bf16 *)z;
        swiglu_forward(zh, gate, up, size);
        gemm_h(copies, 0, 1, n, dim, inter, 1.0f, NULL, inter, zh, wd, inter, NULL, beta, y, dim);
        return;
    }
    swiglu_forward(z, gate, up, size);
    gemm(copies, 0, 1, n, dim, inter, 1.0f, z, inter, wd, inter, beta, y, dim);
}

// dy copied once for dz and dW_down, x once for dW_gate and dW_up, dz (after the SwiGLU
// backward has written it in place: not copied before) and dup once each; with bf16
// intermediates z, dgate and dup are not copied at all.
void cuda_mlp_bwd(float *dx, float *dwg, float *dwu, float *dwd, const float *dy, const float *x, const float *acts,
                  const float *wg, const float *wu, const float *wd, float *scratch, int n, int dim, int inter) {
    const size_t size = (size_t)n * inter;
    const float *gate = acts, *up = acts + size, *z = acts + 2 * size;
    float *dz = scratch, *dup = scratch + size;
    op_copies copies;
    if (bf16_intermediates(n, dim, inter)) {
        const bf16 *zh = (const bf16 *)z;
        bf16 *dgh = (bf16 *)dup, *duh = dgh + size; // both in dup's fp32 slot; dz stays fp32
        gemm(copies, 0, 0, n, inter, dim, 1.0f, dy, dim, wd, inter, 0.0f, dz, inter);                // dz = dy Wd
        gemm_h(copies, 1, 0, dim, inter, n, 1.0f, dy, dim, NULL, NULL, inter, zh, 1.0f, dwd, inter); // dWd += dy^T z
        swiglu_backward(dgh, duh, dz, gate, up, size);
        gemm_h(copies, 0, 0, n, dim, inter, 1.0f, NULL, inter, dgh, wg, dim, NULL, 0.0f, dx, dim);   // dx = dg Wg
        gemm_h(copies, 1, 0, inter, dim, n, 1.0f, NULL, inter, dgh, x, dim, NULL, 1.0f, dwg, dim);   // dWg += dg^T x
        gemm_h(copies, 0, 0, n, dim, inter, 1.0f, NULL, inter, duh, wu, dim, NULL, 1.0f, dx, dim);   // dx += du Wu
        gemm_h(copies, 1, 0, inter, dim, n, 1.0f, NULL, inter, duh, x, dim, NULL, 1.0f, dwu, dim);   // dWu += du^T x
        return;
    }
    linear_bwd(copies, dz, false, dwd, NULL, dy, z, wd, n, inter, dim);
    swiglu_backward(dz, dup, dz, gate, up, size);
    linear_bwd(copies, dx, false, dwg, NULL, dz, x, wg, n, dim, inter);
    linear_bwd(copies, dx, true, dwu, NULL, dup, x, wu, n, dim, inter);
}

} // namespace

extern "C" void cuda_register_mlp(struct hyla_backend *t) {
    t->mlp_fwd = cuda_mlp_fwd, t->mlp_bwd = cuda_mlp_bwd;
}
