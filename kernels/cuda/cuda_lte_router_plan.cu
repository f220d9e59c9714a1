// CUDA, host side: the LTE router's fused kernels' plans (cuda_lte_router_fused.cu) — for a
// shape, how each conv's product is laid over the threads (CUDA cores: thread tiles of tm rows x
// 4 channels; tensor cores: warp tiles of m- and n-tiles), the tile length T of each direction,
// the backward's segments and partial-sum slots, the staged weights' layout — chosen by a small
// cost model (padding, load-to-multiply ratio, halo, dropout draws, shared memory for two blocks
// per SM, whole waves of blocks), and cached per shape.
#include <stdlib.h>
#include <string.h>

#include <algorithm>

#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_lte_router_plan.cuh"

namespace fused {

// Thread-steps of a product (idle threads included): the multiply-adds and their operand loads
// (4 + tm float4 loads per 16 tm multiply-adds).
static double product_cost_simt(const product &p) {
    return (double)p.passes * p.tm * THREADS * TN * p.Kp * p.taps * (17.0 * p.tm + 4) / (16.0 * p.tm);
}
// The tensor-core form's: per warp tile, tap and k-step 2 mt 16-byte A loads (4 shared-memory
// wavefronts each) and nt 16-byte B loads (4 each), a wavefront a cycle of the SM (the time of
// 128 thread-steps); or, where more, its 2 mt nt tf32 mma (m16n8k8 at half the bf16 rate:
// about a cycle each, a guess). The 8 roundings to tf32 per m-tile are not counted. Warp tiles
// wholly past the rows are skipped.
double product_cost(const product &p) {
    if (!p.mma) return product_cost_simt(p);
    const int tiles = (p.rows + 16 * p.mt - 1) / (16 * p.mt); // row tiles of all passes
    const double per_step = std::max(8.0 * p.mt + 4.0 * p.nt, 2.0 * p.mt * p.nt) * 128;
    return (double)tiles * p.cbw * p.taps * (p.K16 / 16) * per_step;
}
// Threads over the output channel groups: warp tiles of wc groups (a power of two, at most 8) by
// 32 / wc row groups, cb tiles across the groups, rb down the rows (8 warps).
static void thread_layout(product *p) {
    p->ng = p->Np / TN;
    p->wc = 1;
    while (p->wc < 8 && p->wc < p->ng) p->wc *= 2;
    p->cb = (p->ng + p->wc - 1) / p->wc;
    p->rb = std::max(1, THREADS / 32 / p->cb);
    p->rg = p->rb * (32 / p->wc);
}
// Lays out p over `rows` output rows at the cheapest tm; false when none fits (more output channel
// groups than threads, or more than one pass if single_pass). A weight chunk holds at least 4
// reduction channels: wide convs take chunks over W_CHUNK (the shared-memory check decides).
static bool make_product_mma(product *p, int K, int N, int rows, int taps, int dil, int reverse, bool single_pass);
static bool make_product(product *p, int K, int N, int rows, int taps, int dil, int reverse, bool single_pass,
                         bool mma) {
    if (mma) return make_product_mma(p, K, N, rows, taps, dil, reverse, single_pass);
    product base{};
    base.K = K, base.N = N, base.Kp = round_up(K, 4), base.Np = round_up(N, 4);
    base.taps = taps, base.dil = dil, base.reverse = reverse;
    thread_layout(&base);
    if (base.cb > THREADS / 32) return false;
    base.kc = std::min(base.Kp, std::max(4, W_CHUNK / (taps * base.Np) / 4 * 4));
    double best = -1;
    for (int tm = 1; tm <= MAX_TM; tm++) {
        product c = base;
        c.tm = tm, c.passes = (rows + c.rg * tm - 1) / (c.rg * tm);
        if (single_pass && c.passes > 1) continue;
        const double cost = product_cost(c);
        if (best < 0 || cost < best) best = cost, *p = c;
    }
    return best >= 0;
}
// The tensor-core form: the cheapest warp tile (8 warps: cbw across the n-tiles, the last one
// perhaps with fewer, by rbw down the rows); false when the n-tiles need more than 8 warps (N
// over 256), or more than one pass if single_pass. A weight chunk holds whole k-steps.
static bool make_product_mma(product *p, int K, int N, int rows, int taps, int dil, int reverse, bool single_pass) {
    static const int tiles[][2] = {{1, 1}, {1, 2}, {1, 4}, {2, 1}, {2, 2}, {2, 4}, {4, 1}, {4, 2}}; // product_of's
    product base{};
    base.K = K, base.N = N, base.Kp = round_up(K, 4), base.Np = round_up(N, 4);
    base.taps = taps, base.dil = dil, base.reverse = reverse;
    base.mma = 1, base.K16 = round_up(K, 16), base.ntt = round_up(N, 8) / 8, base.rows = rows;
    base.kc = std::min(taps * base.K16 / 16, std::max(1, W_CHUNK_MMA / (FRAG * base.ntt))); // units a chunk
    double best = -1;
    for (const auto &t : tiles) {
        product c = base;
        c.mt = t[0], c.nt = t[1];
        c.cbw = (c.ntt + c.nt - 1) / c.nt;
        if (c.cbw > THREADS / 32) continue;
        c.rbw = THREADS / 32 / c.cbw, c.rpp = c.rbw * 16 * c.mt, c.passes = (rows + c.rpp - 1) / c.rpp;
        if (single_pass && c.passes > 1) continue;
        const double cost = product_cost(c);
        if (best < 0 || cost < best) best = cost, *p = c;
    }
    return best >= 0;
}
// Each product's staged weights one after the other.
static void stage_layout(products *prod, int n, int H, int backward) {
    prod->backward = backward, prod->mma = prod->p[0].mma, prod->total = 0;
    for (int l = 0; l < n; l++) {
        product &p = prod->p[l];
        p.w = prod->total;
        prod->total += (size_t)H * head_floats(p);
    }
}
// Time of a grid of equal blocks of `cost` each (thread-steps): whole waves of per_sm blocks on
// every SM, then the rest spread over the SMs. An SM holding one block (8 warps) hides that
// block's barriers and loads less well than one holding two: counted as 70% of its throughput
// (a guess).
static double grid_time(long long blocks, int sms, size_t bytes, double cost) {
    const int per_sm = bytes <= (size_t)SMEM_TWO ? 2 : 1;
    const long long slots = (long long)sms * per_sm, rest = blocks % slots;
    auto wave = [&](long long k) { return k == 0 ? 0.0 : (double)k * cost / (k >= 2 ? 1.0 : 0.7); };
    return (double)(blocks / slots) * wave(per_sm) + wave((rest + sms - 1) / sms);
}

// Experiments (not for training runs): HYLA_ROUTER_FWD_ROWS=R takes only the forward tile of R
// conv-0 rows (the tensor-core form: 16 .. 512, powers of two), HYLA_ROUTER_BWD_T=T only the
// backward tile of T tokens, where the shape allows them, in place of the cost model's choice:
// for timing other tiles on a GPU (`hyla bench kernels --only lte_router`). 0 or unset: the model.
static int forced(const char *name) {
    const char *e = getenv(name);
    return e && *e ? atoi(e) : 0;
}

// Forward: conv 0 covers one pass of rg * tm rows (so every conv can write its output over its
// input); T is what is left after the later convs' reaches. The tm with the least grid time wins.
// The tensor-core form (mma): conv 0 covers one pass of a warp-tile layout, 16 to 512 rows.
bool plan_forward(fwd_plan *out, const router_dims &r, int sms, bool mma) {
    const int n = r.n;
    int span[MAXC + 1] = {0}, lsum[MAXC + 1] = {0}; // over convs >= l: reaches, left reaches
    for (int l = n - 1; l >= 0; l--) span[l] = span[l + 1] + reach(r, l), lsum[l] = lsum[l + 1] + left_reach(r, l);
    product conv0{};
    conv0.Np = round_up(r.c[1], 4);
    thread_layout(&conv0);
    double best = -1;
    for (int j = 1; j <= (mma ? 6 : MAX_TM); j++) {
        fwd_plan pl{};
        pl.r = r, pl.T = (mma ? 8 << j : conv0.rg * j) - span[1];
        if (pl.T < 1 || (forced("HYLA_ROUTER_FWD_ROWS") && pl.T + span[1] != forced("HYLA_ROUTER_FWD_ROWS"))) continue;
        pl.tiles = (r.L + pl.T - 1) / pl.T;
        int act = 0, wch = 0;
        double cost = 0;
        for (int l = 0; l <= n; l++) {
            pl.lsum[l] = lsum[l], pl.rows[l] = pl.T + span[l];
            act = std::max(act, pl.rows[l] * row_stride(r.c[l]));
            cost += (double)pl.rows[l] * r.c[l] * (r.p > 0 && l < n ? DRAW_COST : 1);
        }
        bool ok = true;
        for (int l = 0; l < n && ok; l++) {
            product &p = pl.prod.p[l];
            ok = make_product(&p, r.c[l], r.c[l + 1], pl.rows[l + 1], r.kernel[l], r.dilation[l], 0, true, mma);
            if (ok) wch = std::max(wch, chunk_floats(p)), cost += product_cost(p) + head_floats(p);
        }
        pl.act_floats = round_up(act, 4), pl.w_floats = 2 * wch;
        const size_t bytes = sizeof(float) * (size_t)(pl.act_floats + pl.w_floats);
        if (!ok || bytes > (size_t)SMEM_MAX) continue;
        const double time = grid_time((long long)r.B * r.H * pl.tiles, sms, bytes, cost);
        if (best < 0 || time < best) best = time, *out = pl;
    }
    if (best < 0) return false;
    stage_layout(&out->prod, n, r.H, 0);
    return true;
}
size_t fwd_smem(const fwd_plan &pl) { return sizeof(float) * (size_t)(pl.act_floats + pl.w_floats); }
size_t bwd_smem(const bwd_plan &pl) {
    return sizeof(float) * (size_t)(2 * pl.da_floats + pl.x_floats + pl.w_floats + pl.dz_floats);
}

// A backward tile of T tokens: its products, shared memory and cost (thread-steps); false if it
// does not fit.
static bool backward_tile(bwd_plan *pl, const router_dims &r, int T, double *cost, bool mma) {
    const int n = r.n;
    *pl = bwd_plan{};
    pl->r = r, pl->T = T, pl->tiles = (r.L + T - 1) / T;
    int da = 0, x = 0, wch = 0, xb0 = 0, pbmax = 0;
    *cost = 0;
    for (int l = 0; l < n; l++) pl->hb[l + 1] = pl->hb[l] + right_reach(r, l);
    for (int j = 1, lb = 0; j <= n; j++) {
        lb += left_reach(r, j - 1);
        pl->prows[j] = T + pl->hb[j] + lb;
        da = std::max(da, pl->prows[j] * row_stride(r.c[j]));
    }
    for (int l = 0; l < n; l++) {
        product &p = pl->prod.p[l];
        const int rows = l > 0 ? pl->prows[l] : T;
        if (!make_product(&p, r.c[l + 1], r.c[l], rows, r.kernel[l], r.dilation[l], 1, false, mma)) return false;
        wch = std::max(wch, chunk_floats(p));
        if (l > 0 && !mma) x = std::max(x, (T + reach(r, l)) * row_stride(r.c[l]));
        const dw_grid g = dw_grid_of(r, l);
        *cost += product_cost(p) + (double)p.passes * head_floats(p);
        if (mma) { // per warp tile and 16 rows 4 ldmatrix x4 (4 wavefronts each) for 8 mma; the copies
            const dwm_grid gm = dwm_grid_of(r, l);
            const int held = round_up(T, 16);
            *cost += (double)((gm.tiles + 7) / 8) * 8 * (held / 16) * 16 * 128;
            *cost += (double)(held + reach(r, l)) * round_up(r.c[l], 16) + (double)held * round_up(r.c[l + 1], 16);
            // their room: the input's where X goes (conv 0: buf1 and Xr), da's in W
            const int xb = (held + reach(r, l)) * bf16_stride(r.c[l]) / 2, pb = held * bf16_stride(r.c[l + 1]) / 2;
            if (l > 0) x = std::max(x, xb);
            else xb0 = xb;
            pbmax = std::max(pbmax, pb);
        } else {
            *cost += (double)((g.tiles + 7) / 8) * THREADS * DW_CO * DW_CI * T * 35.0 / 32;
        }
        *cost += (double)(T + reach(r, l) + rows) * r.c[l] * (r.p > 0 ? DRAW_COST : 1);
    }
    pl->da_floats = round_up(da, 4);
    const int x0 = mma ? xb0 : (T + reach(r, 0)) * row_stride(r.c[0]); // conv 0's input spans buf1 and Xr
    pl->x_floats = round_up(std::max(x, x0 - pl->da_floats), 4);
    pl->w_floats = round_up(std::max(2 * wch, pbmax), 8); // two halves of whole 16 bytes
    pl->dz_floats = round_up(pl->prows[n], 4);
    return bwd_smem(*pl) <= (size_t)SMEM_MAX;
}

// Backward: the tile length T and the segments (blocks of tps consecutive tiles) with the least
// grid time; fewer segments (less partial-sum scratch) where equal. Then the slot layout.
bool plan_backward(bwd_plan *out, const router_dims &r, int sms, bool mma) {
    const int n = r.n;
    const long long seqs = (long long)r.B * r.H;
    double best = -1;
    for (int T = 4; T <= 256; T++) {
        bwd_plan pl;
        double cost;
        if (forced("HYLA_ROUTER_BWD_T") && T != forced("HYLA_ROUTER_BWD_T")) continue;
        if (!backward_tile(&pl, r, T, &cost, mma)) continue;
        const size_t bytes = bwd_smem(pl);
        const long long most = std::min<long long>(pl.tiles, 4LL * sms / seqs + 1); // more than 2 waves: no gain
        for (int segs = 1; segs <= most; segs++) {
            const int tps = (pl.tiles + segs - 1) / segs;
            if (segs > 1 && (pl.tiles + tps - 1) / tps != segs) continue; // the same blocks as fewer segments
            const double time = grid_time(seqs * segs, sms, bytes, tps * cost);
            if (best < 0 || time < best * (1 - 1e-9)) best = time, *out = pl, out->tps = tps, out->segs = segs;
        }
    }
    if (best < 0) return false;
    bwd_plan &pl = *out;
    size_t at = 0;
    for (int l = 0; l < n; l++) {
        pl.dw_tiles[l] = mma ? dwm_grid_of(r, l).tiles : dw_grid_of(r, l).tiles, pl.slot_w[l] = at;
        at += (size_t)pl.dw_tiles[l] * (mma ? DWM_TILE : DW_TILE);
    }
    for (int l = 0; l < n; l++) pl.slot_b[l] = at, at += round_up(r.c[l + 1], 4);
    pl.slot_pw = at, at += round_up(r.c[n], 4);
    pl.slot_pb = at, at += 4;
    pl.slot_floats = at;
    stage_layout(&pl.prod, n, r.H, 1);
    return true;
}

// The last plan of each direction, for its shape: a training step asks for the same few shapes
// again and again (the plan does not depend on the dropout keys or p, only on whether p > 0).
struct plan_key {
    int B, L, H, d, n, kernel[MAXC], dilation[MAXC], dropout, sms;
};
static plan_key key_of(const router_dims &r, int sms) {
    plan_key k;
    memset(&k, 0, sizeof k);
    k.B = r.B, k.L = r.L, k.H = r.H, k.d = r.d, k.n = r.n, k.dropout = r.p > 0, k.sms = sms;
    for (int l = 0; l < r.n; l++) k.kernel[l] = r.kernel[l], k.dilation[l] = r.dilation[l];
    return k;
}
template <class Plan> struct plan_cache {
    bool valid, fits;
    plan_key key;
    Plan plan;
};
// (A cache per form: c[mma].)
template <class Plan>
static bool cached_plan(plan_cache<Plan> *c, Plan *out, const router_dims &r, int sms, bool mma,
                        bool (*make)(Plan *, const router_dims &, int, bool)) {
    const plan_key k = key_of(r, sms);
    c += mma;
    if (!c->valid || memcmp(&k, &c->key, sizeof k) != 0) {
        c->valid = true, c->key = k;
        c->fits = make(&c->plan, r, sms, mma);
    }
    *out = c->plan;
    out->r = r; // this call's keys and p
    return c->fits;
}

static int sm_count(void) {
    int dev = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n > 0 ? n : 1;
}

bool forward_plan(fwd_plan *pl, const router_dims &r, bool mma) {
    static plan_cache<fwd_plan> cache[2];
    return cached_plan(cache, pl, r, sm_count(), mma, plan_forward);
}
bool backward_plan(bwd_plan *pl, const router_dims &r, bool mma) {
    static plan_cache<bwd_plan> cache[2];
    return cached_plan(cache, pl, r, sm_count(), mma, plan_backward);
}

} // namespace fused
