/// \file
/// \brief `Finalize<backend::cuda>` (nvcc only): the final quantization of a device weight on the
///        device, with the same per-element formulas as finalize_linear on the host (so the codes,
///        zeros, fp16 scales and the dequantized weight are identical); only the codes, zeros and
///        scales cross to the host.
#pragma once

#include <cuda_fp16.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>

#include "awq/backend/cuda.cuh"
#include "awq/gptq.cuh"
#include "awq/kernels/cuda/pseudo_quantize.cuh"
#include "awq/kernels/cuda/w4a16_linear.cuh"
#include "awq/model/finalize.hpp"

namespace awq::detail::finalize_cuda {

// One warp per (row, group): the group's parameters, the codes, the fp16 scale, and the weight
// replaced by (code − zero) · scale16. `bad` receives the smallest index of a non-finite weight.
template <class Fmt>
__global__ void finalize_kernel(MatrixView<float> w, index_t g, std::uint8_t* codes, std::uint8_t* zeros, __half* scales,
                                unsigned long long* bad) {
  namespace cd = ::awq::cuda::detail;
  const index_t ng = w.cols() / g;
  const index_t warp = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= w.rows() * ng) return;
  const index_t r = warp / ng, j = warp % ng;
  float lo, hi;
  if (!cd::warp_group_range(w, r, j, g, lane, bad, lo, hi)) return;
  const GroupParams<float> p = group_params<Fmt>(lo, hi);
  const __half s16 = __float2half_rn(p.scale);
  const float s = __half2float(s16);
  if (lane == 0) {
    scales[warp] = s16;
    zeros[warp] = static_cast<std::uint8_t>(p.zero);
  }
  for (index_t i = lane; i < g; i += 32) {
    const float q = quantize_value<Fmt>(w(r, j * g + i), p);
    codes[r * w.cols() + j * g + i] = static_cast<std::uint8_t>(q);
    w(r, j * g + i) = (q - p.zero) * s;
  }
}

template <int = 0>  // a template: header kernels need one definition per program
__global__ void to_half_kernel(const float* x, index_t n, __half* y) {
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += static_cast<index_t>(gridDim.x) * blockDim.x)
    y[e] = __float2half_rn(x[e]);
}

template <int = 0>
__global__ void from_half_kernel(const __half* y, index_t rows, index_t cols, const float* bias, float* out) {
  const index_t n = rows * cols;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += static_cast<index_t>(gridDim.x) * blockDim.x)
    out[e] = __half2float(y[e]) + (bias ? bias[e % cols] : 0.0f);
}

// U (double, row-major k × k) as float, and its transpose.
template <int = 0>
__global__ void upper_to_float_kernel(const double* u, index_t k, float* uf, float* ut) {
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < k * k; e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const float v = static_cast<float>(u[e]);
    uf[e] = v;
    ut[(e % k) * k + e / k] = v;
  }
}

// Row-major y [n, m] = alpha · x [n, k] · b [m, k]ᵀ + beta · y in fp32 (cuBLAS column-major:
// yᵀ = b · xᵀ), all contiguous.
inline void gemm_nt(const float* x, const float* b, float* y, index_t n, index_t m, index_t k, float alpha, float beta) {
  namespace cu = ::awq::cuda;
  for (index_t d : {n, m, k}) detail::require(d <= INT_MAX, "awq::model::Finalize<cuda>::retarget: dimension ", d, " exceeds cuBLAS's int range");
  const int ni = static_cast<int>(n), mi = static_cast<int>(m), ki = static_cast<int>(k);
  cu::check(cublasGemmEx(cu::this_thread_context().handle(), CUBLAS_OP_T, CUBLAS_OP_N, mi, ni, ki, &alpha, b, CUDA_R_32F, ki, x, CUDA_R_32F,
                         ki, &beta, y, CUDA_R_32F, mi, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "cublasGemmEx (awq::model::Finalize<cuda>::retarget)");
}

}  // namespace awq::detail::finalize_cuda

namespace awq::model {

/// \brief On the GPU: `w` is contiguous device memory.
template <>
struct Finalize<backend::cuda> {
  /// finalize_linear(w, spec) on the device. \throws awq::Error for a non-finite weight (naming
  /// its row and column) or a group size that does not divide the columns.
  static QuantizedLinear run(const MatrixView<float>& w, const QuantSpec& spec) {
    namespace cu = ::awq::cuda;
    constexpr const char* fn = "awq::model::Finalize<cuda>";
    detail::require(w.col_stride() == 1 && w.row_stride() == w.cols(), fn, ": the weight must be contiguous (row_stride ",
                    w.row_stride(), ", cols ", w.cols(), ")");
    QuantizedLinear q;
    q.bits = spec.bits;
    q.out = w.rows();
    q.in = w.cols();
    q.groups = q.in / spec.group_for(q.in, fn);
    const index_t g = q.in / q.groups, n_groups = q.out * q.groups;
    if (n_groups == 0) return q;
    cudaStream_t st = backend::cuda::stream();
    cu::DeviceBuffer<std::uint8_t> codes(static_cast<std::size_t>(q.out * q.in)), zeros(static_cast<std::size_t>(n_groups));
    cu::DeviceBuffer<__half> scales(static_cast<std::size_t>(n_groups));
    cu::DeviceBuffer<unsigned long long> bad(1);
    const unsigned long long none = ULLONG_MAX;
    cu::check(cudaMemcpyAsync(bad.data(), &none, sizeof none, cudaMemcpyHostToDevice, st), "cudaMemcpyAsync");
    const int threads = 256;
    const auto blocks = static_cast<unsigned>((n_groups * 32 + threads - 1) / threads);
    dispatch_format(spec, [&](auto fmt) {
      detail::finalize_cuda::finalize_kernel<decltype(fmt)><<<blocks, threads, 0, st>>>(w, g, codes.data(), zeros.data(),
                                                                                         scales.data(), bad.data());
    });
    cu::check(cudaGetLastError(), "finalize_kernel launch");
    unsigned long long first_bad = none;
    cu::check(cudaMemcpyAsync(&first_bad, bad.data(), sizeof first_bad, cudaMemcpyDeviceToHost, st), "cudaMemcpyAsync");
    download(codes, zeros, scales, q);  // synchronizes
    if (first_bad != none) {
      const auto idx = static_cast<index_t>(first_bad);
      throw Error(detail::concat(fn, ": non-finite weight at row ", idx / q.in, ", column ", idx % q.in, " (group ", (idx % q.in) / g, ")"));
    }
    return q;
  }

  using Factor = ::awq::cuda::GptqFactor;  ///< the Hessian's factor, in device memory
  /// cuda::GptqFactor(h, damp), h in device memory.
  static Factor factor(const MatrixView<const float>& h, double damp) { return Factor(h, damp); }
  /// finalize_linear_gptq(w, spec, f, opt) on the device (cuda::gptq_quantize).
  static QuantizedLinear gptq(const MatrixView<float>& w, const QuantSpec& spec, const Factor& f, const GptqOptions& opt) {
    namespace cu = ::awq::cuda;
    QuantizedLinear q;
    q.bits = spec.bits;
    q.out = w.rows();
    q.in = w.cols();
    q.groups = q.in / spec.group_for(q.in, "awq::model::Finalize<cuda>::gptq");
    const auto n_groups = static_cast<std::size_t>(q.out * q.groups);
    cu::DeviceBuffer<std::uint8_t> codes(static_cast<std::size_t>(q.out * q.in)), zeros(n_groups);
    cu::DeviceBuffer<__half> scales(n_groups);
    cu::gptq_quantize(spec, w, f, opt, codes.data(), scales.data(), zeros.data());
    download(codes, zeros, scales, q);
    return q;
  }
  /// retarget_linear(w, U, e, beta) on the device (w and e contiguous device memory): the same
  /// three float products, through cuBLAS in fp32.
  static void retarget(const MatrixView<float>& w, const Factor& f, const MatrixView<const float>& e, double beta) {
    namespace cu = ::awq::cuda;
    namespace k = detail::finalize_cuda;
    constexpr const char* fn = "awq::model::Finalize<cuda>::retarget";
    const index_t n = w.rows(), kk = w.cols();
    detail::require(f.size() == kk, fn, ": the factor is ", f.size(), "x", f.size(), " for a weight of ", kk, " columns");
    detail::require_shape(e, kk, kk, fn, "e");
    detail::require(w.col_stride() == 1 && w.row_stride() == kk && e.col_stride() == 1 && e.row_stride() == kk, fn,
                    ": w and e must be contiguous");
    detail::require(std::isfinite(beta) && beta >= 0 && beta <= 1, fn, ": beta ", beta, " is out of range (accepted: 0 <= beta <= 1)");
    if (beta == 0 || n == 0) return;
    cudaStream_t st = backend::cuda::stream();
    cu::DeviceBuffer<float> uf(static_cast<std::size_t>(kk * kk)), ut(uf.size()), r1(static_cast<std::size_t>(n * kk)), r2(r1.size());
    k::upper_to_float_kernel<><<<cu::detail::blocks_for(kk * kk, 256, 1 << 16), 256, 0, st>>>(f.upper(), kk, uf.data(), ut.data());
    cu::check(cudaGetLastError(), "upper_to_float_kernel launch");
    k::gemm_nt(w.data(), e.data(), r1.data(), n, kk, kk, 1.0f, 0.0f);                           // w·Eᵀ
    k::gemm_nt(r1.data(), uf.data(), r2.data(), n, kk, kk, 1.0f, 0.0f);                          // ·Uᵀ
    k::gemm_nt(r2.data(), ut.data(), w.data(), n, kk, kk, static_cast<float>(beta), 1.0f);      // w += beta · (·U)
  }

 private:
  // The device codes, zeros and fp16 scales into q's host vectors (q.out, q.in, q.groups set).
  static void download(const ::awq::cuda::DeviceBuffer<std::uint8_t>& codes, const ::awq::cuda::DeviceBuffer<std::uint8_t>& zeros,
                       const ::awq::cuda::DeviceBuffer<__half>& scales, QuantizedLinear& q) {
    namespace cu = ::awq::cuda;
    cudaStream_t st = backend::cuda::stream();
    q.codes.resize(static_cast<std::size_t>(q.out * q.in));
    q.zeros.resize(static_cast<std::size_t>(q.out * q.groups));
    std::vector<__half> s16(q.zeros.size());
    if (!q.codes.empty()) cu::check(cudaMemcpyAsync(q.codes.data(), codes.data(), q.codes.size(), cudaMemcpyDeviceToHost, st), "cudaMemcpyAsync");
    if (!q.zeros.empty()) {
      cu::check(cudaMemcpyAsync(q.zeros.data(), zeros.data(), q.zeros.size(), cudaMemcpyDeviceToHost, st), "cudaMemcpyAsync");
      cu::check(cudaMemcpyAsync(s16.data(), scales.data(), s16.size() * sizeof(__half), cudaMemcpyDeviceToHost, st), "cudaMemcpyAsync");
    }
    cu::check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
    q.scales.resize(s16.size());
    static_assert(sizeof(Eigen::half) == sizeof(__half), "fp16 is two bytes on both sides");
    if (!s16.empty()) std::memcpy(q.scales.data(), s16.data(), s16.size() * sizeof(__half));
  }
};

/// \brief On the GPU: 4-bit linears with groups of 32, 64 or 128 through the W4A16 kernels
///        (cuda::W4A16Linear, the tiled layout), activations rounded to fp16 on the way in, the
///        fp32 bias added on the way out; other quantizations get no op.
template <>
struct KernelLinear<backend::cuda> {
  /// The op for `q` (quantized with `spec`), `bias` device memory [out] or null.
  static LinearOp make(const QuantizedLinear& q, const QuantSpec& spec, const float* bias) {
    namespace cu = ::awq::cuda;
    const index_t g = q.groups > 0 ? q.in / q.groups : 0;
    if (spec.bits != 4 || !(g == 32 || g == 64 || g == 128) || q.out % 8 != 0) return {};
    struct State {
      cu::W4A16Linear linear;
      cu::DeviceBuffer<__half> x, y;
    };
    const auto st = std::make_shared<State>(State{cu::W4A16Linear(pack_awq_gemm(q, 4).view()), {}, {}});
    return [st, bias](const MatrixView<const float>& x, const MatrixView<float>& y) {
      namespace k = detail::finalize_cuda;
      constexpr const char* fn = "awq::model::KernelLinear<cuda>";
      detail::require(x.col_stride() == 1 && x.row_stride() == x.cols() && y.col_stride() == 1 && y.row_stride() == y.cols(), fn,
                      ": x and y must be contiguous");
      detail::require(x.cols() == st->linear.in_features() && y.cols() == st->linear.out_features() && y.rows() == x.rows(), fn,
                      ": x ", x.rows(), "x", x.cols(), " and y ", y.rows(), "x", y.cols(), " do not fit a ", st->linear.in_features(),
                      " -> ", st->linear.out_features(), " linear");
      if (x.rows() == 0) return;
      cudaStream_t s = backend::cuda::stream();
      cu::grow(st->x, static_cast<std::size_t>(x.size()));
      cu::grow(st->y, static_cast<std::size_t>(y.size()));
      k::to_half_kernel<><<<cu::detail::blocks_for(x.size(), 256, 1 << 16), 256, 0, s>>>(x.data(), x.size(), st->x.data());
      cu::check(cudaGetLastError(), "to_half_kernel launch");
      st->linear(st->x.data(), st->y.data(), static_cast<int>(x.rows()), static_cast<const __half*>(nullptr), s);
      k::from_half_kernel<><<<cu::detail::blocks_for(y.size(), 256, 1 << 16), 256, 0, s>>>(st->y.data(), y.rows(), y.cols(), bias, y.data());
      cu::check(cudaGetLastError(), "from_half_kernel launch");
    };
  }
};

}  // namespace awq::model
