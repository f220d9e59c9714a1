// CUDA: the reductions of a training step and the optimizer (gradient norm, mean loss, step
// statistics, clipping factor, axpy, AdamW), with the CPU twins' semantics (kernels/cpu/
// op_optimizer.c). Everything stays on the device: the host never waits for a norm inside a
// step (docs/cuda.md). Sums run in a fixed order (no float atomics): the same bits every run.
// Apart from backend_cuda.cu (cuBLAS, CUB) so that tests/gpu/emu/run_parts.sh can run these
// kernels on the CPU.
#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_vec.cuh"

enum { ROW_THREADS = 256 }; // the reducing blocks' threads (a power of two: the trees halve it)

// ---- reductions and the optimizer ----------------------------------------------------------------
enum { SUM_BLOCK = 4096 }; // the CPU twin's block: the same partition of the sum
// A block of SUM_BLOCK values: a whole block from an aligned x as 4 float4 a thread, all four
// loads issued before the sums (the kernel is bound by the bytes in flight: one 4-byte load a
// step and a shared-memory tree of 8 barriers a block took ~34 us for 13.9M values on an H100,
// half of the bandwidth), else one value a step; the thread's sum in order, the warp's by a
// fixed shuffle tree, the block's 8 warps in order by thread 0.
constexpr int SUM_UNITS = SUM_BLOCK / 4 / ROW_THREADS; // float4 units a thread
__global__ void sum_squares_kernel(double *partial, const float *x, size_t count, bool vec4) {
    __shared__ double warp_sums[ROW_THREADS / 32];
    const size_t begin = (size_t)blockIdx.x * SUM_BLOCK, end = begin + SUM_BLOCK < count ? begin + SUM_BLOCK : count;
    double s = 0;
    if (vec4 && end - begin == SUM_BLOCK) {
        floats<4> u[SUM_UNITS];
#pragma unroll
        for (int j = 0; j < SUM_UNITS; j++) u[j] = load_unit<4>(x + begin, threadIdx.x + (size_t)j * ROW_THREADS);
#pragma unroll
        for (int j = 0; j < SUM_UNITS; j++)
#pragma unroll
            for (int k = 0; k < 4; k++) s += (double)u[j].v[k] * u[j].v[k];
    } else {
        for (size_t i = begin + threadIdx.x; i < end; i += blockDim.x) s += (double)x[i] * x[i];
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x != 0) return;
    double total = 0;
    for (int w = 0; w < ROW_THREADS / 32; w++) total += warp_sums[w];
    partial[blockIdx.x] = total;
}
// The partials added by one block, each thread a fixed stride of them in order, then a fixed
// tree (one thread adding thousands of partials in sequence took 0.2 ms a call): the result
// stays on the device (the host never waits for a norm inside a step).
__global__ void sum_partials_kernel(double *acc, const double *partial, size_t blocks) {
    __shared__ double shared[ROW_THREADS];
    double s = 0;
    for (size_t b = threadIdx.x; b < blocks; b += blockDim.x) s += partial[b];
    shared[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k /= 2) {
        if (threadIdx.x < k) shared[threadIdx.x] += shared[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) *acc += shared[0];
}
static void cuda_sum_squares_add(double *acc, const float *x, size_t count) {
    size_t blocks = (count + SUM_BLOCK - 1) / SUM_BLOCK;
    if (!blocks) return;
    double *partial = NULL; // stream-ordered scratch: no device-wide synchronisation
    CUDA_CHECK(cudaMallocAsync((void **)&partial, blocks * sizeof(double), 0));
    sum_squares_kernel<<<(unsigned)blocks, ROW_THREADS>>>(partial, x, count, aligned16(x));
    CUDA_LAUNCH_CHECK();
    sum_partials_kernel<<<1, ROW_THREADS>>>(acc, partial, blocks);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(partial, 0));
}
// The mean loss: one block, each thread a fixed stride of rows, then a fixed tree.
enum { LOSS_THREADS = 1024 };
__global__ void loss_mean_add_kernel(double *acc, const float *losses, int n, int valid_count) {
    __shared__ double part[LOSS_THREADS];
    double s = 0;
    for (int i = threadIdx.x; i < n; i += LOSS_THREADS) s += losses[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int half = LOSS_THREADS / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) *acc += valid_count ? (double)(float)(part[0] / valid_count) : 0.0;
}
static void cuda_loss_mean_add(double *acc, const float *losses, int n, int valid_count) {
    loss_mean_add_kernel<<<1, LOSS_THREADS>>>(acc, losses, n, valid_count);
    CUDA_LAUNCH_CHECK();
}
__global__ void accumulate_f64_kernel(double *acc, const float *x, size_t count, double weight) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < count) acc[i] += weight * (double)x[i];
}
static void cuda_accumulate_f64(double *acc, const float *x, size_t count, double weight) {
    if (!count) return;
    accumulate_f64_kernel<<<blocks_for(count, 256), 256>>>(acc, x, count, weight);
    CUDA_LAUNCH_CHECK();
}
__global__ void grad_clip_scale_kernel(float *scale, const double *sum_squares, float max_norm) {
    const double norm = sqrt(*sum_squares);
    if (!isfinite(norm)) {
        *scale = nanf("");
        return;
    }
    const double clip = max_norm > 0 ? (double)max_norm / (norm + 1e-6) : 1.0;
    *scale = (float)(clip < 1.0 ? clip : 1.0);
}
static void cuda_grad_clip_scale(float *scale, const double *sum_squares, float max_norm) {
    grad_clip_scale_kernel<<<1, 1>>>(scale, sum_squares, max_norm);
    CUDA_LAUNCH_CHECK();
}
__global__ void axpy_kernel(float *y, const float *x, float alpha, size_t count) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < count) y[i] += alpha * x[i];
}
static void cuda_axpy(float *y, const float *x, float alpha, size_t count) {
    if (!count) return; // an empty grid is a launch error
    axpy_kernel<<<blocks_for(count, 256), 256>>>(y, x, alpha, count);
    CUDA_LAUNCH_CHECK();
}
// AdamW on unit u of W values (W = 4: float4 accesses where all four arrays are 16-byte
// aligned, its 4 loads issued together; the tail and unaligned arrays one value a thread).
// Per value the same expressions in the same order either way: the same bits.
template <int W>
__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t units, float lr, float b1, float b2,
                             float eps, float wd, const float *scale_ptr, float bias2_sqrt, float step_size) {
    const size_t u = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    const float scale = *scale_ptr;
    if (u >= units || !isfinite(scale)) return; // not finite: a skipped step
    floats<W> pu = load_unit<W>(p, u), mu = load_unit<W>(m, u), vu = load_unit<W>(v, u);
    const floats<W> gu = load_unit<W>(g, u);
#pragma unroll
    for (int k = 0; k < W; k++) {
        const float gi = gu.v[k] * scale;
        pu.v[k] *= 1.0f - lr * wd;
        mu.v[k] = b1 * mu.v[k] + (1.0f - b1) * gi;
        vu.v[k] = b2 * vu.v[k] + (1.0f - b2) * gi * gi;
        pu.v[k] -= step_size * mu.v[k] / (sqrtf(vu.v[k]) / bias2_sqrt + eps);
    }
    store_unit<W>(p, u, pu), store_unit<W>(m, u, mu), store_unit<W>(v, u, vu);
}
static void cuda_adamw_step(float *p, const float *g, float *m, float *v, size_t count, float lr, float b1, float b2,
                            float eps, float wd, const float *scale, int step) {
    if (!count) return;
    float bias1 = 1.0f - powf(b1, (float)step), bias2 = 1.0f - powf(b2, (float)step);
    const bool vec4 = aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v);
    const size_t units = vec4 ? count / 4 : 0, done = units * 4;
    if (units) {
        adamw_kernel<4><<<blocks_for(units, 256), 256>>>(p, g, m, v, units, lr, b1, b2, eps, wd, scale, sqrtf(bias2),
                                                         lr / bias1);
        CUDA_LAUNCH_CHECK();
    }
    if (done == count) return;
    adamw_kernel<1><<<blocks_for(count - done, 256), 256>>>(p + done, g + done, m + done, v + done, count - done, lr, b1,
                                                            b2, eps, wd, scale, sqrtf(bias2), lr / bias1);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_register_reduce_ops(struct hyla_backend *t) {
    t->sum_squares_add = cuda_sum_squares_add, t->accumulate_f64 = cuda_accumulate_f64;
    t->grad_clip_scale = cuda_grad_clip_scale, t->loss_mean_add = cuda_loss_mean_add;
    t->axpy = cuda_axpy, t->adamw_step = cuda_adamw_step;
}
