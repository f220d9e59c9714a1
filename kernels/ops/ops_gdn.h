/* Gated DeltaNet pieces (MODEL.md §3): short convolution, L2 norm, gates, the gated
 * delta rule (recurrent reference and chunkwise), gated RMSNorm. */

/* Causal depthwise convolution of width kw with zero left padding, then SiLU:
 *   y[b,t,c] = silu( sum_{i<kw} w[c,i] * x[b,t-kw+1+i,c] ),  x[b,<0,c] = 0.
 * x, y: [B, L, C]; w: [C, kw] (the reference's [C,1,kw]). The tap i = kw-1 multiplies token t.
 * kw <= HYLA_SHORTCONV_MAX_WIDTH (op_shapes.h; the config's bound on model.conv_size). */
HYLA_OP(void, shortconv_silu_fwd, (REAL *y, const REAL *x, const REAL *w, int B, int L, int C, int kw))
/* Recomputes the pre-activation. dx written, dw accumulated. */
HYLA_OP(void, shortconv_silu_bwd, (REAL *dx, REAL *dw, const REAL *dy, const REAL *x, const REAL *w, int B, int L,
                                   int C, int kw))

/* Row-wise L2 normalisation: y = x / sqrt(|x|^2 + eps), rstd = 1/sqrt(|x|^2 + eps). */
HYLA_OP(void, l2norm_fwd, (REAL *y, REAL *rstd, const REAL *x, int rows, int dim, REAL eps))
/* The two in one (the GDN's q and k): shortconv_silu_fwd, then l2norm_fwd over rows of head_dim
 * (C a multiple of head_dim; rstd: [B L C / head_dim]). y may not alias x. A backend may fuse
 * them: the convolution's output is never stored, only its normalised form. */
HYLA_OP(void, shortconv_silu_l2norm_fwd, (REAL *y, REAL *rstd, const REAL *x, const REAL *w, int B, int L, int C,
                                          int kw, int head_dim, REAL eps))
/* dx = rstd * (dy - <dy, y> y). */
HYLA_OP(void, l2norm_bwd, (REAL *dx, const REAL *dy, const REAL *y, const REAL *rstd, int rows, int dim))

/* Gates per token and head, rows = B*L: beta, g (and dbeta, dg) [rows, H]; the logits and
 * their gradients [rows] of H at row stride ld >= H (the model makes a's and b's logits in one
 * product, a row [a | b]: ld = 2H):
 *   beta = sigmoid(b_logit);  g = -exp(A_log[h]) * softplus(a_logit + dt_bias[h]). */
HYLA_OP(void, gdn_gates_fwd, (REAL *beta, REAL *g, const REAL *b_logits, const REAL *a_logits, int ld,
                              const REAL *A_log, const REAL *dt_bias, int rows, int H))
/* db_logits, da_logits written (row stride ld, the rest of a row untouched); dA_log, ddt_bias
 * accumulated. */
HYLA_OP(void, gdn_gates_bwd, (REAL *db_logits, REAL *da_logits, REAL *dA_log, REAL *ddt_bias, const REAL *dbeta,
                              const REAL *dg, const REAL *b_logits, const REAL *a_logits, int ld, const REAL *A_log,
                              const REAL *dt_bias, int rows, int H))

/* Gated delta rule (MODEL.md §3.2 step 5), state S [dim_k, dim_v] per (b, h):
 *   S_t = exp(g_t) S_{t-1} + k_t delta_t^T,  delta_t = beta_t (v_t - exp(g_t) S_{t-1}^T k_t),
 *   o_t = scale * S_t^T q_t.
 * q, k: [B,L,H,dim_k] (already L2-normalised by the caller); v, o: [B,L,H,dim_v];
 * beta, g: [B,L,H]; states: [B,H,dim_k,dim_v]. initial_state NULL = zeros; final_state may be NULL. */
HYLA_OP(void, gdr_recurrent_fwd, (REAL *o, REAL *final_state, const REAL *q, const REAL *k, const REAL *v,
                                  const REAL *beta, const REAL *g, const REAL *initial_state, REAL scale, int B,
                                  int L, int H, int dim_k, int dim_v))
/* All gradients written. dfinal_state NULL = zero; dinitial_state may be NULL.
 * Reference only: keeps every state (memory B*H*L*dim_k*dim_v). */
HYLA_OP(void, gdr_recurrent_bwd, (REAL *dq, REAL *dk, REAL *dv, REAL *dbeta, REAL *dg, REAL *dinitial_state,
                                  const REAL *dout, const REAL *dfinal_state, const REAL *q, const REAL *k,
                                  const REAL *v, const REAL *beta, const REAL *g, const REAL *initial_state,
                                  REAL scale, int B, int L, int H, int dim_k, int dim_v))
/* The same function computed chunkwise (chunk 64, MODEL.md §3.4-3.5), same arguments, plus `saved`:
 * NULL, or the backend's gdr_chunk_saved_floats(B, L, H, dim_k, dim_v) values (struct hyla_backend)
 * that the forward fills with what the backward would otherwise compute again, for the backward of
 * the same inputs (the contents are the backend's own; a backend whose size is 0 ignores it).
 * The CPU allocates per-thread scratch on each call: the forward 64*(13 dim_k + 9 dim_v + 392) +
 * 3 dim_k dim_v values; the backward that plus, per 64-token chunk, dim_k dim_v + 64*(65 + dim_k + 2 dim_v). */
HYLA_OP(void, gdr_chunk_fwd, (REAL *o, REAL *final_state, const REAL *q, const REAL *k, const REAL *v,
                              const REAL *beta, const REAL *g, const REAL *initial_state, REAL scale, int B, int L,
                              int H, int dim_k, int dim_v, REAL *saved))
HYLA_OP(void, gdr_chunk_bwd, (REAL *dq, REAL *dk, REAL *dv, REAL *dbeta, REAL *dg, REAL *dinitial_state,
                              const REAL *dout, const REAL *dfinal_state, const REAL *q, const REAL *k, const REAL *v,
                              const REAL *beta, const REAL *g, const REAL *initial_state, REAL scale, int B, int L,
                              int H, int dim_k, int dim_v, const REAL *saved))

/* Gated RMSNorm per row (rows = B*L*H, dim = dim_v, weight [dim_v] shared by the heads):
 *   y = x * rstd * weight * silu(gate),  rstd = 1/sqrt(mean(x^2) + eps). */
HYLA_OP(void, gated_rmsnorm_fwd, (REAL *y, REAL *rstd, const REAL *x, const REAL *gate, const REAL *weight,
                                  int rows, int dim, REAL eps))
/* dx, dgate written; dweight accumulated. */
HYLA_OP(void, gated_rmsnorm_bwd, (REAL *dx, REAL *dgate, REAL *dweight, const REAL *dy, const REAL *x,
                                  const REAL *gate, const REAL *weight, const REAL *rstd, int rows, int dim))
