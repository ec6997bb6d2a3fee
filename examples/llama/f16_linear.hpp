// The W4 engine's output projection (a policy of llama/engine.hpp): weights held in fp16, as an
// AutoAWQ checkpoint stores lm_head and the embedding, multiplied by awq::f16_weight_gemm. Apart
// from engine.hpp so that code compiled by nvcc (the GPU engine) need not parse the CPU kernels.
#pragma once

#include <awq/awq.hpp>
#include <awq/kernels/cpu/f16_weight_gemm.hpp>

#include <Eigen/Core>

#include <cmath>
#include <memory>
#include <utility>
#include <vector>

namespace awq_example {

/// y [M, N] = x [M, K] · Wᵀ (+ bias) with W [N, K] held in fp16: half the bytes per decode step
/// of FpLinear, and the same values when the weights come from an fp16 checkpoint.
class F16Linear {
 public:
  /// Rounds `w` [out, in] to fp16. \throws awq::Error naming the first weight fp16 cannot hold.
  F16Linear(const std::vector<float>& w, awq::index_t out, awq::index_t in, std::vector<float> bias = {})
      : w_(w.size()), bias_(std::move(bias)), n_(out), k_(in) {
    awq::detail::require(out > 0 && in > 0 && static_cast<awq::index_t>(w.size()) == out * in, "F16Linear: ", w.size(),
                         " weights for ", out, " x ", in);
    awq::detail::require(bias_.empty() || static_cast<awq::index_t>(bias_.size()) == out, "F16Linear: bias of ", bias_.size(),
                         " for ", out, " outputs");
    for (std::size_t i = 0; i < w.size(); ++i) {
      w_[i] = Eigen::half(w[i]);
      awq::detail::require(std::isfinite(static_cast<float>(w_[i])) || !std::isfinite(w[i]), "F16Linear: weight ", w[i], " at row ",
                           static_cast<awq::index_t>(i) / in, ", column ", static_cast<awq::index_t>(i) % in,
                           " is outside the fp16 range (|w| <= 65504)");
    }
  }
  /// The same from a shared table (a tied output projection reads the embedding's).
  F16Linear(const std::shared_ptr<const std::vector<float>>& w, awq::index_t out, awq::index_t in, std::vector<float> bias = {})
      : F16Linear(*w, out, in, std::move(bias)) {}

  awq::index_t in_features() const { return k_; }              ///< K
  awq::index_t out_features() const { return n_; }             ///< N
  const std::vector<Eigen::half>& weights() const { return w_; }  ///< W [N, K]

  void operator()(const awq::MatrixView<const float>& x, const awq::MatrixView<float>& y) const {
    awq::f16_weight_gemm(x, awq::make_row_major<const Eigen::half>(w_.data(), n_, k_), y, bias_.empty() ? nullptr : bias_.data());
  }

 private:
  std::vector<Eigen::half> w_;
  std::vector<float> bias_;
  awq::index_t n_, k_;
};

}  // namespace awq_example
