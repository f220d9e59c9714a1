// CPU emulation of the few CUDA features the chunked GDR and NSA kernels use (for a logic check only).
#pragma once
#include <algorithm>
#include <atomic>
#include <functional>
#include <ucontext.h>
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
// A block's CUDA threads are fibers on one OS thread, switched only at barriers:
// __syncthreads / __syncwarp (and the shuffles and ballots built on __syncwarp) park the
// fiber. A warp whose lanes all wait at __syncwarp goes on at once, so each warp runs ahead
// through its warp barriers to the next __syncthreads (warps are not in lock-step, and a
// missing __syncthreads between warps shows); the scheduler resumes the threads of a
// completed barrier in ascending thread (warp) order in one round and descending in the next,
// so that a read that misses a barrier sees the other order's data at least once (a shuffle
// orders memory like __syncwarp here, which hardware does not promise: not a race detector). A
// barrier that cannot complete (threads of a block at different barriers, a __syncthreads
// that some threads skipped by returning) aborts with the threads' states. Blocks are spread
// over EMU_WORKERS OS threads (default 2), so a kernel's static __shared__ arrays become
// static thread_local ones (one block at a time per OS thread).
inline thread_local uint3v threadIdx, blockIdx, blockDim, gridDim;
inline thread_local char *g_smem;
// Fiber switches: on x86-64 a few instructions (callee-saved registers, stack pointer, the FP
// control words); elsewhere (or with -DEMU_UCONTEXT) ucontext, whose swapcontext also makes a
// signal-mask system call per switch.
#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
struct emu_ctx { void *sp; };
extern "C" void emu_switch(void **save_sp, void *to_sp);
asm(R"(
    .text
    .weak emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");
inline void emu_swap(emu_ctx &from, const emu_ctx &to) { emu_switch(&from.sp, to.sp); }
// A fresh fiber: its first switch "returns" into entry (which must never return).
inline void emu_make(emu_ctx &c, char *stack, size_t size, void (*entry)()) {
    uintptr_t top = ((uintptr_t)stack + size) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)top;
    *--sp = 0;                // entry's (unused) return address: rsp = 8 mod 16 at its first instruction
    *--sp = (uintptr_t)entry; // emu_switch's ret goes here
    for (int r = 0; r < 6; r++) *--sp = 0; // rbp rbx r12 .. r15
    *--sp = 0x037Full << 32 | 0x1F80;      // mxcsr (low half), x87 control word (high half): the defaults
    c.sp = sp;
}
#else
struct emu_ctx { ucontext_t uc; };
inline void emu_swap(emu_ctx &from, const emu_ctx &to) { swapcontext(&from.uc, &to.uc); }
inline void emu_make(emu_ctx &c, char *stack, size_t size, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack, c.uc.uc_stack.ss_size = size, c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
#endif
struct emu_block {
    enum { RUN, WAIT_BLOCK, WAIT_WARP, DONE };
    int n = 0, cur = 0;
    std::vector<emu_ctx> ctx;
    std::vector<int> state;
    emu_ctx sched;
    std::vector<char> stacks;
    const std::function<void()> *fn = nullptr;
    uint64_t lane_buf[1024];
};
inline thread_local emu_block *g_blk;
inline void emu_park(int why) {
    emu_block *b = g_blk;
    const int me = b->cur;
    b->state[me] = why;
    emu_swap(b->ctx[me], b->sched);
    threadIdx = {(unsigned)me, 0, 0}; // the scheduler set it before resuming us
}
inline void __syncthreads() { emu_park(emu_block::WAIT_BLOCK); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu_park(emu_block::WAIT_WARP); }
template <class T> inline T emu_exchange(T v, int src) { // lane src's v (src within the warp)
    static_assert(sizeof(T) <= 8, "shuffle of a wide type");
    const int t = threadIdx.x;
    memcpy(&g_blk->lane_buf[t], &v, sizeof(T));
    __syncwarp();
    T r;
    memcpy(&r, &g_blk->lane_buf[(t & ~31) | (src & 31)], sizeof(T));
    __syncwarp();
    return r;
}
template <class T> inline T __shfl_xor_sync(unsigned, T v, int off, int width = 32) {
    return emu_exchange(v, ((int)threadIdx.x & 31 & ~(width - 1)) | (((int)threadIdx.x & 31 & (width - 1)) ^ off));
}
template <class T> inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
    return emu_exchange(v, ((int)threadIdx.x & 31 & ~(width - 1)) + (src % width));
}
inline unsigned __ballot_sync(unsigned, int pred) {
    const int t = threadIdx.x, w0 = t & ~31;
    g_blk->lane_buf[t] = pred != 0;
    __syncwarp();
    unsigned r = 0;
    for (int l = 0; l < 32 && w0 + l < g_blk->n; l++) r |= (unsigned)(g_blk->lane_buf[w0 + l] & 1) << l;
    __syncwarp();
    return r;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
// Correctly rounded single operations that the compiler may not fuse (nvcc's __f*_rn): the
// asm hides the value, so with -mfma -ffp-contract=fast (nvcc's default contraction, which
// run_nsa.sh turns on where the CPU has FMA) plain a * b + c fuses and these do not.
inline float emu_opaque(float x) { asm volatile("" : "+x"(x)); return x; }
inline float __fadd_rn(float a, float b) { return emu_opaque(emu_opaque(a) + emu_opaque(b)); }
inline float __fsub_rn(float a, float b) { return emu_opaque(emu_opaque(a) - emu_opaque(b)); }
inline float __fmul_rn(float a, float b) { return emu_opaque(emu_opaque(a) * emu_opaque(b)); }
inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
inline float __uint_as_float(unsigned u) { float x; memcpy(&x, &u, 4); return x; }
inline float __fdividef(float a, float b) { return a / b; } // the GPU's: a times 1 / b, ~2 ulp
inline float __fdiv_rn(float a, float b) { return emu_opaque(emu_opaque(a) / emu_opaque(b)); }
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct uint2 { unsigned x, y; };
// 16-byte vectors aligned as CUDA's, so a misaligned 16-byte access can fault here too
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
struct __nv_bfloat16 { uint16_t u; };
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t r = (b & 0x7fffffffu) > 0x7f800000u ? 0x7fff0000u : b + 0x7fff + ((b >> 16) & 1); // NaN stays NaN
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
// Streams and events: the emulation runs every launch at once, in the order queued, which is
// one of the orders the events allow.
typedef int cudaStream_t;
typedef int cudaEvent_t;
enum { cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2 };
inline int cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { *s = 1; return 0; }
inline int cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) { *e = 1; return 0; }
inline int cudaEventRecord(cudaEvent_t, cudaStream_t) { return 0; }
inline int cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return 0; }
#define CUDA_CHECK(x) (void)(x)
#define CUDA_LAUNCH_CHECK() (void)0
static inline unsigned blocks_for(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }
inline bool cuda_matmul_bf16(void) { return false; } // fp32 mode
constexpr size_t EMU_STACK = 64 << 10;
[[noreturn]] inline void emu_fiber_main() {
    emu_block *b = g_blk;
    (*b->fn)();
    b->state[b->cur] = emu_block::DONE;
    emu_swap(b->ctx[b->cur], b->sched); // never resumed
    abort();
}
[[noreturn]] inline void emu_stuck(const emu_block &b, const char *why) {
    fprintf(stderr, "emu: block (%u, %u, %u): %s; thread states (0 run, 1 __syncthreads, 2 __syncwarp, 3 done):",
            blockIdx.x, blockIdx.y, blockIdx.z, why);
    for (int t = 0; t < b.n; t++) fprintf(stderr, "%s%d", t % 32 ? "" : " ", b.state[t]);
    fprintf(stderr, "\n");
    abort();
}
// Runs one block to the end.
inline void emu_run_block(emu_block &b) {
    for (int t = 0; t < b.n; t++) {
        b.state[t] = emu_block::RUN;
        emu_make(b.ctx[t], b.stacks.data() + (size_t)t * EMU_STACK, EMU_STACK, emu_fiber_main);
    }
    // Warp by warp: a warp runs on through its __syncwarp barriers until it reaches a
    // __syncthreads or ends, before the next warp starts (ascending warps in one round,
    // descending in the next), so a warp may run far ahead of another between block barriers
    // as hardware allows, and a __syncthreads left out shows.
    const int warps = (b.n + 31) / 32;
    for (int phase = 0;; phase++) {
        for (int wi = 0; wi < warps; wi++) {
            const int w0 = 32 * (phase % 2 ? warps - 1 - wi : wi), w1 = std::min(b.n, w0 + 32);
            for (int step = 0;; step++) {
                for (int i = 0; i < w1 - w0; i++) {
                    const int t = (phase + step) % 2 ? w1 - 1 - i : w0 + i;
                    if (b.state[t] != emu_block::RUN) continue;
                    b.cur = t;
                    threadIdx = {(unsigned)t, 0, 0};
                    emu_swap(b.sched, b.ctx[t]);
                }
                int wl = 0, ww = 0;
                for (int t = w0; t < w1; t++) wl += b.state[t] != emu_block::DONE, ww += b.state[t] == emu_block::WAIT_WARP;
                if (ww && ww != wl) emu_stuck(b, "lanes of a warp at different barriers");
                if (!ww) break;
                for (int t = w0; t < w1; t++) b.state[t] = emu_block::RUN;
            }
        }
        int live = 0, at_block = 0;
        for (int t = 0; t < b.n; t++) live += b.state[t] != emu_block::DONE, at_block += b.state[t] == emu_block::WAIT_BLOCK;
        if (!live) return;
        if (at_block != b.n) emu_stuck(b, "__syncthreads not reached by every thread of the block");
        for (int t = 0; t < b.n; t++) b.state[t] = emu_block::RUN;
    }
}
template <class F> void emu_launch(dim3 grid, dim3 block, size_t smem, F f) {
    const int threads = (int)(block.x * block.y * block.z);
    if (block.y != 1 || block.z != 1 || threads > 1024) { fprintf(stderr, "emu: 1-D blocks of <= 1024 threads only\n"); abort(); }
    const std::function<void()> fn = f;
    const size_t nblocks = (size_t)grid.x * grid.y * grid.z;
    std::atomic<size_t> next{0};
    const char *e = getenv("EMU_WORKERS");
    const int workers = std::max(1, std::min<int>(e ? atoi(e) : 2, (int)std::min<size_t>(nblocks, 64)));
    auto work = [&] {
        emu_block b;
        b.n = threads, b.fn = &fn;
        b.ctx.resize(threads), b.state.resize(threads), b.stacks.resize((size_t)threads * EMU_STACK);
        std::vector<char> mem(smem + 256);
        g_blk = &b, g_smem = mem.data();
        blockDim = {block.x, 1, 1}, gridDim = {grid.x, grid.y, grid.z};
        for (size_t i; (i = next++) < nblocks;) {
            blockIdx = {(unsigned)(i % grid.x), (unsigned)(i / grid.x % grid.y), (unsigned)(i / ((size_t)grid.x * grid.y))};
            memset(mem.data(), 0xff, mem.size()); // uninitialised shared memory reads as NaN
            emu_run_block(b);
        }
        g_blk = nullptr;
    };
    if (workers == 1) work();
    else {
        std::vector<std::thread> ts;
        for (int w = 0; w < workers; w++) ts.emplace_back(work);
        for (auto &t : ts) t.join();
    }
}
template <class F> void emu_launch(dim3 grid, dim3 block, F f) { emu_launch(grid, block, 0, f); }
template <class F> void emu_launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, F f) { emu_launch(grid, block, smem, f); }
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
