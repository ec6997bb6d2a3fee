/// \file
/// \brief Folding searched scales into the model: the scaled linears' input columns are
///        multiplied by s, and s is divided out of the op that produces their input (an
///        RMSNorm / LayerNorm weight and bias, or a previous Linear's output rows and bias) and
///        out of cached calibration inputs. The full-precision output is unchanged.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <type_traits>

#include "awq/error.hpp"
#include "awq/quantizer.hpp"
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

template <class T>
constexpr const char* storage_name() {
  if constexpr (std::is_same_v<T, float>) return "float32";
  else if constexpr (std::is_same_v<T, double>) return "float64";
  else if constexpr (std::is_same_v<T, Eigen::half>) return "float16";
  else if constexpr (std::is_same_v<T, Eigen::bfloat16>) return "bfloat16";
  else return "its element type";
}

/// Stores each value (computed in acc_t<T>) into its slot for every element visited by `each`, or nothing at all: a
/// first pass checks that every result is finite once stored as T (fp16 overflows at 65504),
/// and throws naming the tensor, the position and the value otherwise.
template <class T, class Each>
void fold_all_or_nothing(const char* fn, const char* what, Each&& each) {
  each([&](T& slot, acc_t<T> value, index_t r, index_t c) {
    (void)slot;
    const double stored = static_cast<double>(static_cast<T>(value));
    require(std::isfinite(stored), fn, ": folding the scales makes ", what, " at (", r, ", ", c, ") ", value,
            ", which is not finite as ", storage_name<T>(), "; nothing was changed");
  });
  each([&](T& slot, acc_t<T> value, index_t, index_t) { slot = static_cast<T>(value); });
}
}  // namespace detail

/// Multiplies the input columns of w [out, in] by s [in]. All or nothing: an element that would
/// overflow its storage type raises awq::Error before anything changes.
template <class T, class S>
void scale_linear_inputs(const MatrixView<T>& w, const VectorView<S>& s) {
  constexpr const char* fn = "awq::scale_linear_inputs";
  detail::require_scales(fn, s, w.cols(), "in_features");
  using A = acc_t<T>;
  detail::fold_all_or_nothing<T>(fn, "weight", [&](auto&& f) {
    for (index_t r = 0; r < w.rows(); ++r)
      for (index_t c = 0; c < w.cols(); ++c) f(w(r, c), static_cast<A>(w(r, c)) * static_cast<A>(s[c]), r, c);
  });
}

/// Divides a norm's weight (and bias, when given: LayerNorm) by s, channel by channel; all or
/// nothing as scale_linear_inputs.
template <class T, class S>
void fold_into_norm(const VectorView<T>& weight, const VectorView<T>& bias, const VectorView<S>& s) {
  constexpr const char* fn = "awq::fold_into_norm";
  detail::require_scales(fn, s, weight.size(), "the norm weight");
  detail::require(bias.empty() || bias.size() == weight.size(), fn, ": bias has ", bias.size(),
                  " elements but the norm weight has ", weight.size());
  using A = acc_t<T>;
  detail::fold_all_or_nothing<T>(fn, "the norm weight (row 0) or bias (row 1)", [&](auto&& f) {
    for (index_t i = 0; i < weight.size(); ++i) {
      f(weight[i], static_cast<A>(weight[i]) / static_cast<A>(s[i]), 0, i);
      if (!bias.empty()) f(bias[i], static_cast<A>(bias[i]) / static_cast<A>(s[i]), 1, i);
    }
  });
}

/// Divides the output rows of a previous linear w [out, in] (and its bias [out]) by s [out].
/// When the previous op produces more rows than s has (a fused qkv feeding o_proj), pass the
/// last rows with MatrixView::middle_rows, as the reference does. All or nothing.
template <class T, class S>
void fold_into_linear_output(const MatrixView<T>& w, const VectorView<T>& bias, const VectorView<S>& s) {
  constexpr const char* fn = "awq::fold_into_linear_output";
  detail::require_scales(fn, s, w.rows(), "the previous linear's out_features");
  detail::require(bias.empty() || bias.size() == w.rows(), fn, ": bias has ", bias.size(), " elements but out_features is ",
                  w.rows());
  using A = acc_t<T>;
  detail::fold_all_or_nothing<T>(fn, "the previous linear's weight (bias: column -1)", [&](auto&& f) {
    for (index_t r = 0; r < w.rows(); ++r) {
      const A d = static_cast<A>(s[r]);
      for (index_t c = 0; c < w.cols(); ++c) f(w(r, c), static_cast<A>(w(r, c)) / d, r, c);
      if (!bias.empty()) f(bias[r], static_cast<A>(bias[r]) / d, r, -1);
    }
  });
}

/// Divides cached inputs x [tokens, in] by s [in], so later searches see the folded model;
/// all or nothing.
template <class T, class S>
void scale_activations(const MatrixView<T>& x, const VectorView<S>& s) {
  constexpr const char* fn = "awq::scale_activations";
  detail::require_scales(fn, s, x.cols(), "x's channel count");
  using A = acc_t<T>;
  detail::fold_all_or_nothing<T>(fn, "an activation", [&](auto&& f) {
    for (index_t t = 0; t < x.rows(); ++t)
      for (index_t c = 0; c < x.cols(); ++c) f(x(t, c), static_cast<A>(x(t, c)) / static_cast<A>(s[c]), t, c);
  });
}

}  // namespace awq
