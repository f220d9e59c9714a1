// The tiled attention kernels (kernels/cuda/cuda_flash_attention.cu and, in bf16 mode,
// cuda_flash_attention_bf16.cu) under tests/gpu/emu/emu.h against the fp32 CPU twin
// (kernels/cpu/op_attention.c), as test_cuda_ops' attention tests call both: o, lse, then dq, dk,
// dv from each side's own o and lse (the GPU's delta[row] = <dO, O> from its o). Relative error
// (norm-based, test_cuda_ops' rel_err_f32) within 1e-2 in bf16 mode (its bf16 bound), and o must
// differ from fp32 by more than 1e-6 (the bf16 kernels really ran); EMU_ATTN_FP32=1 runs the
// fp32 tiles instead, bound 1e-5.
// Arguments: B L Hq Hkv d wl [density]: wl < 0 causal; density > 0 (with wl >= 0) selects each
// older key of each (batch, kv head) with that probability (LTE: segment B). EMU_ATTN_DUMP=FILE
// writes o, lse, dq, dk, dv as computed (raw floats) there. HYLA_HOLD_COPIES=1: q, k, v are held
// as the model holds them (hold_bf16_copy, cuda_bf16_twins.cu: the kernels read those bf16
// copies rather than rounding q, k, v themselves; run_attn.sh requires the same bits), and o is
// held after the forward: its copy must be o rounded, bit for bit; with HYLA_COPIES_AT_SOURCE=1
// the forward kernel writes it (expect_bf16_copy), and must have.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "emu.h"
#include "cuda_bf16_convert.cuh" // (the emulation's rewritten copy)
#include "cuda_flash_attention.h"
#include "kernels/backend.h"
#include "emu_check.h"

bool emu_attn_bf16 = true; // cuda_matmul_bf16() in the emulated cuda_flash_attention.cu (run_attn.sh)

extern "C" void cuda_register_bf16_twins(struct hyla_backend *t);
extern "C" unsigned long hyla_cuda_copies_at_source(void);
extern "C" {
void cpu_f32_attention_fwd(float *, float *, const float *, const float *, const float *, const uint8_t *, int, int,
                           int, int, int, int, float);
void cpu_f32_attention_bwd(float *, float *, float *, const float *, const float *, const float *, const float *,
                           const float *, const float *, const uint8_t *, int, int, int, int, int, int, float);
}


int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s B L Hq Hkv d wl [selected density]\n", argv[0]);
        return 2;
    }
    const int B = atoi(argv[1]), L = atoi(argv[2]), Hq = atoi(argv[3]), Hkv = atoi(argv[4]), d = atoi(argv[5]);
    const int wl = atoi(argv[6]);
    const double density = argc == 8 ? atof(argv[7]) : 0;
    const char *fp32 = getenv("EMU_ATTN_FP32");
    emu_attn_bf16 = !(fp32 && atoi(fp32));
    const double bound = emu_attn_bf16 ? 1e-2 : 1e-5;
    const float scale = 1.0f / sqrtf((float)d);
    const size_t nq = (size_t)B * L * Hq * d, nk = (size_t)B * L * Hkv * d, rows = (size_t)B * L * Hq;
    auto q = rv(nq), k = rv(nk), v = rv(nk), dO = rv(nq);
    std::vector<uint8_t> sel((size_t)B * L * Hkv);
    for (auto &s : sel) s = rnd(0, 1) < density;
    const uint8_t *S = density > 0 ? sel.data() : nullptr;
    std::vector<float> o(nq), lse(rows), dq(nq), dk(nk), dv(nk);
    // what the kernels must write: an element left out stays NaN and fails the bound
    std::vector<float> o2(nq, NAN), lse2(rows, NAN), dq2(nq, NAN), dk2(nk, NAN), dv2(nk, NAN), delta(rows);
    cpu_f32_attention_fwd(o.data(), lse.data(), q.data(), k.data(), v.data(), S, B, L, Hq, Hkv, d, wl, scale);
    cpu_f32_attention_bwd(dq.data(), dk.data(), dv.data(), dO.data(), q.data(), k.data(), v.data(), o.data(),
                          lse.data(), S, B, L, Hq, Hkv, d, wl, scale);
    static struct hyla_backend twins; // only its bf16 twin entries
    cuda_register_bf16_twins(&twins);
    for (const std::vector<float> *x : {&q, &k, &v}) twins.hold_bf16_copy(x->data(), x->size()); // (if switched on)
    const auto t0 = std::chrono::steady_clock::now();
    const unsigned long written = hyla_cuda_copies_at_source();
    twins.expect_bf16_copy(o2.data(), nq); // (if switched on: HYLA_COPIES_AT_SOURCE)
    flash_attention_fwd(o2.data(), lse2.data(), q.data(), k.data(), v.data(), S, B, L, Hq, Hkv, d, wl, scale);
    twins.hold_bf16_copy(o2.data(), nq);
    const bool o_written = hyla_cuda_copies_at_source() > written;
    for (size_t r = 0; r < rows; r++) { // cuda_attention.cu's attention_delta_kernel, from the GPU's o
        float s = 0;
        for (int c = 0; c < d; c++) s += dO[r * d + c] * o2[r * d + c];
        delta[r] = s;
    }
    flash_attention_bwd(dq2.data(), dk2.data(), dv2.data(), dO.data(), q.data(), k.data(), v.data(), lse2.data(),
                        delta.data(), S, B, L, Hq, Hkv, d, wl, scale);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const std::vector<float> *x : {&q, &k, &v}) twins.forget_bf16_twin(x->data());
    const __nv_bfloat16 *o_copy = cuda_bf16_twin_of(o2.data(), nq);
    bool o_copy_exact = true;
    for (size_t i = 0; o_copy && i < nq; i++) o_copy_exact = o_copy_exact && o_copy[i].u == __float2bfloat16(o2[i]).u;
    twins.forget_bf16_twin(o2.data());
    const char *src = getenv("HYLA_COPIES_AT_SOURCE");
    const bool want_written = emu_attn_bf16 && o_copy && src && atoi(src) == 1;
    printf("%s B=%d L=%d Hq=%d Hkv=%d d=%d wl=%d sel=%.2f:", emu_attn_bf16 ? "bf16" : "fp32", B, L, Hq, Hkv, d, wl,
           density);
    const struct {
        const char *name;
        const std::vector<float> &got, &want;
    } outs[] = {{"o", o2, o}, {"lse", lse2, lse}, {"dq", dq2, dq}, {"dk", dk2, dk}, {"dv", dv2, dv}};
    int bad = 0;
    double worst = 0;
    for (auto &x : outs) {
        const double e = rel(x.got, x.want);
        printf(" %s %.2e", x.name, e);
        bad += !(e <= bound); // NaN fails too
        if (!(e <= worst)) worst = e; // NaN shows
    }
    if (!o_copy_exact || o_written != want_written) {
        printf(" [o's held copy: %s]", !o_copy_exact ? "not o rounded" : o_written ? "written at the source unasked"
                                                                                    : "not written at the source");
        bad++;
    }
    const double e_o = rel(o2, o);
    if (emu_attn_bf16 && e_o <= 1e-6) {
        printf(" [o equals fp32: the bf16 kernels did not run]");
        bad++;
    }
    // a held copy does not outlive its allocation (the backend's free forgets it): an array
    // allocated later at the same address must not read it
    twins.hold_bf16_copy(q.data(), q.size());
    const bool held = cuda_bf16_twin_of(q.data(), q.size()) != nullptr;
    cuda_forget_bf16_twins_at(q.data());
    if (held && cuda_bf16_twin_of(q.data(), q.size())) {
        printf(" [a freed allocation's held copy is still found]");
        bad++;
    }
    printf("  max %.2e %s (bound %.0e) %.1fs\n", worst, bad ? "FAIL" : "ok", bound, secs);
    if (const char *dump = getenv("EMU_ATTN_DUMP")) { // the outputs' bits, to compare two forms (cmp)
        FILE *f = fopen(dump, "wb");
        for (auto &x : outs) fwrite(x.got.data(), sizeof(float), x.got.size(), f);
        fclose(f);
    }
    return bad ? 1 : 0;
}
