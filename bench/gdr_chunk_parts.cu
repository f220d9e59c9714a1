// Timing of the chunked gated delta rule's launches at the reference shape (B4 T4096 H8 d128):
// prep, state chain and output of the forward, then the whole forward and backward. Not part
// of the CMake build (hyla bench kernels gives the numbers that count); after the CUDA build:
//   nvcc -O3 --generate-code=arch=compute_90a,code=sm_90a -I. -Ikernels bench/gdr_chunk_parts.cu \
//        build-cuda/libhyla_cuda.a -lcublas -o gpu-carry/gdr_chunk_parts
#include <cstdio>
#include <vector>
#include "kernels/cuda/cuda_gdr_chunk.cuh"

void cuda_gdr_chunk_fwd_bf16(float *, float *, const float *, const float *, const float *, const float *, const float *, const float *, float, int, int, int, int, int, float *);
void cuda_gdr_chunk_bwd_bf16(float *, float *, float *, float *, float *, float *, const float *, const float *, const float *, const float *, const float *, const float *, const float *, const float *, float, int, int, int, int, int, const float *);
__global__ void fill(float *p, size_t n, float lo, float hi, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned x = (unsigned)i * 2654435761u ^ seed; x ^= x >> 13; x *= 0x5bd1e995; x ^= x >> 15;
        p[i] = lo + (hi - lo) * (x & 0xffffff) / 16777216.0f;
    }
}
int main() {
    const int B = 4, L = 4096, H = 8, D = 128;
    const size_t nq = (size_t)B * L * H * D, ng = (size_t)B * L * H;
    float *q, *k, *v, *beta, *g, *o, *st, *dq, *dk, *dv, *db, *dg, *dO;
    for (float **p : {&q, &k, &v, &dq, &dk, &dv, &o, &dO}) cudaMalloc(p, nq * 4);
    for (float **p : {&beta, &g, &db, &dg}) cudaMalloc(p, ng * 4);
    cudaMalloc(&st, (size_t)B * H * D * D * 4);
    // k, q not normalised: uniform in +-1/sqrt(D) roughly keeps |k| ~ 0.6
    fill<<<1024, 256>>>(q, nq, -0.15f, 0.15f, 1); fill<<<1024, 256>>>(k, nq, -0.15f, 0.15f, 2);
    fill<<<1024, 256>>>(v, nq, -1, 1, 3); fill<<<1024, 256>>>(dO, nq, -1, 1, 4);
    fill<<<1024, 256>>>(beta, ng, 0.1f, 0.9f, 5); fill<<<1024, 256>>>(g, ng, -0.5f, -0.01f, 6);
    const gdrc::dims d = gdrc::make_dims(B, L, H, D, D, 0.0883883f);
    cudaEvent_t e[8];
    for (auto &x : e) cudaEventCreate(&x);
    float t[4] = {0, 0, 0, 0}, tf = 0, tb = 0;
    const int reps = 20;
    for (int r = 0; r < reps + 2; r++) {
        gdrc::scratch s = gdrc::alloc_scratch(d, false);
        cudaEventRecord(e[0]);
        gdrc::launch_prep(s, q, k, v, beta, g, d);
        cudaEventRecord(e[1]);
        gdrc::launch_state_fwd(s, st, nullptr, d);
        cudaEventRecord(e[2]);
        gdrc::launch_out(o, s, q, k, d);
        cudaEventRecord(e[3]);
        cuda_gdr_chunk_fwd_bf16(o, st, q, k, v, beta, g, nullptr, 0.0883883f, B, L, H, D, D, nullptr);
        cudaEventRecord(e[4]);
        cuda_gdr_chunk_bwd_bf16(dq, dk, dv, db, dg, nullptr, dO, nullptr, q, k, v, beta, g, nullptr, 0.0883883f, B, L, H, D, D, nullptr);
        cudaEventRecord(e[5]);
        cudaEventSynchronize(e[5]);
        gdrc::free_scratch(s);
        if (r < 2) continue;
        float x;
        for (int i = 0; i < 3; i++) cudaEventElapsedTime(&x, e[i], e[i + 1]), t[i] += x;
        cudaEventElapsedTime(&x, e[3], e[4]), tf += x;
        cudaEventElapsedTime(&x, e[4], e[5]), tb += x;
    }
    printf("gdr chunk parts (ms): prep %.3f  state_fwd %.3f  out %.3f | fwd %.3f  bwd %.3f (bwd minus prep+state: %.3f)  err=%s\n",
           t[0] / reps, t[1] / reps, t[2] / reps, tf / reps, tb / reps, (tb - t[0] - t[1]) / reps, cudaGetErrorString(cudaGetLastError()));
    std::vector<float> h(16);
    cudaMemcpy(h.data(), dg, 64, cudaMemcpyDeviceToHost);
    printf("dg[0..3] %g %g %g %g\n", h[0], h[1], h[2], h[3]);
    return 0;
}
