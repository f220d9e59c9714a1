// NSA's selection in the CPU op's exact arithmetic (kernels/ops/nsa_rows.h), the pieces that
// the compressed branch's kernels share (cuda_nsa_select.cu, cuda_nsa_compressed.cu): the
// dot product in the CPU's order without fused multiply-adds, and float exp / log as the
// double functions rounded to float. Selection is discrete: a block whose importance is within
// rounding of the n-th best would flip on any difference, so everything it reads is computed
// as the CPU computes it (cuda_nsa_select.cu says where that is not exact).
#ifndef HYLA_CUDA_NSA_EXACT_CUH
#define HYLA_CUDA_NSA_EXACT_CUH

#include <math.h>

namespace nsa_exact {

// nsa_rows.h's dot: four interleaved partial sums, then the tail into the first, each product
// and sum rounded on its own. a in registers (DP a multiple of 4, zero padded past d); ALIGNED:
// b is 16-byte aligned (a shared row) and its full quads are read as float4.
template <int DP, bool ALIGNED = false> __device__ inline float dot_exact(const float (&a)[DP], const float *b, int d) {
    float s[4] = {0, 0, 0, 0};
#pragma unroll
    for (int x = 0; x < DP; x += 4) {
        if (x + 4 <= d) {
            float4 v;
            if (ALIGNED) v = *(const float4 *)(b + x);
            else v = make_float4(b[x], b[x + 1], b[x + 2], b[x + 3]);
            s[0] = __fadd_rn(s[0], __fmul_rn(a[x], v.x)), s[1] = __fadd_rn(s[1], __fmul_rn(a[x + 1], v.y));
            s[2] = __fadd_rn(s[2], __fmul_rn(a[x + 2], v.z)), s[3] = __fadd_rn(s[3], __fmul_rn(a[x + 3], v.w));
        } else {
#pragma unroll
            for (int u = 0; u < 4; u++)
                if (x + u < d) s[0] = __fadd_rn(s[0], __fmul_rn(a[x + u], b[x + u]));
        }
    }
    return __fadd_rn(__fadd_rn(s[0], s[1]), __fadd_rn(s[2], s[3]));
}
__device__ inline float exp_c(float x) { return (float)exp((double)x); } // expf, correctly rounded
__device__ inline float log_c(float x) { return (float)log((double)x); }

// One pooled key of the compressed branch's running softmax (attn_row_fwd's order): score sc
// updates the running maximum m and sum l, rescaling o when m grows; returns the key's weight
// p (o += p v is the caller's: o itself needs no exactness).
template <int DP> __device__ inline float online_softmax_step(float sc, float &m, float &l, float (&o)[DP]) {
    if (sc > m) {
        const float f = exp_c(__fsub_rn(m, sc));
        l = __fmul_rn(l, f);
#pragma unroll
        for (int e = 0; e < DP; e++) o[e] *= f;
        m = sc;
    }
    const float p = exp_c(__fsub_rn(sc, m));
    l = __fadd_rn(l, p);
    return p;
}

template <int DP> __device__ inline void load_row(float (&r)[DP], const float *x, int d) {
#pragma unroll
    for (int e = 0; e < DP; e++) r[e] = e < d ? x[e] : 0.0f;
}

} // namespace nsa_exact

#endif
