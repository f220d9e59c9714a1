// CUDA: the token embedding, forward and backward (CPU twin kernels/cpu/op_embedding.c).
//
// The backward adds each position's row of dout into its token's row of dtable, in a fixed
// order and without float atomics. A stable radix sort of the positions by token (CUB;
// deterministic) puts each token's positions together, in increasing order: a "run". The
// sorted list is then cut into chunks of CHUNK rows, whatever the runs:
//   1. one block per chunk walks its rows in order, summing each column in registers; a run
//      that starts and ends inside the chunk goes straight into dtable (its block is the
//      token's only writer); a run's piece at the chunk's start, if the run began in an earlier
//      chunk, is stored as the chunk's head, and the piece of a run that began inside the
//      chunk and goes on past it as the chunk's tail;
//   2. one block per chunk whose last run goes on past it and began inside it adds that tail
//      and the heads of the following chunks the run covers, in chunk order, into dtable.
// Every block reads at most CHUNK rows (plus, in step 2, one partial row per chunk of a long
// run), so a frequent token — MQAR's keys and values, a corpus's commonest words — is spread
// over many blocks instead of taking one block through thousands of rows.
#include <cub/device/device_radix_sort.cuh>

#include "backend_cuda.h"
#include "cuda_check.h"

namespace {

constexpr int THREADS = 256; // a block's threads each own every THREADS-th column
constexpr int CHUNK = 64;    // sorted rows per block in step 1

__global__ void embedding_fwd_kernel(float *out, const int32_t *tokens, const float *table, int n, int dim) {
    const int row = blockIdx.y;
    const int32_t token = tokens[row];
    for (int c = blockIdx.x * THREADS + threadIdx.x; c < dim; c += gridDim.x * THREADS)
        out[(size_t)row * dim + c] = table[(size_t)token * dim + c];
}

__global__ void iota_kernel(int32_t *v, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) v[i] = i;
}

// Step 1, one block per chunk of the sorted rows: direct sums of the runs inside the chunk,
// head[chunk] and tail[chunk] (each [dim]) for the pieces of runs that cross its edges.
__global__ void run_pieces_kernel(float *dtable, float *head, float *tail, const float *dout,
                                  const int32_t *sorted_tokens, const int32_t *positions, int n, int dim,
                                  int padding_idx) {
    __shared__ int32_t tok[CHUNK + 1], pos[CHUNK];
    const int chunk = blockIdx.x, begin = chunk * CHUNK, rows = min(CHUNK, n - begin);
    for (int r = threadIdx.x; r < rows; r += THREADS) tok[r] = sorted_tokens[begin + r], pos[r] = positions[begin + r];
    // tok[rows]: the token after the chunk (-1 at the end), so a run's end is tok[r + 1] != tok[r]
    if (threadIdx.x == 0) tok[rows] = begin + rows < n ? sorted_tokens[begin + rows] : -1;
    __syncthreads();
    const int32_t before = begin > 0 ? sorted_tokens[begin - 1] : -1; // the token just before the chunk
    for (int c = threadIdx.x; c < dim; c += THREADS) {
        float acc = 0.0f;
        int start = 0; // the current run's first row in the chunk
        for (int r = 0; r < rows; r++) {
            acc += dout[(size_t)pos[r] * dim + c];
            if (tok[r + 1] == tok[r] && r + 1 < rows) continue; // the run goes on inside the chunk
            const bool began_here = start > 0 || tok[0] != before, ends_here = tok[r + 1] != tok[r];
            if (tok[r] != padding_idx) {
                if (!began_here) head[(size_t)chunk * dim + c] = acc;
                else if (!ends_here) tail[(size_t)chunk * dim + c] = acc;
                else dtable[(size_t)tok[r] * dim + c] += acc;
            }
            acc = 0.0f, start = r + 1;
        }
    }
}

// Step 2, one block per chunk: the run that began in this chunk and goes on past it (if any)
// adds its tail and the heads of the chunks it covers, in order.
__global__ void long_runs_kernel(float *dtable, const float *head, const float *tail, const int32_t *sorted_tokens,
                                 int n, int dim, int padding_idx) {
    const int chunk = blockIdx.x, begin = chunk * CHUNK, last = min(n, begin + CHUNK) - 1;
    const int32_t token = sorted_tokens[last];
    const bool goes_on = last + 1 < n && sorted_tokens[last + 1] == token;
    const bool began_here = begin == 0 || sorted_tokens[begin - 1] != token; // sorted: else the whole chunk is token's
    if (!goes_on || !began_here || token == padding_idx) return;
    for (int c = threadIdx.x; c < dim; c += THREADS) {
        float sum = tail[(size_t)chunk * dim + c];
        for (int next = chunk + 1;; next++) {
            sum += head[(size_t)next * dim + c];
            const int next_end = (next + 1) * CHUNK; // the row after chunk `next`
            if (next_end >= n || sorted_tokens[next_end] != token) break;
        }
        dtable[(size_t)token * dim + c] += sum;
    }
}

void cuda_embedding_fwd(float *out, const int32_t *tokens, const float *table, int n, int dim) {
    if (n <= 0 || dim <= 0) return;
    embedding_fwd_kernel<<<dim3((dim + THREADS - 1) / THREADS, n), THREADS>>>(out, tokens, table, n, dim);
    CUDA_LAUNCH_CHECK();
}

void cuda_embedding_bwd(float *dtable, const float *dout, const int32_t *tokens, int n, int dim, int padding_idx) {
    if (n <= 0 || dim <= 0) return;
    const int chunks = (n + CHUNK - 1) / CHUNK;
    int32_t *sorted_tokens = NULL, *order = NULL, *positions = NULL; // stream-ordered scratch
    float *head = NULL, *tail = NULL;
    void *sort_scratch = NULL;
    size_t sort_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(NULL, sort_bytes, tokens, sorted_tokens, order, positions, n));
    CUDA_CHECK(cudaMallocAsync((void **)&sorted_tokens, sizeof(int32_t) * (size_t)n, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&order, sizeof(int32_t) * (size_t)n, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&positions, sizeof(int32_t) * (size_t)n, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&head, sizeof(float) * (size_t)chunks * dim, 0));
    CUDA_CHECK(cudaMallocAsync((void **)&tail, sizeof(float) * (size_t)chunks * dim, 0));
    CUDA_CHECK(cudaMallocAsync(&sort_scratch, sort_bytes, 0));
    iota_kernel<<<blocks_for((size_t)n, 256), 256>>>(order, n);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_scratch, sort_bytes, tokens, sorted_tokens, order, positions, n));
    run_pieces_kernel<<<chunks, THREADS>>>(dtable, head, tail, dout, sorted_tokens, positions, n, dim, padding_idx);
    CUDA_LAUNCH_CHECK();
    long_runs_kernel<<<chunks, THREADS>>>(dtable, head, tail, sorted_tokens, n, dim, padding_idx);
    CUDA_LAUNCH_CHECK();
    for (void *p : {(void *)sort_scratch, (void *)tail, (void *)head, (void *)positions, (void *)order,
                    (void *)sorted_tokens})
        CUDA_CHECK(cudaFreeAsync(p, 0));
}

} // namespace

extern "C" void cuda_register_embedding(struct hyla_backend *t) {
    t->embedding_fwd = cuda_embedding_fwd, t->embedding_bwd = cuda_embedding_bwd;
}
