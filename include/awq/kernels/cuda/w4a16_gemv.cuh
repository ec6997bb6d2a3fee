/// \file
/// \brief W4A16 GEMV on the GPU for small batches (M = 1..8): y = x · dequant(W)ᵀ (+ bias), reading
///        the AutoAWQ "GEMM" checkpoint layout directly (qweight [K, N/8] int32, qzeros
///        [K/G, N/8] int32, scales [K/G, N] fp16), fp16 activations, fp32 accumulation.
///
/// Each thread owns one packed int32 column (8 outputs) over a K range of whole groups; threads of
/// a block cover adjacent columns, so every k row is one coalesced load. K is split over blocks
/// (split-K) so that enough loads are in flight; partial sums go to an fp32 workspace with
/// atomicAdd and a second kernel rounds to fp16 and adds the bias.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "awq/backend/cuda_runtime.cuh"
#include "awq/error.hpp"
#include "awq/pack.hpp"

namespace awq {
namespace cuda {

/// \brief Device pointers and sizes of one W4A16 product.
struct W4A16Args {
  const __half* x = nullptr;         ///< [M, K] row-major
  const std::int32_t* qweight = nullptr;  ///< [K, N/8]
  const std::int32_t* qzeros = nullptr;   ///< [K/G, N/8]
  const __half* scales = nullptr;    ///< [K/G, N]
  const __half* bias = nullptr;      ///< [N] or null
  __half* y = nullptr;               ///< [M, N] row-major
  float* workspace = nullptr;        ///< [M, N] fp32 scratch
  int m = 1, k = 0, n = 0, group = 128;  ///< sizes

  /// Throws awq::Error naming the argument that cannot be run.
  void can_implement() const {
    constexpr const char* fn = "awq::cuda::w4a16_gemv";
    awq::detail::require(m >= 1 && m <= 8, fn, ": M ", m, " is outside 1..8 (the GEMV path)");
    awq::detail::require(group == 32 || group == 64 || group == 128, fn, ": group ", group, " is not 32, 64 or 128");
    awq::detail::require(k > 0 && k % group == 0, fn, ": group ", group, " does not divide K ", k);
    awq::detail::require(n > 0 && n % 8 == 0, fn, ": N ", n, " is not a multiple of 8");
    awq::detail::require(x && qweight && qzeros && scales && y && workspace, fn, ": a required pointer is null");
  }
};

namespace detail {

template <int M>
__global__ void w4a16_gemv_kernel(W4A16Args a, int groups_per_split) {
  const int cols = a.n / 8;
  const int c = static_cast<int>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int g0 = static_cast<int>(blockIdx.y) * groups_per_split;
  const int n_groups = a.k / a.group;
  const int g1 = min(g0 + groups_per_split, n_groups);
  extern __shared__ float xs[];  // [M][groups_per_split * group] slice of x, as float
  const int k0 = g0 * a.group, kn = (g1 - g0) * a.group;
  for (int i = threadIdx.x; i < M * kn; i += blockDim.x) {
    const int mm = i / kn, kk = i % kn;
    xs[i] = __half2float(a.x[static_cast<long>(mm) * a.k + k0 + kk]);
  }
  __syncthreads();
  if (c >= cols) return;
  float acc[M][8];
#pragma unroll
  for (int mm = 0; mm < M; ++mm)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[mm][j] = 0.0f;
  for (int g = g0; g < g1; ++g) {
    const unsigned zw = static_cast<unsigned>(__ldg(a.qzeros + static_cast<long>(g) * cols + c));
    float s[8], zs[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {  // nibble i holds column order[i] of the 8
      constexpr int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
      s[i] = __half2float(a.scales[static_cast<long>(g) * a.n + 8 * c + order[i]]);
      zs[i] = static_cast<float>((zw >> (4 * i)) & 0xFu) * s[i];
    }
    const std::int32_t* qp = a.qweight + static_cast<long>(g) * a.group * cols + c;
    const float* xg = xs + (g - g0) * a.group;
#pragma unroll 8
    for (int kk = 0; kk < a.group; ++kk) {
      const unsigned q = static_cast<unsigned>(__ldg(qp + static_cast<long>(kk) * cols));
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float w = static_cast<float>((q >> (4 * i)) & 0xFu) * s[i] - zs[i];
#pragma unroll
        for (int mm = 0; mm < M; ++mm) acc[mm][i] = fmaf(xg[mm * kn + kk], w, acc[mm][i]);
      }
    }
  }
#pragma unroll
  for (int mm = 0; mm < M; ++mm)
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      constexpr int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
      atomicAdd(a.workspace + static_cast<long>(mm) * a.n + 8 * c + order[i], acc[mm][i]);
    }
}

/// Wide variant for M <= 2: a thread owns 4 adjacent packed columns (32 outputs) and reads them
/// with one 16-byte load per k; a block covers 64 × 4 columns and `kc` rows of K inside one group.
template <int M>
__global__ void w4a16_gemv_wide_kernel(W4A16Args a, int kc) {
  const int cols = a.n / 8;
  const int c4 = (static_cast<int>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  const int k0 = static_cast<int>(blockIdx.y) * kc;
  const int g = k0 / a.group;
  __shared__ float xs[M * 128];
  for (int i = threadIdx.x; i < M * kc; i += blockDim.x) xs[i] = __half2float(a.x[static_cast<long>(i / kc) * a.k + k0 + i % kc]);
  __syncthreads();
  if (c4 >= cols) return;
  constexpr int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  float acc[M][32];
#pragma unroll
  for (int mm = 0; mm < M; ++mm)
#pragma unroll
    for (int j = 0; j < 32; ++j) acc[mm][j] = 0.0f;
  float s[32], zs[32];
#pragma unroll
  for (int cc = 0; cc < 4; ++cc) {
    const unsigned zw = static_cast<unsigned>(__ldg(a.qzeros + static_cast<long>(g) * cols + c4 + cc));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      s[cc * 8 + i] = __half2float(a.scales[static_cast<long>(g) * a.n + 8 * (c4 + cc) + order[i]]);
      zs[cc * 8 + i] = static_cast<float>((zw >> (4 * i)) & 0xFu) * s[cc * 8 + i];
    }
  }
  const int4* qp = reinterpret_cast<const int4*>(a.qweight + static_cast<long>(k0) * cols + c4);
  const int stride4 = cols / 4;
#pragma unroll 4
  for (int kk = 0; kk < kc; ++kk) {
    const int4 q4 = __ldg(qp + static_cast<long>(kk) * stride4);
    const unsigned qs[4] = {static_cast<unsigned>(q4.x), static_cast<unsigned>(q4.y), static_cast<unsigned>(q4.z), static_cast<unsigned>(q4.w)};
#pragma unroll
    for (int cc = 0; cc < 4; ++cc)
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float w = static_cast<float>((qs[cc] >> (4 * i)) & 0xFu) * s[cc * 8 + i] - zs[cc * 8 + i];
#pragma unroll
        for (int mm = 0; mm < M; ++mm) acc[mm][cc * 8 + i] = fmaf(xs[mm * kc + kk], w, acc[mm][cc * 8 + i]);
      }
  }
#pragma unroll
  for (int mm = 0; mm < M; ++mm)
#pragma unroll
    for (int cc = 0; cc < 4; ++cc)
#pragma unroll
      for (int i = 0; i < 8; ++i) atomicAdd(a.workspace + static_cast<long>(mm) * a.n + 8 * (c4 + cc) + order[i], acc[mm][cc * 8 + i]);
}

template <class = void>  // a template, so the header can be included in several translation units
__global__ void w4a16_finish_kernel(W4A16Args a) {
  const long i = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<long>(a.m) * a.n) return;
  float v = a.workspace[i];
  if (a.bias) v += __half2float(a.bias[i % a.n]);
  a.y[i] = __float2half_rn(v);
}

template <int M>
void launch(const W4A16Args& a, int splits, cudaStream_t stream) {
  const int n_groups = a.k / a.group;
  const int gps = (n_groups + splits - 1) / splits;
  const dim3 block(128);
  const dim3 grid(static_cast<unsigned>((a.n / 8 + 127) / 128), static_cast<unsigned>((n_groups + gps - 1) / gps));
  const std::size_t smem = sizeof(float) * static_cast<std::size_t>(M) * gps * a.group;
  w4a16_gemv_kernel<M><<<grid, block, smem, stream>>>(a, gps);
}

}  // namespace detail

/// \brief y = x · dequant(W)ᵀ (+ bias) for M = 1..8 on `stream`. `splits` divides K into that many
///        ranges of whole groups (0: chosen from the shape so that ≈ 1000 blocks run).
inline void w4a16_gemv(const W4A16Args& a, cudaStream_t stream = nullptr, int splits = 0) {
  a.can_implement();
  const int n_groups = a.k / a.group;
  check(cudaMemsetAsync(a.workspace, 0, sizeof(float) * static_cast<std::size_t>(a.m) * a.n, stream), "cudaMemsetAsync");
  const int cols = a.n / 8;
  if (a.m <= 2 && cols % 4 == 0 && splits == 0) {
    // K chunks of up to 128 rows inside one group, enough of them for ~2000 blocks of 64 threads.
    const int col_blocks = (cols / 4 + 63) / 64;
    int kc = a.group;
    while (kc > 32 && static_cast<long>(col_blocks) * (a.k / kc) < 2048) kc /= 2;
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(a.k / kc));
    if (a.m == 1) detail::w4a16_gemv_wide_kernel<1><<<grid, 64, 0, stream>>>(a, kc);
    else detail::w4a16_gemv_wide_kernel<2><<<grid, 64, 0, stream>>>(a, kc);
  } else {
  if (splits <= 0) {
    const int col_blocks = (a.n / 8 + 127) / 128;
    splits = std::max(1, std::min(n_groups, 1024 / std::max(1, col_blocks)));
  }
  switch (a.m) {
    case 1: detail::launch<1>(a, splits, stream); break;
    case 2: detail::launch<2>(a, splits, stream); break;
    case 3: detail::launch<3>(a, splits, stream); break;
    case 4: detail::launch<4>(a, splits, stream); break;
    case 5: detail::launch<5>(a, splits, stream); break;
    case 6: detail::launch<6>(a, splits, stream); break;
    case 7: detail::launch<7>(a, splits, stream); break;
    default: detail::launch<8>(a, splits, stream); break;
  }
  }
  check(cudaGetLastError(), "w4a16_gemv_kernel launch");
  const long total = static_cast<long>(a.m) * a.n;
  detail::w4a16_finish_kernel<><<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(a);
  check(cudaGetLastError(), "w4a16_finish_kernel launch");
}

}  // namespace cuda
}  // namespace awq
