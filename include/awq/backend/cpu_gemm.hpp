/// \file
/// \brief The float product y = x·wᵀ of the CPU backend on x86-64: w packed once into panels,
///        x into row blocks, and a register-blocked AVX-512 (12 × 32) or AVX2 (6 × 16) FMA
///        micro-kernel. Chosen at run time from CPUID; elsewhere (other processors, other
///        compilers, AWQ_NO_SIMD) `PackedWeight::available()` is false and the caller uses Eigen.
///
/// Every output element is one FMA chain over k in order within each K block, the blocks added
/// in order: so both micro-kernels, any thread count and any row split give the same bits.
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "awq/config.hpp"
#include "awq/detail/aligned.hpp"
#include "awq/error.hpp"
#include "awq/kernels/cpu/features.hpp"
#include "awq/view.hpp"

namespace awq {
namespace detail {
namespace gemm {

/// The micro-kernel a product runs.
enum class Path { none, avx2, avx512 };

/// The fastest path this processor and build offer.
inline Path best_path() noexcept {
  if (cpu_has_avx512f()) return Path::avx512;
  return cpu_has_avx2() ? Path::avx2 : Path::none;
}

constexpr index_t kMaxKc = 768;  // a K block: the 12-row A panel stays in L1, the 32-column B panel in L2
constexpr index_t kMc = 240;     // rows per packed A block (a multiple of both kernels' rows)

using Buffer = std::vector<float, Aligned64<float>>;  // the packed operands, on cache lines

#if AWQ_W4A16_HAVE_AVX2
#define AWQ_TARGET_AVX512F __attribute__((target("avx512f,avx2,fma")))

// c[i][j] (+)= Σ_p a[p][i] · b[p][j] over the block's kc steps, one FMA chain per element;
// `ldc` elements between c's rows, `add` false for the first K block. The rows are a pack
// expansion (I...), so every accumulator is named by a constant and stays in a register.
struct Avx512Kernel {
  static constexpr int mr = 12, nr = 32;
  static void run(index_t kc, const float* a, const float* b, float* c, index_t ldc, bool add) {
    rows(std::make_integer_sequence<int, mr>{}, kc, a, b, c, ldc, add);
  }

 private:
  template <int... I>
  AWQ_TARGET_AVX512F static void rows(std::integer_sequence<int, I...>, index_t kc, const float* a, const float* b, float* c, index_t ldc,
                                      bool add) {
    __m512 lo[mr] = {}, hi[mr] = {};
    for (index_t p = 0; p < kc; ++p, a += mr, b += nr) {
      const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
      ((lo[I] = _mm512_fmadd_ps(_mm512_set1_ps(a[I]), b0, lo[I]), hi[I] = _mm512_fmadd_ps(_mm512_set1_ps(a[I]), b1, hi[I])), ...);
    }
    (store(c + I * ldc, lo[I], hi[I], add), ...);
  }
  AWQ_TARGET_AVX512F static void store(float* c, __m512 lo, __m512 hi, bool add) {
    if (add) {
      lo = _mm512_add_ps(_mm512_loadu_ps(c), lo);
      hi = _mm512_add_ps(_mm512_loadu_ps(c + 16), hi);
    }
    _mm512_storeu_ps(c, lo);
    _mm512_storeu_ps(c + 16, hi);
  }
};

struct Avx2Kernel {
  static constexpr int mr = 6, nr = 16;
  static void run(index_t kc, const float* a, const float* b, float* c, index_t ldc, bool add) {
    rows(std::make_integer_sequence<int, mr>{}, kc, a, b, c, ldc, add);
  }

 private:
  template <int... I>
  AWQ_TARGET_AVX2 static void rows(std::integer_sequence<int, I...>, index_t kc, const float* a, const float* b, float* c, index_t ldc,
                                   bool add) {
    __m256 lo[mr] = {}, hi[mr] = {};
    for (index_t p = 0; p < kc; ++p, a += mr, b += nr) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
      ((lo[I] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + I), b0, lo[I]), hi[I] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + I), b1, hi[I])), ...);
    }
    (store(c + I * ldc, lo[I], hi[I], add), ...);
  }
  AWQ_TARGET_AVX2 static void store(float* c, __m256 lo, __m256 hi, bool add) {
    if (add) {
      lo = _mm256_add_ps(_mm256_loadu_ps(c), lo);
      hi = _mm256_add_ps(_mm256_loadu_ps(c + 8), hi);
    }
    _mm256_storeu_ps(c, lo);
    _mm256_storeu_ps(c + 8, hi);
  }
};

// One micro-kernel tile of c (rows × cols of at most mr × nr, ldc between rows): straight into c
// when whole, through a copy when cut by the edge of the output.
template <class Kernel>
void run_tile(index_t kc, const float* a, const float* b, float* c, index_t ldc, index_t rows, index_t cols, bool add) {
  if (rows == Kernel::mr && cols == Kernel::nr) return Kernel::run(kc, a, b, c, ldc, add);
  alignas(64) float tile[Kernel::mr * Kernel::nr];
  Kernel::run(kc, a, b, tile, Kernel::nr, false);
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j) {
      float& o = c[i * ldc + j];
      o = add ? o + tile[i * Kernel::nr + j] : tile[i * Kernel::nr + j];
    }
}
#endif

/// \brief A weight w [N, K] packed for y = x·wᵀ: K in blocks of at most kMaxKc, N in panels of
///        the micro-kernel's width (the last one zero-padded), stored [block][panel][k][column].
///
/// Packing and multiplying are split so that a caller can run either over threads: pack(p0, p1)
/// fills panels [p0, p1), multiply() reads any rows of x against a range of panels.
class PackedWeight {
 public:
  /// True when a micro-kernel runs here; otherwise nothing else may be called.
  static bool available() noexcept { return best_path() != Path::none; }

  /// Sizes the packing of an [n, k] weight for `path` (by default the fastest here).
  PackedWeight(index_t n, index_t k, Path path = best_path()) : path_(path), n_(n), k_(k) {
    constexpr const char* fn = "awq::detail::gemm::PackedWeight";
    require(path != Path::none, fn, ": no SIMD micro-kernel on this processor or build");
    require(path != Path::avx512 || cpu_has_avx512f(), fn, ": the AVX-512 path was asked for but this processor or build lacks it");
    require(path != Path::avx2 || cpu_has_avx2(), fn, ": the AVX2 path was asked for but this processor or build lacks it");
    require(n > 0 && k > 0, fn, ": empty weight ", n, "x", k);
#if AWQ_W4A16_HAVE_AVX2
    mr_ = path_ == Path::avx512 ? Avx512Kernel::mr : Avx2Kernel::mr;
    nr_ = path_ == Path::avx512 ? Avx512Kernel::nr : Avx2Kernel::nr;
#endif
    blocks_ = (k + kMaxKc - 1) / kMaxKc;
    kc_ = (k + blocks_ - 1) / blocks_;
    panels_ = (n + nr_ - 1) / nr_;
    data_.assign(static_cast<std::size_t>(k_ * panels_ * nr_), 0.0f);
  }

  index_t panels() const noexcept { return panels_; }
  index_t panel_width() const noexcept { return nr_; }

  /// Packs panels [p0, p1) of w (w: [n, k], unit column stride).
  void pack(const MatrixView<const float>& w, index_t p0, index_t p1) {
    constexpr const char* fn = "awq::detail::gemm::PackedWeight::pack";
    require_shape(w, n_, k_, fn, "w");
    require(w.col_stride() == 1, fn, ": w must have unit column stride (col_stride ", w.col_stride(), ")");
    require(0 <= p0 && p0 <= p1 && p1 <= panels_, fn, ": panels [", p0, ", ", p1, ") outside [0, ", panels_, ")");
    for (index_t b = 0; b < blocks_; ++b) {
      const index_t k0 = b * kc_, kc = std::min(kc_, k_ - k0);
      for (index_t p = p0; p < p1; ++p) {
        float* dst = panel(b, p);
        const index_t j1 = std::min(nr_, n_ - p * nr_);
        for (index_t j = 0; j < j1; ++j) {
          const float* src = w.data() + (p * nr_ + j) * w.row_stride() + k0;
          for (index_t q = 0; q < kc; ++q) dst[q * nr_ + j] = src[q];
        }
      }
    }
  }

  /// y [T, (p1 − p0)·width, clipped to n] = x [T, k] · (panels [p0, p1) of w)ᵀ, on the calling thread.
  /// x and y have unit column strides; y's column 0 is panel p0's first column.
  void multiply(const MatrixView<const float>& x, const MatrixView<float>& y, index_t p0, index_t p1) const {
    constexpr const char* fn = "awq::detail::gemm::PackedWeight::multiply";
    require(0 <= p0 && p0 < p1 && p1 <= panels_, fn, ": panels [", p0, ", ", p1, ") outside [0, ", panels_, ")");
    require_shape(y, x.rows(), std::min(n_, p1 * nr_) - p0 * nr_, fn, "y");
    require(x.cols() == k_, fn, ": x has ", x.cols(), " columns but the weight ", k_);
    require(x.col_stride() == 1 && y.col_stride() == 1, fn, ": x and y must have unit column strides (", x.col_stride(), ", ",
            y.col_stride(), ")");
#if AWQ_W4A16_HAVE_AVX2
    if (path_ == Path::avx512)
      run<Avx512Kernel>(x, y, p0, p1);
    else
      run<Avx2Kernel>(x, y, p0, p1);
#else
    (void)x, (void)y, (void)p0, (void)p1;
#endif
  }

 private:
  const float* panel(index_t b, index_t p) const { return data_.data() + (b * kc_ * panels_ + p * std::min(kc_, k_ - b * kc_)) * nr_; }
  float* panel(index_t b, index_t p) { return data_.data() + (b * kc_ * panels_ + p * std::min(kc_, k_ - b * kc_)) * nr_; }

  template <class Kernel>
  void run(const MatrixView<const float>& x, const MatrixView<float>& y, index_t p0, index_t p1) const {
    constexpr index_t mr = Kernel::mr, nr = Kernel::nr;
    const index_t n_cols = std::min(n_, p1 * nr) - p0 * nr;
    thread_local Buffer a;  // the packed row block, reused across calls on this thread
    a.resize(static_cast<std::size_t>(kMc * kc_));
    for (index_t r0 = 0; r0 < x.rows(); r0 += kMc) {
      const index_t mc = std::min(kMc, x.rows() - r0);
      for (index_t b = 0; b < blocks_; ++b) {
        const index_t k0 = b * kc_, kc = std::min(kc_, k_ - k0);
        for (index_t i0 = 0; i0 < mc; i0 += mr) {  // [row group][k][mr], rows past the end as zeros
          float* dst = a.data() + i0 * kc;
          for (index_t i = 0; i < mr; ++i) {
            if (i0 + i < mc) {
              const float* src = x.data() + (r0 + i0 + i) * x.row_stride() + k0;
              for (index_t q = 0; q < kc; ++q) dst[q * mr + i] = src[q];
            } else {
              for (index_t q = 0; q < kc; ++q) dst[q * mr + i] = 0.0f;
            }
          }
        }
        for (index_t p = p0; p < p1; ++p) {
          const float* bp = panel(b, p);
          const index_t c0 = (p - p0) * nr, nc = std::min(nr, n_cols - c0);
          for (index_t i0 = 0; i0 < mc; i0 += mr) {
            run_tile<Kernel>(kc, a.data() + i0 * kc, bp, y.data() + (r0 + i0) * y.row_stride() + c0, y.row_stride(),
                             std::min(mr, mc - i0), nc, b > 0);
          }
        }
      }
    }
  }

  Path path_;
  index_t n_, k_, mr_ = 1, nr_ = 1, blocks_ = 1, kc_ = 1, panels_ = 1;
  Buffer data_;
};

#if AWQ_W4A16_HAVE_AVX2
/// out [m, n] = aᵀ·b for a [t, m] and b [t, n] (unit column strides) on `Kernel`: the tokens in
/// the product's K blocks; per block, the block's rows of a packed as row groups of mr features
/// and those of b as panels of nr, then the micro-kernel tiles. With `lower` (a is b: xᵀ·x) only
/// the tiles on or below the diagonal, the lower triangle mirrored at the end. `pfor(n, f)` runs
/// f(i0, i1) over a split of [0, n) on threads.
template <class Kernel, class ParallelFor>
void cross_on(const MatrixView<const float>& a, const MatrixView<const float>& b, const MatrixView<float>& out, bool lower,
              ParallelFor&& pfor) {
  constexpr index_t mr = Kernel::mr, nr = Kernel::nr;
  const index_t t = a.rows(), m = a.cols(), n = b.cols();
  const index_t blocks = (t + kMaxKc - 1) / kMaxKc, kc_max = (t + blocks - 1) / blocks;
  const index_t groups = (m + mr - 1) / mr, panels = (n + nr - 1) / nr;
  Buffer pa(static_cast<std::size_t>(groups * mr * kc_max)), pb(static_cast<std::size_t>(panels * nr * kc_max));
  // The tiles (group g, panel p), all of them or those with p·nr ≤ the group's last row, group by
  // group: tile_start[g] is the first of group g, so that threads take equal runs of tiles rather
  // than of groups.
  std::vector<index_t> tile_start(static_cast<std::size_t>(groups + 1), 0);
  for (index_t g = 0; g < groups; ++g)
    tile_start[static_cast<std::size_t>(g + 1)] =
        tile_start[static_cast<std::size_t>(g)] + (lower ? std::min(panels, (g * mr + mr - 1) / nr + 1) : panels);
  // Copies features [n0·w, n1·w) of x's rows [t0, t0 + kc) as slices n0 .. n1 − 1 of w features:
  // slice i at dst + i·kc·w, [q][w], features past x's as zeros; 8 rows of x at a time stay in cache.
  const auto pack = [](const MatrixView<const float>& x, float* dst, index_t w, index_t n0, index_t n1, index_t t0, index_t kc) {
    for (index_t q0 = 0; q0 < kc; q0 += 8)
      for (index_t i = n0; i < n1; ++i)
        for (index_t q = q0; q < std::min(kc, q0 + 8); ++q) {
          const float* src = x.data() + (t0 + q) * x.row_stride();
          float* d = dst + (i * kc + q) * w;
          const index_t valid = std::min(w, x.cols() - i * w);
          for (index_t j = 0; j < valid; ++j) d[j] = src[i * w + j];
          for (index_t j = valid; j < w; ++j) d[j] = 0.0f;
        }
  };
  for (index_t blk = 0; blk < blocks; ++blk) {
    const index_t t0 = blk * kc_max, kc = std::min(kc_max, t - t0);
    pfor(groups + panels, [&](index_t i0, index_t i1) {
      if (i0 < groups) pack(a, pa.data(), mr, i0, std::min(i1, groups), t0, kc);
      if (i1 > groups) pack(b, pb.data(), nr, std::max(i0, groups) - groups, i1 - groups, t0, kc);
    });
    pfor(tile_start.back(), [&](index_t s0, index_t s1) {
      index_t g = static_cast<index_t>(std::upper_bound(tile_start.begin(), tile_start.end(), s0) - tile_start.begin()) - 1;
      for (index_t s = s0; s < s1; ++s) {
        while (s >= tile_start[static_cast<std::size_t>(g + 1)]) ++g;
        const index_t p = s - tile_start[static_cast<std::size_t>(g)], r0 = g * mr, c0 = p * nr;
        run_tile<Kernel>(kc, pa.data() + g * kc * mr, pb.data() + p * kc * nr, out.data() + r0 * out.row_stride() + c0,
                         out.row_stride(), std::min(mr, m - r0), std::min(nr, n - c0), blk > 0);
      }
    });
  }
  if (lower)
    for (index_t i = 0; i < m; ++i)
      for (index_t j = i + 1; j < m; ++j) out(i, j) = out(j, i);
}
#endif

/// gram and cross on `path`, after their checks: a micro-kernel for the path, non-empty operands
/// of as many rows, unit column strides.
template <class ParallelFor>
void cross_on_path(const char* fn, const MatrixView<const float>& a, const MatrixView<const float>& b, const MatrixView<float>& out,
                   bool lower, ParallelFor&& pfor, Path path) {
  require(path != Path::none && (path != Path::avx512 || cpu_has_avx512f()) && (path != Path::avx2 || cpu_has_avx2()), fn,
          ": no such SIMD micro-kernel on this processor or build");
  require(a.rows() > 0 && a.cols() > 0 && b.cols() > 0, fn, ": an operand is empty (", a.rows(), "x", a.cols(), ", ", b.rows(), "x",
          b.cols(), ")");
  require(b.rows() == a.rows(), fn, ": the operands hold ", a.rows(), " and ", b.rows(), " rows");
  require_shape(out, a.cols(), b.cols(), fn, "out");
  require(a.col_stride() == 1 && b.col_stride() == 1 && out.col_stride() == 1, fn, ": the operands and out must have unit column strides (",
          a.col_stride(), ", ", b.col_stride(), ", ", out.col_stride(), ")");
#if AWQ_W4A16_HAVE_AVX2
  if (path == Path::avx512)
    cross_on<Avx512Kernel>(a, b, out, lower, pfor);
  else
    cross_on<Avx2Kernel>(a, b, out, lower, pfor);
#else
  (void)lower;
  (void)pfor;
#endif
}

/// \brief out [k, k] = xᵀ·x for x [t, k] with unit column stride (GPTQ's Hessian) on `path`: each
///        element below the diagonal one FMA chain per K block of tokens, the blocks added in
///        order (the product's contract, so the bits follow neither the path nor the threads),
///        and the upper triangle its mirror. `pfor(n, f)` runs f(i0, i1) over a split of [0, n).
template <class ParallelFor>
void gram(const MatrixView<const float>& x, const MatrixView<float>& out, ParallelFor&& pfor, Path path = best_path()) {
  cross_on_path("awq::detail::gemm::gram", x, x, out, true, pfor, path);
}

/// \brief out [m, n] = aᵀ·b for a [t, m] and b [t, n] with unit column strides, on `path`, with
///        gram's contract: each element one FMA chain per K block of tokens, the blocks added in
///        order, whatever the path or the threads.
template <class ParallelFor>
void cross(const MatrixView<const float>& a, const MatrixView<const float>& b, const MatrixView<float>& out, ParallelFor&& pfor,
           Path path = best_path()) {
  cross_on_path("awq::detail::gemm::cross", a, b, out, false, pfor, path);
}

}  // namespace gemm
}  // namespace detail
}  // namespace awq
