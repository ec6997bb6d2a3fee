/// \file
/// \brief Compile-time quantization configs (QuantConfig), their run-time mirror (QuantSpec)
///        and the one dispatch function that maps the latter onto the former.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "awq/error.hpp"
#include "awq/macros.hpp"

namespace awq {

/// Signed index type used for every extent and stride.
using index_t = std::ptrdiff_t;

/// Group size meaning "one group per output row" (the reference's `q_group_size = -1`).
inline constexpr int kPerChannel = -1;

/// \brief The code format of a quantization scheme: its width and zero-point mode, the group
///        size aside. The per-value math (group_params, quantize_value, fake_quantize_value)
///        depends on nothing else, so code that takes the group length at run time is written
///        over a CodeFormat (see dispatch_format). Every QuantConfig is a CodeFormat.
/// \tparam Bits       code width, 2 to 8.
/// \tparam ZeroPoint  true: asymmetric codes in [0, 2^Bits - 1] with an integer zero point;
///                    false: symmetric codes in [-2^(Bits-1), 2^(Bits-1) - 1].
///
/// Codes are always stored unsigned: a symmetric code q is stored as q + 2^(Bits-1), and its
/// zero is reported as 2^(Bits-1), so `w_hat = (code - zero) * scale` holds for both kinds.
template <int Bits, bool ZeroPoint>
struct CodeFormat {
  static_assert(Bits >= 2 && Bits <= 8, "awq::QuantConfig, awq::CodeFormat: Bits must be between 2 and 8");
  static constexpr int bits = Bits;              ///< code width
  static constexpr bool zero_point = ZeroPoint;  ///< asymmetric with zero point?
  /// Largest integer of the reference formula (2^b - 1 asymmetric, 2^(b-1) - 1 symmetric).
  static constexpr int max_int = ZeroPoint ? (1 << Bits) - 1 : (1 << (Bits - 1)) - 1;
  /// Smallest integer of the reference formula (0 asymmetric, -2^(b-1) symmetric).
  static constexpr int min_int = ZeroPoint ? 0 : -(1 << (Bits - 1));
  /// Offset added to a symmetric integer to store it as an unsigned code.
  static constexpr int code_offset = ZeroPoint ? 0 : (1 << (Bits - 1));
  /// Largest stored code.
  static constexpr int max_code = (1 << Bits) - 1;
};

/// \brief A quantization scheme fixed at compile time: a CodeFormat and a group size.
/// \tparam Bits       code width, 2 to 8.
/// \tparam GroupSize  32, 64, 128, 256 or awq::kPerChannel; groups run along the input dimension.
/// \tparam ZeroPoint  as CodeFormat's.
/// \sa QuantSpec, dispatch
template <int Bits, int GroupSize, bool ZeroPoint>
struct QuantConfig : CodeFormat<Bits, ZeroPoint> {
  static_assert(GroupSize == kPerChannel || GroupSize == 32 || GroupSize == 64 || GroupSize == 128 ||
                    GroupSize == 256,
                "awq::QuantConfig: GroupSize must be 32, 64, 128, 256 or awq::kPerChannel");
  static constexpr int group_size = GroupSize;   ///< elements per group, or kPerChannel
  static constexpr bool per_channel = GroupSize == kPerChannel;  ///< one group per row?
  /// Group length for a row of `in_features` elements.
  static constexpr index_t group_for(index_t in_features) noexcept {
    return per_channel ? in_features : static_cast<index_t>(GroupSize);
  }
};

/// The CodeFormat of a QuantConfig (or of a CodeFormat): code written over formats is
/// instantiated once for the configs that differ only in their group size.
template <class Cfg>
using format_of = CodeFormat<Cfg::bits, Cfg::zero_point>;

/// \brief Run-time mirror of QuantConfig; validate() or dispatch() rejects what is not built in.
struct QuantSpec {
  int bits = 4;             ///< 2..8
  int group_size = 128;     ///< 32, 64, 128, 256 or kPerChannel (-1)
  bool zero_point = true;   ///< asymmetric with zero point

  /// Throws awq::Error naming the field when the spec is outside the instantiated set.
  void validate() const {
    detail::require(bits >= 2 && bits <= 8, "awq::QuantSpec: bits ", bits, " is out of range [2, 8]");
    detail::require(group_size == kPerChannel || group_size == 32 || group_size == 64 ||
                        group_size == 128 || group_size == 256,
                    "awq::QuantSpec: group_size ", group_size,
                    " is not supported (32, 64, 128, 256 or -1 for per-channel)");
  }
  /// Group length for `in_features`; throws when it does not divide `in_features`, naming `fn`
  /// (the caller).
  index_t group_for(index_t in_features, const char* fn = "awq::QuantSpec::group_for") const {
    validate();
    const index_t g = group_size == kPerChannel ? in_features : group_size;
    detail::require(in_features > 0 && in_features % g == 0, fn, ": group_size ", group_size,
                    " does not divide in_features ", in_features);
    return g;
  }
  /// A short human-readable name such as `w4-g128-asym`.
  std::string name() const {
    return detail::concat("w", bits, "-g", group_size == kPerChannel ? std::string("ch") : std::to_string(group_size),
                          zero_point ? "-asym" : "-sym");
  }
  /// Field-wise equality.
  friend bool operator==(const QuantSpec& a, const QuantSpec& b) {
    return a.bits == b.bits && a.group_size == b.group_size && a.zero_point == b.zero_point;
  }
};

namespace detail {

template <class F>
decltype(auto) dispatch_bits(int bits, F&& f) {
  switch (bits) {
    case 2: return std::forward<F>(f)(std::integral_constant<int, 2>{});
    case 3: return std::forward<F>(f)(std::integral_constant<int, 3>{});
    case 4: return std::forward<F>(f)(std::integral_constant<int, 4>{});
    case 5: return std::forward<F>(f)(std::integral_constant<int, 5>{});
    case 6: return std::forward<F>(f)(std::integral_constant<int, 6>{});
    case 7: return std::forward<F>(f)(std::integral_constant<int, 7>{});
    default: return std::forward<F>(f)(std::integral_constant<int, 8>{});
  }
}

template <int Bits, int Group, class F>
decltype(auto) dispatch_zp(bool zp, F&& f) {
  if (zp) return std::forward<F>(f)(QuantConfig<Bits, Group, true>{});
  return std::forward<F>(f)(QuantConfig<Bits, Group, false>{});
}

template <int Bits, class F>
decltype(auto) dispatch_group(const QuantSpec& s, F&& f) {
  switch (s.group_size) {
    case 32: return dispatch_zp<Bits, 32>(s.zero_point, std::forward<F>(f));
    case 64: return dispatch_zp<Bits, 64>(s.zero_point, std::forward<F>(f));
    case 128: return dispatch_zp<Bits, 128>(s.zero_point, std::forward<F>(f));
    case 256: return dispatch_zp<Bits, 256>(s.zero_point, std::forward<F>(f));
    default: return dispatch_zp<Bits, kPerChannel>(s.zero_point, std::forward<F>(f));
  }
}

}  // namespace detail

/// \brief Calls `f(QuantConfig<...>{})` for the config that `spec` names.
///
/// Every instantiation must return the same type. Throws awq::Error for a spec outside the
/// built-in set (bits 2..8, group 32/64/128/256/per-channel, either zero-point mode).
template <class F>
decltype(auto) dispatch(const QuantSpec& spec, F&& f) {
  spec.validate();
  return detail::dispatch_bits(spec.bits, [&](auto b) -> decltype(auto) {
    return detail::dispatch_group<decltype(b)::value>(spec, std::forward<F>(f));
  });
}

/// \brief Calls `f(CodeFormat<...>{})` for the width and zero-point mode that `spec` names, after
///        validating all of `spec` as dispatch() does. For code that takes the group length at
///        run time: it is instantiated for the 14 formats, not for the 70 configs.
template <class F>
decltype(auto) dispatch_format(const QuantSpec& spec, F&& f) {
  spec.validate();
  return detail::dispatch_bits(spec.bits, [&](auto b) -> decltype(auto) {
    constexpr int bits = decltype(b)::value;
    if (spec.zero_point) return std::forward<F>(f)(CodeFormat<bits, true>{});
    return std::forward<F>(f)(CodeFormat<bits, false>{});
  });
}

/// The QuantSpec that mirrors a QuantConfig.
template <class Cfg>
constexpr QuantSpec spec_of() noexcept {
  return QuantSpec{Cfg::bits, Cfg::group_size, Cfg::zero_point};
}

}  // namespace awq
