/// \file
/// \brief Folding searched scales into the model: the scaled linears' input columns are
///        multiplied by s, and s is divided out of the op that produces their input (an
///        RMSNorm / LayerNorm weight and bias, or a previous Linear's output rows and bias) and
///        out of cached calibration inputs. The full-precision output is unchanged.
#pragma once

#include <cmath>

#include "awq/error.hpp"
#include "awq/view.hpp"

namespace awq {

namespace detail {
template <class T>
void require_scales(const char* fn, const VectorView<T>& s, index_t n, const char* what) {
  require(s.size() == n, fn, ": scales has ", s.size(), " elements but ", what, " has ", n);
  for (index_t i = 0; i < s.size(); ++i) {
    const double v = static_cast<double>(s[i]);
    require(std::isfinite(v) && v > 0, fn, ": scale ", v, " at channel ", i, " is not finite and positive");
  }
}
}  // namespace detail

/// Multiplies the input columns of w [out, in] by s [in].
template <class T, class S>
void scale_linear_inputs(const MatrixView<T>& w, const VectorView<S>& s) {
  detail::require_scales("awq::scale_linear_inputs", s, w.cols(), "in_features");
  for (index_t r = 0; r < w.rows(); ++r)
    for (index_t c = 0; c < w.cols(); ++c) w(r, c) = static_cast<T>(w(r, c) * static_cast<T>(s[c]));
}

/// Divides a norm's weight (and bias, when given: LayerNorm) by s, channel by channel.
template <class T, class S>
void fold_into_norm(const VectorView<T>& weight, const VectorView<T>& bias, const VectorView<S>& s) {
  constexpr const char* fn = "awq::fold_into_norm";
  detail::require_scales(fn, s, weight.size(), "the norm weight");
  detail::require(bias.empty() || bias.size() == weight.size(), fn, ": bias has ", bias.size(),
                  " elements but the norm weight has ", weight.size());
  for (index_t i = 0; i < weight.size(); ++i) {
    weight[i] = static_cast<T>(weight[i] / static_cast<T>(s[i]));
    if (!bias.empty()) bias[i] = static_cast<T>(bias[i] / static_cast<T>(s[i]));
  }
}

/// Divides the output rows of a previous linear w [out, in] (and its bias [out]) by s [out].
/// When the previous op produces more rows than s has (a fused qkv feeding o_proj), pass the
/// last rows with MatrixView::middle_rows, as the reference does.
template <class T, class S>
void fold_into_linear_output(const MatrixView<T>& w, const VectorView<T>& bias, const VectorView<S>& s) {
  constexpr const char* fn = "awq::fold_into_linear_output";
  detail::require_scales(fn, s, w.rows(), "the previous linear's out_features");
  detail::require(bias.empty() || bias.size() == w.rows(), fn, ": bias has ", bias.size(), " elements but out_features is ",
                  w.rows());
  for (index_t r = 0; r < w.rows(); ++r) {
    const T d = static_cast<T>(s[r]);
    for (index_t c = 0; c < w.cols(); ++c) w(r, c) = static_cast<T>(w(r, c) / d);
    if (!bias.empty()) bias[r] = static_cast<T>(bias[r] / d);
  }
}

/// Divides cached inputs x [tokens, in] by s [in], so later searches see the folded model.
template <class T, class S>
void scale_activations(const MatrixView<T>& x, const VectorView<S>& s) {
  detail::require_scales("awq::scale_activations", s, x.cols(), "x's channel count");
  for (index_t t = 0; t < x.rows(); ++t)
    for (index_t c = 0; c < x.cols(); ++c) x(t, c) = static_cast<T>(x(t, c) / static_cast<T>(s[c]));
}

}  // namespace awq
