/* Rows per chunk of the fused LM head + cross-entropy (ops_basic.h: lm_head_*): the logits
 * of one chunk of rows live in a scratch of chunk x vocab floats, so the whole [n, vocab]
 * matrix is never stored. Shared by every backend so that they cut the rows the same way. */
#ifndef HYLA_LM_HEAD_CHUNK_H
#define HYLA_LM_HEAD_CHUNK_H

/* 256 MiB of fp32 logits by default: 2097 rows at vocab 32000, large enough that each
 * chunk's products run at the GEMM's full rate. */
#define HYLA_LM_HEAD_CHUNK_FLOATS (64 * 1024 * 1024)

/* chunk_rows > 0: that many rows (tests cut small chunks); otherwise the default. Never
 * more than n, never less than 1. */
static inline int lm_head_chunk_rows(int n, int vocab, int chunk_rows) {
    long long rows = chunk_rows > 0 ? chunk_rows : HYLA_LM_HEAD_CHUNK_FLOATS / (vocab > 0 ? vocab : 1);
    if (rows > n) rows = n;
    return rows < 1 ? 1 : (int)rows;
}

#endif
