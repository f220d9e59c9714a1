// Checks mma_emu.h (the CPU stand-in for cuda_mma.cuh) against products built without it: one
// warp, fragments written by hand from the layouts documented in cuda_mma.cuh / the PTX ISA.
//   (a) A by ldsm_x4 from a row-major 16 x 16 tile, B by hand: mma = the naive 16 x 8 product;
//   (b) ldsm_x4_trans of a row-major [k][n] tile = the hand-built B fragments of its two n-tiles;
//   (c) two C n-tiles packed to bf16 are the A fragment of that 16 x 16 (FlashAttention-2's
//       P V without leaving the registers): equal to ldsm_x4 of the tile, and so is the product;
//   (d) pack rounds to nearest even (low half = first argument) and keeps NaN a NaN;
//   (e) mma_tf32 (m16n8k8) on hand-built tf32 fragments = the naive product of the rounded
//       operands; to_tf32 rounds to nearest with ties away from zero (cvt.rna).
// Exit status 1 on any mismatch. Built and run by run_mma.sh (ctest emu.mma).
#include "mma_emu.h"

using namespace hyla_mma;

static float bfv(bf16 h) { return __bfloat162float(h); }
static bf16 bfr(float x) { return __float2bfloat16(x); }

struct tiles {
    bf16 A[16][16], Bkn[16][16], V[16][8]; // Bkn: [k][n], two n-tiles of 8
    bf16 Cbf[16][16];                      // bf16 of A Bkn (exact: small integers)
    float C[16][8], C2[16][16], PV[16][8]; // outputs
    uint32_t b_hand[32][4], b_trans[32][4], a_packed[32][4], a_ldsm[32][4];
};

// B fragment (b0, b1) of lane 4 g + tig for the n-tile at column n0 of a [k][n] tile:
// b0 = k 2 tig, 2 tig + 1 of column n0 + g; b1 = the same k + 8.
template <int N> static void hand_b(uint32_t &b0, uint32_t &b1, const bf16 (&M)[16][N], int n0, int lane) {
    const int g = lane / 4, tig = lane % 4, n = n0 + g;
    b0 = pack(bfv(M[2 * tig][n]), bfv(M[2 * tig + 1][n]));
    b1 = pack(bfv(M[2 * tig + 8][n]), bfv(M[2 * tig + 9][n]));
}
// Lane l's ldmatrix address for the four 8 x 8 quarters of a row-major 16 x 16 tile, in the
// order (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15).
static const bf16 *quarter_row(const bf16 (&M)[16][16], int lane) { return &M[lane % 8 + 8 * (lane / 8 % 2)][8 * (lane / 16)]; }

static void warp(tiles *T) {
    const int lane = threadIdx.x, g = lane / 4, tig = lane % 4;
    // (a)
    uint32_t a[4], b0, b1;
    ldsm_x4(a[0], a[1], a[2], a[3], quarter_row(T->A, lane));
    hand_b(b0, b1, T->Bkn, 0, lane);
    float c[4] = {0, 0, 0, 0};
    mma(c, a, b0, b1);
    T->C[g][2 * tig] = c[0], T->C[g][2 * tig + 1] = c[1], T->C[g + 8][2 * tig] = c[2], T->C[g + 8][2 * tig + 1] = c[3];
    // (b)
    uint32_t *bt = T->b_trans[lane], *bh = T->b_hand[lane];
    ldsm_x4_trans(bt[0], bt[1], bt[2], bt[3], quarter_row(T->Bkn, lane));
    hand_b(bh[0], bh[1], T->Bkn, 0, lane);
    hand_b(bh[2], bh[3], T->Bkn, 8, lane);
    // (c): C = A Bkn over both n-tiles, then C's fragments repacked as an A fragment
    float c0[4] = {0, 0, 0, 0}, c1[4] = {0, 0, 0, 0};
    mma(c0, a, bt[0], bt[1]);
    mma(c1, a, bt[2], bt[3]);
    const float *cs[2] = {c0, c1};
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < 4; i++) T->C2[g + 8 * (i / 2)][8 * j + 2 * tig + i % 2] = cs[j][i];
    uint32_t *ap = T->a_packed[lane], *al = T->a_ldsm[lane];
    ap[0] = pack(c0[0], c0[1]), ap[1] = pack(c0[2], c0[3]), ap[2] = pack(c1[0], c1[1]), ap[3] = pack(c1[2], c1[3]);
    ldsm_x4(al[0], al[1], al[2], al[3], quarter_row(T->Cbf, lane));
    uint32_t vb0, vb1;
    hand_b(vb0, vb1, T->V, 0, lane);
    float pv[4] = {0, 0, 0, 0};
    const uint32_t apk[4] = {ap[0], ap[1], ap[2], ap[3]};
    mma(pv, apk, vb0, vb1);
    T->PV[g][2 * tig] = pv[0], T->PV[g][2 * tig + 1] = pv[1], T->PV[g + 8][2 * tig] = pv[2], T->PV[g + 8][2 * tig + 1] = pv[3];
}

// (e): A [16][8], B [8][8] floats; C = A B on m16n8k8 tf32 fragments built by hand from the
// PTX layout: a[0] (g, tig), a[1] (g + 8, tig), a[2] (g, tig + 4), a[3] (g + 8, tig + 4);
// b0 (k tig, n g), b1 (k tig + 4, n g).
struct tf32_tiles {
    float A[16][8], B[8][8], C[16][8];
};
static void warp_tf32(tf32_tiles *T) {
    const int lane = threadIdx.x, g = lane / 4, tig = lane % 4;
    const uint32_t a[4] = {to_tf32(T->A[g][tig]), to_tf32(T->A[g + 8][tig]), to_tf32(T->A[g][tig + 4]),
                           to_tf32(T->A[g + 8][tig + 4])};
    float c[4] = {0, 0, 0, 0};
    mma_tf32(c, a, to_tf32(T->B[tig][g]), to_tf32(T->B[tig + 4][g]));
    T->C[g][2 * tig] = c[0], T->C[g][2 * tig + 1] = c[1], T->C[g + 8][2 * tig] = c[2], T->C[g + 8][2 * tig + 1] = c[3];
}

static unsigned long long st = 7;
static float rnd(float lo, float hi) {
    st = st * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * ((st >> 40) / 16777216.0f);
}
static int irnd(int lo, int hi) { return lo + (int)(rnd(0, 1) * (hi - lo + 1)) % (hi - lo + 1); }

static int fails = 0;
static void check(const char *what, bool ok) {
    printf("%-72s %s\n", what, ok ? "ok" : "FAIL");
    fails += !ok;
}

int main() {
    static tiles T;
    // (a) random bf16 operands: the products are exact in fp32, only the sums' order differs
    for (int r = 0; r < 16; r++)
        for (int k = 0; k < 16; k++) T.A[r][k] = bfr(rnd(-1, 1));
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 16; n++) T.Bkn[k][n] = bfr(rnd(-1, 1));
    // (b), (c): small integers, so that C = A Bkn is exact and exactly a bf16
    static tiles I;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) I.A[r][c] = bfr((float)irnd(-2, 2)), I.Bkn[r][c] = bfr((float)irnd(-2, 2));
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 8; n++) I.V[k][n] = bfr((float)irnd(-3, 3));
    for (int r = 0; r < 16; r++) // I's exact A Bkn, as bf16: what (c)'s repacked fragments must hold
        for (int n = 0; n < 16; n++) {
            float s = 0;
            for (int k = 0; k < 16; k++) s += bfv(I.A[r][k]) * bfv(I.Bkn[k][n]);
            I.Cbf[r][n] = bfr(s);
        }
    tiles *pt = &T, *pi = &I;
    emu_launch(dim3(1), dim3(32), [=] { warp(pt); });
    emu_launch(dim3(1), dim3(32), [=] { warp(pi); });

    double worst = 0;
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 8; n++) {
            double want = 0, mag = 0;
            for (int k = 0; k < 16; k++)
                want += (double)bfv(T.A[r][k]) * bfv(T.Bkn[k][n]), mag += fabs((double)bfv(T.A[r][k]) * bfv(T.Bkn[k][n]));
            worst = std::max(worst, fabs(T.C[r][n] - want) / mag); // relative to the sum of |terms|
        }
    char msg[128];
    snprintf(msg, sizeof msg, "(a) ldsm_x4 A x hand-built B = naive product (rel err %.1e, bound 1e-6)", worst);
    check(msg, worst <= 1e-6);
    check("(b) ldsm_x4_trans of a [k][n] tile = hand-built B fragments",
          !memcmp(T.b_trans, T.b_hand, sizeof T.b_hand) && !memcmp(I.b_trans, I.b_hand, sizeof I.b_hand));
    bool c_exact = true, pv_exact = true;
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 16; n++) c_exact &= I.C2[r][n] == bfv(I.Cbf[r][n]);
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 8; n++) {
            float s = 0;
            for (int k = 0; k < 16; k++) s += bfv(I.Cbf[r][k]) * bfv(I.V[k][n]);
            pv_exact &= I.PV[r][n] == s;
        }
    check("(c) two C n-tiles (ldsm_x4_trans B) = the exact 16 x 16 product", c_exact);
    check("(c) the C n-tiles packed = ldsm_x4's A fragment of that tile", !memcmp(I.a_packed, I.a_ldsm, sizeof I.a_ldsm));
    check("(c) the packed A fragment x hand-built B = the exact product", pv_exact);
    // (d) bf16 keeps 7 mantissa bits: 1 + 2^-8 is a tie (to 1), 1 + 3 2^-8 too (to 1 + 2^-6)
    // and the NaN of all-ones bits (uninitialised memory in emu.h) must not carry round to 0
    const uint32_t ones = 0xffffffffu;
    float nan_ones;
    memcpy(&nan_ones, &ones, 4);
    const uint32_t p1 = pack(1 + 0x1p-8f, 1 + 3 * 0x1p-8f), p2 = pack(1 + 0x1p-8f + 0x1p-12f, nan_ones);
    check("(d) pack rounds to nearest even, low half first, NaN stays NaN",
          p1 == (0x3f80u | 0x3f82u << 16) && (p2 & 0xffff) == 0x3f81 && isnan(emu_bf16_value(p2 >> 16)));
    // (e) random operands rounded to tf32 by to_tf32 (their products exact in fp32)
    static tf32_tiles F;
    for (int r = 0; r < 16; r++)
        for (int k = 0; k < 8; k++) F.A[r][k] = rnd(-1, 1);
    for (int k = 0; k < 8; k++)
        for (int n = 0; n < 8; n++) F.B[k][n] = rnd(-1, 1);
    tf32_tiles *pf = &F;
    emu_launch(dim3(1), dim3(32), [=] { warp_tf32(pf); });
    auto tf = [](float x) { return emu_tf32_value(to_tf32(x)); };
    double worst_tf32 = 0;
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 8; n++) {
            double want = 0, mag = 0;
            for (int k = 0; k < 8; k++) want += (double)tf(F.A[r][k]) * tf(F.B[k][n]), mag += fabs((double)tf(F.A[r][k]) * tf(F.B[k][n]));
            worst_tf32 = std::max(worst_tf32, fabs(F.C[r][n] - want) / mag);
        }
    snprintf(msg, sizeof msg, "(e) mma_tf32 on hand-built fragments = naive product (rel err %.1e, bound 1e-6)", worst_tf32);
    check(msg, worst_tf32 <= 1e-6);
    // tf32 keeps 10 fraction bits: 1 + 2^-11 is a tie (away: 1 + 2^-10), 1 + 2^-12 rounds down,
    // -(1 + 3 2^-11) is a tie too (away: -(1 + 2^-9)); 1 + 2^-10 + 2^-12 keeps 1 + 2^-10
    check("(e) to_tf32 rounds to nearest, ties away from zero",
          tf(1 + 0x1p-11f) == 1 + 0x1p-10f && tf(1 + 0x1p-12f) == 1 && tf(-(1 + 3 * 0x1p-11f)) == -(1 + 0x1p-9f) &&
              tf(1 + 0x1p-10f + 0x1p-12f) == 1 + 0x1p-10f);
    return fails ? 1 : 0;
}
