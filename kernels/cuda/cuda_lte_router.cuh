// The LTE router CNN on the GPU (MODEL.md §5.2): what its two forms share — the problem's
// dimensions and offsets, and the CPU twin's dropout-masked conv inputs — and the entry points
// of each form. cuda_lte_router.cu picks the form; cuda_lte_router_taps.cu is the per-tap
// cuBLAS form, cuda_lte_router_fused.cu the fused kernels.
#ifndef HYLA_CUDA_LTE_ROUTER_CUH
#define HYLA_CUDA_LTE_ROUTER_CUH

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/rng.h"
#include "cuda_mma.cuh" // exp2_approx (σ)
#include "kernels/ops/op_shapes.h"

// Rows (sequences) of one launch, each with its own dropout keys (kernel parameters): a call on
// more rows launches once per ROUTER_ROWS of them.
constexpr int ROUTER_ROWS = 8;

// One launch's problem: B (<= ROUTER_ROWS) rows of L tokens; row b's k, v, score at b L H
// tokens, its saved activations at b row_acts (a row's block: a_1 .. a_n, z; ops_lte.h).
struct router_dims {
    int B, L, H, d, n;
    int c[HYLA_LTE_MAX_CONVS + 1], kernel[HYLA_LTE_MAX_CONVS], dilation[HYLA_LTE_MAX_CONVS];
    size_t act[HYLA_LTE_MAX_CONVS + 2]; // in a row's block: a_1 .. a_n at act[1..n], z at act[n + 1]
    size_t row_acts;
    size_t w[HYLA_LTE_MAX_CONVS], b[HYLA_LTE_MAX_CONVS], pw, pb;
    float p, keep_scale;
    uint32_t keep_min; // kept iff (draw >> 40) >= keep_min: hyla_rng_uniform(...) >= p, in integers
    uint64_t key[ROUTER_ROWS][HYLA_LTE_MAX_CONVS]; // conv l's key of row b
};

// keys: B (<= ROUTER_ROWS) rows' dropout keys, read when p > 0.
static inline struct router_dims dims_of(const struct hyla_lte_router_shape *s, int B, int L, float p,
                                         const uint64_t *keys) {
    struct router_dims r;
    memset(&r, 0, sizeof r);
    r.B = B, r.L = L, r.H = s->heads, r.d = s->head_dim, r.n = s->n_convs, r.p = p, r.keep_scale = 1.0f / (1.0f - p);
    // the uniform is (draw >> 40) 2^-24 exactly, and p 2^24 is exact: the same comparison
    r.keep_min = p > 0 ? (uint32_t)ceilf(p * 16777216.0f) : 0;
    struct hyla_lte_router_offsets off = lte_router_offsets(s);
    const size_t row_tokens = (size_t)L * r.H;
    size_t at = 0;
    for (int l = 0; l <= r.n; l++) r.c[l] = lte_router_channels(s, l);
    for (int l = 0; l < r.n; l++) {
        r.kernel[l] = s->kernel[l], r.dilation[l] = s->dilation[l];
        r.w[l] = off.conv_weight[l], r.b[l] = off.conv_bias[l];
        for (int row = 0; row < B && p > 0; row++) r.key[row][l] = hyla_rng_subkey(keys[row], (uint64_t)l);
        r.act[l + 1] = at;
        at += row_tokens * (size_t)r.c[l + 1];
    }
    r.act[r.n + 1] = at;
    r.row_acts = at + row_tokens;
    r.pw = off.proj_weight, r.pb = off.proj_bias;
    return r;
}

// Where a_l (l = 1 .. n; z: l = n + 1, a value a token) of token t, head h of row b starts in acts.
__host__ __device__ static inline size_t act_of(const struct router_dims &r, int l, int b, int t, int h) {
    return (size_t)b * r.row_acts + r.act[l] + ((size_t)t * r.H + h) * (l <= r.n ? (size_t)r.c[l] : 1);
}
// The dropout index of channel ci of conv l's input at token t, head h (within its row).
__host__ __device__ static inline size_t drop_index(const struct router_dims &r, int l, int t, int h, int ci) {
    return ((size_t)t * r.H + h) * r.c[l] + ci;
}

// σ(x) = 1 / (1 + 2^(-x log2 e)) on the special-function unit: ex2.approx and an approximate
// reciprocal (~2 ulp each; 5 instructions where expf and an IEEE division took ~20, Nsight
// Compute: 7% of the router's instructions and its backward's most-stalled line). Within 1e-6
// of the CPU's σ: the fp32 checks' bound is 1e-5.
__device__ static inline float sig(float x) {
    return __fdividef(1.0f, 1.0f + hyla_mma::exp2_approx(-hyla_mma::LOG2E * x));
}
__device__ static inline float silu(float x) { return x * sig(x); }
__device__ static inline float silu_grad(float x) {
    float s = sig(x);
    return s * (1.0f + x * (1.0f - s));
}

// The (dropped-out) input of conv l at (b, t, h, channel ci); 1 when kept, 0 when dropped in *mask.
__device__ static inline float conv_input(const struct router_dims &r, int l, const float *k, const float *v,
                                   const float *acts, int b, int t, int h, int ci, float *mask) {
    const size_t pos = ((size_t)b * r.L + t) * r.H + h;
    float x = l == 0 ? (ci < r.d ? k[pos * r.d + ci] : v[pos * r.d + ci - r.d]) : silu(acts[act_of(r, l, b, t, h) + ci]);
    float keep = 1.0f;
    if (r.p > 0) keep = hyla_rng_uniform(r.key[b][l], drop_index(r, l, t, h, ci)) >= r.p ? r.keep_scale : 0.0f;
    *mask = keep;
    return x * keep;
}

// ---- device pieces the fused kernels (cuda_lte_router_fused.cu) and the fixed-shape forward
// (cuda_lte_router_fixed.cu) share ----
// Channels c0 .. c0 + n - 1 (n <= 4) of conv l's input at token t, head h of row b: x[q] times
// its dropout factor, 0 or 1 / (1 - p): kept iff draw drop_index(...) of the row's key for conv
// l, hyla_rng_u64, has its top 24 bits >= keep_min. The key and the first element's counter are
// worked out once; the next channel's counter is the previous one's plus HYLA_RNG_STEP (the
// dropout draws were a quarter of the kernels' instructions, Nsight Compute).
// Whether the draw of counter z keeps its element (its top 24 bits >= keep_min).
__device__ static inline bool kept(uint64_t z, uint32_t keep_min) { return (uint32_t)(hyla_mix64(z) >> 40) >= keep_min; }
__device__ static inline void keep_quad(float (&x)[4], const router_dims &r, int l, int b, int t, int h, int c0, int n) {
    if (!(r.p > 0)) return;
    uint64_t z = hyla_rng_counter(r.key[b][l], drop_index(r, l, t, h, c0));
    const uint32_t keep_min = r.keep_min;
    const float keep_scale = r.keep_scale;
#pragma unroll
    for (int q = 0; q < 4; q++, z += HYLA_RNG_STEP)
        if (q < n) x[q] *= kept(z, keep_min) ? keep_scale : 0.0f;
}
__device__ static inline size_t token_pos(const router_dims &r, int b, int t, int h) { return ((size_t)b * r.L + t) * r.H + h; }
__device__ static inline float4 load4(const float *p) { return *reinterpret_cast<const float4 *>(p); }
__device__ static inline void store4(float *p, const float (&v)[4]) {
    *reinterpret_cast<float4 *>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
// The sum of M[i * stride] over rows i < rows, in four interleaved partial sums (a fixed order).
__device__ static inline float column_total(const float *M, int stride, int rows) {
    float s[4] = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= rows; i += 4)
        for (int q = 0; q < 4; q++) s[q] += M[(size_t)(i + q) * stride];
    for (; i < rows; i++) s[0] += M[(size_t)i * stride];
    return (s[0] + s[1]) + (s[2] + s[3]);
}
// A block's slot entry: written by its first tile, added to by the next ones.
__device__ static inline void add_partial(float *entry, float s, bool first) { *entry = first ? s : *entry + s; }

__device__ static inline void store_bf16x4(hyla_mma::bf16 *p, const float (&x)[4]) {
    *reinterpret_cast<uint2 *>(p) = make_uint2(hyla_mma::pack(x[0], x[1]), hyla_mma::pack(x[2], x[3]));
}
// Tile row of fragment row g in the tensor-core products (cuda_lte_router_fused.cu explains).
__device__ static inline int mma_row(int g) { return 4 * (g % 2) + g / 2; }

// The per-tap form (cuda_lte_router_taps.cu): any shape, one row (r.B = 1).
void taps_router_fwd(float *score, float *acts, const float *k, const float *v, const float *params,
                     const struct hyla_lte_router_shape *shape, const router_dims &r);
void taps_router_bwd(float *dk, float *dv, float *dparams, const float *dscore, const float *k, const float *v,
                     const float *params, const float *acts, const struct hyla_lte_router_shape *shape,
                     const router_dims &r);

// The fused kernels (cuda_lte_router_fused.cu): false, having done nothing, for a shape whose
// tile does not fit in shared memory. mma: their products on the tensor cores in bf16 where the
// shape fits that form (else on the CUDA cores in fp32).
namespace fused {
bool forward(float *score, float *acts, const float *k, const float *v, const float *params, const router_dims &r,
             bool mma);
struct weight_stage; // the backward's staged weights, kept across an op call's row launches
bool backward(float *dk, float *dv, float *dparams, const float *dscore, const float *k, const float *v,
              const float *params, const float *acts, const router_dims &r, bool mma, weight_stage &stage);
} // namespace fused

// Forward and backward at the papers' shape (cuda_lte_router_fixed.cu, _fixed_bwd.cu: head dim
// 64, convs 128 -> 64 -> 32 -> 16, kernel 3, dilation 2), as the fused kernels' tensor-core form:
// false, having done nothing, for any other shape.
namespace fixed {
bool forward(float *score, float *acts, const float *k, const float *v, const float *params, const router_dims &r);
// The backward's staged weights, made by an op call's first row launch and kept for the others
// (they depend on the parameters and the heads only), freed at its end.
struct bwd_stage {
    float *wt = nullptr;
    bwd_stage() = default;
    bwd_stage(const bwd_stage &) = delete;
    bwd_stage &operator=(const bwd_stage &) = delete;
    ~bwd_stage();
};
bool backward(float *dk, float *dv, float *dparams, const float *dscore, const float *k, const float *v,
              const float *params, const float *acts, const router_dims &r, bwd_stage &stage);
} // namespace fixed

#endif
