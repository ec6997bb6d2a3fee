/// \file
/// \brief The activation element type of the W4A16 kernels (fp16 or bf16): what differs between
///        them is gathered here — conversions, the tensor-core instruction, and the constants
///        of the int4 decode — so that each kernel is written once over `Act<T>`.
///
/// Decoding a 4-bit code q in a 16-bit lane: OR-ing q into the mantissa of a power of two P whose
/// mantissa unit is 1 gives the exact value P + q in one LOP3 (`Act<T>::magic`): fp16 P = 1024
/// (0x6400, 10 mantissa bits), bf16 P = 128 (0x4300, 7 mantissa bits). fp16 has a second magic for
/// a code sitting 4 bits up (fp16 64.0 = 0x5400 has its unit at mantissa bit 4: 64 + q without a
/// shift); bf16 has no room for that (bit 7 is an exponent bit) and shifts instead.
/// Subtracting P + z is exact (a small integer); multiplying by the scale rounds once (fp16). For
/// bf16 the fp16 scale is first rounded to bf16, so a decoded bf16 weight carries two roundings
/// (2^-9 relative each) — the bf16 weight a bf16 model's dequantize makes from these scales.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace awq {
namespace cuda {

/// \brief Whether T is an activation type of the W4A16 kernels (__half or __nv_bfloat16).
template <class T>
inline constexpr bool is_w4a16_act_v = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

namespace detail {

// mma.sync m16n8k16 with fp32 accumulation, D += A·B, for TY = "f16" or "bf16".
#define AWQ_MMA_16816(TY)                                                                                         \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TY "." TY ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, " \
               "{%0,%1,%2,%3};\n"                                                                                  \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                                     \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))

/// What the W4A16 kernels need of their activation type T (__half or __nv_bfloat16).
template <class T>
struct Act {
  static_assert(is_w4a16_act_v<T>, "W4A16 activations are __half or __nv_bfloat16");
  static constexpr bool fp16 = std::is_same_v<T, __half>;
  using element = T;
  using T2 = std::conditional_t<fp16, __half2, __nv_bfloat162>;
  /// The pair P, P: P + q for a code in bits 0..3 of a lane (fp16 1024, bf16 128).
  static constexpr std::uint32_t magic = fp16 ? 0x64006400u : 0x43004300u;
  /// Offset of the raw code of a nibble in bits 4..7: fp16 64 (64 + q in place), bf16 128 (shifted down).
  static constexpr std::uint32_t magic_hi = fp16 ? 0x54005400u : 0x43004300u;
  static constexpr std::uint32_t one = fp16 ? 0x3C003C00u : 0x3F803F80u;  ///< the pair 1.0, 1.0
  static constexpr std::uint32_t neg_magic = fp16 ? 0xE400u : 0xC300u;   ///< −P (OR a zero point into it: −(P + z))

  __host__ __device__ static float to_float(T v) {
    if constexpr (fp16)
      return __half2float(v);
    else
      return __bfloat162float(v);
  }
  __host__ __device__ static T from_float(float v) {
    if constexpr (fp16)
      return __float2half_rn(v);
    else
      return __float2bfloat16_rn(v);
  }
  /// Two floats rounded to a T pair, as bits.
  __device__ static std::uint32_t pack(float v0, float v1) {
    if constexpr (fp16)
      return bits(__floats2half2_rn(v0, v1));
    else
      return bits(__floats2bfloat162_rn(v0, v1));
  }
  /// An fp16 scale pair (the layout's) as a T pair (bf16: rounded).
  __device__ static std::uint32_t scale_pair(std::uint32_t s) {
    if constexpr (fp16)
      return s;
    else
      return bits(__float22bfloat162_rn(__half22float2(*reinterpret_cast<const __half2*>(&s))));
  }
  __device__ static std::uint32_t add2(std::uint32_t a, std::uint32_t b) { return bits(__hadd2(pair(a), pair(b))); }
  __device__ static std::uint32_t mul2(std::uint32_t a, std::uint32_t b) { return bits(__hmul2(pair(a), pair(b))); }
  /// mma.sync m16n8k16 on T, fp32 accumulate: D += A·B.
  __device__ static void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    if constexpr (fp16)
      AWQ_MMA_16816("f16");
    else
      AWQ_MMA_16816("bf16");
  }

 private:
  __device__ static T2 pair(std::uint32_t u) { return *reinterpret_cast<const T2*>(&u); }
  __device__ static std::uint32_t bits(T2 h) { return *reinterpret_cast<const std::uint32_t*>(&h); }
};

#undef AWQ_MMA_16816

}  // namespace detail
}  // namespace cuda
}  // namespace awq
