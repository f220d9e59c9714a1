// CUDA, inside the backend: what the LTE router's fused kernels (cuda_lte_router_fused.cu) and
// their planner (cuda_lte_router_plan.cu) share — the constants, a conv's product layout, the
// plans of both directions — and the planner's entry points.
#ifndef HYLA_CUDA_LTE_ROUTER_PLAN_CUH
#define HYLA_CUDA_LTE_ROUTER_PLAN_CUH

#include <stddef.h>

#include "cuda_lte_router.cuh"

namespace fused {

constexpr int THREADS = 256;
constexpr int TN = 4;                          // output channels of a thread in a product (a float4)
constexpr int MAX_TM = 8;                      // its rows, at most
constexpr int W_CHUNK = 2048;                  // floats of a staged weight chunk (8 KB; two in flight)
constexpr int W_CHUNK_MMA = 3072;              // the same in the tensor-core form (12 KB of tf32)
constexpr int FRAG = 128;                      // tf32 values of a staged B fragment pair: 32 lanes x
                                               // (b0, b1 of two m16n8k8 products)
constexpr int MAXC = HYLA_LTE_MAX_CONVS;
constexpr int SMEM_MAX = 227 * 1024;           // bytes of shared memory a block may have (sm_90)
constexpr int SMEM_TWO = 113 * 1024;           // at most this, two blocks share an SM
constexpr int DW_CO = 8, DW_CI = 4;            // a thread's weight-gradient tile
constexpr int DW_TILE = 32 * DW_CO * DW_CI;    // floats of a warp's
constexpr double DRAW_COST = 24;               // a dropout draw, in multiply-adds (cost model only)

__host__ __device__ inline int round_up(int x, int m) { return (x + m - 1) / m * m; }
// Shared-memory row stride of c channels: room for 8-channel loads, and an odd number of float4s
// so that the float4s of neighbouring rows fall in different banks.
__host__ __device__ inline int row_stride(int c) { return round_up(c, 8) + 4; }
// Tokens before (left) and after (right) an output that conv l reads.
__host__ __device__ inline int left_reach(const router_dims &r, int l) {
    return r.dilation[l] * ((r.kernel[l] - 1) / 2);
}
__host__ __device__ inline int right_reach(const router_dims &r, int l) {
    return r.dilation[l] * (r.kernel[l] - 1) - left_reach(r, l);
}
__host__ __device__ inline int reach(const router_dims &r, int l) { return r.dilation[l] * (r.kernel[l] - 1); }

// A conv as a product on shared memory: out[row][n] = sum over taps i and reduction channels kk
// of A[row + shift_i][kk] * Wi[kk][n], shift_i = dil * i (forward: kk = input channel, n = output
// channel) or dil * (taps - 1 - i) (backward to the input: kk = output channel, n = input).
struct product {
    int K, N, Kp, Np;        // reduction and output channels, and both padded to a multiple of 4
    int taps, dil, reverse;
    int ng, rg, tm, passes;  // ng channel groups x rg row groups of threads; tm rows each; passes over the rows
    int wc, cb, rb;          // a warp: wc channel groups x 32 / wc row groups; cb x rb warp tiles
    int kc;                  // reduction channels per staged chunk (a multiple of 4); mma: (tap, k-step) units
    size_t w;                // where its staged weights start: [head][tap][Kp][Np]
    // The tensor-core form (mma, bf16 mode): warp tiles of mt m-tiles (16 rows) x nt n-tiles (8
    // channels), cbw across the ntt n-tiles by rbw down the rows: rpp rows a pass, `rows` in all;
    // the reduction in k-steps of 16 (K16 channels). Staged weights: [head][tap][k-step][n-tile]
    // [B fragments: each lane's b0, b1 of the k-step's two tf32 products].
    int mma, mt, nt, ntt, cbw, rbw, rpp, rows, K16;
};
struct products {
    product p[MAXC];
    int backward;  // staged for the input gradient (K = output channels)
    int mma;       // staged as B fragments (the tensor-core form)
    size_t total;  // floats of staged weights, every conv and head
};
// The backward's weights as staged for its products, made by the first launch of an op call
// and kept for the call's other row launches with as many rows (the plan, and so the staging,
// is a function of the dimensions; within a call the launches differ in their rows' dropout
// keys and, for the last, maybe their count: at B 4, 3 of 4 stagings fewer), freed at its end.
struct weight_stage {
    int rows = 0; // the launch's rows (r.B) the weights were staged for
    float *wt = nullptr;
    weight_stage() = default;
    weight_stage(const weight_stage &) = delete;
    weight_stage &operator=(const weight_stage &) = delete;
    ~weight_stage();
};
// Floats of one head's staged weights for p, and of one staged chunk of them.
__host__ __device__ inline size_t head_floats(const product &p) {
    return p.mma ? (size_t)p.taps * (p.K16 / 16) * p.ntt * FRAG : (size_t)p.taps * p.Kp * p.Np;
}
__host__ __device__ inline int chunk_floats(const product &p) {
    return p.mma ? p.kc * p.ntt * FRAG : p.taps * p.kc * p.Np;
}

struct fwd_plan {
    router_dims r;
    products prod;
    int T, tiles;            // tokens per tile, tiles per sequence
    int lsum[MAXC + 1];      // rows of conv l's input before the tile's first token
    int rows[MAXC + 1];      // rows of conv l's input held (rows[n]: u_n, the tile's T)
    int act_floats, w_floats;
};

struct bwd_plan {
    router_dims r;
    products prod;
    int T, tiles, tps, segs;  // tokens per tile, tiles per sequence, tiles per block, blocks per sequence
    int hb[MAXC + 1];         // rows of da_l before the tile's first token (right reaches of convs < l)
    int prows[MAXC + 1];      // rows of da_l held (l = 1 .. n)
    int da_floats, x_floats, w_floats, dz_floats;
    int dw_tiles[MAXC];
    size_t slot_w[MAXC], slot_b[MAXC], slot_pw, slot_pb, slot_floats;  // a block's partial sums
};

// Conv l's weight gradient as warp tiles: 4 x 8 lanes, each 8 output x 4 input channels, per tap.
struct dw_grid {
    int cog, cig, cob, cib, tiles;  // channel groups of 8 out / 4 in; tiles of 4 x 8 groups; warp tiles
};
__host__ __device__ inline dw_grid dw_grid_of(const router_dims &r, int l) {
    dw_grid g;
    g.cog = (r.c[l + 1] + DW_CO - 1) / DW_CO, g.cig = (r.c[l] + DW_CI - 1) / DW_CI;
    g.cob = (g.cog + 3) / 4, g.cib = (g.cig + 7) / 8;
    g.tiles = r.kernel[l] * g.cob * g.cib;
    return g;
}
// The same on the tensor cores: a warp tile of one tap is DWM_MT m-tiles (16 output channels)
// x DWM_NT n-tiles (8 input channels); mb x nb of them cover the channels (padded to 16).
constexpr int DWM_MT = 2, DWM_NT = 4, DWM_TILE = DWM_MT * DWM_NT * 128; // floats of a warp tile's fragments
struct dwm_grid {
    int mtiles, ntiles, mb, nb, tiles;
};
__host__ __device__ inline dwm_grid dwm_grid_of(const router_dims &r, int l) {
    dwm_grid g;
    g.mtiles = round_up(r.c[l + 1], 16) / 16, g.ntiles = round_up(r.c[l], 16) / 8;
    g.mb = (g.mtiles + DWM_MT - 1) / DWM_MT, g.nb = (g.ntiles + DWM_NT - 1) / DWM_NT;
    g.tiles = r.kernel[l] * g.mb * g.nb;
    return g;
}
// Row stride (bf16) of the weight gradient's bf16 operands of c channels: 16-byte rows (for
// ldmatrix) an odd number of 16 bytes apart, so that 8 neighbouring rows fall in distinct banks.
__host__ __device__ inline int bf16_stride(int c) { return round_up(c, 16) + 8; }

// The plans for a shape (cached per shape and form; the call's keys and p copied in): false when
// the shape's tile does not fit (mma: in the tensor-core form).
bool forward_plan(fwd_plan *pl, const router_dims &r, bool mma);
bool backward_plan(bwd_plan *pl, const router_dims &r, bool mma);
// Uncached, for a given SM count (the emulation prints plans with them), shared memory of a
// plan's blocks, a product's cost in thread-steps.
bool plan_forward(fwd_plan *out, const router_dims &r, int sms, bool mma);
bool plan_backward(bwd_plan *out, const router_dims &r, int sms, bool mma);
size_t fwd_smem(const fwd_plan &pl);
size_t bwd_smem(const bwd_plan &pl);
double product_cost(const product &p);

} // namespace fused

#endif
