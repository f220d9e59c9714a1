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
// Then bf16 mode with HYLA_ROUTER_MMA=1: the fused kernels' products on the tensor cores
// (mma.sync and ldmatrix through mma_emu.h, fp32 sums: the convs' and the input gradients'
// operands rounded to tf32, the weight gradients' to bf16), which must fit wherever the fused
// kernels do. Every output and parameter group within 5e-3 of the fp64 twin, a group of fewer
// than 16 values within twice the error of bf16_twin where that is more; the outputs likewise
// against the fp32 twin; every output and group within 2e-3 of bf16_twin (the fp64 twin with the
// form's operands, rounded as it rounds them; a layout or index error shows far above that:
// EMU_CXXFLAGS=-DEMU_TF32_AS_BF16, the tf32 roundings keeping bf16's 7 fraction bits, must fail);
// the activations and dk different from the fp32 fused kernels' by more than 1.5e-6 (the
// tensor-core form really ran); the same bits twice; dparams += exact. EMU_ROUND_STUDY=1 (or a comma list of bf16_twin masks) prints
// instead the fp64 twin's error with each product's operands rounded to bf16 alone, and stops.
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

bool emu_router_bf16 = false; // cuda_matmul_bf16() in the emulated cuda_lte_router.cu (run_router.sh)

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
#include "cuda_lte_router_plan.cpp"
#include "cuda_lte_router_fused.cpp"
#include "cuda_lte_router_fixed.cpp"
#include "cuda_lte_router_fixed_bwd.cpp"
#include "cuda_lte_router.cpp"

extern "C" {
void cpu_f32_lte_router_fwd(float *, float *, const float *, const float *, const float *,
                            const struct hyla_lte_router_shape *, int, int, float, const uint64_t *);
void cpu_f32_lte_router_bwd(float *, float *, float *, const float *, const float *, const float *, const float *,
                            const float *, const struct hyla_lte_router_shape *, int, int, float, const uint64_t *);
void cpu_f64_lte_router_fwd(double *, double *, const double *, const double *, const double *,
                            const struct hyla_lte_router_shape *, int, int, double, const uint64_t *);
void cpu_f64_lte_router_bwd(double *, double *, double *, const double *, const double *, const double *,
                            const double *, const double *, const struct hyla_lte_router_shape *, int, int, double,
                            const uint64_t *);
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
    bool rows_same = true;                           // B calls of one row gave the same score, acts, dk, dv
    bool dkv_added = true;                           // dk, dv onto a base: the base plus dk, dv from zero
    std::vector<std::vector<float>> row_dparams;     // those calls' gradients (from zero), row by row
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
// bf16 mode's bounds: against the exact twins MMA_BOUND for every output and parameter group;
// a group of fewer than TINY_GROUP values (a projection bias of one value a head: one sum of
// terms of both signs, ill-conditioned; a conv bias of 2 channels) may have twice the error that
// the form's operands alone give (bf16_twin, below) where that is more. Against that twin itself
// SAME_OPS_BOUND (not bit-exact: an operand computed in fp32 on one side and fp64 on the other
// can round to neighbouring tf32 or bf16 values, and the difference spreads to the layers after
// it: up to 9.5e-4 measured, at d 100 in a weight gradient's group; a fragment layout or index
// error gives errors of the order of the values, bf16 roundings in place of tf32 ~1e-2).
static const double MMA_BOUND = 5e-3, SAME_OPS_BOUND = 2e-3;
static const size_t TINY_GROUP = 16;
static int worst_bad = 0;
static double worst_err = 0, worst_bf16 = 0, worst_same = 0;
struct err {
    std::string name;
    double e;
};
// The relative error of each output, then of each parameter group.
static std::vector<err> errors(const outputs &got, const outputs &want, const std::vector<group> &groups) {
    std::vector<err> errs = {{"score", rel(got.score, want.score)},
                             {"acts", rel(got.acts, want.acts)},
                             {"dk", rel(got.dk, want.dk)},
                             {"dv", rel(got.dv, want.dv)},
                             {"dparams", rel(got.dparams, want.dparams)}};
    for (const group &g : groups) errs.push_back({g.name, rel(slice(got.dparams, g), slice(want.dparams, g))});
    return errs;
}
// Prints each output's error against want and the worst parameter group's (relative to its
// bound); counts those above the bound (a NaN too); bound 0: not bounded. With `inherent` (the
// same errors of bf16_twin), a tiny group's bound is at least twice its inherent error. The
// worst error seen goes to *worst_seen.
static void compare(const char *what, const outputs &got, const outputs &want, const std::vector<group> &groups,
                    double bound = 1e-5, double *worst_seen = &worst_err, const std::vector<err> *inherent = nullptr) {
    const std::vector<err> errs = errors(got, want, groups);
    printf("  %-22s", what);
    int bad = 0, worst = -1;
    double worst_ratio = -1;
    for (size_t i = 0; i < errs.size(); i++) {
        const bool tiny = inherent && i >= 5 && groups[i - 5].n < TINY_GROUP;
        const double b = tiny ? std::max(bound, 2 * (*inherent)[i].e) : bound, e = errs[i].e;
        if (i < 5) printf(" %s %.2e", errs[i].name.c_str(), e);
        else if (!(e / b <= worst_ratio)) worst_ratio = e / b, worst = (int)i; // NaN shows
        if (bound <= 0) continue;
        bad += !(e <= b);
        if (!(e <= *worst_seen)) *worst_seen = e;
    }
    if (worst >= 0) printf(" (worst group %s) %.2e", errs[worst].name.c_str(), errs[worst].e);
    if (inherent && bound > 0) { // the bounds that exceed `bound`
        for (size_t i = 5; i < errs.size(); i++)
            if (groups[i - 5].n < TINY_GROUP && 2 * (*inherent)[i].e > bound)
                printf(" [%s (%zu values) bound %.1e]", errs[i].name.c_str(), groups[i - 5].n, 2 * (*inherent)[i].e);
    }
    printf(bad ? "  FAIL\n" : bound > 0 ? "\n" : "  (not bounded)\n");
    worst_bad += bad;
}

static bool bits_equal(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }
static std::vector<double> wide(const std::vector<float> &v) { return std::vector<double>(v.begin(), v.end()); }
static std::vector<float> narrow(const std::vector<double> &v) { return std::vector<float>(v.begin(), v.end()); }
// The fp64 twin's outputs (rounded to float) on the same inputs: the reference.
static outputs fp64_twin(const std::vector<float> &k, const std::vector<float> &v, const std::vector<float> &params,
                         const std::vector<float> &dscore, const struct hyla_lte_router_shape *shape, int B, int L,
                         float p, const uint64_t *key) {
    const std::vector<double> k8 = wide(k), v8 = wide(v), params8 = wide(params), dscore8 = wide(dscore);
    std::vector<double> score(dscore.size()), acts(lte_router_acts_size(shape, B, L)), dk(k.size()), dv(v.size());
    std::vector<double> dparams(params.size(), 0.0);
    cpu_f64_lte_router_fwd(score.data(), acts.data(), k8.data(), v8.data(), params8.data(), shape, B, L, p, key);
    cpu_f64_lte_router_bwd(dk.data(), dv.data(), dparams.data(), dscore8.data(), k8.data(), v8.data(), params8.data(),
                           acts.data(), shape, B, L, p, key);
    return outputs{narrow(score), narrow(acts), narrow(dk), narrow(dv), narrow(dparams), {}};
}

// The fp64 twin's arithmetic with the operands of the products that the tensor-core form runs
// rounded to bf16 as it rounds them: the forward convs' inputs and weights (round_fwd), the
// backward's da, weights and conv inputs (round_bwd: the input and weight gradients); the
// projection and the bias gradients unrounded (fp32 on the CUDA cores). What the tensor-core form computes, up to
// fp32 sums and the rare operand that rounds the other way: a layout or index error in it shows
// here far above the bf16 rounding that the bound against the exact twin has to allow.
// mask: which operands are rounded to bf16 (R_FWD_X .. R_DW_X), or to tf32 as the form rounds
// them (R_FWD_TF32: the forward's inputs and weights, R_DX_TF32: the input gradient's da and
// weights).
enum { R_FWD_X = 1, R_FWD_W = 2, R_DX_DA = 4, R_DX_W = 8, R_DW_DA = 16, R_DW_X = 32, R_FWD_TF32 = 64, R_DX_TF32 = 128 };
static double bf16_of(double x) { return hyla_mma::emu_bf16_value(hyla_mma::emu_bf16_bits((float)x)); }
static double tf32_of(double x) { // cvt.rna.tf32.f32 (finite x), written out apart from mma_emu.h's
    const float f = (float)x;
    uint32_t b;
    memcpy(&b, &f, 4);
    b = (b + 0x1000u) & 0xffffe000u;
    float r;
    memcpy(&r, &b, 4);
    return r;
}
static outputs bf16_twin(const std::vector<float> &k, const std::vector<float> &v, const std::vector<float> &params,
                         const std::vector<float> &dscore, const struct hyla_lte_router_shape *shape, int B, int L,
                         float p, const uint64_t *key, unsigned mask) {
    const router_dims r = dims_of(shape, B, L, p, key);
    const int n = r.n, H = r.H, d = r.d;
    auto rd = [&](unsigned bit, double x) { return mask & bit ? bf16_of(x) : x; };
    auto sg = [](double x) { return 1 / (1 + exp(-x)); };
    auto sl = [&](double x) { return x * sg(x); };
    auto slg = [&](double x) { return sg(x) * (1 + x * (1 - sg(x))); };
    auto keep = [&](int l, int b, size_t e) { // e: the index within row b (drop_index)
        return p > 0 ? (hyla_rng_uniform(r.key[b][l], e) >= p ? 1.0 / (1.0 - p) : 0.0) : 1.0;
    };
    auto W = [&](int l, int h, int co, int ci, int i) {
        return (double)params[r.w[l] + (((size_t)h * r.c[l + 1] + co) * r.c[l] + ci) * r.kernel[l] + i];
    };
    outputs o{std::vector<float>((size_t)B * L * H), std::vector<float>(lte_router_acts_size(shape, B, L)),
              std::vector<float>(k.size()), std::vector<float>(v.size()), std::vector<float>(params.size(), 0.0f), {}};
    std::vector<double> dp(params.size(), 0.0);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            auto pos = [&](int t) { return ((size_t)b * L + t) * H + h; };
            // in[l]: conv l's dropped-out input; a[l]: a_l (l = 1 .. n), as [t][channel]
            std::vector<std::vector<double>> in(n), a(n + 1);
            for (int l = 0; l < n; l++) {
                const int c = r.c[l], co_n = r.c[l + 1], lr = r.dilation[l] * ((r.kernel[l] - 1) / 2);
                in[l].assign((size_t)L * c, 0.0);
                for (int t = 0; t < L; t++)
                    for (int ci = 0; ci < c; ci++) {
                        const double u = l == 0 ? (ci < d ? k[pos(t) * d + ci] : v[pos(t) * d + ci - d])
                                                : sl(a[l][(size_t)t * c + ci]);
                        in[l][(size_t)t * c + ci] = u * keep(l, b, drop_index(r, l, t, h, ci));
                    }
                a[l + 1].assign((size_t)L * co_n, 0.0);
                for (int t = 0; t < L; t++)
                    for (int co = 0; co < co_n; co++) {
                        double s = params[r.b[l] + (size_t)h * co_n + co];
                        for (int i = 0; i < r.kernel[l]; i++) {
                            const int ts = t + r.dilation[l] * i - lr;
                            if (ts < 0 || ts >= L) continue;
                            for (int ci = 0; ci < c; ci++) {
                                const double w = W(l, h, co, ci, i), x = in[l][(size_t)ts * c + ci];
                                if (mask & R_FWD_TF32) s += tf32_of(w) * tf32_of(x);
                                else s += rd(R_FWD_W, w) * rd(R_FWD_X, x);
                            }
                        }
                        a[l + 1][(size_t)t * co_n + co] = s;
                        o.acts[act_of(r, l + 1, b, t, h) + co] = (float)s;
                    }
            }
            // the projection and its gradient; then da_n
            const int cn = r.c[n];
            std::vector<double> da((size_t)L * cn);
            for (int t = 0; t < L; t++) {
                double z = params[r.pb + h];
                for (int j = 0; j < cn; j++) z += params[r.pw + (size_t)h * cn + j] * sl(a[n][(size_t)t * cn + j]);
                o.acts[act_of(r, n + 1, b, t, h)] = (float)z;
                o.score[pos(t)] = (float)(sg(z) - 0.5);
                const double dz = dscore[pos(t)] * sg(z) * (1 - sg(z));
                dp[r.pb + h] += dz;
                for (int j = 0; j < cn; j++) {
                    const double x = a[n][(size_t)t * cn + j];
                    dp[r.pw + (size_t)h * cn + j] += dz * sl(x);
                    da[(size_t)t * cn + j] = dz * params[r.pw + (size_t)h * cn + j] * slg(x);
                }
            }
            for (int l = n - 1; l >= 0; l--) {
                const int c = r.c[l], co_n = r.c[l + 1], lr = r.dilation[l] * ((r.kernel[l] - 1) / 2);
                std::vector<double> g((size_t)L * c, 0.0);
                for (int t = 0; t < L; t++)
                    for (int co = 0; co < co_n; co++) {
                        const double x = da[(size_t)t * co_n + co];
                        dp[r.b[l] + (size_t)h * co_n + co] += x;
                        for (int i = 0; i < r.kernel[l]; i++) {
                            const int ts = t + r.dilation[l] * i - lr;
                            if (ts < 0 || ts >= L) continue;
                            for (int ci = 0; ci < c; ci++) {
                                dp[r.w[l] + (((size_t)h * co_n + co) * c + ci) * r.kernel[l] + i] +=
                                    rd(R_DW_DA, x) * rd(R_DW_X, in[l][(size_t)ts * c + ci]);
                                const double w = W(l, h, co, ci, i);
                                g[(size_t)ts * c + ci] += mask & R_DX_TF32 ? tf32_of(w) * tf32_of(x)
                                                                           : rd(R_DX_W, w) * rd(R_DX_DA, x);
                            }
                        }
                    }
                std::vector<double> next((size_t)L * c);
                for (int t = 0; t < L; t++)
                    for (int ci = 0; ci < c; ci++) {
                        const double x = g[(size_t)t * c + ci] * keep(l, b, drop_index(r, l, t, h, ci));
                        if (l > 0) next[(size_t)t * c + ci] = x * slg(a[l][(size_t)t * c + ci]);
                        else if (ci < d) o.dk[pos(t) * d + ci] = (float)x;
                        else o.dv[pos(t) * d + ci - d] = (float)x;
                    }
                da.swap(next);
            }
        }
    o.dparams = narrow(dp);
    return o;
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
    if (B > ROUTER_ROWS) { // the twins below read one launch's dims
        fprintf(stderr, "B %d: at most %d rows\n", B, ROUTER_ROWS);
        return 2;
    }
    uint64_t key[ROUTER_ROWS]; // one dropout key per row
    for (int b = 0; b < ROUTER_ROWS; b++) key[b] = 12345 + 7919 * (uint64_t)b;
    printf("B=%d L=%d H=%d d=%d p=%.1f kernels %s dilations %s:", B, L, H, d, p, argv[6], argv[7]);
    const router_dims r = dims_of(&shape, B, L, p, key);
    fused::fwd_plan fp;
    fused::bwd_plan bp;
    const bool fits_fwd = fused::plan_forward(&fp, r, emu_sms, false);
    const bool fits_bwd = fused::plan_backward(&bp, r, emu_sms, false);
    fused::fwd_plan mfp;
    fused::bwd_plan mbp;
    const bool mma_fwd = fused::plan_forward(&mfp, r, emu_sms, true);
    const bool mma_bwd = fused::plan_backward(&mbp, r, emu_sms, true);
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
    // the tensor-core form: warp tiles mt x nt (16 rows x 8 channels each), passes
    printf("\n  mma:");
    if (mma_fwd) {
        printf(" forward T %d x %d tiles, warp tiles", mfp.T, mfp.tiles);
        for (int l = 0; l < r.n; l++) printf(" %dx%d", mfp.prod.p[l].mt, mfp.prod.p[l].nt);
        printf(", %zu B shared;", fused::fwd_smem(mfp));
    } else printf(" forward does not fit;");
    if (mma_bwd) {
        printf(" backward T %d x %d tiles (%d per block, %d segments), warp tiles/passes", mbp.T, mbp.tiles, mbp.tps,
               mbp.segs);
        for (int l = 0; l < r.n; l++) printf(" %dx%d/%d", mbp.prod.p[l].mt, mbp.prod.p[l].nt, mbp.prod.p[l].passes);
        printf(", %zu B shared", fused::bwd_smem(mbp));
    } else printf(" backward does not fit");
    printf("\n");
    if (strcmp(argv[9], "plan") == 0) { // and the cost model's time of the products (thread-steps, all tiles)
        auto total = [&](const fused::products &pr, int tiles) {
            double c = 0;
            for (int l = 0; l < r.n; l++) c += fused::product_cost(pr.p[l]);
            return c * tiles * B * H;
        };
        if (fits_fwd && mma_fwd)
            printf("  model, forward products: CUDA cores %.3g, tensor cores %.3g\n", total(fp.prod, fp.tiles),
                   total(mfp.prod, mfp.tiles));
        if (fits_bwd && mma_bwd)
            printf("  model, input-gradient products: CUDA cores %.3g, tensor cores %.3g\n", total(bp.prod, bp.tiles),
                   total(mbp.prod, mbp.tiles));
        return 0;
    }
    int bad = (fits_fwd != want_fwd) + (fits_bwd != want_bwd);
    if (bad) printf("  FAIL: expected the fused kernels %s\n", argv[9]);
    // where the fused kernels run, so must the tensor-core form
    if ((want_fwd && !mma_fwd) || (want_bwd && !mma_bwd)) printf("  FAIL: the tensor-core form does not fit\n"), bad++;

    const size_t nkv = (size_t)B * L * H * d, np = lte_router_param_count(&shape);
    const size_t na = lte_router_acts_size(&shape, B, L), ns = (size_t)B * L * H;
    const auto k = rv(nkv, -1, 1), v = rv(nkv, -1, 1), params = rv(np, -0.3f, 0.3f), dscore = rv(ns, -1, 1);
    const auto d0 = rv(np, -1, 1), dk0 = rv(nkv, -1, 1), dv0 = rv(nkv, -1, 1);
    const std::vector<group> groups = groups_of(&shape);
    // the CPU twins, fp32 and fp64
    outputs cpu{std::vector<float>(ns), std::vector<float>(na), std::vector<float>(nkv), std::vector<float>(nkv),
                std::vector<float>(np, 0.0f), {}};
    cpu_f32_lte_router_fwd(cpu.score.data(), cpu.acts.data(), k.data(), v.data(), params.data(), &shape, B, L, p, key);
    cpu_f32_lte_router_bwd(cpu.dk.data(), cpu.dv.data(), cpu.dparams.data(), dscore.data(), k.data(), v.data(),
                           params.data(), cpu.acts.data(), &shape, B, L, p, key);
    const outputs exact = fp64_twin(k, v, params, dscore, &shape, B, L, p, key);
    if (getenv("EMU_ROUND_STUDY")) { // which operands' rounding dominates: each alone
        static const char *names[] = {"fwd x", "fwd w", "dx da", "dx w", "dw da", "dw x"};
        for (int bit = 0; bit < 6; bit++) {
            const outputs one = bf16_twin(k, v, params, dscore, &shape, B, L, p, key, 1u << bit);
            compare(names[bit], one, exact, groups, 0);
        }
        compare("fwd", bf16_twin(k, v, params, dscore, &shape, B, L, p, key, 3), exact, groups, 0);
        compare("dx", bf16_twin(k, v, params, dscore, &shape, B, L, p, key, 12), exact, groups, 0);
        compare("dw", bf16_twin(k, v, params, dscore, &shape, B, L, p, key, 48), exact, groups, 0);
        compare("all but dw", bf16_twin(k, v, params, dscore, &shape, B, L, p, key, 15), exact, groups, 0);
        compare("x,da (not w)", bf16_twin(k, v, params, dscore, &shape, B, L, p, key, 1 | 4 | 16 | 32), exact, groups, 0);
        compare("w only", bf16_twin(k, v, params, dscore, &shape, B, L, p, key, 2 | 8), exact, groups, 0);
        for (const char *m = getenv("EMU_ROUND_STUDY"); *m;) { // more masks: a comma list
            const unsigned mask = (unsigned)strtoul(m, (char **)&m, 0);
            char name[32];
            snprintf(name, sizeof name, "mask %u", mask);
            if (mask) compare(name, bf16_twin(k, v, params, dscore, &shape, B, L, p, key, mask), exact, groups, 0);
            if (*m == ',') m++;
            else break;
        }
        return 0;
    }

    // forward, backward from zero, backward onto d0 (dparams) and dkv0 (dk, dv: ops_lte.h,
    // the router's share is added onto the attention's)
    auto run = [&](outputs &o) {
        o.score.assign(ns, NAN), o.acts.assign(na, NAN), o.dk.assign(nkv, 0.0f), o.dv.assign(nkv, 0.0f);
        o.dparams.assign(np, 0.0f), o.accumulated = d0;
        cuda_lte_router_fwd(o.score.data(), o.acts.data(), k.data(), v.data(), params.data(), &shape, B, L, p, key);
        cuda_lte_router_bwd(o.dk.data(), o.dv.data(), o.dparams.data(), dscore.data(), k.data(), v.data(),
                            params.data(), o.acts.data(), &shape, B, L, p, key);
        std::vector<float> dk2 = dk0, dv2 = dv0;
        cuda_lte_router_bwd(dk2.data(), dv2.data(), o.accumulated.data(), dscore.data(), k.data(), v.data(),
                            params.data(), o.acts.data(), &shape, B, L, p, key);
        o.dkv_added = true;
        for (size_t i = 0; i < nkv; i++)
            o.dkv_added = o.dkv_added && bits_equal(dk2[i], dk0[i] + o.dk[i]) && bits_equal(dv2[i], dv0[i] + o.dv[i]);
        // the same rows one call each (ops_lte.h: a call on B rows is B calls on one row)
        const size_t rt = (size_t)L * H, rkv = rt * d, ra = lte_router_acts_size(&shape, 1, L);
        o.rows_same = true, o.row_dparams.clear();
        for (int b = 0; b < B; b++) {
            std::vector<float> s1(rt, NAN), a1(ra, NAN), dk1(rkv, 0.0f), dv1(rkv, 0.0f), dp1(np, 0.0f);
            cuda_lte_router_fwd(s1.data(), a1.data(), k.data() + b * rkv, v.data() + b * rkv, params.data(), &shape, 1,
                                L, p, key + b);
            cuda_lte_router_bwd(dk1.data(), dv1.data(), dp1.data(), dscore.data() + b * rt, k.data() + b * rkv,
                                v.data() + b * rkv, params.data(), a1.data(), &shape, 1, L, p, key + b);
            o.rows_same = o.rows_same && !memcmp(s1.data(), o.score.data() + b * rt, rt * sizeof(float)) &&
                          !memcmp(a1.data(), o.acts.data() + b * ra, ra * sizeof(float)) &&
                          !memcmp(dk1.data(), o.dk.data() + b * rkv, rkv * sizeof(float)) &&
                          !memcmp(dv1.data(), o.dv.data() + b * rkv, rkv * sizeof(float));
            o.row_dparams.push_back(dp1);
        }
    };
    auto bits = [](const std::vector<float> &a, const std::vector<float> &b) {
        return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
    };
    // the same bits from a second run and from one call per row; accumulation = d0 plus each
    // row's gradient in turn (the backward runs row by row: cuda_lte_router.cu), each rounded once
    auto reproducible = [&](const char *what, const outputs &o, const outputs &again) {
        std::vector<float> sum = d0;
        for (const std::vector<float> &g : o.row_dparams)
            for (size_t i = 0; i < np; i++) sum[i] = sum[i] + g[i];
        const bool same = bits(again.score, o.score) && bits(again.acts, o.acts) && bits(again.dk, o.dk) &&
                          bits(again.dv, o.dv) && bits(again.dparams, o.dparams);
        if (!same) printf("  FAIL: %s: a second run differs in its bits\n", what), bad++;
        if (!o.rows_same) printf("  FAIL: %s: B rows in one call differ from one call per row\n", what), bad++;
        if (!o.dkv_added) printf("  FAIL: %s: dk, dv += gradient is not the base plus the gradient\n", what), bad++;
        if (!bits(o.accumulated, sum))
            printf("  FAIL: %s: dparams += gradient is not d0 plus each row's gradient\n", what), bad++;
    };
    outputs def, taps, again;
    setenv("HYLA_ROUTER_TAPS", "0", 1); // the fused kernels where the shape fits
    run(def);
    run(again);
    compare("CPU fp32 vs fp64", cpu, exact, groups, 0);
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
    // bf16 mode, the tensor-core form switched on (the fused kernels' CUDA-core form where the
    // shape does not fit it; the per-tap form where neither does)
    outputs mma;
    emu_router_bf16 = true;
    setenv("HYLA_ROUTER_MMA", "1", 1), setenv("HYLA_ROUTER_FIXED", "0", 1); // the fused kernels' form
    run(mma);
    run(again);
    unsetenv("HYLA_ROUTER_MMA"), unsetenv("HYLA_ROUTER_FIXED");
    emu_router_bf16 = false;
    // the form's operands: the convs' and the input gradients' tf32, the weight gradients' bf16
    const unsigned form_ops = (mma_fwd ? R_FWD_TF32 : 0) | (mma_bwd ? R_DX_TF32 | R_DW_DA | R_DW_X : 0);
    const outputs rounded = bf16_twin(k, v, params, dscore, &shape, B, L, p, key, form_ops);
    const std::vector<err> inherent = errors(rounded, exact, groups);
    compare("form's operands vs fp64", rounded, exact, groups, 0);
    compare("bf16 mma vs fp64", mma, exact, groups, MMA_BOUND, &worst_bf16, &inherent);
    compare("bf16 mma vs CPU fp32", mma, cpu, {}, MMA_BOUND, &worst_bf16);
    compare("bf16 mma vs form's ops", mma, rounded, groups, SAME_OPS_BOUND, &worst_same);
    reproducible("bf16 mma", mma, again);
    // the forward at the papers' shape (cuda_lte_router_fixed.cu), called directly and through
    // HYLA_ROUTER_FIXED: the tensor-core form's bits where the shape is its own (the 0.4B head),
    // declined (nothing written) elsewhere
    {
        std::vector<float> s1(ns, NAN), a1(na, NAN);
        const bool took = fixed::forward(s1.data(), a1.data(), k.data(), v.data(), params.data(), r);
        const bool own = d == 64 && r.n == 3 && !strcmp(argv[6], "3,3,3") && !strcmp(argv[7], "2,2,2");
        if (took != own) printf("  FAIL: the fixed-shape forward %s this shape\n", took ? "took" : "declined"), bad++;
        if (took && !(bits(s1, mma.score) && bits(a1, mma.acts)))
            printf("  FAIL: the fixed-shape forward differs from the tensor-core form's bits\n"), bad++;
        if (!took && !(std::isnan(s1[0]) && std::isnan(a1[0])))
            printf("  FAIL: the fixed-shape forward wrote where it declined\n"), bad++;
        if (took) { // both ways through the switch: the forward's bits, the backward's dk and dv bits,
                    // its parameter gradients (other tiles: another order of sums) within the bounds
            outputs fx, fx2;
            emu_router_bf16 = true;
            setenv("HYLA_ROUTER_MMA", "1", 1), setenv("HYLA_ROUTER_FIXED", "1", 1);
            run(fx);
            run(fx2);
            unsetenv("HYLA_ROUTER_MMA"), unsetenv("HYLA_ROUTER_FIXED");
            emu_router_bf16 = false;
            if (!(bits(fx.score, mma.score) && bits(fx.acts, mma.acts)))
                printf("  FAIL: HYLA_ROUTER_FIXED=1: the forward differs from the tensor-core form's bits\n"), bad++;
            if (!(bits(fx.dk, mma.dk) && bits(fx.dv, mma.dv)))
                printf("  FAIL: HYLA_ROUTER_FIXED=1: dk, dv differ from the tensor-core form's bits\n"), bad++;
            compare("fixed bwd vs fp64", fx, exact, groups, MMA_BOUND, &worst_bf16, &inherent);
            compare("fixed bwd vs form's ops", fx, rounded, groups, SAME_OPS_BOUND, &worst_same);
            printf("  fixed-shape dparams vs the tensor-core form's: %.2e\n", rel(fx.dparams, mma.dparams));
            if (!(rel(fx.dparams, mma.dparams) < 1e-4))
                printf("  FAIL: the fixed-shape dparams are more than 1e-4 from the tensor-core form's\n"), bad++;
            reproducible("fixed", fx, fx2);
            printf("  fixed-shape kernels: the tensor-core form's bits (forward; dk, dv)\n");
        }
    }
    // the tensor-core form really ran: its operand rounding shows against the CUDA-core form
    // (tf32 operands, 2^-11 relative: acts, dk ~1e-4 away where fp32 sums alone are ~5e-7)
    const double moved_fwd = rel(mma.acts, def.acts), moved_bwd = rel(mma.dk, def.dk);
    printf("  bf16 mma vs fused fp32: acts %.2e, dk %.2e\n", moved_fwd, moved_bwd);
    if ((mma_fwd && !(moved_fwd > 1.5e-6)) || (mma_bwd && !(moved_bwd > 1.5e-6)))
        printf("  FAIL: bf16 mode gave the fp32 results: the tensor-core form did not run\n"), bad++;
    bad += worst_bad;
    if (bad) printf("  FAIL\n");
    else
        printf("  ok (bound 1e-5, worst %.2e; bf16 mma: %.0e, worst %.2e; vs its operands: %.0e, worst %.2e)\n",
               worst_err, MMA_BOUND, worst_bf16, SAME_OPS_BOUND, worst_same);
    return bad ? 1 : 0;
}
