// CPU emulation of the few CUDA features the chunked GDR kernels use (for a logic check only).
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <math.h>
#include <thread>
#include <type_traits>
#include <vector>
#define __global__
#define __device__
#define __host__
#define __launch_bounds__(...)
#define __shared__
#define __align__(x)
using std::max;
using std::min;
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3v { unsigned x, y, z; };
inline thread_local uint3v threadIdx, blockIdx;
inline char *g_smem;
inline std::barrier<> *g_block_bar;
inline std::barrier<> *g_warp_bar[8];
inline float g_shfl[256];
inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { g_warp_bar[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int off) {
    int t = threadIdx.x;
    g_shfl[t] = v;
    __syncwarp();
    float r = g_shfl[(t & ~31) | ((t & 31) ^ off)];
    __syncwarp();
    return r;
}
struct __nv_bfloat16 { uint16_t u; };
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t r = b + 0x7fff + ((b >> 16) & 1);
    __nv_bfloat16 h;
    h.u = (uint16_t)(r >> 16);
    return h;
}
inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t b = (uint32_t)h.u << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}
inline void __pipeline_memcpy_async(void *d, const void *s, size_t n) { memcpy(d, s, n); }
inline void __pipeline_commit() {}
inline void __pipeline_wait_prior(int) {}
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaMemcpyDeviceToDevice = 3, cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
inline int cudaMallocAsync(void **p, size_t n, int) { *p = malloc(n); memset(*p, 0xff, n); return 0; }
inline int cudaFreeAsync(void *p, int) { free(p); return 0; }
inline int cudaMemcpyAsync(void *d, const void *s, size_t n, int, int) { memcpy(d, s, n); return 0; }
inline int cudaMemsetAsync(void *d, int v, size_t n, int) { memset(d, v, n); return 0; }
template <class K> inline int cudaFuncSetAttribute(K, int, int) { return 0; }
#define CUDA_CHECK(x) (void)(x)
#define CUDA_LAUNCH_CHECK() (void)0
template <class F> void emu_launch(dim3 grid, int threads, size_t smem, F f) {
    for (unsigned by = 0; by < grid.y; by++)
        for (unsigned bx = 0; bx < grid.x; bx++) {
            std::vector<char> mem(smem + 256);
            memset(mem.data(), 0xff, mem.size());
            g_smem = mem.data();
            std::barrier<> bar(threads);
            std::vector<std::barrier<> *> wb;
            for (int w = 0; w < threads / 32; w++) g_warp_bar[w] = new std::barrier<>(32);
            g_block_bar = &bar;
            std::vector<std::thread> ts;
            for (int t = 0; t < threads; t++)
                ts.emplace_back([&, t] {
                    threadIdx = {(unsigned)t, 0, 0};
                    blockIdx = {bx, by, 0};
                    f();
                });
            for (auto &t : ts) t.join();
            for (int w = 0; w < threads / 32; w++) delete g_warp_bar[w];
        }
}
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class L = void> struct fragment {
    float x[256];
    static constexpr int num_elements = 256;
};
template <class F> void fill_fragment(F &f, float v) {
    for (int i = 0; i < 256; i++) f.x[i] = v;
}
template <class Use, class L>
void load_matrix_sync(fragment<Use, 16, 16, 16, __nv_bfloat16, L> &f, const __nv_bfloat16 *p, unsigned ld) {
    __syncwarp();
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.x[r * 16 + c] = __bfloat162float(std::is_same<L, col_major>::value ? p[r + c * ld] : p[r * ld + c]);
    __syncwarp();
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ld, layout_t) {
    __syncwarp();
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r * 16 + c] = p[r * ld + c];
    __syncwarp();
}
inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ld, layout_t) {
    __syncwarp();
    if (threadIdx.x % 32 == 0)
        for (int r = 0; r < 16; r++)
            for (int c = 0; c < 16; c++) p[r * ld + c] = f.x[r * 16 + c];
    __syncwarp();
}
template <class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float> &d, const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA> &a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB> &b,
              const fragment<accumulator, 16, 16, 16, float> &c) {
    float t[256];
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 16; n++) {
            float s = c.x[r * 16 + n];
            for (int k = 0; k < 16; k++) s += a.x[r * 16 + k] * b.x[k * 16 + n];
            t[r * 16 + n] = s;
        }
    memcpy(d.x, t, sizeof t);
}
} // namespace wmma
} // namespace nvcuda
