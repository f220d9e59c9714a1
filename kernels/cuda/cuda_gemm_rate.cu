// The GPU's measured matrix-product rates (hyla bench kernels/train): what MFU is taken
// against, and what train.precision = bf16 buys over fp32.
#include <chrono>

#include "cuda_check.h"
#include "cuda_device.h"

extern "C" double hyla_cuda_gemm_tflops(int n, enum hyla_gemm_kind kind, double min_seconds) {
    cublasHandle_t handle;
    CUBLAS_CHECK(cublasCreate(&handle));
    const size_t count = (size_t)n * n;
    const bool bf16 = kind == HYLA_GEMM_BF16;
    const size_t elem = bf16 ? 2 : 4;
    void *a, *b, *c;
    CUDA_CHECK(cudaMalloc(&a, count * elem));
    CUDA_CHECK(cudaMalloc(&b, count * elem));
    CUDA_CHECK(cudaMalloc(&c, count * elem));
    CUDA_CHECK(cudaMemset(a, 0, count * elem)); // the rate does not depend on the values
    CUDA_CHECK(cudaMemset(b, 0, count * elem));
    const cudaDataType_t type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t compute = kind == HYLA_GEMM_FP32 ? CUBLAS_COMPUTE_32F : kind == HYLA_GEMM_BF16
                                                                                         ? CUBLAS_COMPUTE_32F
                                                                                         : CUBLAS_COMPUTE_32F_FAST_16BF;
    const float alpha = 1.0f, beta = 0.0f;
    auto product = [&] {
        CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, type, n, b, type, n, &beta, c,
                                  type, n, compute, CUBLAS_GEMM_DEFAULT));
    };
    using clock = std::chrono::steady_clock;
    product(); // warm-up: heuristics, kernel load
    CUDA_CHECK(cudaDeviceSynchronize());
    int reps = 0;
    const auto start = clock::now();
    double seconds;
    do {
        product();
        CUDA_CHECK(cudaDeviceSynchronize());
        reps++;
        seconds = std::chrono::duration<double>(clock::now() - start).count();
    } while (seconds < min_seconds);
    CUDA_CHECK(cudaFree(a));
    CUDA_CHECK(cudaFree(b));
    CUDA_CHECK(cudaFree(c));
    CUBLAS_CHECK(cublasDestroy(handle));
    return 2.0 * n * (double)n * n * reps / seconds / 1e12;
}
