/// \file
/// \brief ActStats: streaming per-input-channel mean |x| over calibration tokens.
///
/// Memory is O(channels): token batches of any size and element type pass through `update`
/// and are not kept. Partial results from several threads or devices combine with `merge`.
#pragma once

#include <cmath>
#include <vector>
#include <type_traits>

#include "awq/error.hpp"
#include "awq/view.hpp"

namespace awq {

/// \brief Accumulates sum |x| per channel in double, and the token count.
class ActStats {
 public:
  ActStats() = default;
  /// An empty accumulator for `channels` input channels.
  explicit ActStats(index_t channels) : sum_(static_cast<std::size_t>(channels), 0.0) {
    detail::require(channels > 0, "awq::ActStats: channels ", channels, " must be positive");
  }

  index_t channels() const noexcept { return static_cast<index_t>(sum_.size()); }  ///< input channels
  long long tokens() const noexcept { return tokens_; }  ///< tokens seen so far

  /// Adds a batch x [tokens, channels] (float, double, Eigen::half, Eigen::bfloat16).
  /// Throws awq::Error on a channel mismatch or a non-finite activation (naming token and channel).
  template <class T>
  void update(const MatrixView<T>& x) {
    // float and double exactly; the 16-bit types through float, the conversion they define
    const auto to_double = [](const auto& v) {
      if constexpr (std::is_floating_point_v<std::remove_cv_t<std::remove_reference_t<decltype(v)>>>)
        return static_cast<double>(v);
      else
        return static_cast<double>(static_cast<float>(v));
    };
    detail::require(x.cols() == channels(), "awq::ActStats::update: x has ", x.cols(), " channels, expected ",
                    channels());
    for (index_t t = 0; t < x.rows(); ++t) {
      for (index_t c = 0; c < x.cols(); ++c) {
        const double v = to_double(x(t, c));
        if (!std::isfinite(v)) {
          throw Error(detail::concat("awq::ActStats::update: non-finite activation ", v, " at token ", tokens_ + t,
                                     ", channel ", c));
        }
        sum_[static_cast<std::size_t>(c)] += std::fabs(v);
      }
    }
    tokens_ += x.rows();
  }

  /// Adds another accumulator's partial sums (same channel count).
  void merge(const ActStats& o) {
    detail::require(o.channels() == channels(), "awq::ActStats::merge: channels ", o.channels(), " != ", channels());
    for (std::size_t c = 0; c < sum_.size(); ++c) sum_[c] += o.sum_[c];
    tokens_ += o.tokens_;
  }

  /// Mean |x| per channel, rounded to S. Throws when no token was seen.
  template <class S = float>
  std::vector<S> mean() const {
    detail::require(tokens_ > 0, "awq::ActStats::mean: no token was accumulated");
    std::vector<S> m(sum_.size());
    for (std::size_t c = 0; c < sum_.size(); ++c) m[c] = static_cast<S>(sum_[c] / static_cast<double>(tokens_));
    return m;
  }

 private:
  std::vector<double> sum_;
  long long tokens_ = 0;
};

}  // namespace awq
