// Stands in for kernels/cuda/cuda_mma.cuh under emu.h: the same namespace and signatures, the
// PTX ISA's fragment layouts (mma.m16n8k16 .row.col bf16 -> fp32, ldmatrix .m8n8 .x4 [.trans]
// .b16) computed on the CPU. mma and ldmatrix are warp collectives: every lane deposits its
// operands (fragment registers, or its row address) in its slot, __syncwarp, then each lane
// computes its own outputs from the 32 lanes' slots, __syncwarp (so that no lane overwrites
// its slot before all have read). A layout error in a kernel therefore scrambles its results
// here as it would on the GPU. tests/gpu/emu/mma_emu_selftest.cpp checks these layouts
// against products built independently of them.
#pragma once
#include "emu.h"

// What the register-fragment kernels use besides cuda_mma.cuh and emu.h lacks (emu.h has uint4).
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
#ifndef __forceinline__
#define __forceinline__ inline
#endif

namespace hyla_mma {

typedef __nv_bfloat16 bf16;

// bf16 round to nearest even (NaN stays a NaN, as __floats2bfloat162_rn keeps it).
inline uint32_t emu_bf16_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return (b + 0x7fffu + ((b >> 16) & 1)) >> 16;
}
inline float emu_bf16_value(uint32_t half) { // the low 16 bits as a bf16 value
    const uint32_t b = half << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}
inline uint32_t pack(float lo, float hi) { return emu_bf16_bits(lo) | emu_bf16_bits(hi) << 16; }

// Per-thread slots for the collectives (threadIdx.x < 1024; one block at a time per OS thread).
inline thread_local uint32_t emu_slot[1024][8];
inline const uint32_t *emu_lane_slot(int lane) { return emu_slot[((int)threadIdx.x & ~31) | lane]; }

// The bf16 at column col of the fragment line held by the quad of lanes 4 g .. 4 g + 3 (A: row
// g, B: column n = g), in register first_reg + reg of lane 4 g + (col % 8) / 2: each register
// packs columns 2 tig (low half), 2 tig + 1 of an 8-column half.
inline float emu_elem(int reg, int g, int col, int first_reg) {
    const uint32_t w = emu_lane_slot(4 * g + (col % 8) / 2)[first_reg + reg];
    return emu_bf16_value(col % 2 ? w >> 16 : w & 0xffff);
}
// A (16 x 16): a[0] rows 0-7, a[1] rows 8-15, a[2], a[3] the same with columns 8-15.
inline float emu_a(int r, int k) { return emu_elem((r / 8) + 2 * (k / 8), r % 8, k, 0); }
// B (16 x 8), B[k][n]: lane 4 n + tig holds k = 2 tig, 2 tig + 1 in b0, k + 8 in b1.
inline float emu_b(int k, int n) { return emu_elem(k / 8, n, k, 4); }

// An mma.sync of K reduction steps as a warp collective: every lane deposits its fragments
// (a[0..3], b0, b1) in its slot, then computes its C elements (c[0], c[1] = row g, columns
// 2 tig, 2 tig + 1; c[2], c[3] row g + 8) as c += sum over k of product(row, k, column), the
// products read from the 32 slots.
template <int K, class Product>
inline void emu_mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, Product product) {
    uint32_t *mine = emu_slot[threadIdx.x];
    for (int i = 0; i < 4; i++) mine[i] = a[i];
    mine[4] = b0, mine[5] = b1;
    __syncwarp();
    const int g = (threadIdx.x % 32) / 4, tig = threadIdx.x % 4;
    for (int i = 0; i < 4; i++) {
        const int r = g + 8 * (i / 2), n = 2 * tig + i % 2;
        float s = c[i];
        for (int k = 0; k < K; k++) s += product(r, k, n);
        c[i] = s;
    }
    __syncwarp();
}

// c += a b (16 x 16 by 16 x 8), bf16 operands (their products exact in fp32).
inline void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    emu_mma<16>(c, a, b0, b1, [](int r, int k, int n) { return emu_a(r, k) * emu_b(k, n); });
}

// cvt.rna.tf32.f32: 10 fraction bits, to nearest, ties away from zero (adding half a unit of
// the last kept place to the magnitude's bits); NaN and infinity pass through.
inline uint32_t to_tf32(float x) {
    uint32_t b;
    memcpy(&b, &x, 4);
    if ((b & 0x7f800000u) == 0x7f800000u) return b;
#ifdef EMU_TF32_AS_BF16 // a check of the checks: EMU_CXXFLAGS=-DEMU_TF32_AS_BF16 bash run_router.sh must fail
    return (b + 0x8000u) & 0xffff0000u;
#endif
    return (b + 0x1000u) & 0xffffe000u;
}
inline float emu_tf32_value(uint32_t r) { // a register as mma_tf32 reads it: its tf32 bits only
    r &= 0xffffe000u;
    float f;
    memcpy(&f, &r, 4);
    return f;
}
// c += a b on m16n8k8 tf32 fragments (cuda_mma.cuh's layout): A a[0] (g, tig), a[1] (g + 8,
// tig), a[2] (g, tig + 4), a[3] (g + 8, tig + 4); B b0 (k tig, n g), b1 (tig + 4, g).
inline void mma_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    emu_mma<8>(c, a, b0, b1, [](int r, int k, int n) { // tf32 products: exact in fp32
        const float x = emu_tf32_value(emu_lane_slot(4 * (r % 8) + k % 4)[r / 8 + 2 * (k / 4)]);
        return x * emu_tf32_value(emu_lane_slot(4 * n + k % 4)[4 + k / 4]);
    });
}

// ldmatrix .x4: lane l gives the address of row l % 8 of matrix l / 8 (8 contiguous bf16).
// Plain: register i of lane 4 g + tig = matrix i's row g, columns 2 tig (low half), 2 tig + 1.
// Transposed: matrix i's column g, rows 2 tig (low half), 2 tig + 1.
inline void emu_ldsm(uint32_t (&r)[4], const bf16 *p, bool trans) {
    memcpy(emu_slot[threadIdx.x], &p, sizeof p);
    __syncwarp();
    const int g = (threadIdx.x % 32) / 4, tig = threadIdx.x % 4;
    auto at = [](int m, int row, int col) { // element (row, col) of matrix m
        const bf16 *rp;
        memcpy(&rp, emu_lane_slot(8 * m + row), sizeof rp);
        return (uint32_t)rp[col].u;
    };
    for (int m = 0; m < 4; m++)
        r[m] = trans ? at(m, 2 * tig, g) | at(m, 2 * tig + 1, g) << 16 : at(m, g, 2 * tig) | at(m, g, 2 * tig + 1) << 16;
    __syncwarp();
}
inline void ldsm_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const bf16 *p) {
    uint32_t r[4];
    emu_ldsm(r, p, false);
    r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
}
inline void ldsm_x4_trans(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const bf16 *p) {
    uint32_t r[4];
    emu_ldsm(r, p, true);
    r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
}

constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;

// ex2.approx.ftz.f32: 2^x with results below 2^-126 flushed to 0 (the host's exp2f stands in
// for the approximation, within its ~2 ulp).
inline float exp2_approx(float x) {
    const float y = exp2f(x);
    return y < 1.17549435e-38f ? 0.0f : y;
}

// Sum / max over the 4 lanes of a quad (the lanes that hold one fragment row).
inline float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
inline float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

} // namespace hyla_mma
