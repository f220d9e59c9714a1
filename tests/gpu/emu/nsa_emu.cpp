// NSA's tiled fp32 kernels (cuda_nsa.cu with HYLA_NSA_TILED=1) under tests/gpu/emu/emu.h against
// the fp32 CPU twin: block_idx identical, o, saved, dq, dk, dv, dgate_logits within 1e-5
// relative error (norm-based, test_cuda_ops' rel_err_f32 and bound); with EMU_NSA_BF16=1 the
// tensor-core tiles (bf16 mode) within 1e-2, the selection still identical.
// Arguments: B L Hq Hkv d block n_select window.
#include "emu.h"
#include "emu_check.h"
#include "cuda_flash_common.cuh"
#include "cuda_nsa.cpp" // the rewritten cuda_nsa.cu: its static fwd / bwd entry points
extern "C" {
void cpu_f32_nsa_fwd(float *, float *, int32_t *, const float *, const float *, const float *, const float *,
                     const struct hyla_nsa_shape *, int, int, int);
void cpu_f32_nsa_bwd(float *, float *, float *, float *, const float *, const float *, const int32_t *,
                     const float *, const float *, const float *, const float *, const struct hyla_nsa_shape *, int,
                     int);
}
bool emu_nsa_bf16 = false; // cuda_matmul_bf16() in the emulated sources (run_nsa.sh): EMU_NSA_BF16=1
// Not reached with head dims <= 128: the per-row fallback; nor the window branch's bf16 tiles
// (flash::bf16_supported is false here: the window branch runs the fp32 tiles in both modes).
[[noreturn]] static void unreached(const char *what) {
    fprintf(stderr, "emu: %s reached\n", what);
    abort();
}
void nsa_rows_fwd(float *, float *, int32_t *, const float *, const float *, const float *, const float *,
                  const struct hyla_nsa_shape *, int, int, int) { unreached("nsa_rows_fwd"); }
void nsa_rows_bwd(float *, float *, float *, float *, const float *, const float *, const int32_t *, const float *,
                  const float *, const float *, const float *, const struct hyla_nsa_shape *, int, int) {
    unreached("nsa_rows_bwd");
}
namespace flash {
bool bf16_supported(int) { return false; }
void bf16_fwd(float *, float *, const float *, const float *, const float *, const flash_shape &) {
    unreached("flash bf16_fwd");
}
void bf16_bwd(float *, float *, float *, const float *, const float *, const float *, const float *, const float *,
              const float *, const flash_shape &) { unreached("flash bf16_bwd"); }
} // namespace flash


int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s B L Hq Hkv d block n_select window\n", argv[0]);
        return 2;
    }
    const int B = atoi(argv[1]), L = atoi(argv[2]), Hq = atoi(argv[3]), Hkv = atoi(argv[4]), d = atoi(argv[5]);
    const int block = atoi(argv[6]), nsel = atoi(argv[7]), window = atoi(argv[8]);
    setenv("HYLA_NSA_TILED", "1", 1);
    const char *bf16_env = getenv("EMU_NSA_BF16");
    emu_nsa_bf16 = bf16_env && atoi(bf16_env) == 1; // the tensor-core tiles (head dims 64, 128)
    const double bound = emu_nsa_bf16 ? 1e-2 : 1e-5; // test_cuda_ops' bounds
    const struct hyla_nsa_shape shape = {Hq, Hkv, d, block, nsel, window, 1.0 / sqrt((double)d)};
    const size_t nq = (size_t)B * L * Hq * d, nk = (size_t)B * L * Hkv * d, ng = (size_t)B * L * 3 * Hq;
    const size_t nsv = nsa_saved_size(&shape, B, L), nidx = (size_t)B * L * Hkv * nsel;
    auto q = rv(nq, -1, 1), k = rv(nk, -1, 1), v = rv(nk, -1, 1), gl = rv(ng, -2, 2), dO = rv(nq, -1, 1);
    std::vector<float> o(nq), saved(nsv), dq(nq), dk(nk), dv(nk), dgl(ng);
    auto o2 = nans(nq), saved2 = nans(nsv), dq2 = nans(nq), dk2 = nans(nk), dv2 = nans(nk), dgl2 = nans(ng);
    std::vector<int32_t> idx(nidx + 1), idx2(nidx + 1, -7);
    cpu_f32_nsa_fwd(o.data(), saved.data(), idx.data(), q.data(), k.data(), v.data(), gl.data(), &shape, B, L, 0);
    cuda_nsa_fwd(o2.data(), saved2.data(), idx2.data(), q.data(), k.data(), v.data(), gl.data(), &shape, B, L, 0);
    cpu_f32_nsa_bwd(dq.data(), dk.data(), dv.data(), dgl.data(), dO.data(), saved.data(), idx.data(), q.data(),
                    k.data(), v.data(), gl.data(), &shape, B, L);
    // the backward pass reads the CPU's saved tensors and selection, as test_cuda_ops' does its own
    cuda_nsa_bwd(dq2.data(), dk2.data(), dv2.data(), dgl2.data(), dO.data(), saved2.data(), idx.data(), q.data(),
                  k.data(), v.data(), gl.data(), &shape, B, L);
    if (const char *dump = getenv("EMU_NSA_DUMP")) { // every output, for run_nsa.sh to compare two forms
        FILE *f = fopen(dump, "wb");
        if (!f || fwrite(o2.data(), sizeof(float), nq, f) != nq || fwrite(saved2.data(), sizeof(float), nsv, f) != nsv ||
            fwrite(idx2.data(), sizeof(int32_t), nidx, f) != nidx || fwrite(dq2.data(), sizeof(float), nq, f) != nq ||
            fwrite(dk2.data(), sizeof(float), nk, f) != nk || fwrite(dv2.data(), sizeof(float), nk, f) != nk ||
            fwrite(dgl2.data(), sizeof(float), ng, f) != ng || fclose(f)) {
            fprintf(stderr, "emu: cannot write %s\n", dump);
            return 1;
        }
    }
    size_t idx_diff = 0;
    for (size_t i = 0; i < nidx; i++) idx_diff += idx[i] != idx2[i];
    printf("%s B=%d L=%d Hq=%d Hkv=%d d=%d block=%d S=%d w=%d: block_idx %s", emu_nsa_bf16 ? "bf16" : "fp32", B, L,
           Hq, Hkv, d, block, nsel, window,
           idx_diff ? "DIFFERS" : "same");
    if (idx_diff) printf(" (%zu of %zu)", idx_diff, nidx);
    int bad = idx_diff != 0;
    const struct hyla_nsa_saved_offsets off = nsa_saved_offsets(&shape, B, L);
    struct {
        const char *name;
        const float *got, *want;
        size_t n;
        bool bound; // a part of saved, reported for diagnosis only (saved as a whole is bounded)
    } outs[] = {{"o", o2.data(), o.data(), nq, true},
                {"saved", saved2.data(), saved.data(), nsv, true},
                {"(kbar", saved2.data() + off.kbar, saved.data() + off.kbar, off.vbar - off.kbar, false},
                {"vbar", saved2.data() + off.vbar, saved.data() + off.vbar, off.o[0] - off.vbar, false},
                {"o_cmp", saved2.data() + off.o[0], saved.data() + off.o[0], nq, false},
                {"o_slc", saved2.data() + off.o[1], saved.data() + off.o[1], nq, false},
                {"o_swa", saved2.data() + off.o[2], saved.data() + off.o[2], nq, false},
                {"lse_cmp", saved2.data() + off.lse[0], saved.data() + off.lse[0], nq / d, false},
                {"lse_slc", saved2.data() + off.lse[1], saved.data() + off.lse[1], nq / d, false},
                {"lse_swa", saved2.data() + off.lse[2], saved.data() + off.lse[2], nq / d, false},
                {"gate)", saved2.data() + off.gate, saved.data() + off.gate, ng, false},
                {"dq", dq2.data(), dq.data(), nq, true},
                {"dk", dk2.data(), dk.data(), nk, true},
                {"dv", dv2.data(), dv.data(), nk, true},
                {"dgate_logits", dgl2.data(), dgl.data(), ng, true}};
    for (auto &x : outs) {
        const double e = rel(x.got, x.want, x.n);
        printf(" %s %.2e", x.name, e);
        if (x.bound) bad += !(e <= bound); // a NaN (an element never written) fails too
    }
    // The pieces cuda_nsa_select.cu computes in the CPU's arithmetic (so that the selection is
    // the CPU's): elements whose bits differ from the CPU's (reported, not bounded: the GPU's
    // exp / log rounded from double are not glibc's expf / logf in every last bit).
    const struct {
        const char *name;
        size_t at, n;
    } exact[] = {{"kbar", off.kbar, off.vbar - off.kbar}, {"vbar", off.vbar, off.o[0] - off.vbar},
                 {"lse_cmp", off.lse[0], nq / d}, {"gate", off.gate, ng}};
    printf("; bits differ:");
    for (auto &x : exact) {
        size_t n = 0;
        for (size_t i = 0; i < x.n; i++) n += memcmp(&saved[x.at + i], &saved2[x.at + i], sizeof(float)) != 0;
        printf(" %s %zu/%zu", x.name, n, x.n);
    }
    printf(bad ? "  FAIL (bound %g)\n" : "  ok (bound %g)\n", bound);
    return bad ? 1 : 0;
}
