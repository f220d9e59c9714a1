/* Native sparse attention (MODEL.md §6): mean-pooled compressed attention, top-n block
 * selection shared by a kv group, selected-block attention and a sliding window, mixed by
 * sigmoid gates. The three branches are one softmax-attention routine (attn_row_fwd /
 * attn_row_bwd) applied to three key sets. The saved layout is in op_shapes.h.
 *
 * Selection (§6.2 step 4, no gradient): candidates are the blocks c <= IC = t / b. The forced
 * blocks {0, IC-1, IC} rank first, the others by importance p_c = sum over the group of
 * exp(q_i . kbar_c scale - lse_cmp_i), ties to the lower block index. Ranking the forced blocks
 * first is forcing them to the maximum G of p, except that rounding cannot lift another block
 * above them. block_idx lists the chosen blocks by rank; -1 fills the rest. A block_idx given
 * with reuse_block_idx must not repeat a block (its keys would count twice).
 *
 * Threads: the forward pass and the backward pass for dq and dgate run one task per
 * (b, t, kv head); dk and dv one task per (b, kv head, key block), which owns those rows and
 * visits every query that reads them, recomputing the probabilities (as flash attention
 * does) instead of scattering into shared rows. No two tasks write one element and every
 * sum runs in a fixed order, so results do not depend on the thread count. */
#include "../../common/hyla_error.h"
#include "cpu_ops.h"
#include "real.h"

enum { CMP = 0, SLC = 1, SWA = 2 }; /* branch = gate channel 3i + x and saved o[x], lse[x] */

#define NSA_MAX_SELECT 64 /* bound of n_select: the top-n list lives on the stack */

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

/* Four interleaved partial sums: a fixed order (deterministic) that the compiler can
 * still vectorise, unlike one serial sum. */
static REAL dot(const REAL *a, const REAL *b, int d) {
    REAL s[4] = {0, 0, 0, 0};
    int x = 0;
    for (; x + 4 <= d; x += 4)
        for (int u = 0; u < 4; u++) s[u] += a[x + u] * b[x + u];
    for (; x < d; x++) s[0] += a[x] * b[x];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* The keys that one query row attends to: one range [lo, hi) of rows, or, with blocks,
 * the union of the listed blocks (of block_size rows; -1 = none) cut to [lo, hi). */
struct keyset {
    const REAL *k, *v; /* key j at k + j * stride */
    size_t stride;
    REAL *dk, *dv; /* backward only: gradient of key j at dk + j * dstride */
    size_t dstride;
    const int32_t *blocks;
    int n_blocks, block_size;
    int lo, hi;
};

static int keyset_ranges(const struct keyset *ks) { return ks->blocks ? ks->n_blocks : 1; }

/* Rows of range r: [*a, *e), possibly empty. */
static void keyset_range(const struct keyset *ks, int r, int *a, int *e) {
    int lo = ks->lo, hi = ks->hi;
    if (ks->blocks) {
        int c = ks->blocks[r];
        if (c < 0) hi = lo;
        else lo = imax(lo, c * ks->block_size), hi = imin(hi, (c + 1) * ks->block_size);
    }
    *a = lo;
    *e = imax(lo, hi);
}

/* o = softmax(scale q . k_j) v_j over the key set, one pass with a running maximum;
 * lse = natural log-sum-exp of the scores. No key: o = 0, lse = 0. */
static void attn_row_fwd(REAL *o, REAL *lse, const REAL *q, const struct keyset *ks, int d, REAL scale) {
    REAL m = -INFINITY, l = 0;
    for (int x = 0; x < d; x++) o[x] = 0;
    for (int r = 0; r < keyset_ranges(ks); r++) {
        int a, e;
        keyset_range(ks, r, &a, &e);
        for (int j = a; j < e; j++) {
            const REAL *kj = ks->k + (size_t)j * ks->stride, *vj = ks->v + (size_t)j * ks->stride;
            REAL s = scale * dot(q, kj, d);
            if (s > m) { /* rescale what was summed against the old maximum */
                REAL f = exp(m - s);
                l *= f;
                for (int x = 0; x < d; x++) o[x] *= f;
                m = s;
            }
            REAL p = exp(s - m);
            l += p;
            for (int x = 0; x < d; x++) o[x] += p * vj[x];
        }
    }
    if (l == 0) {
        *lse = 0;
        return;
    }
    for (int x = 0; x < d; x++) o[x] /= l;
    *lse = m + log(l);
}

/* Backward of attn_row_fwd for a branch whose output enters as g * o (MODEL.md §4):
 * P_j = exp(s_j - lse), dP_j = g dout . v_j, dS_j = P_j (dP_j - D) with D = g dout . o;
 * dq += scale dS_j k_j unless dq is NULL; dk_j += scale dS_j q, dv_j += P_j g dout unless
 * ks->dk is NULL. */
static void attn_row_bwd(REAL *dq, const REAL *q, const REAL *dout, REAL g, REAL D, REAL lse,
                         const struct keyset *ks, int d, REAL scale) {
    for (int r = 0; r < keyset_ranges(ks); r++) {
        int a, e;
        keyset_range(ks, r, &a, &e);
        for (int j = a; j < e; j++) {
            const REAL *kj = ks->k + (size_t)j * ks->stride, *vj = ks->v + (size_t)j * ks->stride;
            REAL p = exp(scale * dot(q, kj, d) - lse);
            REAL ds = p * (g * dot(dout, vj, d) - D);
            if (dq)
                for (int x = 0; x < d; x++) dq[x] += scale * ds * kj[x];
            if (ks->dk) {
                REAL *dkj = ks->dk + (size_t)j * ks->dstride, *dvj = ks->dv + (size_t)j * ks->dstride;
                for (int x = 0; x < d; x++) dkj[x] += scale * ds * q[x], dvj[x] += p * g * dout[x];
            }
        }
    }
}

static int keyset_empty(const struct keyset *ks) {
    for (int r = 0; r < keyset_ranges(ks); r++) {
        int a, e;
        keyset_range(ks, r, &a, &e);
        if (a < e) return 0;
    }
    return 1;
}

/* Everything the per-row routines need; offsets are in values. */
struct nsa {
    const struct hyla_nsa_shape *s;
    int L, G, NB, d;
    REAL scale;
    const REAL *q, *k, *v, *gate_logits;
    REAL *saved; /* the backward pass only reads it */
    struct hyla_nsa_saved_offsets off;
};

static struct nsa nsa_init(const struct hyla_nsa_shape *s, int B, int L, const REAL *q, const REAL *k,
                           const REAL *v, const REAL *gate_logits, REAL *saved) {
    if (s->kv_heads < 1 || s->q_heads % s->kv_heads != 0 || s->block_size < 1 || s->window < 1 || s->n_select < 0)
        hyla_die("nsa: bad shape (q_heads %d, kv_heads %d, block_size %d, window %d, n_select %d): q_heads must be "
                 "a multiple of kv_heads, block_size and window at least 1, n_select at least 0",
                 s->q_heads, s->kv_heads, s->block_size, s->window, s->n_select);
    if (s->n_select > NSA_MAX_SELECT)
        hyla_die("nsa: n_select %d exceeds %d; raise NSA_MAX_SELECT in kernels/cpu/op_nsa.c", s->n_select,
                 NSA_MAX_SELECT);
    struct nsa a = {.s = s, .L = L, .G = s->q_heads / s->kv_heads, .NB = (L + s->block_size - 1) / s->block_size,
                    .d = s->head_dim, .scale = (REAL)s->scale, .q = q, .k = k, .v = v,
                    .gate_logits = gate_logits, .saved = saved, .off = nsa_saved_offsets(s, B, L)};
    return a;
}

/* Offsets of a (b, t, query head) row and a (b, t or block, kv head) row, in rows. */
static size_t qrow(const struct nsa *a, int b, int t, int i) {
    return ((size_t)b * a->L + t) * a->s->q_heads + i;
}
static size_t kvrow(const struct nsa *a, int b, int j, int h, int n) {
    return ((size_t)b * n + j) * a->s->kv_heads + h;
}

/* Branch x's key set for query t of kv head h in batch b; blocks = that row's block_idx. */
static struct keyset branch_keys(const struct nsa *a, int x, int b, int t, int h, const int32_t *blocks) {
    size_t stride = (size_t)a->s->kv_heads * a->d;
    struct keyset ks = {.stride = stride, .lo = 0, .hi = t + 1};
    if (x == CMP) { /* pooled rows; block c is complete and visible iff (c + 1) b - 1 <= t */
        ks.k = a->saved + a->off.kbar + kvrow(a, b, 0, h, a->NB) * a->d;
        ks.v = a->saved + a->off.vbar + kvrow(a, b, 0, h, a->NB) * a->d;
        ks.hi = (t + 1) / a->s->block_size;
        return ks;
    }
    ks.k = a->k + kvrow(a, b, 0, h, a->L) * a->d;
    ks.v = a->v + kvrow(a, b, 0, h, a->L) * a->d;
    if (x == SWA) ks.lo = imax(0, t - a->s->window + 1);
    else ks.blocks = blocks, ks.n_blocks = a->s->n_select, ks.block_size = a->s->block_size;
    return ks;
}

/* kbar_c, vbar_c = means of k, v over block c (the last block over its actual length). */
static void pool_block(const struct nsa *a, int b, int c, int h) {
    int d = a->d, bs = a->s->block_size, j0 = c * bs, j1 = imin(j0 + bs, a->L);
    REAL *kb = a->saved + a->off.kbar + kvrow(a, b, c, h, a->NB) * d;
    REAL *vb = a->saved + a->off.vbar + kvrow(a, b, c, h, a->NB) * d;
    for (int x = 0; x < d; x++) kb[x] = vb[x] = 0;
    for (int j = j0; j < j1; j++) {
        const REAL *kj = a->k + kvrow(a, b, j, h, a->L) * d, *vj = a->v + kvrow(a, b, j, h, a->L) * d;
        for (int x = 0; x < d; x++) kb[x] += kj[x], vb[x] += vj[x];
    }
    for (int x = 0; x < d; x++) kb[x] /= (REAL)(j1 - j0), vb[x] /= (REAL)(j1 - j0);
}

/* p_c = sum over the group of the compressed-attention probability of block c (c < IC). */
static REAL block_importance(const struct nsa *a, int b, int t, int h, int c) {
    const REAL *kb = a->saved + a->off.kbar + kvrow(a, b, c, h, a->NB) * a->d;
    REAL p = 0;
    for (int i = h * a->G; i < (h + 1) * a->G; i++) {
        size_t r = qrow(a, b, t, i);
        p += exp(a->scale * dot(a->q + r * a->d, kb, a->d) - a->saved[a->off.lse[CMP] + r]);
    }
    return p;
}

/* Top-n_select blocks for query t of kv head h (rule in the file comment), by insertion
 * into a list sorted by rank: a later block (higher index) only passes strictly smaller p. */
static void select_blocks(int32_t *idx, const struct nsa *a, int b, int t, int h) {
    int n = a->s->n_select, ic = t / a->s->block_size, len = 0;
    REAL best[NSA_MAX_SELECT];
    for (int c = 0; c <= ic; c++) {
        REAL p = c == 0 || c >= ic - 1 ? (REAL)INFINITY : block_importance(a, b, t, h, c);
        int pos = len;
        while (pos > 0 && best[pos - 1] < p) pos--;
        if (pos >= n) continue;
        if (len < n) len++;
        for (int x = len - 1; x > pos; x--) best[x] = best[x - 1], idx[x] = idx[x - 1];
        best[pos] = p, idx[pos] = c;
    }
    for (int x = len; x < n; x++) idx[x] = -1;
}

/* All query heads of kv group h at (b, t): compressed branch, selection, the other two
 * branches, then the gated sum o = g_slc o_slc + g_cmp o_cmp + g_swa o_swa. */
static void nsa_fwd_row(REAL *o, int32_t *idx, const struct nsa *a, int b, int t, int h, int reuse) {
    int d = a->d;
    for (int x = CMP; x <= SWA; x++) { /* cmp first: selection reads its lse */
        if (x == SLC && !reuse) select_blocks(idx, a, b, t, h);
        struct keyset ks = branch_keys(a, x, b, t, h, idx);
        for (int i = h * a->G; i < (h + 1) * a->G; i++) {
            size_t r = qrow(a, b, t, i);
            attn_row_fwd(a->saved + a->off.o[x] + r * d, a->saved + a->off.lse[x] + r, a->q + r * d, &ks, d,
                         a->scale);
        }
    }
    for (int i = h * a->G; i < (h + 1) * a->G; i++) {
        size_t r = qrow(a, b, t, i);
        REAL *g = a->saved + a->off.gate + r * 3;
        for (int x = 0; x < 3; x++) g[x] = real_sigmoid(a->gate_logits[r * 3 + x]);
        const REAL *oc = a->saved + a->off.o[CMP] + r * d, *os = a->saved + a->off.o[SLC] + r * d,
                   *ow = a->saved + a->off.o[SWA] + r * d;
        for (int x = 0; x < d; x++) o[r * d + x] = g[SLC] * os[x] + g[CMP] * oc[x] + g[SWA] * ow[x];
    }
}

void K(nsa_fwd)(REAL *o, REAL *saved, int32_t *block_idx, const REAL *q, const REAL *k, const REAL *v,
                const REAL *gate_logits, const struct hyla_nsa_shape *shape, int B, int L, int reuse_block_idx) {
    struct nsa a = nsa_init(shape, B, L, q, k, v, gate_logits, saved);
    int H = shape->kv_heads, n = shape->n_select;
#pragma omp parallel for schedule(static)
    for (int task = 0; task < B * a.NB * H; task++) pool_block(&a, task / (a.NB * H), task / H % a.NB, task % H);
#pragma omp parallel for schedule(static)
    for (int task = 0; task < B * L * H; task++) {
        int b = task / (L * H), t = task / H % L, h = task % H;
        nsa_fwd_row(o, block_idx + (size_t)task * n, &a, b, t, h, reuse_block_idx);
    }
}

/* Gate gradients of query row r: dg_x = <dout, o_x>, dlogit = dg g (1 - g). */
static void gate_bwd(REAL *dgate_logits, const struct nsa *a, const REAL *dout, size_t r) {
    const REAL *g = a->saved + a->off.gate + r * 3;
    for (int x = 0; x < 3; x++) {
        REAL dg = dot(dout + r * a->d, a->saved + a->off.o[x] + r * a->d, a->d);
        dgate_logits[r * 3 + x] = dg * g[x] * ((REAL)1 - g[x]);
    }
}

/* Branch x's backward for every query head of group h at (b, t), with dout scaled by g_x;
 * dq NULL: key gradients only. */
static void branch_bwd(REAL *dq, const struct nsa *a, const REAL *dout, const struct keyset *ks, int x, int b, int t,
                       int h) {
    int d = a->d;
    for (int i = h * a->G; i < (h + 1) * a->G; i++) {
        size_t r = qrow(a, b, t, i);
        REAL g = a->saved[a->off.gate + r * 3 + x];
        REAL D = g * dot(dout + r * d, a->saved + a->off.o[x] + r * d, d);
        attn_row_bwd(dq ? dq + r * d : NULL, a->q + r * d, dout + r * d, g, D, a->saved[a->off.lse[x] + r], ks, d,
                     a->scale);
    }
}

/* Pass 1, one (b, t, kv head h) task: dq and dgate of the group's query heads, each branch
 * over its whole key set. */
static void nsa_bwd_queries(REAL *dq, REAL *dgate_logits, const struct nsa *a, const REAL *dout,
                            const int32_t *idx, int b, int t, int h) {
    for (int i = h * a->G; i < (h + 1) * a->G; i++) {
        size_t r = qrow(a, b, t, i);
        memset(dq + r * a->d, 0, (size_t)a->d * sizeof(REAL));
        gate_bwd(dgate_logits, a, dout, r);
    }
    for (int x = CMP; x <= SWA; x++) {
        struct keyset ks = branch_keys(a, x, b, t, h, idx);
        branch_bwd(dq, a, dout, &ks, x, b, t, h);
    }
}

/* Pass 2, one (b, kv head h, key block c) task: it owns dk, dv rows c b .. c b + n_c - 1 of
 * head h and runs every query t >= c b against the keys of block c only (each branch's key
 * set cut to the block). The compressed branch goes first: dkbar_c accumulates in the
 * still-zero first row of the block, then the mean-pool backward copies dkbar_c / n_c to
 * every row of the block (n_c = its length); the other branches add on top. */
static void nsa_bwd_keys(REAL *dk, REAL *dv, const struct nsa *a, const REAL *dout, const int32_t *block_idx, int b,
                         int h, int c) {
    int d = a->d, bs = a->s->block_size, j0 = c * bs, n = imin(bs, a->L - j0);
    size_t kv_stride = (size_t)a->s->kv_heads * d;
    REAL *dk0 = dk + kvrow(a, b, j0, h, a->L) * d, *dv0 = dv + kvrow(a, b, j0, h, a->L) * d;
    for (int j = 0; j < n; j++) {
        memset(dk0 + j * kv_stride, 0, (size_t)d * sizeof(REAL));
        memset(dv0 + j * kv_stride, 0, (size_t)d * sizeof(REAL));
    }
    for (int x = CMP; x <= SWA; x++) {
        if (x == SLC) { /* the mean-pool backward of the finished dkbar_c, dvbar_c */
            for (int e = 0; e < d; e++) dk0[e] /= (REAL)n, dv0[e] /= (REAL)n;
            for (int j = 1; j < n; j++) {
                memcpy(dk0 + j * kv_stride, dk0, (size_t)d * sizeof(REAL));
                memcpy(dv0 + j * kv_stride, dv0, (size_t)d * sizeof(REAL));
            }
        }
        for (int t = j0; t < a->L; t++) {
            struct keyset ks = branch_keys(a, x, b, t, h, block_idx + kvrow(a, b, t, h, a->L) * a->s->n_select);
            ks.lo = imax(ks.lo, x == CMP ? c : j0); /* cut to block c: pooled row c, or its keys */
            ks.hi = imin(ks.hi, x == CMP ? c + 1 : j0 + n);
            if (keyset_empty(&ks)) continue;
            ks.dk = dk + kvrow(a, b, 0, h, a->L) * d, ks.dv = dv + kvrow(a, b, 0, h, a->L) * d;
            ks.dstride = x == CMP ? (size_t)bs * kv_stride : kv_stride; /* pooled row c -> row c b */
            branch_bwd(NULL, a, dout, &ks, x, b, t, h);
        }
    }
}

void K(nsa_bwd)(REAL *dq, REAL *dk, REAL *dv, REAL *dgate_logits, const REAL *dout, const REAL *saved,
                const int32_t *block_idx, const REAL *q, const REAL *k, const REAL *v, const REAL *gate_logits,
                const struct hyla_nsa_shape *shape, int B, int L) {
    /* The cast only lets one struct serve both passes; nothing here writes to saved. */
    struct nsa a = nsa_init(shape, B, L, q, k, v, gate_logits, (REAL *)saved);
    int H = shape->kv_heads, n = shape->n_select;
#pragma omp parallel for schedule(static)
    for (int task = 0; task < B * L * H; task++) {
        int b = task / (L * H), t = task / H % L, h = task % H;
        nsa_bwd_queries(dq, dgate_logits, &a, dout, block_idx + (size_t)task * n, b, t, h);
    }
    /* Early blocks have the most queries (block 0 is always selected): deal them round robin. */
#pragma omp parallel for schedule(static, 1)
    for (int task = 0; task < B * a.NB * H; task++)
        nsa_bwd_keys(dk, dv, &a, dout, block_idx, task / (a.NB * H), task % H, task / H % a.NB);
}
