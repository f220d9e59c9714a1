// CUDA: softmax attention (causal, sliding window, GQA, LTE's window ∪ selected keys) and
// the LTE ops (selection, straight-through estimator, L1 term), with the CPU twins'
// semantics. Head dims up to 128 go to the tiled kernels (cuda_flash_attention.cu); larger
// ones to the row kernels here: one warp per query row with an online softmax (no L x L
// matrix), and in the backward pass one warp per key row for dk, dv (no atomics, so the
// results are reproducible).
#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_flash_attention.h"

enum { WARP = 32, MAX_D = 256 };

__device__ static float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Key j visible to query t (MODEL.md §4, §5.4; window_left < 0: full causal).
__device__ static bool visible(int t, int j, int wl, const uint8_t *sel_row_j) {
    if (j > t) return false;
    if (wl < 0 || t - j <= wl) return true;
    return sel_row_j && *sel_row_j;
}

struct attn_shape {
    int B, L, Hq, Hkv, d, wl;
    float scale;
};

// dot of q (this lane's slice in registers) with key row kr, lanes' slices summed.
__device__ static float row_dot(const float *qr, const float *kr, int d) {
    float s = 0;
    for (int c = threadIdx.x; c < d; c += WARP) s += qr[c] * kr[c];
    return warp_sum(s);
}

__global__ void attention_fwd_kernel(float *o, float *lse, const float *q, const float *k, const float *v,
                                     const uint8_t *selected, struct attn_shape s) {
    const int row = blockIdx.x; // (b, t, hq)
    const int hq = row % s.Hq, t = (row / s.Hq) % s.L, b = row / (s.Hq * s.L), hk = hq / (s.Hq / s.Hkv);
    const float *qr = q + (size_t)row * s.d;
    float acc[MAX_D / WARP];
    for (int i = 0; i < MAX_D / WARP; i++) acc[i] = 0;
    float m = -INFINITY, l = 0;
    for (int j = 0; j <= t; j++) {
        const uint8_t *sel = selected ? selected + ((size_t)b * s.L + j) * s.Hkv + hk : NULL;
        if (!visible(t, j, s.wl, sel)) continue;
        const size_t kv = (((size_t)b * s.L + j) * s.Hkv + hk) * s.d;
        float sc = s.scale * row_dot(qr, k + kv, s.d);
        float m_new = fmaxf(m, sc), corr = expf(m - m_new), p = expf(sc - m_new);
        l = l * corr + p;
        for (int c = threadIdx.x, i = 0; c < s.d; c += WARP, i++) acc[i] = acc[i] * corr + p * v[kv + c];
        m = m_new;
    }
    for (int c = threadIdx.x, i = 0; c < s.d; c += WARP, i++) o[(size_t)row * s.d + c] = acc[i] / l;
    if (threadIdx.x == 0) lse[row] = m + logf(l);
}

// out[r] = <a_r, b_r> over rows of d floats: the backward's delta = <dO, O> of each query row
// and the LTE straight-through term dscore = <dv, v> of each key row. A group of `group` lanes
// (a power of two <= 32) per row, float4 units where d and the pointers allow (W = 4): the
// rows are read coalesced, at bandwidth (a thread per row, or a warp per 64-float row, used to
// run 3-4x slower).
template <int W>
__global__ void row_dots_kernel(float *out, const float *a, const float *b, size_t rows, int d, int group) {
    const size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / group;
    const int g = threadIdx.x % group, units = d / W;
    float s = 0;
    if (row < rows) {
        const float *ar = a + row * d, *br = b + row * d;
        for (int u = g; u < units; u += group) {
            if constexpr (W == 4) {
                const float4 x = ((const float4 *)ar)[u], y = ((const float4 *)br)[u];
                s += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
            } else s += ar[u] * br[u];
        }
    }
    for (int o = group / 2; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o); // every lane: full warps
    if (row < rows && g == 0) out[row] = s;
}
static void row_dots(float *out, const float *a, const float *b, size_t rows, int d) {
    const bool vec4 = d % 4 == 0 && (uintptr_t)a % 16 == 0 && (uintptr_t)b % 16 == 0;
    const int units = vec4 ? d / 4 : d;
    int group = 1;
    while (group < WARP && group < units) group *= 2;
    const int threads = 256;
    const size_t blocks = (rows * group + threads - 1) / threads;
    if (vec4) row_dots_kernel<4><<<blocks, threads>>>(out, a, b, rows, d, group);
    else row_dots_kernel<1><<<blocks, threads>>>(out, a, b, rows, d, group);
    CUDA_LAUNCH_CHECK();
}

// dq of one query row: scale * sum_j P (dO.v_j - delta) k_j.
__global__ void attention_dq_kernel(float *dq, const float *dout, const float *q, const float *k, const float *v,
                                    const float *lse, const float *delta, const uint8_t *selected, struct attn_shape s) {
    const int row = blockIdx.x;
    const int hq = row % s.Hq, t = (row / s.Hq) % s.L, b = row / (s.Hq * s.L), hk = hq / (s.Hq / s.Hkv);
    const float *qr = q + (size_t)row * s.d, *dor = dout + (size_t)row * s.d;
    float acc[MAX_D / WARP];
    for (int i = 0; i < MAX_D / WARP; i++) acc[i] = 0;
    for (int j = 0; j <= t; j++) {
        const uint8_t *sel = selected ? selected + ((size_t)b * s.L + j) * s.Hkv + hk : NULL;
        if (!visible(t, j, s.wl, sel)) continue;
        const size_t kv = (((size_t)b * s.L + j) * s.Hkv + hk) * s.d;
        float p = expf(s.scale * row_dot(qr, k + kv, s.d) - lse[row]);
        float ds = p * (row_dot(dor, v + kv, s.d) - delta[row]);
        for (int c = threadIdx.x, i = 0; c < s.d; c += WARP, i++) acc[i] += s.scale * ds * k[kv + c];
    }
    for (int c = threadIdx.x, i = 0; c < s.d; c += WARP, i++) dq[(size_t)row * s.d + c] = acc[i];
}

// dk, dv of one key row (b, j, kv head): sums over the group's query heads and the queries
// that see j, in a fixed order.
__global__ void attention_dkdv_kernel(float *dk, float *dv, const float *dout, const float *q, const float *k,
                                      const float *v, const float *lse, const float *delta, const uint8_t *selected,
                                      struct attn_shape s) {
    const int krow = blockIdx.x; // (b, j, hk)
    const int hk = krow % s.Hkv, j = (krow / s.Hkv) % s.L, b = krow / (s.Hkv * s.L), G = s.Hq / s.Hkv;
    const size_t kv = (size_t)krow * s.d;
    const uint8_t *sel = selected ? selected + ((size_t)b * s.L + j) * s.Hkv + hk : NULL;
    float ak[MAX_D / WARP], av[MAX_D / WARP];
    for (int i = 0; i < MAX_D / WARP; i++) ak[i] = av[i] = 0;
    for (int t = j; t < s.L; t++) {
        if (!visible(t, j, s.wl, sel)) continue;
        for (int g = 0; g < G; g++) {
            const size_t row = ((size_t)b * s.L + t) * s.Hq + hk * G + g;
            const float *qr = q + row * s.d, *dor = dout + row * s.d;
            float p = expf(s.scale * row_dot(qr, k + kv, s.d) - lse[row]);
            float ds = p * (row_dot(dor, v + kv, s.d) - delta[row]);
            for (int c = threadIdx.x, i = 0; c < s.d; c += WARP, i++) {
                av[i] += p * dor[c];
                ak[i] += s.scale * ds * qr[c];
            }
        }
    }
    for (int c = threadIdx.x, i = 0; c < s.d; c += WARP, i++) dk[kv + c] = ak[i], dv[kv + c] = av[i];
}

static struct attn_shape shape_of(int B, int L, int Hq, int Hkv, int d, int wl, float scale) {
    if (d > MAX_D) {
        fprintf(stderr, "hyla: error: CUDA attention supports head_dim <= %d, got %d\n", MAX_D, d);
        exit(1);
    }
    struct attn_shape s = {B, L, Hq, Hkv, d, wl, scale};
    return s;
}

static void cuda_attention_fwd(float *o, float *lse, const float *q, const float *k, const float *v,
                               const uint8_t *selected, int B, int L, int Hq, int Hkv, int d, int wl, float scale) {
    if (flash_attention_supported(d)) {
        flash_attention_fwd(o, lse, q, k, v, selected, B, L, Hq, Hkv, d, wl, scale);
        return;
    }
    attention_fwd_kernel<<<B * L * Hq, WARP>>>(o, lse, q, k, v, selected, shape_of(B, L, Hq, Hkv, d, wl, scale));
    CUDA_LAUNCH_CHECK();
}

static void cuda_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                               const float *v, const float *o, const float *lse, const uint8_t *selected, int B,
                               int L, int Hq, int Hkv, int d, int wl, float scale) {
    struct attn_shape s = shape_of(B, L, Hq, Hkv, d, wl, scale);
    float *delta = NULL; // stream-ordered scratch: no device-wide synchronisation
    CUDA_CHECK(cudaMallocAsync((void **)&delta, sizeof(float) * (size_t)B * L * Hq, 0));
    row_dots(delta, dout, o, (size_t)B * L * Hq, d);
    if (flash_attention_supported(d)) {
        flash_attention_bwd(dq, dk, dv, dout, q, k, v, lse, delta, selected, B, L, Hq, Hkv, d, wl, scale);
        CUDA_CHECK(cudaFreeAsync(delta, 0));
        return;
    }
    attention_dq_kernel<<<B * L * Hq, WARP>>>(dq, dout, q, k, v, lse, delta, selected, s);
    CUDA_LAUNCH_CHECK();
    attention_dkdv_kernel<<<B * L * Hkv, WARP>>>(dk, dv, dout, q, k, v, lse, delta, selected, s);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(delta, 0));
}

// ---- LTE: selection, straight-through estimator, L1 term ------------------------------------
__global__ void lte_select_kernel(uint8_t *selected, const float *score, int B, int L, int H, int sinks) {
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)B * L * H) return;
    int j = (int)((e / H) % L);
    selected[e] = score[e] > 0.0f || j < sinks;
}
static void cuda_lte_select(uint8_t *selected, const float *score, int B, int L, int H, int sinks) {
    lte_select_kernel<<<blocks_for((size_t)B * L * H, 256), 256>>>(selected, score, B, L, H, sinks);
    CUDA_LAUNCH_CHECK();
}

// dscore = <dv, v> of each key row (MODEL.md §5.4's straight-through term).
static void cuda_lte_ste_bwd(float *dscore, const float *dv, const float *v, int B, int L, int H, int d) {
    row_dots(dscore, dv, v, (size_t)B * L * H, d);
}

// Per head and chunk of its B len positions j < L - margin (a block each: H x L1_CHUNKS blocks,
// where one block a head left all but 16 SMs idle, 37 us a call at the 0.4B shape): the sum of
// relu(score) and the count kept, each thread over a fixed stride of positions, then a fixed
// tree; the total kernel adds the chunks in order: deterministic.
enum { L1_THREADS = 256, L1_CHUNKS = 32 };
__global__ void lte_l1_sums_kernel(double *partial, const float *score, int B, int L, int H, int len) {
    __shared__ double rs_part[L1_THREADS], kept_part[L1_THREADS];
    const int h = blockIdx.x, chunk = blockIdx.y;
    const size_t n = (size_t)B * len, per = (n + L1_CHUNKS - 1) / L1_CHUNKS;
    const size_t e0 = chunk * per, e1 = e0 + per < n ? e0 + per : n;
    double rs = 0, kept = 0;
    for (size_t e = e0 + threadIdx.x; e < e1; e += L1_THREADS) {
        const size_t b = e / len, j = e % len;
        const float s = score[(b * L + j) * H + h];
        if (s > 0) rs += s, kept += 1;
    }
    rs_part[threadIdx.x] = rs, kept_part[threadIdx.x] = kept;
    __syncthreads();
    for (int half = L1_THREADS / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half)
            rs_part[threadIdx.x] += rs_part[threadIdx.x + half], kept_part[threadIdx.x] += kept_part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x > 0) return;
    partial[((size_t)h * L1_CHUNKS + chunk) * 2] = rs_part[0];
    partial[((size_t)h * L1_CHUNKS + chunk) * 2 + 1] = kept_part[0];
}
// The chunks of each head in order, its kept share, and the loss term summed over the heads in
// order, by one thread, into the device accumulator.
__global__ void lte_l1_total_kernel(double *l1_acc, float *kept_fraction, const double *partial, const float *lambda,
                                    float coef, int H, double count) {
    double total = 0;
    for (int h = 0; h < H; h++) {
        double rs = 0, kept = 0;
        for (int c = 0; c < L1_CHUNKS; c++)
            rs += partial[((size_t)h * L1_CHUNKS + c) * 2], kept += partial[((size_t)h * L1_CHUNKS + c) * 2 + 1];
        if (kept_fraction) kept_fraction[h] = count > 0 ? (float)(kept / count) : 0.0f;
        total += (double)lambda[h] * rs;
    }
    *l1_acc += (double)(float)((double)coef * total);
}
static void cuda_lte_l1_fwd(double *l1_acc, float *kept_fraction, const float *score, const float *lambda, float coef,
                            int B, int L, int H, int margin) {
    const int len = L - margin > 0 ? L - margin : 0;
    double *partial = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&partial, sizeof(double) * 2 * (size_t)H * L1_CHUNKS, 0));
    lte_l1_sums_kernel<<<dim3(H, L1_CHUNKS), L1_THREADS>>>(partial, score, B, L, H, len);
    CUDA_LAUNCH_CHECK();
    lte_l1_total_kernel<<<1, 1>>>(l1_acc, kept_fraction, partial, lambda, coef, H, (double)B * len);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(partial, 0));
}

__global__ void lte_l1_bwd_kernel(float *dscore, const float *score, const float *lambda, float coef, int B, int L,
                                  int H, int len) {
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)B * L * H) return;
    int h = (int)(e % H), j = (int)((e / H) % L);
    if (j < len && score[e] > 0) dscore[e] += coef * lambda[h];
}
static void cuda_lte_l1_bwd(float *dscore, const float *score, const float *lambda, float coef, int B, int L, int H,
                            int margin) {
    const int len = L - margin > 0 ? L - margin : 0;
    lte_l1_bwd_kernel<<<blocks_for((size_t)B * L * H, 256), 256>>>(dscore, score, lambda, coef, B, L, H, len);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_register_attention(struct hyla_backend *t) {
    t->attention_fwd = cuda_attention_fwd, t->attention_bwd = cuda_attention_bwd;
    t->lte_select = cuda_lte_select, t->lte_ste_bwd = cuda_lte_ste_bwd;
    t->lte_l1_fwd = cuda_lte_l1_fwd, t->lte_l1_bwd = cuda_lte_l1_bwd;
}
