/// \file
/// \brief GPTQ's error feedback (awq/gptq.hpp) on the GPU, nvcc only: the factor U of (H + λI)⁻¹
///        by cuSOLVER and the feedback, both in float64, on device memory.
///
/// The same formulas as the host code: dead channels get H_ii = 1, λ = damp · mean(diag H), U the
/// upper Cholesky factor of (H + λI)⁻¹, each column's code from the row's group parameters (fixed
/// beforehand or recomputed at the group's first column), its error pushed onto the later columns.
/// A block of columns runs in one kernel, a thread per row; the updates beyond the block are one
/// DGEMM per block. The products' order differs from the host's, so a code can differ where a value
/// lies within rounding of a rounding boundary (and then the later columns of its row follow).
#pragma once

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <vector>

#include "awq/backend/cuda.cuh"
#include "awq/config.hpp"
#include "awq/error.hpp"
#include "awq/gptq.hpp"
#include "awq/kernels/cuda/pseudo_quantize.cuh"
#include "awq/quantizer.hpp"
#include "awq/view.hpp"

namespace awq::cuda {

namespace detail {

/// Throws awq::Error naming `what` when `status` is not CUSOLVER_STATUS_SUCCESS.
inline void check_solver(cusolverStatus_t status, const char* what) {
  if (status != CUSOLVER_STATUS_SUCCESS) throw Error(awq::detail::concat("awq cuSOLVER error in ", what, ": status ", static_cast<int>(status)));
}

/// The calling thread's cuSOLVER handle (made on first use), bound to `stream`.
inline cusolverDnHandle_t solver_handle(cudaStream_t stream) {
  struct Handle {
    cusolverDnHandle_t h = nullptr;
    Handle() { check_solver(cusolverDnCreate(&h), "cusolverDnCreate"); }
    ~Handle() { (void)cusolverDnDestroy(h); }
  };
  thread_local Handle handle;
  check_solver(cusolverDnSetStream(handle.h, stream), "cusolverDnSetStream");
  return handle.h;
}

// out = (h + hᵀ) / 2 in double; `bad` receives the smallest index of a non-finite value.
template <int = 0>  // a template: header kernels need one definition per program
__global__ void gptq_symmetrise_kernel(const float* h, index_t k, double* out, unsigned long long* bad) {
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < k * k; e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t i = e / k, j = e % k;
    const float v = h[e];
    if (!isfinite(v)) atomicMin(bad, static_cast<unsigned long long>(e));
    out[e] = 0.5 * (static_cast<double>(v) + static_cast<double>(h[j * k + i]));
  }
}

// Zeroes the strict lower triangle of a row-major [k, k] matrix.
template <int = 0>
__global__ void gptq_upper_kernel(double* u, index_t k) {
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < k * k; e += static_cast<index_t>(gridDim.x) * blockDim.x)
    if (e % k < e / k) u[e] = 0;
}

// a [n, k] column-major double = w [n, k] row-major float; `bad` as above, as a row-major index.
template <int = 0>
__global__ void gptq_load_kernel(MatrixView<const float> w, double* a, unsigned long long* bad) {
  const index_t n = w.rows(), k = w.cols();
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n * k; e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t i = e / n, r = e % n;  // consecutive threads, consecutive rows of one column: a is written in order
    const float v = w(r, i);
    if (!isfinite(v)) atomicMin(bad, static_cast<unsigned long long>(r * k + i));
    a[e] = v;
  }
}

// One warp per (row, group): the group's fp16 scale and zero from the weights as given.
template <class Cfg>
__global__ void gptq_static_groups_kernel(MatrixView<const float> w, index_t g, __half* scales, std::uint8_t* zeros) {
  const index_t ng = w.cols() / g;
  const index_t warp = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (warp >= w.rows() * ng) return;
  const GroupParams<float> p =
      warp_group_params<Cfg>((warp % ng) * g, g, static_cast<int>(threadIdx.x % 32), [&](index_t i) { return w(warp / ng, i); });
  if (threadIdx.x % 32 == 0) {
    scales[warp] = __float2half_rn(p.scale);
    zeros[warp] = static_cast<std::uint8_t>(p.zero);
  }
}

// Columns [i1, i2) of every row, a thread per row (detail::gptq_rows's inner loops): the codes,
// the dequantized weights into w, the scaled errors into e [n, i2 − i1] (column-major), and the
// updates inside the block applied to a [n, k] (column-major: a warp reads one column's rows).
template <class Cfg>
__global__ void gptq_block_kernel(double* __restrict__ a, const double* __restrict__ u, index_t i1, index_t i2, index_t g,
                                  bool static_groups, MatrixView<float> w, std::uint8_t* codes, __half* scales, std::uint8_t* zeros,
                                  double* __restrict__ e) {
  const index_t n = w.rows(), k = w.cols(), ng = k / g;
  const index_t r = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n) return;
  float s = 0, z = 0;
  for (index_t i = i1; i < i2; ++i) {
    const index_t j = i / g;
    if (i % g == 0 || i == i1) {
      if (!static_groups && i % g == 0) {
        float lo = static_cast<float>(a[i * n + r]), hi = lo;
        for (index_t c = i; c < i + g; ++c) {
          const float v = static_cast<float>(a[c * n + r]);
          lo = v < lo ? v : lo;
          hi = hi < v ? v : hi;
        }
        const GroupParams<float> p = group_params<Cfg>(lo, hi);
        scales[r * ng + j] = __float2half_rn(p.scale);
        zeros[r * ng + j] = static_cast<std::uint8_t>(p.zero);
      }
      s = __half2float(scales[r * ng + j]);
      z = static_cast<float>(zeros[r * ng + j]);
    }
    const double x = a[i * n + r];
    const double q = quantize_value<Cfg>(x, GroupParams<double>{s, z});
    const float deq = (static_cast<float>(q) - z) * s;
    codes[r * k + i] = static_cast<std::uint8_t>(q);
    w(r, i) = deq;
    const double err = (x - static_cast<double>(deq)) / u[i * k + i];
    e[(i - i1) * n + r] = err;
    for (index_t c = i + 1; c < i2; ++c) a[c * n + r] -= err * u[i * k + c];
  }
}

}  // namespace detail

/// \brief U, the upper Cholesky factor of (H + λI)⁻¹, in device memory (awq::GptqFactor's, on the GPU).
class GptqFactor {
 public:
  GptqFactor() = default;
  /// \param h    H [K, K], contiguous device memory (symmetrised here)
  /// \param damp λ = damp · mean(diag H), after the dead channels' H_ii = 1
  /// \throws awq::Error as awq::GptqFactor does: h not square, empty or not contiguous, a
  ///         non-finite value, a negative diagonal value, H + λI not positive definite.
  explicit GptqFactor(const MatrixView<const float>& h, double damp = 0.01) {
    constexpr const char* fn = "awq::cuda::GptqFactor";
    awq::detail::require(h.rows() == h.cols() && h.rows() > 0, fn, ": the Hessian is ", h.rows(), "x", h.cols(),
                         " (it must be square and not empty)");
    awq::detail::require(h.col_stride() == 1 && h.row_stride() == h.cols(), fn, ": the Hessian must be contiguous (row_stride ",
                         h.row_stride(), ", cols ", h.cols(), ")");
    awq::detail::require(h.rows() <= 46340, fn, ": K = ", h.rows(), " exceeds cuSOLVER's int range for K x K");
    awq::detail::require(std::isfinite(damp) && damp >= 0, fn, ": damp ", damp, " must be finite and >= 0");
    k_ = h.rows();
    const int ki = static_cast<int>(k_);
    auto& ctx = this_thread_context();
    const cudaStream_t st = ctx.stream;
    u_ = DeviceBuffer<double>(static_cast<std::size_t>(k_ * k_));
    const unsigned long long none = ULLONG_MAX;
    grow(ctx.flag, 1);
    check(cudaMemcpyAsync(ctx.flag.data(), &none, sizeof none, cudaMemcpyHostToDevice, st), "cudaMemcpyAsync");
    detail::gptq_symmetrise_kernel<><<<detail::blocks_for(k_ * k_, 256, 1 << 16), 256, 0, st>>>(h.data(), k_, u_.data(), ctx.flag.data());
    check(cudaGetLastError(), "gptq_symmetrise_kernel launch");
    unsigned long long bad = none;
    check(cudaMemcpyAsync(&bad, ctx.flag.data(), sizeof bad, cudaMemcpyDeviceToHost, st), "cudaMemcpyAsync");
    std::vector<double> d = diagonal(st);  // synchronizes
    if (bad != none)
      throw Error(awq::detail::concat(fn, ": non-finite Hessian value at (", bad / static_cast<unsigned long long>(k_), ", ",
                                      bad % static_cast<unsigned long long>(k_), ")"));
    double mean = 0;
    for (index_t i = k_ - 1; i >= 0; --i) {  // the host factor's order (it works on the reversed matrix)
      double& v = d[static_cast<std::size_t>(i)];
      awq::detail::require(v >= 0, fn, ": diagonal value ", v, " at ", i, " is negative (not a Hessian XᵀX)");
      if (v == 0) v = 1;  // a dead channel
      mean += v;
    }
    const double lambda = damp * mean / static_cast<double>(k_);
    for (double& v : d) v += lambda;
    set_diagonal(d, st);
    // (H + λI) = L Lᵀ, its inverse from L, then that inverse = L₂ L₂ᵀ. Column-major lower L₂ read
    // row-major is L₂ᵀ = U, so (H + λI)⁻¹ = Uᵀ U as GPTQ's upper Cholesky factor.
    cusolverDnHandle_t sh = detail::solver_handle(st);
    int lwork = 0, lw2 = 0;
    detail::check_solver(cusolverDnDpotrf_bufferSize(sh, CUBLAS_FILL_MODE_LOWER, ki, u_.data(), ki, &lwork), "cusolverDnDpotrf_bufferSize");
    detail::check_solver(cusolverDnDpotri_bufferSize(sh, CUBLAS_FILL_MODE_LOWER, ki, u_.data(), ki, &lw2), "cusolverDnDpotri_bufferSize");
    DeviceBuffer<double> work(static_cast<std::size_t>(std::max(1, std::max(lwork, lw2))));
    DeviceBuffer<int> info(1);
    const auto factor = [&](const char* step) {
      detail::check_solver(cusolverDnDpotrf(sh, CUBLAS_FILL_MODE_LOWER, ki, u_.data(), ki, work.data(), static_cast<int>(work.size()), info.data()),
                           "cusolverDnDpotrf");
      int i = 0;
      check(cudaMemcpyAsync(&i, info.data(), sizeof i, cudaMemcpyDeviceToHost, st), "cudaMemcpyAsync");
      check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
      awq::detail::require(i == 0, fn, ": ", step, " (lambda = ", lambda, ") is not positive definite (cuSOLVER potrf info ", i, ")");
    };
    factor("H + lambda I");
    detail::check_solver(cusolverDnDpotri(sh, CUBLAS_FILL_MODE_LOWER, ki, u_.data(), ki, work.data(), static_cast<int>(work.size()), info.data()),
                         "cusolverDnDpotri");
    factor("the inverse of H + lambda I");
    detail::gptq_upper_kernel<><<<detail::blocks_for(k_ * k_, 256, 1 << 16), 256, 0, st>>>(u_.data(), k_);
    check(cudaGetLastError(), "gptq_upper_kernel launch");
    const std::vector<double> du = diagonal(st);
    for (index_t i = 0; i < k_; ++i) {
      const double v = du[static_cast<std::size_t>(i)];
      awq::detail::require(std::isfinite(v) && v > 0, fn, ": the factor's diagonal at ", i, " is ", v,
                           " (H + lambda I is too ill-conditioned)");
    }
  }
  /// K.
  index_t size() const { return k_; }
  /// U [K, K] row-major in device memory, upper triangular with a positive diagonal.
  const double* upper() const { return u_.data(); }

 private:
  std::vector<double> diagonal(cudaStream_t st) const {
    std::vector<double> d(static_cast<std::size_t>(k_));
    check(cudaMemcpy2DAsync(d.data(), sizeof(double), u_.data(), static_cast<std::size_t>(k_ + 1) * sizeof(double), sizeof(double),
                            static_cast<std::size_t>(k_), cudaMemcpyDeviceToHost, st),
          "cudaMemcpy2DAsync");
    check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
    return d;
  }
  void set_diagonal(const std::vector<double>& d, cudaStream_t st) {
    check(cudaMemcpy2DAsync(u_.data(), static_cast<std::size_t>(k_ + 1) * sizeof(double), d.data(), sizeof(double), sizeof(double),
                            static_cast<std::size_t>(k_), cudaMemcpyHostToDevice, st),
          "cudaMemcpy2DAsync");
    check(cudaStreamSynchronize(st), "cudaStreamSynchronize");  // d is pageable host memory
  }

  DeviceBuffer<double> u_;
  index_t k_ = 0;
};

/// \brief awq::gptq_quantize on device memory: w [N, K] (contiguous, on the device) is replaced
///        by its dequantized values; codes [N, K], scales and zeros [N, K / group] are device
///        outputs, all row-major.
/// \throws awq::Error for mismatched sizes, a group size that does not divide K, or a non-finite
///         weight (naming its row and column).
inline void gptq_quantize(const QuantSpec& spec, const MatrixView<float>& w, const GptqFactor& f, const GptqOptions& opt,
                          std::uint8_t* codes, __half* scales, std::uint8_t* zeros) {
  constexpr const char* fn = "awq::cuda::gptq_quantize";
  opt.validate();
  const index_t g = awq::detail::checked_group(fn, spec, w);
  const index_t n = w.rows(), k = w.cols();
  awq::detail::require(f.size() == k, fn, ": the factor is for ", f.size(), " columns but the weight has ", k);
  awq::detail::require(w.col_stride() == 1 && w.row_stride() == k, fn, ": the weight must be contiguous (row_stride ", w.row_stride(),
                       ", cols ", k, ")");
  awq::detail::require(n <= INT_MAX, fn, ": ", n, " rows exceed cuBLAS's int range");
  if (n == 0) return;
  auto& ctx = this_thread_context();
  const cudaStream_t st = ctx.stream;
  DeviceBuffer<double> a(static_cast<std::size_t>(n * k));
  const unsigned long long none = ULLONG_MAX;
  grow(ctx.flag, 1);
  check(cudaMemcpyAsync(ctx.flag.data(), &none, sizeof none, cudaMemcpyHostToDevice, st), "cudaMemcpyAsync");
  detail::gptq_load_kernel<><<<detail::blocks_for(n * k, 256, 1 << 16), 256, 0, st>>>(MatrixView<const float>(w), a.data(), ctx.flag.data());
  check(cudaGetLastError(), "gptq_load_kernel launch");
  unsigned long long bad = none;
  check(cudaMemcpyAsync(&bad, ctx.flag.data(), sizeof bad, cudaMemcpyDeviceToHost, st), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
  if (bad != none) {
    const auto idx = static_cast<index_t>(bad);
    throw Error(awq::detail::concat(fn, ": non-finite weight at row ", idx / k, ", column ", idx % k, " (group ", (idx % k) / g, ")"));
  }
  // A recomputed group must lie within one block, so that all its pending updates are applied.
  const index_t b = opt.static_groups ? std::min(opt.block, k) : g * std::max<index_t>(1, opt.block / g);
  DeviceBuffer<double> e(static_cast<std::size_t>(n * b));
  const int threads = 32;  // a warp per SM for the 4096 rows of a 7B-shaped linear, not 32 blocks of 128
  const auto blocks = static_cast<unsigned>((n + threads - 1) / threads);
  dispatch(spec, [&](auto cfg) {
    using Cfg = decltype(cfg);
    if (opt.static_groups) {
      const index_t warps = n * (k / g);
      detail::gptq_static_groups_kernel<Cfg><<<detail::blocks_for(warps * 32, 256, INT_MAX), 256, 0, st>>>(MatrixView<const float>(w), g,
                                                                                                           scales, zeros);
      check(cudaGetLastError(), "gptq_static_groups_kernel launch");
    }
    const double minus_one = -1, one = 1;
    for (index_t i1 = 0; i1 < k; i1 += b) {
      const index_t i2 = std::min(i1 + b, k);
      detail::gptq_block_kernel<Cfg><<<blocks, threads, 0, st>>>(a.data(), f.upper(), i1, i2, g, opt.static_groups, w, codes,
                                                                  scales, zeros, e.data());
      check(cudaGetLastError(), "gptq_block_kernel launch");
      if (i2 < k)  // a[:, i2:] −= e · U[i1:i2, i2:]; U row-major is Uᵀ column-major, hence op T
        check(cublasDgemm(ctx.handle(), CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(n), static_cast<int>(k - i2), static_cast<int>(i2 - i1),
                          &minus_one, e.data(), static_cast<int>(n), f.upper() + i1 * k + i2, static_cast<int>(k), &one, a.data() + i2 * n,
                          static_cast<int>(n)),
              "cublasDgemm (awq::cuda::gptq_quantize)");
    }
  });
  check(cudaStreamSynchronize(st), "cudaStreamSynchronize");  // a and e are freed on return
}

}  // namespace awq::cuda
