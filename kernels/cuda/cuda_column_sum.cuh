// Parameter gradients that sum a per-row term over every row (norm weights, convolution taps,
// gate parameters, router weights): out[c] += sum over r < rows of term(r, c), in parallel and
// still reproducible. Stage 1: blocks of COLSUM_ROWS consecutive rows, one thread per column,
// write partial sums; stage 2: one thread per column adds the partials in block order. Fixed
// order, no atomics: the same bits every run (on any GPU with the same chunking).
#ifndef HYLA_CUDA_COLUMN_SUM_CUH
#define HYLA_CUDA_COLUMN_SUM_CUH

#include "cuda_check.h"

namespace column_sum {

constexpr int ROWS = 128, THREADS = 128;

// Term: a functor with `__device__ float operator()(int row, int col) const`.
template <typename Term> __global__ void partials_kernel(float *partial, int rows, int cols, Term term) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const int r0 = blockIdx.y * ROWS, r1 = min(rows, r0 + ROWS);
    float acc = 0;
    for (int r = r0; r < r1; r++) acc += term(r, c);
    partial[(size_t)blockIdx.y * cols + c] = acc;
}

template <int unused = 0> __global__ void finish_kernel(float *out, const float *partial, int chunks, int cols) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float acc = 0;
    for (int k = 0; k < chunks; k++) acc += partial[(size_t)k * cols + c];
    out[c] += acc;
}

} // namespace column_sum

// out[c] += sum over rows of term(r, c), for c < cols (stream-ordered scratch).
template <typename Term> void column_sum_add(float *out, int rows, int cols, Term term) {
    if (rows <= 0 || cols <= 0) return;
    using namespace column_sum;
    const int chunks = (rows + ROWS - 1) / ROWS;
    float *partial = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&partial, sizeof(float) * (size_t)chunks * cols, 0));
    partials_kernel<<<dim3(blocks_for((size_t)cols, THREADS), chunks), THREADS>>>(partial, rows, cols, term);
    CUDA_LAUNCH_CHECK();
    finish_kernel<<<blocks_for((size_t)cols, THREADS), THREADS>>>(out, partial, chunks, cols);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(partial, 0));
}

#endif
