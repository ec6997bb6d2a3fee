// Every heap block of awq_llama on a 64-byte boundary. Built for the host CPU (AWQ_NATIVE_TOOL),
// Eigen's vectorised reductions over mapped memory (sums, norms, dot products) start with the
// scalars before the first vector-aligned element, so with 32- or 64-byte vectors and malloc's
// 16-byte alignment the order of a sum, and so its rounding, would follow the heap layout: a
// longer --export path or a resumed checkpoint could flip a near-tie of the search. Aligned to the
// widest vector, every buffer starts aligned and results depend only on the inputs. Include in
// exactly one translation unit (the program's replacement of the global allocation functions).
#pragma once

#include <cstdlib>
#include <new>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace awq_cli::detail {
inline void* aligned_block(std::size_t n) {
  constexpr std::size_t a = 64;
  void* p = std::aligned_alloc(a, n == 0 ? a : (n + a - 1) / a * a);
  if (!p) throw std::bad_alloc();
  return p;
}

// The job allocates and frees buffers of tens of MB every block (a block's activations for
// 32,768 tokens, Gram matrices). glibc serves blocks that large by mmap and unmaps them on free,
// so each block faults every page in again, and faulting threads wait on each other. Served from
// the heap and kept there when freed, they are reused instead (bench/RESULTS.md).
inline const bool heap_kept = [] {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
  return true;
}();
}  // namespace awq_cli::detail

void* operator new(std::size_t n) { return awq_cli::detail::aligned_block(n); }
void* operator new[](std::size_t n) { return awq_cli::detail::aligned_block(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return awq_cli::detail::aligned_block(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
