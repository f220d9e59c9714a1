// CUDA: fp32 -> bf16 copies (round to nearest even) and back, with common/bf16.h's very
// functions, so the GPU rounds exactly as the CPU does. FSDP gathers parameters through
// these in bf16 mode.
#include "backend_cuda.h"
#include "common/bf16.h"
#include "cuda_check.h"

__global__ void round_to_bf16_kernel(uint16_t *dst, const float *src, size_t count) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = hyla_bf16_round(src[i]);
}

__global__ void widen_bf16_kernel(float *dst, const uint16_t *src, size_t count) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = hyla_bf16_widen(src[i]);
}

// Grid-stride loops over at most 65535 blocks: units of any size in one launch.
static unsigned convert_blocks(size_t count) {
    const size_t blocks = blocks_for(count, 256);
    return (unsigned)(blocks < 65535 ? (blocks ? blocks : 1) : 65535);
}

static void cuda_round_to_bf16(uint16_t *dst, const float *src, size_t count) {
    if (!count) return;
    round_to_bf16_kernel<<<convert_blocks(count), 256>>>(dst, src, count);
    CUDA_LAUNCH_CHECK();
}

static void cuda_widen_bf16(float *dst, const uint16_t *src, size_t count) {
    if (!count) return;
    widen_bf16_kernel<<<convert_blocks(count), 256>>>(dst, src, count);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_register_bf16_convert(struct hyla_backend *t) {
    t->round_to_bf16 = cuda_round_to_bf16, t->widen_bf16 = cuda_widen_bf16;
}
