/// \file
/// \brief GPTQ's error feedback (Frantar et al., arXiv 2210.17323) on one linear: its codes chosen
///        column by column, each column's rounding error pushed onto the later columns through
///        the inverse Hessian of the layer's output error.
///
/// For a linear W [N, K] with calibration input X [T, K], the output error ||X Wᵀ − X Ŵᵀ||² is the
/// quadratic form of H = XᵀX (any positive multiple of it: the feedback does not change). Dead
/// input channels (diag 0) get H_ii = 1; λ = damp · mean(diag H); U is the upper Cholesky factor
/// of (H + λI)⁻¹ = UᵀU. Each row of W on its own:
/// \code
/// for i in 0..K-1:  ŵ_i = Q(w_i);  e = (w_i − ŵ_i) / U_ii;  w_j −= e · U_ij  for j > i
/// \endcode
/// The updates are applied lazily (within a block of columns at once, beyond it as one product per
/// block). Q uses each group's scale and zero (GptqOptions::groups) fixed beforehand from the
/// weights as given (finalize_linear's, so the exported scales and zeros stay as they were and only
/// codes move), or recomputed from the updated weights at the group's first column (GPTQ's
/// static_groups=False), or recomputed with the range cut to the one the weights as given span.
/// Dequantized values use the fp16 scale, as exported. Host code in float64 (K ≤ 11008 in the
/// models we target); rows run on backend::cpu's threads in fixed chunks, so that the result does
/// not depend on the thread count.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/config.hpp"
#include "awq/error.hpp"
#include "awq/macros.hpp"
#include "awq/quantizer.hpp"
#include "awq/view.hpp"

namespace awq {

/// \brief Options of the error feedback.
struct GptqOptions {
  /// Where each group's scale and zero come from.
  enum class Groups {
    fixed,    ///< the weights as given, before the feedback: only the codes move
    updated,  ///< the updated weights at the group's first column (GPTQ's static_groups=False)
    /// As `updated`, the range cut to the one the weights as given span: the grid follows the
    /// feedback where it narrows a group, never beyond bounds a clip search set (values pushed
    /// past them take the end codes, as with `fixed`).
    updated_within
  };
  double damp = 0.01;             ///< λ = damp · mean(diag H) (GPTQ's percdamp)
  index_t block = 128;            ///< columns per lazy update
  Groups groups = Groups::fixed;  ///< the groups' scales and zeros
  /// \throws awq::Error for a negative or non-finite damp or a block under 1.
  void validate() const {
    detail::require(std::isfinite(damp) && damp >= 0, "awq::GptqOptions: damp ", damp, " must be finite and >= 0");
    detail::require(block >= 1, "awq::GptqOptions: block ", block, " must be at least 1");
  }
};

/// \brief Thrown when H + λI is not positive definite: the input's Gram matrix is singular (or
///        nearly so) at this damping, and a larger damp makes it definite. Callers that can name
///        the damping's source (a command-line option, a linear) catch this one.
class NotPositiveDefinite : public Error {
 public:
  using Error::Error;
};

/// The range [lo, hi] of a group's updated weights cut to [lo0, hi0], that of the weights as given
/// (GptqOptions::Groups::updated_within); where the two do not meet, [lo0, hi0].
AWQ_HOST_DEVICE void gptq_range_within(float& lo, float& hi, float lo0, float hi0) {
  const float a = lo < lo0 ? lo0 : lo, b = hi0 < hi ? hi0 : hi;
  lo = a <= b ? a : lo0;
  hi = a <= b ? b : hi0;
}

/// \brief U, the upper Cholesky factor of (H + λI)⁻¹, from the Hessian H of a linear's input.
class GptqFactor {
 public:
  using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;  ///< U's type

  GptqFactor() = default;
  /// \param h    H [K, K] (symmetrised here: a product on a GPU need not be exactly symmetric)
  /// \param damp λ = damp · mean(diag H), after the dead channels' H_ii = 1
  /// \throws awq::Error when h is not square or empty, holds a non-finite value or a negative
  ///         diagonal value; awq::NotPositiveDefinite when H + λI is not positive definite.
  explicit GptqFactor(const MatrixView<const float>& h, double damp = 0.01) {
    constexpr const char* fn = "awq::GptqFactor";
    detail::require(h.rows() == h.cols() && h.rows() > 0, fn, ": the Hessian is ", h.rows(), "x", h.cols(),
                    " (it must be square and not empty)");
    detail::require(std::isfinite(damp) && damp >= 0, fn, ": damp ", damp, " must be finite and >= 0");
    const index_t k = h.rows();
    // Factored in reversed order: with P the reversal and P·H·P = L·Lᵀ, U = P·L⁻¹·P (one
    // Cholesky and one triangular inverse, instead of GPTQ's inverse and second Cholesky).
    // Written on Eigen/Core's products: Eigen's LLT and triangular solves do not compile under nvcc
    // without warnings.
    Matrix l(k, k);
    for (index_t i = 0; i < k; ++i)
      for (index_t j = 0; j < k; ++j) {
        const double v = h(i, j);
        if (!std::isfinite(v)) throw Error(detail::concat(fn, ": non-finite Hessian value ", v, " at (", i, ", ", j, ")"));
        l(k - 1 - i, k - 1 - j) = 0.5 * (v + static_cast<double>(h(j, i)));
      }
    double mean = 0;
    for (index_t i = 0; i < k; ++i) {
      double& d = l(i, i);
      detail::require(d >= 0, fn, ": diagonal value ", d, " at ", k - 1 - i, " is negative (not a Hessian XᵀX)");
      if (d == 0) d = 1;  // a dead channel: its weight rounds to nearest and passes no error on
      mean += d;
    }
    const double lambda = damp * mean / static_cast<double>(k);
    l.diagonal().array() += lambda;
    // Blocked Cholesky (l's lower triangle becomes L), per panel of kPanel columns: the diagonal
    // block row by row and its inverse, the rows below it times that inverse, the trailing lower
    // triangle by products in row tiles over the CPU threads. Each tile is one thread's fixed
    // product, so the factor does not depend on the thread count.
    const index_t panels = (k + kPanel - 1) / kPanel;
    std::vector<Matrix> dinv(static_cast<std::size_t>(panels));  // the diagonal blocks' inverses
    for (index_t p = 0; p < panels; ++p) {
      const index_t j0 = p * kPanel, jb = std::min(kPanel, k - j0), r0 = j0 + jb, nr = k - r0;
      auto d = l.block(j0, j0, jb, jb);
      for (index_t i = 0; i < jb; ++i) {
        for (index_t j = 0; j < i; ++j) d(i, j) = (d(i, j) - d.row(i).head(j).dot(d.row(j).head(j))) / d(j, j);
        const double v = d(i, i) - d.row(i).head(i).squaredNorm();
        if (!(v > 0 && std::isfinite(v)))
          throw NotPositiveDefinite(detail::concat(fn, ": H + lambda I (damp ", damp, ", lambda = ", lambda,
                                                   ") is not positive definite; a larger damp makes it so"));
        d(i, i) = std::sqrt(v);
      }
      Matrix& di = dinv[static_cast<std::size_t>(p)];
      di = Matrix::Zero(jb, jb);
      for (index_t i = 0; i < jb; ++i) {  // forward substitution: di(i, :i) = −d(i, :i)·di(:i, :i) / d(i, i)
        if (i > 0) di.row(i).head(i).noalias() = -(d.row(i).head(i) * di.topLeftCorner(i, i)) / d(i, i);
        di(i, i) = 1.0 / d(i, i);
      }
      if (nr == 0) break;
      const Matrix a21 = l.block(r0, j0, nr, jb);
      l.block(r0, j0, nr, jb).noalias() = a21 * di.transpose();  // L21 = A21 L11⁻ᵀ
      backend::cpu::parallel_for((nr + kPanel - 1) / kPanel, [&](index_t t0, index_t t1) {
        for (index_t t = t0; t < t1; ++t) {
          const index_t i0 = r0 + t * kPanel, ni = std::min(kPanel, k - i0);
          l.block(i0, r0, ni, i0 + ni - r0).noalias() -= l.block(i0, j0, ni, jb) * l.block(r0, j0, i0 + ni - r0, jb).transpose();
        }
      });
    }
    // L⁻¹ by column panels over the threads: block (i, c) = −L_ii⁻¹ · L[i, c..i) · L⁻¹[c..i, c].
    Matrix li = Matrix::Zero(k, k);
    backend::cpu::parallel_for(panels, [&](index_t c0p, index_t c1p) {
      for (index_t c = c0p; c < c1p; ++c) {
        const index_t c0 = c * kPanel, nc = std::min(kPanel, k - c0);
        li.block(c0, c0, nc, nc) = dinv[static_cast<std::size_t>(c)];
        for (index_t i = c + 1; i < panels; ++i) {
          const index_t i0 = i * kPanel, ni = std::min(kPanel, k - i0);
          const Matrix t = l.block(i0, c0, ni, i0 - c0) * li.block(c0, c0, i0 - c0, nc);
          li.block(i0, c0, ni, nc).noalias() = -dinv[static_cast<std::size_t>(i)] * t;
        }
      }
    });
    u_.resize(k, k);
    for (index_t i = 0; i < k; ++i)
      for (index_t j = 0; j < k; ++j) u_(i, j) = j >= i ? li(k - 1 - i, k - 1 - j) : 0.0;
    for (index_t i = 0; i < k; ++i)
      detail::require(std::isfinite(u_(i, i)) && u_(i, i) > 0, fn, ": the factor's diagonal at ", i, " is ", u_(i, i),
                      " (H + lambda I is too ill-conditioned)");
  }
  /// K.
  index_t size() const { return static_cast<index_t>(u_.rows()); }
  /// U [K, K], upper triangular with a positive diagonal.
  const Matrix& upper() const { return u_; }

 private:
  static constexpr index_t kPanel = 64;  // columns per panel of the blocked factorisation

  Matrix u_;
};

namespace detail {

/// Rows [r0, r0 + nr) of gptq_quantize.
template <class Fmt>
void gptq_rows(const MatrixView<float>& w, index_t r0, index_t nr, index_t g, const GptqFactor::Matrix& u,
               const GptqOptions& opt, const MatrixView<std::uint8_t>& codes, const MatrixView<Eigen::half>& scales,
               const MatrixView<std::uint8_t>& zeros) {
  using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const index_t k = w.cols();
  // A recomputed group must lie within one block, so that all its pending updates are applied.
  const bool fixed = opt.groups == GptqOptions::Groups::fixed;
  const index_t b = fixed ? std::min(opt.block, k) : g * std::max<index_t>(1, opt.block / g);
  Mat W(nr, k), E(nr, b);
  for (index_t r = 0; r < nr; ++r)
    for (index_t i = 0; i < k; ++i) W(r, i) = w(r0 + r, i);
  std::vector<float> s16(static_cast<std::size_t>(nr)), zero(static_cast<std::size_t>(nr));
  const auto set_group = [&](index_t r, index_t j, float lo, float hi) {
    const GroupParams<float> p = group_params<Fmt>(lo, hi);
    // A range beyond fp16's (weights with extreme activation scales folded in) would turn every
    // code of the group into a cast of NaN.
    detail::require(std::isfinite(static_cast<float>(Eigen::half(p.scale))), "awq::gptq_quantize: the fp16 scale of row ", r0 + r,
                    ", group ", j, " overflows: its weights with the folded activation scales exceed fp16's range (range ", lo, " to ",
                    hi, ")");
    scales(r0 + r, j) = Eigen::half(p.scale);
    zeros(r0 + r, j) = static_cast<std::uint8_t>(p.zero);
  };
  const auto group_range = [&](const auto& src, index_t r, index_t j, float& lo, float& hi) {
    lo = hi = static_cast<float>(src(r, j * g));
    for (index_t i = j * g; i < (j + 1) * g; ++i) {
      const float v = static_cast<float>(src(r, i));
      lo = v < lo ? v : lo;
      hi = hi < v ? v : hi;
    }
  };
  if (fixed)
    for (index_t r = 0; r < nr; ++r)
      for (index_t j = 0; j < k / g; ++j) {
        float lo, hi;
        group_range(w, r0 + r, j, lo, hi);
        set_group(r, j, lo, hi);
      }
  for (index_t i1 = 0; i1 < k; i1 += b) {
    const index_t i2 = std::min(i1 + b, k);
    for (index_t i = i1; i < i2; ++i) {
      const index_t j = i / g;
      for (index_t r = 0; r < nr; ++r) {
        if (i % g == 0) {
          if (!fixed) {
            float lo, hi;
            group_range(W, r, j, lo, hi);
            if (opt.groups == GptqOptions::Groups::updated_within) {
              float lo0, hi0;
              group_range(w, r0 + r, j, lo0, hi0);  // w's columns from i on are still the weights as given
              gptq_range_within(lo, hi, lo0, hi0);
            }
            set_group(r, j, lo, hi);
          }
          s16[static_cast<std::size_t>(r)] = static_cast<float>(scales(r0 + r, j));
          zero[static_cast<std::size_t>(r)] = static_cast<float>(zeros(r0 + r, j));
        }
        const float s = s16[static_cast<std::size_t>(r)], z = zero[static_cast<std::size_t>(r)];
        const double q = quantize_value<Fmt>(W(r, i), GroupParams<double>{s, z});
        const float deq = (static_cast<float>(q) - z) * s;
        codes(r0 + r, i) = static_cast<std::uint8_t>(q);
        w(r0 + r, i) = deq;
        E(r, i - i1) = (W(r, i) - static_cast<double>(deq)) / u(i, i);
      }
      if (i + 1 < i2) W.block(0, i + 1, nr, i2 - i - 1).noalias() -= E.col(i - i1) * u.row(i).segment(i + 1, i2 - i - 1);
    }
    if (i2 < k) W.rightCols(k - i2).noalias() -= E.leftCols(i2 - i1) * u.block(i1, i2, i2 - i1, k - i2);
  }
}

}  // namespace detail

/// \brief Quantizes w [N, K] with GPTQ's error feedback (see the file comment).
/// \param spec  the quantizer (groups along the columns; at most 8 bits)
/// \param w     the weights on the host, replaced by their dequantized values (codes − zero) · fp16 scale
/// \param f     the factor of the Hessian of w's input (f.size() == K)
/// \param opt   lazy-batch width and whether group scales are fixed before the feedback
/// \param codes out: [N, K] stored codes
/// \param scales out: [N, K / group] fp16 scales
/// \param zeros out: [N, K / group] stored zeros
/// \throws awq::Error for mismatched sizes, a group size that does not divide K, or a non-finite weight.
inline void gptq_quantize(const QuantSpec& spec, const MatrixView<float>& w, const GptqFactor& f, const GptqOptions& opt,
                          const MatrixView<std::uint8_t>& codes, const MatrixView<Eigen::half>& scales,
                          const MatrixView<std::uint8_t>& zeros) {
  constexpr const char* fn = "awq::gptq_quantize";
  opt.validate();
  const index_t g = detail::checked_group(fn, spec, w);
  const index_t n = w.rows(), k = w.cols();
  detail::require(f.size() == k, fn, ": the factor is for ", f.size(), " columns but the weight has ", k);
  detail::require_shape(codes, n, k, fn, "codes");
  detail::require_shape(scales, n, k / g, fn, "scales");
  detail::require_shape(zeros, n, k / g, fn, "zeros");
  for (index_t r = 0; r < n; ++r)
    for (index_t i = 0; i < k; ++i)
      if (!std::isfinite(w(r, i)))
        throw Error(detail::concat(fn, ": non-finite weight ", w(r, i), " at row ", r, ", column ", i, " (group ", i / g, ")"));
  constexpr index_t chunk = 16;  // fixed, so that the products' order does not follow the thread count
  dispatch_format(spec, [&](auto fmt) {
    backend::cpu::parallel_for((n + chunk - 1) / chunk, [&](index_t c0, index_t c1) {
      for (index_t c = c0; c < c1; ++c)
        detail::gptq_rows<decltype(fmt)>(w, c * chunk, std::min(chunk, n - c * chunk), g, f.upper(), opt, codes, scales, zeros);
    });
  });
}

}  // namespace awq
