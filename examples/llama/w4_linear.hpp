// The CPU engine's 4-bit linear (a policy of llama/engine.hpp) and its fp16 output projection,
// apart from the engine so that code compiled by nvcc (the GPU engine) need not parse the CPU kernels.
#pragma once

#include <awq/awq.hpp>
#include <awq/kernels/cpu/w4a16_linear.hpp>

#include <utility>
#include <vector>

#include "llama/engine.hpp"
#include "llama/f16_linear.hpp"

namespace awq_example {

/// y = x · dequant(W)ᵀ (+ bias) through awq::W4A16LinearCpu: 4-bit weights read at every step.
class W4Linear {
 public:
  W4Linear(const awq::AwqGemmWeights& q, std::vector<float> bias = {}) : lin_(q), bias_(std::move(bias)) {
    awq::detail::require(bias_.empty() || static_cast<awq::index_t>(bias_.size()) == lin_.out_features(), "W4Linear: bias of ",
                         bias_.size(), " for ", lin_.out_features(), " outputs");
  }
  awq::index_t in_features() const { return lin_.in_features(); }   ///< K
  awq::index_t out_features() const { return lin_.out_features(); }  ///< N
  void operator()(const awq::MatrixView<const float>& x, const awq::MatrixView<float>& y) const {
    lin_(x, y, bias_.empty() ? nullptr : bias_.data());
  }

 private:
  awq::W4A16LinearCpu lin_;
  std::vector<float> bias_;
};

/// The W4 engine's lm_head in fp16: AutoAWQ stores it (and the embedding) so, unquantized; held
/// in fp32 it would be as many bytes per token as every 4-bit block together.
template <>
struct HeadLinear<W4Linear> {
  using type = F16Linear;  ///< the output projection's linear
};

}  // namespace awq_example
