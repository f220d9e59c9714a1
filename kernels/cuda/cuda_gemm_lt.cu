// CUDA: bf16 products that add onto a matrix they must not overwrite, D = alpha op(A) op(B) +
// beta C with C and D apart (cuBLASLt). cublasGemmEx adds onto its output only, so the MLP's
// down projection, y = residual + z Wd^T with y not the residual (cuda_mlp.cu), first copied
// the residual into y: a [16384 x 1024] fp32 copy, ~40 us on an H100, 24 a laLTE step,
// outside every kernel (Nsight Compute's kernel list does not show it). cuBLASLt reads C and
// writes D in the product's epilogue instead. The sums are cuBLAS's, fp32 over bf16 operands,
// the algorithm cuBLASLt's heuristic first choice for the shape: the same arithmetic as
// cuda_gemm_bf16 up to the order of the sums.
#include <cublasLt.h>
#include <cuda_bf16.h>

#include "backend_cuda.h"
#include "cuda_check.h"
#include "cuda_products.cuh"

namespace {

constexpr size_t WORKSPACE_BYTES = 32u << 20; // cuBLAS's own default on Hopper

// One shape's descriptors and algorithm, made on its first product and kept: the heuristic
// query costs host time, and a training step repeats a few shapes.
struct lt_plan {
    int ta, tb, m, n, k, ldd;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, cd;
    cublasLtMatmulAlgo_t algo;
};
constexpr int MAX_PLANS = 16;
lt_plan plans[MAX_PLANS];
int n_plans = 0;

cublasLtHandle_t lt_handle() {
    static cublasLtHandle_t h = [] {
        cublasLtHandle_t x;
        CUBLAS_CHECK(cublasLtCreate(&x));
        return x;
    }();
    return h;
}
void *workspace() {
    static void *w = [] {
        void *p = nullptr;
        CUDA_CHECK(cudaMalloc(&p, WORKSPACE_BYTES));
        return p;
    }();
    return w;
}

// The column-major view cuBLAS takes of row-major products (cuda_gemm_bf16): D^T (n x m) =
// op(B)^T op(A)^T, so cuBLASLt's A is our B (op trans_b) and its B our A (op trans_a).
lt_plan make_plan(int ta, int tb, int m, int n, int k, int ldd) {
    lt_plan p{ta, tb, m, n, k, ldd, nullptr, nullptr, nullptr, nullptr, {}};
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_a = tb ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    const int a_cols = ta ? m : k, b_cols = tb ? k : n; // our row-major operands' widths
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, tb ? k : n, tb ? n : k, b_cols));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, ta ? m : k, ta ? k : m, a_cols));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.cd, CUDA_R_32F, n, m, ldd));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = WORKSPACE_BYTES;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt_handle(), p.op, p.a, p.b, p.cd, p.cd, pref, 1, &result, &found));
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (found < 1) {
        fprintf(stderr, "hyla: error: cuBLASLt has no algorithm for a %d x %d x %d bf16 product; run with "
                        "HYLA_GEMM_ONTO=0\n", m, n, k);
        exit(1);
    }
    p.algo = result.algo;
    return p;
}
void free_plan(lt_plan &p) {
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p.a));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p.b));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p.cd));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(p.op));
}
// The kept plan of the shape, or nullptr with the table full (the caller makes one for the call).
const lt_plan *kept_plan(int ta, int tb, int m, int n, int k, int ldd) {
    for (int i = 0; i < n_plans; i++) {
        const lt_plan &p = plans[i];
        if (p.ta == ta && p.tb == tb && p.m == m && p.n == n && p.k == k && p.ldd == ldd) return &p;
    }
    if (n_plans == MAX_PLANS) return nullptr;
    plans[n_plans] = make_plan(ta, tb, m, n, k, ldd);
    return &plans[n_plans++];
}

} // namespace

// Row-major D = alpha op(A) op(B) + beta C from dense bf16 A and B, fp32 C and D of the same
// shape and row stride ldd (C may not be D's memory; cuda_gemm_bf16 for C = D).
void cuda_gemm_bf16_onto(int trans_a, int trans_b, int m, int n, int k, float alpha, const __nv_bfloat16 *a,
                         const __nv_bfloat16 *b, float beta, const float *c, float *d, int ldd) {
    const lt_plan *kept = kept_plan(trans_a, trans_b, m, n, k, ldd);
    lt_plan once;
    if (!kept) once = make_plan(trans_a, trans_b, m, n, k, ldd);
    const lt_plan &p = kept ? *kept : once;
    CUBLAS_CHECK(cublasLtMatmul(lt_handle(), p.op, &alpha, b, p.a, a, p.b, &beta, c, p.cd, d, p.cd, &p.algo,
                                workspace(), WORKSPACE_BYTES, 0));
    if (!kept) free_plan(once); // (after the call is queued: cuBLASLt has read the descriptors)
}
