// W consecutive floats as one access: W = 4 is a float4 load or store (16-byte aligned), W = 1
// a scalar one. Element-wise kernels written once over "units" of W floats then run vectorised
// where widths and pointers allow (a quarter of the memory instructions: bandwidth-bound
// kernels reach the bandwidth) and scalar everywhere else.
#ifndef HYLA_CUDA_VEC_CUH
#define HYLA_CUDA_VEC_CUH

#include <cuda_bf16.h>
#include <stddef.h>
#include <stdint.h>

template <int W> struct floats {
    float v[W];
};

// Unit u of p: floats p[u W .. u W + W - 1].
template <int W> __device__ static inline floats<W> load_unit(const float *p, size_t u) {
    floats<W> r;
    if constexpr (W == 4) {
        const float4 q = reinterpret_cast<const float4 *>(p)[u];
        r.v[0] = q.x, r.v[1] = q.y, r.v[2] = q.z, r.v[3] = q.w;
    } else {
#pragma unroll
        for (int k = 0; k < W; k++) r.v[k] = p[u * W + k];
    }
    return r;
}
template <int W> __device__ static inline void store_unit(float *p, size_t u, const floats<W> &a) {
    if constexpr (W == 4) reinterpret_cast<float4 *>(p)[u] = make_float4(a.v[0], a.v[1], a.v[2], a.v[3]);
    else {
#pragma unroll
        for (int k = 0; k < W; k++) p[u * W + k] = a.v[k];
    }
}
template <int W> __device__ static inline floats<W> zero_unit() {
    floats<W> r;
#pragma unroll
    for (int k = 0; k < W; k++) r.v[k] = 0;
    return r;
}

// Unit u of a, rounded to bf16 (to nearest even, __float2bfloat16: cuda_to_bf16's bits), into
// the bf16 array p: W = 4 as one 8-byte store (p 8-byte aligned). An op's output written with
// its bf16 copy beside it (cuda_bf16_copy_target).
__device__ static inline uint32_t bf16_bits(float x) {
    const __nv_bfloat16 h = __float2bfloat16(x);
    return *reinterpret_cast<const uint16_t *>(&h);
}
template <int W> __device__ static inline void store_unit_bf16(__nv_bfloat16 *p, size_t u, const floats<W> &a) {
    if constexpr (W == 4) {
        reinterpret_cast<uint2 *>(p)[u] = make_uint2(bf16_bits(a.v[0]) | bf16_bits(a.v[1]) << 16,
                                                     bf16_bits(a.v[2]) | bf16_bits(a.v[3]) << 16);
    } else {
#pragma unroll
        for (int k = 0; k < W; k++) p[u * W + k] = __float2bfloat16(a.v[k]);
    }
}

// Whether float4 accesses at p are aligned (NULL, an absent operand, is).
static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }
// Whether 8-byte accesses at p are (a bf16 copy's units of 4 values; NULL is).
static inline bool aligned8(const void *p) { return ((uintptr_t)p & 7) == 0; }

#endif
