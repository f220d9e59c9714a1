// CUDA: SwiGLU, z = silu(gate) up, and its backward, with the CPU twins' semantics
// (kernels/cpu/op_linear.c): the table's fp32 ops, and for the MLP (cuda_mlp.cu) the same with
// bf16 outputs and optionally bf16 inputs (cuda_swiglu.cuh). Memory-bound: a thread takes 4
// neighbouring values (16-byte loads and stores, 8-byte ones for bf16) where the count and the
// pointers allow, one value elsewhere; every value's arithmetic is the same either way.
#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_swiglu.cuh"
#include "cuda_vec.cuh"

namespace {

typedef __nv_bfloat16 bf16;
constexpr int THREADS = 256;

__device__ inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// x rounded to bf16 (to nearest even), as the low 16 bits.
__device__ inline uint32_t bf16_bits(float x) {
    const bf16 h = __float2bfloat16(x);
    return *reinterpret_cast<const uint16_t *>(&h);
}
// The float a bf16 holds, from its 16 bits (the low half of `bits`): exact, bf16 is fp32's upper half.
__device__ inline float bf16_value(uint32_t bits) {
    const uint16_t b = (uint16_t)bits;
    return __bfloat162float(*reinterpret_cast<const bf16 *>(&b));
}
// W consecutive inputs, float or bf16, as floats (W = 4: one 16- or 8-byte load).
template <int W> __device__ inline floats<W> load_in(const float *p, size_t u) { return load_unit<W>(p, u); }
template <int W> __device__ inline floats<W> load_in(const bf16 *p, size_t u) {
    floats<W> r;
    if constexpr (W == 4) {
        const uint2 q = reinterpret_cast<const uint2 *>(p)[u];
        r.v[0] = bf16_value(q.x), r.v[1] = bf16_value(q.x >> 16); // element 0 is the low half
        r.v[2] = bf16_value(q.y), r.v[3] = bf16_value(q.y >> 16);
    } else {
#pragma unroll
        for (int k = 0; k < W; k++) r.v[k] = __bfloat162float(p[u * W + k]);
    }
    return r;
}
// W consecutive outputs as float or bf16 (W = 4: one 16- or 8-byte store).
template <class Z, int W> __device__ inline void store_out(Z *p, size_t u, const floats<W> &a);
template <int W> __device__ inline void store_out(float *p, size_t u, const floats<W> &a) { store_unit<W>(p, u, a); }
template <int W> __device__ inline void store_out(bf16 *p, size_t u, const floats<W> &a) {
    if constexpr (W == 4) {
        uint2 packed;
        packed.x = bf16_bits(a.v[0]) | bf16_bits(a.v[1]) << 16, packed.y = bf16_bits(a.v[2]) | bf16_bits(a.v[3]) << 16;
        reinterpret_cast<uint2 *>(p)[u] = packed;
    } else {
#pragma unroll
        for (int k = 0; k < W; k++) p[u * W + k] = __float2bfloat16(a.v[k]);
    }
}

template <class Z, class G, int W> __global__ void swiglu_fwd_kernel(Z *z, const G *gate, const G *up, size_t units) {
    const size_t u = blockIdx.x * (size_t)THREADS + threadIdx.x;
    if (u >= units) return;
    const floats<W> g = load_in<W>(gate, u), x = load_in<W>(up, u);
    floats<W> o;
#pragma unroll
    for (int k = 0; k < W; k++) o.v[k] = g.v[k] * sigmoid(g.v[k]) * x.v[k];
    store_out<W>(z, u, o);
}
// dgate may alias dz: a thread reads its dz values before it writes dgate's.
template <class Z, class G, int W>
__global__ void swiglu_bwd_kernel(Z *dgate, Z *dup, const G *dz, const G *gate, const G *up, size_t units) {
    const size_t u = blockIdx.x * (size_t)THREADS + threadIdx.x;
    if (u >= units) return;
    const floats<W> d = load_in<W>(dz, u), g = load_in<W>(gate, u), x = load_in<W>(up, u);
    floats<W> du, dg;
#pragma unroll
    for (int k = 0; k < W; k++) {
        const float s = sigmoid(g.v[k]);
        du.v[k] = d.v[k] * g.v[k] * s;
        dg.v[k] = d.v[k] * x.v[k] * s * (1.0f + g.v[k] * (1.0f - s));
    }
    store_out<W>(dup, u, du);
    store_out<W>(dgate, u, dg);
}

unsigned blocks(size_t units) { return (unsigned)((units + THREADS - 1) / THREADS); }
// Whether p is aligned for 4-value accesses: 16 bytes for fp32, 8 for bf16 (NULL, an absent
// operand, is).
template <class T> bool unit_aligned(const T *p) { return ((uintptr_t)p & (sizeof(T) * 4 - 1)) == 0; }
// 4 values a thread: the count a multiple of 4, every pointer aligned for it.
template <class Z, class G> bool vec4(size_t count, const Z *out, const G *a, const G *b, const G *c = NULL) {
    return count % 4 == 0 && unit_aligned(out) && unit_aligned(a) && unit_aligned(b) && unit_aligned(c);
}

} // namespace

template <class Z, class G> void swiglu_forward(Z *z, const G *gate, const G *up, size_t count) {
    if (!count) return;
    if (vec4(count, z, gate, up)) swiglu_fwd_kernel<Z, G, 4><<<blocks(count / 4), THREADS>>>(z, gate, up, count / 4);
    else swiglu_fwd_kernel<Z, G, 1><<<blocks(count), THREADS>>>(z, gate, up, count);
    CUDA_LAUNCH_CHECK();
}
template <class Z, class G>
void swiglu_backward(Z *dgate, Z *dup, const G *dz, const G *gate, const G *up, size_t count) {
    if (!count) return;
    if (vec4(count, dgate, dz, gate, up) && vec4(count, dup, dz, gate))
        swiglu_bwd_kernel<Z, G, 4><<<blocks(count / 4), THREADS>>>(dgate, dup, dz, gate, up, count / 4);
    else swiglu_bwd_kernel<Z, G, 1><<<blocks(count), THREADS>>>(dgate, dup, dz, gate, up, count);
    CUDA_LAUNCH_CHECK();
}
// fp32 in and out (the table's ops), fp32 in and bf16 out (HYLA_MLP_BF16), bf16 both (_ACTS).
template void swiglu_forward<float, float>(float *, const float *, const float *, size_t);
template void swiglu_forward<bf16, float>(bf16 *, const float *, const float *, size_t);
template void swiglu_forward<bf16, bf16>(bf16 *, const bf16 *, const bf16 *, size_t);
template void swiglu_backward<float, float>(float *, float *, const float *, const float *, const float *, size_t);
template void swiglu_backward<bf16, float>(bf16 *, bf16 *, const float *, const float *, const float *, size_t);
template void swiglu_backward<bf16, bf16>(bf16 *, bf16 *, const bf16 *, const bf16 *, const bf16 *, size_t);

static void cuda_swiglu_fwd(float *z, const float *gate, const float *up, size_t count) {
    swiglu_forward(z, gate, up, count);
}
static void cuda_swiglu_bwd(float *dgate, float *dup, const float *dz, const float *gate, const float *up, size_t count) {
    swiglu_backward(dgate, dup, dz, gate, up, count);
}

extern "C" void cuda_register_swiglu(struct hyla_backend *t) {
    t->swiglu_fwd = cuda_swiglu_fwd, t->swiglu_bwd = cuda_swiglu_bwd;
}
