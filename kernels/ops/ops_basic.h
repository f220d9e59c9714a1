/* Dense building blocks: embedding, norms, linear layers, SwiGLU, cross-entropy (alone and fused
 * with the LM head), AdamW. */

/* out[i,:] = table[tokens[i],:] for i < n. Tokens are checked by the data loader. */
HYLA_OP(void, embedding_fwd, (REAL *out, const int32_t *tokens, const REAL *table, int n, int dim))
/* dtable[tokens[i],:] += dout[i,:]; rows equal to padding_idx get nothing (-1: none). */
HYLA_OP(void, embedding_bwd, (REAL *dtable, const REAL *dout, const int32_t *tokens, int n, int dim,
                              int padding_idx))

/* y = x / sqrt(mean(x^2) + eps) * weight, row by row; rstd[i] = 1/sqrt(mean + eps) saved. */
HYLA_OP(void, rmsnorm_fwd, (REAL *y, REAL *rstd, const REAL *x, const REAL *weight, int n, int dim, REAL eps))
HYLA_OP(void, rmsnorm_bwd, (REAL *dx, REAL *dweight, const REAL *dy, const REAL *x, const REAL *weight,
                            const REAL *rstd, int n, int dim))

/* Fused residual add + RMSNorm: sum = x + residual; y = rmsnorm(sum). */
HYLA_OP(void, add_rmsnorm_fwd, (REAL *sum, REAL *y, REAL *rstd, const REAL *x, const REAL *residual,
                                const REAL *weight, int n, int dim, REAL eps))
/* dx = dresidual = dsum + rmsnorm_bwd(dy) (dsum: gradient arriving at `sum` from later
 * uses, NULL for none). dx may alias dsum. */
HYLA_OP(void, add_rmsnorm_bwd, (REAL *dx, REAL *dweight, const REAL *dy, const REAL *dsum, const REAL *sum,
                                const REAL *weight, const REAL *rstd, int n, int dim))

/* y[n,out] = x[n,in] W^T + b, W is [out,in] (nn.Linear); bias may be NULL. */
HYLA_OP(void, linear_fwd, (REAL *y, const REAL *x, const REAL *weight, const REAL *bias, int n, int in, int out))
/* dx = dy W (dx may be NULL to skip); dW += dy^T x; db += column sums of dy (NULL: no bias). */
HYLA_OP(void, linear_bwd, (REAL *dx, REAL *dweight, REAL *dbias, const REAL *dy, const REAL *x,
                           const REAL *weight, int n, int in, int out))
/* Projections of one input without biases (a mixer's q, k, v): ys[i] = x weights[i]^T, [n, outs[i]],
 * for i < count. One op so that a backend can prepare x once for all of them (the CUDA
 * backend's bf16 copy). */
HYLA_OP(void, projections_fwd, (int count, REAL *const *ys, const REAL *x, const REAL *const *weights,
                                const int *outs, int n, int in))
/* Their backward: dweights[i] += dys[i]^T x for every i; dx = sum_i dys[i] weights[i] (added onto dx
 * when accumulate), the terms in order i. */
HYLA_OP(void, projections_bwd, (int count, REAL *dx, int accumulate, REAL *const *dweights,
                                const REAL *const *dys, const REAL *x, const REAL *const *weights,
                                const int *outs, int n, int in))
/* As linear_bwd but dx += dy W: for inputs that feed several projections. */
HYLA_OP(void, linear_bwd_accumulate, (REAL *dx, REAL *dweight, REAL *dbias, const REAL *dy, const REAL *x,
                                      const REAL *weight, int n, int in, int out))

/* z = silu(gate) * up, elementwise over count values. */
HYLA_OP(void, swiglu_fwd, (REAL *z, const REAL *gate, const REAL *up, size_t count))
HYLA_OP(void, swiglu_bwd, (REAL *dgate, REAL *dup, const REAL *dz, const REAL *gate, const REAL *up, size_t count))

/* SwiGLU MLP added onto a residual: y = residual + W_down (silu(x W_gate^T) * (x W_up^T))
 * (residual NULL: the MLP alone; y may alias residual, not x or acts). Taking the residual
 * lets the down projection add onto it (beta = 1) instead of a separate sum pass. acts
 * [n, 3*inter] saves gate, up and z (in that order) for the backward pass. */
HYLA_OP(void, mlp_fwd, (REAL *y, REAL *acts, const REAL *x, const REAL *residual, const REAL *w_gate,
                        const REAL *w_up, const REAL *w_down, int n, int dim, int inter))
/* scratch [n, 2*inter]. dx written; weight gradients accumulated. */
HYLA_OP(void, mlp_bwd, (REAL *dx, REAL *dw_gate, REAL *dw_up, REAL *dw_down, const REAL *dy, const REAL *x,
                        const REAL *acts, const REAL *w_gate, const REAL *w_up, const REAL *w_down,
                        REAL *scratch, int n, int dim, int inter))

/* Cross-entropy of logits [n, vocab] against targets; positions whose target equals
 * ignore_index count for nothing. losses[i] is the per-position loss (0 when ignored);
 * returns the mean over valid positions (0 when none) and writes their number. */
HYLA_OP(REAL, cross_entropy_fwd, (REAL *losses, const REAL *logits, const int32_t *targets, int n, int vocab,
                                  int ignore_index, int *valid_count))
/* dlogits = dloss * (softmax(logits) - onehot(target)) / valid_count on valid rows, 0 on
 * ignored rows. dlogits may alias logits. */
HYLA_OP(void, cross_entropy_bwd, (REAL *dlogits, const REAL *logits, const int32_t *targets, int n, int vocab,
                                  int ignore_index, int valid_count, REAL dloss))

/* The LM head fused with cross-entropy: logits = h weight^T (weight [vocab, dim], the
 * nn.Linear layout) are computed chunk_rows rows at a time into a scratch of chunk_rows x
 * vocab floats and reduced at once, so [n, vocab] is never stored (kernels/ops/lm_head_chunk.h:
 * chunk_rows <= 0 takes the default, 256 MiB of logits). The numbers are those of
 * linear_fwd + cross_entropy_fwd: losses[i] = lse[i] - logits[i, targets[i]], with
 * lse[i] = log sum_j exp(logits[i, j]) saved for the backward pass; both are 0 on rows whose
 * target is ignore_index. The mean over valid rows is the caller's (it knows the targets). */
HYLA_OP(void, lm_head_ce_fwd, (REAL *losses, REAL *lse, const REAL *h, const REAL *weight, const int32_t *targets,
                               int n, int dim, int vocab, int ignore_index, int chunk_rows))
/* Backward of lm_head_ce_fwd's mean loss times dloss, each chunk's logits recomputed:
 * dlogits = dloss / valid_count * (softmax - onehot(target)) (0 on ignored rows, as
 * cross_entropy_bwd), dh = dlogits weight written, dweight += dlogits^T h accumulated chunk
 * after chunk in row order (deterministic). dh must not alias h. */
HYLA_OP(void, lm_head_ce_bwd, (REAL *dh, REAL *dweight, const REAL *h, const REAL *weight, const REAL *lse,
                               const int32_t *targets, int n, int dim, int vocab, int ignore_index, int valid_count,
                               REAL dloss, int chunk_rows))
/* Both in one pass, for a training step whose backward pass follows (valid_count and dloss
 * known in the forward pass): lm_head_ce_fwd's losses and lse, and lm_head_ce_bwd's dh, with
 * each chunk's logits made once rather than again in the backward pass. dweight is written
 * (this call's gradient alone; the caller adds it where the weight's gradient lives, which
 * need not exist during the forward pass). dh must not alias h. */
HYLA_OP(void, lm_head_ce_fwd_bwd, (REAL *losses, REAL *lse, REAL *dh, REAL *dweight, const REAL *h, const REAL *weight,
                                   const int32_t *targets, int n, int dim, int vocab, int ignore_index,
                                   int valid_count, REAL dloss, int chunk_rows))
/* *acc += the mean loss over valid_count valid rows (0 when none): losses [n] hold 0 on
 * ignored rows (as lm_head_ce_fwd writes them), the sum is taken in double in a fixed order
 * and the mean rounded to REAL, as cross_entropy_fwd returns it. acc: one double in the
 * backend's memory (the host reads it at the end of the step). */
HYLA_OP(void, loss_mean_add, (double *acc, const REAL *losses, int n, int valid_count))
/* out[i] = the first j with the largest logits[i, j] = h[i,:] . weight[j,:] (evaluation's
 * predictions), the logits computed by chunks as lm_head_ce_fwd does. */
HYLA_OP(void, lm_head_argmax, (int32_t *out, const REAL *h, const REAL *weight, int n, int dim, int vocab,
                               int chunk_rows))

/* *acc += the sum of squares of x, reduced in double in a fixed order (deterministic for a
 * fixed thread count). acc is one double in the backend's memory: the gradient norm is
 * summed over all units without the host waiting for it. */
HYLA_OP(void, sum_squares_add, (double *acc, const REAL *x, size_t count))
/* acc[i] += weight * x[i] in double (acc in the backend's memory): step statistics that
 * the host reads once, at the end of the step. */
HYLA_OP(void, accumulate_f64, (double *acc, const REAL *x, size_t count, double weight))
/* The gradient clipping factor from the squared norm, on the device: norm = sqrt(*sum_squares);
 * *scale = min(1, max_norm / (norm + 1e-6)) (torch's clip_grad_norm_), 1 when max_norm <= 0,
 * and NaN when the norm is not finite (adamw_step then skips the step). */
HYLA_OP(void, grad_clip_scale, (REAL *scale, const double *sum_squares, REAL max_norm))
/* y += alpha * x */
HYLA_OP(void, axpy, (REAL *y, const REAL *x, REAL alpha, size_t count))

/* AdamW (torch semantics, decoupled weight decay, bias correction), in place:
 *   g = grad * grad_scale;  p -= lr * weight_decay * p
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= lr * (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps)
 * step is 1-based. *grad_scale (one value in the backend's memory, from grad_clip_scale)
 * carries gradient clipping; when it is not finite nothing changes (a skipped step). */
HYLA_OP(void, adamw_step, (REAL *param, const REAL *grad, REAL *m, REAL *v, size_t count, REAL lr, REAL beta1,
                           REAL beta2, REAL eps, REAL weight_decay, const REAL *grad_scale, int step))
