// The ops built on matrix products — kernels/cuda/cuda_linear.cu (linear layers, projections),
// cuda_mlp.cu (the MLP), cuda_swiglu.cu, cuda_lm_head_ce.cu (the LM head fused with
// cross-entropy) — under emu.h, cuBLAS replaced by plain loops (products_emu.h), against the
// fp32 CPU twins: within 1e-5 in fp32 mode, 1e-2 in bf16 mode (operands rounded to bf16, as
// test_cuda_ops' bounds), and in bf16 mode different from fp32 (the copies were taken). Outputs
// start as NaN; weight gradients are added onto random values. Copies are taken from 2^15
// multiply-adds and dimensions >= 16 here (the backend: 2^26 and 64), so small shapes run both
// paths. The bf16-mode MLP is also held to a model of the roundings it makes (mlp_bf16_model:
// equal but for rare fp32 rounding differences), with gate, up and dz rounded to bf16 when
// HYLA_MLP_BF16_ACTS=1 and HYLA_MLP_BF16 is on (cuda_mlp.cu), which the bound against the fp32
// twin alone would not notice. argv[1]: a file for every bf16-mode output, which
// run_products.sh compares bit for bit across HYLA_GEMM_SHARED_COPIES and HYLA_MLP_BF16 (the
// same operand bits either way). EMU_TWINS=1: every weight is also handed to the backend as an
// fp32 array with a bf16 twin (know_bf16_twin, cuda_bf16_twins.cu), as FSDP's gathered units
// are; the products then read the twin instead of copying (run_products.sh: the same bits,
// fewer copies). EMU_HOLD=1: every activation operand (x, h) is held (hold_bf16_copy) as the
// model holds its saved activations; the products then read the held copy (run_products.sh:
// the same bits, fewer copies with HYLA_HOLD_COPIES=1). The copies made are printed last.
#include "emu.h"
#include "emu_check.h"
#include "products_emu.h"
#include <string>

extern "C" {
#include "kernels/cpu/cpu_ops.h"
void cuda_register_linear(struct hyla_backend *t);
void cuda_register_mlp(struct hyla_backend *t);
void cuda_register_swiglu(struct hyla_backend *t);
void cuda_register_lm_head_ce(struct hyla_backend *t);
void cuda_register_bf16_twins(struct hyla_backend *t);
}

// ---- cuBLAS as loops ----------------------------------------------------------------------
bool emu_bf16 = false;
bool cuda_gemm_takes_copies(int m, int n, int k) {
    return emu_bf16 && (double)m * n * k >= (1 << 15) && m >= 16 && n >= 16 && k >= 16;
}
static float round_bf16(float x) { return __bfloat162float(__float2bfloat16(x)); }
// Row-major C = alpha op(A) op(B) + beta C, k ascending in fp32; A(i, p) and B(p, j) by accessors.
template <class GetA, class GetB>
static void product(int m, int n, int k, float alpha, GetA a, GetB b, float beta, float *c, int ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float s = 0;
            for (int p = 0; p < k; p++) s += a(i, p) * b(p, j);
            float &out = c[(size_t)i * ldc + j];
            out = alpha * s + (beta == 0 ? 0.0f : beta * out);
        }
}
// cuBLAS with CUBLAS_COMPUTE_32F_FAST_16BF rounds fp32 operands itself in bf16 mode.
void cuda_gemm_fp32_operands(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                             int ldb, float beta, float *c, int ldc) {
    auto r = [](float x) { return emu_bf16 ? round_bf16(x) : x; };
    product(
        m, n, k, alpha, [&](int i, int p) { return r(ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p]); },
        [&](int p, int j) { return r(tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j]); }, beta, c, ldc);
}
static long copies_made; // operand copies the products made (cuda_bf16_matrix)
void cuda_to_bf16(__nv_bfloat16 *dst, const float *src, size_t count) { // a held copy (cuda_bf16_twins.cu)
    for (size_t i = 0; i < count; i++) dst[i] = __float2bfloat16(src[i]);
}
__nv_bfloat16 *cuda_bf16_matrix(const float *src, int rows, int cols, int ld) {
    copies_made++;
    __nv_bfloat16 *h = (__nv_bfloat16 *)malloc(sizeof(__nv_bfloat16) * (size_t)rows * cols);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) h[(size_t)r * cols + c] = __float2bfloat16(src[(size_t)r * ld + c]);
    return h;
}
void cuda_gemm_bf16(cublasHandle_t, int ta, int tb, int m, int n, int k, float alpha, const __nv_bfloat16 *a,
                    const __nv_bfloat16 *b, float beta, float *c, int ldc) {
    const int a_cols = ta ? m : k, b_cols = tb ? k : n;
    auto w = [](__nv_bfloat16 x) { return __bfloat162float(x); };
    product(
        m, n, k, alpha, [&](int i, int p) { return w(ta ? a[(size_t)p * a_cols + i] : a[(size_t)i * a_cols + p]); },
        [&](int p, int j) { return w(tb ? b[(size_t)j * b_cols + p] : b[(size_t)p * b_cols + j]); }, beta, c, ldc);
}

void cuda_gemm_bf16_out(cublasHandle_t, int ta, int tb, int m, int n, int k, float alpha, const __nv_bfloat16 *a,
                        const __nv_bfloat16 *b, __nv_bfloat16 *c, int ldc) {
    std::vector<float> sums((size_t)m * n);
    cuda_gemm_bf16(nullptr, ta, tb, m, n, k, alpha, a, b, 0.0f, sums.data(), n);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) c[(size_t)i * ldc + j] = __float2bfloat16(sums[(size_t)i * n + j]);
}

// cuBLASLt's D = alpha op(A) op(B) + beta C (cuda_gemm_lt.cu) as C copied into D and added onto:
// the same sums in the same order here (on the GPU cuBLASLt may order them otherwise).
static long onto_products; // products that read C apart from D (HYLA_GEMM_ONTO)
void cuda_gemm_bf16_onto(int ta, int tb, int m, int n, int k, float alpha, const __nv_bfloat16 *a,
                         const __nv_bfloat16 *b, float beta, const float *c, float *d, int ldd) {
    onto_products++;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) d[(size_t)i * ldd + j] = c[(size_t)i * ldd + j];
    cuda_gemm_bf16(nullptr, ta, tb, m, n, k, alpha, a, b, beta, d, ldd);
}

// ---- the checks ----------------------------------------------------------------------------
typedef std::vector<float> vec;
static struct hyla_backend gpu;
static int bad;

// EMU_TWINS=1: w is known to the backend with a bf16 twin (its values rounded to nearest even,
// what a copy holds) for the guard's life.
static const bool emu_twins = getenv("EMU_TWINS") && atoi(getenv("EMU_TWINS")) != 0;
struct weight_twin {
    const float *full;
    std::vector<__nv_bfloat16> h;
    bool known = false;
    explicit weight_twin(const std::vector<float> &w) : full(w.data()) {
        if (!emu_twins) return;
        for (float x : w) h.push_back(__float2bfloat16(x));
        known = gpu.know_bf16_twin(full, (const uint16_t *)h.data(), w.size());
    }
    ~weight_twin() {
        if (known) gpu.forget_bf16_twin(full);
    }
};
// EMU_HOLD=1: x is held by the backend (hold_bf16_copy) for the guard's life.
static const bool emu_hold = getenv("EMU_HOLD") && atoi(getenv("EMU_HOLD")) != 0;
struct held_activation {
    const float *x;
    explicit held_activation(const std::vector<float> &v) : x(v.data()) {
        if (emu_hold) gpu.hold_bf16_copy(x, v.size());
    }
    ~held_activation() {
        if (emu_hold) gpu.forget_bf16_twin(x);
    }
};
static FILE *dump; // bf16-mode outputs
static void check(const char *what, const vec &got, const vec &want) {
    const double e = rel(got, want), bound = emu_bf16 ? 1e-2 : 1e-5;
    printf(" %s %.2e", what, e);
    if (!(e <= bound)) printf(" (FAIL: bound %.0e)", bound), bad++;
    if (emu_bf16) fwrite(got.data(), sizeof(float), got.size(), dump);
}
// Against a model of the bf16 path, which rounds where the backend does: all but equal. A
// rounding left out or added (up to bf16's half ulp, 2^-9, on every value of a tensor) moves an
// output by 1e-3 or more; the bound leaves room for the rare bf16 ulp where the model's fp32
// arithmetic (the CPU twin's SwiGLU, its multiplies associated otherwise) lands on the other side
// of a rounding than the kernel's: none at these shapes, 1.1e-5 at 515 x 256 x 704.
static void check_model(const char *what, const vec &got, const vec &want) {
    const double e = rel(got, want), bound = 1e-4;
    printf(" %s %.2e", what, e);
    if (!(e <= bound)) printf(" (FAIL: bound %.0e)", bound), bad++;
}

// A linear layer with bias: forward, backward, backward adding onto dx.
static void linear(int n, int in, int out) {
    printf("%s linear n=%d %d -> %d:", emu_bf16 ? "bf16" : "fp32", n, in, out);
    const vec x = rv((size_t)n * in), w = rv((size_t)out * in, -0.3f, 0.3f), b = rv(out), dy = rv((size_t)n * out);
    const weight_twin w_twin(w);
    const held_activation x_held(x);
    const vec dw0 = rv((size_t)out * in), db0 = rv(out), dx0 = rv((size_t)n * in);
    vec y((size_t)n * out), gy = nans(y.size());
    cpu_f32_linear_fwd(y.data(), x.data(), w.data(), b.data(), n, in, out);
    gpu.linear_fwd(gy.data(), x.data(), w.data(), b.data(), n, in, out);
    check("y", gy, y);
    if (emu_bf16 && !(rel(gy, y) > 1e-6)) printf(" (FAIL: bf16 mode gave fp32's y)"), bad++;
    vec dx((size_t)n * in), dw = dw0, db = db0, gdx = nans(dx.size()), gdw = dw0, gdb = db0;
    cpu_f32_linear_bwd(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), n, in, out);
    gpu.linear_bwd(gdx.data(), gdw.data(), gdb.data(), dy.data(), x.data(), w.data(), n, in, out);
    check("dx", gdx, dx), check("dw", gdw, dw), check("db", gdb, db);
    vec adx = dx0, gadx = dx0;
    cpu_f32_linear_bwd_accumulate(adx.data(), dw.data(), NULL, dy.data(), x.data(), w.data(), n, in, out);
    gpu.linear_bwd_accumulate(gadx.data(), gdw.data(), NULL, dy.data(), x.data(), w.data(), n, in, out);
    check("dx+=", gadx, adx), check("dw again", gdw, dw);
}

// Three projections of one input (one wide enough for copies, one thin), backward onto dx.
static void projections(int n, int in, const int (&outs)[3]) {
    printf("%s projections n=%d %d -> %d %d %d:", emu_bf16 ? "bf16" : "fp32", n, in, outs[0], outs[1], outs[2]);
    const vec x = rv((size_t)n * in), dx0 = rv((size_t)n * in);
    vec w[3], dy[3], y[3], gy[3], dw[3], gdw[3];
    for (int i = 0; i < 3; i++) {
        w[i] = rv((size_t)outs[i] * in, -0.3f, 0.3f), dy[i] = rv((size_t)n * outs[i]);
        y[i] = vec((size_t)n * outs[i]), gy[i] = nans(y[i].size()), dw[i] = gdw[i] = rv(w[i].size());
    }
    const weight_twin w0_twin(w[0]), w1_twin(w[1]), w2_twin(w[2]);
    const held_activation x_held(x);
    float *ys[3] = {y[0].data(), y[1].data(), y[2].data()}, *gys[3] = {gy[0].data(), gy[1].data(), gy[2].data()};
    const float *ws[3] = {w[0].data(), w[1].data(), w[2].data()}, *dys[3] = {dy[0].data(), dy[1].data(), dy[2].data()};
    float *dws[3] = {dw[0].data(), dw[1].data(), dw[2].data()}, *gdws[3] = {gdw[0].data(), gdw[1].data(), gdw[2].data()};
    cpu_f32_projections_fwd(3, ys, x.data(), ws, outs, n, in);
    gpu.projections_fwd(3, gys, x.data(), ws, outs, n, in);
    for (int i = 0; i < 3; i++) check(("y" + std::to_string(i)).c_str(), gy[i], y[i]);
    vec dx = dx0, gdx = dx0;
    cpu_f32_projections_bwd(3, dx.data(), 1, dws, dys, x.data(), ws, outs, n, in);
    gpu.projections_bwd(3, gdx.data(), 1, gdws, dys, x.data(), ws, outs, n, in);
    check("dx+=", gdx, dx);
    for (int i = 0; i < 3; i++) check(("dw" + std::to_string(i)).c_str(), gdw[i], dw[i]);
}

// An environment switch as cuda_mlp.cu reads it: =1 on, =0 off, unset or empty: the default.
static bool switched_on(const char *name, bool by_default) {
    const char *e = getenv(name);
    return e && *e ? atoi(e) != 0 : by_default;
}
// cuda_mlp.cu's bf16 activations: HYLA_MLP_BF16_ACTS (default off) on top of HYLA_MLP_BF16
// (default on), where the MLP's products take copies (all of this file's bf16 MLP shapes).
static bool mlp_bf16_acts() { return switched_on("HYLA_MLP_BF16_ACTS", false) && switched_on("HYLA_MLP_BF16", true); }

// The bf16-mode MLP (onto res) and its backward as the backend computes them, built from the
// CPU twin's SwiGLU and the emulated products on fp32 operands (which round them to bf16 as the
// copies do, sums in the same order): z, dgate and dup are rounded by the products that read
// them, and with bf16 activations gate, up and dz are rounded where they are written.
struct mlp_grads {
    vec y, dx, dwg, dwu, dwd;
};
static mlp_grads mlp_bf16_model(bool acts, const vec &x, const vec &res, const vec &wg, const vec &wu, const vec &wd,
                                const vec &dy, const vec &dw0, int n, int dim, int inter) {
    const size_t ni = (size_t)n * inter;
    auto out = [&](vec v) { // a product's [n, inter] output as the SwiGLU kernels read it
        if (acts)
            for (float &f : v) f = round_bf16(f);
        return v;
    };
    vec gate(ni), up(ni), z(ni), dz(ni), dgate(ni), dup(ni);
    mlp_grads g{res, vec((size_t)n * dim), dw0, dw0, dw0};
    cuda_gemm_fp32_operands(0, 1, n, inter, dim, 1.0f, x.data(), dim, wg.data(), dim, 0.0f, gate.data(), inter);
    cuda_gemm_fp32_operands(0, 1, n, inter, dim, 1.0f, x.data(), dim, wu.data(), dim, 0.0f, up.data(), inter);
    gate = out(gate), up = out(up);
    cpu_f32_swiglu_fwd(z.data(), gate.data(), up.data(), ni);
    cuda_gemm_fp32_operands(0, 1, n, dim, inter, 1.0f, z.data(), inter, wd.data(), inter, 1.0f, g.y.data(), dim);
    cuda_gemm_fp32_operands(0, 0, n, inter, dim, 1.0f, dy.data(), dim, wd.data(), inter, 0.0f, dz.data(), inter);
    dz = out(dz);
    cuda_gemm_fp32_operands(1, 0, dim, inter, n, 1.0f, dy.data(), dim, z.data(), inter, 1.0f, g.dwd.data(), inter);
    cpu_f32_swiglu_bwd(dgate.data(), dup.data(), dz.data(), gate.data(), up.data(), ni);
    cuda_gemm_fp32_operands(0, 0, n, dim, inter, 1.0f, dgate.data(), inter, wg.data(), dim, 0.0f, g.dx.data(), dim);
    cuda_gemm_fp32_operands(1, 0, inter, dim, n, 1.0f, dgate.data(), inter, x.data(), dim, 1.0f, g.dwg.data(), dim);
    cuda_gemm_fp32_operands(0, 0, n, dim, inter, 1.0f, dup.data(), inter, wu.data(), dim, 1.0f, g.dx.data(), dim);
    cuda_gemm_fp32_operands(1, 0, inter, dim, n, 1.0f, dup.data(), inter, x.data(), dim, 1.0f, g.dwu.data(), dim);
    return g;
}

// The MLP onto a residual (and in place), then its backward; in bf16 mode also against the
// model of the bf16 path.
static void mlp(int n, int dim, int inter) {
    printf("%s mlp n=%d dim=%d inter=%d:", emu_bf16 ? "bf16" : "fp32", n, dim, inter);
    const size_t nd = (size_t)n * dim, ni = (size_t)n * inter, wi = (size_t)inter * dim;
    const vec x = rv(nd), res = rv(nd), wg = rv(wi, -0.3f, 0.3f), wu = rv(wi, -0.3f, 0.3f), wd = rv(wi, -0.3f, 0.3f);
    const vec dy = rv(nd), dw0 = rv(wi);
    const weight_twin wg_twin(wg), wu_twin(wu), wd_twin(wd);
    const held_activation x_held(x);
    vec y(nd), acts(3 * ni), gy = nans(nd), gacts = nans(3 * ni);
    cpu_f32_mlp_fwd(y.data(), acts.data(), x.data(), res.data(), wg.data(), wu.data(), wd.data(), n, dim, inter);
    gpu.mlp_fwd(gy.data(), gacts.data(), x.data(), res.data(), wg.data(), wu.data(), wd.data(), n, dim, inter);
    check("y", gy, y);
    vec inplace = res;
    gpu.mlp_fwd(inplace.data(), gacts.data(), x.data(), inplace.data(), wg.data(), wu.data(), wd.data(), n, dim, inter);
    check("y in place", inplace, y);
    vec dx(nd), gdx = nans(nd), dwg = dw0, dwu = dw0, dwd = dw0, gdwg = dw0, gdwu = dw0, gdwd = dw0;
    vec scratch(2 * ni), gscratch = nans(2 * ni);
    cpu_f32_mlp_bwd(dx.data(), dwg.data(), dwu.data(), dwd.data(), dy.data(), x.data(), acts.data(), wg.data(),
                    wu.data(), wd.data(), scratch.data(), n, dim, inter);
    gpu.mlp_bwd(gdx.data(), gdwg.data(), gdwu.data(), gdwd.data(), dy.data(), x.data(), gacts.data(), wg.data(),
                wu.data(), wd.data(), gscratch.data(), n, dim, inter);
    check("dx", gdx, dx), check("dw_gate", gdwg, dwg), check("dw_up", gdwu, dwu), check("dw_down", gdwd, dwd);
    if (!emu_bf16) return;
    const bool bf16_acts = mlp_bf16_acts();
    const mlp_grads m = mlp_bf16_model(bf16_acts, x, res, wg, wu, wd, dy, dw0, n, dim, inter);
    printf(" | vs the bf16 model%s:", bf16_acts ? " (gate, up, dz in bf16)" : "");
    check_model("y", gy, m.y), check_model("dx", gdx, m.dx), check_model("dw_gate", gdwg, m.dwg);
    check_model("dw_up", gdwu, m.dwu), check_model("dw_down", gdwd, m.dwd);
}

// The LM head with cross-entropy in chunks (the last one short: fewer rows than copies need).
static void lm_head(int n, int dim, int vocab, int chunk) {
    printf("%s lm_head_ce n=%d dim=%d vocab=%d chunk=%d:", emu_bf16 ? "bf16" : "fp32", n, dim, vocab, chunk);
    const vec h = rv((size_t)n * dim), w = rv((size_t)vocab * dim, -0.5f, 0.5f), dw0 = rv((size_t)vocab * dim);
    const weight_twin w_twin(w);
    const held_activation h_held(h);
    std::vector<int32_t> targets(n);
    int valid = 0;
    for (int i = 0; i < n; i++) targets[i] = i % 7 == 3 ? -100 : (i * 37) % vocab, valid += targets[i] != -100;
    vec losses(n), lse(n), glosses = nans(n), glse = nans(n);
    cpu_f32_lm_head_ce_fwd(losses.data(), lse.data(), h.data(), w.data(), targets.data(), n, dim, vocab, -100, chunk);
    gpu.lm_head_ce_fwd(glosses.data(), glse.data(), h.data(), w.data(), targets.data(), n, dim, vocab, -100, chunk);
    check("losses", glosses, losses), check("lse", glse, lse);
    vec dh((size_t)n * dim), gdh = nans(dh.size()), dw = dw0, gdw = dw0;
    cpu_f32_lm_head_ce_bwd(dh.data(), dw.data(), h.data(), w.data(), lse.data(), targets.data(), n, dim, vocab, -100,
                           valid, 0.7f, chunk);
    gpu.lm_head_ce_bwd(gdh.data(), gdw.data(), h.data(), w.data(), glse.data(), targets.data(), n, dim, vocab, -100,
                       valid, 0.7f, chunk);
    check("dh", gdh, dh), check("dweight", gdw, dw);
    // both in one pass (lm_head_ce_fwd_bwd): the two ops' bits, dweight written (the backward
    // from zero) over whatever it held
    vec zero_dw((size_t)vocab * dim, 0.0f), fl = nans(n), flse = nans(n), fdh = nans(dh.size()), fdw = nans(dw.size());
    gpu.lm_head_ce_bwd(gdh.data(), zero_dw.data(), h.data(), w.data(), glse.data(), targets.data(), n, dim, vocab, -100,
                       valid, 0.7f, chunk);
    gpu.lm_head_ce_fwd_bwd(fl.data(), flse.data(), fdh.data(), fdw.data(), h.data(), w.data(), targets.data(), n, dim,
                           vocab, -100, valid, 0.7f, chunk);
    auto same = [](const vec &a, const vec &b) {
        return a.size() == b.size() && !memcmp(a.data(), b.data(), a.size() * sizeof(float));
    };
    const bool ok = same(fl, glosses) && same(flse, glse) && same(fdh, gdh) && same(fdw, zero_dw);
    printf(" fwd_bwd %s", ok ? "same bits" : "(FAIL: not the two ops' bits)");
    bad += !ok;
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: %s DUMP_FILE\n", argv[0]), 2;
    dump = fopen(argv[1], "wb");
    gpu.alloc = [](size_t bytes) { return malloc(bytes); };
    gpu.free = free;
    cuda_register_linear(&gpu);
    cuda_register_mlp(&gpu);
    cuda_register_swiglu(&gpu);
    cuda_register_lm_head_ce(&gpu);
    cuda_register_bf16_twins(&gpu);
    const int outs[3] = {40, 24, 8};
    for (int bf16 = 0; bf16 < 2; bf16++) {
        emu_bf16 = bf16;
        emu_rng_state = 7; // the same inputs in both modes
        linear(70, 48, 40), printf("\n");
        linear(37, 20, 8), printf("\n"); // thin: no copies
        projections(70, 48, outs), printf("\n");
        mlp(70, 32, 96), printf("\n");
        lm_head(70, 32, 300, 16), printf("\n"); // chunks of 16, the last of 6 rows
        lm_head(40, 24, 500, 0), printf("\n");  // one chunk
        mlp(96, 64, 176), printf("\n");         // the 0.4B's inter / dim = 2.75
        mlp(37, 24, 90), printf("\n");          // n inter not a multiple of 4: the SwiGLU kernels' scalar form
    }
    fclose(dump);
    printf("products onto a separate C: %ld\n", onto_products);
    printf("copies made: %ld\n", copies_made);
    if (bad) printf("FAIL: %d checks\n", bad);
    else printf("ok\n");
    return bad ? 1 : 0;
}
