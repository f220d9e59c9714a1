/* Token embedding: lookup and scatter-add backward (repeated tokens, padding row). */
#include <stdlib.h>

#include "harness.h"

enum { N = 9, DIM = 5, VOCAB = 6 };
static const int32_t tokens[N] = {0, 3, 3, 5, 1, 3, 2, 5, 0};

struct ctx {
    double table[VOCAB * DIM], out[N * DIM], proj[N * DIM];
};

static double loss(void *p) {
    struct ctx *c = p;
    cpu_f64_embedding_fwd(c->out, tokens, c->table, N, DIM);
    return dot_f64(c->proj, c->out, N * DIM);
}

int main(void) {
    struct ctx c;
    fill_uniform_f64(c.table, VOCAB * DIM, -1, 1, 1);
    fill_uniform_f64(c.proj, N * DIM, -1, 1, 2);
    loss(&c);
    check_true("embedding forward copies table rows", c.out[1 * DIM + 2] == c.table[3 * DIM + 2] &&
                                                          c.out[8 * DIM + 4] == c.table[0 * DIM + 4]);
    double dtable[VOCAB * DIM] = {0};
    cpu_f64_embedding_bwd(dtable, c.proj, tokens, N, DIM, -1);
    fd_check("embedding dtable", c.table, VOCAB * DIM, dtable, loss, &c, 1e-5);

    /* padding_idx = 3: that row gets no gradient, the others are unchanged. */
    double dpad[VOCAB * DIM] = {0};
    cpu_f64_embedding_bwd(dpad, c.proj, tokens, N, DIM, 3);
    double row3 = 0, others = 0;
    for (int j = 0; j < DIM; j++) row3 += fabs(dpad[3 * DIM + j]);
    for (int i = 0; i < VOCAB * DIM; i++)
        if (i / DIM != 3) others += fabs(dpad[i] - dtable[i]);
    check_le("embedding padding row gets no gradient", row3, 0);
    check_le("embedding padding leaves other rows unchanged", others, 0);

    /* Accumulation: a second call adds the same gradient again. */
    cpu_f64_embedding_bwd(dtable, c.proj, tokens, N, DIM, -1);
    double twice[VOCAB * DIM] = {0};
    cpu_f64_embedding_bwd(twice, c.proj, tokens, N, DIM, -1);
    for (int i = 0; i < VOCAB * DIM; i++) twice[i] *= 2;
    check_le("embedding backward accumulates", rel_err_f64(dtable, twice, VOCAB * DIM), 1e-15);
    return test_finish();
}
