// CUDA: native sparse attention (MODEL.md §6), the CPU op's semantics (kernels/cpu/op_nsa.c) in
// tiled kernels. Forward: pool the blocks, the compressed branch and the top-n selection in the
// CPU's exact arithmetic (block_idx identical), the selected branch as query tiles (one token x
// the kv group's heads against 64-key blocks), the window branch with the tiled sliding-window
// attention (cuda_flash_attention.cu, wl = window - 1: it sees keys t - window + 1 .. t), then
// the gate mix. Backward: the gate gradients and each branch's softmax row term D, the window
// branch's dq, dk, dv (written), then the other branches' dq (query tiles) and dk, dv (key
// tiles over an inverted index) added in a fixed order. In bf16 mode the query tiles and the
// window run on the tensor cores (head dims 64, 128). Head dims > 128 take the per-row path,
// and so does everything when HYLA_NSA_TILED=0 (kept to compare against the per-row kernels).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_flash_attention.h"
#include "cuda_nsa.h"
#include "cuda_switch.h"

static int nsa_check_shape(const struct hyla_nsa_shape *s) {
    if (s->kv_heads < 1 || s->q_heads % s->kv_heads != 0 || s->block_size < 1 || s->window < 1 || s->n_select < 0 ||
        s->n_select > 64) {
        fprintf(stderr, "hyla: error: nsa: bad shape (q_heads %d, kv_heads %d, block_size %d, window %d, n_select %d)\n",
                s->q_heads, s->kv_heads, s->block_size, s->window, s->n_select);
        exit(1);
    }
    return s->head_dim >= 1 && s->head_dim <= 128; // the tiles' head dims
}

// The tiled kernels unless HYLA_NSA_TILED=0 (the per-row kernels, for comparison).
static bool tiled_wanted(void) {
    static const bool on = cuda_switch("HYLA_NSA_TILED", true);
    return on;
}

static nsa_dims dims_of(const struct hyla_nsa_shape *s, int B, int L) {
    nsa_dims d;
    d.B = B, d.L = L, d.Hq = s->q_heads, d.Hkv = s->kv_heads, d.G = s->q_heads / s->kv_heads, d.d = s->head_dim;
    d.bs = s->block_size, d.NB = (L + s->block_size - 1) / s->block_size, d.nsel = s->n_select;
    d.scale = (float)s->scale;
    return d;
}

static nsa_saved saved_of(float *saved, const struct hyla_nsa_shape *s, int B, int L) {
    const struct hyla_nsa_saved_offsets off = nsa_saved_offsets(s, B, L);
    nsa_saved sv;
    sv.kbar = saved + off.kbar, sv.vbar = saved + off.vbar, sv.gate = saved + off.gate;
    for (int x = 0; x < 3; x++) sv.o[x] = saved + off.o[x], sv.lse[x] = saved + off.lse[x];
    return sv;
}

static void cuda_nsa_fwd(float *o, float *saved, int32_t *block_idx, const float *q, const float *k, const float *v,
                         const float *gate_logits, const struct hyla_nsa_shape *shape, int B, int L, int reuse) {
    if (!nsa_check_shape(shape) || !tiled_wanted()) {
        nsa_rows_fwd(o, saved, block_idx, q, k, v, gate_logits, shape, B, L, reuse);
        return;
    }
    if ((size_t)B * L == 0) return;
    const nsa_dims s = dims_of(shape, B, L);
    const nsa_saved sv = saved_of(saved, shape, B, L);
    nsa_pool(sv, k, v, s);
    nsa_compressed_select(sv, reuse ? NULL : block_idx, q, s); // (selection reads the compressed lse)
    const bool mma = cuda_matmul_bf16() && nsa_mma_supported(s); // train.precision = bf16
    if (mma) nsa_slc_fwd_bf16(sv, q, k, v, block_idx, s);
    else nsa_slc_fwd(sv, q, k, v, block_idx, s);
    flash_attention_fwd(sv.o[NSA_SWA], sv.lse[NSA_SWA], q, k, v, NULL, B, L, s.Hq, s.Hkv, s.d, shape->window - 1,
                        s.scale);
    nsa_mix(o, sv, gate_logits, s);
}

static void cuda_nsa_bwd(float *dq, float *dk, float *dv, float *dgate, const float *dout, const float *saved,
                         const int32_t *block_idx, const float *q, const float *k, const float *v,
                         const float *gate_logits, const struct hyla_nsa_shape *shape, int B, int L) {
    if (!nsa_check_shape(shape) || !tiled_wanted()) {
        nsa_rows_bwd(dq, dk, dv, dgate, dout, saved, block_idx, q, k, v, gate_logits, shape, B, L);
        return;
    }
    if ((size_t)B * L == 0) return;
    const nsa_dims s = dims_of(shape, B, L);
    const nsa_saved sv = saved_of((float *)saved, shape, B, L); // read only here
    const size_t rows = (size_t)B * L * s.Hq;
    float *delta, *dout_swa;
    CUDA_CHECK(cudaMallocAsync((void **)&delta, sizeof(float) * rows * (3 + (size_t)s.d), 0));
    dout_swa = delta + 3 * rows;
    nsa_gate_bwd(dgate, delta, dout_swa, dout, sv, s);
    flash_attention_bwd(dq, dk, dv, dout_swa, q, k, v, sv.lse[NSA_SWA], delta + NSA_SWA * rows, NULL, B, L, s.Hq,
                        s.Hkv, s.d, shape->window - 1, s.scale);
    uint16_t *gdo = cuda_matmul_bf16() && nsa_mma_supported(s) ? nsa_scaled_dout(dout, sv, s) : NULL;
    if (gdo) nsa_dq_bf16(dq, gdo, sv, delta, q, k, v, block_idx, s);
    else nsa_dq(dq, dout, sv, delta, q, k, v, block_idx, s);
    nsa_dkdv(dk, dv, dout, gdo, sv, delta, q, k, v, block_idx, s);
    if (gdo) CUDA_CHECK(cudaFreeAsync(gdo, 0));
    CUDA_CHECK(cudaFreeAsync(delta, 0));
}

extern "C" void cuda_register_nsa(struct hyla_backend *t) {
    t->nsa_fwd = cuda_nsa_fwd, t->nsa_bwd = cuda_nsa_bwd;
}
