/// \file
/// \brief The final quantization of a linear as it is exported: codes, zeros and fp16 scales,
///        and the weight replaced by its dequantized value, so that what is evaluated afterwards
///        is exactly the exported checkpoint.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/config.hpp"
#include "awq/gptq.hpp"
#include "awq/layout/awq_gemm.hpp"
#include "awq/model/block.hpp"
#include "awq/pack.hpp"
#include "awq/quantizer.hpp"
#include "awq/view.hpp"

namespace awq::model {

/// \brief A quantized linear [out, in]: one code per weight, zeros and fp16 scales per (row, group).
struct QuantizedLinear {
  index_t out = 0;                   ///< out_features
  index_t in = 0;                    ///< in_features
  index_t groups = 0;                ///< in / group size
  int bits = 0;                      ///< code width (the spec's; set by every finalize)
  std::vector<std::uint8_t> codes;   ///< [out, in]
  std::vector<std::uint8_t> zeros;   ///< [out, groups], stored codes
  std::vector<Eigen::half> scales;   ///< [out, groups]
};

/// Quantizes w with the reference's rules, keeps those codes and zeros, rounds the scales to fp16,
/// and replaces w by (q − z)·scale16 in float. The codes are the ones the clip search judged:
/// re-deriving them with the fp16 scale (as AutoAWQ's packer does) moves every clamped weight
/// that sits on a rounding tie (±c at c / scale = (2^b − 1) / 2) to a code the search never saw.
inline QuantizedLinear finalize_linear(const MatrixView<float>& w, const QuantSpec& spec) {
  QuantizedLinear q;
  q.bits = spec.bits;
  q.out = w.rows();
  q.in = w.cols();
  q.groups = q.in / spec.group_for(q.in, "awq::model::finalize_linear");
  const index_t g = q.in / q.groups;
  q.codes.resize(static_cast<std::size_t>(q.out * q.in));
  std::vector<float> s(static_cast<std::size_t>(q.out * q.groups)), z(s.size());
  quantize(spec, w, make_row_major(q.codes.data(), q.out, q.in),
           {{}, make_row_major(s.data(), q.out, q.groups), make_row_major(z.data(), q.out, q.groups)});
  q.scales.resize(s.size());
  q.zeros.resize(s.size());
  for (index_t r = 0; r < q.out; ++r)
    for (index_t j = 0; j < q.groups; ++j) {
      const std::size_t gi = static_cast<std::size_t>(r * q.groups + j);
      q.scales[gi] = Eigen::half(s[gi]);
      q.zeros[gi] = static_cast<std::uint8_t>(z[gi]);
      const float s16 = static_cast<float>(q.scales[gi]);
      for (index_t i = j * g; i < (j + 1) * g; ++i)
        w(r, i) = (static_cast<float>(q.codes[static_cast<std::size_t>(r * q.in + i)]) - z[gi]) * s16;
    }
  return q;
}

/// \throws awq::Error naming linear `name` when one of q's fp16 scales is not finite: its weights,
///         with the activation scales folded in, span more than fp16 holds (65504 · 2^bits). Few
///         calibration tokens make such scales (a channel that happens to be near zero on all of
///         them); a checkpoint with them would compute NaN.
inline void require_finite_scales(const std::string& name, const QuantizedLinear& q) {
  for (std::size_t i = 0; i < q.scales.size(); ++i)
    detail::require(std::isfinite(static_cast<float>(q.scales[i])), "awq::model::finalize: the fp16 scale of '", name, "' at row ",
                    static_cast<index_t>(i) / q.groups, ", group ", static_cast<index_t>(i) % q.groups,
                    " overflows: its weights with the folded activation scales exceed fp16's range (more calibration tokens "
                    "give steadier activation scales)");
}

/// finalize_linear with GPTQ's error feedback (awq/gptq.hpp) through `f`, the factor of the
/// Hessian of w's input; with fixed groups (opt.groups) the scales and zeros are finalize_linear's and only
/// the codes differ. On the host.
inline QuantizedLinear finalize_linear_gptq(const MatrixView<float>& w, const QuantSpec& spec, const GptqFactor& f,
                                            const GptqOptions& opt) {
  QuantizedLinear q;
  q.bits = spec.bits;
  q.out = w.rows();
  q.in = w.cols();
  q.groups = q.in / spec.group_for(q.in, "awq::model::finalize_linear_gptq");
  q.codes.resize(static_cast<std::size_t>(q.out * q.in));
  q.zeros.resize(static_cast<std::size_t>(q.out * q.groups));
  q.scales.resize(q.zeros.size());
  gptq_quantize(spec, w, f, opt, make_row_major(q.codes.data(), q.out, q.in), make_row_major(q.scales.data(), q.out, q.groups),
                make_row_major(q.zeros.data(), q.out, q.groups));
  return q;
}

/// \brief Moves GPTQ's target for w [N, K] a share `beta` of the way from w's output on the
///        quantized model's input X̃ to its output on the full-precision model's input X:
///        w += beta · w · Eᵀ · (H + λI)⁻¹ with E = X̃ᵀ(X − X̃) and (H + λI)⁻¹ = UᵀU (u, GPTQ's factor
///        of X̃'s Hessian). At beta = 1 the new w is the ridge least-squares fit of X wᵀ from X̃
///        (λ pulling towards w), the target GPTQ then rounds on X̃. Three float products on the host's kernels
///        (backend::cpu::linear), a fixed order whatever the thread count.
inline void retarget_linear(const MatrixView<float>& w, const GptqFactor::Matrix& u, const MatrixView<const float>& e, double beta) {
  constexpr const char* fn = "awq::model::retarget_linear";
  const index_t n = w.rows(), k = w.cols();
  detail::require(u.rows() == k && u.cols() == k, fn, ": the factor is ", u.rows(), "x", u.cols(), " for a weight of ", k, " columns");
  detail::require_shape(e, k, k, fn, "e");
  detail::require(std::isfinite(beta) && beta >= 0 && beta <= 1, fn, ": beta ", beta, " is out of range (accepted: 0 <= beta <= 1)");
  if (beta == 0 || n == 0) return;
  std::vector<float> uf(static_cast<std::size_t>(k * k)), ut(uf.size()), r1(static_cast<std::size_t>(n * k)), r2(r1.size());
  for (index_t i = 0; i < k; ++i)
    for (index_t j = 0; j < k; ++j) {
      uf[static_cast<std::size_t>(i * k + j)] = static_cast<float>(u(i, j));
      ut[static_cast<std::size_t>(j * k + i)] = static_cast<float>(u(i, j));
    }
  using Cpu = backend::cpu;
  const auto m = [](std::vector<float>& v, index_t rows, index_t cols) { return make_row_major(v.data(), rows, cols); };
  const auto c = [](std::vector<float>& v, index_t rows, index_t cols) { return make_row_major<const float>(v.data(), rows, cols); };
  Cpu::linear(MatrixView<const float>(w), e, static_cast<const float*>(nullptr), m(r1, n, k));  // w·Eᵀ
  Cpu::linear(c(r1, n, k), c(uf, k, k), static_cast<const float*>(nullptr), m(r2, n, k));     // ·Uᵀ
  Cpu::linear(c(r2, n, k), c(ut, k, k), static_cast<const float*>(nullptr), m(r1, n, k));     // ·U
  const auto b = static_cast<float>(beta);
  Cpu::parallel_for(n, [&](index_t r0, index_t r1e) {
    for (index_t r = r0; r < r1e; ++r)
      for (index_t j = 0; j < k; ++j) w(r, j) += b * r1[static_cast<std::size_t>(r * k + j)];
  });
}

/// \brief A 4-bit QuantizedLinear in the AutoAWQ GEMM layout (owning), e.g. for the W4A16 kernels.
struct AwqGemmPacked {
  index_t in = 0;                       ///< K
  index_t out = 0;                      ///< N
  index_t groups = 0;                   ///< K / group
  std::vector<std::int32_t> qweight;    ///< [K, N/8]
  std::vector<std::int32_t> qzeros;     ///< [K/G, N/8]
  std::vector<Eigen::half> scales;      ///< [K/G, N]
  /// Views of the three.
  AwqGemmWeights view() const {
    return {make_row_major(qweight.data(), in, out / 8), make_row_major(qzeros.data(), groups, out / 8),
            make_row_major(scales.data(), groups, out)};
  }
};

/// Packs a 4-bit linear into the AutoAWQ GEMM layout; awq::Error unless 4-bit with N % 8 == 0.
/// `bits` must be the linear's own (q.bits, where set).
inline AwqGemmPacked pack_awq_gemm(const QuantizedLinear& q, int bits) {
  detail::require(q.bits == 0 || q.bits == bits, "awq::model::pack_awq_gemm: bits ", bits, " for a ", q.bits, "-bit linear");
  detail::require(bits == 4 && q.out % 8 == 0, "awq::model::pack_awq_gemm: ", bits, "-bit weights with ", q.out,
                  " outputs (accepted: 4-bit, outputs a multiple of 8)");
  AwqGemmPacked p;
  p.in = q.in;
  p.out = q.out;
  p.groups = q.groups;
  p.qweight.resize(static_cast<std::size_t>(q.in * q.out / 8));
  p.qzeros.resize(static_cast<std::size_t>(q.groups * q.out / 8));
  p.scales.resize(q.scales.size());
  awq::pack_awq_gemm(make_row_major(q.codes.data(), q.out, q.in), make_row_major(p.qweight.data(), q.in, q.out / 8));
  awq::pack_awq_gemm(make_row_major(q.zeros.data(), q.out, q.groups), make_row_major(p.qzeros.data(), q.groups, q.out / 8));
  transpose_scales(make_row_major(q.scales.data(), q.out, q.groups), make_row_major(p.scales.data(), q.groups, q.out));
  return p;
}

/// \brief finalize_linear where the weight lives: `Finalize<Backend>::run(w, spec)` with `w` in
///        the backend's memory, replaced there by its dequantized value; the codes, zeros and
///        scales come back to the host. With GPTQ's feedback: `Finalize<Backend>::factor(h, damp)`
///        from a Hessian in the backend's memory, then `Finalize<Backend>::gptq(w, spec, factor,
///        opt)`, after `Finalize<Backend>::retarget(w, factor, e, beta)` where the target moves
///        towards the full-precision model (retarget_linear). Declared only: backend::cpu is
///        below, backend::cuda in awq/model/finalize.cuh, so a missing include fails to compile
///        instead of mixing definitions.
template <class Backend>
struct Finalize;

/// \brief On the host: finalize_linear and finalize_linear_gptq themselves.
template <>
struct Finalize<backend::cpu> {
  using Factor = GptqFactor;  ///< the Hessian's factor
  /// finalize_linear(w, spec).
  static QuantizedLinear run(const MatrixView<float>& w, const QuantSpec& spec) { return finalize_linear(w, spec); }
  /// GptqFactor(h, damp).
  static Factor factor(const MatrixView<const float>& h, double damp) { return GptqFactor(h, damp); }
  /// finalize_linear_gptq(w, spec, f, opt).
  static QuantizedLinear gptq(const MatrixView<float>& w, const QuantSpec& spec, const Factor& f, const GptqOptions& opt) {
    return finalize_linear_gptq(w, spec, f, opt);
  }
  /// retarget_linear(w, f.upper(), e, beta).
  static void retarget(const MatrixView<float>& w, const Factor& f, const MatrixView<const float>& e, double beta) {
    retarget_linear(w, f.upper(), e, beta);
  }
};

/// \brief The backend's quantized-weight product for a finalized linear: `KernelLinear<Backend>::
///        make(q, spec, bias)` returns an op, or an empty one where the backend has no kernel for
///        this quantization (then the dequantized weights serve). Declared only: backend::cpu is
///        below, backend::cuda (the W4A16 kernels) in awq/model/finalize.cuh.
template <class Backend>
struct KernelLinear;

/// \brief On the host the evaluation stays on dequantized weights: for the thousands of rows
///        an evaluation multiplies at once, Eigen's fp32 GEMM is faster than the W4A16 kernels,
///        which are written for decoding (a few rows).
template <>
struct KernelLinear<backend::cpu> {
  /// Always empty.
  static LinearOp make(const QuantizedLinear&, const QuantSpec&, const float*) { return {}; }
};

}  // namespace awq::model
