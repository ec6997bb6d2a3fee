/// \file
/// \brief CUDA plumbing for awq: status checks that raise awq::Error, RAII device memory,
///        device detection. nvcc only.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>
#include <tuple>
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

namespace detail {

/// \brief Lets `kernel` take `smem` bytes of dynamic shared memory on the current device (more
///        than the 48 KiB every kernel may take): cudaFuncSetAttribute once per device and kernel
///        address. Call it with the very pointer that is launched, right before the launch.
///
/// Keyed by the address, not by a flag in the calling template: nvcc gives the host stub of a
/// __global__ template internal linkage (-static-global-template-stub, on by default since CUDA
/// 12.8), so each translation unit's copy of one instantiation is a kernel of its own to the
/// runtime, while a static variable in an inline function is one per program. A flag set through
/// one translation unit's copy left another's at 48 KiB: its launch failed (cudaErrorInvalidValue).
template <class Kernel>
void allow_dynamic_smem(Kernel* kernel, std::size_t smem, const char* name) {
  constexpr std::size_t kDefault = 48 * 1024;
  if (smem <= kDefault) return;
  static std::mutex mu;
  static std::vector<std::tuple<int, Kernel*, std::size_t>> done;  // (device, kernel, bytes) set
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  const std::lock_guard<std::mutex> lock(mu);
  for (const auto& [d, k, bytes] : done)
    if (d == dev && k == kernel && bytes >= smem) return;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)), name);
  done.emplace_back(dev, kernel, smem);
}

/// cudaMalloc / cudaFree: device memory (never managed memory).
struct DeviceMemory {
  static void* allocate(std::size_t bytes) {
    void* p = nullptr;
    check(cudaMalloc(&p, bytes), "cudaMalloc");
    return p;
  }
  static void release(void* p) noexcept { (void)cudaFree(p); }
};

/// cudaMallocHost / cudaFreeHost: page-locked host memory.
struct PinnedMemory {
  static void* allocate(std::size_t bytes) {
    void* p = nullptr;
    check(cudaMallocHost(&p, bytes), "cudaMallocHost");
    return p;
  }
  static void release(void* p) noexcept { (void)cudaFreeHost(p); }
};

/// \brief Owning, move-only array of n elements of T in the memory `Memory` allocates.
template <class T, class Memory>
class OwningArray {
 public:
  OwningArray() = default;
  /// Allocates n elements (uninitialised).
  explicit OwningArray(std::size_t n) : p_(n ? static_cast<T*>(Memory::allocate(n * sizeof(T))) : nullptr), n_(n) {}
  OwningArray(OwningArray&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  OwningArray& operator=(OwningArray&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  OwningArray(const OwningArray&) = delete;
  OwningArray& operator=(const OwningArray&) = delete;
  ~OwningArray() { release(); }

  T* data() const noexcept { return p_; }           ///< pointer to the first element
  std::size_t size() const noexcept { return n_; }  ///< number of elements

 private:
  void release() noexcept {
    if (p_) Memory::release(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

}  // namespace detail

/// \brief Owning, move-only device array of n elements of T (cudaMalloc; never managed memory).
template <class T>
class DeviceBuffer : public detail::OwningArray<T, detail::DeviceMemory> {
  using Base = detail::OwningArray<T, detail::DeviceMemory>;

 public:
  DeviceBuffer() = default;
  /// Allocates n elements (uninitialised).
  explicit DeviceBuffer(std::size_t n) : Base(n) {}
  /// Allocates and uploads `host`.
  explicit DeviceBuffer(const std::vector<T>& host) : Base(host.size()) { upload(host.data(), host.size()); }

  /// Copies n elements from host memory.
  void upload(const T* host, std::size_t n) {
    awq::detail::require(n <= this->size(), "awq::cuda::DeviceBuffer: copy of ", n, " elements into a buffer of ", this->size());
    if (n) check(cudaMemcpy(this->data(), host, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy host->device");
  }
  /// Copies the whole buffer to a new host vector.
  std::vector<T> download() const {
    std::vector<T> h(this->size());
    if (!h.empty())
      check(cudaMemcpy(h.data(), this->data(), h.size() * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy device->host");
    return h;
  }
};

/// \brief Owning, move-only page-locked host array of n elements of T (cudaMallocHost), for
/// downloads that run at the link's speed instead of through a pageable bounce buffer.
template <class T>
class PinnedBuffer : public detail::OwningArray<T, detail::PinnedMemory> {
 public:
  using detail::OwningArray<T, detail::PinnedMemory>::OwningArray;
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

/// kernel<<<grid, block, smem, stream>>>(args…), with programmatic dependent launch when `overlap`:
/// the grid's blocks may start while the kernel before it in the stream ends (sm_90; elsewhere the
/// attribute does nothing). For kernels that wait for the grid before them (griddepcontrol.wait)
/// before they read global memory. `cluster_z` > 1: thread-block clusters of 1 × 1 × cluster_z
/// blocks (sm_90; grid.z a multiple of it). \throws awq::Error naming `what` when the launch fails.
template <class... Params, class... Args>
void launch_clustered(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream, bool overlap,
                      unsigned cluster_z, const char* what, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2] = {};
  unsigned n = 0;
  if (overlap) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_z > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n++].val.clusterDim = {1u, 1u, cluster_z};
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), what);
}
/// launch_clustered without clusters.
template <class... Params, class... Args>
void launch_overlapped(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream, bool overlap,
                       const char* what, Args&&... args) {
  launch_clustered(kernel, grid, block, smem, stream, overlap, 1u, what, std::forward<Args>(args)...);
}

}  // namespace cuda
}  // namespace awq
