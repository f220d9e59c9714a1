// CUDA: the LTE router's per-tap form — the fallback of the fused kernels
// (cuda_lte_router_fused.cu) for any shape, and the default until those have run on a GPU.
// Each conv a sum over its taps of shifted matrix products per kv head (tap i: output row t
// reads input row t + dilation (i - centre)): outputs, weight gradients and input gradients are
// batched cuBLAS products over the heads (in the backend's matmul precision), taps in a fixed
// order; bias and projection gradients are column sums (cuda_column_sum.cuh).
#include <stdlib.h>

#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_column_sum.cuh"
#include "cuda_lte_router.cuh"

// a_{l+1}[(b, t), h, co] = bias[h, co] (the product adds onto it).
__global__ void conv_bias_fill_kernel(float *out, const float *bias, size_t count, int hc) {
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e < count) out[e] = bias[e % hc];
}

__global__ void proj_fwd_kernel(float *score, float *acts, const float *params, struct router_dims r) {
    size_t pos = blockIdx.x * (size_t)blockDim.x + threadIdx.x; // (b, t, h)
    if (pos >= (size_t)r.B * r.L * r.H) return;
    const int h = (int)(pos % r.H), c = r.c[r.n];
    float z = params[r.pb + h];
    for (int j = 0; j < c; j++) z += params[r.pw + (size_t)h * c + j] * silu(acts[r.act[r.n] + pos * c + j]);
    acts[r.act[r.n + 1] + pos] = z;
    score[pos] = sig(z) - 0.5f;
}

// ---- backward ---------------------------------------------------------------------------------
// du_n = dz * proj weight, dz = dscore * sigma'(z); proj gradients per (h, c) summed in order.
__global__ void proj_bwd_du_kernel(float *du, const float *dscore, const float *acts, const float *params,
                                   struct router_dims r) {
    const int c = r.c[r.n];
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; // (pos, j)
    if (e >= (size_t)r.B * r.L * r.H * c) return;
    const size_t pos = e / c;
    const int j = (int)(e % c), h = (int)(pos % r.H);
    const float s = sig(acts[r.act[r.n + 1] + pos]);
    du[e] = dscore[pos] * s * (1.0f - s) * params[r.pw + (size_t)h * c + j];
}
// The projection's weight (h, j) and bias (h) gradients: terms of a column sum over rows (b, t).
struct proj_weight_term {
    const float *dscore, *acts;
    router_dims r;
    __device__ float dz(size_t pos) const {
        const float s = sig(acts[r.act[r.n + 1] + pos]);
        return dscore[pos] * s * (1.0f - s);
    }
    __device__ float operator()(int row, int e) const { // e = (h, j)
        const int c = r.c[r.n], h = e / c, j = e % c;
        const size_t pos = (size_t)row * r.H + h;
        return dz(pos) * silu(acts[r.act[r.n] + pos * c + j]);
    }
};
struct proj_bias_term {
    proj_weight_term w;
    __device__ float operator()(int row, int h) const { return w.dz((size_t)row * w.r.H + h); }
};

// da = du * silu'(a) for conv l's output, in place in du.
__global__ void silu_bwd_kernel(float *du, const float *acts, size_t offset, size_t count) {
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e < count) du[e] *= silu_grad(acts[offset + e]);
}

// Conv l's bias gradient at (h, co): a column sum over rows (b, t).
struct conv_bias_term {
    const float *da;
    int cols; // H * cout
    __device__ float operator()(int row, int hc) const { return da[(size_t)row * cols + hc]; }
};

// The backward pieces around the convs.
static size_t widest_channels(const struct router_dims &r) {
    size_t widest = 0;
    for (int l = 0; l <= r.n; l++) widest = (size_t)r.c[l] > widest ? (size_t)r.c[l] : widest;
    return widest;
}
// du = the gradient at the last conv's SiLU output; the projection's weight and bias gradients.
static void projection_backward(float *du, float *dparams, const float *dscore, const float *acts,
                                const float *params, const struct router_dims &r) {
    const size_t tokens = (size_t)r.B * r.L * r.H;
    proj_bwd_du_kernel<<<blocks_for(tokens * r.c[r.n], 128), 128>>>(du, dscore, acts, params, r);
    CUDA_LAUNCH_CHECK();
    const proj_weight_term proj{dscore, acts, r};
    column_sum_add(dparams + r.pw, r.B * r.L, r.H * r.c[r.n], proj);
    column_sum_add(dparams + r.pb, r.B * r.L, r.H, proj_bias_term{proj});
}
// du (at conv l's SiLU output) becomes the gradient at its pre-activation; conv l's bias gradient.
static void conv_output_backward(float *du, float *dparams, const float *acts, const struct router_dims &r, int l) {
    const size_t outs = (size_t)r.B * r.L * r.H * r.c[l + 1];
    silu_bwd_kernel<<<blocks_for(outs, 256), 256>>>(du, acts, r.act[l + 1], outs);
    CUDA_LAUNCH_CHECK();
    const int hc = r.H * r.c[l + 1];
    column_sum_add(dparams + r.b[l], r.B * r.L, hc, conv_bias_term{du, hc});
}

// ---- the convs as per-tap products ----
// The dropped-out input X of a conv is written once (not kernel-width times, as an unfolded
// "im2col" copy would be: a third of the memory traffic and of the dropout draws at kernel
// width 3), and tap i multiplies rows t + shift_i of X by that tap's weights, batched over the
// heads; the backward pass runs the same products transposed, taps in order.
// X[h][(b, t)][ci] = conv l's dropped-out input at (b, t, h, ci): each value (and its dropout
// draw) once, where an unfolded copy would hold it kernel-width times.
__global__ void conv_input_kernel(float *X, const float *k, const float *v, const float *acts, struct router_dims r,
                                  int l) {
    const int cin = r.c[l];
    const size_t N = (size_t)r.B * r.L;
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)r.H * N * cin) return;
    const int ci = (int)(e % cin), h = (int)(e / (N * cin));
    const size_t n = (e / cin) % N;
    float mask;
    X[e] = conv_input(r, l, k, v, acts, (int)(n / r.L), (int)(n % r.L), h, ci, &mask);
}
static void conv_inputs(float *X, const float *k, const float *v, const float *acts, const struct router_dims &r,
                        int l) {
    const size_t count = (size_t)r.H * r.B * r.L * r.c[l];
    conv_input_kernel<<<blocks_for(count, 256), 256>>>(X, k, v, acts, r, l);
    CUDA_LAUNCH_CHECK();
}

// Conv l's weights per tap: Wt[h][i][co][ci] = W[h][co][ci * kw + i] (to_taps), and the
// gradient's way back, added into the parameters' layout (from_taps).
__global__ void weight_taps_kernel(float *Wt, const float *W, int H, int cout, int cin, int kw, int to_taps) {
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; // over W's layout [h][co][ci][i]
    if (e >= (size_t)H * cout * cin * kw) return;
    const int i = (int)(e % kw), ci = (int)((e / kw) % cin);
    const size_t hco = e / ((size_t)kw * cin); // h * cout + co
    const int co = (int)(hco % cout), h = (int)(hco / cout);
    const size_t t = (((size_t)h * kw + i) * cout + co) * cin + ci;
    if (to_taps) Wt[t] = W[e];
    else ((float *)W)[e] += Wt[t];
}
static void weight_taps(float *Wt, const float *W, const struct router_dims &r, int l, int to_taps) {
    const size_t count = (size_t)r.H * r.c[l + 1] * r.c[l] * r.kernel[l];
    weight_taps_kernel<<<blocks_for(count, 256), 256>>>(Wt, W, r.H, r.c[l + 1], r.c[l], r.kernel[l], to_taps);
    CUDA_LAUNCH_CHECK();
}

// The rows of one sequence that tap i reads inside the sequence: outputs t in [*t0, *t1)
// read inputs t + shift (the rest read the zero padding and add nothing).
static int tap_rows(const struct router_dims &r, int l, int i, int *t0, int *t1) {
    const int shift = r.dilation[l] * (i - (r.kernel[l] - 1) / 2);
    *t0 = shift < 0 ? -shift : 0;
    *t1 = shift > 0 ? r.L - shift : r.L;
    return shift;
}

// Conv l forward as kernel-width shifted products per sequence, batched over the heads:
// a_{l+1}[(b, t), h] = bias + sum over taps i of X_h[(b, t + shift_i)] Wt_{h,i}^T.
static void conv_forward_taps(float *acts, const float *X, float *Wt, const float *params, const struct router_dims &r,
                         int l) {
    const int cin = r.c[l], cout = r.c[l + 1], kw = r.kernel[l], hc = r.H * cout;
    const long long N = (long long)r.B * r.L;
    float *out = acts + r.act[l + 1];
    conv_bias_fill_kernel<<<blocks_for((size_t)N * hc, 256), 256>>>(out, params + r.b[l], (size_t)N * hc, hc);
    CUDA_LAUNCH_CHECK();
    weight_taps(Wt, params + r.w[l], r, l, 1);
    for (int i = 0; i < kw; i++)
        for (int b = 0; b < r.B; b++) {
            int t0, t1;
            const int shift = tap_rows(r, l, i, &t0, &t1);
            if (t1 <= t0) continue;
            const long long row = (long long)b * r.L;
            cuda_gemm_batched(0, 1, t1 - t0, cout, cin, 1.0f, X + (row + t0 + shift) * cin, cin, N * cin,
                              Wt + (size_t)i * cout * cin, cin, (long long)kw * cout * cin, 1.0f,
                              out + (row + t0) * hc, hc, cout, r.H);
        }
}

// Scratch of one conv: its inputs X (the widest conv's) and its per-tap weights.
static size_t inputs_bytes(const struct router_dims &r) {
    size_t widest = 0;
    for (int l = 0; l < r.n; l++) widest = (size_t)r.c[l] > widest ? (size_t)r.c[l] : widest;
    return sizeof(float) * (size_t)r.H * r.B * r.L * widest;
}
static size_t taps_bytes(const struct router_dims &r) {
    size_t widest = 0;
    for (int l = 0; l < r.n; l++) {
        const size_t w = (size_t)r.c[l + 1] * r.c[l] * r.kernel[l];
        widest = w > widest ? w : widest;
    }
    return sizeof(float) * (size_t)r.H * widest;
}

// One row (r.B = 1: with its row's acts block, the [B, L, H, c_l] layouts below are that row's).
void taps_router_fwd(float *score, float *acts, const float *k, const float *v, const float *params,
                     const struct hyla_lte_router_shape *, const router_dims &r) {
    const size_t tokens = (size_t)r.B * r.L * r.H;
    float *X = NULL, *Wt = NULL; // stream-ordered scratch
    CUDA_CHECK(cudaMallocAsync((void **)&X, inputs_bytes(r), 0));
    CUDA_CHECK(cudaMallocAsync((void **)&Wt, taps_bytes(r), 0));
    for (int l = 0; l < r.n; l++) {
        conv_inputs(X, k, v, acts, r, l);
        conv_forward_taps(acts, X, Wt, params, r, l);
    }
    CUDA_CHECK(cudaFreeAsync(X, 0));
    CUDA_CHECK(cudaFreeAsync(Wt, 0));
    proj_fwd_kernel<<<blocks_for(tokens, 128), 128>>>(score, acts, params, r);
    CUDA_LAUNCH_CHECK();
}

// Conv l's input gradient dX[h][(b, ts)][ci] through the dropout mask; for l = 0 added onto dk,
// dv (ops_lte.h), otherwise the gradient at the previous conv's SiLU output.
__global__ void input_grad_kernel(float *du_in, float *dk, float *dv, const float *dX, const float *k, const float *v,
                                  const float *acts, struct router_dims r, int l) {
    const int cin = r.c[l];
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; // over [(b, ts), h, ci]
    if (e >= (size_t)r.B * r.L * r.H * cin) return;
    const int ci = (int)(e % cin), h = (int)((e / cin) % r.H);
    const size_t n = e / ((size_t)cin * r.H); // b * L + ts
    const size_t N = (size_t)r.B * r.L;
    float mask;
    conv_input(r, l, k, v, acts, (int)(n / r.L), (int)(n % r.L), h, ci, &mask);
    const float g = dX[((size_t)h * N + n) * cin + ci] * mask;
    if (l > 0) {
        du_in[e] = g;
        return;
    }
    const size_t pos = n * r.H + h;
    if (ci < r.d) dk[pos * r.d + ci] += g;
    else dv[pos * r.d + ci - r.d] += g;
}

void taps_router_bwd(float *dk, float *dv, float *dparams, const float *dscore, const float *k, const float *v,
                     const float *params, const float *acts, const struct hyla_lte_router_shape *,
                     const router_dims &r) {
    const int B = r.B, L = r.L;
    const size_t tokens = (size_t)B * L * r.H;
    const size_t widest = widest_channels(r);
    // stream-ordered scratch: the gradients at a conv's outputs and inputs, its inputs X and
    // their gradient, its per-tap weights and their gradient
    float *du = NULL, *du_in = NULL, *X = NULL, *dX = NULL, *Wt = NULL, *dWt = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&du, tokens * widest * sizeof(float), 0));
    CUDA_CHECK(cudaMallocAsync((void **)&du_in, tokens * widest * sizeof(float), 0));
    CUDA_CHECK(cudaMallocAsync((void **)&X, inputs_bytes(r), 0));
    CUDA_CHECK(cudaMallocAsync((void **)&dX, inputs_bytes(r), 0));
    CUDA_CHECK(cudaMallocAsync((void **)&Wt, taps_bytes(r), 0));
    CUDA_CHECK(cudaMallocAsync((void **)&dWt, taps_bytes(r), 0));
    projection_backward(du, dparams, dscore, acts, params, r);
    const int rows = B * L;
    for (int l = r.n - 1; l >= 0; l--) {
        conv_output_backward(du, dparams, acts, r, l);
        const int cin = r.c[l], cout = r.c[l + 1], kw = r.kernel[l], hc = r.H * cout;
        const long long N = (long long)rows;
        // per tap and sequence, batched over heads: dWt_{h,i} += da_h^T X_h(shifted) and
        // dX_h(shifted) += da_h Wt_{h,i}, taps in order (a fixed summation order)
        conv_inputs(X, k, v, acts, r, l);
        weight_taps(Wt, params + r.w[l], r, l, 1);
        CUDA_CHECK(cudaMemsetAsync(dWt, 0, sizeof(float) * (size_t)r.H * kw * cout * cin, 0));
        CUDA_CHECK(cudaMemsetAsync(dX, 0, sizeof(float) * (size_t)r.H * rows * cin, 0));
        for (int i = 0; i < kw; i++)
            for (int b = 0; b < B; b++) {
                int t0, t1;
                const int shift = tap_rows(r, l, i, &t0, &t1);
                if (t1 <= t0) continue;
                const long long row = (long long)b * L;
                const float *da = du + (row + t0) * hc;
                cuda_gemm_batched(1, 0, cout, cin, t1 - t0, 1.0f, da, hc, cout, X + (row + t0 + shift) * cin, cin,
                                  N * cin, 1.0f, dWt + (size_t)i * cout * cin, cin, (long long)kw * cout * cin, r.H);
                cuda_gemm_batched(0, 0, t1 - t0, cin, cout, 1.0f, da, hc, cout, Wt + (size_t)i * cout * cin, cin,
                                  (long long)kw * cout * cin, 1.0f, dX + (row + t0 + shift) * cin, cin, N * cin, r.H);
            }
        weight_taps(dWt, dparams + r.w[l], r, l, 0);
        input_grad_kernel<<<blocks_for(tokens * cin, 128), 128>>>(du_in, dk, dv, dX, k, v, acts, r, l);
        CUDA_LAUNCH_CHECK();
        float *swap = du; // the input gradient of conv l is the output gradient of conv l - 1
        du = du_in, du_in = swap;
    }
    CUDA_CHECK(cudaFreeAsync(du, 0));
    CUDA_CHECK(cudaFreeAsync(du_in, 0));
    CUDA_CHECK(cudaFreeAsync(X, 0));
    CUDA_CHECK(cudaFreeAsync(dX, 0));
    CUDA_CHECK(cudaFreeAsync(Wt, 0));
    CUDA_CHECK(cudaFreeAsync(dWt, 0));
}
