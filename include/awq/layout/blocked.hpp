/// \file
/// \brief The "blocked" CPU W4A16 layout: AutoAWQ GEMM weights re-ordered once so that each
///        block of 16 output columns is one contiguous stream over K and each 32-bit word holds
///        8 consecutive K rows of one column — the operand order of integer dot-product
///        instructions (AVX-512 VNNI `vpdpbusd`) — and the converter that makes it. The product
///        that reads it is awq/kernels/cpu/w4a16_blocked.hpp.
///
/// **Layout.** K is padded to Kp (a multiple of 8) and N to Np (a multiple of 16); padding holds
/// code 0, scale 0 and zero 0, the kernels never read padded rows (x has none) and never write
/// padded columns:
/// \code
///   qweight  uint32 [Np/16][Kp/8][16]    word (b, j, c): column 16 b + c, rows 8 j .. 8 j + 7;
///                                        byte i (i < 4) = code(8 j + i) | code(8 j + 4 + i) << 4
///   scales   fp16   [Np/16][groups][16]  (bits)
///   qzeros   uint8  [Np/16][groups][8]   column c < 8: low nibble of byte c, c >= 8: high nibble
///                                        of byte c - 8; empty: symmetric (zero 8)
/// \endcode
/// The bytes are those of the checkpoint layout (codes, fp16 scales, 4-bit zeros), re-ordered.
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <cstring>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/detail/aligned.hpp"
#include "awq/error.hpp"
#include "awq/layout/awq_gemm.hpp"
#include "awq/pack.hpp"
#include "awq/view.hpp"

namespace awq {

inline constexpr int kBlockedN = 16;  ///< output columns per block of the blocked layout
inline constexpr int kBlockedK = 8;   ///< K rows per 32-bit word of the blocked layout

/// \brief W4A16 weights in the blocked CPU layout (see the file comment), made by block_w4a16.
struct BlockedW4A16 {
  index_t k = 0;      ///< logical K (input features)
  index_t n = 0;      ///< logical N (output features)
  index_t group = 0;  ///< quantization group along K (K itself for per-channel)
  index_t kp = 0;     ///< K padded to a multiple of 8
  index_t np = 0;     ///< N padded to a multiple of 16
  std::vector<std::uint32_t, detail::Aligned64<std::uint32_t>> qweight;  ///< [np/16][kp/8][16]
  std::vector<std::uint16_t, detail::Aligned64<std::uint16_t>> scales;   ///< fp16 bits [np/16][groups][16]
  std::vector<std::uint8_t> qzeros;  ///< [np/16][groups][8]; empty: symmetric (zero 8)

  index_t groups() const noexcept { return group > 0 ? k / group : 0; }  ///< K / group
  index_t blocks() const noexcept { return np / kBlockedN; }           ///< column blocks
  index_t chunks() const noexcept { return kp / kBlockedK; }           ///< 8-row words per column
  /// Rows per group in the padded layout: group, or Kp for per-channel weights.
  index_t group_rows() const noexcept { return group == k ? kp : group; }
  /// 8-row words per group.
  index_t group_chunks() const noexcept { return group_rows() / kBlockedK; }

  /// The 4-bit code of row kk (input), column c (output); padded positions read 0.
  int code(index_t kk, index_t c) const {
    const std::uint32_t word = qweight[static_cast<std::size_t>(((c / kBlockedN) * chunks() + kk / kBlockedK) * kBlockedN + c % kBlockedN)];
    const int r = static_cast<int>(kk % kBlockedK);
    return static_cast<int>((word >> (8 * (r % 4) + 4 * (r / 4))) & 0xFu);
  }
  /// fp16 bits of the scale of group g, column c.
  std::uint16_t scale_bits(index_t g, index_t c) const {
    return scales[static_cast<std::size_t>(((c / kBlockedN) * groups() + g) * kBlockedN + c % kBlockedN)];
  }
  /// Zero point of group g, column c (8 without zeros).
  int zero(index_t g, index_t c) const {
    if (qzeros.empty()) return 8;
    const index_t i = c % kBlockedN;
    const std::uint8_t byte = qzeros[static_cast<std::size_t>(((c / kBlockedN) * groups() + g) * 8 + i % 8)];
    return i < 8 ? byte & 0xF : byte >> 4;
  }
};

/// \brief Re-orders AutoAWQ GEMM tensors into the blocked CPU layout (a copy; the input is not
///        kept). Group size G = K / scales.rows(): 32, 64, 128, 256 or K (per channel).
///
/// Worth it where cpu_has_avx512vnni(): at M = 1 its kernel reads the weights at DRAM speed
/// (bench/RESULTS.md). Without VNNI its AVX2 path runs the same digits at M = 1 (2.2x the
/// checkpoint-layout AVX2 kernel on an Intel VM; bit-identical to the VNNI path) and an fp32 panel
/// above, faster than the checkpoint layout there too.
/// \throws awq::Error naming the argument when a shape or the group size is invalid, K exceeds
///         2^20 (the int32 sums of the VNNI path), or a scale is NaN or Inf.
inline BlockedW4A16 block_w4a16(const AwqGemmWeights& w) {
  constexpr const char* fn = "awq::block_w4a16";
  const index_t K = w.k(), N = w.n();
  detail::require(K > 0 && N > 0, fn, ": qweight is empty (", w.qweight.rows(), " x ", w.qweight.cols(), ")");
  detail::require(K <= (index_t{1} << 20), fn, ": K ", K, " is larger than 2^20");
  detail::require(w.scales.rows() > 0 && K % w.scales.rows() == 0, fn, ": scales has ", w.scales.rows(),
                  " rows, which does not divide K = ", K);
  const index_t G = K / w.scales.rows();
  detail::require(AwqGemmWeights::group_supported(G, K), fn, ": group size ", G, " (K ", K, " / scales rows ",
                  w.scales.rows(), ") is not 32, 64, 128, 256 or K");
  detail::require_shape(w.scales, K / G, N, fn, "scales");
  const bool sym = w.qzeros.size() == 0;
  if (!sym) detail::require_shape(w.qzeros, K / G, N / kAwqPackFactor, fn, "qzeros");

  BlockedW4A16 b;
  b.k = K;
  b.n = N;
  b.group = G;
  b.kp = (K + kBlockedK - 1) / kBlockedK * kBlockedK;
  b.np = (N + kBlockedN - 1) / kBlockedN * kBlockedN;
  const index_t groups = K / G, nb = b.blocks(), kc = b.chunks();
  b.qweight.assign(static_cast<std::size_t>(nb * kc * kBlockedN), 0u);
  b.scales.assign(static_cast<std::size_t>(nb * groups * kBlockedN), 0u);
  if (!sym) b.qzeros.assign(static_cast<std::size_t>(nb * groups * 8), 0u);
  // Per 8-row chunk j and checkpoint word column wd: an 8 × 8 nibble transpose of the rows' words
  // into the 8 columns' words (all in one 16-column block), chunks spread over the threads.
  backend::cpu::parallel_for(kc, [&](index_t j0, index_t j1) {
    for (index_t j = j0; j < j1; ++j)
      for (index_t wd = 0; wd < N / kAwqPackFactor; ++wd) {
        std::uint32_t in[kBlockedK];
        for (index_t r = 0; r < kBlockedK; ++r)
          in[r] = kBlockedK * j + r < K ? static_cast<std::uint32_t>(w.qweight(kBlockedK * j + r, wd)) : 0u;
        const index_t c0 = kAwqPackFactor * wd;
        std::uint32_t* out = b.qweight.data() + ((c0 / kBlockedN) * kc + j) * kBlockedN + c0 % kBlockedN;
        for (int e = 0; e < 8; ++e) {
          std::uint32_t word = 0;
          for (int r = 0; r < kBlockedK; ++r) word |= ((in[r] >> (4 * e)) & 0xFu) << (8 * (r % 4) + 4 * (r / 4));
          out[kAwqPackOrder[static_cast<std::size_t>(e)]] = word;
        }
      }
  }, 16);
  for (index_t g = 0; g < groups; ++g)
    for (index_t c = 0; c < N; ++c) {
      std::uint16_t bits;
      std::memcpy(&bits, &w.scales(g, c), 2);
      detail::require((bits & 0x7C00u) != 0x7C00u, fn, ": scale (", g, ", ", c, ") is not finite");
      const index_t blk = c / kBlockedN, i = c % kBlockedN;
      b.scales[static_cast<std::size_t>((blk * groups + g) * kBlockedN + i)] = bits;
      if (!sym) {
        const int e = kAwqUnpackOrder[static_cast<std::size_t>(c % 8)];
        const auto z = static_cast<std::uint8_t>((static_cast<std::uint32_t>(w.qzeros(g, c / 8)) >> (4 * e)) & 0xFu);
        b.qzeros[static_cast<std::size_t>((blk * groups + g) * 8 + i % 8)] |= static_cast<std::uint8_t>(i < 8 ? z : z << 4);
      }
    }
  return b;
}

static_assert(kBlockedK * 4 == 32, "a 32-bit word holds 8 K rows of 4-bit codes");
static_assert(kBlockedN % 8 == 0, "a block's zeros fill whole bytes, two columns each");

}  // namespace awq
