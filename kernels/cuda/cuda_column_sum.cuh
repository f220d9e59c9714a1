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

// ---- Column sums fused into a row kernel ---------------------------------------------------
// A backward kernel that already reads every row of a parameter gradient's operands (RMSNorm,
// the gated RMSNorm, the short convolution) can sum the columns as it goes rather than leave
// a second pass to read the rows again: a fixed grid of blocks strides over the rows, each
// thread keeps the sums of its own columns in registers over many rows, the block adds its
// row groups' sums in shared memory in a fixed order and writes one partial row, and
// column_sum_fused adds the partial rows. The grid is a function of the shape alone (never of
// the GPU's SM count), so the bits are the same on every GPU. HYLA_NORM_FUSED_DW=1 / 0
// chooses; on by default since an H100 run timed and checked it (FUSED_DW_BY_DEFAULT,
// docs/gpu-runs/2026-12-07d-h100).
namespace column_sum {

static const bool FUSED_DW_BY_DEFAULT = true;
static inline bool fused_dw(void) {
    const char *env = getenv("HYLA_NORM_FUSED_DW");
    return env && *env ? atoi(env) != 0 : FUSED_DW_BY_DEFAULT;
}

// Rows each row group (or warp) of a fused block takes, about: few partial rows (1 / 16 of
// the row blocks) and still enough blocks to fill a GPU at the models' shapes.
constexpr int FUSED_STEPS = 16;
// The fused grid for `rows` rows taken `per_block` at a time.
static inline unsigned fused_blocks(long long rows, int per_block) {
    const long long row_blocks = (rows + per_block - 1) / per_block;
    return (unsigned)((row_blocks + FUSED_STEPS - 1) / FUSED_STEPS);
}

// The block's partial row out[0 .. dim): row group rg (threads rg group .. rg group + group -
// 1, blockDim.x / group of them) holds in acc[j] its sums of the W columns of unit u = j group
// + g (g: the thread's place in its group; the row kernels' layout, any type with .v[W]); the
// groups are added in order through cols (blockDim.x / group * dim floats of shared memory).
// Every thread of the block calls it (a barrier).
template <int ITEMS, int W, typename Units>
__device__ static void block_partial(float *out, const Units *acc, float *cols, int dim, int group) {
    const int groups = blockDim.x / group, rg = threadIdx.x / group, g = threadIdx.x % group, units = dim / W;
#pragma unroll
    for (int j = 0; j < ITEMS; j++) {
        const int u = j * group + g;
        if (u >= units) continue;
#pragma unroll
        for (int k = 0; k < W; k++) cols[rg * dim + u * W + k] = acc[j].v[k];
    }
    __syncthreads();
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        float s = 0;
        for (int q = 0; q < groups; q++) s += cols[q * dim + c];
        out[c] = s;
    }
}

// Stage 2 over many partial rows: a block takes FINISH_COLS columns in FINISH_SLICES slices,
// slice q adding rows q, q + FINISH_SLICES, ... (the loads unrolled, in flight together), then
// the slices in order: chunks / FINISH_SLICES dependent steps a thread rather than chunks
// (finish_kernel's single block took 35 us over 1024 partial rows of 128 columns).
constexpr int FINISH_COLS = 32, FINISH_SLICES = 8;
template <int unused = 0> __global__ void finish_sliced_kernel(float *out, const float *partial, int chunks, int cols) {
    __shared__ float sums[FINISH_SLICES][FINISH_COLS];
    const int lc = threadIdx.x % FINISH_COLS, slice = threadIdx.x / FINISH_COLS;
    const int c = blockIdx.x * FINISH_COLS + lc;
    float acc = 0;
    if (c < cols) {
#pragma unroll 8
        for (int k = slice; k < chunks; k += FINISH_SLICES) acc += partial[(size_t)k * cols + c];
    }
    sums[slice][lc] = acc;
    __syncthreads();
    if (slice > 0 || c >= cols) return;
    float s = 0;
    for (int q = 0; q < FINISH_SLICES; q++) s += sums[q][lc];
    out[c] += s;
}

} // namespace column_sum

// out[c] += sum over the `chunks` partial rows that launch(partial) writes (a fused kernel:
// partial[k cols + c] for k < chunks, c < cols), in a fixed order (stream-ordered scratch).
template <typename Launch> void column_sum_fused(float *out, unsigned chunks, int cols, Launch launch) {
    using namespace column_sum;
    float *partial = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&partial, sizeof(float) * (size_t)chunks * cols, 0));
    launch(partial);
    finish_sliced_kernel<<<blocks_for((size_t)cols, FINISH_COLS), FINISH_COLS * FINISH_SLICES>>>(out, partial,
                                                                                                  (int)chunks, cols);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(partial, 0));
}

#endif
