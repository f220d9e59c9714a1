// Stands in for cuda_nsa_mma.cuh (inline PTX: mma.sync, ldmatrix) in the NSA emulation, which
// runs the fp32 path only (cuda_matmul_bf16() is false there): the tensor-core kernels still
// compile, and abort if they were ever reached.
#pragma once
namespace nsa_mma {
typedef __nv_bfloat16 bf16;
constexpr int KT = 64;
[[noreturn]] inline void emu_no_mma() {
    fprintf(stderr, "emu: a tensor-core (bf16) NSA kernel was reached in fp32 mode\n");
    abort();
}
inline uint32_t pack(float, float) { emu_no_mma(); }
template <int D> void load_a(uint32_t (&)[D / 16][4], const float *const (&)[2], const float (&)[2]) { emu_no_mma(); }
template <int D> void scores(float (&)[KT / 8][4], const uint32_t (&)[D / 16][4], const bf16 *) { emu_no_mma(); }
template <int D> void times_rows(float (&)[D / 8][4], const float (&)[KT / 8][4], const bf16 *) { emu_no_mma(); }
} // namespace nsa_mma
