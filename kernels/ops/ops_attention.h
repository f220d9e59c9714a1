/* Softmax attention (MODEL.md §4) and RoPE (§4.1). */

/* Rotate-half RoPE on x [B, L, H, d] at positions pos0 .. pos0+L-1, base theta:
 *   y[i] = x[i] cos(p th_i) - x[i+d/2] sin(p th_i);  y[i+d/2] = x[i+d/2] cos + x[i] sin,
 *   th_i = theta^(-2i/d). y may alias x. */
HYLA_OP(void, rope_fwd, (REAL *y, const REAL *x, int B, int L, int H, int d, REAL theta, int pos0))
/* The transpose: rotation by -p th. dx may alias dy. */
HYLA_OP(void, rope_bwd, (REAL *dx, const REAL *dy, int B, int L, int H, int d, REAL theta, int pos0))

/* Softmax attention with GQA (query head i reads kv head i / (Hq/Hkv)).
 * q, o: [B, L, Hq, d]; k, v: [B, L, Hkv, d]; lse: [B, L, Hq] (natural log-sum-exp of the
 * scaled scores, saved for the backward pass).
 * Key j is visible to query t iff j <= t and
 *   (window_left < 0  or  t - j <= window_left  or  (selected && selected[b, j, kv head])).
 * Conventions (MODEL.md §10.3): standard SWA of window w is window_left = w - 1 (w keys
 * including the query); LTE's window w is window_left = w (w + 1 keys); full causal is -1.
 * selected: [B, L, Hkv] bytes (LTE's kept keys, sinks included) or NULL. */
HYLA_OP(void, attention_fwd, (REAL *o, REAL *lse, const REAL *q, const REAL *k, const REAL *v,
                              const uint8_t *selected, int B, int L, int Hq, int Hkv, int d, int window_left,
                              REAL scale))
/* dq, dk, dv written. */
HYLA_OP(void, attention_bwd, (REAL *dq, REAL *dk, REAL *dv, const REAL *dout, const REAL *q, const REAL *k,
                              const REAL *v, const REAL *o, const REAL *lse, const uint8_t *selected, int B, int L,
                              int Hq, int Hkv, int d, int window_left, REAL scale))
