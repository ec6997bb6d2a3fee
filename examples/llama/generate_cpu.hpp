// The generate command's CPU backend: fp32 linears (Eigen) or W4A16 through the CPU kernel.
#pragma once

#include "llama/engine.hpp"
#include "llama/generate.hpp"
#include "llama/w4_linear.hpp"

namespace awq_example {

/// \brief The CPU's generation backend for run_generate.
struct CpuGeneration {
  using Fp = FpLinear;  ///< full-precision linear
  using W4 = W4Linear;  ///< 4-bit linear
  template <class L>
  using Model = LlamaWeights<L>;  ///< constructible from LlamaWeights<L>&&
  template <class L>
  using Engine = LlamaEngine<L>;  ///< constructible from (Model<L>&, capacity)
  static constexpr const char* fp = "fp32";
  static constexpr const char* w4 = "W4A16 (AWQ, CPU kernel)";
};

}  // namespace awq_example
