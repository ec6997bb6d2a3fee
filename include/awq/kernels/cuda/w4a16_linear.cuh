/// \file
/// \brief An engine's W4A16 linear layer on the GPU (nvcc only): an AutoAWQ checkpoint's
///        tensors taken once, re-ordered into the tiled layout (awq/layout/tiled.hpp), uploaded,
///        and multiplied for any M by the tiled kernels (w4a16_tiled.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "awq/backend/cuda_runtime.cuh"
#include "awq/error.hpp"
#include "awq/kernels/cuda/w4a16_tiled.cuh"
#include "awq/layout/awq_gemm.hpp"
#include "awq/layout/tiled.hpp"

namespace awq {
namespace cuda {

/// \brief y [M, N] = x [M, K] · dequant(W)ᵀ (+ bias) on the GPU with W from an AutoAWQ GEMM
///        checkpoint (qweight, qzeros, scales: host views), repacked once into the tiled layout
///        (3–4x the AutoAWQ layout's speed above M = 8; bench/RESULTS.md) and owned on the
///        current device. Holds the split-K workspace, grown when an M needs more: calls on one
///        object run one at a time (one stream, or synchronized between streams).
/// \tparam Tuning the kernels' tuning (TiledTuning: the measured defaults)
/// \sa w4a16_matmul, tile_w4a16, awq::W4A16LinearCpu
template <class Tuning = TiledTuning>
class W4A16LinearT {
 public:
  /// \throws awq::Error naming the tensor when the shapes are invalid, the group size
  ///         (K / scales rows) is not 32, 64 or 128, or a scale is not finite.
  explicit W4A16LinearT(const AwqGemmWeights& w) : w_(tile(w)) {}

  int in_features() const noexcept { return w_.k; }   ///< K
  int out_features() const noexcept { return w_.n; }  ///< N
  int group() const noexcept { return w_.group; }     ///< quantization group along K
  const TiledW4A16Device& weights() const noexcept { return w_; }  ///< the tiled weights on the device

  /// y = x · dequant(W)ᵀ (+ bias [N]) for m rows on `stream`: device pointers, x [m, K] and
  /// y [m, N] row-major, T = __half or __nv_bfloat16. With `overlap_previous`, the kernel may
  /// start while the one before it in the stream ends (W4A16TiledArgsT::overlap_previous).
  /// \throws awq::Error for arguments the kernels cannot run, naming them.
  template <class T>
  void operator()(const T* x, T* y, int m, const T* bias = nullptr, cudaStream_t stream = nullptr, bool overlap_previous = false) {
    run(x, y, m, bias, stream, overlap_previous, false);
  }

  /// As operator(), for weights whose output features are (gate, up) pairs (a gated MLP's two
  /// projections stacked row by row, `bias` [N] likewise): y [m, N/2] = silu(gate)·up
  /// (W4A16TiledArgsT::swiglu_output).
  template <class T>
  void swiglu(const T* x, T* y, int m, const T* bias = nullptr, cudaStream_t stream = nullptr, bool overlap_previous = false) {
    run(x, y, m, bias, stream, overlap_previous, true);
  }

 private:
  template <class T>
  void run(const T* x, T* y, int m, const T* bias, cudaStream_t stream, bool overlap_previous, bool swiglu_output) {
    awq::detail::require(m >= 1, "awq::cuda::W4A16Linear: M ", m, " is not positive");
    const std::size_t need = w4a16_tiled_workspace_bytes<Tuning>(m, w_.k, w_.n);
    if (need > ws_.size()) {
      ws_ = DeviceBuffer<unsigned char>(need);  // the old one is freed (synchronizing) first
      check(cudaMemsetAsync(ws_.data(), 0, need, stream), "awq::cuda::W4A16Linear workspace");
    }
    auto a = w_.args(x, y, m, ws_.data(), ws_.size(), bias);
    a.overlap_previous = overlap_previous;
    a.swiglu_output = swiglu_output;
    w4a16_matmul(a, stream, Tuning{});
  }

  static TiledW4A16 tile(const AwqGemmWeights& w) {
    awq::detail::require(w.scales.rows() > 0 && w.k() % w.scales.rows() == 0, "awq::cuda::W4A16Linear: scales has ", w.scales.rows(),
                         " rows, which does not divide K = ", w.k());
    return tile_w4a16(w.qweight, w.qzeros, w.scales, static_cast<int>(w.k() / w.scales.rows()));
  }

  TiledW4A16Device w_;
  DeviceBuffer<unsigned char> ws_;
};

/// The engine's GPU linear with the measured tuning.
using W4A16Linear = W4A16LinearT<>;

}  // namespace cuda
}  // namespace awq
