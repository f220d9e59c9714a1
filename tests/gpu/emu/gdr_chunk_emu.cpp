// The chunked GDR kernels under tests/gpu/emu/emu.h against the fp32 CPU twin: relative errors
// (norm-based, as test_cuda_ops reports them) of the outputs and all gradients; then again with
// the forward keeping its chunk quantities in `saved` for the backward, which must give the
// same bits as computing them again. Both forms of the backward's last step (HYLA_GDR_GRADS2:
// 0 one kernel, 1 two), each with and without `saved`; the two forms' bits are compared.
// Arguments: B L H dk dv states (bit 0: an initial state, bit 1: a final-state gradient).
#include "emu.h"
#include "chunk.h" // kernels/cuda/cuda_gdr_chunk.cuh rewritten (run.sh)
extern "C" {
void cpu_f32_gdr_chunk_fwd(float *, float *, const float *, const float *, const float *, const float *, const float *, const float *, float, int, int, int, int, int, float *);
void cpu_f32_gdr_chunk_bwd(float *, float *, float *, float *, float *, float *, const float *, const float *, const float *, const float *, const float *, const float *, const float *, const float *, float, int, int, int, int, int, const float *);
}
void cuda_gdr_chunk_fwd_bf16(float *, float *, const float *, const float *, const float *, const float *, const float *, const float *, float, int, int, int, int, int, float *);
void cuda_gdr_chunk_bwd_bf16(float *, float *, float *, float *, float *, float *, const float *, const float *, const float *, const float *, const float *, const float *, const float *, const float *, float, int, int, int, int, int, const float *);
size_t cuda_gdr_chunk_saved_floats_bf16(int, int, int, int, int);
static unsigned long long st = 1;
static float rnd(float lo, float hi) { st = st * 6364136223846793005ULL + 1442695040888963407ULL; return lo + (hi - lo) * ((st >> 40) / 16777216.0f); }
static std::vector<float> rv(size_t n, float lo, float hi) { std::vector<float> v(n); for (auto &x : v) x = rnd(lo, hi); return v; }
static double rel(const std::vector<float> &a, const std::vector<float> &b) { double n = 0, d = 0; for (size_t i = 0; i < a.size(); i++) n += (double)(a[i] - b[i]) * (a[i] - b[i]), d += (double)b[i] * b[i]; return sqrt(n / d); }
int main(int argc, char **argv) {
    int B = atoi(argv[1]), L = atoi(argv[2]), H = atoi(argv[3]), dk = atoi(argv[4]), dv = atoi(argv[5]), ws = atoi(argv[6]);
    size_t nq = (size_t)B * L * H * dk, nv = (size_t)B * L * H * dv, ng = (size_t)B * L * H, ns = (size_t)B * H * dk * dv;
    auto q = rv(nq, -1, 1), k = rv(nq, -1, 1), v = rv(nv, -1, 1);
    for (size_t r = 0; r < ng; r++) { double a = 0, b = 0; for (int i = 0; i < dk; i++) a += q[r*dk+i]*q[r*dk+i], b += k[r*dk+i]*k[r*dk+i]; for (int i = 0; i < dk; i++) q[r*dk+i] /= sqrt(a), k[r*dk+i] /= sqrt(b); }
    auto beta = rv(ng, 0.1f, 0.9f), g = rv(ng, -0.5f, -0.01f), S0 = rv(ns, -0.5f, 0.5f), dO = rv(nv, -1, 1), dS = rv(ns, -1, 1);
    const float *s0 = (ws & 1) ? S0.data() : nullptr, *ds = (ws & 2) ? dS.data() : nullptr;
    float scale = 1 / sqrtf(dk);
    std::vector<std::vector<float>> ref(8), got(8);
    size_t sizes[8] = {nv, ns, nq, nq, nv, ng, ng, ns};
    for (int i = 0; i < 8; i++) ref[i].assign(sizes[i], 0), got[i].assign(sizes[i], 0);
    cpu_f32_gdr_chunk_fwd(ref[0].data(), ref[1].data(), q.data(), k.data(), v.data(), beta.data(), g.data(), s0, scale, B, L, H, dk, dv, nullptr);
    cpu_f32_gdr_chunk_bwd(ref[2].data(), ref[3].data(), ref[4].data(), ref[5].data(), ref[6].data(), ref[7].data(), dO.data(), ds, q.data(), k.data(), v.data(), beta.data(), g.data(), s0, scale, B, L, H, dk, dv, nullptr);
    // the backward's outputs (got[2..7]) from the form `grads2`, with `saved` or without
    auto backward = [&](std::vector<std::vector<float>> &out, const char *grads2, const float *sv) {
        setenv("HYLA_GDR_GRADS2", grads2, 1);
        cuda_gdr_chunk_bwd_bf16(out[2].data(), out[3].data(), out[4].data(), out[5].data(), out[6].data(), out[7].data(), dO.data(), ds, q.data(), k.data(), v.data(), beta.data(), g.data(), s0, scale, B, L, H, dk, dv, sv);
    };
    cuda_gdr_chunk_fwd_bf16(got[0].data(), got[1].data(), q.data(), k.data(), v.data(), beta.data(), g.data(), s0, scale, B, L, H, dk, dv, nullptr);
    backward(got, "0", nullptr);
    // the same with `saved` (NaN-filled first: a piece the forward leaves unwritten shows)
    std::vector<float> saved(cuda_gdr_chunk_saved_floats_bf16(B, L, H, dk, dv), NAN);
    std::vector<std::vector<float>> kept(8), got2, kept2;
    for (int i = 0; i < 8; i++) kept[i].assign(sizes[i], 0);
    cuda_gdr_chunk_fwd_bf16(kept[0].data(), kept[1].data(), q.data(), k.data(), v.data(), beta.data(), g.data(), s0, scale, B, L, H, dk, dv, saved.data());
    backward(kept, "0", saved.data());
    // the two-kernel form of the last step (NaN-filled outputs: an element left unwritten shows)
    got2 = got, kept2 = kept;
    for (int i = 2; i < 8; i++) got2[i].assign(sizes[i], NAN), kept2[i].assign(sizes[i], NAN);
    backward(got2, "1", nullptr);
    backward(kept2, "1", saved.data());
    unsetenv("HYLA_GDR_GRADS2");
    const char *names[8] = {"o", "final", "dq", "dk", "dv", "dbeta", "dg", "dS0"};
    int bad = 0; /* the GPU test's bound for bf16 operands: 1e-2 relative (a NaN fails too) */
    auto check = [&](const char *form, const std::vector<std::vector<float>> &a, const std::vector<std::vector<float>> &ak) {
        printf("B=%d L=%d H=%d dk=%d dv=%d states=%d %s:", B, L, H, dk, dv, ws, form);
        const int bad0 = bad;
        for (int i = 0; i < 8; i++) {
            const double e = rel(a[i], ref[i]);
            printf(" %s %.2e", names[i], e);
            bad += !(e <= 1e-2);
            if (memcmp(a[i].data(), ak[i].data(), sizes[i] * sizeof(float))) printf(" (%s differs with saved)", names[i]), bad++;
        }
        printf(bad > bad0 ? "  FAIL (bound 1e-2; saved: the same bits)\n" : "  ok (bound 1e-2; saved: the same bits)\n");
    };
    check("grads2=0", got, kept);
    check("grads2=1", got2, kept2);
    // the two forms: the same bits, else the largest relative difference per output
    printf("  grads2=1 against grads2=0:");
    bool same = true;
    for (int i = 2; i < 8; i++) {
        if (!memcmp(got2[i].data(), got[i].data(), sizes[i] * sizeof(float))) continue;
        double m = 0;
        for (size_t j = 0; j < sizes[i]; j++) {
            const double x = got2[i][j], y = got[i][j];
            const double r = x == y ? 0 : fabs(x - y) / std::max(fabs(y), 1e-30);
            m = std::max(m, r == r ? r : INFINITY);
        }
        printf(" %s differs (max rel %.2e)", names[i], m), same = false;
    }
    printf(same ? " the same bits\n" : "\n");
    return bad ? 1 : 0;
}
