/* Layout of NSA's saved tensor (see op_shapes.h): shared by every backend. */
#include "op_shapes.h"

struct hyla_nsa_saved_offsets nsa_saved_offsets(const struct hyla_nsa_shape *s, int B, int L) {
    size_t blocks = ((size_t)L + (size_t)s->block_size - 1) / (size_t)s->block_size;
    size_t pooled = (size_t)B * blocks * (size_t)s->kv_heads * (size_t)s->head_dim; /* one of kbar, vbar */
    size_t rows = (size_t)B * (size_t)L * (size_t)s->q_heads;                     /* (b, t, query head) */
    struct hyla_nsa_saved_offsets off;
    off.kbar = 0;
    off.vbar = pooled;
    for (int x = 0; x < 3; x++) off.o[x] = 2 * pooled + (size_t)x * rows * (size_t)s->head_dim;
    for (int x = 0; x < 3; x++) off.lse[x] = off.o[0] + 3 * rows * (size_t)s->head_dim + (size_t)x * rows;
    off.gate = off.lse[0] + 3 * rows;
    off.total = off.gate + 3 * rows;
    return off;
}

size_t nsa_saved_size(const struct hyla_nsa_shape *s, int B, int L) { return nsa_saved_offsets(s, B, L).total; }
