/// \file
/// \brief Packed code layouts: the AutoAWQ "GEMM" int4 layout and a plain bit-stream layout
///        for every width, with their exact inverses.
///
/// **AutoAWQ GEMM (4 bits).** Codes of a weight [out, in] are transposed to [in, out] and
/// eight neighbouring output columns share one int32, in the interleaved order
/// {0, 2, 4, 6, 1, 3, 5, 7}:
/// \code
///   bits  31..28 27..24 23..20 19..16 15..12 11..8  7..4   3..0
///   col   8c+7   8c+5   8c+3   8c+1   8c+6   8c+4   8c+2   8c+0
///   qweight[k][c] = sum_i q[8c + order[i]][k] << (4 i)          (shape [in, out / 8])
/// \endcode
/// Zeros [out, n_groups] pack the same way into qzeros [n_groups, out / 8] (raw codes, no
/// offset); scales [out, n_groups] transpose into fp16 [n_groups, out]. This is what AutoAWQ
/// writes and what vLLM and transformers load as `version: "gemm"`.
///
/// **Plain layout (2..8 bits).** Each row of codes is a little-endian bit stream: code j of the
/// row occupies bits [j*b, (j+1)*b) counting from bit 0 of byte 0; a row takes
/// ceil(cols * b / 8) bytes, the unused high bits of its last byte are zero.
#pragma once

#include <array>
#include <cstdint>

#include "awq/config.hpp"
#include "awq/error.hpp"
#include "awq/view.hpp"

namespace awq {

/// Interleave order of the AutoAWQ GEMM layout: nibble i holds column order[i] of its 8.
inline constexpr std::array<int, 8> kAwqPackOrder = {0, 2, 4, 6, 1, 3, 5, 7};
/// Inverse of kAwqPackOrder: column j sits in nibble kAwqUnpackOrder[j].
inline constexpr std::array<int, 8> kAwqUnpackOrder = {0, 4, 1, 5, 2, 6, 3, 7};
/// Codes per int32 in the AutoAWQ GEMM layout.
inline constexpr int kAwqPackFactor = 8;

static_assert(sizeof(std::int32_t) * 8 == kAwqPackFactor * 4, "eight 4-bit codes fill one int32");
static_assert(kAwqPackOrder[kAwqUnpackOrder[1]] == 1 && kAwqPackOrder[kAwqUnpackOrder[7]] == 7,
              "unpack order inverts pack order");

/// \brief Pack 4-bit codes `src` [out, K] into the AutoAWQ GEMM int32 layout `dst` [K, out / 8].
///
/// Use it with codes [out, in] to make `qweight` [in, out/8], and with zeros [out, n_groups]
/// to make `qzeros` [n_groups, out/8].
/// \pre out % 8 == 0; every code <= 15.
inline void pack_awq_gemm(const MatrixView<const std::uint8_t>& src, const MatrixView<std::int32_t>& dst) {
  constexpr const char* fn = "awq::pack_awq_gemm";
  detail::require(src.rows() % kAwqPackFactor == 0, fn, ": out_features ", src.rows(),
                  " is not a multiple of 8");
  detail::require_shape(dst, src.cols(), src.rows() / kAwqPackFactor, fn, "dst");
  for (index_t k = 0; k < src.cols(); ++k) {
    for (index_t c = 0; c < dst.cols(); ++c) {
      std::uint32_t word = 0;
      for (int i = 0; i < kAwqPackFactor; ++i) {
        const index_t n = c * kAwqPackFactor + kAwqPackOrder[static_cast<std::size_t>(i)];
        const std::uint32_t q = src(n, k);
        detail::require(q <= 15u, fn, ": code ", q, " at (", n, ", ", k, ") does not fit in 4 bits");
        word |= q << (4 * i);
      }
      dst(k, c) = static_cast<std::int32_t>(word);
    }
  }
}

/// \brief Inverse of pack_awq_gemm: `src` [K, out / 8] int32 into codes `dst` [out, K].
inline void unpack_awq_gemm(const MatrixView<const std::int32_t>& src, const MatrixView<std::uint8_t>& dst) {
  constexpr const char* fn = "awq::unpack_awq_gemm";
  detail::require_shape(dst, src.cols() * kAwqPackFactor, src.rows(), fn, "dst");
  for (index_t k = 0; k < src.rows(); ++k) {
    for (index_t c = 0; c < src.cols(); ++c) {
      const auto word = static_cast<std::uint32_t>(src(k, c));
      for (int j = 0; j < kAwqPackFactor; ++j) {
        dst(c * kAwqPackFactor + j, k) =
            static_cast<std::uint8_t>((word >> (4 * kAwqUnpackOrder[static_cast<std::size_t>(j)])) & 0xFu);
      }
    }
  }
}

/// \brief Transpose per-(row, group) scales [out, n_groups] into the checkpoint's [n_groups, out]
///        in the destination's element type (fp16 for AutoAWQ: pass an Eigen::half view).
template <class S, class D>
void transpose_scales(const MatrixView<S>& scales, const MatrixView<D>& dst) {
  detail::require_shape(dst, scales.cols(), scales.rows(), "awq::transpose_scales", "dst");
  for (index_t r = 0; r < scales.rows(); ++r)
    for (index_t j = 0; j < scales.cols(); ++j) dst(j, r) = static_cast<std::remove_cv_t<D>>(scales(r, j));
}

/// Bytes one row of `cols` codes of `bits` bits takes in the plain layout.
constexpr index_t plain_row_bytes(index_t cols, int bits) noexcept { return (cols * bits + 7) / 8; }

/// \brief Pack codes [rows, cols] of `bits` bits into the plain bit-stream layout
///        `dst` [rows, plain_row_bytes(cols, bits)].
inline void pack_plain(int bits, const MatrixView<const std::uint8_t>& src, const MatrixView<std::uint8_t>& dst) {
  constexpr const char* fn = "awq::pack_plain";
  detail::require(bits >= 2 && bits <= 8, fn, ": bits ", bits, " is out of range [2, 8]");
  detail::require_shape(dst, src.rows(), plain_row_bytes(src.cols(), bits), fn, "dst");
  const unsigned max_code = (1u << bits) - 1u;
  for (index_t r = 0; r < src.rows(); ++r) {
    for (index_t b = 0; b < dst.cols(); ++b) dst(r, b) = 0;
    for (index_t j = 0; j < src.cols(); ++j) {
      const unsigned q = src(r, j);
      detail::require(q <= max_code, fn, ": code ", q, " at (", r, ", ", j, ") does not fit in ", bits, " bits");
      const index_t bit = j * bits;
      const index_t byte = bit / 8;
      const int shift = static_cast<int>(bit % 8);
      const unsigned v = q << shift;  // at most 15 significant bits: spans two bytes at most
      dst(r, byte) = static_cast<std::uint8_t>(dst(r, byte) | (v & 0xFFu));
      if (shift + bits > 8) dst(r, byte + 1) = static_cast<std::uint8_t>(dst(r, byte + 1) | (v >> 8));
    }
  }
}

/// \brief Inverse of pack_plain: `src` [rows, plain_row_bytes(cols, bits)] into codes `dst` [rows, cols].
inline void unpack_plain(int bits, const MatrixView<const std::uint8_t>& src, const MatrixView<std::uint8_t>& dst) {
  constexpr const char* fn = "awq::unpack_plain";
  detail::require(bits >= 2 && bits <= 8, fn, ": bits ", bits, " is out of range [2, 8]");
  detail::require_shape(src, dst.rows(), plain_row_bytes(dst.cols(), bits), fn, "src");
  const unsigned mask = (1u << bits) - 1u;
  for (index_t r = 0; r < dst.rows(); ++r) {
    for (index_t j = 0; j < dst.cols(); ++j) {
      const index_t bit = j * bits;
      const index_t byte = bit / 8;
      const int shift = static_cast<int>(bit % 8);
      unsigned v = src(r, byte);
      if (shift + bits > 8) v |= static_cast<unsigned>(src(r, byte + 1)) << 8;
      dst(r, j) = static_cast<std::uint8_t>((v >> shift) & mask);
    }
  }
}

}  // namespace awq
