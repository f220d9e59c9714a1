// CUDA: fp32 -> bf16 copies (round to nearest even) and back, with common/bf16.h's very
// functions, so the GPU rounds exactly as the CPU does: FSDP gathers parameters through
// these in bf16 mode, and the bf16 operand copies of products and attention use the dense
// rounding (cuda_to_bf16).
//
// All of them are bound by memory bandwidth: a thread moves 8 values (two 16-byte fp32 loads
// in flight, one 16-byte bf16 store, or the reverse) where the pointers are 16-byte aligned,
// one value per thread elsewhere and for the tail. One thread per unit, no grid-stride loop:
// Nsight Compute measured the old forms (one value a thread, or four in a grid capped at 4096
// blocks) at ~2.1 TB/s on an H100 for [16384 x 1024] (45 µs), where its HBM3 gives ~3.
#include <cuda_bf16.h>

#include "backend_cuda.h"
#include "common/bf16.h"
#include "cuda_bf16_convert.cuh"
#include "cuda_check.h"

namespace {

constexpr int THREADS = 256;
constexpr int UNIT = 8; // values a thread converts on the vector path

unsigned blocks(size_t threads) { return (unsigned)((threads + THREADS - 1) / THREADS); }
bool aligned(const void *p) { return ((uintptr_t)p & 15) == 0; }

// Rounding as __float2bfloat16 does (round to nearest even; cuda_gemm_bf16.cu's copies) or as
// common/bf16.h does (the same, and every NaN to the one quiet NaN, as the CPU: FSDP's gathers).
struct round_rn {
    __device__ uint16_t operator()(float x) const {
        const __nv_bfloat16 h = __float2bfloat16(x); // round to nearest even
        return *reinterpret_cast<const uint16_t *>(&h);
    }
};
struct round_hyla {
    __device__ uint16_t operator()(float x) const { return hyla_bf16_round(x); }
};

// dst[8u .. 8u + 7] = round(src[8u .. 8u + 7]) for unit u (both 16-byte aligned).
template <class Round> __global__ void round_units_kernel(uint4 *dst, const float4 *src, size_t units, Round round) {
    const size_t u = blockIdx.x * (size_t)THREADS + threadIdx.x;
    if (u >= units) return;
    const float4 a = src[2 * u], b = src[2 * u + 1];
    uint4 r;
    r.x = round(a.x) | (uint32_t)round(a.y) << 16, r.y = round(a.z) | (uint32_t)round(a.w) << 16;
    r.z = round(b.x) | (uint32_t)round(b.y) << 16, r.w = round(b.z) | (uint32_t)round(b.w) << 16;
    dst[u] = r;
}
template <class Round> __global__ void round_each_kernel(uint16_t *dst, const float *src, size_t count, Round round) {
    const size_t i = blockIdx.x * (size_t)THREADS + threadIdx.x;
    if (i < count) dst[i] = round(src[i]);
}
template <class Round> void round_to_bf16(uint16_t *dst, const float *src, size_t count, Round round) {
    if (!count) return;
    size_t done = 0;
    if (aligned(dst) && aligned(src) && count >= UNIT) {
        const size_t units = count / UNIT;
        round_units_kernel<<<blocks(units), THREADS>>>((uint4 *)dst, (const float4 *)src, units, round);
        CUDA_LAUNCH_CHECK();
        done = units * UNIT;
    }
    if (done == count) return;
    round_each_kernel<<<blocks(count - done), THREADS>>>(dst + done, src + done, count - done, round);
    CUDA_LAUNCH_CHECK();
}

__device__ inline float widen(uint32_t half) { return hyla_bf16_widen((uint16_t)half); }
__global__ void widen_units_kernel(float4 *dst, const uint4 *src, size_t units) {
    const size_t u = blockIdx.x * (size_t)THREADS + threadIdx.x;
    if (u >= units) return;
    const uint4 h = src[u];
    dst[2 * u] = make_float4(widen(h.x & 0xffffu), widen(h.x >> 16), widen(h.y & 0xffffu), widen(h.y >> 16));
    dst[2 * u + 1] = make_float4(widen(h.z & 0xffffu), widen(h.z >> 16), widen(h.w & 0xffffu), widen(h.w >> 16));
}
__global__ void widen_each_kernel(float *dst, const uint16_t *src, size_t count) {
    const size_t i = blockIdx.x * (size_t)THREADS + threadIdx.x;
    if (i < count) dst[i] = hyla_bf16_widen(src[i]);
}

void cuda_round_to_bf16(uint16_t *dst, const float *src, size_t count) { round_to_bf16(dst, src, count, round_hyla{}); }

void cuda_widen_bf16(float *dst, const uint16_t *src, size_t count) {
    if (!count) return;
    size_t done = 0;
    if (aligned(dst) && aligned(src) && count >= UNIT) {
        const size_t units = count / UNIT;
        widen_units_kernel<<<blocks(units), THREADS>>>((float4 *)dst, (const uint4 *)src, units);
        CUDA_LAUNCH_CHECK();
        done = units * UNIT;
    }
    if (done == count) return;
    widen_each_kernel<<<blocks(count - done), THREADS>>>(dst + done, src + done, count - done);
    CUDA_LAUNCH_CHECK();
}

} // namespace

// dst[i] = bf16(src[i]), round to nearest even (__float2bfloat16_rn), for a dense run.
void cuda_to_bf16(__nv_bfloat16 *dst, const float *src, size_t count) {
    round_to_bf16((uint16_t *)dst, src, count, round_rn{});
}

extern "C" void cuda_register_bf16_convert(struct hyla_backend *t) {
    t->round_to_bf16 = cuda_round_to_bf16, t->widen_bf16 = cuda_widen_bf16;
}
