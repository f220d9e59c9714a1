// CUDA, inside the backend: SwiGLU with fp32 or bf16 outputs and inputs (cuda_swiglu.cu), for
// the MLP (cuda_mlp.cu), which writes its z, dgate and dup in bf16 where they only feed bf16
// products, and with HYLA_MLP_BF16_ACTS reads gate, up and dz in bf16 as the products wrote them.
#ifndef HYLA_CUDA_SWIGLU_CUH
#define HYLA_CUDA_SWIGLU_CUH

#include <cuda_bf16.h>
#include <stddef.h>

// Z (outputs) and G (inputs) are float or __nv_bfloat16; bf16 outputs are rounded to nearest
// even, bf16 inputs widened exactly, the arithmetic in fp32 either way.
// z = silu(gate) up, count values.
template <class Z, class G> void swiglu_forward(Z *z, const G *gate, const G *up, size_t count);
// dup = dz silu(gate), dgate = dz up silu'(gate); dgate may alias dz (when Z is G).
template <class Z, class G>
void swiglu_backward(Z *dgate, Z *dup, const G *dz, const G *gate, const G *up, size_t count);

#endif
