// CUDA: the LTE router CNN (MODEL.md §5.2) with the CPU twin's semantics, including its
// dropout masks (regenerated from the same counter-based keys and element indices, see
// kernels/cpu/op_lte_router.c) and its saved activations (a_1 .. a_n, z). Each conv's
// dropped-out input is written out once (conv_inputs_kernel), so the dropout masks are drawn
// once per value, not once per use; one thread per output value; weight and bias gradients
// are column sums over positions in a fixed order (cuda_column_sum.cuh, no atomics).
#include "backend_cuda.h"
#include "common/rng.h"
#include "cuda_check.h"
#include "cuda_column_sum.cuh"

#include "kernels/ops/op_shapes.h"

struct router_dims {
    int B, L, H, d, n;
    int c[HYLA_LTE_MAX_CONVS + 1], kernel[HYLA_LTE_MAX_CONVS], dilation[HYLA_LTE_MAX_CONVS];
    size_t act[HYLA_LTE_MAX_CONVS + 2];     // a_1 .. a_n at act[1..n], z at act[n + 1]
    size_t w[HYLA_LTE_MAX_CONVS], b[HYLA_LTE_MAX_CONVS], pw, pb;
    float p, keep_scale;
    uint64_t key[HYLA_LTE_MAX_CONVS];
};

static struct router_dims dims_of(const struct hyla_lte_router_shape *s, int B, int L, float p, uint64_t key) {
    struct router_dims r;
    memset(&r, 0, sizeof r);
    r.B = B, r.L = L, r.H = s->heads, r.d = s->head_dim, r.n = s->n_convs, r.p = p, r.keep_scale = 1.0f / (1.0f - p);
    struct hyla_lte_router_offsets off = lte_router_offsets(s);
    const size_t tokens = (size_t)B * L * r.H;
    size_t at = 0;
    for (int l = 0; l <= r.n; l++) r.c[l] = lte_router_channels(s, l);
    for (int l = 0; l < r.n; l++) {
        r.kernel[l] = s->kernel[l], r.dilation[l] = s->dilation[l];
        r.w[l] = off.conv_weight[l], r.b[l] = off.conv_bias[l];
        r.key[l] = hyla_rng_subkey(key, (uint64_t)l);
        r.act[l + 1] = at;
        at += tokens * (size_t)r.c[l + 1];
    }
    r.act[r.n + 1] = at;
    r.pw = off.proj_weight, r.pb = off.proj_bias;
    return r;
}

__device__ static float sig(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ static float silu(float x) { return x * sig(x); }
__device__ static float silu_grad(float x) {
    float s = sig(x);
    return s * (1.0f + x * (1.0f - s));
}

// The (dropped-out) input of conv l at (b, t, h, channel ci); 1 when kept, 0 when dropped in *mask.
__device__ static float conv_input(const struct router_dims &r, int l, const float *k, const float *v,
                                   const float *acts, int b, int t, int h, int ci, float *mask) {
    const size_t pos = ((size_t)b * r.L + t) * r.H + h;
    float x = l == 0 ? (ci < r.d ? k[pos * r.d + ci] : v[pos * r.d + ci - r.d])
                     : silu(acts[r.act[l] + pos * r.c[l] + ci]);
    float keep = 1.0f;
    if (r.p > 0) keep = hyla_rng_uniform(r.key[l], pos * r.c[l] + ci) >= r.p ? r.keep_scale : 0.0f;
    *mask = keep;
    return x * keep;
}

// X[(b, t, h), ci]: conv l's input after dropout, for every position.
__global__ void conv_inputs_kernel(float *X, const float *k, const float *v, const float *acts, struct router_dims r,
                                   int l) {
    const int cin = r.c[l];
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)r.B * r.L * r.H * cin) return;
    const int ci = (int)(e % cin), h = (int)((e / cin) % r.H), t = (int)((e / ((size_t)cin * r.H)) % r.L);
    const int b = (int)(e / ((size_t)cin * r.H * r.L));
    float mask;
    X[e] = conv_input(r, l, k, v, acts, b, t, h, ci, &mask);
}
static void write_conv_inputs(float *X, const float *k, const float *v, const float *acts, const struct router_dims &r,
                              int l) {
    conv_inputs_kernel<<<blocks_for((size_t)r.B * r.L * r.H * r.c[l], 256), 256>>>(X, k, v, acts, r, l);
    CUDA_LAUNCH_CHECK();
}

__global__ void conv_fwd_kernel(float *acts, const float *X, const float *params, struct router_dims r, int l) {
    const int cin = r.c[l], cout = r.c[l + 1], kw = r.kernel[l];
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)r.B * r.L * r.H * cout) return;
    const int co = (int)(e % cout), h = (int)((e / cout) % r.H), t = (int)((e / ((size_t)cout * r.H)) % r.L);
    const int b = (int)(e / ((size_t)cout * r.H * r.L));
    const float *w = params + r.w[l] + ((size_t)h * cout + co) * cin * kw;
    float acc = params[r.b[l] + (size_t)h * cout + co];
    for (int i = 0; i < kw; i++) {
        int ts = t + r.dilation[l] * (i - (kw - 1) / 2);
        if (ts < 0 || ts >= r.L) continue;
        const float *x = X + (((size_t)b * r.L + ts) * r.H + h) * cin;
        for (int ci = 0; ci < cin; ci++) acc += w[(size_t)ci * kw + i] * x[ci];
    }
    acts[r.act[l + 1] + e] = acc;
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

static void cuda_lte_router_fwd(float *score, float *acts, const float *k, const float *v, const float *params,
                                const struct hyla_lte_router_shape *shape, int B, int L, float p, uint64_t key) {
    struct router_dims r = dims_of(shape, B, L, p, key);
    const size_t tokens = (size_t)B * L * r.H;
    float *X = NULL; // stream-ordered scratch: one conv's dropped-out input (the widest is conv 0's)
    CUDA_CHECK(cudaMallocAsync((void **)&X, tokens * r.c[0] * sizeof(float), 0));
    for (int l = 0; l < r.n; l++) {
        write_conv_inputs(X, k, v, acts, r, l);
        conv_fwd_kernel<<<blocks_for(tokens * r.c[l + 1], 128), 128>>>(acts, X, params, r, l);
        CUDA_LAUNCH_CHECK();
    }
    CUDA_CHECK(cudaFreeAsync(X, 0));
    proj_fwd_kernel<<<blocks_for(tokens, 128), 128>>>(score, acts, params, r);
    CUDA_LAUNCH_CHECK();
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

// Conv l's weight gradient at e = (h, co, ci, tap) and bias gradient at (h, co): terms of
// column sums over rows (b, t), reading the conv's dropped-out input X.
struct conv_weight_term {
    const float *da, *X;
    router_dims r;
    int l;
    __device__ float operator()(int row, int e) const {
        const int cin = r.c[l], cout = r.c[l + 1], kw = r.kernel[l];
        const int i = e % kw, ci = (e / kw) % cin, hc = e / (kw * cin), h = hc / cout, t = row % r.L;
        const int ts = t + r.dilation[l] * (i - (kw - 1) / 2);
        if (ts < 0 || ts >= r.L) return 0.0f;
        return da[(size_t)row * r.H * cout + hc] * X[(((size_t)row - t + ts) * r.H + h) * cin + ci];
    }
};
struct conv_bias_term {
    const float *da;
    int cols; // H * cout
    __device__ float operator()(int row, int hc) const { return da[(size_t)row * cols + hc]; }
};

// Conv l's input gradient at (b, ts, h, ci), through the dropout mask; for l = 0 into dk, dv.
__global__ void conv_bwd_input_kernel(float *du_in, float *dk, float *dv, const float *da, const float *k,
                                      const float *v, const float *acts, const float *params, struct router_dims r,
                                      int l) {
    const int cin = r.c[l], cout = r.c[l + 1], kw = r.kernel[l];
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)r.B * r.L * r.H * cin) return;
    const int ci = (int)(e % cin), h = (int)((e / cin) % r.H), ts = (int)((e / ((size_t)cin * r.H)) % r.L);
    const int b = (int)(e / ((size_t)cin * r.H * r.L));
    float acc = 0, mask;
    for (int co = 0; co < cout; co++) {
        const float *w = params + r.w[l] + ((size_t)h * cout + co) * cin * kw + (size_t)ci * kw;
        for (int i = 0; i < kw; i++) {
            int t = ts - r.dilation[l] * (i - (kw - 1) / 2); // the output that read ts through tap i
            if (t >= 0 && t < r.L) acc += w[i] * da[(((size_t)b * r.L + t) * r.H + h) * cout + co];
        }
    }
    conv_input(r, l, k, v, acts, b, ts, h, ci, &mask);
    acc *= mask;
    if (l > 0) {
        du_in[e] = acc;
        return;
    }
    const size_t pos = ((size_t)b * r.L + ts) * r.H + h;
    if (ci < r.d) dk[pos * r.d + ci] = acc;
    else dv[pos * r.d + ci - r.d] = acc;
}

static void cuda_lte_router_bwd(float *dk, float *dv, float *dparams, const float *dscore, const float *k,
                                const float *v, const float *params, const float *acts,
                                const struct hyla_lte_router_shape *shape, int B, int L, float p, uint64_t key) {
    struct router_dims r = dims_of(shape, B, L, p, key);
    const size_t tokens = (size_t)B * L * r.H;
    size_t widest = 0;
    for (int l = 0; l <= r.n; l++) widest = (size_t)r.c[l] > widest ? (size_t)r.c[l] : widest;
    float *du = NULL, *du_in = NULL, *X = NULL; // stream-ordered scratch: the gradient at conv outputs and
    CUDA_CHECK(cudaMallocAsync((void **)&du, tokens * widest * sizeof(float), 0)); // inputs, a conv's input
    CUDA_CHECK(cudaMallocAsync((void **)&du_in, tokens * widest * sizeof(float), 0));
    CUDA_CHECK(cudaMallocAsync((void **)&X, tokens * widest * sizeof(float), 0));
    proj_bwd_du_kernel<<<blocks_for(tokens * r.c[r.n], 128), 128>>>(du, dscore, acts, params, r);
    CUDA_LAUNCH_CHECK();
    const int rows = B * L;
    const proj_weight_term proj{dscore, acts, r};
    column_sum_add(dparams + r.pw, rows, r.H * r.c[r.n], proj);
    column_sum_add(dparams + r.pb, rows, r.H, proj_bias_term{proj});
    for (int l = r.n - 1; l >= 0; l--) {
        const size_t outs = tokens * r.c[l + 1];
        silu_bwd_kernel<<<blocks_for(outs, 256), 256>>>(du, acts, r.act[l + 1], outs);
        CUDA_LAUNCH_CHECK();
        write_conv_inputs(X, k, v, acts, r, l);
        column_sum_add(dparams + r.w[l], rows, r.H * r.c[l + 1] * r.c[l] * r.kernel[l], conv_weight_term{du, X, r, l});
        column_sum_add(dparams + r.b[l], rows, r.H * r.c[l + 1], conv_bias_term{du, r.H * r.c[l + 1]});
        conv_bwd_input_kernel<<<blocks_for(tokens * r.c[l], 128), 128>>>(du_in, dk, dv, du, k, v, acts, params, r, l);
        CUDA_LAUNCH_CHECK();
        float *swap = du; // the input gradient of conv l is the output gradient of conv l - 1
        du = du_in, du_in = swap;
    }
    CUDA_CHECK(cudaFreeAsync(du, 0));
    CUDA_CHECK(cudaFreeAsync(du_in, 0));
    CUDA_CHECK(cudaFreeAsync(X, 0));
}

extern "C" void cuda_register_lte_router(struct hyla_backend *t) {
    t->lte_router_fwd = cuda_lte_router_fwd, t->lte_router_bwd = cuda_lte_router_bwd;
}
