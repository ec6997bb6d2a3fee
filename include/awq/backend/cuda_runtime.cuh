/// \file
/// \brief CUDA plumbing for awq: status checks that raise awq::Error, RAII device memory,
///        device detection. nvcc only.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "awq/error.hpp"

namespace awq {
namespace cuda {

/// Throws awq::Error naming `what` when `status` is not cudaSuccess.
inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw Error(detail::concat("awq CUDA error in ", what, ": ", cudaGetErrorName(status), " (",
                               cudaGetErrorString(status), ")"));
  }
}

/// Number of usable CUDA devices (0 when there is no driver or no device; never throws).
inline int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" status
    return 0;
  }
  return n;
}

/// \brief Owning, move-only device array of n elements of T (cudaMalloc; never managed memory).
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  /// Allocates n elements (uninitialised).
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    if (n) check(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)), "cudaMalloc");
  }
  /// Allocates and uploads `host`.
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host.data(), host.size()); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }

  T* data() const noexcept { return p_; }            ///< device pointer
  std::size_t size() const noexcept { return n_; }   ///< number of elements

  /// Copies n elements from host memory.
  void upload(const T* host, std::size_t n) {
    require_fits(n);
    check(cudaMemcpy(p_, host, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy host->device");
  }
  /// Copies the whole buffer to a new host vector.
  std::vector<T> download() const {
    std::vector<T> h(n_);
    if (n_) check(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy device->host");
    return h;
  }

 private:
  void require_fits(std::size_t n) const {
    detail::require(n <= n_, "awq::cuda::DeviceBuffer: copy of ", n, " elements into a buffer of ", n_);
  }
  void release() noexcept {
    if (p_) (void)cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

/// \brief Owning, move-only page-locked host array of n elements of T (cudaMallocHost), for
/// downloads that run at the link's speed instead of through a pageable bounce buffer.
template <class T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  /// Allocates n elements (uninitialised).
  explicit PinnedBuffer(std::size_t n) : n_(n) {
    if (n) check(cudaMallocHost(reinterpret_cast<void**>(&p_), n * sizeof(T)), "cudaMallocHost");
  }
  PinnedBuffer(PinnedBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { release(); }
  T* data() const noexcept { return p_; }            ///< host pointer
  std::size_t size() const noexcept { return n_; }   ///< number of elements

 private:
  void release() noexcept {
    if (p_) (void)cudaFreeHost(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

/// Makes b hold at least n elements: a new (uninitialised) allocation when it is smaller, else
/// unchanged. For workspaces kept between calls.
template <class Buffer>
void grow(Buffer& b, std::size_t n) {
  if (b.size() < n) {
    b = Buffer();  // free first: the old and new workspace need not fit together
    b = Buffer(n);
  }
}

}  // namespace cuda
}  // namespace awq
