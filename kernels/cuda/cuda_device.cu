// CUDA device discovery. The CUDA backend's ops land in this folder (issue: CUDA backend);
// this file lets the rest of hyla ask whether a usable GPU is present.
#include <cuda_runtime.h>
#include <stdio.h>

#include "cuda_device.h"

extern "C" int hyla_cuda_device_count(void) {
    int count = 0;
    // No driver or no device both mean "no GPU here": the caller falls back to the CPU.
    if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
    return count;
}

extern "C" int hyla_cuda_device_name(int device, char *name, int capacity) {
    cudaDeviceProp prop;
    if (capacity <= 0 || cudaGetDeviceProperties(&prop, device) != cudaSuccess) return -1;
    int i = 0;
    for (; i < capacity - 1 && prop.name[i]; i++) name[i] = prop.name[i];
    name[i] = '\0';
    return 0;
}

extern "C" size_t hyla_cuda_memory_used(void) {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) return 0;
    return total_bytes - free_bytes;
}

extern "C" int hyla_cuda_use_device(int device) {
    const int count = hyla_cuda_device_count();
    if (device < 0 || device >= count) {
        fprintf(stderr, "hyla: error: GPU %d asked for, but this process sees %d; start at most as many workers per "
                        "host as it has GPUs, or check CUDA_VISIBLE_DEVICES\n", device, count);
        return -1;
    }
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        fprintf(stderr, "hyla: error: cudaSetDevice(%d) failed: %s\n", device, cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

extern "C" int hyla_cuda_current_device(void) {
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return 0;
    return device;
}
