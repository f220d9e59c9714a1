/* CUDA device discovery, callable from C. */
#ifndef HYLA_CUDA_DEVICE_H
#define HYLA_CUDA_DEVICE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no driver or no device. */
int hyla_cuda_device_count(void);
/* Device name into name[capacity]; 0 on success, -1 on failure. */
int hyla_cuda_device_name(int device, char *name, int capacity);
/* Bytes of device memory in use now (cudaMemGetInfo: total - free, all processes). */
size_t hyla_cuda_memory_used(void);
/* Make `device` this process's GPU (before its first allocation); 0, or -1 with a message. */
int hyla_cuda_use_device(int device);
/* This process's GPU. */
int hyla_cuda_current_device(void);

/* The matrix-product rate of cuBLAS on device 0 for n x n x n products, in TFLOP/s, timed
 * for at least min_seconds (kernels/cuda/cuda_gemm_rate.cu): fp32 without TF32, fp32
 * storage with bf16 operands (train.precision = bf16), or bf16 storage and operands (the
 * rate MFU is measured against). */
enum hyla_gemm_kind { HYLA_GEMM_FP32, HYLA_GEMM_FP32_BF16_OPERANDS, HYLA_GEMM_BF16 };
double hyla_cuda_gemm_tflops(int n, enum hyla_gemm_kind kind, double min_seconds);

#ifdef __cplusplus
}
#endif

#endif
