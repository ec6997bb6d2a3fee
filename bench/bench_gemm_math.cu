// cuBLAS product rates of the search's largest GEMM shape (65,536 calibration tokens × K 4096 →
// N 22016, the gate/up group of a 7B-shaped block) under each compute type the CUDA backend can
// select for fp32 storage (backend::cuda::Math), and with native fp16 storage: what each math mode
// of the pipeline buys. usage: bench_gemm_math [M K N] (on the device machine).
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x) do { auto e_ = (x); if (e_ != 0) { std::printf("error %d at %s:%d\n", (int)e_, __FILE__, __LINE__); std::exit(1); } } while (0)

__global__ void fill(float* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    unsigned h = (unsigned)i * 2654435761u ^ seed;
    h ^= h >> 13; h *= 0x5bd1e995u; h ^= h >> 15;
    p[i] = (h & 0xffff) / 65536.0f - 0.5f;
  }
}
__global__ void to_half(const float* a, __half* b, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) b[i] = __float2half(a[i]);
}

int main(int argc, char** argv) {
  const int M = argc > 3 ? std::atoi(argv[1]) : 65536, K = argc > 3 ? std::atoi(argv[2]) : 4096, N = argc > 3 ? std::atoi(argv[3]) : 22016;
  float *x, *w, *y;
  __half *xh, *wh;
  CK(cudaMalloc(&x, sizeof(float) * M * K)); CK(cudaMalloc(&w, sizeof(float) * N * K)); CK(cudaMalloc(&y, sizeof(float) * (size_t)M * N));
  CK(cudaMalloc(&xh, sizeof(__half) * M * K)); CK(cudaMalloc(&wh, sizeof(__half) * N * K));
  fill<<<1024, 256>>>(x, (size_t)M * K, 1); fill<<<1024, 256>>>(w, (size_t)N * K, 2);
  to_half<<<1024, 256>>>(x, xh, (size_t)M * K); to_half<<<1024, 256>>>(w, wh, (size_t)N * K);
  cublasHandle_t h; CK(cublasCreate(&h));
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  const float one = 1, zero = 0;
  struct Mode { const char* name; cublasComputeType_t ct; bool half; };
  const Mode modes[] = {{"fp32", CUBLAS_COMPUTE_32F, false}, {"tf32 (FAST_TF32)", CUBLAS_COMPUTE_32F_FAST_TF32, false},
                        {"fp16 (FAST_16F)", CUBLAS_COMPUTE_32F_FAST_16F, false}, {"bf16 (FAST_16BF)", CUBLAS_COMPUTE_32F_FAST_16BF, false},
                        {"fp16 storage", CUBLAS_COMPUTE_32F, true}};
  std::printf("M %d K %d N %d: %.2f TFLOP per product\n", M, K, N, 2.0 * M * K * N / 1e12);
  for (const Mode& m : modes) {
    auto run = [&] {
      if (m.half) CK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, wh, CUDA_R_16F, K, xh, CUDA_R_16F, K, &zero, y, CUDA_R_32F, N, m.ct, CUBLAS_GEMM_DEFAULT));
      else CK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_32F, K, x, CUDA_R_32F, K, &zero, y, CUDA_R_32F, N, m.ct, CUBLAS_GEMM_DEFAULT));
    };
    run(); CK(cudaDeviceSynchronize());
    const int reps = m.ct == CUBLAS_COMPUTE_32F && !m.half ? 2 : 6;
    cudaEventRecord(e0);
    for (int r = 0; r < reps; ++r) run();
    cudaEventRecord(e1); CK(cudaEventSynchronize(e1));
    float ms; cudaEventElapsedTime(&ms, e0, e1); ms /= reps;
    std::printf("%-18s %8.2f ms  %6.0f TFLOP/s\n", m.name, ms, 2.0 * M * K * N / (ms * 1e9));
  }
  return 0;
}
