/// \file
/// \brief W4A16 matrix product on the CPU: y [M, N] = x [M, K] · dequant(W)ᵀ (+ bias), reading the
///        AutoAWQ "GEMM" checkpoint layout (qweight [K, N/8] int32, qzeros [K/G, N/8] int32, fp16
///        scales [K/G, N]) directly, fp32 accumulation, all cores.
///
/// Two code paths, chosen at run time: AVX2 + FMA + F16C on x86-64 processors that have them
/// (compiled with function-level target attributes, so no -mavx2 is needed and the binary still
/// runs on older processors), and a portable scalar path everywhere else. `W4A16Options::isa`
/// forces one for tests and benchmarks.
///
/// How the AVX2 path works, per block of 64 output columns (8 packed words of a qweight row):
/// - One 32-byte load gives a k row of the block; shifting it right by 4·i and masking gives
///   nibble i of all 8 words, i.e. the columns {8j + order[i]}: a fixed permutation of the 64
///   columns. The kernel works in that permuted order and un-permutes once when it writes y.
/// - M = 1 (decode): per group it accumulates Σ_k x_k·q_k for each column and applies scale and
///   zero once per group, y += s·(Σ x·q − z·Σ x): AND, convert, FMA per 8 weights — or, on AMD
///   processors (`M1Decode`), AND and FMA only: the masked nibble's bits read as a denormal float
///   times x pre-scaled by a power of two is the exact product (avx2_rows_m1<true>).
/// - M > 1: it dequantizes a group's 64-column tile into an fp32 panel in L1
///   (w = (q − z)·s, the formula of awq::dequantize), then runs a 4-row × 16-column FMA
///   micro-kernel over it, so each weight is decoded once for all M rows.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/config.hpp"
#include "awq/error.hpp"
#include "awq/kernels/cpu/features.hpp"
#include "awq/kernels/cpu/w4a16_io.hpp"
#include "awq/layout/awq_gemm.hpp"
#include "awq/pack.hpp"
#include "awq/view.hpp"

namespace awq {

namespace detail {
namespace w4cpu {

/// The problem after validation: float activations and output, raw pointers.
struct Problem {
  const float* x;
  index_t ldx;
  index_t m, k, n, group;
  const std::int32_t* qw;
  index_t ldq;
  const std::int32_t* qz;  // null: symmetric, zero 8
  index_t ldz;
  const Eigen::half* sc;
  index_t lds;
  const float* bias;  // may be null
  float* y;
  index_t ldy;
  const float* xsum;  // [K/G] sums of x over each group (the M = 1 path only)
  const float* x_denormal = nullptr;  // M = 1 with M1Decode::denormal: x · 2^shift, else null
  int denormal_unscale_exp = 0;        // 149 − shift: the group sums are in units of 2^-(149 − shift)
};

inline float zero_of(const Problem& p, index_t g, index_t word, int nibble) {
  if (!p.qz) return 8.0f;
  return static_cast<float>((static_cast<std::uint32_t>(p.qz[g * p.ldz + word]) >> (4 * nibble)) & 0xFu);
}

/// Portable path for packed words [w0, w1) (8 columns each), all rows of x.
inline void portable_words(const Problem& p, index_t w0, index_t w1) {
  std::vector<float> acc(static_cast<std::size_t>(p.m) * 8);
  for (index_t w = w0; w < w1; ++w) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (index_t g = 0; g * p.group < p.k; ++g) {
      float s[8], z[8];
      for (int i = 0; i < 8; ++i) {
        const index_t col = 8 * w + kAwqPackOrder[static_cast<std::size_t>(i)];
        s[i] = static_cast<float>(p.sc[g * p.lds + col]);
        z[i] = zero_of(p, g, w, i);
      }
      for (index_t k = g * p.group; k < (g + 1) * p.group; ++k) {
        const auto q = static_cast<std::uint32_t>(p.qw[k * p.ldq + w]);
        float wv[8];
        for (int i = 0; i < 8; ++i) wv[i] = (static_cast<float>((q >> (4 * i)) & 0xFu) - z[i]) * s[i];
        for (index_t m = 0; m < p.m; ++m) {
          const float xv = p.x[m * p.ldx + k];
          float* a = acc.data() + m * 8;
          for (int i = 0; i < 8; ++i) a[i] += xv * wv[i];
        }
      }
    }
    for (index_t m = 0; m < p.m; ++m)
      for (int i = 0; i < 8; ++i) {
        const index_t col = 8 * w + kAwqPackOrder[static_cast<std::size_t>(i)];
        p.y[m * p.ldy + col] = acc[static_cast<std::size_t>(m * 8 + i)] + (p.bias ? p.bias[col] : 0.0f);
      }
  }
}

#if AWQ_W4A16_HAVE_AVX2

// Column of permuted slot e = 8 i + j (nibble i of word j) inside a 64-column block.
constexpr int slot_col(int e) { return 8 * (e % 8) + kAwqPackOrder[static_cast<std::size_t>(e / 8)]; }

/// Scales and zeros of group g for the 64-column block starting at word w0, in slot order.
AWQ_TARGET_AVX2 inline void group_params_perm(const Problem& p, index_t g, index_t w0, float* s, float* z) {
  const Eigen::half* srow = p.sc + g * p.lds + 8 * w0;
  alignas(32) float sc[64];
  for (int j = 0; j < 8; ++j)
    _mm256_store_ps(sc + 8 * j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(srow + 8 * j))));
  for (int e = 0; e < 64; ++e) s[e] = sc[slot_col(e)];
  if (p.qz) {
    const __m256i words = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.qz + g * p.ldz + w0));
    const __m256i mask = _mm256_set1_epi32(0xF);
    for (int i = 0; i < 8; ++i)
      _mm256_store_ps(z + 8 * i, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(words, _mm256_set1_epi32(4 * i)), mask)));
  } else {
    for (int e = 0; e < 64; ++e) z[e] = 8.0f;
  }
}

// Prefetch distance in packed words (four blocks, two cache lines ahead along a row), and the rows
// of a group handled per sweep over the blocks (their pages stay in the first-level TLB).
inline constexpr index_t kPrefetchWords = 32;
inline constexpr index_t kRowChunk = 32;

/// M = 1: adds rows [k0, k1) of the 64-column block at word w0 into the group sums ga [64]
/// (slot order): Σ_k x_k·q_k·16^i per column of nibble i (i < 7; nibble 7 is not scaled).
///
/// Denormal = true: a nibble masked in place (bits < 2^20) is used as the bits of a float without
/// conversion: the denormal q·16^i·2^-149. Multiplied by x·2^shift (p.x_denormal; shift chosen so
/// that max|x|·2^shift is in [2^64, 2^65)) it is the exact, normal product x·q·16^i·2^(shift−149) for
/// every |x| ≥ max|x|·2^-41; smaller x give denormal products off by at most max|x|·2^-65. One AND
/// and one FMA per 8 weights instead of AND, CVT, FMA. Nibbles 5..7 come from one shift by 20.
template <bool Denormal>
AWQ_TARGET_AVX2 inline void avx2_rows_m1(const Problem& p, index_t k0, index_t k1, index_t w0, float* ga) {
  const __m256i m0 = _mm256_set1_epi32(0xF), m1 = _mm256_set1_epi32(0xF0), m2 = _mm256_set1_epi32(0xF00),
                m3 = _mm256_set1_epi32(0xF000), m4 = _mm256_set1_epi32(0xF0000), m5 = _mm256_set1_epi32(0xF00000),
                m6 = _mm256_set1_epi32(0xF000000);
  const std::int32_t* qcol = p.qw + w0;
  const float* xp = Denormal ? p.x_denormal : p.x;
  __m256 a[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) a[i] = _mm256_load_ps(ga + 8 * i);
  for (index_t k = k0; k < k1; ++k) {
    const std::int32_t* row = qcol + k * p.ldq;
    // A later block of this row (another cache line) is wanted a few hundred cycles from now.
    _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchWords), _MM_HINT_T0);
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
    const __m256 xb = _mm256_broadcast_ss(xp + k);
    if constexpr (Denormal) {
      const __m256i hi = _mm256_srli_epi32(v, 20);
      const __m256i d[8] = {_mm256_and_si256(v, m0),  _mm256_and_si256(v, m1),  _mm256_and_si256(v, m2),
                            _mm256_and_si256(v, m3),  _mm256_and_si256(v, m4),  _mm256_and_si256(hi, m0),
                            _mm256_and_si256(hi, m1), _mm256_and_si256(hi, m2)};
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) a[i] = _mm256_fmadd_ps(_mm256_castsi256_ps(d[i]), xb, a[i]);
    } else {
      // Nibble i masked in place is q·16^i, exact in float; the 16^-i goes into the group finish.
      const __m256i d[8] = {_mm256_and_si256(v, m0), _mm256_and_si256(v, m1), _mm256_and_si256(v, m2),
                            _mm256_and_si256(v, m3), _mm256_and_si256(v, m4), _mm256_and_si256(v, m5),
                            _mm256_and_si256(v, m6), _mm256_srli_epi32(v, 28)};  // the sign bit: shift
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) a[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[i]), xb, a[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) _mm256_store_ps(ga + 8 * i, a[i]);
}

/// M = 1: yp [64] += s · (ga − z · Σ x) for group g of the block at word w0; clears ga. `denormal`:
/// ga was summed by avx2_rows_m1<true>.
AWQ_TARGET_AVX2 inline void avx2_finish_group_m1(const Problem& p, index_t g, index_t w0, float* ga, float* yp, bool denormal) {
  alignas(32) float s[64], z[64];
  group_params_perm(p, g, w0, s, z);
  const __m256 xs = _mm256_set1_ps(p.xsum[g]);
  for (int i = 0; i < 8; ++i) {
    // Exact powers of two: 16^-i for nibbles masked in place (nibble 7 is shifted down), or for the
    // denormal decode 2^(149 − shift) · 16^-i (nibbles 0..4 in place), 16^-(i-5) (5..7 after >> 20).
    const float unscale_f =
        denormal ? std::ldexp(1.0f, p.denormal_unscale_exp - 4 * (i < 5 ? i : i - 5)) : (i < 7 ? std::ldexp(1.0f, -4 * i) : 1.0f);
    const __m256 unscale = _mm256_set1_ps(unscale_f);
    const __m256 t = _mm256_fnmadd_ps(_mm256_load_ps(z + 8 * i), xs, _mm256_mul_ps(_mm256_load_ps(ga + 8 * i), unscale));
    _mm256_store_ps(yp + 8 * i, _mm256_fmadd_ps(_mm256_load_ps(s + 8 * i), t, _mm256_load_ps(yp + 8 * i)));
    _mm256_store_ps(ga + 8 * i, _mm256_setzero_ps());
  }
}

/// MT rows of x (at x0, stride ldx) times the panel [rows, 64] (slot order) into acc [MT, 64].
template <int MT>
AWQ_TARGET_AVX2 inline void avx2_micro(const float* x0, index_t ldx, const float* panel, index_t rows, float* acc) {
  for (int c = 0; c < 64; c += 16) {
    __m256 r0[MT], r1[MT];
    for (int m = 0; m < MT; ++m) {
      r0[m] = _mm256_load_ps(acc + m * 64 + c);
      r1[m] = _mm256_load_ps(acc + m * 64 + c + 8);
    }
    for (index_t k = 0; k < rows; ++k) {
      const __m256 w0 = _mm256_load_ps(panel + k * 64 + c);
      const __m256 w1 = _mm256_load_ps(panel + k * 64 + c + 8);
      for (int m = 0; m < MT; ++m) {
        const __m256 xb = _mm256_broadcast_ss(x0 + m * ldx + k);
        r0[m] = _mm256_fmadd_ps(w0, xb, r0[m]);
        r1[m] = _mm256_fmadd_ps(w1, xb, r1[m]);
      }
    }
    for (int m = 0; m < MT; ++m) {
      _mm256_store_ps(acc + m * 64 + c, r0[m]);
      _mm256_store_ps(acc + m * 64 + c + 8, r1[m]);
    }
  }
}

/// M > 1: adds group g of the 64-column block at word w0 for rows [m0, m0 + mt) of x into
/// acc [mt, 64] (slot order); panel is scratch of 32 × 64 floats (32-byte aligned).
AWQ_TARGET_AVX2 inline void avx2_group_mn(const Problem& p, index_t g, index_t w0, index_t m0, index_t mt, float* acc,
                                          float* panel) {
  constexpr index_t kRows = 32;  // panel rows per pass: 32 × 64 floats = 8 KB
  alignas(32) float s[64], z[64];
  group_params_perm(p, g, w0, s, z);
  // Nibble i is decoded in place as q·16^i (exact): z·16^i and s·16^-i keep w = (q − z)·s exact.
  for (int e = 0; e < 56; ++e) {
    z[e] = std::ldexp(z[e], 4 * (e / 8));
    s[e] = std::ldexp(s[e], -4 * (e / 8));
  }
  const std::int32_t* qcol = p.qw + w0;
  const index_t g1 = (g + 1) * p.group;
  for (index_t k0 = g * p.group; k0 < g1; k0 += kRows) {
    const index_t rows = std::min(kRows, g1 - k0);
    for (index_t r = 0; r < rows; ++r) {
      const std::int32_t* row = qcol + (k0 + r) * p.ldq;
      _mm_prefetch(reinterpret_cast<const char*>(row + 16), _MM_HINT_T0);
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
      for (int i = 0; i < 8; ++i) {
        const __m256i bits = i < 7 ? _mm256_and_si256(v, _mm256_set1_epi32(0xF << (4 * i))) : _mm256_srli_epi32(v, 28);
        const __m256 q = _mm256_cvtepi32_ps(bits);
        const __m256 w = _mm256_mul_ps(_mm256_sub_ps(q, _mm256_load_ps(z + 8 * i)), _mm256_load_ps(s + 8 * i));
        _mm256_store_ps(panel + r * 64 + 8 * i, w);
      }
    }
    const float* x0 = p.x + m0 * p.ldx + k0;
    index_t m = 0;
    for (; m + 4 <= mt; m += 4) avx2_micro<4>(x0 + m * p.ldx, p.ldx, panel, rows, acc + m * 64);
    switch (mt - m) {
      case 3: avx2_micro<3>(x0 + m * p.ldx, p.ldx, panel, rows, acc + m * 64); break;
      case 2: avx2_micro<2>(x0 + m * p.ldx, p.ldx, panel, rows, acc + m * 64); break;
      case 1: avx2_micro<1>(x0 + m * p.ldx, p.ldx, panel, rows, acc + m * 64); break;
      default: break;
    }
  }
}

/// Blocks [b0, b1) of 64 columns. Groups are the outer loop and blocks the inner one, so a
/// thread sweeps the weight rows once, front to back, touching each page once per group
/// (a block-outer order walks all K rows, one page each, per 64 columns: TLB misses dominate).
inline void avx2_blocks(const Problem& p, index_t b0, index_t b1) {
  constexpr index_t kMTile = 16;  // rows of x per sweep when M > 1
  const index_t nb = b1 - b0, mt_max = std::min(p.m, kMTile);
  // 32-byte aligned scratch: accumulators [nb][mt][64] in slot order, then either the group
  // sums [nb][64] (M = 1) or one panel [32][64].
  std::vector<float> buf(static_cast<std::size_t>(nb * mt_max * 64 + std::max<index_t>(nb * 64, 32 * 64) + 8));
  const auto base = reinterpret_cast<std::uintptr_t>(buf.data());
  float* acc = buf.data() + ((32 - base % 32) % 32) / sizeof(float);
  float* scratch = acc + nb * mt_max * 64;
  // The denormal decode needs denormal inputs honoured: not with DAZ set in this thread's MXCSR
  // (e.g. a -ffast-math program), where it would read every nibble as 0.
  const bool denormal = p.x_denormal && (_mm_getcsr() & 0x40u) == 0;
  for (index_t m0 = 0; m0 < p.m; m0 += kMTile) {
    const index_t mt = std::min(kMTile, p.m - m0);
    std::fill(acc, acc + nb * mt * 64, 0.0f);
    if (p.m == 1) std::fill(scratch, scratch + nb * 64, 0.0f);
    for (index_t g = 0; g * p.group < p.k; ++g) {
      if (p.m == 1) {
        // Row chunks small enough that their pages stay in the first-level TLB.
        const index_t g1 = (g + 1) * p.group;
        for (index_t k0 = g * p.group; k0 < g1; k0 += kRowChunk)
          for (index_t b = 0; b < nb; ++b) {
            if (denormal)
              avx2_rows_m1<true>(p, k0, std::min<index_t>(k0 + kRowChunk, g1), 8 * (b0 + b), scratch + b * 64);
            else
              avx2_rows_m1<false>(p, k0, std::min<index_t>(k0 + kRowChunk, g1), 8 * (b0 + b), scratch + b * 64);
          }
        for (index_t b = 0; b < nb; ++b) avx2_finish_group_m1(p, g, 8 * (b0 + b), scratch + b * 64, acc + b * 64, denormal);
      } else {
        for (index_t b = 0; b < nb; ++b) avx2_group_mn(p, g, 8 * (b0 + b), m0, mt, acc + b * mt * 64, scratch);
      }
    }
    for (index_t b = 0; b < nb; ++b)
      for (index_t m = 0; m < mt; ++m) {
        const index_t col0 = 64 * (b0 + b);
        float* y = p.y + (m0 + m) * p.ldy + col0;
        const float* a = acc + (b * mt + m) * 64;
        for (int e = 0; e < 64; ++e) {
          const int c = slot_col(e);
          y[c] = a[e] + (p.bias ? p.bias[col0 + c] : 0.0f);
        }
      }
  }
}

#endif  // AWQ_W4A16_HAVE_AVX2

template <class TX, class TY>
void gemm(const MatrixView<const TX>& x, const AwqGemmWeights& w, const MatrixView<TY>& y, const TY* bias,
          const W4A16Options& opt) {
  static_assert(detail::w4cpu::is_w4a16_activation<TX>, "awq::w4a16_gemm: x must hold float, Eigen::half or Eigen::bfloat16");
  static_assert(detail::w4cpu::is_w4a16_activation<std::remove_const_t<TY>> && !std::is_const_v<TY>,
                "awq::w4a16_gemm: y must be a mutable float, Eigen::half or Eigen::bfloat16 view");
  constexpr const char* fn = "awq::w4a16_gemm";
  const index_t K = w.k(), N = w.n(), M = x.rows();
  detail::require(K > 0 && N > 0, fn, ": qweight is empty (", w.qweight.rows(), " x ", w.qweight.cols(), ")");
  detail::require(x.cols() == K, fn, ": x has ", x.cols(), " columns but qweight has K = ", K, " rows");
  detail::require_shape(y, M, N, fn, "y");
  detail::require(w.scales.rows() > 0 && K % w.scales.rows() == 0, fn, ": scales has ", w.scales.rows(),
                  " rows, which does not divide K = ", K);
  const index_t G = K / w.scales.rows();
  detail::require(AwqGemmWeights::group_supported(G, K), fn, ": group size ", G,
                  " (K ", K, " / scales rows ", w.scales.rows(), ") is not 32, 64, 128, 256 or K");
  detail::require_shape(w.scales, K / G, N, fn, "scales");
  const bool symmetric = w.qzeros.size() == 0;
  if (!symmetric) detail::require_shape(w.qzeros, K / G, N / kAwqPackFactor, fn, "qzeros");
  auto contiguous = [&](const auto& v, const char* what) {
    detail::require(v.size() == 0 || v.row_contiguous(), fn, ": ", what, " must have contiguous rows (col_stride ",
                    v.col_stride(), ")");
  };
  contiguous(x, "x");
  contiguous(y, "y");
  contiguous(w.qweight, "qweight");
  contiguous(w.qzeros, "qzeros");
  contiguous(w.scales, "scales");
  if (M == 0) return;

  const bool use_avx2 = detail::resolve_isa(opt.isa, false, fn,
                                            "runs on the blocked layout only (convert the weights with awq::block_w4a16)") == CpuIsa::avx2;

  FloatIo<TX, TY> io(x, y, bias);
  const float* xf = io.x;
  const index_t ldx = io.ldx;
  float* yf = io.y;
  const index_t ldy = io.ldy;
  const float* bf = io.bias;
  std::vector<float> xsum(M == 1 ? static_cast<std::size_t>(K / G) : 0);
  if (M == 1)
    for (index_t g = 0; g < K / G; ++g) {
      float s = 0.0f;
      for (index_t k = g * G; k < (g + 1) * G; ++k) s += xf[k];
      xsum[static_cast<std::size_t>(g)] = s;
    }

  // The denormal decode (M = 1, AVX2): x scaled by the power of two that puts max|x| in
  // [2^64, 2^65); off for max|x| ≥ 2^40 (and Inf), where the unscaling would leave float range.
  std::vector<float> xden;
  int den_exp = 0;
  if (use_avx2 && M == 1 && opt.m1_decode != M1Decode::convert && (opt.m1_decode == M1Decode::denormal || cpu_is_amd())) {
    float amax = 0.0f;
    for (index_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(xf[k]));  // NaN gives NaN on either path
    if (amax < std::ldexp(1.0f, 40)) {
      int e = 0;
      std::frexp(amax, &e);  // amax = f · 2^e, f in [0.5, 1); 0 for amax = 0
      const int shift = 65 - e;
      xden.resize(static_cast<std::size_t>(K));
      for (index_t k = 0; k < K; ++k) xden[static_cast<std::size_t>(k)] = std::ldexp(xf[k], shift);
      den_exp = 149 - shift;
    }
  }

  const detail::w4cpu::Problem p{xf,
                                 ldx,
                                 M,
                                 K,
                                 N,
                                 G,
                                 w.qweight.data(),
                                 w.qweight.row_stride(),
                                 symmetric ? nullptr : w.qzeros.data(),
                                 w.qzeros.row_stride(),
                                 w.scales.data(),
                                 w.scales.row_stride(),
                                 bf,
                                 yf,
                                 ldy,
                                 xsum.data(),
                                 xden.empty() ? nullptr : xden.data(),
                                 den_exp};
  const index_t words = N / kAwqPackFactor;
#if AWQ_W4A16_HAVE_AVX2
  if (use_avx2) {
    const index_t blocks = words / 8;
    backend::cpu::parallel_for(blocks, [&](index_t b0, index_t b1) { detail::w4cpu::avx2_blocks(p, b0, b1); });
    if (words % 8) detail::w4cpu::portable_words(p, blocks * 8, words);
  } else
#endif
  {
    (void)use_avx2;
    backend::cpu::parallel_for(words, [&](index_t w0, index_t w1) { detail::w4cpu::portable_words(p, w0, w1); }, 8);
  }
  io.write_back(y);
}

}  // namespace w4cpu
}  // namespace detail

/// \brief y [M, N] = x [M, K] · dequant(W)ᵀ (+ bias [N]) for 4-bit weights in the AutoAWQ GEMM
///        layout, with the group size G = K / scales.rows() read from the views.
///
/// x and y hold float, Eigen::half or Eigen::bfloat16 (row-major, contiguous rows); products and
/// sums are fp32 whatever the storage. `bias` may be null. Runs on all cores
/// (backend::cpu::threads() limits them). Every element of y is written.
///
/// \throws awq::Error when a shape does not match, K is not a multiple of the group size, the
///         group size is not 32, 64, 128, 256 or K (per channel), or a view's rows are not
///         contiguous.
/// x may be a read-only or a mutable view (`as_view(x)` of a non-const Eigen matrix).
template <class TX, class TY>
void w4a16_gemm(const MatrixView<TX>& x, const AwqGemmWeights& w, const MatrixView<TY>& y,
                const TY* bias = nullptr, const W4A16Options& opt = {}) {
  detail::w4cpu::gemm(MatrixView<const std::remove_const_t<TX>>(x), w, y, bias, opt);
}

/// \brief As above with the configuration fixed at compile time: Cfg::bits must be 4 and the
///        weights' group size must equal Cfg::group_size (K for per-channel); a symmetric Cfg
///        takes no qzeros.
template <class Cfg, class TX, class TY>
void w4a16_gemm(const MatrixView<TX>& x, const AwqGemmWeights& w, const MatrixView<TY>& y,
                const TY* bias = nullptr, const W4A16Options& opt = {}) {
  static_assert(Cfg::bits == 4, "awq::w4a16_gemm: the AutoAWQ GEMM layout holds 4-bit codes only");
  constexpr const char* fn = "awq::w4a16_gemm";
  detail::require(w.scales.rows() > 0, fn, ": scales is empty");
  const index_t g = w.k() / w.scales.rows();
  detail::require(g == Cfg::group_for(w.k()) && w.k() % w.scales.rows() == 0, fn, ": the weights have group size ", g,
                  " but the config is ", QuantSpec{Cfg::bits, Cfg::group_size, Cfg::zero_point}.name());
  detail::require((w.qzeros.size() != 0) == Cfg::zero_point, fn, ": config ",
                  QuantSpec{Cfg::bits, Cfg::group_size, Cfg::zero_point}.name(),
                  Cfg::zero_point ? " needs qzeros" : " is symmetric and takes no qzeros");
  detail::w4cpu::gemm(MatrixView<const std::remove_const_t<TX>>(x), w, y, bias, opt);
}

}  // namespace awq
