/// \file
/// \brief The clip search's choice rule, shared by the host and device backends.
#pragma once

#include <cmath>

#include "awq/macros.hpp"
#include "awq/view.hpp"

namespace awq {
namespace detail {

/// Index of the first strict minimum of e[0], e[stride], …, e[(n − 1)·stride]: a later candidate
/// wins only with a smaller error, so ties keep the smaller shrink (the reference's `<` against a
/// best that starts at +∞). NaN and +∞ never win; −1 when no entry is finite.
AWQ_HOST_DEVICE int first_strict_min(const double* e, index_t stride, int n) {
  int best = -1;
  double b = HUGE_VAL;
  for (int i = 0; i < n; ++i) {
    const double v = e[static_cast<index_t>(i) * stride];
    if (v < b) {
      b = v;
      best = i;
    }
  }
  return best;
}

}  // namespace detail
}  // namespace awq
