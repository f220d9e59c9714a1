/* The gated delta rule token by token (MODEL.md §3.2 step 5, §3.3): the reference the
 * chunkwise kernel is tested against. Per (b, h), with the state S [dim_k, dim_v]:
 *   S' = exp(g_t) S_{t-1},  u = S'^T k_t,  delta = beta_t (v_t - u),
 *   S_t = S' + k_t delta^T,  o_t = scale S_t^T q_t.
 * The backward pass is reverse mode through every stored state S_t. */
#include "cpu_ops.h"
#include "real.h"

#include "../../common/hyla_error.h"

struct gdr_dims {
    int B, L, H, dk, dv;
};

/* Offset of (b, t, h) in a [B, L, H, d] tensor (d = 1 for beta and g). */
static size_t tok(const struct gdr_dims *s, int b, int t, int h, int d) {
    return (((size_t)b * s->L + t) * s->H + h) * (size_t)d;
}

/* One step on S in place; writes o_t. */
static void step_fwd(REAL *S, REAL *o, const REAL *q, const REAL *k, const REAL *v, REAL beta, REAL g, REAL scale,
                     int dk, int dv) {
    REAL alpha = exp(g);
    for (size_t i = 0; i < (size_t)dk * dv; i++) S[i] *= alpha;
    for (int j = 0; j < dv; j++) {
        REAL u = 0;
        for (int i = 0; i < dk; i++) u += S[(size_t)i * dv + j] * k[i];
        REAL delta = beta * (v[j] - u);
        for (int i = 0; i < dk; i++) S[(size_t)i * dv + j] += k[i] * delta;
    }
    for (int j = 0; j < dv; j++) {
        REAL acc = 0;
        for (int i = 0; i < dk; i++) acc += S[(size_t)i * dv + j] * q[i];
        o[j] = scale * acc;
    }
}

static void load_state(REAL *S, const REAL *init, size_t n) {
    if (init) memcpy(S, init, n * sizeof(REAL));
    else memset(S, 0, n * sizeof(REAL));
}

void K(gdr_recurrent_fwd)(REAL *o, REAL *final_state, const REAL *q, const REAL *k, const REAL *v,
                          const REAL *beta, const REAL *g, const REAL *initial_state, REAL scale, int B, int L,
                          int H, int dim_k, int dim_v) {
    struct gdr_dims s = {B, L, H, dim_k, dim_v};
    size_t ss = (size_t)dim_k * dim_v;
#pragma omp parallel
    {
        REAL *S = hyla_malloc(ss * sizeof(REAL));
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H;
            load_state(S, initial_state ? initial_state + (size_t)bh * ss : NULL, ss);
            for (int t = 0; t < L; t++) {
                size_t i = tok(&s, b, t, h, 1);
                step_fwd(S, o + tok(&s, b, t, h, dim_v), q + tok(&s, b, t, h, dim_k), k + tok(&s, b, t, h, dim_k),
                         v + tok(&s, b, t, h, dim_v), beta[i], g[i], scale, dim_k, dim_v);
            }
            if (final_state) memcpy(final_state + (size_t)bh * ss, S, ss * sizeof(REAL));
        }
        free(S);
    }
}

/* Reverse mode through one step. Sprev = S_{t-1}, Scur = S_t; dS holds dL/dS_t on entry
 * and dL/dS_{t-1} on exit. u and delta are recomputed; sp is scratch [dk*dv]. */
struct step_grads {
    REAL *dq, *dk, *dv, *dbeta, *dg;
};

static void step_bwd(REAL *dS, struct step_grads gr, REAL *sp, const REAL *Sprev, const REAL *Scur, const REAL *dout,
                     const REAL *q, const REAL *k, const REAL *v, REAL beta, REAL g, REAL scale, int dk, int dv) {
    REAL alpha = exp(g);
    size_t ss = (size_t)dk * dv;
    for (size_t i = 0; i < ss; i++) sp[i] = alpha * Sprev[i]; /* S' */
    /* o_t = scale S_t^T q: dq = scale S_t dout, dS += scale q dout^T. */
    for (int i = 0; i < dk; i++) {
        REAL acc = 0;
        for (int j = 0; j < dv; j++) {
            acc += Scur[(size_t)i * dv + j] * dout[j];
            dS[(size_t)i * dv + j] += scale * q[i] * dout[j];
        }
        gr.dq[i] = scale * acc;
        gr.dk[i] = 0;
    }
    /* S_t = S' + k delta^T, delta = beta (v - u), u = S'^T k. */
    REAL dbeta = 0;
    for (int j = 0; j < dv; j++) {
        REAL u = 0, ddelta = 0;
        for (int i = 0; i < dk; i++) {
            u += sp[(size_t)i * dv + j] * k[i];
            ddelta += dS[(size_t)i * dv + j] * k[i];
        }
        REAL delta = beta * (v[j] - u);
        REAL du = -beta * ddelta;
        gr.dv[j] = beta * ddelta;
        dbeta += ddelta * (v[j] - u);
        for (int i = 0; i < dk; i++) {
            gr.dk[i] += dS[(size_t)i * dv + j] * delta + sp[(size_t)i * dv + j] * du;
            dS[(size_t)i * dv + j] += k[i] * du; /* now dL/dS' */
        }
    }
    *gr.dbeta = dbeta;
    /* S' = alpha S_{t-1}: dg = alpha <dS', S_{t-1}>, dS_{t-1} = alpha dS'. */
    REAL dalpha = 0;
    for (size_t i = 0; i < ss; i++) {
        dalpha += dS[i] * Sprev[i];
        dS[i] *= alpha;
    }
    *gr.dg = alpha * dalpha;
}

void K(gdr_recurrent_bwd)(REAL *dq, REAL *dk, REAL *dv, REAL *dbeta, REAL *dg, REAL *dinitial_state,
                          const REAL *dout, const REAL *dfinal_state, const REAL *q, const REAL *k, const REAL *v,
                          const REAL *beta, const REAL *g, const REAL *initial_state, REAL scale, int B, int L,
                          int H, int dim_k, int dim_v) {
    struct gdr_dims s = {B, L, H, dim_k, dim_v};
    size_t ss = (size_t)dim_k * dim_v;
#pragma omp parallel
    {
        /* states[t+1] = S_t, states[0] = initial state; then dS and S' scratch. */
        REAL *states = hyla_malloc(((size_t)L + 3) * ss * sizeof(REAL));
        REAL *dS = states + ((size_t)L + 1) * ss, *sp = dS + ss;
        REAL *otmp = hyla_malloc((size_t)dim_v * sizeof(REAL));
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H;
            load_state(states, initial_state ? initial_state + (size_t)bh * ss : NULL, ss);
            for (int t = 0; t < L; t++) {
                size_t i = tok(&s, b, t, h, 1);
                REAL *St = states + (size_t)(t + 1) * ss;
                memcpy(St, St - ss, ss * sizeof(REAL));
                step_fwd(St, otmp, q + tok(&s, b, t, h, dim_k), k + tok(&s, b, t, h, dim_k),
                         v + tok(&s, b, t, h, dim_v), beta[i], g[i], scale, dim_k, dim_v);
            }
            load_state(dS, dfinal_state ? dfinal_state + (size_t)bh * ss : NULL, ss);
            for (int t = L - 1; t >= 0; t--) {
                size_t i = tok(&s, b, t, h, 1), ik = tok(&s, b, t, h, dim_k), iv = tok(&s, b, t, h, dim_v);
                struct step_grads gr = {dq + ik, dk + ik, dv + iv, dbeta + i, dg + i};
                step_bwd(dS, gr, sp, states + (size_t)t * ss, states + (size_t)(t + 1) * ss, dout + iv, q + ik,
                         k + ik, v + iv, beta[i], g[i], scale, dim_k, dim_v);
            }
            if (dinitial_state) memcpy(dinitial_state + (size_t)bh * ss, dS, ss * sizeof(REAL));
        }
        free(otmp);
        free(states);
    }
}
