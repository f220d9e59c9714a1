/* NSA's per-row computations (MODEL.md §6), written once for both backends: the CPU op
 * (kernels/cpu/op_nsa.c, OpenMP over rows) and the CUDA op (kernels/cuda/cuda_nsa.cu, a
 * thread per row) include this file with REAL and NSA_HD defined (NSA_HD marks functions
 * that also run on the GPU). The algorithm, the selection rule and the threading contract
 * are described in op_nsa.c. No include guard: each backend includes it once. */

NSA_HD static inline REAL nsa_sigmoid(REAL x) { return (REAL)1 / ((REAL)1 + exp(-x)); }

enum { CMP = 0, SLC = 1, SWA = 2 }; /* branch = gate channel 3i + x and saved o[x], lse[x] */

#define NSA_MAX_SELECT 64 /* bound of n_select: the top-n list lives on the stack */

NSA_HD static int imin(int a, int b) { return a < b ? a : b; }
NSA_HD static int imax(int a, int b) { return a > b ? a : b; }

/* Four interleaved partial sums: a fixed order (deterministic) that the compiler can
 * still vectorise, unlike one serial sum. */
NSA_HD static REAL dot(const REAL *a, const REAL *b, int d) {
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

NSA_HD static int keyset_ranges(const struct keyset *ks) { return ks->blocks ? ks->n_blocks : 1; }

/* Rows of range r: [*a, *e), possibly empty. */
NSA_HD static void keyset_range(const struct keyset *ks, int r, int *a, int *e) {
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
NSA_HD static void attn_row_fwd(REAL *o, REAL *lse, const REAL *q, const struct keyset *ks, int d, REAL scale) {
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
NSA_HD static void attn_row_bwd(REAL *dq, const REAL *q, const REAL *dout, REAL g, REAL D, REAL lse,
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

NSA_HD static int keyset_empty(const struct keyset *ks) {
    for (int r = 0; r < keyset_ranges(ks); r++) {
        int a, e;
        keyset_range(ks, r, &a, &e);
        if (a < e) return 0;
    }
    return 1;
}

/* Everything the per-row routines need; offsets are in values. */
struct nsa {
    struct hyla_nsa_shape s; /* by value: GPU kernels receive the struct itself */
    int L, G, NB, d;
    REAL scale;
    const REAL *q, *k, *v, *gate_logits;
    REAL *saved; /* the backward pass only reads it */
    struct hyla_nsa_saved_offsets off;
};

/* Offsets of a (b, t, query head) row and a (b, t or block, kv head) row, in rows. */
NSA_HD static size_t qrow(const struct nsa *a, int b, int t, int i) {
    return ((size_t)b * a->L + t) * a->s.q_heads + i;
}
NSA_HD static size_t kvrow(const struct nsa *a, int b, int j, int h, int n) {
    return ((size_t)b * n + j) * a->s.kv_heads + h;
}

/* Branch x's key set for query t of kv head h in batch b; blocks = that row's block_idx. */
NSA_HD static struct keyset branch_keys(const struct nsa *a, int x, int b, int t, int h, const int32_t *blocks) {
    size_t stride = (size_t)a->s.kv_heads * a->d;
    struct keyset ks;
    memset(&ks, 0, sizeof ks); /* (no designated initializer: this also compiles as CUDA C++) */
    ks.stride = stride, ks.lo = 0, ks.hi = t + 1;
    if (x == CMP) { /* pooled rows; block c is complete and visible iff (c + 1) b - 1 <= t */
        ks.k = a->saved + a->off.kbar + kvrow(a, b, 0, h, a->NB) * a->d;
        ks.v = a->saved + a->off.vbar + kvrow(a, b, 0, h, a->NB) * a->d;
        ks.hi = (t + 1) / a->s.block_size;
        return ks;
    }
    ks.k = a->k + kvrow(a, b, 0, h, a->L) * a->d;
    ks.v = a->v + kvrow(a, b, 0, h, a->L) * a->d;
    if (x == SWA) ks.lo = imax(0, t - a->s.window + 1);
    else ks.blocks = blocks, ks.n_blocks = a->s.n_select, ks.block_size = a->s.block_size;
    return ks;
}

/* kbar_c, vbar_c = means of k, v over block c (the last block over its actual length). */
NSA_HD static void pool_block(const struct nsa *a, int b, int c, int h) {
    int d = a->d, bs = a->s.block_size, j0 = c * bs, j1 = imin(j0 + bs, a->L);
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
NSA_HD static REAL block_importance(const struct nsa *a, int b, int t, int h, int c) {
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
NSA_HD static void select_blocks(int32_t *idx, const struct nsa *a, int b, int t, int h) {
    int n = a->s.n_select, ic = t / a->s.block_size, len = 0;
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
NSA_HD static void nsa_fwd_row(REAL *o, int32_t *idx, const struct nsa *a, int b, int t, int h, int reuse) {
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
        for (int x = 0; x < 3; x++) g[x] = nsa_sigmoid(a->gate_logits[r * 3 + x]);
        const REAL *oc = a->saved + a->off.o[CMP] + r * d, *os = a->saved + a->off.o[SLC] + r * d,
                   *ow = a->saved + a->off.o[SWA] + r * d;
        for (int x = 0; x < d; x++) o[r * d + x] = g[SLC] * os[x] + g[CMP] * oc[x] + g[SWA] * ow[x];
    }
}

/* Gate gradients of query row r: dg_x = <dout, o_x>, dlogit = dg g (1 - g). */
NSA_HD static void gate_bwd(REAL *dgate_logits, const struct nsa *a, const REAL *dout, size_t r) {
    const REAL *g = a->saved + a->off.gate + r * 3;
    for (int x = 0; x < 3; x++) {
        REAL dg = dot(dout + r * a->d, a->saved + a->off.o[x] + r * a->d, a->d);
        dgate_logits[r * 3 + x] = dg * g[x] * ((REAL)1 - g[x]);
    }
}

/* Branch x's backward for every query head of group h at (b, t), with dout scaled by g_x;
 * dq NULL: key gradients only. */
NSA_HD static void branch_bwd(REAL *dq, const struct nsa *a, const REAL *dout, const struct keyset *ks, int x, int b, int t,
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
NSA_HD static void nsa_bwd_queries(REAL *dq, REAL *dgate_logits, const struct nsa *a, const REAL *dout,
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
NSA_HD static void nsa_bwd_keys(REAL *dk, REAL *dv, const struct nsa *a, const REAL *dout, const int32_t *block_idx, int b,
                         int h, int c) {
    int d = a->d, bs = a->s.block_size, j0 = c * bs, n = imin(bs, a->L - j0);
    size_t kv_stride = (size_t)a->s.kv_heads * d;
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
            struct keyset ks = branch_keys(a, x, b, t, h, block_idx + kvrow(a, b, t, h, a->L) * a->s.n_select);
            ks.lo = imax(ks.lo, x == CMP ? c : j0); /* cut to block c: pooled row c, or its keys */
            ks.hi = imin(ks.hi, x == CMP ? c + 1 : j0 + n);
            if (keyset_empty(&ks)) continue;
            ks.dk = dk + kvrow(a, b, 0, h, a->L) * d, ks.dv = dv + kvrow(a, b, 0, h, a->L) * d;
            ks.dstride = x == CMP ? (size_t)bs * kv_stride : kv_stride; /* pooled row c -> row c b */
            branch_bwd(NULL, a, dout, &ks, x, b, t, h);
        }
    }
}

