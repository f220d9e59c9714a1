// CUDA, inside the backend: dense fp32 -> bf16 rounding (cuda_bf16_convert.cu), for the kernels
// that round their operands once per op (the products' copies, the attention's inputs).
#ifndef HYLA_CUDA_BF16_CONVERT_CUH
#define HYLA_CUDA_BF16_CONVERT_CUH

#include <cuda_bf16.h>
#include <stddef.h>

// dst[i] = bf16(src[i]), round to nearest even (__float2bfloat16), i < count.
void cuda_to_bf16(__nv_bfloat16 *dst, const float *src, size_t count);

// The bf16 form of src[0 .. extent) that the backend already holds — inside an FSDP unit's
// gathered twin or a held activation copy (cuda_bf16_twins.cu) — or nullptr: an op reads it
// rather than rounding src itself (the same bits).
const __nv_bfloat16 *cuda_bf16_twin_of(const float *src, size_t extent);

// Where an op writes out[0 .. count) whole: the bf16 copy it should write beside it (rounded
// to nearest even, as cuda_to_bf16), when the model expects to hold out (backend.h:
// expect_bf16_copy; cuda_bf16_twins.cu), else nullptr. An op that asks must write it all.
__nv_bfloat16 *cuda_bf16_copy_target(const float *out, size_t count);

// The backend frees the allocation that starts at `allocation`: the twins of arrays that start
// there are forgotten (a held copy freed), so that an array allocated later at the same address
// never reads a stale copy (a model freed with activations still held: an evaluation's forward
// pass holds them and no backward pass releases them).
void cuda_forget_bf16_twins_at(const void *allocation);

#endif
