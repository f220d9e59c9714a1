// Tiled softmax attention on the GPU (cuda_flash_attention.cu), called by the backend's
// attention ops (cuda_attention.cu) for head dims the tiles cover.
#ifndef HYLA_CUDA_FLASH_ATTENTION_H
#define HYLA_CUDA_FLASH_ATTENTION_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the tiled kernels handle head dim d (1..128). */
int flash_attention_supported(int d);
/* attention_fwd's contract (kernels/ops/ops_attention.h). */
void flash_attention_fwd(float *o, float *lse, const float *q, const float *k, const float *v, const uint8_t *selected,
                         int B, int L, int Hq, int Hkv, int d, int wl, float scale);
/* attention_bwd's contract, given delta[row] = <dO, O> of every query row. */
void flash_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                         const float *v, const float *lse, const float *delta, const uint8_t *selected, int B, int L,
                         int Hq, int Hkv, int d, int wl, float scale);

#ifdef __cplusplus
}
#endif

#endif
