// Block-wide sum and max over blockDim.x (a power of two) through shared memory, with a
// fixed reduction tree: the same inputs give the same bits every time.
#ifndef HYLA_CUDA_REDUCE_CUH
#define HYLA_CUDA_REDUCE_CUH

__device__ static inline float block_sum(float v, float *shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    float r = shared[0];
    __syncthreads();
    return r;
}

__device__ static inline float block_max(float v, float *shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (threadIdx.x < s) shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + s]);
        __syncthreads();
    }
    float r = shared[0];
    __syncthreads();
    return r;
}

#endif
