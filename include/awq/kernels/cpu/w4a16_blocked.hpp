/// \file
/// \brief W4A16 matrix product on the CPU over the "blocked" layout (awq/layout/blocked.hpp:
///        each block of 16 output columns one contiguous stream over K, each 32-bit word 8
///        consecutive K rows of one column — the operand order of AVX-512 VNNI `vpdpbusd`).
///
/// **Why.** In the checkpoint layout a 32-bit word holds 8 columns of one K row, so the only
/// way to use it on a CPU is one float FMA per weight, plus a mask and a convert to make the
/// float (see w4a16.hpp): about 3 vector µops per 8 weights, more than one core can issue while
/// DRAM delivers the bytes. Here a word holds 8 rows of one column, so `vpdpbusd` multiplies 4
/// codes by 4 activation bytes and adds them into the column's 32-bit sum: 64 weights per
/// instruction. Activations are signed bytes, so each x is written as a 23-bit fixed-point
/// number per group, as three signed base-256 digits (below), and the dot product runs once per
/// digit: per 128 weights one load, a shift, two ANDs and six `vpdpbusd`.
///
/// **Numerics (AVX-512 VNNI path).** Per row of x and group g, with e the exponent such that
/// max|x_k| over the group is in [2^(e-1), 2^e): X_k = x_k · 2^(22-e) rounded to the nearest
/// integer, ties away from zero (|X_k| <= 2^22), written X = 65536 d2 + 256 d1 + d0 with signed
/// digits d in [-128, 127]. Then Σ_k x_k q_k ≈ 2^(e-22) (65536 D2 + 256 D1 + D0), D = Σ_k d_k q_k
/// exact in int32, and y += s · (2^(e-22) Σ X_k q_k − z · 2^(e-22) Σ X_k) per group. The only
/// error beyond fp32 accumulation is the rounding of x to that fixed point:
/// |x_k − 2^(e-22) X_k| <= max|x| · 2^-22 over the group (none for fp16 inputs within a factor
/// 2^11 of the group's largest |x|, bf16 inputs within 2^14). Integer sums are exact, so a row's
/// result does not depend on M or on the rows beside it. A group holding NaN or Inf gives NaN in
/// every output of that row. The AVX2 path at M = 1 uses the same digits and sums (`vpmaddubsw`
/// and `vpmaddwd` in place of `vpdpbusd`): its results are the VNNI path's, bit for bit. The
/// portable path and AVX2 at M > 1 compute in fp32 from the exact dequantized weights, as the
/// checkpoint-layout kernel.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/error.hpp"
#include "awq/kernels/cpu/features.hpp"
#include "awq/kernels/cpu/w4a16_io.hpp"
#include "awq/layout/awq_gemm.hpp"
#include "awq/layout/blocked.hpp"
#include "awq/pack.hpp"
#include "awq/view.hpp"

#if AWQ_W4A16_HAVE_AVX2
/// Function attribute for the AVX-512 VNNI code (chosen at run time, like the AVX2 path).
#define AWQ_TARGET_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
/// The VNNI loop's helpers must inline: called out of line, their accumulator arrays live in memory.
#define AWQ_W4BLK_ALWAYS_INLINE __attribute__((always_inline))
#endif

namespace awq {

namespace detail {
namespace w4blk {

/// Row m of x as the VNNI path (and AVX2 at M = 1) reads it: per 8-row chunk j, 6 int32 words (digit 0 rows 8j..8j+3,
/// digit 0 rows 8j+4..8j+7, then digits 1 and 2 likewise), one signed byte per row; per group the
/// fixed-point step t = 2^(e-22) and t · Σ X (NaN when the group holds NaN or Inf).
struct Digits {
  std::vector<std::int32_t> words;  // [M][kc][6]
  std::vector<float> t, xs;         // [M][groups]
};

/// X = x · up rounded to the nearest integer, ties away from zero (exact: |x · up| < 2^22 in double).
inline std::int32_t fixed_point(float x, double up) {
  const double v = static_cast<double>(x) * up;
  return static_cast<std::int32_t>(v + (v < 0.0 ? -0.5 : 0.5));
}

/// Writes X's three signed base-256 digits at row r of a chunk's 24 bytes (X − d0 ≡ 0 mod 256).
inline void store_digits(std::int8_t* chunk, index_t r, std::int32_t X) {
  const std::int32_t d0 = static_cast<std::int8_t>(static_cast<std::uint8_t>(X & 0xFF));
  const std::int32_t x1 = (X - d0) / 256;
  const std::int32_t d1 = static_cast<std::int8_t>(static_cast<std::uint8_t>(x1 & 0xFF));
  const std::int32_t d2 = (x1 - d1) / 256;  // |d2| <= 64
  std::int8_t* c = chunk + (r / 4) * 4 + r % 4;
  c[0] = static_cast<std::int8_t>(d0);
  c[8] = static_cast<std::int8_t>(d1);
  c[16] = static_cast<std::int8_t>(d2);
}

/// The digits of x (M rows), eight rows of K at a time: the same operations as fixed_point and
/// store_digits in double and int32 lanes, since at M = 1 this is serial work in front of the
/// threads' product; the rows of a group's last partial chunk, if any, one at a time.
AWQ_TARGET_AVX2 inline Digits make_digits(const float* x, index_t ldx, index_t M, const BlockedW4A16& w) {
  const index_t kc = w.chunks(), groups = w.groups(), gk = w.group_rows();
  Digits d;
  d.words.assign(static_cast<std::size_t>(M * kc * 6), 0);
  d.t.assign(static_cast<std::size_t>(M * groups), 0.0f);
  d.xs.assign(static_cast<std::size_t>(M * groups), 0.0f);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)), inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256d sign = _mm256_set1_pd(-0.0), half = _mm256_set1_pd(0.5);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (index_t m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;
    auto* bytes = reinterpret_cast<std::int8_t*>(d.words.data() + m * kc * 6);
    for (index_t g = 0; g < groups; ++g) {
      const index_t k0 = g * gk, k1 = std::min(w.k, k0 + gk), kv = k0 + (k1 - k0) / kBlockedK * kBlockedK;  // k0 % 8 == 0
      __m256 vmax = _mm256_setzero_ps(), vfin = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
      for (index_t k = k0; k < kv; k += kBlockedK) {
        const __m256 a = _mm256_and_ps(_mm256_loadu_ps(xr + k), abs_mask);
        vmax = _mm256_max_ps(vmax, a);
        vfin = _mm256_and_ps(vfin, _mm256_cmp_ps(a, inf, _CMP_LT_OQ));  // false for NaN and Inf
      }
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, vmax);
      float amax = 0.0f;
      for (const float v : lanes) amax = std::max(amax, v);
      bool finite = _mm256_movemask_ps(vfin) == 0xFF;
      for (index_t k = kv; k < k1; ++k) {
        finite = finite && std::isfinite(xr[k]);
        amax = std::max(amax, std::fabs(xr[k]));
      }
      const std::size_t gi = static_cast<std::size_t>(m * groups + g);
      if (!finite) {
        d.xs[gi] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      int e = 0;
      std::frexp(amax, &e);  // amax in [2^(e-1), 2^e); e = 0 for amax = 0
      d.t[gi] = std::ldexp(1.0f, e - 22);
      const double up = std::ldexp(1.0, 22 - e);  // x · up is exact in double
      const __m256d vup = _mm256_set1_pd(up);
      __m256d vsum = _mm256_setzero_pd();  // Σ X, exact in double (|Σ X| < 2^42)
      for (index_t k = k0; k < kv; k += kBlockedK) {
        const __m256 xv = _mm256_loadu_ps(xr + k);
        __m256d lo = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(xv)), vup);
        __m256d hi = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(xv, 1)), vup);
        lo = _mm256_add_pd(lo, _mm256_or_pd(_mm256_and_pd(lo, sign), half));  // ± 0.5, then truncation
        hi = _mm256_add_pd(hi, _mm256_or_pd(_mm256_and_pd(hi, sign), half));
        const __m128i xlo = _mm256_cvttpd_epi32(lo), xhi = _mm256_cvttpd_epi32(hi);
        vsum = _mm256_add_pd(vsum, _mm256_add_pd(_mm256_cvtepi32_pd(xlo), _mm256_cvtepi32_pd(xhi)));
        const __m256i X = _mm256_set_m128i(xhi, xlo);
        const __m256i d0 = _mm256_srai_epi32(_mm256_slli_epi32(X, 24), 24);
        const __m256i x1 = _mm256_srai_epi32(_mm256_sub_epi32(X, d0), 8);
        const __m256i d1 = _mm256_srai_epi32(_mm256_slli_epi32(x1, 24), 24);
        const __m256i d2 = _mm256_srai_epi32(_mm256_sub_epi32(x1, d1), 8);
        // Bytes per 128-bit lane: d0, d1, d2 of rows 0..3 (lane 0) and 4..7 (lane 1), then zeros;
        // reordered by 32-bit words into d0 rows 0..7, d1 rows 0..7, d2 rows 0..7.
        const __m256i packed = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(d0, d1), _mm256_packs_epi32(d2, _mm256_setzero_si256())), order);
        std::int8_t* chunk = bytes + (k / kBlockedK) * 24;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(chunk), _mm256_castsi256_si128(packed));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(chunk + 16), _mm256_extracti128_si256(packed, 1));
      }
      alignas(32) double sums[4];
      _mm256_store_pd(sums, vsum);
      double sum = (sums[0] + sums[1]) + (sums[2] + sums[3]);
      for (index_t k = kv; k < k1; ++k) {
        const std::int32_t X = fixed_point(xr[k], up);
        sum += X;
        store_digits(bytes + (k / kBlockedK) * 24, k % kBlockedK, X);
      }
      d.xs[gi] = static_cast<float>(sum * static_cast<double>(d.t[gi]));
    }
  }
  return d;
}

/// Writes the 16 results of block b into row y (+ bias; columns past N are not written).
inline void store_block(const BlockedW4A16& w, const float* res, const float* bias, float* yrow, index_t b) {
  for (int c = 0; c < kBlockedN; ++c) {
    const index_t col = kBlockedN * b + c;
    if (col < w.n) yrow[col] = res[c] + (bias ? bias[col] : 0.0f);
  }
}

/// Portable path: blocks [b0, b1), all rows, exact fp32 products of the dequantized weights.
inline void portable_blocks(const BlockedW4A16& w, const float* x, index_t ldx, index_t M, const float* bias, float* y,
                            index_t ldy, index_t b0, index_t b1) {
  const index_t gk = w.group_rows();
  for (index_t b = b0; b < b1; ++b)
    for (index_t m = 0; m < M; ++m) {
      float acc[kBlockedN] = {};
      for (index_t g = 0; g < w.groups(); ++g) {
        float s[kBlockedN], z[kBlockedN];
        for (int c = 0; c < kBlockedN; ++c) {
          s[c] = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(w.scale_bits(g, kBlockedN * b + c)));
          z[c] = static_cast<float>(w.zero(g, kBlockedN * b + c));
        }
        for (index_t k = g * gk; k < std::min(w.k, (g + 1) * gk); ++k) {
          const float xv = x[m * ldx + k];
          for (int c = 0; c < kBlockedN; ++c)
            acc[c] += xv * ((static_cast<float>(w.code(k, kBlockedN * b + c)) - z[c]) * s[c]);
        }
      }
      store_block(w, acc, bias, y + m * ldy, b);
    }
}

/// Software prefetch distance of the SIMD loops, in 64-byte chunks (4 KB) along a block's
/// stream: without it one core streamed 10 GB/s, with it 19 (1 KB: 13; 16 KB: no better).
inline constexpr index_t kBlockedPrefetchChunks = 64;

/// The least weights (times rows of x) a thread takes, 2^20 (512 KB of codes): a decode step is
/// hundreds of small products, and a part handed to another thread costs a wake-up and a wait —
/// on a loaded machine a wait for a thread that lost its core — which a smaller part does not repay.
inline constexpr index_t kBlockedMinWeightsPerPart = index_t{1} << 20;

#if AWQ_W4A16_HAVE_AVX2

/// Zero points of group g for columns 8 h .. 8 h + 7 of block b, as floats (8 when symmetric).
AWQ_TARGET_AVX2 inline __m256 avx2_zeros(const BlockedW4A16& w, index_t b, index_t g, int h) {
  if (w.qzeros.empty()) return _mm256_set1_ps(8.0f);
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.qzeros.data() + (b * w.groups() + g) * 8));
  __m256i z = _mm256_cvtepu8_epi32(bytes);  // byte c: column c (low nibble) and column 8 + c (high)
  if (h) z = _mm256_srli_epi32(z, 4);
  return _mm256_cvtepi32_ps(_mm256_and_si256(z, _mm256_set1_epi32(0xF)));
}

/// Chunks [j0, j0 + n) of a block (n <= 4) for both column halves into the group's digit sums
/// D0, D1, D2 (per half h): per chunk two loads, two shifts, four ANDs, twelve `vpmaddubsw` and
/// twelve 16-bit adds (~19 µops per 64 weights, where converting each code to float took 24: AND,
/// CVT, FMA per 8); each digit broadcast feeds both halves. The 16-bit sums (|sum| <= 4 · 2 · 3840
/// < 2^15) live in this function only and are widened by `vpmaddwd` at its end: with them in the
/// caller's loop GCC spilled one and copied others every chunk.
AWQ_TARGET_AVX2 AWQ_W4BLK_ALWAYS_INLINE inline void avx2_digits_chunks(const __m256i* codes, const std::int32_t* dw, index_t j0, int n,
                                                                      __m256i (&D0)[2], __m256i (&D1)[2], __m256i (&D2)[2]) {
  const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256i s16[2][3] = {{_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()},
                       {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()}};
#pragma GCC unroll 4
  for (int u = 0; u < n; ++u) {
    const index_t j = j0 + u;
    const __m256i* c = codes + 2 * j;
    _mm_prefetch(reinterpret_cast<const char*>(c + 2 * kBlockedPrefetchChunks), _MM_HINT_T0);
    const __m256i v0 = _mm256_load_si256(c), v1 = _mm256_load_si256(c + 1);
    const __m256i lo0 = _mm256_and_si256(v0, low), hi0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), low);
    const __m256i lo1 = _mm256_and_si256(v1, low), hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), low);
    const std::int32_t* dj = dw + j * 6;
#pragma GCC unroll 3
    for (int i = 0; i < 3; ++i) {
      const __m256i dl = _mm256_set1_epi32(dj[2 * i]), dh = _mm256_set1_epi32(dj[2 * i + 1]);
      s16[0][i] = _mm256_add_epi16(s16[0][i], _mm256_maddubs_epi16(lo0, dl));
      s16[1][i] = _mm256_add_epi16(s16[1][i], _mm256_maddubs_epi16(lo1, dl));
      s16[0][i] = _mm256_add_epi16(s16[0][i], _mm256_maddubs_epi16(hi0, dh));
      s16[1][i] = _mm256_add_epi16(s16[1][i], _mm256_maddubs_epi16(hi1, dh));
    }
  }
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    D0[h] = _mm256_add_epi32(D0[h], _mm256_madd_epi16(s16[h][0], ones));
    D1[h] = _mm256_add_epi32(D1[h], _mm256_madd_epi16(s16[h][1], ones));
    D2[h] = _mm256_add_epi32(D2[h], _mm256_madd_epi16(s16[h][2], ones));
  }
}

/// AVX2 path for M = 1 on the VNNI path's numerics (processors without VNNI): the same digits of x
/// and exact integer sums, with `vpmaddubsw` (two code × digit products per 16-bit lane, at most
/// 2 · 15 · 128 in magnitude) summed over four chunks in 16 bits, then widened by `vpmaddwd`
/// (avx2_digits_chunks). Results are the VNNI path's, bit for bit.
AWQ_TARGET_AVX2 inline void avx2_digits_m1_blocks(const BlockedW4A16& w, const Digits& d, const float* bias, float* y, index_t b0, index_t b1) {
  const index_t kc = w.chunks(), groups = w.groups(), gc = w.group_chunks();
  alignas(32) float res[kBlockedN];
  for (index_t b = b0; b < b1; ++b) {
    const auto* codes = reinterpret_cast<const __m256i*>(w.qweight.data() + b * kc * kBlockedN);
    __m256 yacc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (index_t g = 0; g < groups; ++g) {
      const index_t j0 = g * gc, j1 = j0 + gc;
      const std::size_t pg = static_cast<std::size_t>(b * groups + g);
      __m256i D0[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()}, D1[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()},
              D2[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
      for (index_t jj = j0; jj < j1; jj += 4)
        avx2_digits_chunks(codes, d.words.data(), jj, static_cast<int>(std::min<index_t>(4, j1 - jj)), D0, D1, D2);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m256 S = _mm256_fmadd_ps(_mm256_cvtepi32_ps(D2[h]), _mm256_set1_ps(65536.0f),
                                         _mm256_fmadd_ps(_mm256_cvtepi32_ps(D1[h]), _mm256_set1_ps(256.0f), _mm256_cvtepi32_ps(D0[h])));
        const __m256 s = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(w.scales.data() + pg * kBlockedN + 8 * h)));
        const __m256 v = _mm256_fnmadd_ps(avx2_zeros(w, b, g, h), _mm256_set1_ps(d.xs[static_cast<std::size_t>(g)]),
                                          _mm256_mul_ps(S, _mm256_set1_ps(d.t[static_cast<std::size_t>(g)])));
        yacc[h] = _mm256_fmadd_ps(s, v, yacc[h]);
      }
    }
    _mm256_store_ps(res, yacc[0]);
    _mm256_store_ps(res + 8, yacc[1]);
    store_block(w, res, bias, y, b);
  }
}

/// AVX2 path for M > 1 (processors without VNNI): per group, the block's weights dequantized into an fp32
/// panel [rows][16] in L1 (w = (q − z)·s), then one FMA per weight and row of x.
AWQ_TARGET_AVX2 inline void avx2_blocks(const BlockedW4A16& w, const float* x, index_t ldx, index_t M, const float* bias,
                                        float* y, index_t ldy, index_t b0, index_t b1) {
  constexpr index_t kRows = 64;  // panel rows per pass: 64 × 16 floats = 4 KB
  alignas(32) float panel[kRows * kBlockedN];
  std::vector<float> acc(static_cast<std::size_t>(M * kBlockedN));
  const index_t gk = w.group_rows(), kc = w.chunks(), groups = w.groups();
  const __m256i mask = _mm256_set1_epi32(0xF);
  for (index_t b = b0; b < b1; ++b) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    const std::uint32_t* codes = w.qweight.data() + b * kc * kBlockedN;
    for (index_t g = 0; g < groups; ++g) {
      __m256 s[2], z[2];
      for (int h = 0; h < 2; ++h) {
        s[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales.data() + (b * groups + g) * kBlockedN + 8 * h)));
        z[h] = avx2_zeros(w, b, g, h);
      }
      for (index_t k0 = g * gk; k0 < (g + 1) * gk; k0 += kRows) {
        const index_t rows = std::min(kRows, (g + 1) * gk - k0);  // a multiple of 8
        for (index_t j = 0; j < rows / kBlockedK; ++j)
          for (int h = 0; h < 2; ++h) {
            const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(codes + ((k0 / kBlockedK + j) * kBlockedN + 8 * h)));
            for (int r = 0; r < kBlockedK; ++r) {
              const __m256i q = _mm256_and_si256(_mm256_srli_epi32(v, 8 * (r % 4) + 4 * (r / 4)), mask);
              _mm256_store_ps(panel + (j * kBlockedK + r) * kBlockedN + 8 * h,
                              _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(q), z[h]), s[h]));
            }
          }
        const index_t kend = std::min(rows, w.k - k0);  // rows past K are padding (x has none)
        for (index_t m = 0; m < M; ++m) {
          const float* xr = x + m * ldx + k0;
          __m256 a0 = _mm256_loadu_ps(acc.data() + m * kBlockedN), a1 = _mm256_loadu_ps(acc.data() + m * kBlockedN + 8);
          for (index_t r = 0; r < kend; ++r) {
            const __m256 xb = _mm256_broadcast_ss(xr + r);
            a0 = _mm256_fmadd_ps(_mm256_load_ps(panel + r * kBlockedN), xb, a0);
            a1 = _mm256_fmadd_ps(_mm256_load_ps(panel + r * kBlockedN + 8), xb, a1);
          }
          _mm256_storeu_ps(acc.data() + m * kBlockedN, a0);
          _mm256_storeu_ps(acc.data() + m * kBlockedN + 8, a1);
        }
      }
    }
    for (index_t m = 0; m < M; ++m) store_block(w, acc.data() + m * kBlockedN, bias, y + m * ldy, b);
  }
}

// GCC 12's AVX-512 intrinsics start from a self-initialised "undefined" vector, which
// -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

/// One 8-row chunk of a block into the six digit sums (lo/hi row halves × 3 digits).
AWQ_TARGET_AVX512VNNI AWQ_W4BLK_ALWAYS_INLINE inline void vnni_step(const __m512i* chunk, const std::int32_t* dj, __m512i low, __m512i* acc) {
  _mm_prefetch(reinterpret_cast<const char*>(chunk + kBlockedPrefetchChunks), _MM_HINT_T0);
  const __m512i v = _mm512_load_si512(chunk);
  const __m512i lo = _mm512_and_si512(v, low), hi = _mm512_and_si512(_mm512_srli_epi32(v, 4), low);
  acc[0] = _mm512_dpbusd_epi32(acc[0], lo, _mm512_set1_epi32(dj[0]));
  acc[1] = _mm512_dpbusd_epi32(acc[1], hi, _mm512_set1_epi32(dj[1]));
  acc[2] = _mm512_dpbusd_epi32(acc[2], lo, _mm512_set1_epi32(dj[2]));
  acc[3] = _mm512_dpbusd_epi32(acc[3], hi, _mm512_set1_epi32(dj[3]));
  acc[4] = _mm512_dpbusd_epi32(acc[4], lo, _mm512_set1_epi32(dj[4]));
  acc[5] = _mm512_dpbusd_epi32(acc[5], hi, _mm512_set1_epi32(dj[5]));
}

/// One 8-row chunk for two rows of x at once (the codes decoded once for both).
AWQ_TARGET_AVX512VNNI AWQ_W4BLK_ALWAYS_INLINE inline void vnni_step2(const __m512i* chunk, const std::int32_t* dj0, const std::int32_t* dj1, __m512i low,
                                             __m512i* acc0, __m512i* acc1) {
  _mm_prefetch(reinterpret_cast<const char*>(chunk + kBlockedPrefetchChunks), _MM_HINT_T0);
  const __m512i v = _mm512_load_si512(chunk);
  const __m512i lo = _mm512_and_si512(v, low), hi = _mm512_and_si512(_mm512_srli_epi32(v, 4), low);
#pragma GCC unroll 3
  for (int i = 0; i < 6; i += 2) {  // unrolled: the accumulators must stay in registers
    acc0[i] = _mm512_dpbusd_epi32(acc0[i], lo, _mm512_set1_epi32(dj0[i]));
    acc0[i + 1] = _mm512_dpbusd_epi32(acc0[i + 1], hi, _mm512_set1_epi32(dj0[i + 1]));
    acc1[i] = _mm512_dpbusd_epi32(acc1[i], lo, _mm512_set1_epi32(dj1[i]));
    acc1[i + 1] = _mm512_dpbusd_epi32(acc1[i + 1], hi, _mm512_set1_epi32(dj1[i + 1]));
  }
}

/// Σ X q of a group as float from its six digit sums (lo/hi halves of digits 0, 1, 2), plus six
/// more when `b` is not null (a second set of chains for the same row). Integer sums are exact,
/// so how the chunks were spread over the chains does not change the result.
AWQ_TARGET_AVX512VNNI AWQ_W4BLK_ALWAYS_INLINE inline __m512 digit_sum(const __m512i* a, const __m512i* b) {
  __m512i D[3];
#pragma GCC unroll 3
  for (int i = 0; i < 3; ++i) {
    D[i] = _mm512_add_epi32(a[2 * i], a[2 * i + 1]);
    if (b) D[i] = _mm512_add_epi32(D[i], _mm512_add_epi32(b[2 * i], b[2 * i + 1]));
  }
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(D[2]), _mm512_set1_ps(65536.0f),
                         _mm512_fmadd_ps(_mm512_cvtepi32_ps(D[1]), _mm512_set1_ps(256.0f), _mm512_cvtepi32_ps(D[0])));
}

/// ym [16] += s · (t · S − z · xs): one group of one row (S = Σ X q, xs = t Σ X).
AWQ_TARGET_AVX512VNNI AWQ_W4BLK_ALWAYS_INLINE inline void vnni_finish(float* ym, __m512 s, __m512 z, float t, float xs, __m512 S) {
  const __m512 v = _mm512_fnmadd_ps(z, _mm512_set1_ps(xs), _mm512_mul_ps(S, _mm512_set1_ps(t)));
  _mm512_storeu_ps(ym, _mm512_fmadd_ps(s, v, _mm512_loadu_ps(ym)));
}

/// AVX-512 VNNI path: blocks [b0, b1), every row (see the file comment for the numerics). Per
/// block and group, scales and zeros are decoded once; rows go in pairs that share each chunk's
/// decode (12 vpdpbusd chains), a last odd row alone with two chunks per step (12 chains again).
AWQ_TARGET_AVX512VNNI inline void vnni_blocks(const BlockedW4A16& w, const Digits& d, index_t M, const float* bias,
                                              float* y, index_t ldy, index_t b0, index_t b1) {
  const index_t kc = w.chunks(), groups = w.groups(), gc = w.group_chunks();
  const __m512i low = _mm512_set1_epi32(0x0F0F0F0F);
  const __m512i zshift = _mm512_set_epi32(4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0);
  const bool sym = w.qzeros.empty();
  std::vector<float> yacc(static_cast<std::size_t>(M * kBlockedN));
  for (index_t b = b0; b < b1; ++b) {
    const auto* codes = reinterpret_cast<const __m512i*>(w.qweight.data() + b * kc * kBlockedN);
    std::fill(yacc.begin(), yacc.end(), 0.0f);
    for (index_t g = 0; g < groups; ++g) {
      const std::size_t pg = static_cast<std::size_t>(b * groups + g);
      const __m512 s = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(w.scales.data() + pg * kBlockedN)));
      __m512 z;
      if (sym) {
        z = _mm512_set1_ps(8.0f);
      } else {
        std::uint64_t zb;
        std::memcpy(&zb, w.qzeros.data() + pg * 8, 8);
        const __m512i zi = _mm512_cvtepu8_epi32(_mm_set1_epi64x(static_cast<long long>(zb)));
        z = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(zi, zshift), _mm512_set1_epi32(0xF)));
      }
      const index_t j0 = g * gc, j1 = j0 + gc;
      index_t m = 0;
      for (; m + 2 <= M; m += 2) {
        const std::int32_t* dw0 = d.words.data() + m * kc * 6;
        const std::int32_t* dw1 = dw0 + kc * 6;
        __m512i a0[6], a1[6];
#pragma GCC unroll 6
        for (int i = 0; i < 6; ++i) a0[i] = a1[i] = _mm512_setzero_si512();
        for (index_t j = j0; j < j1; ++j) vnni_step2(codes + j, dw0 + j * 6, dw1 + j * 6, low, a0, a1);
        const std::size_t i = static_cast<std::size_t>(m * groups + g);
        vnni_finish(yacc.data() + m * kBlockedN, s, z, d.t[i], d.xs[i], digit_sum(a0, nullptr));
        vnni_finish(yacc.data() + (m + 1) * kBlockedN, s, z, d.t[i + groups], d.xs[i + groups], digit_sum(a1, nullptr));
      }
      if (m < M) {
        const std::int32_t* dw = d.words.data() + m * kc * 6;
        __m512i a0[6], a1[6];
#pragma GCC unroll 6
        for (int i = 0; i < 6; ++i) a0[i] = a1[i] = _mm512_setzero_si512();
        index_t j = j0;
        for (; j + 2 <= j1; j += 2) {
          vnni_step(codes + j, dw + j * 6, low, a0);
          vnni_step(codes + j + 1, dw + (j + 1) * 6, low, a1);
        }
        if (j < j1) vnni_step(codes + j, dw + j * 6, low, a0);
        const std::size_t i = static_cast<std::size_t>(m * groups + g);
        vnni_finish(yacc.data() + m * kBlockedN, s, z, d.t[i], d.xs[i], digit_sum(a0, a1));
      }
    }
    for (index_t m = 0; m < M; ++m) store_block(w, yacc.data() + m * kBlockedN, bias, y + m * ldy, b);
  }
}

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13  // the push above
#pragma GCC diagnostic pop
#endif

#endif  // AWQ_W4A16_HAVE_AVX2

}  // namespace w4blk
}  // namespace detail

/// \brief y [M, N] = x [M, K] · dequant(W)ᵀ (+ bias [N]) for weights in the blocked CPU layout.
///
/// Code path by `opt.isa`: `automatic` takes AVX-512 VNNI where the processor has it (x as 23-bit
/// fixed point per group, see the file comment), else AVX2 (at M = 1 the same digits and sums,
/// bit-identical; above, fp32 FMA over a dequantized panel), else portable; `avx512vnni`, `avx2` and `portable` force one (awq::Error when the processor
/// lacks it). x, y and bias as for the checkpoint-layout overload; every element of y is written.
/// \throws awq::Error on a shape mismatch, non-contiguous rows, or a forced ISA this processor lacks.
template <class TX, class TY>
void w4a16_gemm(const MatrixView<TX>& xm, const BlockedW4A16& w, const MatrixView<TY>& y, const TY* bias = nullptr,
                const W4A16Options& opt = {}) {
  using TXv = std::remove_const_t<TX>;  // x may be a read-only or a mutable view
  const MatrixView<const TXv> x(xm);
  static_assert(detail::w4cpu::is_w4a16_activation<TXv>, "awq::w4a16_gemm: x must hold float, Eigen::half or Eigen::bfloat16");
  static_assert(detail::w4cpu::is_w4a16_activation<std::remove_const_t<TY>> && !std::is_const_v<TY>,
                "awq::w4a16_gemm: y must be a mutable float, Eigen::half or Eigen::bfloat16 view");
  constexpr const char* fn = "awq::w4a16_gemm (blocked)";
  const index_t M = x.rows();
  const bool consistent =
      w.k > 0 && w.n > 0 && w.group > 0 && w.k % w.group == 0 && AwqGemmWeights::group_supported(w.group, w.k) &&
      w.kp == (w.k + kBlockedK - 1) / kBlockedK * kBlockedK && w.np == (w.n + kBlockedN - 1) / kBlockedN * kBlockedN &&
      w.qweight.size() == static_cast<std::size_t>(w.blocks() * w.chunks() * kBlockedN) &&
      w.scales.size() == static_cast<std::size_t>(w.blocks() * w.groups() * kBlockedN) &&
      (w.qzeros.empty() || w.qzeros.size() == static_cast<std::size_t>(w.blocks() * w.groups() * 8));
  detail::require(consistent, fn, ": the blocked weights are empty or inconsistent (K ", w.k, ", N ", w.n, ", group ", w.group,
                  "; make them with awq::block_w4a16)");
  detail::require(x.cols() == w.k, fn, ": x has ", x.cols(), " columns but the weights have K = ", w.k);
  detail::require_shape(y, M, w.n, fn, "y");
  detail::require(x.size() == 0 || x.row_contiguous(), fn, ": x must have contiguous rows (col_stride ", x.col_stride(), ")");
  detail::require(y.size() == 0 || y.row_contiguous(), fn, ": y must have contiguous rows (col_stride ", y.col_stride(), ")");
  if (M == 0) return;
  const CpuIsa isa = detail::resolve_isa(opt.isa, true, fn, "");

  detail::w4cpu::FloatIo<TXv, TY> io(x, y, bias);
  const index_t min_blocks = std::max<index_t>(1, detail::w4blk::kBlockedMinWeightsPerPart / (kBlockedN * w.kp * M));
#if AWQ_W4A16_HAVE_AVX2
  if (isa == CpuIsa::avx512vnni) {
    const detail::w4blk::Digits d = detail::w4blk::make_digits(io.x, io.ldx, M, w);
    backend::cpu::parallel_for(w.blocks(), [&](index_t b0, index_t b1) {
      detail::w4blk::vnni_blocks(w, d, M, io.bias, io.y, io.ldy, b0, b1);
    }, min_blocks);
  } else if (isa == CpuIsa::avx2 && M == 1) {
    const detail::w4blk::Digits d = detail::w4blk::make_digits(io.x, io.ldx, 1, w);
    backend::cpu::parallel_for(w.blocks(), [&](index_t b0, index_t b1) {
      detail::w4blk::avx2_digits_m1_blocks(w, d, io.bias, io.y, b0, b1);
    }, min_blocks);
  } else if (isa == CpuIsa::avx2) {
    backend::cpu::parallel_for(w.blocks(), [&](index_t b0, index_t b1) {
      detail::w4blk::avx2_blocks(w, io.x, io.ldx, M, io.bias, io.y, io.ldy, b0, b1);
    }, min_blocks);
  } else
#endif
  {
    backend::cpu::parallel_for(w.blocks(), [&](index_t b0, index_t b1) {
      detail::w4blk::portable_blocks(w, io.x, io.ldx, M, io.bias, io.y, io.ldy, b0, b1);
    }, min_blocks);
  }
  io.write_back(y);
}

}  // namespace awq
