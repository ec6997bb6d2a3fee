/// \file
/// \brief Register-level helpers the tiled W4A16 kernels share (nvcc only): one LOP3 per two
///        weights to their raw codes, the per-group decoding constants, and the decode of one
///        16-byte word of the tiled layout (awq/layout/tiled.hpp) into mma fragments.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "awq/kernels/cuda/w4a16_act.cuh"

namespace awq {
namespace cuda {
namespace detail {

__device__ __forceinline__ std::uint32_t h2_bits(__half2 h) { return *reinterpret_cast<const std::uint32_t*>(&h); }
__device__ __forceinline__ __half2 bits_h2(std::uint32_t u) { return *reinterpret_cast<const __half2*>(&u); }

/// A group's decoding constants for the 8 columns {64 nt + 8 j + g} of a lane: the scale as a
/// pair of T, −(P + z) (P = Act<T>'s magic: 1024 or 128) and, for fp16, −(64 + z) for nibbles
/// decoded as 1024 + 16 q.
template <class T>
struct TiledConsts {
  static constexpr bool fp16 = std::is_same_v<T, __half>;
  std::uint32_t s2[8], lo[8], hi[fp16 ? 8 : 1];

  __device__ __forceinline__ void load(uint4 sv, std::uint32_t zw) {
    const std::uint32_t sw[4] = {sv.x, sv.y, sv.z, sv.w};
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s2[j] = Act<T>::scale_pair(__byte_perm(sw[j / 2], 0u, (j % 2) ? 0x3232u : 0x1010u));
      const std::uint32_t z = (zw >> (4 * j)) & 0xFu;
      lo[j] = (Act<T>::neg_magic | z) * 0x10001u;  // −(P + z), exact
      if constexpr (fp16) {
        const __half2 sixteenth = __float2half2_rn(0.0625f);
        hi[j] = h2_bits(__hmul2(bits_h2((0xE400u | (z << 4)) * 0x10001u), sixteenth));  // −(64 + z), exact
      }
    }
  }
};

/// (a & mask) | magic in one LOP3 (the compiler splits it in two: both constants are immediates).
template <std::uint32_t Mask, std::uint32_t Magic = 0x64006400u>
__device__ __forceinline__ std::uint32_t lop3_and_or(std::uint32_t a) {
  std::uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(a), "n"(Mask), "r"(Magic));
  return r;
}

/// Raw codes of the nibbles in bits 0..3 and 16..19 of q: the pair (P + q) of type T.
template <class T>
__device__ __forceinline__ std::uint32_t raw_lo(std::uint32_t q) {
  return lop3_and_or<0x000F000Fu, Act<T>::magic>(q);
}
/// Raw codes of the nibbles in bits 4..7 and 20..23 of q: fp16 64 + q in place (64.0 has its unit
/// in mantissa bit 4, where the nibble sits), bf16 128 + q after a shift. Act<T>::magic_hi is the offset.
template <class T>
__device__ __forceinline__ std::uint32_t raw_hi(std::uint32_t q) {
  if constexpr (std::is_same_v<T, __half>)
    return lop3_and_or<0x00F000F0u, Act<T>::magic_hi>(q);
  else
    return lop3_and_or<0x000F000Fu, Act<T>::magic>(q >> 4);
}

/// One word → the B fragments of sub-tiles 2w and 2w + 1 as raw codes: P + q for the low
/// nibble of each byte (K rows 2t, 2t + 1 of the fragment), raw_hi for the high nibble (rows
/// 2t + 8, 2t + 9). Zero point and scale are applied per group in fp32 (raw-code kernel, see the
/// kernel's comment).
template <class T>
__device__ __forceinline__ void decode_word_raw(std::uint32_t q, std::uint32_t (&b)[4]) {
  const std::uint32_t q8 = q >> 8;
  b[0] = raw_lo<T>(q);
  b[1] = raw_hi<T>(q);
  b[2] = raw_lo<T>(q8);
  b[3] = raw_hi<T>(q8);
}

/// One word of a lane's fragment load → the B fragments {b0, b1} of sub-tiles 2w and 2w + 1:
/// ((P + q) − (P + z))·s, rounded once to T (fp16; bf16: the scale rounded to bf16 first).
template <int W, class T>
__device__ __forceinline__ void decode_word(std::uint32_t q, const TiledConsts<T>& c, std::uint32_t (&b)[4]) {
  using A = Act<T>;
  const std::uint32_t q8 = q >> 8;
  constexpr int j0 = 2 * W, j1 = 2 * W + 1;
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 sixteenth = __float2half2_rn(0.0625f);
    const std::uint32_t p0 = lop3_and_or<0x000F000Fu>(q), p1 = lop3_and_or<0x00F000F0u>(q);
    const std::uint32_t p2 = lop3_and_or<0x000F000Fu>(q8), p3 = lop3_and_or<0x00F000F0u>(q8);
    b[0] = h2_bits(__hmul2(__hadd2(bits_h2(p0), bits_h2(c.lo[j0])), bits_h2(c.s2[j0])));
    b[1] = h2_bits(__hmul2(__hfma2(bits_h2(p1), sixteenth, bits_h2(c.hi[j0])), bits_h2(c.s2[j0])));
    b[2] = h2_bits(__hmul2(__hadd2(bits_h2(p2), bits_h2(c.lo[j1])), bits_h2(c.s2[j1])));
    b[3] = h2_bits(__hmul2(__hfma2(bits_h2(p3), sixteenth, bits_h2(c.hi[j1])), bits_h2(c.s2[j1])));
  } else {
    b[0] = A::mul2(A::add2(raw_lo<T>(q), c.lo[j0]), c.s2[j0]);
    b[1] = A::mul2(A::add2(raw_hi<T>(q), c.lo[j0]), c.s2[j0]);
    b[2] = A::mul2(A::add2(raw_lo<T>(q8), c.lo[j1]), c.s2[j1]);
    b[3] = A::mul2(A::add2(raw_hi<T>(q8), c.lo[j1]), c.s2[j1]);
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace awq
