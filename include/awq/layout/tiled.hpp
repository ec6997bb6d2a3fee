/// \file
/// \brief The "tiled" W4A16 layout: the AutoAWQ GEMM checkpoint layout re-ordered offline so
///        that every 16-byte load of a GPU thread is exactly the weight fragments it feeds to
///        its tensor-core instructions (mma.sync m16n8k16), and the converter that makes it.
///        Host code only: no CUDA needed to convert, inspect or test it.
///
/// **Why.** Read in checkpoint order, a tensor-core kernel must route the packed weights through
/// shared memory (decode, store, ldmatrix.trans) before an mma can use them; at small M that
/// round trip costs more than the arithmetic. In this layout a warp reads a contiguous 512-byte
/// stretch, each lane decodes its 16 bytes in registers (LOP3 + HADD2/HFMA2 + HMUL2 per two
/// weights) and the results are already the B fragments. The idea is Marlin's (IST-DASLab); the
/// layout below is this library's own.
///
/// **Layout.** K is padded to Kp (a multiple of 64) and N to Np (a multiple of 64) with zero
/// codes and zero scales (so padded weights are exactly 0). With tile (nt, kt) = columns
/// [64 nt, 64 nt + 64) × rows [16 kt, 16 kt + 16) of W [K, N] (y = x · W):
/// \code
///   qweight  uint32 [Np/64][Kp/16][32 lanes][4 words]        (tile-major, 512 bytes per tile)
///   scales   fp16   [Kp/G][Np/64][8 g][8 j]                    (s of column 64 nt + 8 j + g)
///   qzeros   uint32 [Kp/G][Np/64][8 g]  nibble j = zero of column 64 nt + 8 j + g  (optional)
/// \endcode
/// Lane l (g = l / 4, t = l % 4), word w, nibble e (bits 4e..4e+3) of a tile holds the code of
///   column 64 nt + 8 (2w + (e % 4) / 2) + g,   row 16 kt + 2t + 8 (e % 2) + e / 4,
/// so the fp16 pairs (nibble p, nibble p + 4), p = 0..3, decode to the B fragment registers
/// {b0, b1} of n8 sub-tile 2w (p = 0, 1) and 2w + 1 (p = 2, 3) of the m16n8k16 instruction.
/// Each 64-column strip is contiguous over K, so a GPU warp streams one strip.
/// Without zeros (symmetric quantization) every zero is 8, the AWQ convention for 4 bits.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "awq/error.hpp"
#include "awq/view.hpp"

namespace awq {

inline constexpr int kTiledK = 16;     ///< rows of K per tile
inline constexpr int kTiledN = 64;     ///< columns of N per tile
inline constexpr int kTiledPadK = 64;  ///< K is padded to a multiple of this

/// \brief W4A16 weights in the tiled layout (host memory), made by tile_w4a16.
struct TiledW4A16 {
  int k = 0;       ///< logical K (input features)
  int n = 0;       ///< logical N (output features)
  int group = 128; ///< quantization group along K
  int kp = 0;      ///< K padded to a multiple of 64
  int np = 0;      ///< N padded to a multiple of 64
  std::vector<std::uint32_t> qweight;  ///< [np/64][kp/16][32][4]
  std::vector<std::uint16_t> scales;   ///< fp16 bits [kp/group][np/64][8][8]
  std::vector<std::uint32_t> qzeros;   ///< [kp/group][np/64][8]; empty: symmetric (zero 8)

  int groups() const { return kp / group; }  ///< groups of the padded K

  /// Index of the qweight word and the nibble that hold the code of row k, column n.
  static void code_position(const TiledW4A16& t, int k, int n, std::size_t& word, int& nibble) {
    const int nt = n / kTiledN, kt = k / kTiledK, c = n % kTiledN, r = k % kTiledK;
    const int j = c / 8, g = c % 8;            // sub-tile and fragment column
    const int w = j / 2, hi_col = j % 2;       // word, which of its two sub-tiles
    const int odd = r % 2, half8 = r / 8, t2 = (r % 8) / 2;  // r = 2 t2 + 8 half8 + odd
    const int lane = 4 * g + t2;
    nibble = 2 * hi_col + half8 + 4 * odd;
    word = ((static_cast<std::size_t>(nt) * (t.kp / kTiledK) + kt) * 32 + lane) * 4 + w;
  }
  /// The 4-bit code of input row `row` (of k), output column `col` (of n); padded positions read 0.
  int code(int row, int col) const {
    std::size_t word;
    int nibble;
    code_position(*this, row, col, word, nibble);
    return static_cast<int>((qweight[word] >> (4 * nibble)) & 0xFu);
  }
  /// Index into `scales` of group g, column n (also the nibble's word in qzeros times 8 + j).
  std::size_t scale_index(int g, int col) const {
    return ((static_cast<std::size_t>(g) * (np / kTiledN) + col / kTiledN) * 8 + col % 8) * 8 + (col % kTiledN) / 8;
  }
  /// fp16 bits of the scale of group g, column n.
  std::uint16_t scale_bits(int g, int col) const { return scales[scale_index(g, col)]; }
  /// Zero point of group g, column n (8 without zeros).
  int zero(int g, int col) const {
    if (qzeros.empty()) return 8;
    const std::size_t i = scale_index(g, col);
    return static_cast<int>((qzeros[i / 8] >> (4 * (i % 8))) & 0xFu);
  }
};

/// \brief Re-order AutoAWQ GEMM tensors into the tiled layout.
///
/// \param qweight [K, N/8] int32 (AutoAWQ order {0, 2, 4, 6, 1, 3, 5, 7} inside a word)
/// \param qzeros  [K/G, N/8] int32, or an empty view (rows() == 0) for symmetric weights (zero 8)
/// \param scales  [K/G, N] in any 2-byte fp16 type (`__half`, `Eigen::half`, `std::uint16_t` bits)
/// \param group   32, 64 or 128
/// awq::Error names the argument when shapes, group or a scale (NaN/Inf) are invalid.
template <class S>
TiledW4A16 tile_w4a16(const MatrixView<const std::int32_t>& qweight, const MatrixView<const std::int32_t>& qzeros,
                      const MatrixView<const S>& scales, int group) {
  static_assert(sizeof(S) == 2 && std::is_trivially_copyable_v<S>, "scales must be a 2-byte fp16 type");
  constexpr const char* fn = "awq::tile_w4a16";
  detail::require(group == 32 || group == 64 || group == 128, fn, ": group ", group, " is not 32, 64 or 128");
  const index_t k = qweight.rows(), n = qweight.cols() * 8;
  detail::require(k > 0 && n > 0, fn, ": qweight is ", qweight.rows(), "x", qweight.cols(), " (empty)");
  detail::require(k % group == 0, fn, ": group ", group, " does not divide K ", k);
  detail::require(k <= (1 << 24) && n <= (1 << 24), fn, ": K ", k, " or N ", n, " is too large");
  const index_t groups = k / group;
  detail::require_shape(scales, groups, n, fn, "scales");
  const bool sym = qzeros.rows() == 0;
  if (!sym) detail::require_shape(qzeros, groups, n / 8, fn, "qzeros");

  TiledW4A16 t;
  t.k = static_cast<int>(k);
  t.n = static_cast<int>(n);
  t.group = group;
  t.kp = static_cast<int>((k + kTiledPadK - 1) / kTiledPadK * kTiledPadK);
  t.np = static_cast<int>((n + kTiledN - 1) / kTiledN * kTiledN);
  t.qweight.assign(static_cast<std::size_t>(t.kp) * t.np / 8, 0u);
  t.scales.assign(static_cast<std::size_t>(t.groups()) * t.np, 0u);
  if (!sym) t.qzeros.assign(static_cast<std::size_t>(t.groups()) * t.np / 8, 0u);

  constexpr int unpack[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // column j of a word sits in nibble unpack[j]
  for (index_t kk = 0; kk < k; ++kk)
    for (index_t c = 0; c < n / 8; ++c) {
      const auto word = static_cast<std::uint32_t>(qweight(kk, c));
      for (int j = 0; j < 8; ++j) {
        const std::uint32_t q = (word >> (4 * unpack[j])) & 0xFu;
        std::size_t dst;
        int nib;
        TiledW4A16::code_position(t, static_cast<int>(kk), static_cast<int>(8 * c + j), dst, nib);
        t.qweight[dst] |= q << (4 * nib);
      }
    }
  for (index_t g = 0; g < groups; ++g)
    for (index_t c = 0; c < n; ++c) {
      std::uint16_t bits;
      std::memcpy(&bits, &scales(g, c), 2);
      detail::require((bits & 0x7C00u) != 0x7C00u, fn, ": scale (", g, ", ", c, ") is not finite");
      const std::size_t i = t.scale_index(static_cast<int>(g), static_cast<int>(c));
      t.scales[i] = bits;
      if (!sym) {
        const std::uint32_t z = (static_cast<std::uint32_t>(qzeros(g, c / 8)) >> (4 * unpack[c % 8])) & 0xFu;
        t.qzeros[i / 8] |= z << (4 * (i % 8));
      }
    }
  return t;
}

}  // namespace awq
