/// \file
/// \brief What the CPU W4A16 kernels may use on this processor: the instruction sets compiled in
///        (x86-64 with GCC or Clang, unless AWQ_NO_SIMD) and those the processor and OS offer,
///        read once from CPUID and XCR0.
#pragma once

#include <cstdint>

#include "awq/error.hpp"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && !defined(AWQ_NO_SIMD)
#include <cpuid.h>
#include <immintrin.h>
/// 1 when the AVX2 path is compiled in (x86-64 with GCC or Clang, and AWQ_NO_SIMD not defined).
#define AWQ_W4A16_HAVE_AVX2 1
#define AWQ_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
/// 0: only the portable path is compiled in.
#define AWQ_W4A16_HAVE_AVX2 0
#endif

namespace awq {

/// Instruction set for the CPU W4A16 kernel.
enum class CpuIsa {
  automatic,  ///< the fastest this processor has for the layout: AVX-512 VNNI (blocked layout), AVX2, portable
  portable,   ///< scalar C++ (any processor)
  avx2,       ///< AVX2 + FMA + F16C; awq::Error when the processor lacks them
  avx512vnni  ///< AVX-512 F/BW/VL/VNNI: the blocked layout only (awq::block_w4a16); awq::Error elsewhere
};

namespace detail {
/// The CPUID and XCR0 bits the kernels ask about, read once.
struct CpuIds {
  bool avx2 = false;        ///< AVX2, FMA, F16C, and the OS saves the YMM state
  bool avx512f = false;     ///< AVX-512 F with AVX2/FMA, and the OS saves the ZMM state
  bool avx512vnni = false;  ///< AVX-512 F/BW/VL/VNNI, and the OS saves the ZMM state
  bool amd = false;         ///< vendor "AuthenticAMD"
};
inline const CpuIds& cpu_ids() noexcept {
  static const CpuIds ids = [] {
    CpuIds r;
#if AWQ_W4A16_HAVE_AVX2
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid(0, &a, &b, &c, &d)) r.amd = b == 0x68747541u && d == 0x69746E65u && c == 0x444D4163u;  // "Auth" "enti" "cAMD"
    if (!__get_cpuid(1, &a, &b, &c, &d)) return r;
    const bool fma = (c >> 12) & 1u, osxsave = (c >> 27) & 1u, f16c = (c >> 29) & 1u;
    if (!(fma && osxsave && f16c)) return r;
    unsigned xlo = 0, xhi = 0;
    __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    const unsigned long long xcr0 = static_cast<unsigned long long>(xhi) << 32 | xlo;
    if ((xcr0 & 0x6u) != 0x6u || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return r;  // the OS saves the YMM state?
    r.avx2 = ((b >> 5) & 1u) != 0;
    const bool f = (b >> 16) & 1u, bw = (b >> 30) & 1u, vl = (b >> 31) & 1u, vnni = (c >> 11) & 1u;
    r.avx512f = r.avx2 && (xcr0 & 0xE6u) == 0xE6u && f;  // XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM
    r.avx512vnni = r.avx512f && bw && vl && vnni;
#endif
    return r;
  }();
  return ids;
}
}  // namespace detail

/// True when this processor (and this build) can run the AVX2 path.
inline bool cpu_has_avx2() noexcept { return detail::cpu_ids().avx2; }

/// True when this processor (and this build) can run AVX-512 F code (with AVX2 and FMA), the OS
/// saving the ZMM state.
inline bool cpu_has_avx512f() noexcept { return detail::cpu_ids().avx512f; }

/// True when this processor (and this build) can run the AVX-512 VNNI path: AVX-512 F, BW, VL and
/// VNNI, with the OS saving the ZMM state.
inline bool cpu_has_avx512vnni() noexcept { return detail::cpu_ids().avx512vnni; }

/// True on AMD processors (CPUID vendor "AuthenticAMD"), whose FMA units take denormal inputs
/// at full speed (measured on Zen 3; other vendors' may take a slow assist).
inline bool cpu_is_amd() noexcept { return detail::cpu_ids().amd; }

namespace detail {
/// The code path a kernel runs for `asked`: `automatic` becomes the fastest this processor has
/// among the kernel's paths (AVX-512 VNNI only where `vnni_path`). A forced ISA the processor
/// or build lacks, or `avx512vnni` asked of a kernel without that path (`no_vnni` says what to
/// do instead), is an awq::Error naming `fn`.
inline CpuIsa resolve_isa(CpuIsa asked, bool vnni_path, const char* fn, const char* no_vnni) {
  require(vnni_path || asked != CpuIsa::avx512vnni, fn, ": isa avx512vnni ", no_vnni);
  require(asked != CpuIsa::avx512vnni || cpu_has_avx512vnni(), fn,
          ": isa avx512vnni was asked for but this processor or build lacks AVX-512 F/BW/VL/VNNI");
  require(asked != CpuIsa::avx2 || cpu_has_avx2(), fn, ": isa avx2 was asked for but this processor or build lacks AVX2/FMA/F16C");
  if (asked != CpuIsa::automatic) return asked;
  if (vnni_path && cpu_has_avx512vnni()) return CpuIsa::avx512vnni;
  return cpu_has_avx2() ? CpuIsa::avx2 : CpuIsa::portable;
}
}  // namespace detail

}  // namespace awq
