/// \file
/// \brief An engine's W4A16 linear layer on the CPU: an AutoAWQ checkpoint's tensors taken once,
///        re-ordered into the blocked layout (awq/layout/blocked.hpp), multiplied for any M.
#pragma once

#include <utility>

#include "awq/kernels/cpu/w4a16_blocked.hpp"
#include "awq/kernels/cpu/w4a16_io.hpp"
#include "awq/layout/awq_gemm.hpp"
#include "awq/layout/blocked.hpp"
#include "awq/view.hpp"

namespace awq {

/// \brief y [M, N] = x [M, K] · dequant(W)ᵀ (+ bias) with W from an AutoAWQ GEMM checkpoint
///        (qweight, qzeros, scales), repacked once into the CPU's fastest layout (blocked: AVX-512
///        VNNI or AVX2 digits at M = 1, an fp32 panel above; bench/RESULTS.md). Owns its weights;
///        the checkpoint's tensors may go once it is made. Calls on one object may run concurrently.
/// \sa w4a16_gemm, block_w4a16, cuda::W4A16Linear
class W4A16LinearCpu {
 public:
  /// \throws awq::Error naming the tensor when the shapes, the group size or a scale are invalid.
  explicit W4A16LinearCpu(const AwqGemmWeights& w) : w_(block_w4a16(w)) {}

  index_t in_features() const noexcept { return w_.k; }   ///< K
  index_t out_features() const noexcept { return w_.n; }  ///< N
  index_t group() const noexcept { return w_.group; }     ///< quantization group along K
  const BlockedW4A16& weights() const noexcept { return w_; }  ///< the repacked weights

  /// y = x · dequant(W)ᵀ (+ bias [N]); x, y (and bias) in float, Eigen::half or Eigen::bfloat16,
  /// x read-only or mutable. \throws awq::Error on a shape mismatch, naming it.
  template <class TX, class TY>
  void operator()(const MatrixView<TX>& x, const MatrixView<TY>& y, const TY* bias = nullptr, const W4A16Options& opt = {}) const {
    w4a16_gemm(x, w_, y, bias, opt);
  }

 private:
  BlockedW4A16 w_;
};

}  // namespace awq
