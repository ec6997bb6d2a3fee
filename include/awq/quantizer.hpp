/// \file
/// \brief Group-wise quantizer: scales and zeros, quantize to codes, dequantize, pseudo-quantize.
///
/// Semantics are those of the reference implementations (llm-awq / AutoAWQ
/// `pseudo_quantize_tensor`), evaluated in the same order in float32 (float64 for double
/// inputs) so that results match them bit for bit:
/// \code
/// asymmetric: scale = max(max(w) - min(w), 1e-5) / (2^b - 1)
///             zero  = clamp(-round(min(w) / scale), 0, 2^b - 1)
///             q     = clamp(round(w / scale) + zero, 0, 2^b - 1);      w_hat = (q - zero) * scale
/// symmetric:  scale = max(max|w|, 1e-5) / (2^(b-1) - 1)
///             q     = clamp(round(w / scale), -2^(b-1), 2^(b-1) - 1);  w_hat = q * scale
/// \endcode
/// `round` is round-half-to-even (torch.round). With a clip bound c for the group, w is first
/// clamped to [-c, c] (the reference clip search's `torch.clamp(w, -max_val, max_val)`).
/// Groups run along the columns (input features) of a weight laid out [out, in].
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "awq/config.hpp"
#include "awq/error.hpp"
#include "awq/macros.hpp"
#include "awq/view.hpp"

namespace awq {

/// Accumulation / computation type for an element type: double for double, float otherwise
/// (float, Eigen::half, Eigen::bfloat16).
template <class T>
using acc_t = std::conditional_t<std::is_same_v<std::remove_cv_t<T>, double>, double, float>;

/// \brief Scale and zero of one group, in the computation type C.
/// `zero` is the integer-valued stored code that represents 0 (2^(b-1) for symmetric configs).
template <class C>
struct GroupParams {
  C scale;  ///< step between adjacent codes
  C zero;   ///< stored code of the value 0
};

namespace detail {

AWQ_HOST_DEVICE float round_even(float x) {
#ifdef __CUDA_ARCH__
  return rintf(x);
#else
  return std::nearbyint(x);
#endif
}
AWQ_HOST_DEVICE double round_even(double x) {
#ifdef __CUDA_ARCH__
  return rint(x);
#else
  return std::nearbyint(x);
#endif
}
template <class C>
AWQ_HOST_DEVICE C clamp(C x, C lo, C hi) {
  return x < lo ? lo : (hi < x ? hi : x);
}

}  // namespace detail

/// \brief Scale and zero of a group whose (clamped) values lie in [lo, hi]. `Cfg` here and in
///        quantize_value and fake_quantize_value is a CodeFormat (every QuantConfig is one).
template <class Cfg, class C>
AWQ_HOST_DEVICE GroupParams<C> group_params(C lo, C hi) {
  if constexpr (Cfg::zero_point) {
    C range = hi - lo;
    range = range < C(1e-5f) ? C(1e-5f) : range;
    const C scale = range / C(Cfg::max_int);
    const C zero = detail::clamp(-detail::round_even(lo / scale), C(Cfg::min_int), C(Cfg::max_int));
    return {scale, zero};
  } else {
    const C alo = lo < C(0) ? -lo : lo;
    const C ahi = hi < C(0) ? -hi : hi;
    C amax = alo < ahi ? ahi : alo;
    amax = amax < C(1e-5f) ? C(1e-5f) : amax;
    return {amax / C(Cfg::max_int), C(Cfg::code_offset)};
  }
}

/// \brief Stored (unsigned) code of value w in a group with parameters p.
template <class Cfg, class C>
AWQ_HOST_DEVICE C quantize_value(C w, GroupParams<C> p) {
  if constexpr (Cfg::zero_point) {
    return detail::clamp(detail::round_even(w / p.scale) + p.zero, C(Cfg::min_int), C(Cfg::max_int));
  } else {
    return detail::clamp(detail::round_even(w / p.scale), C(Cfg::min_int), C(Cfg::max_int)) + C(Cfg::code_offset);
  }
}

/// \brief Value represented by stored code q: (q - zero) * scale.
template <class C>
AWQ_HOST_DEVICE C dequantize_value(C q, GroupParams<C> p) {
  return (q - p.zero) * p.scale;
}

/// \brief Pseudo-quantize one value: dequantize(quantize(w)).
template <class Cfg, class C>
AWQ_HOST_DEVICE C fake_quantize_value(C w, GroupParams<C> p) {
  if constexpr (Cfg::zero_point) {
    return dequantize_value(quantize_value<Cfg>(w, p), p);
  } else {
    // The reference multiplies the signed integer directly; (code - offset) is that integer exactly.
    return detail::clamp(detail::round_even(w / p.scale), C(Cfg::min_int), C(Cfg::max_int)) * p.scale;
  }
}

/// \brief Optional extras of the view-level quantizer functions.
/// Every view is [rows, n_groups]; leave a view empty to skip it.
template <class C>
struct QuantArgs {
  MatrixView<const C> clip;  ///< per-(row, group) bound c: w is clamped to [-c, c] first
  MatrixView<C> scales;      ///< out: per-(row, group) scale
  MatrixView<C> zeros;       ///< out: per-(row, group) zero (stored code of 0)
};

namespace detail {

template <class W>
index_t checked_group(const char* fn, const QuantSpec& spec, const MatrixView<W>& w) {
  const index_t k = w.cols();
  spec.validate();
  const index_t g = spec.group_size == kPerChannel ? k : spec.group_size;
  require(k > 0 && k % g == 0, fn, ": group_size ", spec.group_size, " does not divide in_features ", k);
  return g;
}

template <class C>
void check_group_views(const char* fn, const QuantArgs<C>& a, index_t rows, index_t ng) {
  if (!a.clip.empty()) require_shape(a.clip, rows, ng, fn, "clip");
  if (!a.scales.empty()) require_shape(a.scales, rows, ng, fn, "scales");
  if (!a.zeros.empty()) require_shape(a.zeros, rows, ng, fn, "zeros");
}

/// Group parameters of row r, group j (elements [j*g, (j+1)*g)), with the finite check.
template <class Cfg, class C, class W>
GroupParams<C> row_group_params(const char* fn, const MatrixView<W>& w, index_t r, index_t j, index_t g,
                                const MatrixView<const C>& clip) {
  const bool clipped = !clip.empty();
  const C c = clipped ? clip(r, j) : C(0);
  if (clipped) require(std::isfinite(c) && c >= C(0), fn, ": clip bound at row ", r, ", group ", j, " is ", c);
  C lo = C(0), hi = C(0);
  for (index_t i = 0; i < g; ++i) {
    C x = static_cast<C>(w(r, j * g + i));
    if (!std::isfinite(x)) {
      throw Error(concat(fn, ": non-finite weight ", x, " at row ", r, ", column ", j * g + i, " (group ", j, ")"));
    }
    if (clipped) x = clamp(x, -c, c);
    if (i == 0 || x < lo) lo = x;
    if (i == 0 || hi < x) hi = x;
  }
  return group_params<Cfg>(lo, hi);
}

}  // namespace detail

namespace detail {

// The view-level quantizers over a CodeFormat, the group size from `spec`: shared by the
// compile-time and run-time entry points below.
template <class Fmt, class T, class U>
void pseudo_quantize_groups(const QuantSpec& spec, const MatrixView<T>& w, const MatrixView<U>& out,
                            const QuantArgs<acc_t<T>>& args) {
  using C = acc_t<T>;
  constexpr const char* fn = "awq::pseudo_quantize";
  static_assert(!std::is_const_v<U>, "awq::pseudo_quantize: out must be a mutable view");
  require_shape(out, w.rows(), w.cols(), fn, "out");
  const index_t g = checked_group(fn, spec, w);
  const index_t ng = w.cols() / g;
  check_group_views(fn, args, w.rows(), ng);
  for (index_t r = 0; r < w.rows(); ++r) {
    for (index_t j = 0; j < ng; ++j) {
      const GroupParams<C> p = row_group_params<Fmt, C>(fn, w, r, j, g, args.clip);
      if (!args.scales.empty()) args.scales(r, j) = p.scale;
      if (!args.zeros.empty()) args.zeros(r, j) = Fmt::zero_point ? p.zero : C(0);
      const C c = args.clip.empty() ? C(0) : args.clip(r, j);
      for (index_t i = 0; i < g; ++i) {
        C x = static_cast<C>(w(r, j * g + i));
        if (!args.clip.empty()) x = clamp(x, -c, c);
        out(r, j * g + i) = static_cast<std::remove_cv_t<U>>(fake_quantize_value<Fmt>(x, p));
      }
    }
  }
}

template <class Fmt, class T>
void quantize_groups(const QuantSpec& spec, const MatrixView<T>& w, const MatrixView<std::uint8_t>& codes,
                     const QuantArgs<acc_t<T>>& args) {
  using C = acc_t<T>;
  constexpr const char* fn = "awq::quantize";
  require_shape(codes, w.rows(), w.cols(), fn, "codes");
  const index_t g = checked_group(fn, spec, w);
  const index_t ng = w.cols() / g;
  require(!args.scales.empty() && !args.zeros.empty(), fn, ": scales and zeros outputs are required");
  check_group_views(fn, args, w.rows(), ng);
  for (index_t r = 0; r < w.rows(); ++r) {
    for (index_t j = 0; j < ng; ++j) {
      const GroupParams<C> p = row_group_params<Fmt, C>(fn, w, r, j, g, args.clip);
      args.scales(r, j) = p.scale;
      args.zeros(r, j) = p.zero;
      const C c = args.clip.empty() ? C(0) : args.clip(r, j);
      for (index_t i = 0; i < g; ++i) {
        C x = static_cast<C>(w(r, j * g + i));
        if (!args.clip.empty()) x = clamp(x, -c, c);
        codes(r, j * g + i) = static_cast<std::uint8_t>(quantize_value<Fmt>(x, p));
      }
    }
  }
}

}  // namespace detail

/// \brief Pseudo-quantize a weight [out, in] into `out` (may be the same memory as `w`).
/// \tparam Cfg a QuantConfig.
/// \pre out has w's shape; group_size divides in; weights are finite.
/// Element types: float, double, Eigen::half, Eigen::bfloat16; computation in acc_t<T>.
template <class Cfg, class T, class U>
void pseudo_quantize(const MatrixView<T>& w, const MatrixView<U>& out,
                     const QuantArgs<acc_t<T>>& args = {}) {
  detail::pseudo_quantize_groups<format_of<Cfg>>(spec_of<Cfg>(), w, out, args);
}

/// \brief Quantize a weight [out, in] into stored codes [out, in] plus per-group scales and zeros.
///
/// `args.scales` and `args.zeros` are required here. Zeros are stored codes (2^(b-1) for
/// symmetric configs), so `dequantize` needs no config.
template <class Cfg, class T>
void quantize(const MatrixView<T>& w, const MatrixView<std::uint8_t>& codes, const QuantArgs<acc_t<T>>& args) {
  detail::quantize_groups<format_of<Cfg>>(spec_of<Cfg>(), w, codes, args);
}

/// \brief Dequantize codes [out, in] with scales and zeros [out, in / group] into `out`.
/// The group length is in / scales.cols(). Codes above 2^bits - 1 are rejected, and so are zeros
/// that are not stored codes (integers in [0, 2^bits - 1]). `C`, the type (q − z)·s is computed
/// in, defaults to the scales' acc_t.
template <class C0 = void, class S, class Z, class U>
void dequantize(int bits, const MatrixView<const std::uint8_t>& codes, const MatrixView<S>& scales,
                const MatrixView<Z>& zeros, const MatrixView<U>& out) {
  using C = std::conditional_t<std::is_void_v<C0>, acc_t<std::remove_cv_t<S>>, C0>;
  constexpr const char* fn = "awq::dequantize";
  detail::require(bits >= 2 && bits <= 8, fn, ": bits ", bits, " is out of range [2, 8]");
  detail::require_shape(out, codes.rows(), codes.cols(), fn, "out");
  detail::require(scales.cols() > 0 && codes.cols() % scales.cols() == 0, fn, ": scales has ", scales.cols(),
                  " groups, which does not divide in_features ", codes.cols());
  detail::require_shape(scales, codes.rows(), scales.cols(), fn, "scales");
  detail::require_shape(zeros, codes.rows(), scales.cols(), fn, "zeros");
  const index_t g = codes.cols() / scales.cols();
  const int max_code = (1 << bits) - 1;
  for (index_t r = 0; r < codes.rows(); ++r) {
    for (index_t j = 0; j < scales.cols(); ++j) {
      const GroupParams<C> p{static_cast<C>(scales(r, j)), static_cast<C>(zeros(r, j))};
      const double z = static_cast<double>(p.zero);
      detail::require(z >= 0 && z <= max_code && z == std::floor(z), fn, ": zero ", z, " at row ", r, ", group ", j,
                      " is not a ", bits, "-bit code");
      for (index_t i = 0; i < g; ++i) {
        const int q = codes(r, j * g + i);
        detail::require(q <= max_code, fn, ": code ", q, " at row ", r, ", column ", j * g + i,
                        " does not fit in ", bits, " bits");
        out(r, j * g + i) = static_cast<std::remove_cv_t<U>>(dequantize_value(static_cast<C>(q), p));
      }
    }
  }
}

/// \brief Run-time dispatch of pseudo_quantize onto the built-in configs.
template <class T, class U>
void pseudo_quantize(const QuantSpec& spec, const MatrixView<T>& w, const MatrixView<U>& out,
                     const QuantArgs<acc_t<T>>& args = {}) {
  dispatch_format(spec, [&](auto fmt) { detail::pseudo_quantize_groups<decltype(fmt)>(spec, w, out, args); });
}

/// \brief Run-time dispatch of quantize onto the built-in configs.
template <class T>
void quantize(const QuantSpec& spec, const MatrixView<T>& w, const MatrixView<std::uint8_t>& codes,
              const QuantArgs<acc_t<T>>& args) {
  dispatch_format(spec, [&](auto fmt) { detail::quantize_groups<decltype(fmt)>(spec, w, codes, args); });
}

}  // namespace awq
