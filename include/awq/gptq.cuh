/// \file
/// \brief GPTQ's error feedback (awq/gptq.hpp) on the GPU, nvcc only: the factor U of (H + λI)⁻¹
///        by cuSOLVER and the feedback, both in float64, on device memory.
///
/// The same formulas as the host code: dead channels get H_ii = 1, λ = damp · mean(diag H), U the
/// upper Cholesky factor of (H + λI)⁻¹, each column's code from the row's group parameters (fixed
/// beforehand or recomputed at the group's first column), its error pushed onto the later columns.
/// A block of columns runs in one kernel, a warp per row holding the block in registers; the
/// updates beyond the block are one DGEMM per block. The products' order differs from the host's,
/// so a code can differ where a value lies within rounding of a rounding boundary (and then the
/// later columns of its row follow).
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

// out = P (h + hᵀ) / 2 P in double, P the reversal (the host factor's order); `bad` receives the
// smallest index of a non-finite value of h.
template <int = 0>  // a template: header kernels need one definition per program
__global__ void gptq_symmetrise_kernel(const float* h, index_t k, double* out, unsigned long long* bad) {
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < k * k; e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t i = e / k, j = e % k;
    const float v = h[e];
    if (!isfinite(v)) atomicMin(bad, static_cast<unsigned long long>(e));
    out[(k - 1 - i) * k + (k - 1 - j)] = 0.5 * (static_cast<double>(v) + static_cast<double>(h[j * k + i]));
  }
}

// u [k, k] row-major = P L⁻¹ P, upper triangular, from the lower L⁻¹ column-major in li.
template <int = 0>
__global__ void gptq_upper_kernel(const double* li, index_t k, double* u) {
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < k * k; e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t i = e / k, j = e % k;
    u[e] = j >= i ? li[(k - 1 - j) * k + (k - 1 - i)] : 0.0;
  }
}

// w [n, k] row-major float → a [n, k] row-major double; `bad` as above.
template <int = 0>
__global__ void gptq_load_kernel(MatrixView<const float> w, double* a, unsigned long long* bad) {
  const index_t n = w.rows(), k = w.cols();
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n * k; e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const float v = w(e / k, e % k);
    if (!isfinite(v)) atomicMin(bad, static_cast<unsigned long long>(e));
    a[e] = v;
  }
}

// One warp per (row, group): the group's fp16 scale and zero from the weights as given.
template <class Fmt>
__global__ void gptq_static_groups_kernel(MatrixView<const float> w, index_t g, __half* scales, std::uint8_t* zeros) {
  const index_t ng = w.cols() / g;
  const index_t warp = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (warp >= w.rows() * ng) return;
  const GroupParams<float> p =
      warp_group_params<Fmt>((warp % ng) * g, g, static_cast<int>(threadIdx.x % 32), [&](index_t i) { return w(warp / ng, i); });
  if (threadIdx.x % 32 == 0) {
    scales[warp] = __float2half_rn(p.scale);
    zeros[warp] = static_cast<std::uint8_t>(p.zero);
  }
}

// Columns [i1, i2) (at most 32·M) of every row, a warp per row (detail::gptq_rows's inner loops):
// lane l keeps columns i1 + 32m + l in registers. Each column's value is broadcast and every lane
// computes its code and error (the same inputs, so the same result, and no divergence); the
// lanes then update their own later columns. Out: the codes, the dequantized weights into w, and
// the scaled errors into e [n, ld_e] (row-major), for the update beyond the block.
template <class Fmt, int M>
__global__ void gptq_block_kernel(const double* __restrict__ a, const double* __restrict__ u, index_t i1, index_t i2, index_t g,
                                  GptqOptions::Groups groups, MatrixView<float> w, std::uint8_t* __restrict__ codes, __half* __restrict__ scales,
                                  std::uint8_t* __restrict__ zeros, double* __restrict__ e, index_t ld_e) {
  constexpr unsigned all = 0xffffffffu;
  const index_t n = w.rows(), k = w.cols(), ng = k / g, b = i2 - i1;
  const index_t r = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (r >= n) return;  // a whole warp
  double v[M], err[M];
  float deq[M];
  std::uint8_t code[M];
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const index_t c = 32 * m + lane;
    v[m] = c < b ? a[r * k + i1 + c] : 0.0;
    err[m] = 0;
    deq[m] = 0;
    code[m] = 0;
  }
  float s = 0, z = 0;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    for (int l = 0; l < 32; ++l) {
      const index_t c = 32 * m + l, i = i1 + c;
      if (c >= b) break;
      if (i % g == 0 || c == 0) {
        const index_t j = i / g;
        if (groups != GptqOptions::Groups::fixed && i % g == 0) {  // the group lies in this block (the caller's b), its updates applied
          float lo = INFINITY, hi = -INFINITY;
#pragma unroll
          for (int mm = 0; mm < M; ++mm) {
            const index_t cc = 32 * mm + lane;
            if (cc >= c && cc < c + g && cc < b) {
              const auto x = static_cast<float>(v[mm]);
              lo = x < lo ? x : lo;
              hi = hi < x ? x : hi;
            }
          }
          warp_minmax(lo, hi);
          if (groups == GptqOptions::Groups::updated_within) {  // w holds the weights as given until the block's end
            float lo0 = INFINITY, hi0 = -INFINITY;
            for (index_t cc = c + lane; cc < c + g; cc += 32) {
              const float x = w(r, i1 + cc);
              lo0 = x < lo0 ? x : lo0;
              hi0 = hi0 < x ? x : hi0;
            }
            warp_minmax(lo0, hi0);
            gptq_range_within(lo, hi, lo0, hi0);
          }
          const GroupParams<float> p = group_params<Fmt>(lo, hi);
          const __half s16 = __float2half_rn(p.scale);
          if (lane == 0) {
            scales[r * ng + j] = s16;
            zeros[r * ng + j] = static_cast<std::uint8_t>(p.zero);
          }
          s = __half2float(s16);
          z = static_cast<float>(static_cast<std::uint8_t>(p.zero));
        } else {
          s = __half2float(scales[r * ng + j]);
          z = static_cast<float>(zeros[r * ng + j]);
        }
      }
      const double x = __shfl_sync(all, v[m], l);
      const double q = quantize_value<Fmt>(x, GroupParams<double>{s, z});
      const float dq = (static_cast<float>(q) - z) * s;
      const double ex = (x - static_cast<double>(dq)) / u[i * k + i];
      if (lane == l) {
        code[m] = static_cast<std::uint8_t>(q);
        deq[m] = dq;
        err[m] = ex;
      }
      const double* ui = u + i * k + i1;
#pragma unroll
      for (int mm = m; mm < M; ++mm) {
        const index_t cc = 32 * mm + lane;
        if (cc > c && cc < b) v[mm] -= ex * ui[cc];
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const index_t c = 32 * m + lane;
    if (c < b) {
      codes[r * k + i1 + c] = code[m];
      w(r, i1 + c) = deq[m];
      e[r * ld_e + c] = err[m];
    }
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
  ///         non-finite value, a negative diagonal value; awq::NotPositiveDefinite for H + λI.
  explicit GptqFactor(const MatrixView<const float>& h, double damp = 0.01) {
    constexpr const char* fn = "awq::cuda::GptqFactor";
    awq::detail::require(h.rows() == h.cols() && h.rows() > 0, fn, ": the Hessian is ", h.rows(), "x", h.cols(),
                         " (it must be square and not empty)");
    awq::detail::require(h.col_stride() == 1 && h.row_stride() == h.cols(), fn, ": the Hessian must be contiguous (row_stride ",
                         h.row_stride(), ", cols ", h.cols(), ")");
    awq::detail::require(h.rows() <= 46340, fn, ": K = ", h.rows(), " exceeds cuSOLVER's int range for K x K");
    awq::detail::require(std::isfinite(damp) && damp >= 0, fn, ": damp ", damp, " must be finite and >= 0");
    k_ = h.rows();
    auto& ctx = this_thread_context();
    const cudaStream_t st = ctx.stream;
    // As the host factor: with P the reversal and P·H·P = L·Lᵀ, U = P·L⁻¹·P (one Cholesky and one
    // triangular inverse, half the work of GPTQ's inverse and second Cholesky).
    DeviceBuffer<double> l(static_cast<std::size_t>(k_ * k_));
    const unsigned long long none = ULLONG_MAX;
    grow(ctx.flag, 1);
    check(cudaMemcpyAsync(ctx.flag.data(), &none, sizeof none, cudaMemcpyHostToDevice, st), "cudaMemcpyAsync");
    detail::gptq_symmetrise_kernel<><<<detail::blocks_for(k_ * k_, 256, 1 << 16), 256, 0, st>>>(h.data(), k_, l.data(), ctx.flag.data());
    check(cudaGetLastError(), "gptq_symmetrise_kernel launch");
    unsigned long long bad = none;
    check(cudaMemcpyAsync(&bad, ctx.flag.data(), sizeof bad, cudaMemcpyDeviceToHost, st), "cudaMemcpyAsync");
    std::vector<double> d = diagonal(l, st);  // synchronizes; d[p] is H's diagonal at k − 1 − p
    if (bad != none)
      throw Error(awq::detail::concat(fn, ": non-finite Hessian value at (", bad / static_cast<unsigned long long>(k_), ", ",
                                      bad % static_cast<unsigned long long>(k_), ")"));
    double mean = 0;
    for (index_t p = 0; p < k_; ++p) {  // the host factor's order
      double& v = d[static_cast<std::size_t>(p)];
      awq::detail::require(v >= 0, fn, ": diagonal value ", v, " at ", k_ - 1 - p, " is negative (not a Hessian XᵀX)");
      if (v == 0) v = 1;  // a dead channel
      mean += v;
    }
    const double lambda = damp * mean / static_cast<double>(k_);
    for (double& v : d) v += lambda;
    set_diagonal(l, d, st);
    cusolverDnHandle_t sh = detail::solver_handle(st);
    int lwork = 0;
    std::size_t dev_bytes = 0, host_bytes = 0;
    detail::check_solver(cusolverDnDpotrf_bufferSize(sh, CUBLAS_FILL_MODE_LOWER, static_cast<int>(k_), l.data(), static_cast<int>(k_), &lwork),
                         "cusolverDnDpotrf_bufferSize");
    detail::check_solver(cusolverDnXtrtri_bufferSize(sh, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, k_, CUDA_R_64F, l.data(), k_,
                                                     &dev_bytes, &host_bytes),
                         "cusolverDnXtrtri_bufferSize");
    const std::size_t words = std::max<std::size_t>({1, static_cast<std::size_t>(lwork), (dev_bytes + sizeof(double) - 1) / sizeof(double)});
    DeviceBuffer<double> work(words);
    std::vector<unsigned char> host_work(std::max<std::size_t>(1, host_bytes));
    DeviceBuffer<int> info(1);
    const auto info_value = [&] {
      int i = 0;
      check(cudaMemcpyAsync(&i, info.data(), sizeof i, cudaMemcpyDeviceToHost, st), "cudaMemcpyAsync");
      check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
      return i;
    };
    detail::check_solver(cusolverDnDpotrf(sh, CUBLAS_FILL_MODE_LOWER, static_cast<int>(k_), l.data(), static_cast<int>(k_), work.data(),
                                          static_cast<int>(work.size()), info.data()),
                         "cusolverDnDpotrf");
    const int potrf_info = info_value();
    if (potrf_info != 0)
      throw NotPositiveDefinite(awq::detail::concat(fn, ": H + lambda I (damp ", damp, ", lambda = ", lambda,
                                                    ") is not positive definite (cuSOLVER potrf info ", potrf_info,
                                                    "); a larger damp makes it so"));
    detail::check_solver(cusolverDnXtrtri(sh, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, k_, CUDA_R_64F, l.data(), k_, work.data(),
                                          work.size() * sizeof(double), host_work.data(), host_bytes, info.data()),
                         "cusolverDnXtrtri");
    const int trtri_info = info_value();
    awq::detail::require(trtri_info == 0, fn, ": the Cholesky factor of H + lambda I (lambda = ", lambda,
                         ") is singular (cuSOLVER trtri info ", trtri_info, ")");
    u_ = DeviceBuffer<double>(static_cast<std::size_t>(k_ * k_));
    detail::gptq_upper_kernel<><<<detail::blocks_for(k_ * k_, 256, 1 << 16), 256, 0, st>>>(l.data(), k_, u_.data());
    check(cudaGetLastError(), "gptq_upper_kernel launch");
    const std::vector<double> du = diagonal(u_, st);
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
  // The diagonal of the [k_, k_] matrix m (synchronizes).
  std::vector<double> diagonal(const DeviceBuffer<double>& m, cudaStream_t st) const {
    std::vector<double> d(static_cast<std::size_t>(k_));
    check(cudaMemcpy2DAsync(d.data(), sizeof(double), m.data(), static_cast<std::size_t>(k_ + 1) * sizeof(double), sizeof(double),
                            static_cast<std::size_t>(k_), cudaMemcpyDeviceToHost, st),
          "cudaMemcpy2DAsync");
    check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
    return d;
  }
  void set_diagonal(DeviceBuffer<double>& m, const std::vector<double>& d, cudaStream_t st) {
    check(cudaMemcpy2DAsync(m.data(), static_cast<std::size_t>(k_ + 1) * sizeof(double), d.data(), sizeof(double), sizeof(double),
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
  // A block's columns live in the registers of a warp per row: at most kMaxBlock of them (the
  // block only batches the same updates, so this changes the sums' order, not the method). With one
  // group per row, recomputing it at column 0 is fixing it from the weights as given. A recomputed
  // group must lie within one block, so that all its pending updates are applied.
  constexpr index_t kMaxBlock = 256;
  const GptqOptions::Groups groups = g == k ? GptqOptions::Groups::fixed : opt.groups;
  const bool static_groups = groups == GptqOptions::Groups::fixed;
  const index_t cap = std::min(opt.block, kMaxBlock);
  const index_t b = static_groups ? std::min(cap, k) : g * std::max<index_t>(1, cap / g);
  DeviceBuffer<double> e(static_cast<std::size_t>(n * b));
  const int threads = 128;  // 4 rows a block
  const auto blocks = static_cast<unsigned>((n + threads / 32 - 1) / (threads / 32));
  dispatch_format(spec, [&](auto fmt) {
    using Fmt = decltype(fmt);
    if (static_groups) {
      const index_t warps = n * (k / g);
      detail::gptq_static_groups_kernel<Fmt><<<detail::blocks_for(warps * 32, 256, INT_MAX), 256, 0, st>>>(MatrixView<const float>(w), g,
                                                                                                           scales, zeros);
      check(cudaGetLastError(), "gptq_static_groups_kernel launch");
    }
    const auto kernel = b <= 128 ? detail::gptq_block_kernel<Fmt, 4> : detail::gptq_block_kernel<Fmt, kMaxBlock / 32>;
    const double minus_one = -1, one = 1;
    for (index_t i1 = 0; i1 < k; i1 += b) {
      const index_t i2 = std::min(i1 + b, k);
      kernel<<<blocks, threads, 0, st>>>(a.data(), f.upper(), i1, i2, g, groups, w, codes, scales, zeros, e.data(), b);
      check(cudaGetLastError(), "gptq_block_kernel launch");
      // a[:, i2:] −= e · U[i1:i2, i2:]. Column-major, a is aᵀ [k, n] (ld k), U[i1:i2, i2:] is
      // (U[i1:i2, i2:])ᵀ [k − i2, i2 − i1] (ld k) and e is eᵀ [i2 − i1, n] (ld b).
      if (i2 < k)
        check(cublasDgemm(ctx.handle(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(k - i2), static_cast<int>(n), static_cast<int>(i2 - i1),
                          &minus_one, f.upper() + i1 * k + i2, static_cast<int>(k), e.data(), static_cast<int>(b), &one, a.data() + i2,
                          static_cast<int>(k)),
              "cublasDgemm (awq::cuda::gptq_quantize)");
    }
  });
  check(cudaStreamSynchronize(st), "cudaStreamSynchronize");  // a and e are freed on return
}

}  // namespace awq::cuda
