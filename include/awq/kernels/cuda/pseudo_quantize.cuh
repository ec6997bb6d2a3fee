/// \file
/// \brief Pseudo-quantization on the GPU: one warp per (row, group), the same per-element
///        formulas as the CPU quantizer (awq/quantizer.hpp), so fp32 results are identical.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>

#include "awq/backend/cuda_runtime.cuh"
#include "awq/config.hpp"
#include "awq/quantizer.hpp"
#include "awq/view.hpp"

namespace awq {
namespace cuda {
namespace detail {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

/// Min and max across the 32 lanes of a warp (every lane gets both).
__device__ __forceinline__ void warp_minmax(float& lo, float& hi) {
  for (int off = 16; off > 0; off /= 2) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
}

/// One warp: [lo, hi] of row r's group j (elements [j·g, (j + 1)·g)), lanes striding it. A
/// non-finite element's linear index goes to `bad` (the smallest wins); false when there was one.
template <class T>
__device__ __forceinline__ bool warp_group_range(const MatrixView<T>& w, index_t r, index_t j, index_t g, int lane,
                                                 unsigned long long* bad, float& lo, float& hi) {
  lo = INFINITY;
  hi = -INFINITY;
  bool finite = true;
  for (index_t i = lane; i < g; i += 32) {
    const float x = to_float(w(r, j * g + i));
    if (!isfinite(x)) {
      finite = false;
      atomicMin(bad, static_cast<unsigned long long>(r * w.cols() + j * g + i));
    }
    lo = fminf(lo, x);
    hi = fmaxf(hi, x);
  }
  warp_minmax(lo, hi);
  return __all_sync(0xffffffffu, finite);
}

/// One warp: the quantizer's parameters of the group value(i), i in [j0, j0 + g), lanes striding it.
template <class Fmt, class Value>
__device__ __forceinline__ GroupParams<float> warp_group_params(index_t j0, index_t g, int lane, Value&& value) {
  float lo = INFINITY, hi = -INFINITY;
  for (index_t i = j0 + lane; i < j0 + g; i += 32) {
    const float v = value(i);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  warp_minmax(lo, hi);
  return group_params<Fmt>(lo, hi);
}

/// One warp per (row, group). `bad` receives the smallest linear index (r * cols + c) of a
/// non-finite weight, so the host can name it.
template <class Fmt, class T>
__global__ void pseudo_quantize_kernel(MatrixView<const T> w, MatrixView<T> out, index_t g,
                                       float* scales, float* zeros, unsigned long long* bad) {
  const index_t ng = w.cols() / g;
  const index_t warp = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= w.rows() * ng) return;
  const index_t r = warp / ng, j = warp % ng;
  float lo, hi;
  if (!warp_group_range(w, r, j, g, lane, bad, lo, hi)) return;
  const GroupParams<float> p = group_params<Fmt>(lo, hi);
  if (lane == 0 && scales) scales[r * ng + j] = p.scale;
  if (lane == 0 && zeros) zeros[r * ng + j] = Fmt::zero_point ? p.zero : 0.0f;
  for (index_t i = lane; i < g; i += 32) {
    out(r, j * g + i) = from_float<T>(fake_quantize_value<Fmt>(to_float(w(r, j * g + i)), p));
  }
}

// cuda::pseudo_quantize for a CodeFormat, the group size from `spec`.
template <class Fmt, class T>
void pseudo_quantize_groups(const QuantSpec& spec, const MatrixView<const T>& w, const MatrixView<T>& out,
                            cudaStream_t stream, float* scales, float* zeros) {
  constexpr const char* fn = "awq::cuda::pseudo_quantize";
  awq::detail::require_shape(out, w.rows(), w.cols(), fn, "out");
  const index_t g = awq::detail::checked_group(fn, spec, w);
  const index_t warps = w.rows() * (w.cols() / g);
  if (warps == 0) return;
  DeviceBuffer<unsigned long long> bad(1);
  const unsigned long long none = ULLONG_MAX;
  check(cudaMemcpyAsync(bad.data(), &none, sizeof(none), cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
  const int threads = 256;
  const auto blocks = static_cast<unsigned>((warps * 32 + threads - 1) / threads);
  pseudo_quantize_kernel<Fmt, T><<<blocks, threads, 0, stream>>>(w, out, g, scales, zeros, bad.data());
  check(cudaGetLastError(), "pseudo_quantize_kernel launch");
  unsigned long long first_bad = none;
  check(cudaMemcpyAsync(&first_bad, bad.data(), sizeof(first_bad), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (first_bad != none) {
    const auto idx = static_cast<index_t>(first_bad);
    throw Error(awq::detail::concat(fn, ": non-finite weight at row ", idx / w.cols(), ", column ", idx % w.cols(),
                                    " (group ", (idx % w.cols()) / g, ")"));
  }
}

}  // namespace detail

/// \brief Pseudo-quantize a device weight [out, in] (float, __half or __nv_bfloat16) into `out`
///        on `stream`. Optional device outputs `scales`, `zeros` ([out, in / group], row-major).
///
/// Synchronises the stream to report a non-finite weight as awq::Error naming row and column.
template <class Cfg, class T>
void pseudo_quantize(const MatrixView<const T>& w, const MatrixView<T>& out, cudaStream_t stream = nullptr,
                     float* scales = nullptr, float* zeros = nullptr) {
  detail::pseudo_quantize_groups<format_of<Cfg>>(spec_of<Cfg>(), w, out, stream, scales, zeros);
}

/// Run-time dispatch of cuda::pseudo_quantize onto the built-in configs.
template <class T>
void pseudo_quantize(const QuantSpec& spec, const MatrixView<const T>& w, const MatrixView<T>& out,
                     cudaStream_t stream = nullptr, float* scales = nullptr, float* zeros = nullptr) {
  dispatch_format(spec, [&](auto fmt) { detail::pseudo_quantize_groups<decltype(fmt)>(spec, w, out, stream, scales, zeros); });
}

}  // namespace cuda
}  // namespace awq
