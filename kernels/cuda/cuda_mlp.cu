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
//
// bf16 activations (HYLA_MLP_BF16_ACTS=1, on top of the above; on by default since its H100 run):
// gate, up and the backward's dz are read by the SwiGLU kernels only, and the fp32 versions cost
// a 4-byte write and a 4-byte read per value: the products write them in bf16 themselves (fp32
// sums, each output rounded once to nearest even, cuda_gemm_bf16_out) and the SwiGLU kernels
// read bf16. 16 bytes per [n, inter] value fwd + bwd fewer (0.74 GB a layer at 16384 x 2816),
// at one rounding more of gate, up and dz than the fp32 CPU twin's. Accumulations and the
// weight gradients stay fp32. gate, up, z then fill the first half of acts, dz, dgate, dup
// three quarters of the scratch (bf16_slot); nothing else is allocated.
#include <stdlib.h>

#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_products.cuh"
#include "cuda_swiglu.cuh"
#include "cuda_switch.h"

using namespace products;
namespace {

typedef __nv_bfloat16 bf16;

constexpr bool MLP_BF16_BY_DEFAULT = true;
constexpr bool MLP_BF16_ACTS_BY_DEFAULT = true; // H100 2026-12-07 (docs/gpu-runs/2026-12-07d-h100)
bool bf16_intermediates(int n, int dim, int inter) {
    static const bool on = cuda_switch("HYLA_MLP_BF16", MLP_BF16_BY_DEFAULT);
    // every product of the MLP has the dimensions n, dim, inter in some order: one decision
    return on && cuda_gemm_takes_copies(n, dim, inter);
}
// gate, up and dz in bf16 as well (HYLA_MLP_BF16_ACTS): only where z, dgate, dup are.
bool bf16_activations(int n, int dim, int inter) {
    static const bool on = cuda_switch("HYLA_MLP_BF16_ACTS", MLP_BF16_ACTS_BY_DEFAULT);
    return on && bf16_intermediates(n, dim, inter);
}

// bf16 [n, inter] matrix i of a buffer of fp32 slots of `size` values (acts, the scratch):
// packed from the start, each at a multiple of 8 values (16 bytes: aligned for the SwiGLU
// kernels' vector accesses and for cuBLAS). Three take 6 (size + 7) bytes at most: inside two
// slots for size >= 24 (products that take copies have every dimension >= 16).
bf16 *bf16_slot(float *base, int i, size_t size) { return (bf16 *)base + i * ((size + 7) / 8 * 8); }
const bf16 *bf16_slot(const float *base, int i, size_t size) { return bf16_slot((float *)base, i, size); }

// Row-major C = op(A) op(B) in bf16 (written, rounded once from fp32 sums) from the op's bf16
// copies of A and B, made here unless given as a_h / b_h; gemm_h's rules for sharing them.
void gemm_to_bf16(op_copies &op, int ta, int tb, int m, int n, int k, const float *a, int lda, const bf16 *a_h,
                  const float *b, int ldb, const bf16 *b_h, bf16 *c, int ldc) {
    op_copies own;
    op_copies &copies = shared_copies() ? op : own;
    if (!a_h) a_h = copies.of(a, ta ? k : m, ta ? m : k, lda);
    if (!b_h) b_h = copies.of(b, tb ? n : k, tb ? k : n, ldb);
    cuda_gemm_bf16_out(cuda_cublas(), ta, tb, m, n, k, 1.0f, a_h, b_h, c, ldc);
}

// y = residual (copied unless y is it) for the down projection to add onto: its beta.
float start_from_residual(float *y, const float *residual, int n, int dim) {
    if (residual && residual != y)
        CUDA_CHECK(cudaMemcpyAsync(y, residual, (size_t)n * dim * sizeof(float), cudaMemcpyDeviceToDevice, 0));
    return residual ? 1.0f : 0.0f;
}

// HYLA_GEMM_ONTO=1: the down projection reads the residual as cuBLASLt's C and writes y as its D
// (cuda_gemm_lt.cu), where y is not the residual: no copy of the residual into y first (a
// [16384 x 1024] fp32 copy, ~40 us on an H100, 24 a laLTE step). On by default since its H100
// run (2026-12-07 ~22:25, docs/gpu-runs/2026-12-07l-h100: laLTE 191.3 -> 191.0 ms a step alone,
// the same loss bits).
constexpr bool ONTO_BY_DEFAULT = true;
bool onto_wanted() {
    static const bool on = cuda_switch("HYLA_GEMM_ONTO", ONTO_BY_DEFAULT);
    return on;
}

// y = residual + z Wd^T (residual NULL: y = z Wd^T) from z in bf16.
void down_projection(op_copies &copies, float *y, const float *residual, const bf16 *zh, const float *wd, int n,
                     int dim, int inter) {
    if (residual && residual != y && onto_wanted()) {
        op_copies own;
        const bf16 *wd_h = (shared_copies() ? copies : own).of(wd, dim, inter, inter); // gemm_h's copy of Wd
        cuda_gemm_bf16_onto(0, 1, n, dim, inter, 1.0f, zh, wd_h, 1.0f, residual, y, dim);
        return;
    }
    const float beta = start_from_residual(y, residual, n, dim);
    gemm_h(copies, 0, 1, n, dim, inter, 1.0f, NULL, inter, zh, wd, inter, NULL, beta, y, dim);
}

// The forward with bf16 activations: acts = [gate | up | z] in bf16 (bf16_slot).
void mlp_fwd_bf16_acts(op_copies &copies, float *y, float *acts, const float *x, const float *residual,
                       const float *wg, const float *wu, const float *wd, int n, int dim, int inter) {
    const size_t size = (size_t)n * inter;
    bf16 *gh = bf16_slot(acts, 0, size), *uh = bf16_slot(acts, 1, size), *zh = bf16_slot(acts, 2, size);
    gemm_to_bf16(copies, 0, 1, n, inter, dim, x, dim, NULL, wg, dim, NULL, gh, inter); // gate = x Wg^T
    gemm_to_bf16(copies, 0, 1, n, inter, dim, x, dim, NULL, wu, dim, NULL, uh, inter); // up = x Wu^T
    swiglu_forward(zh, gh, uh, size);
    down_projection(copies, y, residual, zh, wd, n, dim, inter);
}
// The backward's products of dgate and dup (bf16, as the SwiGLU backward wrote them): dx and
// the gate and up projections' weight gradients.
void input_products(op_copies &copies, float *dx, float *dwg, float *dwu, const bf16 *dgh, const bf16 *duh,
                    const float *x, const float *wg, const float *wu, int n, int dim, int inter) {
    gemm_h(copies, 0, 0, n, dim, inter, 1.0f, NULL, inter, dgh, wg, dim, NULL, 0.0f, dx, dim); // dx = dg Wg
    gemm_h(copies, 1, 0, inter, dim, n, 1.0f, NULL, inter, dgh, x, dim, NULL, 1.0f, dwg, dim); // dWg += dg^T x
    gemm_h(copies, 0, 0, n, dim, inter, 1.0f, NULL, inter, duh, wu, dim, NULL, 1.0f, dx, dim); // dx += du Wu
    gemm_h(copies, 1, 0, inter, dim, n, 1.0f, NULL, inter, duh, x, dim, NULL, 1.0f, dwu, dim); // dWu += du^T x
}
// The backward with bf16 activations: the scratch holds dz, dgate, dup in bf16 (bf16_slot).
void mlp_bwd_bf16_acts(op_copies &copies, float *dx, float *dwg, float *dwu, float *dwd, const float *dy,
                       const float *x, const float *acts, const float *wg, const float *wu, const float *wd,
                       float *scratch, int n, int dim, int inter) {
    const size_t size = (size_t)n * inter;
    const bf16 *gh = bf16_slot(acts, 0, size), *uh = bf16_slot(acts, 1, size), *zh = bf16_slot(acts, 2, size);
    bf16 *dzh = bf16_slot(scratch, 0, size), *dgh = bf16_slot(scratch, 1, size), *duh = bf16_slot(scratch, 2, size);
    gemm_to_bf16(copies, 0, 0, n, inter, dim, dy, dim, NULL, wd, inter, NULL, dzh, inter);       // dz = dy Wd
    gemm_h(copies, 1, 0, dim, inter, n, 1.0f, dy, dim, NULL, NULL, inter, zh, 1.0f, dwd, inter); // dWd += dy^T z
    swiglu_backward(dgh, duh, dzh, gh, uh, size);
    input_products(copies, dx, dwg, dwu, dgh, duh, x, wg, wu, n, dim, inter);
}

// acts = [gate | up | z], each [n, inter] (z in bf16 in the first half of its slot with bf16
// intermediates; all three bf16, packed, with bf16 activations); x copied once for the gate and
// up projections. The down projection adds onto the residual (copied into y first unless y is
// it): one pass fewer than a separate sum, and the block needs no buffer for the MLP's own output.
void cuda_mlp_fwd(float *y, float *acts, const float *x, const float *residual, const float *wg, const float *wu,
                  const float *wd, int n, int dim, int inter) {
    const size_t size = (size_t)n * inter;
    float *gate = acts, *up = acts + size, *z = acts + 2 * size;
    op_copies copies;
    if (bf16_activations(n, dim, inter)) {
        mlp_fwd_bf16_acts(copies, y, acts, x, residual, wg, wu, wd, n, dim, inter);
        return;
    }
    linear_fwd(copies, gate, x, wg, NULL, n, dim, inter);
    linear_fwd(copies, up, x, wu, NULL, n, dim, inter);
    const float beta = start_from_residual(y, residual, n, dim);
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
    if (bf16_activations(n, dim, inter)) {
        mlp_bwd_bf16_acts(copies, dx, dwg, dwu, dwd, dy, x, acts, wg, wu, wd, scratch, n, dim, inter);
        return;
    }
    if (bf16_intermediates(n, dim, inter)) {
        const bf16 *zh = (const bf16 *)z;
        bf16 *dgh = (bf16 *)dup, *duh = dgh + size; // both in dup's fp32 slot; dz stays fp32
        gemm(copies, 0, 0, n, inter, dim, 1.0f, dy, dim, wd, inter, 0.0f, dz, inter);                // dz = dy Wd
        gemm_h(copies, 1, 0, dim, inter, n, 1.0f, dy, dim, NULL, NULL, inter, zh, 1.0f, dwd, inter); // dWd += dy^T z
        swiglu_backward(dgh, duh, dz, gate, up, size);
        input_products(copies, dx, dwg, dwu, dgh, duh, x, wg, wu, n, dim, inter);
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
