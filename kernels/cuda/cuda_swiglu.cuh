// CUDA, inside the backend: SwiGLU with fp32 or bf16 outputs (cuda_swiglu.cu), for the MLP
// (cuda_mlp.cu), which writes its z, dgate and dup in bf16 where they only feed bf16 products.
#ifndef HYLA_CUDA_SWIGLU_CUH
#define HYLA_CUDA_SWIGLU_CUH

#include <cuda_bf16.h>
#include <stddef.h>

// z = silu(gate) up, count values; Z is float or __nv_bfloat16 (rounded to nearest even).
template <class Z> void swiglu_forward(Z *z, const float *gate, const float *up, size_t count);
// dup = dz silu(gate), dgate = dz up silu'(gate); dgate may alias dz (fp32 outputs).
template <class Z>
void swiglu_backward(Z *dgate, Z *dup, const float *dz, const float *gate, const float *up, size_t count);

#endif
