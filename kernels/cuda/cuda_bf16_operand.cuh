// CUDA, inside the backend: an op's operand in bf16, for the kernels that read bf16 tiles
// (the attention's and NSA's tensor-core kernels).
#ifndef HYLA_CUDA_BF16_OPERAND_CUH
#define HYLA_CUDA_BF16_OPERAND_CUH

#include <cuda_bf16.h>
#include <stddef.h>

#include "cuda_bf16_convert.cuh"
#include "cuda_check.h"

// An operand in bf16: rounded once per op, not once per tile load — or not at all where the
// backend holds its bf16 copy (a saved activation, hold_bf16_copy: the forward's q, k, v serve
// the backward too). Its own copy is stream-ordered scratch, freed with it.
class bf16_operand {
    const __nv_bfloat16 *h_;
    __nv_bfloat16 *own_ = NULL;

  public:
    bf16_operand(const float *src, size_t count) : h_(cuda_bf16_twin_of(src, count)) {
        if (h_) return;
        CUDA_CHECK(cudaMallocAsync((void **)&own_, count * sizeof(__nv_bfloat16), 0));
        cuda_to_bf16(own_, src, count);
        h_ = own_;
    }
    bf16_operand(const bf16_operand &) = delete;
    bf16_operand &operator=(const bf16_operand &) = delete;
    ~bf16_operand() {
        if (own_) CUDA_CHECK(cudaFreeAsync(own_, 0));
    }
    operator const __nv_bfloat16 *() const { return h_; }
};

#endif
