// NSA on the GPU (MODEL.md §6): what the pieces in cuda_nsa*.cu share. cuda_nsa.cu runs them
// in order and fills the backend table:
//   cuda_nsa_select.cu  row-wise pieces in the CPU's exact arithmetic: pooling, the compressed
//                       branch's forward pass, block importance and top-n selection (so that
//                       block_idx is the CPU's), the gate mix, the gate gradients;
//   cuda_nsa_compressed.cu  the compressed branch and block importance in one kernel (the
//                       same arithmetic, reads from shared memory);
//   cuda_nsa_query.cu   query-side tiles (one token x 16 heads of a kv group against 64 keys):
//                       the selected branch's forward pass, dq of the compressed and selected
//                       branches;
//   cuda_nsa_mma.cu     the query-side tiles on the tensor cores (train.precision = bf16);
//   cuda_nsa_keys.cu    key-side tiles (64 keys x 64 query rows): dk, dv of the selected
//                       branch over an inverted index (which queries chose a block) and of the
//                       compressed branch, as partial sums added in a fixed order;
//   the window branch is cuda_flash_attention.cu's sliding window;
//   cuda_nsa_rows.cu    the CPU's per-row code, one thread per row task: head dims > 128.
// No float atomics: every sum runs in a fixed order, the same bits every run.
#ifndef HYLA_CUDA_NSA_H
#define HYLA_CUDA_NSA_H

#include <stdint.h>

#include "kernels/ops/op_shapes.h"

struct nsa_dims {
    int B, L, Hq, Hkv, G, d, bs, NB, nsel;
    float scale;
};

// Saved-tensor pointers of one call (op_shapes.h's layout); the backward pass only reads.
struct nsa_saved {
    float *kbar, *vbar, *o[3], *lse[3], *gate;
};

enum { NSA_CMP = 0, NSA_SLC = 1, NSA_SWA = 2 }; // branch = gate channel 3i + x

// cuda_nsa_select.cu
void nsa_pool(const nsa_saved &sv, const float *k, const float *v, const nsa_dims &s);
// The compressed branch's o and lse, then (block_idx not NULL) the top-n selection.
void nsa_compressed_select(const nsa_saved &sv, int32_t *block_idx, const float *q, const nsa_dims &s);
void nsa_mix(float *o, const nsa_saved &sv, const float *gate_logits, const nsa_dims &s);
// dgate_logits; delta[x * rows + r] = g_x <dout, o_x> (D of branch x); dout_swa = g_swa dout.
void nsa_gate_bwd(float *dgate_logits, float *delta, float *dout_swa, const float *dout, const nsa_saved &sv,
                  const nsa_dims &s);
// The tensor-core tiles' g_x dout of the compressed and selected branches as bf16 bits:
// [2][B L Hq][d], the compressed branch's first; stream-ordered, the caller frees it.
uint16_t *nsa_scaled_dout(const float *dout, const nsa_saved &sv, const nsa_dims &s);

// cuda_nsa_compressed.cu: the compressed branch and the importances (imp, or NULL) in one kernel,
// the same arithmetic as cuda_nsa_select.cu's two, for head dims <= 64 and groups <= 128.
bool nsa_compressed_supported(const nsa_dims &s);
void nsa_compressed(const nsa_saved &sv, float *imp, const float *q, const nsa_dims &s);

// cuda_nsa_query.cu
void nsa_slc_fwd(const nsa_saved &sv, const float *q, const float *k, const float *v, const int32_t *block_idx,
                 const nsa_dims &s);
// dq += the compressed and selected branches' share.
void nsa_dq(float *dq, const float *dout, const nsa_saved &sv, const float *delta, const float *q, const float *k,
            const float *v, const int32_t *block_idx, const nsa_dims &s);

// cuda_nsa_mma.cu: the same two on the tensor cores (bf16 operands), head dims 64 and 128.
bool nsa_mma_supported(const nsa_dims &s);
void nsa_slc_fwd_bf16(const nsa_saved &sv, const float *q, const float *k, const float *v, const int32_t *block_idx,
                      const nsa_dims &s);
void nsa_dq_bf16(float *dq, const uint16_t *gdo, const nsa_saved &sv, const float *delta, const float *q,
                 const float *k, const float *v, const int32_t *block_idx, const nsa_dims &s);

// cuda_nsa_keys.cu: dk, dv += the selected and compressed branches' share.
// gdo: nsa_scaled_dout's (the tensor-core tiles), or NULL (fp32 tiles on the CUDA cores).
void nsa_dkdv(float *dk, float *dv, const float *dout, const uint16_t *gdo, const nsa_saved &sv, const float *delta,
              const float *q, const float *k, const float *v, const int32_t *block_idx, const nsa_dims &s);

// cuda_nsa_rows.cu
void nsa_rows_fwd(float *o, float *saved, int32_t *block_idx, const float *q, const float *k, const float *v,
                  const float *gate_logits, const struct hyla_nsa_shape *shape, int B, int L, int reuse);
void nsa_rows_bwd(float *dq, float *dk, float *dv, float *dgate, const float *dout, const float *saved,
                  const int32_t *block_idx, const float *q, const float *k, const float *v,
                  const float *gate_logits, const struct hyla_nsa_shape *shape, int B, int L);

#endif
