// The ops of kernels/cuda/cuda_gdn_parts.cu, cuda_rmsnorm.cu, cuda_reduce_ops.cu and cuda_embedding.cu under emu.h,
// called through the table their cuda_register_* functions fill (as the backend does), against
// the fp32 CPU twins, as test_cuda_ops' gdn_parts and optimizer groups call both: outputs
// start as NaN (an element left unwritten shows), parameter gradients are added onto random
// values, and each output's relative error (norm-based, test_cuda_ops' rel_err_f32) must be
// within 1e-5; sum_squares_add within 1e-12 of the CPU's and the same bits on a second call;
// the clipping factor and accumulate_f64 bit for bit; loss_mean_add within 1e-6 of the mean.
// Arguments: groups, each a name and its shape:
//   conv B L C kw | conv_l2norm B L C kw head_dim | rmsnorm n dim | l2norm rows dim | gated_rmsnorm rows dim | gates rows H |
//   rope B L H d pos0 | embedding n dim vocab pad | loss n | optimizer count | bf16 count offset |
//   swiglu count offset
// --every-op first: fail unless the groups called every op the files register.
// HYLA_NORM_FUSED_DW=1 / 0 (read by the ops at each call, cuda_column_sum.cuh) picks the
// backward passes that sum the norm weights' and convolution taps' gradients in the row
// kernels, or the separate column sums; the first line says which ran.
#include "emu.h"
#include "emu_check.h"
#include <set>
#include <string>

extern "C" {
#include "kernels/backend.h"
#include "kernels/cpu/cpu_ops.h"
void cuda_register_gdn_parts(struct hyla_backend *t);
void cuda_register_rmsnorm(struct hyla_backend *t);
void cuda_register_reduce_ops(struct hyla_backend *t);
void cuda_register_embedding(struct hyla_backend *t);
void cuda_register_bf16_convert(struct hyla_backend *t);
void cuda_register_swiglu(struct hyla_backend *t);
}
#include "cuda_column_sum.cuh"
#include "cuda_swiglu.cuh"

#include "common/bf16.h"
void cuda_to_bf16(__nv_bfloat16 *dst, const float *src, size_t count); // cuda_bf16_convert.cu

static struct hyla_backend gpu;      // only the files' ops: "device" memory is host memory
static std::set<std::string> called; // the ops the groups ran
#define GPU(op) (called.insert(#op), gpu.op)

typedef std::vector<float> vec;

static int bad;
// Prints "name error" on the group's line; an error above bound (or NaN) fails.
static void check(const char *name, double e, double bound = 1e-5) {
    printf(" %s %.2e", name, e);
    if (!(e <= bound)) printf(" (FAIL: bound %.0e)", bound), bad++;
}
static void check_vec(const char *name, const vec &got, const vec &want) { check(name, rel(got, want)); }
static void check_true(const char *what, bool ok) {
    if (!ok) printf(" (FAIL: %s)", what), bad++;
}

// backend.h's expect_bf16_copy as cuda_bf16_twins.cu serves it: the bf16 copy an op may write
// beside its whole output (cuda_bf16_copy_target), armed by with_copy for one call.
static struct {
    const float *out;
    size_t count;
    __nv_bfloat16 *h;
    bool taken;
} expected;
__nv_bfloat16 *cuda_bf16_copy_target(const float *out, size_t count) {
    if (!expected.h || expected.taken || expected.out != out || expected.count != count) return nullptr;
    expected.taken = true;
    return expected.h;
}
// The op run(out) again with out's bf16 copy expected, onto out's values `start` (NaN: a pure
// output): its fp32 output must be `want` bit for bit (the run without the copy), and the op
// must have taken the copy and written it as the fp32 output rounded (__float2bfloat16).
template <class Run>
static void with_copy(const char *what, const vec &start, const vec &want, size_t off, size_t count, Run run) {
    vec out = start;
    std::vector<__nv_bfloat16> h(count, __nv_bfloat16{0x7fbf}); // a NaN the rounding never gives
    expected = {out.data() + off, count, h.data(), false};
    run(out.data() + off);
    bool same = expected.taken && !memcmp(out.data() + off, want.data() + off, count * sizeof(float));
    for (size_t i = 0; i < count && same; i++) same = h[i].u == __float2bfloat16(out[off + i]).u;
    expected = {};
    char label[96];
    snprintf(label, sizeof label, "%s: not the same fp32 bits with a bf16 copy of them beside", what);
    check_true(label, same);
}

static void conv(int B, int L, int C, int kw) {
    printf("conv B=%d L=%d C=%d kw=%d:", B, L, C, kw);
    const size_t n = (size_t)B * L * C, nw = (size_t)C * kw;
    const vec x = rv(n, -2, 2), w = rv(nw, -1, 1), dy = rv(n, -1, 1), dw0 = rv(nw, -1, 1);
    vec y(n), dx(n), dw = dw0, gy = nans(n), gdx = nans(n), gdw = dw0;
    cpu_f32_shortconv_silu_fwd(y.data(), x.data(), w.data(), B, L, C, kw);
    cpu_f32_shortconv_silu_bwd(dx.data(), dw.data(), dy.data(), x.data(), w.data(), B, L, C, kw);
    GPU(shortconv_silu_fwd)(gy.data(), x.data(), w.data(), B, L, C, kw);
    GPU(shortconv_silu_bwd)(gdx.data(), gdw.data(), dy.data(), x.data(), w.data(), B, L, C, kw);
    check_vec("y", gy, y), check_vec("dx", gdx, dx), check_vec("dw(acc)", gdw, dw);
    vec scratch_dw = dw0; // dx with its bf16 copy beside it (the GDN's projections' dy)
    with_copy("shortconv_silu_bwd", nans(n), gdx, 0, n, [&](float *o) {
        GPU(shortconv_silu_bwd)(o, scratch_dw.data(), dy.data(), x.data(), w.data(), B, L, C, kw);
    });
}

// RMSNorm and the fused add + RMSNorm; the fused backward with dx in dsum's memory (dx may
// alias dsum) and with no dsum; the forward again from a misaligned x and the backward from a
// misaligned dy (the scalar paths where float4 would run).
static void rmsnorm(int n, int dim) {
    printf("rmsnorm n=%d dim=%d:", n, dim);
    const size_t e = (size_t)n * dim;
    const float eps = 1e-6f;
    const vec x = rv(e, -2, 2), res = rv(e, -2, 2), w = rv(dim, 0.5f, 1.5f), dy = rv(e, -1, 1), ds = rv(e, -1, 1);
    const vec dw0 = rv(dim, -1, 1);
    vec y(e), r(n), dx(e), dw = dw0, gy = nans(e), gr = nans(n), gdx = nans(e), gdw = dw0;
    cpu_f32_rmsnorm_fwd(y.data(), r.data(), x.data(), w.data(), n, dim, eps);
    cpu_f32_rmsnorm_bwd(dx.data(), dw.data(), dy.data(), x.data(), w.data(), r.data(), n, dim);
    GPU(rmsnorm_fwd)(gy.data(), gr.data(), x.data(), w.data(), n, dim, eps);
    GPU(rmsnorm_bwd)(gdx.data(), gdw.data(), dy.data(), x.data(), w.data(), gr.data(), n, dim);
    check_vec("y", gy, y), check_vec("rstd", gr, r), check_vec("dx", gdx, dx), check_vec("dw(acc)", gdw, dw);
    const vec gy_plain = gy;
    vec shifted(e + 1), gy1 = nans(e + 1);
    memcpy(shifted.data() + 1, x.data(), e * sizeof(float));
    GPU(rmsnorm_fwd)(gy1.data() + 1, gr.data(), shifted.data() + 1, w.data(), n, dim, eps);
    check_vec("y(misaligned)", vec(gy1.begin() + 1, gy1.end()), y);
    vec gdx1 = nans(e), gdw1 = dw0;
    memcpy(shifted.data() + 1, dy.data(), e * sizeof(float));
    GPU(rmsnorm_bwd)(gdx1.data(), gdw1.data(), shifted.data() + 1, x.data(), w.data(), gr.data(), n, dim);
    check_vec("dx(misaligned)", gdx1, dx), check_vec("dw(misaligned)", gdw1, dw);

    vec sum(e), gsum = nans(e), dx0(e), gdx0 = nans(e);
    dw = gdw = dw0;
    cpu_f32_add_rmsnorm_fwd(sum.data(), y.data(), r.data(), x.data(), res.data(), w.data(), n, dim, eps);
    cpu_f32_add_rmsnorm_bwd(dx.data(), dw.data(), dy.data(), ds.data(), sum.data(), w.data(), r.data(), n, dim);
    cpu_f32_add_rmsnorm_bwd(dx0.data(), dw.data(), dy.data(), NULL, sum.data(), w.data(), r.data(), n, dim);
    gy = nans(e), gr = nans(n);
    GPU(add_rmsnorm_fwd)(gsum.data(), gy.data(), gr.data(), x.data(), res.data(), w.data(), n, dim, eps);
    vec galias = ds; // dx written over dsum
    GPU(add_rmsnorm_bwd)(galias.data(), gdw.data(), dy.data(), galias.data(), gsum.data(), w.data(), gr.data(), n, dim);
    GPU(add_rmsnorm_bwd)(gdx0.data(), gdw.data(), dy.data(), NULL, gsum.data(), w.data(), gr.data(), n, dim);
    check_vec(" add: sum", gsum, sum), check_vec("y", gy, y), check_vec("rstd", gr, r);
    check_vec("dx(=dsum)", galias, dx), check_vec("dx(no dsum)", gdx0, dx0), check_vec("dw(acc)", gdw, dw);

    // the outputs the model holds, with their bf16 copies written beside them: y of both
    // forwards (from x misaligned too: the scalar path), dx of the fused backward over dsum
    vec scratch_r(n), scratch_dw = dw0, sum2(e);
    const vec none = nans(e);
    with_copy("rmsnorm_fwd", none, gy_plain, 0, e, [&](float *o) {
        GPU(rmsnorm_fwd)(o, scratch_r.data(), x.data(), w.data(), n, dim, eps);
    });
    memcpy(shifted.data() + 1, x.data(), e * sizeof(float));
    with_copy("rmsnorm_fwd (misaligned)", nans(e + 1), gy1, 1, e, [&](float *o) {
        GPU(rmsnorm_fwd)(o, scratch_r.data(), shifted.data() + 1, w.data(), n, dim, eps);
    });
    with_copy("add_rmsnorm_fwd", none, gy, 0, e, [&](float *o) {
        GPU(add_rmsnorm_fwd)(sum2.data(), o, scratch_r.data(), x.data(), res.data(), w.data(), n, dim, eps);
    });
    with_copy("add_rmsnorm_bwd (dx over dsum)", ds, galias, 0, e, [&](float *o) {
        GPU(add_rmsnorm_bwd)(o, scratch_dw.data(), dy.data(), o, gsum.data(), w.data(), gr.data(), n, dim);
    });
    with_copy("add_rmsnorm_bwd (no dsum)", none, gdx0, 0, e, [&](float *o) {
        GPU(add_rmsnorm_bwd)(o, scratch_dw.data(), dy.data(), NULL, gsum.data(), w.data(), gr.data(), n, dim);
    });
}
// The convolution and the L2 norm over heads of head_dim in one op (the fused kernel where
// heads are 128 channels and C a multiple of 128; the two kernels elsewhere), against the CPU.
static void conv_l2norm(int B, int L, int C, int kw, int head_dim) {
    printf("conv_l2norm B=%d L=%d C=%d kw=%d head=%d:", B, L, C, kw, head_dim);
    const size_t n = (size_t)B * L * C, rows = n / head_dim;
    const vec x = rv(n, -2, 2), w = rv((size_t)C * kw, -1, 1);
    vec y(n), r(rows), gy = nans(n), gr = nans(rows);
    cpu_f32_shortconv_silu_l2norm_fwd(y.data(), r.data(), x.data(), w.data(), B, L, C, kw, head_dim, 1e-6f);
    GPU(shortconv_silu_l2norm_fwd)(gy.data(), gr.data(), x.data(), w.data(), B, L, C, kw, head_dim, 1e-6f);
    check_vec("y", gy, y), check_vec("rstd", gr, r);
}

static void l2norm(int rows, int dim) {
    printf("l2norm rows=%d dim=%d:", rows, dim);
    const size_t n = (size_t)rows * dim;
    const vec x = rv(n, -2, 2), dy = rv(n, -1, 1);
    vec y(n), r(rows), dx(n), gy = nans(n), gr = nans(rows), gdx = nans(n);
    cpu_f32_l2norm_fwd(y.data(), r.data(), x.data(), rows, dim, 1e-6f);
    cpu_f32_l2norm_bwd(dx.data(), dy.data(), y.data(), r.data(), rows, dim);
    GPU(l2norm_fwd)(gy.data(), gr.data(), x.data(), rows, dim, 1e-6f);
    GPU(l2norm_bwd)(gdx.data(), dy.data(), gy.data(), gr.data(), rows, dim); // from its own y, rstd
    check_vec("y", gy, y), check_vec("rstd", gr, r), check_vec("dx", gdx, dx);
}

static void gated_rmsnorm(int rows, int dim) {
    printf("gated_rmsnorm rows=%d dim=%d:", rows, dim);
    const size_t n = (size_t)rows * dim;
    const vec x = rv(n, -2, 2), z = rv(n, -3, 3), w = rv(dim, 0.5f, 1.5f), dy = rv(n, -1, 1), dw0 = rv(dim, -1, 1);
    vec y(n), r(rows), dx(n), dz(n), dw = dw0;
    vec gy = nans(n), gr = nans(rows), gdx = nans(n), gdz = nans(n), gdw = dw0;
    cpu_f32_gated_rmsnorm_fwd(y.data(), r.data(), x.data(), z.data(), w.data(), rows, dim, 1e-6f);
    cpu_f32_gated_rmsnorm_bwd(dx.data(), dz.data(), dw.data(), dy.data(), x.data(), z.data(), w.data(), r.data(), rows,
                              dim);
    GPU(gated_rmsnorm_fwd)(gy.data(), gr.data(), x.data(), z.data(), w.data(), rows, dim, 1e-6f);
    GPU(gated_rmsnorm_bwd)(gdx.data(), gdz.data(), gdw.data(), dy.data(), x.data(), z.data(), w.data(), gr.data(),
                           rows, dim);
    check_vec("y", gy, y), check_vec("rstd", gr, r), check_vec("dx", gdx, dx), check_vec("dgate", gdz, dz);
    check_vec("dw(acc)", gdw, dw);
    vec scratch_r(rows); // y with its bf16 copy beside it (the GDN's o_proj operand)
    with_copy("gated_rmsnorm_fwd", nans(n), gy, 0, n, [&](float *o) {
        GPU(gated_rmsnorm_fwd)(o, scratch_r.data(), x.data(), z.data(), w.data(), rows, dim, 1e-6f);
    });
    vec scratch_dx(n), scratch_dw = dw0; // dgate with its copy beside it (the gate projection's dy)
    with_copy("gated_rmsnorm_bwd", nans(n), gdz, 0, n, [&](float *o) {
        GPU(gated_rmsnorm_bwd)(scratch_dx.data(), o, scratch_dw.data(), dy.data(), x.data(), z.data(), w.data(),
                               gr.data(), rows, dim);
    });
}

// The logits as the model lays them out: a row [a's H | b's H] (row stride 2H), the gradients
// the same way (every slot written: a NaN left over fails).
static void gates(int rows, int H) {
    printf("gates rows=%d H=%d:", rows, H);
    const size_t n = (size_t)rows * H;
    vec ab(2 * n); // a-logits up to 30: the softplus's linear branch above 20 is taken
    for (size_t r = 0; r < (size_t)rows; r++)
        for (int h = 0; h < H; h++) ab[r * 2 * H + h] = rnd(-10, 30), ab[r * 2 * H + H + h] = rnd(-4, 4);
    const vec A = rv(H, -1, 2), dt = rv(H, -3, 0);
    const vec dbeta = rv(n, -1, 1), dg = rv(n, -1, 1), dA0 = rv(H, -1, 1), ddt0 = rv(H, -1, 1);
    vec beta(n), g(n), dab(2 * n), dA = dA0, ddt = ddt0;
    vec gbeta = nans(n), gg = nans(n), gdab = nans(2 * n), gdA = dA0, gddt = ddt0;
    const float *a = ab.data(), *b = ab.data() + H;
    cpu_f32_gdn_gates_fwd(beta.data(), g.data(), b, a, 2 * H, A.data(), dt.data(), rows, H);
    cpu_f32_gdn_gates_bwd(dab.data() + H, dab.data(), dA.data(), ddt.data(), dbeta.data(), dg.data(), b, a, 2 * H,
                          A.data(), dt.data(), rows, H);
    GPU(gdn_gates_fwd)(gbeta.data(), gg.data(), b, a, 2 * H, A.data(), dt.data(), rows, H);
    GPU(gdn_gates_bwd)(gdab.data() + H, gdab.data(), gdA.data(), gddt.data(), dbeta.data(), dg.data(), b, a, 2 * H,
                       A.data(), dt.data(), rows, H);
    check_vec("beta", gbeta, beta), check_vec("g", gg, g), check_vec("da|db", gdab, dab);
    check_vec("dA_log(acc)", gdA, dA), check_vec("ddt_bias(acc)", gddt, ddt);
}

static void rope(int B, int L, int H, int d, int pos0) {
    printf("rope B=%d L=%d H=%d d=%d pos0=%d:", B, L, H, d, pos0);
    const size_t n = (size_t)B * L * H * d;
    const vec x = rv(n, -1, 1), dy = rv(n, -1, 1);
    vec y(n), dx(n), gy = nans(n), gdx = nans(n);
    cpu_f32_rope_fwd(y.data(), x.data(), B, L, H, d, 10000.0f, pos0);
    cpu_f32_rope_bwd(dx.data(), dy.data(), B, L, H, d, 10000.0f, pos0);
    GPU(rope_fwd)(gy.data(), x.data(), B, L, H, d, 10000.0f, pos0);
    GPU(rope_bwd)(gdx.data(), dy.data(), B, L, H, d, 10000.0f, pos0);
    vec inplace = x; // y may alias x
    GPU(rope_fwd)(inplace.data(), inplace.data(), B, L, H, d, 10000.0f, pos0);
    check_vec("y", gy, y), check_vec("dx", gdx, dx), check_vec("y(in place)", inplace, y);
    // y with its bf16 copy beside it (q and k), also in place (q); from x misaligned (scalar)
    with_copy("rope_fwd", nans(n), gy, 0, n, [&](float *o) { GPU(rope_fwd)(o, x.data(), B, L, H, d, 10000.0f, pos0); });
    with_copy("rope_fwd (in place)", x, inplace, 0, n,
              [&](float *o) { GPU(rope_fwd)(o, o, B, L, H, d, 10000.0f, pos0); });
    vec shifted(n + 1), gy1 = nans(n + 1);
    memcpy(shifted.data() + 1, x.data(), n * sizeof(float));
    GPU(rope_fwd)(gy1.data() + 1, shifted.data() + 1, B, L, H, d, 10000.0f, pos0);
    with_copy("rope_fwd (misaligned)", nans(n + 1), gy1, 1, n, [&](float *o) {
        GPU(rope_fwd)(o, shifted.data() + 1, B, L, H, d, 10000.0f, pos0);
    });
}

// The embedding: tokens drawn from `vocab` values, so runs of one token cross the backward's
// chunks of 64 sorted rows when n / vocab > 64; token 0 is made the padding row when pad.
static void embedding(int n, int dim, int vocab, int pad) {
    printf("embedding n=%d dim=%d vocab=%d%s:", n, dim, vocab, pad ? " padding 0" : "");
    std::vector<int32_t> tok(n);
    for (int i = 0; i < n; i++) tok[i] = (int32_t)(rv(1, 0, (float)vocab)[0]) % vocab;
    const vec table = rv((size_t)vocab * dim, -1, 1), dout = rv((size_t)n * dim, -1, 1);
    const vec dtable0 = rv((size_t)vocab * dim, -1, 1);
    vec out((size_t)n * dim), gout = nans((size_t)n * dim), dtable = dtable0, gdtable = dtable0;
    const int padding_idx = pad ? 0 : -1;
    cpu_f32_embedding_fwd(out.data(), tok.data(), table.data(), n, dim);
    cpu_f32_embedding_bwd(dtable.data(), dout.data(), tok.data(), n, dim, padding_idx);
    GPU(embedding_fwd)(gout.data(), tok.data(), table.data(), n, dim);
    GPU(embedding_bwd)(gdtable.data(), dout.data(), tok.data(), n, dim, padding_idx);
    check_vec("out", gout, out), check_vec("dtable(acc)", gdtable, dtable);
    if (pad) check_true("the padding row changed", memcmp(gdtable.data(), dtable0.data(), sizeof(float) * dim) == 0);
}

// The mean loss added onto 0.25, every fifth row ignored (an exact 0, as cross-entropy leaves
// it); and with no valid row, nothing added.
static void loss(int n) {
    printf("loss n=%d:", n);
    vec losses = rv(n, 0, 10);
    int valid = 0;
    for (int i = 0; i < n; i++) {
        if (i % 5 == 1) losses[i] = 0;
        else valid++;
    }
    double c = 0.25, g = 0.25, g0 = 0.25;
    cpu_f32_loss_mean_add(&c, losses.data(), n, valid);
    GPU(loss_mean_add)(&g, losses.data(), n, valid);
    GPU(loss_mean_add)(&g0, losses.data(), n, 0);
    check("mean", fabs(g - c) / fabs(c - 0.25), 1e-6); // test_cuda_ops' bound
    check_true("0 valid rows add 0", g0 == 0.25);
}

// test_optimizer's chain: the norm, the clipping factor and AdamW all on the "device".
static void optimizer(size_t count) {
    printf("optimizer count=%zu:", count);
    vec p = rv(count, -1, 1), g = rv(count, -2, 2), m = rv(count, -0.1f, 0.1f), v = rv(count, 0, 0.1f);
    vec P = p, M = m, V = v;
    double sc = 0.25, sg = 0.25, sg2 = 0.25; // added onto a non-zero accumulator
    cpu_f32_sum_squares_add(&sc, g.data(), count);
    GPU(sum_squares_add)(&sg, g.data(), count);
    GPU(sum_squares_add)(&sg2, g.data(), count);
    check("sum_squares", fabs(sg - sc) / sc, 1e-12);
    check_true("sum_squares_add twice: not the same bits", sg == sg2);
    const float max_norm = (float)(0.7 * sqrt(sc)); // clips by about 0.7
    float scale_c = 0, scale_g = 0;
    cpu_f32_grad_clip_scale(&scale_c, &sc, max_norm);
    GPU(grad_clip_scale)(&scale_g, &sg, max_norm);
    check_true("grad_clip_scale: not the CPU's factor bit for bit", scale_g == scale_c && scale_c < 0.71f);
    cpu_f32_adamw_step(p.data(), g.data(), m.data(), v.data(), count, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, &scale_c, 5);
    GPU(adamw_step)(P.data(), g.data(), M.data(), V.data(), count, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, &scale_g, 5);
    check_vec("adamw p", P, p), check_vec("m", M, m), check_vec("v", V, v);
    // a non-finite norm: the factor is NaN and AdamW changes nothing
    const double inf = INFINITY;
    GPU(grad_clip_scale)(&scale_g, &inf, max_norm);
    const vec before = P;
    GPU(adamw_step)(P.data(), g.data(), M.data(), V.data(), count, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, &scale_g, 6);
    check_true("an infinite norm: not a NaN factor", std::isnan(scale_g));
    check_true("adamw_step after an infinite norm: parameters changed",
               memcmp(P.data(), before.data(), count * sizeof(float)) == 0);
    // step statistics: acc += weight * x in double, bit for bit
    double acc_c[5] = {1, 2, 3, 4, 5}, acc_g[5] = {1, 2, 3, 4, 5};
    cpu_f32_accumulate_f64(acc_c, g.data(), 5, 37.0);
    GPU(accumulate_f64)(acc_g, g.data(), 5, 37.0);
    check_true("accumulate_f64: not the CPU's sums", memcmp(acc_g, acc_c, sizeof acc_c) == 0);
    cpu_f32_axpy(p.data(), g.data(), -0.5f, count);
    GPU(axpy)(P.data(), g.data(), -0.5f, count);
    check_vec("axpy", P, p);
}

// bf16 rounding (round_to_bf16, FSDP's: common/bf16.h's rounding; cuda_to_bf16, the operand
// copies': __float2bfloat16's) and widening of count values starting `offset` floats into their
// buffers (an offset breaks the 16-byte alignment: the one-value path), against the CPU's
// functions bit for bit; the values include ties, NaN, infinities and the largest finite float.
static void bf16(long count, long offset) {
    printf("bf16 count=%ld offset=%ld:", count, offset);
    vec src = rv(count + offset, -3, 3);
    const float specials[] = {NAN, INFINITY, -INFINITY, 3.4028235e38f, 1.00390625f, 1.01171875f, -0.0f};
    for (size_t i = 0; i < sizeof specials / sizeof *specials && (long)i < count; i++) src[offset + i * 7 % count] = specials[i];
    std::vector<uint16_t> h(count + offset, 0xdead), want(count);
    GPU(round_to_bf16)(h.data() + offset, src.data() + offset, count);
    for (long i = 0; i < count; i++) want[i] = hyla_bf16_round(src[offset + i]);
    check_true("round_to_bf16: not common/bf16.h's bits", !memcmp(h.data() + offset, want.data(), count * 2));
    vec wide(count + offset, NAN);
    GPU(widen_bf16)(wide.data() + offset, h.data() + offset, count);
    bool same = true;
    for (long i = 0; i < count; i++) {
        const float w = hyla_bf16_widen(want[i]);
        same &= !memcmp(&wide[offset + i], &w, 4);
    }
    check_true("widen_bf16: not common/bf16.h's bits", same);
    std::vector<__nv_bfloat16> c(count + offset);
    cuda_to_bf16(c.data() + offset, src.data() + offset, count);
    same = true;
    for (long i = 0; i < count; i++) same &= c[offset + i].u == __float2bfloat16(src[offset + i]).u;
    check_true("cuda_to_bf16: not __float2bfloat16's bits", same);
    printf(" ok");
}

// SwiGLU, count values `offset` floats into their buffers (an offset: the one-value path):
// the table's fp32 ops against the CPU twins, dgate also in dz's memory (it may alias dz); the
// bf16 outputs the MLP uses must be the fp32 ones rounded, bit for bit.
static void swiglu(long count, long offset) {
    printf("swiglu count=%ld offset=%ld:", count, offset);
    const size_t n = count + offset;
    const vec gate = rv(n, -4, 4), up = rv(n, -2, 2), dz = rv(n, -1, 1);
    vec z(count), dg(count), du(count), gz = nans(n), gdg = nans(n), gdu = nans(n);
    cpu_f32_swiglu_fwd(z.data(), gate.data() + offset, up.data() + offset, count);
    cpu_f32_swiglu_bwd(dg.data(), du.data(), dz.data() + offset, gate.data() + offset, up.data() + offset, count);
    GPU(swiglu_fwd)(gz.data() + offset, gate.data() + offset, up.data() + offset, count);
    GPU(swiglu_bwd)(gdg.data() + offset, gdu.data() + offset, dz.data() + offset, gate.data() + offset,
                    up.data() + offset, count);
    auto tail = [&](const vec &v) { return vec(v.begin() + offset, v.end()); };
    check_vec("z", tail(gz), z), check_vec("dgate", tail(gdg), dg), check_vec("dup", tail(gdu), du);
    vec inplace = dz, gdu2 = nans(n); // dgate over dz
    GPU(swiglu_bwd)(inplace.data() + offset, gdu2.data() + offset, inplace.data() + offset, gate.data() + offset,
                    up.data() + offset, count);
    check_true("swiglu_bwd with dgate over dz: not the same bits",
               !memcmp(inplace.data() + offset, gdg.data() + offset, count * 4) &&
                   !memcmp(gdu2.data() + offset, gdu.data() + offset, count * 4));
    std::vector<__nv_bfloat16> hz(n), hdg(n), hdu(n);
    swiglu_forward(hz.data() + offset, gate.data() + offset, up.data() + offset, count);
    swiglu_backward(hdg.data() + offset, hdu.data() + offset, dz.data() + offset, gate.data() + offset,
                    up.data() + offset, count);
    bool same = true;
    for (long i = 0; i < count; i++) {
        same &= hz[offset + i].u == __float2bfloat16(gz[offset + i]).u;
        same &= hdg[offset + i].u == __float2bfloat16(gdg[offset + i]).u;
        same &= hdu[offset + i].u == __float2bfloat16(gdu[offset + i]).u;
    }
    check_true("bf16 outputs: not the fp32 ones rounded", same);
}

int main(int argc, char **argv) {
    cuda_register_gdn_parts(&gpu);
    cuda_register_rmsnorm(&gpu);
    cuda_register_reduce_ops(&gpu);
    cuda_register_embedding(&gpu);
    cuda_register_bf16_convert(&gpu);
    cuda_register_swiglu(&gpu);
    printf("fused dw (HYLA_NORM_FUSED_DW): %s\n", column_sum::fused_dw() ? "on" : "off");
    int a = 1;
    const bool every_op = a < argc && !strcmp(argv[a], "--every-op");
    a += every_op;
    auto arg = [&](int k) { return a + k < argc ? atol(argv[a + k]) : -1L; };
    while (a < argc) {
        const std::string group = argv[a++];
        int used = 0;
        if (group == "conv") conv(arg(0), arg(1), arg(2), arg(3)), used = 4;
        else if (group == "conv_l2norm") conv_l2norm(arg(0), arg(1), arg(2), arg(3), arg(4)), used = 5;
        else if (group == "rmsnorm") rmsnorm(arg(0), arg(1)), used = 2;
        else if (group == "l2norm") l2norm(arg(0), arg(1)), used = 2;
        else if (group == "gated_rmsnorm") gated_rmsnorm(arg(0), arg(1)), used = 2;
        else if (group == "gates") gates(arg(0), arg(1)), used = 2;
        else if (group == "rope") rope(arg(0), arg(1), arg(2), arg(3), arg(4)), used = 5;
        else if (group == "embedding") embedding(arg(0), arg(1), arg(2), arg(3)), used = 4;
        else if (group == "loss") loss(arg(0)), used = 1;
        else if (group == "optimizer") optimizer((size_t)arg(0)), used = 1;
        else if (group == "bf16") bf16(arg(0), arg(1)), used = 2;
        else if (group == "swiglu") swiglu(arg(0), arg(1)), used = 2;
        else {
            fprintf(stderr, "unknown group %s (conv, conv_l2norm, rmsnorm, l2norm, gated_rmsnorm, gates, rope, embedding, loss, "
                            "optimizer, bf16, swiglu)\n",
                    group.c_str());
            return 2;
        }
        printf("\n");
        a += used;
    }
    // every op the files put in the table, run by some group
    int registered = 0;
#define REAL float
#define HYLA_OP(ret, name, args)                                                                                   \
    if (gpu.name) {                                                                                                \
        registered++;                                                                                              \
        if (every_op && !called.count(#name)) printf("FAIL: %s is registered but no group ran it\n", #name), bad++; \
    }
#include "kernels/ops/all_ops.h"
#undef HYLA_OP
#undef REAL
    if (bad) printf("FAIL: %d checks\n", bad);
    else printf("ok: %d ops registered, %zu run\n", registered, called.size());
    return bad ? 1 : 0;
}
