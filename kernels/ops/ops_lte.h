/* Learnable token eviction (MODEL.md §5): the router CNN, selection, the straight-through
 * estimator and the L1 term. The attention itself is attention_fwd with `selected`. */

/* Router CNN, one independent CNN per kv head (grouped Conv2d in the reference).
 * Input per head h at position j: [k_j^(h); v_j^(h)] (2d channels, raw projections, no RoPE).
 * k, v: [B, L, H*d]. score: [B, L, H] = sigmoid(z) - 0.5.
 * params: the flat concatenation, in state-dict order, of convs.0.weight [c1*H, c0, 1, k0],
 * convs.0.bias [c1*H], convs.1..., proj.weight [H, c_last, 1, 1], proj.bias [H]
 * (lte_router_param_count / lte_router_offsets in op_shapes.h).
 * The B rows (sequences) are independent problems: a call on B rows does what B calls on one
 * row each would (a backend may batch them or not), each row with its own dropout key and its
 * own block of saved activations.
 * acts: saved activations, lte_router_acts_size(shape, B, L) values, row after row, each row
 * lte_router_acts_size(shape, 1, L) values: the pre-SiLU conv outputs a_1 .. a_n as [L, H, c_l]
 * each, then z as [L, H] (kernels/ops/lte_shape.c).
 * Dropout (keep prob 1 - p, scale 1/(1-p)) on the input of every conv; the mask of element
 * e of conv layer l in row b is hyla_rng_uniform(hyla_rng_subkey(dropout_keys[b], l), e) >= (float)p,
 * so the backward pass regenerates it, with e = (t H + h) c_l + c, the flat index in the row's
 * [L, H, c_l] layout (for l = 0 head h's channels are [k_h, v_h]). dropout_keys: B keys in host
 * memory, read only when p > 0; p = 0 disables dropout (evaluation). */
HYLA_OP(void, lte_router_fwd, (REAL *score, REAL *acts, const REAL *k, const REAL *v, const REAL *params,
                               const struct hyla_lte_router_shape *shape, int B, int L, REAL dropout_p,
                               const uint64_t *dropout_keys))
/* dk, dv and dparams accumulated: the router's share of k's and v's gradients is added onto
 * what the attention gave them (the model passes those in: no separate pass to add them).
 * The CPU version allocates scratch per call: L (c_0 + ... + c_n) + 16384 values per thread. */
HYLA_OP(void, lte_router_bwd, (REAL *dk, REAL *dv, REAL *dparams, const REAL *dscore, const REAL *k, const REAL *v,
                               const REAL *params, const REAL *acts, const struct hyla_lte_router_shape *shape, int B,
                               int L, REAL dropout_p, const uint64_t *dropout_keys))

/* selected[b,j,h] = score > 0 or j < sinks. */
HYLA_OP(void, lte_select, (uint8_t *selected, const REAL *score, int B, int L, int H, int sinks))

/* Straight-through estimator backward (forward is v' = v):
 *   dscore[b,j,h] = sum_c dv_attn[b,j,h,c] * v[b,j,h,c]   (written). */
HYLA_OP(void, lte_ste_bwd, (REAL *dscore, const REAL *dv_attn, const REAL *v, int B, int L, int H, int d))

/* L1 term of one LTE layer over positions j < L - margin (margin = 6 in the reference):
 *   *l1_acc += coef * sum_{b, j, h} lambda[h] * relu(score[b,j,h])  (rounded to REAL first);
 *   kept_fraction[h] = mean_{b, j < L-margin} 1[score > 0]  (may be NULL).
 * l1_acc: one double in the backend's memory (read by the host at the end of a step).
 * The caller folds 1/(B L' n_layers H) and the accumulation scaling into coef. */
HYLA_OP(void, lte_l1_fwd, (double *l1_acc, REAL *kept_fraction, const REAL *score, const REAL *lambda, REAL coef,
                           int B, int L, int H, int margin))
/* dscore[b,j,h] += coef * lambda[h] * 1[score > 0] for j < L - margin. */
HYLA_OP(void, lte_l1_bwd, (REAL *dscore, const REAL *score, const REAL *lambda, REAL coef, int B, int L, int H,
                           int margin))
