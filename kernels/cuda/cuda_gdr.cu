// CUDA: the gated delta rule (MODEL.md §3.2 step 5) as its token-by-token recurrence, one
// block per (batch, head) with the state in shared memory, forward and reverse-mode
// backward (the forward keeps every state for it). This is the reference on the GPU: the
// chunked tensor-core kernel of §3.4-3.5 that training speed needs is still to be written,
// and until then gdr_chunk_* on the GPU run this recurrence (the same function).
#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_reduce.cuh"

enum { GDR_THREADS = 128 };

struct gdr_dims {
    int B, L, H, dk, dv;
    float scale;
};

// states: [B, H, L, dk, dv], the state after each token (for the backward pass).
__global__ void gdr_fwd_kernel(float *o, float *final_state, float *states, const float *q, const float *k,
                               const float *v, const float *beta, const float *g, const float *S0, struct gdr_dims d) {
    extern __shared__ float sh[];
    float *S = sh, *kq = S + (size_t)d.dk * d.dv; // S [dk, dv], then k and q of the token
    const int bh = blockIdx.x, b = bh / d.H, h = bh % d.H;
    const size_t s_size = (size_t)d.dk * d.dv;
    for (size_t e = threadIdx.x; e < s_size; e += blockDim.x) S[e] = S0 ? S0[(size_t)bh * s_size + e] : 0.0f;
    for (int t = 0; t < d.L; t++) {
        const size_t row = ((size_t)b * d.L + t) * d.H + h;
        __syncthreads();
        for (int i = threadIdx.x; i < d.dk; i += blockDim.x) kq[i] = k[row * d.dk + i], kq[d.dk + i] = q[row * d.dk + i];
        __syncthreads();
        const float a = expf(g[row]), bt = beta[row];
        for (int j = threadIdx.x; j < d.dv; j += blockDim.x) {
            float u = 0;
            for (int i = 0; i < d.dk; i++) u += S[(size_t)i * d.dv + j] * kq[i];
            const float delta = bt * (v[row * d.dv + j] - a * u);
            float out = 0;
            for (int i = 0; i < d.dk; i++) {
                float s = a * S[(size_t)i * d.dv + j] + kq[i] * delta;
                S[(size_t)i * d.dv + j] = s;
                out += s * kq[d.dk + i];
                if (states) states[(((size_t)bh * d.L + t) * d.dk + i) * d.dv + j] = s;
            }
            o[row * d.dv + j] = d.scale * out;
        }
    }
    __syncthreads();
    if (final_state)
        for (size_t e = threadIdx.x; e < s_size; e += blockDim.x) final_state[(size_t)bh * s_size + e] = S[e];
}

__global__ void gdr_bwd_kernel(float *dq, float *dk, float *dv, float *dbeta, float *dg, float *dS0,
                               const float *dout, const float *dS_final, const float *states, const float *q,
                               const float *k, const float *v, const float *beta, const float *g, const float *S0,
                               struct gdr_dims d) {
    extern __shared__ float sh[];
    const size_t s_size = (size_t)d.dk * d.dv;
    float *G = sh, *kk = G + s_size, *qq = kk + d.dk, *dd = qq + d.dk; // dd: do of the token
    float *delta = dd + d.dv, *du = delta + d.dv, *red = du + d.dv;    // red: reduction scratch
    const int bh = blockIdx.x, b = bh / d.H, h = bh % d.H;
    for (size_t e = threadIdx.x; e < s_size; e += blockDim.x) G[e] = dS_final ? dS_final[(size_t)bh * s_size + e] : 0;
    for (int t = d.L - 1; t >= 0; t--) {
        const size_t row = ((size_t)b * d.L + t) * d.H + h;
        const float *St = states + ((size_t)bh * d.L + t) * s_size;
        const float *Sp = t > 0 ? states + ((size_t)bh * d.L + t - 1) * s_size : (S0 ? S0 + (size_t)bh * s_size : NULL);
        __syncthreads();
        for (int i = threadIdx.x; i < d.dk; i += blockDim.x) kk[i] = k[row * d.dk + i], qq[i] = q[row * d.dk + i];
        for (int j = threadIdx.x; j < d.dv; j += blockDim.x) dd[j] = dout[row * d.dv + j];
        __syncthreads();
        const float a = expf(g[row]), bt = beta[row];
        float dbeta_part = 0, dalpha_part = 0;
        for (int j = threadIdx.x; j < d.dv; j += blockDim.x) {
            float u = 0, ddelta = 0, gs = 0;
            for (int i = 0; i < d.dk; i++) {
                const size_t e = (size_t)i * d.dv + j;
                const float sp = Sp ? Sp[e] : 0.0f;
                G[e] += d.scale * qq[i] * dd[j]; // o_t = s S_t^T q_t
                u += sp * kk[i];
                ddelta += G[e] * kk[i];
                gs += G[e] * sp;
            }
            const float w = v[row * d.dv + j] - a * u;
            delta[j] = bt * w;
            const float dw = bt * ddelta;
            du[j] = -a * dw;
            dv[row * d.dv + j] = dw;
            dbeta_part += ddelta * w;
            dalpha_part += gs - dw * u;
        }
        __syncthreads();
        for (int i = threadIdx.x; i < d.dk; i += blockDim.x) {
            float dqi = 0, dki = 0;
            for (int j = 0; j < d.dv; j++) {
                const size_t e = (size_t)i * d.dv + j;
                dqi += St[e] * dd[j];
                dki += G[e] * delta[j] + (Sp ? Sp[e] : 0.0f) * du[j];
            }
            dq[row * d.dk + i] = d.scale * dqi;
            dk[row * d.dk + i] = dki;
        }
        const float db = block_sum(dbeta_part, red), da = block_sum(dalpha_part, red);
        if (threadIdx.x == 0) dbeta[row] = db, dg[row] = da * a;
        __syncthreads();
        for (int j = threadIdx.x; j < d.dv; j += blockDim.x)
            for (int i = 0; i < d.dk; i++) {
                const size_t e = (size_t)i * d.dv + j;
                G[e] = a * G[e] + kk[i] * du[j];
            }
    }
    __syncthreads();
    if (dS0)
        for (size_t e = threadIdx.x; e < s_size; e += blockDim.x) dS0[(size_t)bh * s_size + e] = G[e];
}

static size_t fwd_shared(int dk, int dv) { return sizeof(float) * ((size_t)dk * dv + 2 * (size_t)dk); }
static size_t bwd_shared(int dk, int dv) {
    return sizeof(float) * ((size_t)dk * dv + 2 * (size_t)dk + 3 * (size_t)dv + GDR_THREADS);
}

static void allow_shared(const void *kernel, size_t bytes) {
    if (bytes > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

static void cuda_gdr_fwd(float *o, float *final_state, const float *q, const float *k, const float *v,
                         const float *beta, const float *g, const float *S0, float scale, int B, int L, int H, int dk,
                         int dv) {
    struct gdr_dims d = {B, L, H, dk, dv, scale};
    allow_shared((const void *)gdr_fwd_kernel, fwd_shared(dk, dv));
    gdr_fwd_kernel<<<B * H, GDR_THREADS, fwd_shared(dk, dv)>>>(o, final_state, NULL, q, k, v, beta, g, S0, d);
    CUDA_LAUNCH_CHECK();
}

static void cuda_gdr_bwd(float *dq, float *dk, float *dv, float *dbeta, float *dg, float *dS0, const float *dout,
                         const float *dS_final, const float *q, const float *k, const float *v, const float *beta,
                         const float *g, const float *S0, float scale, int B, int L, int H, int dkd, int dvd) {
    struct gdr_dims d = {B, L, H, dkd, dvd, scale};
    float *states = NULL, *o = NULL; // recompute the forward, keeping every state
    CUDA_CHECK(cudaMallocAsync((void **)&states, sizeof(float) * (size_t)B * H * L * dkd * dvd, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&o, sizeof(float) * (size_t)B * L * H * dvd, 0));
    allow_shared((const void *)gdr_fwd_kernel, fwd_shared(dkd, dvd));
    gdr_fwd_kernel<<<B * H, GDR_THREADS, fwd_shared(dkd, dvd)>>>(o, NULL, states, q, k, v, beta, g, S0, d);
    CUDA_LAUNCH_CHECK();
    allow_shared((const void *)gdr_bwd_kernel, bwd_shared(dkd, dvd));
    gdr_bwd_kernel<<<B * H, GDR_THREADS, bwd_shared(dkd, dvd)>>>(dq, dk, dv, dbeta, dg, dS0, dout, dS_final, states, q, k,
                                                                 v, beta, g, S0, d);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(states, 0));
    CUDA_CHECK(cudaFreeAsync(o, 0));
}

extern "C" void cuda_register_gdr(struct hyla_backend *t) {
    t->gdr_recurrent_fwd = cuda_gdr_fwd, t->gdr_recurrent_bwd = cuda_gdr_bwd;
    t->gdr_chunk_fwd = cuda_gdr_fwd, t->gdr_chunk_bwd = cuda_gdr_bwd; // same function; see the header comment
}
