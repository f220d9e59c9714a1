/* The gated delta rule computed chunkwise, chunk C = 64 (MODEL.md §3.4 forward F1-F6,
 * §3.5 backward B1-B6). Same function and arguments as gdr_recurrent_*.
 *
 * Per (b, h) and chunk n (local rows r = 0..c-1, c <= C, the last chunk may be ragged):
 *   gam = chunk-local cumsum of g,  E[r,s] = exp(gam_r - gam_s) for r >= s (else 0)
 *   A = strict_lower(diag(beta) K K^T ⊙ E),  T = (I + A)^-1
 *   W = T diag(beta e^gam) K,  U = T diag(beta) V
 *   Delta = U - W H_n
 *   O = scale (diag(e^gam) Q H_n + (Q K^T ⊙ E) Delta)
 *   H_{n+1} = e^{gam_last} H_n + (diag(e^{gam_last - gam}) K)^T Delta
 * Only differences gam_r - gam_s with r >= s and gam_r itself are exponentiated, so no
 * factor exceeds 1 and a strongly decaying chunk underflows to 0 instead of overflowing.
 *
 * The backward pass re-runs F1-F5 over the whole sequence, keeping T, W, U, Delta and
 * H_n of every chunk in per-thread scratch, then walks the chunks in reverse (B2-B6).
 * T is formed by plain forward substitution over the whole chunk (the reference does
 * 16x16 blocks and merges them: the same matrix). B5 uses
 * -T^T dT T^T = -(T^T dW) W^T - (T^T dU) U^T, which follows from dT = dW Kb^T + dU Vb^T,
 * W = T Kb, U = T Vb, and avoids two c x c x c products. B7 (the L2-norm backward) is the
 * caller's, through l2norm_bwd.
 *
 * Work is split over (b, h) only, each with its own scratch, so results do not depend on
 * the thread count. The BLAS calls run inside the OpenMP threads: OpenBLAS should be
 * single-threaded there (OPENBLAS_NUM_THREADS=1 or openblas_set_num_threads(1)), or its
 * own threads contend with OpenMP's. */
#include "cpu_ops.h"
#include "real.h"

#include "../../common/hyla_error.h"

enum { CH = 64 }; /* chunk size C */

struct gdr_dims {
    int B, L, H, dk, dv;
    REAL scale;
};

/* Per-thread workspace. Chunk buffers hold up to CH rows; square ones have row stride CH.
 * The "stored" arrays hold `slots` chunks: one in the forward pass, all in the backward. */
struct ws {
    REAL *q, *k, *v, *dout, *beta, *g;     /* gathered chunk inputs */
    REAL *eg, *el, *row;                   /* e^gam, e^{gam_last - gam}, solver row */
    REAL *E, *kk, *qk, *P, *dA;            /* [CH, CH] */
    REAL *kb, *vb, *ke, *qe, *o;           /* scaled inputs, output */
    REAL *dq, *dk, *dv, *dbeta, *dgam;     /* chunk gradients */
    REAL *ddelta, *dkh, *doh, *dw, *tdw, *tdu, *tmp;
    REAL *H, *G;                           /* state and its gradient [dk, dv] */
    REAL *hs, *T, *W, *U, *delta, *gam;    /* stored per chunk */
    REAL *base;
};

/* One chunk: its token range and its slices of the stored arrays. */
struct chunk {
    int t0, c;
    REAL *gam, *T, *W, *U, *delta, *h;
};

static REAL *carve(REAL **p, size_t n) {
    REAL *r = *p;
    *p += n;
    return r;
}

static struct ws ws_alloc(const struct gdr_dims *d, int slots) {
    size_t ck = (size_t)CH * d->dk, cv = (size_t)CH * d->dv, cc = (size_t)CH * CH, kv = (size_t)d->dk * d->dv;
    size_t ns = (size_t)slots;
    size_t total = 12 * ck + 7 * cv + 7 * (size_t)CH + 5 * cc + 2 * kv + ns * (kv + cc + ck + 2 * cv + CH);
    struct ws w;
    w.base = hyla_malloc(total * sizeof(REAL));
    REAL *p = w.base;
    w.q = carve(&p, ck), w.k = carve(&p, ck), w.kb = carve(&p, ck), w.ke = carve(&p, ck), w.qe = carve(&p, ck);
    w.dq = carve(&p, ck), w.dk = carve(&p, ck), w.dkh = carve(&p, ck), w.doh = carve(&p, ck);
    w.dw = carve(&p, ck), w.tdw = carve(&p, ck), w.tmp = carve(&p, ck);
    w.v = carve(&p, cv), w.dout = carve(&p, cv), w.vb = carve(&p, cv), w.o = carve(&p, cv);
    w.dv = carve(&p, cv), w.ddelta = carve(&p, cv), w.tdu = carve(&p, cv);
    w.beta = carve(&p, CH), w.g = carve(&p, CH), w.eg = carve(&p, CH), w.el = carve(&p, CH);
    w.row = carve(&p, CH), w.dbeta = carve(&p, CH), w.dgam = carve(&p, CH);
    w.E = carve(&p, cc), w.kk = carve(&p, cc), w.qk = carve(&p, cc), w.P = carve(&p, cc), w.dA = carve(&p, cc);
    w.H = carve(&p, kv), w.G = carve(&p, kv);
    w.hs = carve(&p, ns * kv), w.T = carve(&p, ns * cc), w.W = carve(&p, ns * ck);
    w.U = carve(&p, ns * cv), w.delta = carve(&p, ns * cv), w.gam = carve(&p, ns * CH);
    HYLA_ASSERT((size_t)(p - w.base) == total);
    return w;
}

static struct chunk chunk_at(const struct ws *w, const struct gdr_dims *d, int n, int slot) {
    struct chunk ch;
    ch.t0 = n * CH;
    ch.c = d->L - ch.t0 < CH ? d->L - ch.t0 : CH;
    size_t s = (size_t)slot;
    ch.gam = w->gam + s * CH;
    ch.T = w->T + s * CH * CH;
    ch.W = w->W + s * CH * d->dk;
    ch.U = w->U + s * CH * d->dv;
    ch.delta = w->delta + s * CH * d->dv;
    ch.h = w->hs + s * d->dk * d->dv;
    return ch;
}

/* ---- gather / scatter between [B, L, H, d] tensors and contiguous [c, d] ------------- */

static size_t tok(const struct gdr_dims *d, int b, int t, int h, int width) {
    return (((size_t)b * d->L + t) * d->H + h) * (size_t)width;
}

static void gather(REAL *dst, const REAL *src, int c, int width, size_t stride) {
    for (int r = 0; r < c; r++) memcpy(dst + (size_t)r * width, src + (size_t)r * stride, (size_t)width * sizeof(REAL));
}

static void scatter(REAL *dst, const REAL *src, int c, int width, size_t stride) {
    for (int r = 0; r < c; r++) memcpy(dst + (size_t)r * stride, src + (size_t)r * width, (size_t)width * sizeof(REAL));
}

/* ---- forward pieces (F1-F6) ------------------------------------------------------------ */

/* F1: chunk-local cumsum of g. */
static void local_cumsum(REAL *gam, const REAL *g, int c) {
    REAL acc = 0;
    for (int r = 0; r < c; r++) gam[r] = acc += g[r];
}

/* Decay factors from gam: eg = e^gam, el = e^{gam_last - gam}, E (lower, diagonal included). */
static void chunk_decay(struct ws *w, const REAL *gam, int c) {
    for (int r = 0; r < c; r++) {
        w->eg[r] = exp(gam[r]);
        w->el[r] = exp(gam[c - 1] - gam[r]);
        REAL *er = w->E + (size_t)r * CH;
        for (int s = 0; s <= r; s++) er[s] = exp(gam[r] - gam[s]);
        for (int s = r + 1; s < c; s++) er[s] = 0;
    }
}

/* F3: T = (I + A)^-1 in place, A strictly lower on entry (rows of stride CH). Row i of
 * T - I is -A_i - sum_{j<i} A_ij (T - I)_j; row is scratch so that A_i stays readable. */
static void solve_unit_lower(REAL *T, REAL *row, int c) {
    for (int i = 0; i < c; i++) {
        REAL *ti = T + (size_t)i * CH;
        for (int m = 0; m < i; m++) row[m] = -ti[m];
        for (int j = 1; j < i; j++) {
            REAL a = ti[j];
            const REAL *tj = T + (size_t)j * CH;
            /* Element-wise (no reduction), so vectorising does not change the result; -O2
             * alone leaves this hot loop scalar. */
#pragma omp simd
            for (int m = 0; m < j; m++) row[m] -= a * tj[m];
        }
        for (int m = 0; m < i; m++) ti[m] = row[m];
        ti[i] = 1;
        for (int m = i + 1; m < c; m++) ti[m] = 0;
    }
}

/* F1-F4 from the gathered k, v, beta, g: gam, decay factors, kk = K K^T, T, W, U. */
static void chunk_prepare(struct ws *w, const struct chunk *ch, int dk, int dv) {
    int c = ch->c;
    local_cumsum(ch->gam, w->g, c);
    chunk_decay(w, ch->gam, c);
    real_gemm(0, 1, c, c, dk, 1, w->k, dk, w->k, dk, 0, w->kk, CH);
    for (int r = 0; r < c; r++) /* F2: A = strict_lower(diag(beta) K K^T ⊙ E) */
        for (int s = 0; s < r; s++) {
            size_t x = (size_t)r * CH + s;
            ch->T[x] = w->beta[r] * w->kk[x] * w->E[x];
        }
    solve_unit_lower(ch->T, w->row, c);
    for (int r = 0; r < c; r++) { /* F4 */
        REAL fk = w->beta[r] * w->eg[r];
        for (int i = 0; i < dk; i++) w->kb[(size_t)r * dk + i] = fk * w->k[(size_t)r * dk + i];
        for (int j = 0; j < dv; j++) w->vb[(size_t)r * dv + j] = w->beta[r] * w->v[(size_t)r * dv + j];
    }
    real_gemm(0, 0, c, dk, c, 1, ch->T, CH, w->kb, dk, 0, ch->W, dk);
    real_gemm(0, 0, c, dv, c, 1, ch->T, CH, w->vb, dv, 0, ch->U, dv);
}

/* F5 (first half): Delta = U - W H. */
static void chunk_delta(const struct chunk *ch, const REAL *H, int dk, int dv) {
    memcpy(ch->delta, ch->U, (size_t)ch->c * dv * sizeof(REAL));
    real_gemm(0, 0, ch->c, dv, dk, -1, ch->W, dk, H, dv, 1, ch->delta, dv);
}

/* qk = (Q K^T) ⊙ E, zero above the diagonal. */
static void masked_qk(struct ws *w, int c, int dk) {
    real_gemm(0, 1, c, c, dk, 1, w->q, dk, w->k, dk, 0, w->qk, CH);
    for (int r = 0; r < c; r++)
        for (int s = 0; s < c; s++) w->qk[(size_t)r * CH + s] *= w->E[(size_t)r * CH + s];
}

/* qe = diag(e^gam) Q. */
static void scale_q(struct ws *w, int c, int dk) {
    for (int r = 0; r < c; r++)
        for (int i = 0; i < dk; i++) w->qe[(size_t)r * dk + i] = w->eg[r] * w->q[(size_t)r * dk + i];
}

/* F6: O = scale (qe H + qk Delta), H being the state entering the chunk. */
static void chunk_output(struct ws *w, const struct chunk *ch, const REAL *H, REAL scale, int dk, int dv) {
    int c = ch->c;
    scale_q(w, c, dk);
    masked_qk(w, c, dk);
    real_gemm(0, 0, c, dv, dk, scale, w->qe, dk, H, dv, 0, w->o, dv);
    real_gemm(0, 0, c, dv, c, scale, w->qk, CH, ch->delta, dv, 1, w->o, dv);
}

/* ke = diag(e^{gam_last - gam}) K. */
static void scale_k_to_end(struct ws *w, int c, int dk) {
    for (int r = 0; r < c; r++)
        for (int i = 0; i < dk; i++) w->ke[(size_t)r * dk + i] = w->el[r] * w->k[(size_t)r * dk + i];
}

/* F5 (second half): H <- e^{gam_last} H + ke^T Delta. */
static void chunk_state_update(struct ws *w, const struct chunk *ch, REAL *H, int dk, int dv) {
    int c = ch->c;
    REAL decay = w->eg[c - 1];
    for (size_t i = 0; i < (size_t)dk * dv; i++) H[i] *= decay;
    scale_k_to_end(w, c, dk);
    real_gemm(1, 0, dk, dv, c, 1, w->ke, dk, ch->delta, dv, 1, H, dv);
}

/* Gather the chunk's k, v, beta, g (and q when wanted). */
static void gather_inputs(struct ws *w, const struct gdr_dims *d, const struct chunk *ch, int b, int h,
                          const REAL *q, const REAL *k, const REAL *v, const REAL *beta, const REAL *g) {
    size_t sk = (size_t)d->H * d->dk, sv = (size_t)d->H * d->dv;
    if (q) gather(w->q, q + tok(d, b, ch->t0, h, d->dk), ch->c, d->dk, sk);
    gather(w->k, k + tok(d, b, ch->t0, h, d->dk), ch->c, d->dk, sk);
    gather(w->v, v + tok(d, b, ch->t0, h, d->dv), ch->c, d->dv, sv);
    gather(w->beta, beta + tok(d, b, ch->t0, h, 1), ch->c, 1, (size_t)d->H);
    if (g) gather(w->g, g + tok(d, b, ch->t0, h, 1), ch->c, 1, (size_t)d->H);
}

static void load_state(REAL *H, const REAL *init, size_t n) {
    if (init) memcpy(H, init, n * sizeof(REAL));
    else memset(H, 0, n * sizeof(REAL));
}

static int n_chunks(int L) { return (L + CH - 1) / CH; }

/* `saved` is ignored: the CPU backend keeps nothing between the passes (its size is 0). */
void K(gdr_chunk_fwd)(REAL *o, REAL *final_state, const REAL *q, const REAL *k, const REAL *v, const REAL *beta,
                      const REAL *g, const REAL *initial_state, REAL scale, int B, int L, int H, int dim_k,
                      int dim_v, REAL *saved) {
    (void)saved;
    struct gdr_dims d = {B, L, H, dim_k, dim_v, scale};
    size_t kv = (size_t)dim_k * dim_v;
#pragma omp parallel
    {
        struct ws w = ws_alloc(&d, 1);
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H;
            load_state(w.H, initial_state ? initial_state + (size_t)bh * kv : NULL, kv);
            for (int n = 0; n < n_chunks(L); n++) {
                struct chunk ch = chunk_at(&w, &d, n, 0);
                gather_inputs(&w, &d, &ch, b, h, q, k, v, beta, g);
                chunk_prepare(&w, &ch, dim_k, dim_v);
                chunk_delta(&ch, w.H, dim_k, dim_v);
                chunk_output(&w, &ch, w.H, scale, dim_k, dim_v);
                scatter(o + tok(&d, b, ch.t0, h, dim_v), w.o, ch.c, dim_v, (size_t)H * dim_v);
                chunk_state_update(&w, &ch, w.H, dim_k, dim_v);
            }
            if (final_state) memcpy(final_state + (size_t)bh * kv, w.H, kv * sizeof(REAL));
        }
        free(w.base);
    }
}

/* ---- backward pieces (B2-B6) ----------------------------------------------------------- */

/* B2 + B3 (first line): ddelta = scale qk^T dO + ke G, with G = dL/d(state at chunk end). */
static void bwd_ddelta(struct ws *w, int c, REAL scale, int dk, int dv) {
    masked_qk(w, c, dk);
    scale_k_to_end(w, c, dk);
    real_gemm(1, 0, c, dv, c, scale, w->qk, CH, w->dout, dv, 0, w->ddelta, dv);
    real_gemm(0, 0, c, dv, dk, 1, w->ke, dk, w->G, dv, 1, w->ddelta, dv);
}

/* B4: dq, dk (output and state terms) and the matching dgam terms. Uses G = dHend. */
static void bwd_qk(struct ws *w, const struct chunk *ch, const REAL *Hn, REAL scale, int dk, int dv) {
    int c = ch->c;
    /* dkh = diag(el) Delta G^T; doh = dO H^T; P = E ⊙ (dO Delta^T). */
    real_gemm(0, 1, c, dk, dv, 1, ch->delta, dv, w->G, dv, 0, w->dkh, dk);
    real_gemm(0, 1, c, dk, dv, 1, w->dout, dv, Hn, dv, 0, w->doh, dk);
    real_gemm(0, 1, c, c, dv, 1, w->dout, dv, ch->delta, dv, 0, w->P, CH);
    for (int r = 0; r < c; r++) w->dgam[r] = 0;
    for (int r = 0; r < c; r++) {
        REAL *pr = w->P + (size_t)r * CH;
        const REAL *qkr = w->qk + (size_t)r * CH, *er = w->E + (size_t)r * CH;
        for (int s = 0; s <= r; s++) {
            REAL z = scale * pr[s] * qkr[s]; /* Z = scale P ⊙ Q K^T, qk already carries E */
            w->dgam[r] += z;
            w->dgam[s] -= z;
            pr[s] *= er[s];
        }
        for (int s = r + 1; s < c; s++) pr[s] = 0;
    }
    real_gemm(0, 0, c, dk, c, scale, w->P, CH, w->k, dk, 0, w->dq, dk);
    real_gemm(1, 0, c, dk, c, scale, w->P, CH, w->q, dk, 0, w->dk, dk);
    REAL kdkh_sum = 0;
    for (int r = 0; r < c; r++) {
        REAL qdoh = 0, kdkh = 0;
        for (int i = 0; i < dk; i++) {
            size_t x = (size_t)r * dk + i;
            w->dkh[x] *= w->el[r];
            qdoh += w->doh[x] * w->q[x];
            kdkh += w->k[x] * w->dkh[x];
            w->dq[x] += scale * w->eg[r] * w->doh[x];
            w->dk[x] += w->dkh[x];
        }
        w->dgam[r] += scale * w->eg[r] * qdoh - kdkh;
        kdkh_sum += kdkh;
    }
    REAL hg = 0;
    for (size_t i = 0; i < (size_t)dk * dv; i++) hg += Hn[i] * w->G[i];
    w->dgam[c - 1] += w->eg[c - 1] * hg + kdkh_sum;
}

/* B5 (first half): through W = T Kb and U = T Vb to k, v, beta, gam; leaves
 * dA = strict_lower(-(T^T dW) W^T - (T^T dU) U^T) = strict_lower(-T^T dT T^T) in w->dA. */
static void bwd_wy_direct(struct ws *w, const struct chunk *ch, const REAL *Hn, int dk, int dv) {
    int c = ch->c;
    real_gemm(0, 1, c, dk, dv, -1, w->ddelta, dv, Hn, dv, 0, w->dw, dk); /* dW = -ddelta H^T */
    real_gemm(1, 0, c, dk, c, 1, ch->T, CH, w->dw, dk, 0, w->tdw, dk);
    real_gemm(1, 0, c, dv, c, 1, ch->T, CH, w->ddelta, dv, 0, w->tdu, dv); /* dU = ddelta */
    for (int r = 0; r < c; r++) {
        REAL kt = 0, vt = 0, fb = w->beta[r] * w->eg[r];
        for (int i = 0; i < dk; i++) {
            size_t x = (size_t)r * dk + i;
            kt += w->k[x] * w->tdw[x];
            w->dk[x] += fb * w->tdw[x];
        }
        for (int j = 0; j < dv; j++) {
            size_t x = (size_t)r * dv + j;
            vt += w->v[x] * w->tdu[x];
            w->dv[x] = w->beta[r] * w->tdu[x];
        }
        w->dbeta[r] = w->eg[r] * kt + vt;
        w->dgam[r] += fb * kt;
    }
    real_gemm(0, 1, c, c, dk, -1, w->tdw, dk, ch->W, dk, 0, w->dA, CH);
    real_gemm(0, 1, c, c, dv, -1, w->tdu, dv, ch->U, dv, 1, w->dA, CH);
}

/* B5 (second half): through A = strict_lower(diag(beta) K K^T ⊙ E). dA becomes dM' = dA ⊙ E. */
static void bwd_wy_A(struct ws *w, int c, int dk) {
    real_gemm(0, 1, c, c, dk, 1, w->k, dk, w->k, dk, 0, w->kk, CH);
    for (int r = 0; r < c; r++) {
        REAL *dar = w->dA + (size_t)r * CH;
        const REAL *kkr = w->kk + (size_t)r * CH, *er = w->E + (size_t)r * CH;
        for (int s = 0; s < r; s++) {
            REAL dm = dar[s] * er[s];
            REAL x = dm * w->beta[r] * kkr[s]; /* dA_rs A_rs */
            w->dbeta[r] += dm * kkr[s];
            w->dgam[r] += x;
            w->dgam[s] -= x;
            dar[s] = dm;
        }
        for (int s = r; s < c; s++) dar[s] = 0;
    }
    /* dk += diag(beta) dM' K + dM'^T diag(beta) K */
    real_gemm(0, 0, c, dk, c, 1, w->dA, CH, w->k, dk, 0, w->tmp, dk);
    for (int r = 0; r < c; r++)
        for (int i = 0; i < dk; i++) {
            size_t x = (size_t)r * dk + i;
            w->dk[x] += w->beta[r] * w->tmp[x];
            w->kb[x] = w->beta[r] * w->k[x];
        }
    real_gemm(1, 0, c, dk, c, 1, w->dA, CH, w->kb, dk, 1, w->dk, dk);
}

/* B3 (second line): G <- e^{gam_last} G + scale qe^T dO - W^T ddelta. */
static void bwd_state_grad(struct ws *w, const struct chunk *ch, REAL scale, int dk, int dv) {
    int c = ch->c;
    REAL decay = w->eg[c - 1];
    for (size_t i = 0; i < (size_t)dk * dv; i++) w->G[i] *= decay;
    scale_q(w, c, dk);
    real_gemm(1, 0, dk, dv, c, scale, w->qe, dk, w->dout, dv, 1, w->G, dv);
    real_gemm(1, 0, dk, dv, c, -1, ch->W, dk, w->ddelta, dv, 1, w->G, dv);
}

/* B6: dg = reverse chunk-local cumsum of dgam, written into the [B, L, H] output. */
static void write_dg(REAL *dg, const REAL *dgam, int c, size_t stride) {
    REAL acc = 0;
    for (int r = c - 1; r >= 0; r--) dg[(size_t)r * stride] = acc += dgam[r];
}

struct gdr_grads {
    REAL *dq, *dk, *dv, *dbeta, *dg;
};

/* B1: re-run F1-F5 for one (b, h), keeping every chunk's T, W, U, Delta and H_n. */
static void bwd_recompute(struct ws *w, const struct gdr_dims *d, int b, int h, const REAL *k, const REAL *v,
                          const REAL *beta, const REAL *g, const REAL *init) {
    load_state(w->H, init, (size_t)d->dk * d->dv);
    for (int n = 0; n < n_chunks(d->L); n++) {
        struct chunk ch = chunk_at(w, d, n, n);
        gather_inputs(w, d, &ch, b, h, NULL, k, v, beta, g);
        chunk_prepare(w, &ch, d->dk, d->dv);
        memcpy(ch.h, w->H, (size_t)d->dk * d->dv * sizeof(REAL));
        chunk_delta(&ch, w->H, d->dk, d->dv);
        chunk_state_update(w, &ch, w->H, d->dk, d->dv);
    }
}

/* B2-B6 for one chunk, G = dL/d(state at its end) on entry, at its start on exit. */
static void bwd_chunk(struct ws *w, const struct gdr_dims *d, const struct chunk *ch, int b, int h,
                      const struct gdr_grads *gr, const REAL *dout, const REAL *q, const REAL *k, const REAL *v,
                      const REAL *beta) {
    int c = ch->c, dk = d->dk, dv = d->dv;
    gather_inputs(w, d, ch, b, h, q, k, v, beta, NULL);
    gather(w->dout, dout + tok(d, b, ch->t0, h, dv), c, dv, (size_t)d->H * dv);
    chunk_decay(w, ch->gam, c);
    bwd_ddelta(w, c, d->scale, dk, dv);
    bwd_qk(w, ch, ch->h, d->scale, dk, dv);
    bwd_wy_direct(w, ch, ch->h, dk, dv);
    bwd_wy_A(w, c, dk);
    bwd_state_grad(w, ch, d->scale, dk, dv);
    scatter(gr->dq + tok(d, b, ch->t0, h, dk), w->dq, c, dk, (size_t)d->H * dk);
    scatter(gr->dk + tok(d, b, ch->t0, h, dk), w->dk, c, dk, (size_t)d->H * dk);
    scatter(gr->dv + tok(d, b, ch->t0, h, dv), w->dv, c, dv, (size_t)d->H * dv);
    scatter(gr->dbeta + tok(d, b, ch->t0, h, 1), w->dbeta, c, 1, (size_t)d->H);
    write_dg(gr->dg + tok(d, b, ch->t0, h, 1), w->dgam, c, (size_t)d->H);
}

void K(gdr_chunk_bwd)(REAL *dq, REAL *dk, REAL *dv, REAL *dbeta, REAL *dg, REAL *dinitial_state, const REAL *dout,
                      const REAL *dfinal_state, const REAL *q, const REAL *k, const REAL *v, const REAL *beta,
                      const REAL *g, const REAL *initial_state, REAL scale, int B, int L, int H, int dim_k,
                      int dim_v, const REAL *saved) {
    (void)saved;
    struct gdr_dims d = {B, L, H, dim_k, dim_v, scale};
    struct gdr_grads gr = {dq, dk, dv, dbeta, dg};
    size_t kv = (size_t)dim_k * dim_v;
#pragma omp parallel
    {
        struct ws w = ws_alloc(&d, n_chunks(L));
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H;
            bwd_recompute(&w, &d, b, h, k, v, beta, g, initial_state ? initial_state + (size_t)bh * kv : NULL);
            load_state(w.G, dfinal_state ? dfinal_state + (size_t)bh * kv : NULL, kv);
            for (int n = n_chunks(L) - 1; n >= 0; n--) {
                struct chunk ch = chunk_at(&w, &d, n, n);
                bwd_chunk(&w, &d, &ch, b, h, &gr, dout, q, k, v, beta);
            }
            if (dinitial_state) memcpy(dinitial_state + (size_t)bh * kv, w.G, kv * sizeof(REAL));
        }
        free(w.base);
    }
}
