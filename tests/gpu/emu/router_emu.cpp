// The LTE router's CUDA kernels (kernels/cuda/cuda_lte_router.cu: the fused forward and backward
// kernels, and the per-tap form they fall back to) under tests/gpu/emu/emu.h against the CPU twin
// (kernels/cpu/op_lte_router.c), as test_cuda_ops' lte_router group calls both: score and acts,
// then dk, dv (written: they start as NaN) and the parameter gradient from each side's own acts.
// Relative error (norm-based, test_cuda_ops' rel_err_f32) within 1e-5 against the fp64 twin for
// every output, for the fused form and for the per-tap form (HYLA_ROUTER_TAPS=1, cuBLAS emulated
// below by plain loops), and against the fp32 twin (test_cuda_ops' check). The parameter gradient
// is computed from zero and bounded group by group against fp64 (each conv's weight and bias, the
// projection's), so that an error in a small group cannot hide in the norm of all (the fp32
// twin's own error is printed beside: a group of one cancelling sum, the projection bias, is
// ill-conditioned); accumulated onto random values it must be exactly those values plus it
// (dparams +=). Each form runs twice and must give the same bits.
// Arguments: B L H d p kernels dilations sms fused
//   kernels, dilations: comma lists (one per conv); sms: the SM count the planner sees (it sizes
//   the backward's segments: a small count gives blocks of several tiles); fused: 1 if the shape
//   must take the fused kernels both ways, "fwd" / "bwd" one way only, 0 neither; "plan": print the
//   fused kernels' plans for the shape and stop (no run; any L).
#include "emu.h"
#include "emu_check.h"
#include "cp_async_emu.h"
#include <string>
#define __grid_constant__

// What cuda_lte_router.cu takes from the CUDA runtime and backend_cuda.h beyond emu.h.
enum { cudaDevAttrMultiProcessorCount = 16 };
static int emu_sms = 2;
inline int cudaGetDevice(int *dev) { *dev = 0; return 0; }
inline int cudaDeviceGetAttribute(int *v, int, int) { *v = emu_sms; return 0; }
// Row-major batched C_j = alpha op(A_j) op(B_j) + beta C_j (backend_cuda.cu's contract), in fp32.
void cuda_gemm_batched(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                       long long stride_a, const float *b, int ldb, long long stride_b, float beta, float *c, int ldc,
                       long long stride_c, int batch) {
    for (int j = 0; j < batch; j++) {
        const float *A = a + j * stride_a, *Bm = b + j * stride_b;
        float *C = c + j * stride_c;
        for (int i = 0; i < m; i++)
            for (int col = 0; col < n; col++) {
                float s = 0;
                for (int p = 0; p < k; p++)
                    s += (trans_a ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]) *
                         (trans_b ? Bm[(size_t)col * ldb + p] : Bm[(size_t)p * ldb + col]);
                C[(size_t)i * ldc + col] = alpha * s + (beta == 0 ? 0 : beta * C[(size_t)i * ldc + col]);
            }
    }
}

// the rewritten kernels/cuda/cuda_lte_router*.cu (run_router.sh), one translation unit
#include "cuda_lte_router_taps.cpp"
#include "cuda_lte_router_fused.cpp"
#include "cuda_lte_router.cpp"

extern "C" {
void cpu_f32_lte_router_fwd(float *, float *, const float *, const float *, const float *,
                            const struct hyla_lte_router_shape *, int, int, float, uint64_t);
void cpu_f32_lte_router_bwd(float *, float *, float *, const float *, const float *, const float *, const float *,
                            const float *, const struct hyla_lte_router_shape *, int, int, float, uint64_t);
void cpu_f64_lte_router_fwd(double *, double *, const double *, const double *, const double *,
                            const struct hyla_lte_router_shape *, int, int, double, uint64_t);
void cpu_f64_lte_router_bwd(double *, double *, double *, const double *, const double *, const double *,
                            const double *, const double *, const struct hyla_lte_router_shape *, int, int, double,
                            uint64_t);
}

static int parse_list(const char *s, int *out) {
    int n = 0;
    for (const char *p = s; *p && n < HYLA_LTE_MAX_CONVS; n++) {
        out[n] = atoi(p);
        while (*p && *p != ',') p++;
        if (*p == ',') p++;
    }
    return n;
}

struct outputs {
    std::vector<float> score, acts, dk, dv, dparams; // dparams: the gradient alone (from zero)
    std::vector<float> accumulated;                  // the gradient added onto d0
};
// The parameter groups (each conv's weight and bias, the projection's): their gradients are
// bounded one by one, so that an error in a small group cannot hide in the norm of all.
struct group {
    char name[16];
    size_t at, n;
};
static std::vector<group> groups_of(const struct hyla_lte_router_shape *s) {
    const struct hyla_lte_router_offsets off = lte_router_offsets(s);
    std::vector<group> g;
    for (int l = 0; l < s->n_convs; l++) {
        group w{}, b{};
        snprintf(w.name, sizeof w.name, "w%d", l), snprintf(b.name, sizeof b.name, "b%d", l);
        w.at = off.conv_weight[l], w.n = off.conv_bias[l] - w.at;
        b.at = off.conv_bias[l], b.n = (l + 1 < s->n_convs ? off.conv_weight[l + 1] : off.proj_weight) - b.at;
        g.push_back(w), g.push_back(b);
    }
    group pw{}, pb{};
    snprintf(pw.name, sizeof pw.name, "proj_w"), snprintf(pb.name, sizeof pb.name, "proj_b");
    pw.at = off.proj_weight, pw.n = off.proj_bias - pw.at, pb.at = off.proj_bias, pb.n = off.total - pb.at;
    g.push_back(pw), g.push_back(pb);
    return g;
}
static std::vector<float> slice(const std::vector<float> &v, const group &g) {
    return std::vector<float>(v.begin() + g.at, v.begin() + g.at + g.n);
}
static int worst_bad = 0;
static double worst_err = 0;
// Prints each output's error against want; counts those above 1e-5 (a NaN too).
static void compare(const char *what, const outputs &got, const outputs &want, const std::vector<group> &groups,
                    bool bounded = true) {
    struct err {
        std::string name;
        double e;
    };
    std::vector<err> errs = {{"score", rel(got.score, want.score)},
                             {"acts", rel(got.acts, want.acts)},
                             {"dk", rel(got.dk, want.dk)},
                             {"dv", rel(got.dv, want.dv)},
                             {"dparams", rel(got.dparams, want.dparams)}};
    err worst{"", -1}; // the parameter groups': the worst one printed
    for (const group &g : groups) {
        const double e = rel(slice(got.dparams, g), slice(want.dparams, g));
        if (!(e <= worst.e)) worst = {std::string("(worst group ") + g.name + ")", e};
    }
    if (!groups.empty()) errs.push_back(worst);
    printf("  %-19s", what);
    int bad = 0;
    for (auto &x : errs) {
        printf(" %s %.2e", x.name.c_str(), x.e);
        if (!bounded) continue;
        bad += !(x.e <= 1e-5);
        if (!(x.e <= worst_err)) worst_err = x.e;
    }
    printf(bad ? "  FAIL\n" : bounded ? "\n" : "  (not bounded)\n");
    worst_bad += bad;
}

static std::vector<double> wide(const std::vector<float> &v) { return std::vector<double>(v.begin(), v.end()); }
static std::vector<float> narrow(const std::vector<double> &v) { return std::vector<float>(v.begin(), v.end()); }
// The fp64 twin's outputs (rounded to float) on the same inputs: the reference.
static outputs fp64_twin(const std::vector<float> &k, const std::vector<float> &v, const std::vector<float> &params,
                         const std::vector<float> &dscore, const struct hyla_lte_router_shape *shape, int B, int L,
                         float p, uint64_t key) {
    const std::vector<double> k8 = wide(k), v8 = wide(v), params8 = wide(params), dscore8 = wide(dscore);
    std::vector<double> score(dscore.size()), acts(lte_router_acts_size(shape, B, L)), dk(k.size()), dv(v.size());
    std::vector<double> dparams(params.size(), 0.0);
    cpu_f64_lte_router_fwd(score.data(), acts.data(), k8.data(), v8.data(), params8.data(), shape, B, L, p, key);
    cpu_f64_lte_router_bwd(dk.data(), dv.data(), dparams.data(), dscore8.data(), k8.data(), v8.data(), params8.data(),
                           acts.data(), shape, B, L, p, key);
    return outputs{narrow(score), narrow(acts), narrow(dk), narrow(dv), narrow(dparams), {}};
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: %s B L H d p kernels dilations sms fused\n", argv[0]);
        return 2;
    }
    const int B = atoi(argv[1]), L = atoi(argv[2]), H = atoi(argv[3]), d = atoi(argv[4]);
    const float p = (float)atof(argv[5]);
    struct hyla_lte_router_shape shape = {};
    shape.heads = H, shape.head_dim = d;
    shape.n_convs = parse_list(argv[6], shape.kernel);
    if (parse_list(argv[7], shape.dilation) != shape.n_convs) {
        fprintf(stderr, "kernels and dilations differ in length\n");
        return 2;
    }
    emu_sms = atoi(argv[8]);
    const bool want_fwd = !strcmp(argv[9], "1") || !strcmp(argv[9], "fwd");
    const bool want_bwd = !strcmp(argv[9], "1") || !strcmp(argv[9], "bwd");
    const uint64_t key = 12345;
    printf("B=%d L=%d H=%d d=%d p=%.1f kernels %s dilations %s:", B, L, H, d, p, argv[6], argv[7]);
    const router_dims r = dims_of(&shape, B, L, p, key);
    fused::fwd_plan fp;
    fused::bwd_plan bp;
    const bool fits_fwd = fused::plan_forward(&fp, r, emu_sms), fits_bwd = fused::plan_backward(&bp, r, emu_sms);
    if (fits_fwd) {
        printf(" fused forward T %d x %d tiles, tm", fp.T, fp.tiles);
        for (int l = 0; l < r.n; l++) printf(" %d", fp.prod.p[l].tm);
        printf(", %zu B shared;", fused::fwd_smem(fp));
    } else printf(" forward per tap;");
    if (fits_bwd) {
        printf(" fused backward T %d x %d tiles (%d per block, %d segments), tm/passes", bp.T, bp.tiles, bp.tps, bp.segs);
        for (int l = 0; l < r.n; l++) printf(" %d/%d", bp.prod.p[l].tm, bp.prod.p[l].passes);
        printf(", %zu B shared", fused::bwd_smem(bp));
    } else printf(" backward per tap");
    printf("\n");
    if (strcmp(argv[9], "plan") == 0) return 0;
    int bad = (fits_fwd != want_fwd) + (fits_bwd != want_bwd);
    if (bad) printf("  FAIL: expected the fused kernels %s\n", argv[9]);

    const size_t nkv = (size_t)B * L * H * d, np = lte_router_param_count(&shape);
    const size_t na = lte_router_acts_size(&shape, B, L), ns = (size_t)B * L * H;
    const auto k = rv(nkv, -1, 1), v = rv(nkv, -1, 1), params = rv(np, -0.3f, 0.3f), dscore = rv(ns, -1, 1);
    const auto d0 = rv(np, -1, 1);
    const std::vector<group> groups = groups_of(&shape);
    // the CPU twins, fp32 and fp64
    outputs cpu{std::vector<float>(ns), std::vector<float>(na), std::vector<float>(nkv), std::vector<float>(nkv),
                std::vector<float>(np, 0.0f), {}};
    cpu_f32_lte_router_fwd(cpu.score.data(), cpu.acts.data(), k.data(), v.data(), params.data(), &shape, B, L, p, key);
    cpu_f32_lte_router_bwd(cpu.dk.data(), cpu.dv.data(), cpu.dparams.data(), dscore.data(), k.data(), v.data(),
                           params.data(), cpu.acts.data(), &shape, B, L, p, key);
    const outputs exact = fp64_twin(k, v, params, dscore, &shape, B, L, p, key);

    // forward, backward from zero, backward onto d0
    auto run = [&](outputs &o) {
        o.score.assign(ns, NAN), o.acts.assign(na, NAN), o.dk.assign(nkv, NAN), o.dv.assign(nkv, NAN);
        o.dparams.assign(np, 0.0f), o.accumulated = d0;
        cuda_lte_router_fwd(o.score.data(), o.acts.data(), k.data(), v.data(), params.data(), &shape, B, L, p, key);
        cuda_lte_router_bwd(o.dk.data(), o.dv.data(), o.dparams.data(), dscore.data(), k.data(), v.data(),
                            params.data(), o.acts.data(), &shape, B, L, p, key);
        std::vector<float> dk2(nkv), dv2(nkv);
        cuda_lte_router_bwd(dk2.data(), dv2.data(), o.accumulated.data(), dscore.data(), k.data(), v.data(),
                            params.data(), o.acts.data(), &shape, B, L, p, key);
    };
    auto bits = [](const std::vector<float> &a, const std::vector<float> &b) {
        return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
    };
    // the same bits from a second run, and accumulation = d0 + the gradient, rounded once
    auto reproducible = [&](const char *what, const outputs &o, const outputs &again) {
        std::vector<float> sum(np);
        for (size_t i = 0; i < np; i++) sum[i] = d0[i] + o.dparams[i];
        const bool same = bits(again.score, o.score) && bits(again.acts, o.acts) && bits(again.dk, o.dk) &&
                          bits(again.dv, o.dv) && bits(again.dparams, o.dparams);
        if (!same) printf("  FAIL: %s: a second run differs in its bits\n", what), bad++;
        if (!bits(o.accumulated, sum)) printf("  FAIL: %s: dparams += gradient is not d0 + gradient\n", what), bad++;
    };
    outputs def, taps, again;
    setenv("HYLA_ROUTER_TAPS", "0", 1); // the fused kernels where the shape fits
    run(def);
    run(again);
    compare("CPU fp32 vs fp64", cpu, exact, groups, false);
    compare("fused vs fp64", def, exact, groups);
    compare("fused vs CPU fp32", def, cpu, {});
    reproducible("fused", def, again);
    setenv("HYLA_ROUTER_TAPS", "1", 1);
    run(taps);
    run(again);
    unsetenv("HYLA_ROUTER_TAPS");
    compare("per-tap vs fp64", taps, exact, groups);
    compare("per-tap vs CPU fp32", taps, cpu, {});
    reproducible("per-tap", taps, again);
    bad += worst_bad;
    printf(bad ? "  FAIL (bound 1e-5)\n" : "  ok (bound 1e-5; worst %.2e)\n", worst_err);
    return bad ? 1 : 0;
}
