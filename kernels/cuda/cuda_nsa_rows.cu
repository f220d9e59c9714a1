// CUDA: NSA (MODEL.md §6) with the very per-row code of the CPU op (kernels/ops/nsa_rows.h),
// one thread per row task. The fallback of the tiled path (cuda_nsa.cu) for head dims it does
// not cover (> 128): pooling per (b, block, kv head), the forward pass per
// (b, t, kv head), the backward pass for dq and the gates per (b, t, kv head) and for dk, dv
// per (b, kv head, key block) — the CPU's tasks, so the same sums in the same order and no
// atomics. Correctness first: a thread walks a whole row (tiling is future work).
#include <math.h>
#include <string.h>

#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_nsa.h"

#define REAL float
#define NSA_HD __host__ __device__
#include "kernels/ops/nsa_rows.h"

static struct nsa nsa_of(const struct hyla_nsa_shape *s, int B, int L, const float *q, const float *k, const float *v,
                         const float *gate_logits, float *saved) {
    if (s->kv_heads < 1 || s->q_heads % s->kv_heads != 0 || s->block_size < 1 || s->window < 1 || s->n_select < 0 ||
        s->n_select > NSA_MAX_SELECT) {
        fprintf(stderr, "hyla: error: nsa: bad shape (q_heads %d, kv_heads %d, block_size %d, window %d, n_select %d)\n",
                s->q_heads, s->kv_heads, s->block_size, s->window, s->n_select);
        exit(1);
    }
    struct nsa a;
    memset(&a, 0, sizeof a);
    a.s = *s, a.L = L, a.G = s->q_heads / s->kv_heads, a.NB = (L + s->block_size - 1) / s->block_size;
    a.d = s->head_dim, a.scale = (float)s->scale, a.q = q, a.k = k, a.v = v, a.gate_logits = gate_logits;
    a.saved = saved, a.off = nsa_saved_offsets(s, B, L);
    return a;
}

__global__ void nsa_pool_kernel(struct nsa a, int B) {
    int task = blockIdx.x * blockDim.x + threadIdx.x, H = a.s.kv_heads;
    if (task >= B * a.NB * H) return;
    pool_block(&a, task / (a.NB * H), task / H % a.NB, task % H);
}
__global__ void nsa_fwd_kernel(float *o, int32_t *block_idx, struct nsa a, int B, int reuse) {
    int task = blockIdx.x * blockDim.x + threadIdx.x, H = a.s.kv_heads;
    if (task >= B * a.L * H) return;
    nsa_fwd_row(o, block_idx + (size_t)task * a.s.n_select, &a, task / (a.L * H), task / H % a.L, task % H, reuse);
}
__global__ void nsa_bwd_queries_kernel(float *dq, float *dgate, const float *dout, const int32_t *block_idx,
                                       struct nsa a, int B) {
    int task = blockIdx.x * blockDim.x + threadIdx.x, H = a.s.kv_heads;
    if (task >= B * a.L * H) return;
    nsa_bwd_queries(dq, dgate, &a, dout, block_idx + (size_t)task * a.s.n_select, task / (a.L * H), task / H % a.L,
                    task % H);
}
__global__ void nsa_bwd_keys_kernel(float *dk, float *dv, const float *dout, const int32_t *block_idx, struct nsa a,
                                    int B) {
    int task = blockIdx.x * blockDim.x + threadIdx.x, H = a.s.kv_heads;
    if (task >= B * a.NB * H) return;
    nsa_bwd_keys(dk, dv, &a, dout, block_idx, task / (a.NB * H), task % H, task / H % a.NB);
}

enum { NSA_THREADS = 64 };

void nsa_rows_fwd(float *o, float *saved, int32_t *block_idx, const float *q, const float *k, const float *v,
                         const float *gate_logits, const struct hyla_nsa_shape *shape, int B, int L, int reuse) {
    struct nsa a = nsa_of(shape, B, L, q, k, v, gate_logits, saved);
    nsa_pool_kernel<<<blocks_for((size_t)B * a.NB * shape->kv_heads, NSA_THREADS), NSA_THREADS>>>(a, B);
    CUDA_LAUNCH_CHECK();
    nsa_fwd_kernel<<<blocks_for((size_t)B * L * shape->kv_heads, NSA_THREADS), NSA_THREADS>>>(o, block_idx, a, B, reuse);
    CUDA_LAUNCH_CHECK();
}

void nsa_rows_bwd(float *dq, float *dk, float *dv, float *dgate, const float *dout, const float *saved,
                         const int32_t *block_idx, const float *q, const float *k, const float *v,
                         const float *gate_logits, const struct hyla_nsa_shape *shape, int B, int L) {
    struct nsa a = nsa_of(shape, B, L, q, k, v, gate_logits, (float *)saved); // read only here
    nsa_bwd_queries_kernel<<<blocks_for((size_t)B * L * shape->kv_heads, NSA_THREADS), NSA_THREADS>>>(dq, dgate, dout,
                                                                                                     block_idx, a, B);
    CUDA_LAUNCH_CHECK();
    nsa_bwd_keys_kernel<<<blocks_for((size_t)B * a.NB * shape->kv_heads, NSA_THREADS), NSA_THREADS>>>(dk, dv, dout,
                                                                                                     block_idx, a, B);
    CUDA_LAUNCH_CHECK();
}
