/// \file
/// \brief y = x · Wᵀ on the CPU with W in fp16 and x, y in fp32: the unquantized layers an AWQ
///        checkpoint keeps in fp16 (lm_head, a tied embedding) at half the bytes of fp32.
///
/// Decode reads every weight once per token, so a batch-1 product is bound by the weight bytes:
/// fp16 halves them against fp32 with no change to the values of an fp16 checkpoint. The AVX2
/// path (F16C `vcvtph2ps`, FMA) takes four weight rows at a time, each with two 8-lane fp32
/// accumulators, then the 0–7 last elements of K in scalar fp32; a row's sum does not depend on
/// the rows beside it, on M or on the thread count, so results are deterministic. The portable
/// path sums each row in order in fp32.
#pragma once

#include <Eigen/Core>

#include <algorithm>

#include "awq/backend/cpu.hpp"
#include "awq/error.hpp"
#include "awq/kernels/cpu/features.hpp"
#include "awq/view.hpp"

namespace awq {

namespace detail {
namespace f16w {

/// Rows per step of the kernels, and the least weight elements a thread takes (512 KB of fp16,
/// as the W4A16 kernel's least part): below that a part costs more to hand out than to run.
inline constexpr index_t kRows = 4;
inline constexpr index_t kMinElementsPerPart = index_t{1} << 18;

/// Software prefetch distance along each weight row, in bytes: the rows of a step are adjacent,
/// so 4 KB ahead of each lands in the rows a later step reads. Four interleaved row streams
/// from DRAM are more than the hardware prefetcher keeps ahead of.
inline constexpr index_t kPrefetchBytes = 4096;

/// Portable path: rows [n0, n1) of y, every row of x.
inline void portable_rows(const float* x, index_t ldx, index_t M, const Eigen::half* w, index_t ldw, index_t K, const float* bias,
                          float* y, index_t ldy, index_t n0, index_t n1) {
  for (index_t n = n0; n < n1; ++n)
    for (index_t m = 0; m < M; ++m) {
      const float* xr = x + m * ldx;
      const Eigen::half* wr = w + n * ldw;
      float acc = 0.0f;
      for (index_t k = 0; k < K; ++k) acc += xr[k] * static_cast<float>(wr[k]);
      y[m * ldy + n] = acc + (bias ? bias[n] : 0.0f);
    }
}

#if AWQ_W4A16_HAVE_AVX2

/// Eight fp16 values at p as floats.
AWQ_TARGET_AVX2 inline __m256 half8(const Eigen::half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

/// The dot products of x [K] with the four fp16 rows w[0..3] [K].
AWQ_TARGET_AVX2 inline __m128 avx2_dot4(const Eigen::half* const* w, const float* x, index_t K) {
  __m256 a[kRows], b[kRows];
  for (int r = 0; r < kRows; ++r) a[r] = b[r] = _mm256_setzero_ps();
  index_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w[r] + k) + kPrefetchBytes, _MM_HINT_T0);
      a[r] = _mm256_fmadd_ps(half8(w[r] + k), x0, a[r]);
      b[r] = _mm256_fmadd_ps(half8(w[r] + k + 8), x1, b[r]);
    }
  }
  if (k + 8 <= K) {
    const __m256 x0 = _mm256_loadu_ps(x + k);
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) a[r] = _mm256_fmadd_ps(half8(w[r] + k), x0, a[r]);
    k += 8;
  }
  for (int r = 0; r < kRows; ++r) a[r] = _mm256_add_ps(a[r], b[r]);
  // Lane r of the result: row r's eight lanes, summed pairwise within each row only.
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  if (k < K) {
    alignas(16) float t[kRows];
    _mm_store_ps(t, s);
    for (int r = 0; r < kRows; ++r)
      for (index_t kk = k; kk < K; ++kk) t[r] += x[kk] * static_cast<float>(w[r][kk]);
    s = _mm_load_ps(t);
  }
  return s;
}

/// AVX2 path: rows [n0, n1) of y, every row of x; a last step of fewer than four rows repeats its
/// last row in the unused slots (each slot's sum is independent) and stores only its own.
AWQ_TARGET_AVX2 inline void avx2_rows(const float* x, index_t ldx, index_t M, const Eigen::half* w, index_t ldw, index_t K,
                                      const float* bias, float* y, index_t ldy, index_t n0, index_t n1) {
  alignas(16) float t[kRows];
  for (index_t n = n0; n < n1; n += kRows) {
    const index_t rows = std::min(kRows, n1 - n);
    const Eigen::half* wr[kRows];
    for (index_t r = 0; r < kRows; ++r) wr[r] = w + (n + std::min(r, rows - 1)) * ldw;
    for (index_t m = 0; m < M; ++m) {
      _mm_store_ps(t, avx2_dot4(wr, x + m * ldx, K));
      float* yr = y + m * ldy + n;
      for (index_t r = 0; r < rows; ++r) yr[r] = t[r] + (bias ? bias[n + r] : 0.0f);
    }
  }
}

#endif  // AWQ_W4A16_HAVE_AVX2

}  // namespace f16w
}  // namespace detail

/// \brief y [M, N] = x [M, K] · Wᵀ (+ bias [N]) with W [N, K] in fp16 and x, y, bias in fp32,
///        the rows of W split over backend::cpu::thread_count() threads.
///
/// For decode (M = 1) and small M: every weight is read once per row of x from memory or cache,
/// converted to fp32 and multiplied in fp32 (no fp16 arithmetic). `isa`: `automatic` takes AVX2
/// (with FMA and F16C) where the processor has it, else the portable path; `avx2` and `portable`
/// force one. Every element of y is written. y must not overlap x, W or bias.
/// \throws awq::Error on a shape mismatch, non-contiguous rows, or an `isa` this processor or this
///         kernel lacks (there is no AVX-512 path: `avx512vnni` is refused).
inline void f16_weight_gemm(const MatrixView<const float>& x, const MatrixView<const Eigen::half>& w, const MatrixView<float>& y,
                            const float* bias = nullptr, CpuIsa isa = CpuIsa::automatic) {
  constexpr const char* fn = "awq::f16_weight_gemm";
  const index_t M = x.rows(), K = x.cols(), N = w.rows();
  detail::require(w.cols() == K, fn, ": x has ", K, " columns but W is ", N, " x ", w.cols(), " (W is [N, K])");
  detail::require_shape(y, M, N, fn, "y");
  detail::require(x.size() == 0 || x.row_contiguous(), fn, ": x must have contiguous rows (col_stride ", x.col_stride(), ")");
  detail::require(w.size() == 0 || w.row_contiguous(), fn, ": W must have contiguous rows (col_stride ", w.col_stride(), ")");
  detail::require(y.size() == 0 || y.row_contiguous(), fn, ": y must have contiguous rows (col_stride ", y.col_stride(), ")");
  isa = detail::resolve_isa(isa, false, fn, "was asked for but this kernel has no AVX-512 path (accepted: automatic, avx2, portable)");
  if (M == 0 || N == 0) return;
  const index_t steps = (N + detail::f16w::kRows - 1) / detail::f16w::kRows;
  const index_t min_steps = std::max<index_t>(1, detail::f16w::kMinElementsPerPart / std::max<index_t>(1, detail::f16w::kRows * K));
  backend::cpu::parallel_for(
      steps,
      [&](index_t s0, index_t s1) {
        const index_t n0 = s0 * detail::f16w::kRows, n1 = std::min(N, s1 * detail::f16w::kRows);
#if AWQ_W4A16_HAVE_AVX2
        if (isa == CpuIsa::avx2) {
          detail::f16w::avx2_rows(x.data(), x.row_stride(), M, w.data(), w.row_stride(), K, bias, y.data(), y.row_stride(), n0, n1);
          return;
        }
#endif
        detail::f16w::portable_rows(x.data(), x.row_stride(), M, w.data(), w.row_stride(), K, bias, y.data(), y.row_stride(), n0, n1);
      },
      min_steps);
}

}  // namespace awq
