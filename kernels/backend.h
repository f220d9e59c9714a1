/* The backend interface: one table of functions per backend (cpu, later cuda). The
 * model is written once against this table. Memory functions move bytes; every op
 * takes raw pointers in the backend's memory and explicit shapes (kernels/ops/ops_<family>.h). */
#ifndef HYLA_BACKEND_H
#define HYLA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "ops/op_shapes.h"

struct hyla_backend {
    const char *name;
    int device_memory; /* 1: buffers live on a GPU (collectives go through NCCL, files through host copies) */
    int (*current_device)(void); /* the GPU this process uses (device_memory backends) */

    void *(*alloc)(size_t bytes);                       /* never NULL; dies on failure */
    void (*free)(void *ptr);
    void (*to_device)(void *dst, const void *src_host, size_t bytes);
    void (*to_host)(void *dst_host, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);
    void (*zero)(void *ptr, size_t bytes);
    void (*synchronize)(void);

    /* bf16 != 0: matrix products take bf16 operands (rounded from the fp32 values) and
     * accumulate in fp32; everything else stays fp32. NULL: the backend has fp32 only. */
    void (*set_matmul_precision)(int bf16);

    /* bf16 copies of fp32 values (round to nearest even, common/bf16.h) and back (exact):
     * FSDP gathers parameters in bf16 when train.precision = bf16. */
    void (*round_to_bf16)(uint16_t *dst, const float *src, size_t count);
    void (*widen_bf16)(float *dst, const uint16_t *src, size_t count);
    /* Optional (NULL: none). full[0 .. count) is the exact widening of the bf16 values twin,
     * and neither changes until forget_bf16_twin(full): the backend's bf16 products may read
     * operands inside full from twin rather than round them again (FSDP's units gathered in
     * bf16 keep their gathered copy for this). Returns whether it will: 0, the twin may go. */
    int (*know_bf16_twin)(const float *full, const uint16_t *twin, size_t count);
    void (*forget_bf16_twin)(const float *full);
    /* Optional (NULL: none). full[0 .. count) (an activation saved for the backward pass) will
     * not change until forget_bf16_twin(full): the backend may round it to bf16 once now and
     * let its bf16 products read that copy instead of rounding it again in each op that takes
     * it (the same bits). A second hold of the same full replaces the first. */
    void (*hold_bf16_copy)(const float *full, size_t count);
    /* Optional (NULL: none). The next op writes all of full[0 .. count), and hold_bf16_copy(full,
     * count) follows it: the backend may have that op write the bf16 copy beside its fp32
     * output (the same bits, no pass of its own). Until the hold, no product reads a copy; a
     * hold of full before this ends here. */
    void (*expect_bf16_copy)(const float *full, size_t count);

    /* Row-major C[m,n] = alpha op(A) op(B) + beta C. */
    void (*gemm)(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);

    /* How many floats gdr_chunk_fwd's `saved` holds for these shapes (0 or NULL: the backend
     * keeps nothing; its backward recomputes). In the current matmul precision. */
    size_t (*gdr_chunk_saved_floats)(int B, int L, int H, int dim_k, int dim_v);

    /* gdr_chunk_bwd, then l2norm_bwd of its dq and dk in place (the GDN's backward calls this):
     * the GDN's q and k enter the delta rule as rows of dim_k normalised to unit length, and
     * q_rstd, k_rstd ([B L H]) are their 1/norms from the forward. dq, dk end as the gradients
     * of the rows before the norm, the same bits as the three ops give; a backend may take the
     * norms' backward into its own last steps (no pass of their own). */
    void (*gdr_chunk_l2norm_bwd)(float *dq, float *dk, float *dv, float *dbeta, float *dg, float *dinitial_state,
                                 const float *dout, const float *dfinal_state, const float *q, const float *k,
                                 const float *v, const float *beta, const float *g, const float *initial_state,
                                 float scale, int B, int L, int H, int dim_k, int dim_v, const float *saved,
                                 const float *q_rstd, const float *k_rstd);

    /* One entry per op of kernels/ops/all_ops.h, in fp32. */
#define REAL float
#define HYLA_OP(ret, name, args) ret(*name) args;
#include "ops/all_ops.h"
#undef HYLA_OP
#undef REAL
};

/* The fp32 CPU backend (OpenMP + OpenBLAS). */
const struct hyla_backend *hyla_backend_cpu(void);

#endif
