/// \file
/// \brief awq::Error, the single exception type of the library, and the checks that raise it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace awq {

/// \brief Thrown for every bad argument, malformed file or failed device call.
///
/// The message names the function, the argument and the offending value, e.g.
/// `awq::pseudo_quantize: group_size 48 does not divide in_features 512`.
class Error : public std::runtime_error {
 public:
  /// Makes an error with the full message `what`.
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {

template <class... Args>
[[nodiscard]] std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

/// Throws awq::Error with the concatenation of `args` when `cond` is false.
template <class... Args>
void require(bool cond, Args&&... args) {
  if (!cond) throw Error(concat(std::forward<Args>(args)...));
}

}  // namespace detail
}  // namespace awq

/// Internal invariant check, compiled out when NDEBUG is defined. Never used for user input.
#ifdef NDEBUG
#define AWQ_ASSERT(cond) ((void)0)
#else
#define AWQ_ASSERT(cond) \
  ((cond) ? (void)0 : throw ::awq::Error(::awq::detail::concat("awq internal error: ", #cond, " at ", __FILE__, ":", __LINE__)))
#endif
