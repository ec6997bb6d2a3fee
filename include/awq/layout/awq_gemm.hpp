/// \file
/// \brief The AutoAWQ "GEMM" W4A16 layout as the kernels read it: host views of one linear
///        layer's checkpoint tensors (the packing itself, and its inverse, are in awq/pack.hpp).
///
/// **Layout** (W is [N, K], y = x · Wᵀ; G the group size along K):
/// \code
///   qweight  int32 [K][N/8]     word (k, c): bits 4i..4i+3 = code of row k, column 8c + order[i],
///                               order = {0, 2, 4, 6, 1, 3, 5, 7} (kAwqPackOrder)
///   qzeros   int32 [K/G][N/8]   the zero points, packed as qweight (raw codes, no offset);
///                               absent (0 × 0): symmetric, every zero 8
///   scales   fp16  [K/G][N]     s of group g, column n
///   w(n, k) = (code(k, n) − zero(k / G, n)) · scale(k / G, n)
/// \endcode
#pragma once

#include <Eigen/Core>

#include <cstdint>

#include "awq/pack.hpp"
#include "awq/view.hpp"

namespace awq {

static_assert(sizeof(Eigen::half) == 2, "AutoAWQ scales are fp16: two bytes each");
static_assert(kAwqPackFactor * 4 == 32, "eight 4-bit codes fill one int32 word");

/// \brief Host views of one linear layer's weights in the AutoAWQ GEMM layout (W is [N, K]).
///
/// All three are row-major with contiguous rows. `qzeros` may be empty (0 × 0) for symmetric
/// weights, whose codes carry the offset 8 (see QuantConfig::code_offset).
struct AwqGemmWeights {
  MatrixView<const std::int32_t> qweight;  ///< [K, N/8]
  MatrixView<const std::int32_t> qzeros;   ///< [K/G, N/8], or empty when symmetric
  MatrixView<const Eigen::half> scales;    ///< [K/G, N]

  index_t k() const noexcept { return qweight.rows(); }                       ///< input features
  index_t n() const noexcept { return qweight.cols() * kAwqPackFactor; }     ///< output features
  index_t groups() const noexcept { return scales.rows(); }                   ///< K / G

  /// Group sizes the kernels take: 32, 64, 128, 256, or K (one group per row).
  static constexpr bool group_supported(index_t g, index_t k) noexcept {
    return g == 32 || g == 64 || g == 128 || g == 256 || g == k;
  }
};

}  // namespace awq
