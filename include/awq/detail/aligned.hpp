/// \file
/// \brief `awq::detail::Aligned64`: a minimal allocator of 64-byte aligned storage, for buffers
///        whose streams should start on a cache line (packed weights and operands).
#pragma once

#include <cstddef>
#include <new>

namespace awq {
namespace detail {

/// Allocates on 64-byte boundaries (C++17 aligned new); stateless, so every instance is equal.
template <class T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <class U>
  Aligned64(const Aligned64<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{64}); }
  template <class U>
  bool operator==(const Aligned64<U>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const Aligned64<U>&) const noexcept {
    return false;
  }
};

}  // namespace detail
}  // namespace awq
