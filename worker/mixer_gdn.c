/* Gated DeltaNet token mixer (MODEL.md §3.2): projections, short convolutions, L2 norm,
 * gates, the chunked gated delta rule, gated RMSNorm and the output projection. */
#include <math.h>

#include "common/hyla_error.h"
#include "mixers.h"

struct gdn_acts {
    float *qbar, *kbar, *vbar;        /* projections before the convolution */
    float *qn, *kn, *rq, *rk;         /* L2-normalised q, k and their 1/norm */
    float *v;                         /* v after the convolution */
    float *ablog, *beta, *g;          /* gate logits [N, 2H] (a row: a's H, then b's), gates [N, H] */
    float *o, *z, *on, *ro;           /* delta-rule output, gate input, gated-norm output, its rstd */
    float *gdr_saved;                 /* the delta rule's forward quantities for its backward (or NULL) */
    int gdr_saved_set;                /* gdr_saved allocated, at the first forward (in the step's precision) */
};

/* The delta rule's `saved` (kernels/ops/ops_gdn.h): what the backend keeps for the backward
 * instead of computing it again there — on the GPU in bf16 mode the chunks' W, U, T, states
 * (~285 MB a layer at B = 4, T = 4096, H = 8, d = 128; none with HYLA_GDR_SAVED=0). Sized at
 * the first forward, when the matmul precision is set. */
static float *gdr_saved(struct hyla_model *m, struct gdn_acts *a) {
    if (!a->gdr_saved_set) {
        const struct hyla_model_layout *lay = &m->lay;
        const size_t n = m->be->gdr_chunk_saved_floats
                             ? m->be->gdr_chunk_saved_floats(m->B, m->T, lay->gdn_heads, lay->gdn_dk, lay->gdn_dv)
                             : 0;
        a->gdr_saved = n ? m->be->alloc(n * sizeof(float)) : NULL;
        a->gdr_saved_set = 1;
    }
    return a->gdr_saved;
}

void gdn_alloc(struct hyla_model *m, int layer) {
    const struct hyla_model_layout *lay = &m->lay;
    const size_t N = (size_t)m->B * m->T, KD = (size_t)lay->gdn_heads * lay->gdn_dk;
    const size_t VD = (size_t)lay->gdn_heads * lay->gdn_dv, H = (size_t)lay->gdn_heads;
    struct gdn_acts *a = hyla_calloc(1, sizeof *a);
    a->qbar = model_alloc_floats(m, N * KD), a->kbar = model_alloc_floats(m, N * KD);
    a->vbar = model_alloc_floats(m, N * VD);
    a->qn = model_alloc_floats(m, N * KD), a->kn = model_alloc_floats(m, N * KD);
    a->rq = model_alloc_floats(m, N * H), a->rk = model_alloc_floats(m, N * H);
    a->v = model_alloc_floats(m, N * VD);
    a->ablog = model_alloc_floats(m, N * 2 * H);
    a->beta = model_alloc_floats(m, N * H), a->g = model_alloc_floats(m, N * H);
    a->o = model_alloc_floats(m, N * VD), a->z = model_alloc_floats(m, N * VD);
    a->on = model_alloc_floats(m, N * VD), a->ro = model_alloc_floats(m, N * H);
    m->acts[layer].mixer = a;
}

void gdn_forward(struct hyla_model *m, int layer, const float *h, float *y) {
    const struct hyla_backend *be = m->be;
    const struct hyla_model_layout *lay = &m->lay;
    const struct hyla_layer_layout *L = &lay->layers[layer];
    struct gdn_acts *a = m->acts[layer].mixer;
    const int N = m->B * m->T, D = lay->dim, H = lay->gdn_heads, dk = lay->gdn_dk, dv = lay->gdn_dv;
    const int KD = H * dk, VD = H * dv, kw = m->cfg.conv_size;

    /* q, k, v and the output gate's input z: one op, so that the backend prepares h once */
    float *const ys[4] = {a->qbar, a->kbar, a->vbar, a->z};
    const float *const ws[4] = {layer_param(m, layer, L->q_proj), layer_param(m, layer, L->k_proj),
                                layer_param(m, layer, L->v_proj), layer_param(m, layer, L->g_proj)};
    const int outs[4] = {KD, KD, VD, VD};
    be->projections_fwd(4, ys, h, ws, outs, N, D);
    be->shortconv_silu_l2norm_fwd(a->qn, a->rq, a->qbar, layer_param(m, layer, L->q_conv), m->B, m->T, KD, kw, dk,
                                  1e-6f);
    be->shortconv_silu_l2norm_fwd(a->kn, a->rk, a->kbar, layer_param(m, layer, L->k_conv), m->B, m->T, KD, kw, dk,
                                  1e-6f);
    be->shortconv_silu_fwd(a->v, a->vbar, layer_param(m, layer, L->v_conv), m->B, m->T, VD, kw);

    /* the gates' logits: a_proj and b_proj are adjacent rows of one [2H, D] weight (model_layout.c),
     * so one product, which reads h once */
    be->linear_fwd(a->ablog, h, layer_param(m, layer, L->a_proj), NULL, N, D, 2 * H);
    be->gdn_gates_fwd(a->beta, a->g, a->ablog + H, a->ablog, 2 * H, layer_param(m, layer, L->A_log),
                      layer_param(m, layer, L->dt_bias), N, H);

    be->gdr_chunk_fwd(a->o, NULL, a->qn, a->kn, a->v, a->beta, a->g, NULL, 1.0f / sqrtf((float)dk), m->B, m->T, H,
                      dk, dv, gdr_saved(m, a));
    expect_activation(m, a->on, (size_t)N * VD);
    be->gated_rmsnorm_fwd(a->on, a->ro, a->o, a->z, layer_param(m, layer, L->o_norm), N * H, dv,
                          (float)m->cfg.norm_eps);
    hold_activation(m, a->on, (size_t)N * VD);
    be->linear_fwd(y, a->on, layer_param(m, layer, L->o_proj), NULL, N, VD, D);
}

void gdn_backward(struct hyla_model *m, int layer, const float *dy, float *dh) {
    const struct hyla_backend *be = m->be;
    const struct hyla_model_layout *lay = &m->lay;
    const struct hyla_layer_layout *L = &lay->layers[layer];
    struct gdn_acts *a = m->acts[layer].mixer;
    const float *h = m->acts[layer].h;
    const int N = m->B * m->T, D = lay->dim, H = lay->gdn_heads, dk = lay->gdn_dk, dv = lay->gdn_dv;
    const int KD = H * dk, VD = H * dv, kw = m->cfg.conv_size;
    float **S = m->scratch;

    /* output projection, gated norm: S1 = d on, S2 = d o, S3 = d z (kept to the end). The four
     * projections' dy (d z here, d qbar, d kbar, d vbar below) are held to the end: the ops that
     * write them may write the bf16 copies the projections' products read (expect_activation) */
    be->linear_bwd(S[1], layer_grad(m, layer, L->o_proj), NULL, dy, a->on, layer_param(m, layer, L->o_proj), N, VD, D);
    release_activation(m, a->on);
    expect_activation(m, S[3], (size_t)N * VD);
    be->gated_rmsnorm_bwd(S[2], S[3], layer_grad(m, layer, L->o_norm), S[1], a->o, a->z,
                          layer_param(m, layer, L->o_norm), a->ro, N * H, dv);
    hold_activation(m, S[3], (size_t)N * VD);

    /* the delta rule and q's and k's L2 norms: S1 = d qbar after the convolution (the gradient of
     * q before its norm), S4 = the same for k, S5 = dv, S6 = dbeta, S7 = dg */
    be->gdr_chunk_l2norm_bwd(S[1], S[4], S[5], S[6], S[7], NULL, S[2], NULL, a->qn, a->kn, a->v, a->beta, a->g, NULL,
                             1.0f / sqrtf((float)dk), m->B, m->T, H, dk, dv, a->gdr_saved, a->rq, a->rk);

    /* gates (the logits' gradients [N, 2H] in S2, a row [d a | d b]) and their one projection:
     * dh written */
    float *dablog = S[2];
    be->gdn_gates_bwd(dablog + H, dablog, layer_grad(m, layer, L->A_log), layer_grad(m, layer, L->dt_bias), S[6], S[7],
                      a->ablog + H, a->ablog, 2 * H, layer_param(m, layer, L->A_log),
                      layer_param(m, layer, L->dt_bias), N, H);
    be->linear_bwd(dh, layer_grad(m, layer, L->a_proj), NULL, dablog, h, layer_param(m, layer, L->a_proj), N, D, 2 * H);

    /* convolutions: S2 = d qbar, S1 = d kbar (S1 free once q's has read it), S6 = d vbar */
    float *dqbar = S[2], *dkbar = S[1];
    expect_activation(m, dqbar, (size_t)N * KD);
    be->shortconv_silu_bwd(dqbar, layer_grad(m, layer, L->q_conv), S[1], a->qbar, layer_param(m, layer, L->q_conv),
                           m->B, m->T, KD, kw);
    hold_activation(m, dqbar, (size_t)N * KD);
    expect_activation(m, dkbar, (size_t)N * KD);
    be->shortconv_silu_bwd(dkbar, layer_grad(m, layer, L->k_conv), S[4], a->kbar, layer_param(m, layer, L->k_conv),
                           m->B, m->T, KD, kw);
    hold_activation(m, dkbar, (size_t)N * KD);
    expect_activation(m, S[6], (size_t)N * VD);
    be->shortconv_silu_bwd(S[6], layer_grad(m, layer, L->v_conv), S[5], a->vbar, layer_param(m, layer, L->v_conv),
                           m->B, m->T, VD, kw);
    hold_activation(m, S[6], (size_t)N * VD);

    /* the q, k, v and gate projections, added onto dh: one op, so that the backend prepares h once */
    float *const dws[4] = {layer_grad(m, layer, L->q_proj), layer_grad(m, layer, L->k_proj),
                           layer_grad(m, layer, L->v_proj), layer_grad(m, layer, L->g_proj)};
    const float *const dys[4] = {dqbar, dkbar, S[6], S[3]};
    const float *const ws[4] = {layer_param(m, layer, L->q_proj), layer_param(m, layer, L->k_proj),
                                layer_param(m, layer, L->v_proj), layer_param(m, layer, L->g_proj)};
    const int outs[4] = {KD, KD, VD, VD};
    be->projections_bwd(4, dh, 1, dws, dys, h, ws, outs, N, D);
    for (int i = 0; i < 4; i++) release_activation(m, dys[i]);
}
