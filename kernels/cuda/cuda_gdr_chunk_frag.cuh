// CUDA: what the chunked delta rule's register-fragment kernels share (cuda_gdr_chunk_out3.cu,
// _local2.cu): a warp's 16 rows of a chunk of an fp32 activation, straight from device memory
// into bf16 A fragments (cuda_mma.cuh's layout), without a pass through shared memory.
#ifndef HYLA_CUDA_GDR_CHUNK_FRAG_CUH
#define HYLA_CUDA_GDR_CHUNK_FRAG_CUH

#include <stdint.h>

#include "cuda_gdr_chunk.cuh"
#include "cuda_mma.cuh"

namespace gdrc {

// Columns i, i + 1 (i even) of row r of a chunk (element (r, i) at rows[r stride + i]), zeros at
// rows >= c and columns >= width, packed to bf16 (round to nearest, as __float2bfloat16): one
// 8-byte load where width is even (then a pair is wholly inside or wholly outside, and aligned
// when every row starts 8-byte aligned), two loads otherwise.
__device__ inline uint32_t pair_bf16(const float *rows, size_t stride, int r, int i, int c, int width) {
    float x0 = 0.0f, x1 = 0.0f;
    if (r < c) {
        const float *p = rows + (size_t)r * stride + i;
        if (width % 2 == 0) {
            if (i < width) {
                const float2 x = *(const float2 *)p;
                x0 = x.x, x1 = x.y;
            }
        } else {
            if (i < width) x0 = p[0];
            if (i + 1 < width) x1 = p[1];
        }
    }
    return hyla_mma::pack(x0, x1);
}

// The A fragments of rows r0 .. r0 + 15 over the first kt k-steps (16 columns each; KS the most).
template <int KS>
__device__ inline void rows_to_a(uint32_t (&a)[KS][4], const float *rows, size_t stride, int r0, int c, int width,
                                 int kt) {
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        if (ks >= kt) break;
        const int i = 16 * ks + 2 * t;
        a[ks][0] = pair_bf16(rows, stride, r0 + g, i, c, width);
        a[ks][1] = pair_bf16(rows, stride, r0 + g + 8, i, c, width);
        a[ks][2] = pair_bf16(rows, stride, r0 + g, i + 8, c, width);
        a[ks][3] = pair_bf16(rows, stride, r0 + g + 8, i + 8, c, width);
    }
}

} // namespace gdrc

#endif
