/* bf16 <-> fp32 as bit operations, usable from C and from CUDA device code (the GPU's
 * conversion kernels use the same functions, so host and device round identically).
 * Widening is exact; narrowing rounds to nearest, ties to even, like PyTorch's, and turns
 * every NaN into PyTorch's canonical quiet NaN 0x7fc0. */
#ifndef HYLA_BF16_H
#define HYLA_BF16_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define HYLA_BF16_FN static inline __host__ __device__
#else
#define HYLA_BF16_FN static inline
#endif

HYLA_BF16_FN uint32_t hyla_f32_bits(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

HYLA_BF16_FN uint16_t hyla_bf16_round(float x) {
    uint32_t bits = hyla_f32_bits(x);
    /* a plain rounding could carry a NaN's low payload bits off and turn it into infinity */
    if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
    /* adding 0x7fff plus the kept part's lowest bit rounds to nearest, ties to even; a carry
     * into the exponent is the correct rounding up, up to infinity */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

HYLA_BF16_FN float hyla_bf16_widen(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

#endif
