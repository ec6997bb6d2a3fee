/// \file
/// \brief The OPT architecture policy's kernels on the GPU (nvcc only): `OptKernels<backend::cuda>`,
///        so that awq::model::Opt's forward and search module — and with them the model driver —
///        run on backend::cuda. LayerNorm (a block per row, two-pass mean and variance in fp32) and
///        ReLU here; the attention core and the residual add are LlamaKernels<backend::cuda>'s
///        (awq/model/arch/llama.cuh). Every view must be contiguous device memory.
#pragma once

#include <algorithm>

#include "awq/backend/cuda.cuh"
#include "awq/model/arch/llama.cuh"
#include "awq/model/arch/opt.hpp"

namespace awq::detail::opt_cuda {

// Sum of v over the block's 256 threads, in every thread (sh: 256 floats).
__device__ inline float block_sum(float v, float* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = 128; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  const float r = sh[0];
  __syncthreads();
  return r;
}

template <int = 0>  // a template: header kernels need one definition per program
__global__ void layernorm_kernel(const float* x, index_t rows, index_t cols, const float* w, const float* b, float eps, float* out) {
  __shared__ float sh[256];
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    float acc = 0.0f;
    for (index_t c = threadIdx.x; c < cols; c += blockDim.x) acc += xr[c];
    const float mean = block_sum(acc, sh) / static_cast<float>(cols);
    acc = 0.0f;
    for (index_t c = threadIdx.x; c < cols; c += blockDim.x) acc += (xr[c] - mean) * (xr[c] - mean);
    const float inv = 1.0f / sqrtf(block_sum(acc, sh) / static_cast<float>(cols) + eps);
    for (index_t c = threadIdx.x; c < cols; c += blockDim.x) out[r * cols + c] = (xr[c] - mean) * inv * w[c] + b[c];
  }
}

template <int = 0>
__global__ void relu_kernel(float* m, index_t n) {
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += static_cast<index_t>(gridDim.x) * blockDim.x)
    m[e] = fmaxf(m[e], 0.0f);
}

}  // namespace awq::detail::opt_cuda

namespace awq::model {

/// \brief GPU kernels of the OPT block (fp32 storage), the same operations as the CPU ones.
template <>
struct OptKernels<backend::cuda> {
  /// out = (x − mean) / sqrt(var + eps) ⊙ w + b per row; w and b are device memory.
  static void layernorm(const MatrixView<const float>& x, const float* w, const float* b, float eps, const MatrixView<float>& out) {
    namespace lk = detail::llama_cuda;
    lk::require_contiguous("x", x);
    lk::require_contiguous("out", out);
    if (x.rows() == 0) return;
    detail::opt_cuda::layernorm_kernel<><<<static_cast<unsigned>(std::min<index_t>(x.rows(), 65535)), 256, 0, backend::cuda::stream()>>>(
        x.data(), x.rows(), x.cols(), w, b, eps, out.data());
    ::awq::cuda::check(cudaGetLastError(), "layernorm_kernel launch");
  }

  /// m = max(m, 0) in place.
  static void relu(const MatrixView<float>& m) {
    namespace lk = detail::llama_cuda;
    lk::require_contiguous("m", m);
    if (m.size() == 0) return;
    detail::opt_cuda::relu_kernel<><<<lk::grid_for(m.size(), 256), 256, 0, backend::cuda::stream()>>>(m.data(), m.size());
    ::awq::cuda::check(cudaGetLastError(), "relu_kernel launch");
  }
};

}  // namespace awq::model
