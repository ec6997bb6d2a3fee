// Deterministic N(0, 1) draws on the device for the GPU benches: element e of stream `seed` from a
// counter hash (Box–Muller on two 24-bit uniforms), so any launch shape gives the same values.
#pragma once

#include <awq/backend/cuda_runtime.cuh>
#include <awq/kernels/cuda/pseudo_quantize.cuh>
#include <awq/view.hpp>

namespace awq_bench {

__device__ inline unsigned hash(unsigned long long x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<unsigned>(x);
}

__device__ inline float hashed_normal(unsigned long long seed, awq::index_t e) {
  const float u1 = (static_cast<float>(hash(seed * 0x9E3779B97F4A7C15ULL + 2 * e) >> 8) + 1.0f) / 16777217.0f;
  const float u2 = static_cast<float>(hash(seed * 0x9E3779B97F4A7C15ULL + 2 * e + 1) >> 8) / 16777216.0f;
  return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

// out[e] = std · N(0, 1) draw e of stream seed, for e < n.
template <class T>
__global__ void normal_kernel(T* out, awq::index_t n, unsigned long long seed, float std) {
  for (awq::index_t e = static_cast<awq::index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<awq::index_t>(gridDim.x) * blockDim.x)
    out[e] = awq::cuda::detail::from_float<T>(std * hashed_normal(seed, e));
}

// normal_kernel over n elements of out on stream st.
template <class T>
void fill_normal(T* out, awq::index_t n, unsigned long long seed, float std, cudaStream_t st = nullptr) {
  normal_kernel<T><<<4096, 256, 0, st>>>(out, n, seed, std);
  awq::cuda::check(cudaGetLastError(), "normal_kernel launch");
}

}  // namespace awq_bench
