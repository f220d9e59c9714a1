/* Native sparse attention (MODEL.md §6): mean-pooled compressed attention, top-n block
 * selection shared by a kv group, selected-block attention and a sliding window, mixed
 * by sigmoid gates. q: [B, L, Hq, d], k, v: [B, L, Hkv, d], both after RoPE.
 * gate_logits: [B, L, 3*Hq], channel 3i+0 = compressed, 3i+1 = selected, 3i+2 = window.
 * saved: nsa_saved_size(shape, B, L) values (layout in op_shapes.h);
 * block_idx: [B, L, Hkv, n_select] selected blocks (-1 = unused), an output of the forward
 * pass that the backward pass reuses (selection carries no gradient). With
 * reuse_block_idx != 0 the forward pass takes block_idx as given instead of selecting
 * (recomputation, and finite-difference tests that hold the discrete choice fixed). */
HYLA_OP(void, nsa_fwd, (REAL *o, REAL *saved, int32_t *block_idx, const REAL *q, const REAL *k, const REAL *v,
                        const REAL *gate_logits, const struct hyla_nsa_shape *shape, int B, int L,
                        int reuse_block_idx))
/* dq, dk, dv, dgate_logits written. */
HYLA_OP(void, nsa_bwd, (REAL *dq, REAL *dk, REAL *dv, REAL *dgate_logits, const REAL *dout, const REAL *saved,
                        const int32_t *block_idx, const REAL *q, const REAL *k, const REAL *v,
                        const REAL *gate_logits, const struct hyla_nsa_shape *shape, int B, int L))
