// Tensor-core primitives on register fragments (PTX mma.sync.m16n8k16, bf16 operands, fp32
// accumulation; ldmatrix), shared by the kernels that keep their tiles in registers
// (FlashAttention-2's layout): cuda_flash_attention_bf16.cu, cuda_nsa_mma.cuh.
//
// Fragment layout, lane = 4 g + tig (g = lane / 4, tig = lane % 4):
//   A (16 x 16, row major): a[0] = rows g, columns 2 tig, 2 tig + 1; a[1] = row g + 8, same
//     columns; a[2], a[3] = the same rows, columns + 8. Two bf16 per register, low half first.
//   B (16 x 8, "col": B[k][n]): b0 = k = 2 tig, 2 tig + 1 of column n = g; b1 = k + 8.
//   C (16 x 8, fp32): c[0], c[1] = row g, columns 2 tig, 2 tig + 1; c[2], c[3] = row g + 8.
// So the C fragments of two neighbouring n-tiles, packed to bf16, are the A fragment of the
// next product over those 16 columns (a0 = c[0..1] of the left tile, a1 = c[2..3], a2, a3 the
// right tile's): scores become probabilities and feed P V without leaving the registers.
// tests/gpu/emu/mma_emu.h stands in for this file in the CPU emulation.
#ifndef HYLA_CUDA_MMA_CUH
#define HYLA_CUDA_MMA_CUH

#include <cuda_bf16.h>
#include <stdint.h>

namespace hyla_mma {

typedef __nv_bfloat16 bf16;

__device__ inline uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); // .x (low half) = lo
    return *(uint32_t *)&v;
}
// c += a b.
__device__ inline void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// TF32 (the LTE router's products, cuda_lte_router_fused.cu): x rounded to tf32 (10 fraction
// bits, to nearest, ties away from zero: cvt.rna), as the 32-bit register mma_tf32 takes.
__device__ inline uint32_t to_tf32(float x) {
    uint32_t t;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(t) : "f"(x));
    return t;
}
// c += a b on mma.sync.m16n8k8 with tf32 operands (a float each), fp32 sums. Fragments, lane =
// 4 g + tig: A (16 x 8) a[0] = (row g, k tig), a[1] = (g + 8, tig), a[2] = (g, tig + 4),
// a[3] = (g + 8, tig + 4); B (8 x 8, B[k][n]) b0 = (k tig, n g), b1 = (tig + 4, g); C as above.
__device__ inline void mma_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Four 8 x 8 bf16 matrices from shared memory: lane l gives the address of row l % 8 of matrix
// l / 8 (16 contiguous bytes); register i of lane 4 g + tig gets matrix i's row g, columns
// 2 tig, 2 tig + 1. With the matrices at (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15),
// (8-15, 8-15) of a row-major 16 x 16 tile that is the A fragment.
__device__ inline void ldsm_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const bf16 *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(a));
}
// The same, each 8 x 8 matrix transposed: register i of lane 4 g + tig gets matrix i's column
// g, rows 2 tig, 2 tig + 1 (a B fragment from a row-major [k][n] tile).
__device__ inline void ldsm_x4_trans(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const bf16 *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(a));
}

// Softmax in base 2: scores scaled by scale log2 e go to exp2_approx; lse back to base e by LN2.
constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;

// 2^x on the special-function unit alone (ex2.approx.ftz.f32, ~2 ulp): the instruction exp2f
// runs too, without exp2f's care for subnormal results (a compare and two multiplies around it,
// Nsight Compute: a third of the attention forward's floating-point instructions); results
// below 2^-126 flush to 0, probabilities that far below a row's largest are dropped either way
// in bf16 P V products. -inf gives 0.
__device__ inline float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Sum / max over the 4 lanes of a quad (the lanes that hold one fragment row).
__device__ inline float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ inline float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

} // namespace hyla_mma

#endif
