/// \file
/// \brief `awq::backend::cuda`: the GPU policy (nvcc only). The same primitives as backend::cpu —
///        linear (cuBLAS), scaled pseudo-quantization, mean squared error, activation statistics,
///        finite checks, the clip search's error table — over views of device memory, so that
///        `search_scales<backend::cuda>` and `search_clip<backend::cuda>` run the one generic search
///        on the GPU.
///
/// Element types: float, __half, __nv_bfloat16 storage; every reduction in fp32 or double.
/// Work goes to the calling thread's stream (`cuda::StreamScope`; the legacy default stream when
/// none is set) through a per-thread cuBLAS handle. Every CUDA and cuBLAS status is checked and
/// raised as awq::Error. fp32 matrix products run in true fp32 (no TF32), so fp32 searches agree
/// with the CPU backend. Calls that return a host value (mse, the finite checks, the statistics)
/// synchronise the stream.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "awq/backend/cuda_runtime.cuh"
#include "awq/backend/type_tag.hpp"
#include "awq/config.hpp"
#include "awq/detail/first_min.hpp"
#include "awq/error.hpp"
#include "awq/kernels/cuda/pseudo_quantize.cuh"
#include "awq/quantizer.hpp"
#include "awq/view.hpp"

namespace awq {
namespace cuda {

/// Throws awq::Error naming `what` when a cuBLAS call did not succeed.
inline void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw Error(awq::detail::concat("awq cuBLAS error in ", what, ": status ", static_cast<int>(status)
#if CUBLAS_VERSION >= 11400
                                                                                     , " (", cublasGetStatusString(status), ")"
#endif
                                    ));
  }
}

/// \brief Owning, move-only cuBLAS handle.
class BlasHandle {
 public:
  BlasHandle() { check(cublasCreate(&h_), "cublasCreate"); }
  /// Takes `o`'s handle; `o` is left empty.
  BlasHandle(BlasHandle&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }
  BlasHandle& operator=(BlasHandle&&) = delete;
  BlasHandle(const BlasHandle&) = delete;
  BlasHandle& operator=(const BlasHandle&) = delete;
  ~BlasHandle() {
    if (h_) (void)cublasDestroy(h_);
  }
  cublasHandle_t get() const noexcept { return h_; }  ///< the raw handle

 private:
  cublasHandle_t h_ = nullptr;
};

/// \brief The calling thread's GPU state for backend::cuda: its stream, its cuBLAS handle (made
///        on first use, for the device current then) and small scratch buffers.
struct ThreadContext {
  cudaStream_t stream = nullptr;             ///< where backend::cuda enqueues work
  std::unique_ptr<BlasHandle> blas;          ///< lazily created
  DeviceBuffer<unsigned long long> flag;     ///< one word for "first bad index" searches
  DeviceBuffer<float> vec;                   ///< per-channel scales uploaded for a launch
  DeviceBuffer<double> partial;              ///< reduction partials
  DeviceBuffer<unsigned short> lowp;         ///< fp32 products' operands rounded to 16 bits (Math::fp16, bf16)
  /// The clip search's workspace, kept between calls (at most clip_workspace_bytes() for the
  /// deltas and their products, plus the tokens, Gram matrices and tables of the largest linear
  /// seen); release_thread_workspace() frees it.
  struct Clip {
    DeviceBuffer<double> d;           ///< weight deltas Q(W_c) − W of a row batch, all shrinks
    DeviceBuffer<double> y;           ///< the deltas times the Gram matrices
    DeviceBuffer<double> x;           ///< the token subsample, in double
    DeviceBuffer<double> gram;        ///< per-group Gram matrices X_gᵀX_g
    DeviceBuffer<double> err;         ///< the error table [shrink, row, group]
    DeviceBuffer<float> absmax;       ///< max |w| per (row, group)
    DeviceBuffer<int> best;           ///< the chosen shrink per (row, group)
    PinnedBuffer<int> best_host;      ///< `best`, on the host
    PinnedBuffer<float> absmax_host;  ///< `absmax`, on the host
  } clip;                             ///< the clip search's workspace
  /// An fp32 operand kept in 16 bits while a backend::cuda::HeldOperand lives (data null: none).
  struct Held {
    const float* data = nullptr;          ///< the operand's first element
    index_t rows = 0;                     ///< its rows
    index_t cols = 0;                     ///< its columns
    index_t ld = 0;                       ///< its row stride
    cudaDataType_t type = CUDA_R_16F;     ///< the 16-bit format of `values`
    cudaStream_t stream = nullptr;        ///< where `values` was written
    DeviceBuffer<unsigned short> values;  ///< rows × cols, row-major
  } held;                                 ///< see backend::cuda::hold_operand

  /// The handle, bound to `stream`.
  cublasHandle_t handle() {
    if (!blas) blas = std::make_unique<BlasHandle>();
    check(cublasSetStream(blas->get(), stream), "cublasSetStream");
    return blas->get();
  }
};

/// The calling thread's context.
inline ThreadContext& this_thread_context() {
  thread_local ThreadContext ctx;
  return ctx;
}

/// Frees the calling thread's kept workspaces (the clip search's, the rounded and held operands'); the
/// stream and handle stay.
inline void release_thread_workspace() {
  check(cudaStreamSynchronize(this_thread_context().stream), "cudaStreamSynchronize");
  this_thread_context().clip = ThreadContext::Clip{};
  this_thread_context().lowp = DeviceBuffer<unsigned short>{};
  this_thread_context().held = ThreadContext::Held{};
}

/// \brief Routes backend::cuda work of the calling thread to `stream` for the scope's lifetime.
class StreamScope {
 public:
  /// Routes to `stream` until the scope ends, then back to the previous stream.
  explicit StreamScope(cudaStream_t stream) : prev_(this_thread_context().stream) { this_thread_context().stream = stream; }
  ~StreamScope() { this_thread_context().stream = prev_; }
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  cudaStream_t prev_;
};

namespace detail {

template <class T>
struct cuda_type;
template <>
struct cuda_type<float> {
  static constexpr cudaDataType_t value = CUDA_R_32F;
  static constexpr const char* name = "fp32";
};
template <>
struct cuda_type<__half> {
  static constexpr cudaDataType_t value = CUDA_R_16F;
  static constexpr const char* name = "fp16";
};
template <>
struct cuda_type<__nv_bfloat16> {
  static constexpr cudaDataType_t value = CUDA_R_16BF;
  static constexpr const char* name = "bf16";
};

inline double host_value(float v) { return v; }
inline double host_value(__half v) { return __half2float(v); }
inline double host_value(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
T host_from_float(float v);
template <>
inline float host_from_float<float>(float v) { return v; }
template <>
inline __half host_from_float<__half>(float v) { return __float2half_rn(v); }
template <>
inline __nv_bfloat16 host_from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

inline unsigned blocks_for(index_t n, int threads, index_t cap = 65535 * 16) {
  return static_cast<unsigned>(std::max<index_t>(1, std::min<index_t>((n + threads - 1) / threads, cap)));
}

template <class T>
__global__ void find_nonfinite_kernel(MatrixView<const T> m, unsigned long long* bad) {
  // Rows over blocks, columns over threads: coalesced, and no 64-bit division per element.
  for (index_t r = blockIdx.x; r < m.rows(); r += gridDim.x)
    for (index_t c = threadIdx.x; c < m.cols(); c += blockDim.x)
      if (!isfinite(to_float(m(r, c)))) atomicMin(bad, static_cast<unsigned long long>(r * m.cols() + c));
}

// Column sums of |x| over a chunk of rows, in double: partial[chunk, c].
template <class T>
__global__ void col_abs_sum_kernel(MatrixView<const T> x, index_t rows_per_chunk, double* partial) {
  const index_t c = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= x.cols()) return;
  const index_t r0 = static_cast<index_t>(blockIdx.y) * rows_per_chunk;
  const index_t r1 = min(x.rows(), r0 + rows_per_chunk);
  double acc = 0.0;
  for (index_t r = r0; r < r1; ++r) acc += fabs(static_cast<double>(to_float(x(r, c))));
  partial[static_cast<index_t>(blockIdx.y) * x.cols() + c] = acc;
}

// AutoAWQ's w_mean numerators: partial[chunk, c] = Σ_rows |w(r,c)| / (max |w| of the group + 1e-6).
template <class T>
__global__ void duo_col_sum_kernel(MatrixView<const T> w, index_t g, index_t rows_per_chunk, double* partial) {
  const index_t c = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= w.cols()) return;
  const index_t r0 = static_cast<index_t>(blockIdx.y) * rows_per_chunk;
  const index_t r1 = min(w.rows(), r0 + rows_per_chunk);
  const index_t j0 = (c / g) * g;
  double acc = 0.0;
  for (index_t r = r0; r < r1; ++r) {
    float amax = 0.0f;
    for (index_t i = j0; i < j0 + g; ++i) amax = fmaxf(amax, fabsf(to_float(w(r, i))));  // L1-resident: g threads share it
    acc += static_cast<double>(fabsf(to_float(w(r, c))) / (amax + 1e-6f));
  }
  partial[static_cast<index_t>(blockIdx.y) * w.cols() + c] = acc;
}

// out[c] (+)= Σ_chunk partial[chunk, c], in chunk order.
template <int = 0>  // a template: header kernels need one definition per program
__global__ void sum_chunks_kernel(const double* partial, index_t chunks, index_t cols, double* out, bool accumulate) {
  const index_t c = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  double acc = accumulate ? out[c] : 0.0;
  for (index_t k = 0; k < chunks; ++k) acc += partial[k * cols + c];
  out[c] = acc;
}

// One warp per (row, group): out = Q(w·s)/s, as backend::cpu::scaled_pseudo_quantize.
template <class Fmt, class T>
__global__ void scaled_pseudo_quantize_kernel(MatrixView<const T> w, const float* s, index_t g, MatrixView<T> out) {
  const index_t ng = w.cols() / g;
  const index_t warp = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= w.rows() * ng) return;
  const index_t r = warp / ng, j0 = (warp % ng) * g;
  const GroupParams<float> p = warp_group_params<Fmt>(j0, g, lane, [&](index_t i) { return to_float(w(r, i)) * s[i]; });
  for (index_t i = j0 + lane; i < j0 + g; i += 32) {
    const float v = to_float(w(r, i)) * s[i];
    out(r, i) = from_float<T>(fake_quantize_value<Fmt>(v, p) / s[i]);
  }
}

// Fixed-order partial sums of (a - b)^2 in double: one per block (deterministic).
template <int = 0>  // a template: header kernels need one definition per program
__global__ void sq_diff_kernel(MatrixView<const float> a, MatrixView<const float> b, double* partial) {
  __shared__ double sh[256];
  double acc = 0.0;
  for (index_t r = blockIdx.x; r < a.rows(); r += gridDim.x)  // rows over blocks, columns over threads
    for (index_t c = threadIdx.x; c < a.cols(); c += blockDim.x) {
      const double d = static_cast<double>(a(r, c)) - static_cast<double>(b(r, c));
      acc += d * d;
    }
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (int s = 128; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

__device__ inline void round_to(float v, __half& out) { out = __float2half_rn(v); }
__device__ inline void round_to(float v, __nv_bfloat16& out) { out = __float2bfloat16_rn(v); }

// Rounds x (contiguous rows) to L into a packed [rows, cols] copy: rows over blocks, columns over threads.
template <class L>
__global__ void round_rows_kernel(MatrixView<const float> x, L* out) {
  for (index_t r = blockIdx.x; r < x.rows(); r += gridDim.x) {
    const float* in = &x(r, 0);
    L* o = out + r * x.cols();
    for (index_t c = threadIdx.x; c < x.cols(); c += blockDim.x) round_to(in[c], o[c]);
  }
}

// round_rows_kernel on stream st; nothing to do for an empty x.
template <class L>
void round_rows(const MatrixView<const float>& x, L* out, cudaStream_t st) {
  if (x.size() == 0) return;
  round_rows_kernel<L><<<blocks_for(x.rows(), 1, 8192), 256, 0, st>>>(x, out);
  check(cudaGetLastError(), "round_rows_kernel launch");
}

template <class T, class B>
__global__ void add_bias_kernel(MatrixView<T> y, const B* bias) {
  for (index_t r = blockIdx.x; r < y.rows(); r += gridDim.x)
    for (index_t c = threadIdx.x; c < y.cols(); c += blockDim.x) y(r, c) = from_float<T>(to_float(y(r, c)) + to_float(bias[c]));
}

template <class T>
__global__ void to_double_kernel(MatrixView<const T> x, double* out) {
  for (index_t r = blockIdx.x; r < x.rows(); r += gridDim.x)
    for (index_t c = threadIdx.x; c < x.cols(); c += blockDim.x) out[r * x.cols() + c] = static_cast<double>(to_float(x(r, c)));
}

// One warp per (row, group): max |w| of the group.
template <class T>
__global__ void group_absmax_kernel(MatrixView<const T> w, index_t g, float* absmax) {
  const index_t ng = w.cols() / g;
  const index_t warp = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= w.rows() * ng) return;
  const index_t r = warp / ng, j0 = (warp % ng) * g;
  float m = 0.0f;
  for (index_t i = j0 + lane; i < j0 + g; i += 32) m = fmaxf(m, fabsf(to_float(w(r, i))));
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  if (lane == 0) absmax[warp] = m;
}

// One warp per (row of the chunk, group): for every shrink i, d = Q(clamp(w)) − w (formed in
// fp32, stored in double) into D[(i·rc + r)·k + column], the clamp bound absmax · (1 − i/n_grid)
// as the CPU forms it. Rows nr..rc of a short last chunk are left alone.
template <class Fmt, class T>
__global__ void clip_delta_kernel(MatrixView<const T> w, index_t r0, index_t rc, index_t nr, index_t g,
                                  const float* absmax, int n_shrink, int n_grid, double* D) {
  const index_t k = w.cols(), ng = k / g;
  const index_t warp = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= nr * ng) return;
  const index_t r = warp / ng, j0 = (warp % ng) * g;
  const float amax = absmax[(r0 + r) * ng + warp % ng];
  for (int i_s = 0; i_s < n_shrink; ++i_s) {
    const float c = amax * static_cast<float>(1.0 - static_cast<double>(i_s) / n_grid);
    const GroupParams<float> p = warp_group_params<Fmt>(
        j0, g, lane, [&](index_t i) { return awq::detail::clamp(to_float(w(r0 + r, i)), -c, c); });
    for (index_t i = j0 + lane; i < j0 + g; i += 32) {
      const float v = to_float(w(r0 + r, i));
      D[(static_cast<index_t>(i_s) * rc + r) * k + i] =
          static_cast<double>(fake_quantize_value<Fmt>(awq::detail::clamp(v, -c, c), p)) - static_cast<double>(v);
    }
  }
}

// One warp per (row rr = i·rc + r of the chunk, group j): err[(i·rows + r0 + r)·ng + j] =
// d·(G_j d) / nt, summed over the group in double.
template <int = 0>  // a template: header kernels need one definition per program
__global__ void clip_quadform_kernel(const double* D, const double* Y, index_t k, index_t g, index_t rc, index_t nr,
                                            int n_shrink, index_t r0, index_t rows, index_t nt, double* err) {
  const index_t ng = k / g;
  const index_t warp = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= static_cast<index_t>(n_shrink) * rc * ng) return;
  const index_t rr = warp / ng, j = warp % ng, r = rr % rc;
  if (r >= nr) return;
  double acc = 0.0;
  for (index_t i = j * g + lane; i < (j + 1) * g; i += 32) acc += D[rr * k + i] * Y[rr * k + i];
  for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) err[((rr / rc) * rows + r0 + r) * ng + j] = acc / static_cast<double>(nt);
}

// best[o] = first strict minimum over the shrinks of err[i·n + o] (the host rule, on the device).
template <int = 0>  // a template: header kernels need one definition per program
__global__ void clip_choose_kernel(const double* err, index_t n, int n_shrink, int* best) {
  for (index_t o = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < n;
       o += static_cast<index_t>(gridDim.x) * blockDim.x)
    best[o] = ::awq::detail::first_strict_min(err + o, n, n_shrink);
}

// m(r, c) · s (or / s) with s = s[c] (by_col) or s[r]: folding scales on the device.
template <class S>
__global__ void scale_kernel(MatrixView<S> m, const float* s, bool by_col, bool divide) {
  for (index_t r = blockIdx.x; r < m.rows(); r += gridDim.x)
    for (index_t c = threadIdx.x; c < m.cols(); c += blockDim.x) {
      const float f = s[by_col ? c : r], v = to_float(m(r, c));
      m(r, c) = from_float<S>(divide ? v / f : v * f);
    }
}

// w(r, c) = clamp(w(r, c), −b, b) with b = bound[r · groups + c / g].
template <class S>
__global__ void clamp_groups_kernel(MatrixView<S> w, index_t g, const float* bound) {
  const index_t groups = w.cols() / g;
  for (index_t r = blockIdx.x; r < w.rows(); r += gridDim.x)
    for (index_t c = threadIdx.x; c < w.cols(); c += blockDim.x) {
      const float b = bound[r * groups + c / g];
      w(r, c) = from_float<S>(::awq::detail::clamp(to_float(w(r, c)), -b, b));
    }
}

// out(r, c) = a(r, c) − b(r, c).
template <class S>
__global__ void subtract_kernel(MatrixView<const S> a, MatrixView<const S> b, MatrixView<S> out) {
  for (index_t r = blockIdx.x; r < a.rows(); r += gridDim.x)
    for (index_t c = threadIdx.x; c < a.cols(); c += blockDim.x) out(r, c) = a(r, c) - b(r, c);
}

template <class T>
void require_device_rows(const char* fn, const MatrixView<T>& v, const char* what) {
  awq::detail::require(v.col_stride() == 1 && v.row_stride() >= v.cols(), fn, ": ", what,
                       " must be row-major with contiguous rows (col_stride ", v.col_stride(), ", row_stride ",
                       v.row_stride(), ")");
}

}  // namespace detail
}  // namespace cuda

namespace backend {

/// \brief The GPU backend policy. Every view is device memory; see the file comment.
///
/// S (storage) is float, __half or __nv_bfloat16; `F = acc_t<S>` (float) is the type of block
/// outputs, scales and statistics.
struct cuda {
  static constexpr const char* name = "cuda";  ///< backend name for reports

  /// Owning device array of n elements (cudaMalloc; never managed memory).
  template <class T>
  using buffer = ::awq::cuda::DeviceBuffer<T>;

  /// The calling thread's stream.
  static cudaStream_t stream() { return ::awq::cuda::this_thread_context().stream; }

  /// \brief How products of fp32 storage run (linear, the Llama policy's attention); the
  ///        accumulation is fp32 in every mode.
  enum class Math {
    fp32,  ///< fp32 inputs: the CPU's precision (the default)
    tf32,  ///< TF32 tensor cores: inputs rounded to a 10-bit mantissa by cuBLAS
    fp16,  ///< linear's operands rounded to fp16 (10-bit mantissa, range ±65504) and multiplied
           ///< at the fp16 tensor rate, twice TF32's on Hopper; what the reference's fp16 model computes
    bf16,  ///< as fp16 with bfloat16 operands (7-bit mantissa, fp32's range)
  };
  /// Sets the math of fp32 products, process-wide.
  static void set_math(Math m) { math_flag().store(m); }
  /// \brief Sets the math for the scope's lifetime, then restores the one before (process-wide,
  ///        as set_math).
  class MathScope {
   public:
    explicit MathScope(Math m) : prev_(math()) { set_math(m); }  ///< sets m
    ~MathScope() { set_math(prev_); }
    MathScope(const MathScope&) = delete;
    MathScope& operator=(const MathScope&) = delete;

   private:
    Math prev_;
  };
  /// The math in effect.
  static Math math() { return math_flag().load(); }
  /// set_math(Math::tf32) or set_math(Math::fp32).
  static void set_tf32(bool on) { set_math(on ? Math::tf32 : Math::fp32); }
  /// Whether the math is TF32.
  static bool tf32() { return math() == Math::tf32; }
  /// The cuBLAS compute type of a product with storage S under the current math (the 16-bit
  /// modes let cuBLAS down-convert fp32 inputs where linear does not round them itself).
  template <class S>
  static cublasComputeType_t compute_type() {
    if (!std::is_same_v<S, float>) return CUBLAS_COMPUTE_32F;
    switch (math()) {
      case Math::tf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
      case Math::fp16: return CUBLAS_COMPUTE_32F_FAST_16F;
      case Math::bf16: return CUBLAS_COMPUTE_32F_FAST_16BF;
      default: return CUBLAS_COMPUTE_32F;
    }
  }

  /// A device buffer holding a copy of n host values.
  template <class T>
  static buffer<T> upload(const T* host, std::size_t n) {
    buffer<T> b(n);
    b.upload(host, n);
    return b;
  }

  /// Copies n values from device memory to the host (synchronises the stream).
  template <class T>
  static void download(const T* src, std::size_t n, T* host) {
    namespace cu = ::awq::cuda;
    if (n) cu::check(cudaMemcpyAsync(host, src, n * sizeof(T), cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync device->host");
    cu::check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
  }

  /// Waits for the calling thread's stream (phase timings).
  static void synchronize() { ::awq::cuda::check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize"); }

  /// m(r, c) · s[c] (or / s[c]) in place on the device; s on the host (see backend::cpu::scale_cols).
  template <class S>
  static void scale_cols(const MatrixView<S>& m, const std::vector<float>& s, bool divide) {
    detail::require(static_cast<index_t>(s.size()) == m.cols(), "awq::backend::cuda::scale_cols: ", s.size(), " scales for ",
                    m.cols(), " columns");
    scale(m, s, true, divide);
  }

  /// m(r, c) · s[r] (or / s[r]) in place on the device (see backend::cpu::scale_rows).
  template <class S>
  static void scale_rows(const MatrixView<S>& m, const std::vector<float>& s, bool divide) {
    detail::require(static_cast<index_t>(s.size()) == m.rows(), "awq::backend::cuda::scale_rows: ", s.size(), " scales for ",
                    m.rows(), " rows");
    scale(m, s, false, divide);
  }

  /// out = a − b on the device, elementwise (out may be a or b).
  template <class S>
  static void subtract(const MatrixView<const S>& a, const MatrixView<const S>& b, const MatrixView<S>& out) {
    namespace cu = ::awq::cuda;
    detail::require(a.rows() == b.rows() && a.cols() == b.cols(), "awq::backend::cuda::subtract: a is ", a.rows(), "x", a.cols(),
                    " but b is ", b.rows(), "x", b.cols());
    detail::require_shape(out, a.rows(), a.cols(), "awq::backend::cuda::subtract", "out");
    if (a.rows() == 0 || a.cols() == 0) return;
    cu::detail::subtract_kernel<S><<<cu::detail::blocks_for(a.rows(), 1, 8192), 256, 0, stream()>>>(a, b, out);
    cu::check(cudaGetLastError(), "subtract_kernel launch");
  }

  /// w(r, c) = clamp(w(r, c), −b, b), b = bound(r, c / group), bound [rows, groups] on the host.
  template <class S>
  static void clamp_groups(const MatrixView<S>& w, const MatrixView<const float>& bound) {
    namespace cu = ::awq::cuda;
    detail::require(bound.cols() > 0 && bound.rows() == w.rows() && w.cols() % bound.cols() == 0,
                    "awq::backend::cuda::clamp_groups: bounds [", bound.rows(), ", ", bound.cols(), "] do not fit w [", w.rows(),
                    ", ", w.cols(), "]");
    detail::require(bound.row_stride() == bound.cols() && bound.col_stride() == 1, "awq::backend::cuda::clamp_groups: bounds must be contiguous");
    const cu::DeviceBuffer<float> b = upload(bound.data(), static_cast<std::size_t>(bound.size()));
    cu::detail::clamp_groups_kernel<S><<<cu::detail::blocks_for(w.rows(), 1, 8192), 256, 0, stream()>>>(w, w.cols() / bound.cols(), b.data());
    cu::check(cudaGetLastError(), "clamp_groups_kernel launch");
    cu::check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
  }

  /// Throws awq::Error naming `what`, the value, its row (× `row_step`) and column when the device
  /// matrix m holds a NaN or an infinity. Synchronises the stream.
  template <class S>
  static void check_finite(const char* fn, const char* what, const MatrixView<const S>& m, index_t row_step = 1) {
    namespace cu = ::awq::cuda;
    if (m.size() == 0) return;
    auto& ctx = cu::this_thread_context();
    if (ctx.flag.size() < 1) ctx.flag = cu::DeviceBuffer<unsigned long long>(1);
    const unsigned long long none = ULLONG_MAX;
    cu::check(cudaMemcpyAsync(ctx.flag.data(), &none, sizeof(none), cudaMemcpyHostToDevice, ctx.stream), "cudaMemcpyAsync");
    cu::detail::find_nonfinite_kernel<S><<<cu::detail::blocks_for(m.rows(), 1, 4096), 256, 0, ctx.stream>>>(m, ctx.flag.data());
    cu::check(cudaGetLastError(), "find_nonfinite_kernel launch");
    unsigned long long first = none;
    cu::check(cudaMemcpyAsync(&first, ctx.flag.data(), sizeof(first), cudaMemcpyDeviceToHost, ctx.stream), "cudaMemcpyAsync");
    cu::check(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");
    if (first == none) return;
    const auto idx = static_cast<index_t>(first);
    const index_t r = idx / m.cols(), c = idx % m.cols();
    S v{};
    cu::check(cudaMemcpy(&v, &m(r, c), sizeof(S), cudaMemcpyDeviceToHost), "cudaMemcpy");
    throw Error(detail::concat(fn, ": non-finite ", what, " value ", cu::detail::host_value(v), " at row ", r * row_step,
                               ", column ", c));
  }

  /// Mean |x| per input channel over the rows of x (sums in double, fixed order).
  template <class S>
  static std::vector<acc_t<S>> channel_abs_mean(const MatrixView<const S>& x) {
    namespace cu = ::awq::cuda;
    detail::require(x.rows() > 0 && x.cols() > 0, "awq::backend::cuda::channel_abs_mean: x is empty");
    auto& ctx = cu::this_thread_context();
    const index_t rpc = 1024, chunks = (x.rows() + rpc - 1) / rpc;
    cu::DeviceBuffer<double> partial(static_cast<std::size_t>(chunks * x.cols())), sum(static_cast<std::size_t>(x.cols()));
    const dim3 grid(cu::detail::blocks_for(x.cols(), 128), static_cast<unsigned>(chunks));
    cu::detail::col_abs_sum_kernel<S><<<grid, 128, 0, ctx.stream>>>(x, rpc, partial.data());
    cu::check(cudaGetLastError(), "col_abs_sum_kernel launch");
    cu::detail::sum_chunks_kernel<><<<cu::detail::blocks_for(x.cols(), 128), 128, 0, ctx.stream>>>(
        partial.data(), chunks, x.cols(), sum.data(), false);
    cu::check(cudaGetLastError(), "sum_chunks_kernel launch");
    const auto h = fetch(sum);
    std::vector<acc_t<S>> out(h.size());
    for (std::size_t c = 0; c < h.size(); ++c) out[c] = static_cast<acc_t<S>>(h[c] / static_cast<double>(x.rows()));
    return out;
  }

  /// AutoAWQ's w_mean over the stacked rows of `weights` (see backend::cpu::duo_weight_mean).
  template <class S>
  static std::vector<acc_t<S>> duo_weight_mean(const std::vector<MatrixView<const S>>& weights, index_t g) {
    namespace cu = ::awq::cuda;
    auto& ctx = cu::this_thread_context();
    const index_t k = weights.front().cols(), rpc = 256;
    cu::DeviceBuffer<double> sum(static_cast<std::size_t>(k));
    index_t rows = 0;
    bool first = true;
    for (const auto& w : weights) {
      if (w.rows() == 0) continue;
      const index_t chunks = (w.rows() + rpc - 1) / rpc;
      cu::DeviceBuffer<double> partial(static_cast<std::size_t>(chunks * k));
      const dim3 grid(cu::detail::blocks_for(k, 128), static_cast<unsigned>(chunks));
      cu::detail::duo_col_sum_kernel<S><<<grid, 128, 0, ctx.stream>>>(w, g, rpc, partial.data());
      cu::check(cudaGetLastError(), "duo_col_sum_kernel launch");
      cu::detail::sum_chunks_kernel<><<<cu::detail::blocks_for(k, 128), 128, 0, ctx.stream>>>(partial.data(), chunks, k,
                                                                                            sum.data(), !first);
      cu::check(cudaGetLastError(), "sum_chunks_kernel launch");
      cu::check(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");  // before `partial` is freed
      first = false;
      rows += w.rows();
    }
    detail::require(rows > 0, "awq::backend::cuda::duo_weight_mean: no weight row");
    const auto h = fetch(sum);
    std::vector<acc_t<S>> out(h.size());
    for (std::size_t c = 0; c < h.size(); ++c) out[c] = static_cast<acc_t<S>>(h[c] / static_cast<double>(rows));
    return out;
  }

  /// out [n, k] = rows 0, step, 2·step, … of x (one strided device copy).
  template <class S>
  static void gather_rows(const MatrixView<const S>& x, index_t step, const MatrixView<S>& out) {
    namespace cu = ::awq::cuda;
    constexpr const char* fn = "awq::backend::cuda::gather_rows";
    detail::require(out.cols() == x.cols() && (out.rows() - 1) * step < x.rows(), fn, ": ", out.rows(),
                    " rows of step ", step, " do not fit x with ", x.rows(), " rows");
    cu::detail::require_device_rows(fn, x, "x");
    cu::detail::require_device_rows(fn, out, "out");
    cu::check(cudaMemcpy2DAsync(out.data(), static_cast<std::size_t>(out.row_stride()) * sizeof(S), x.data(),
                                static_cast<std::size_t>(x.row_stride() * step) * sizeof(S),
                                static_cast<std::size_t>(x.cols()) * sizeof(S), static_cast<std::size_t>(out.rows()),
                                cudaMemcpyDeviceToDevice, stream()),
              "cudaMemcpy2DAsync");
  }

  /// \brief While alive, linear under Math::fp16 / bf16 reads this x from one 16-bit copy made
  ///        when it was created, instead of rounding x on every call: for a caller that multiplies
  ///        the same x many times (a scale search, once per grid point). x must not change while
  ///        it lives; a thread holds one operand at a time (a newer one replaces it). The copy is
  ///        freed when the hold ends.
  class HeldOperand {
   public:
    HeldOperand() = default;  ///< holds nothing
    /// Takes `o`'s hold; `o` holds nothing.
    HeldOperand(HeldOperand&& o) noexcept : data_(o.data_) { o.data_ = nullptr; }
    HeldOperand& operator=(HeldOperand&&) = delete;
    HeldOperand(const HeldOperand&) = delete;
    HeldOperand& operator=(const HeldOperand&) = delete;
    ~HeldOperand() {
      auto& h = ::awq::cuda::this_thread_context().held;
      if (data_ && h.data == data_) h = ::awq::cuda::ThreadContext::Held{};  // frees the copy (synchronizing)
    }

   private:
    friend struct cuda;
    explicit HeldOperand(const float* data) : data_(data) {}
    const float* data_ = nullptr;
  };

  /// Holds x in the current 16-bit math's format (see HeldOperand); under fp32 or tf32, or for
  /// 16-bit storage, products read x as stored and nothing is held.
  template <class S>
  static HeldOperand hold_operand(const MatrixView<const S>& x) {
    namespace cu = ::awq::cuda;
    const Math m = math();
    if constexpr (!std::is_same_v<S, float>) {
      return HeldOperand();
    } else {
      if ((m != Math::fp16 && m != Math::bf16) || x.size() == 0) return HeldOperand();
      cu::detail::require_device_rows("awq::backend::cuda::hold_operand", x, "x");
      auto& ctx = cu::this_thread_context();
      auto& h = ctx.held;
      h.data = nullptr;
      if (h.values.size() != static_cast<std::size_t>(x.size())) h.values = cu::DeviceBuffer<unsigned short>(static_cast<std::size_t>(x.size()));
      if (m == Math::fp16) round_into<__half>(x, h.values.data());
      else round_into<__nv_bfloat16>(x, h.values.data());
      h.type = m == Math::fp16 ? CUDA_R_16F : CUDA_R_16BF;
      h.data = x.data(), h.rows = x.rows(), h.cols = x.cols(), h.ld = x.row_stride(), h.stream = ctx.stream;
      return HeldOperand(x.data());
    }
  }

  /// \brief Calls f(type_tag<A>{}) with A the type search modules keep their intermediate
  ///        activations in (a Llama MLP's gate, up and product; q, k, v and the attention context):
  ///        __half under Math::fp16 and __nv_bfloat16 under bf16, as the reference's 16-bit model
  ///        stores them (the element-wise work between the products moves half the bytes), float
  ///        otherwise.
  template <class F>
  static void with_activation(F&& f) {
    switch (math()) {
      case Math::fp16: f(type_tag<__half>{}); break;
      case Math::bf16: f(type_tag<__nv_bfloat16>{}); break;
      default: f(type_tag<float>{});
    }
  }

  /// Throws awq::Error (naming fn and what) unless A is the activation type of the math in effect
  /// (with_activation): a 16-bit operand stored for another math.
  template <class A>
  static void require_activation(const char* fn, const char* what) {
    const Math m = math();
    detail::require(std::is_same_v<A, float> ? (m != Math::fp16 && m != Math::bf16)
                                             : (m == Math::fp16 && std::is_same_v<A, __half>) ||
                                                   (m == Math::bf16 && std::is_same_v<A, __nv_bfloat16>),
                    fn, ": ", what, " is ", ::awq::cuda::detail::cuda_type<A>::name,
                    " but the math is not (fp16 operands need Math::fp16, bf16 Math::bf16)");
  }

  /// y [T, N] = x [T, K] · w [N, K]ᵀ (+ bias [N] when non-null), through cublasGemmEx with fp32
  /// accumulation; y is S or float. With fp32 storage under Math::fp16 or bf16, x and w are
  /// rounded to 16 bits into the thread's workspace first (cuBLAS's own down-converting compute
  /// types run at the TF32 rate only), and y may also be of that 16-bit type.
  template <class S, class Y>
  static void linear(const MatrixView<const S>& x, const MatrixView<const S>& w, const S* bias, const MatrixView<Y>& y) {
    if constexpr (std::is_same_v<S, float>) {
      const Math m = math();
      if (m == Math::fp16) return linear_rounded<__half>(x, w, bias, y);
      if (m == Math::bf16) return linear_rounded<__nv_bfloat16>(x, w, bias, y);
    }
    require_output<S, Y>();
    linear_as_stored(x, w, bias, y);
  }

  /// y = x · wᵀ (+ bias) for x of the 16-bit type A that the math names (a search module's
  /// activation: with_activation) and fp32 weights, which are rounded to A first; y is A or float.
  template <class A, class Y, std::enable_if_t<!std::is_same_v<A, float>, int> = 0>
  static void linear(const MatrixView<const A>& x, const MatrixView<const float>& w, const float* bias, const MatrixView<Y>& y) {
    constexpr const char* fn = "awq::backend::cuda::linear";
    require_activation<A>(fn, "x");
    ::awq::cuda::detail::require_device_rows(fn, w, "w");
    linear_rounded_w<A, Y>(x, w, bias, y, lowp_space<A>(static_cast<std::size_t>(w.size())));
  }

 private:
  // x [rows, cols] rounded into out (row-major) on the thread's stream.
  template <class L>
  static void round_into(const MatrixView<const float>& x, unsigned short* out) {
    namespace cu = ::awq::cuda;
    cu::detail::round_rows<L>(x, reinterpret_cast<L*>(out), stream());
  }

  // The held 16-bit copy of x (hold_operand), or null when x is not the held operand in format L.
  template <class L>
  static const L* held_copy(const MatrixView<const float>& x) {
    namespace cu = ::awq::cuda;
    auto& ctx = cu::this_thread_context();
    const auto& h = ctx.held;
    if (h.data == nullptr || h.data != x.data() || h.rows != x.rows() || h.cols != x.cols() || h.ld != x.row_stride() ||
        h.type != cu::detail::cuda_type<L>::value)
      return nullptr;
    if (h.stream != ctx.stream) cu::check(cudaStreamSynchronize(h.stream), "cudaStreamSynchronize");  // written elsewhere
    return reinterpret_cast<const L*>(h.values.data());
  }

  // The thread's 16-bit workspace as n values of L, regrown if smaller (its values are lost then).
  template <class L>
  static L* lowp_space(std::size_t n) {
    auto& ctx = ::awq::cuda::this_thread_context();
    if (ctx.lowp.size() < n) ctx.lowp = ::awq::cuda::DeviceBuffer<unsigned short>(n);  // the old one is freed (synchronizing) first
    return reinterpret_cast<L*>(ctx.lowp.data());
  }

  // y, the product of operands of type S, is float or S.
  template <class S, class Y>
  static void require_output() {
    namespace cu = ::awq::cuda;
    detail::require(std::is_same_v<Y, float> || std::is_same_v<Y, S>, "awq::backend::cuda::linear: y is ", cu::detail::cuda_type<Y>::name,
                    " but the product's operands are ", cu::detail::cuda_type<S>::name, " (16-bit outputs need the matching Math)");
  }

  template <class L, class Y>
  static void linear_rounded(const MatrixView<const float>& x, const MatrixView<const float>& w, const float* bias,
                             const MatrixView<Y>& y) {
    namespace cu = ::awq::cuda;
    constexpr const char* fn = "awq::backend::cuda::linear";
    cu::detail::require_device_rows(fn, x, "x");
    cu::detail::require_device_rows(fn, w, "w");
    const L* held = held_copy<L>(x);
    const auto nx = held ? std::size_t{0} : static_cast<std::size_t>(x.size());
    L* space = lowp_space<L>(nx + static_cast<std::size_t>(w.size()));
    if (!held) cu::detail::round_rows<L>(x, space, stream());
    linear_rounded_w<L, Y>(make_row_major<const L>(held ? held : space, x.rows(), x.cols()), w, bias, y, space + nx);
  }

  // y = x · wᵀ (+ bias in fp32 after the product) with w rounded to L into wl (w.size() values).
  template <class L, class Y>
  static void linear_rounded_w(const MatrixView<const L>& x, const MatrixView<const float>& w, const float* bias, const MatrixView<Y>& y,
                               L* wl) {
    namespace cu = ::awq::cuda;
    require_output<L, Y>();
    cu::detail::round_rows<L>(w, wl, stream());
    linear_as_stored<L, Y>(x, make_row_major<const L>(wl, w.rows(), w.cols()), nullptr, y);
    if (bias) {
      cu::detail::add_bias_kernel<Y, float><<<cu::detail::blocks_for(y.rows(), 1, 8192), 256, 0, stream()>>>(y, bias);
      cu::check(cudaGetLastError(), "add_bias_kernel launch");
    }
  }

  template <class S, class Y>
  static void linear_as_stored(const MatrixView<const S>& x, const MatrixView<const S>& w, const S* bias, const MatrixView<Y>& y) {
    namespace cu = ::awq::cuda;
    constexpr const char* fn = "awq::backend::cuda::linear";
    detail::require(x.cols() == w.cols(), fn, ": x has ", x.cols(), " columns but w has ", w.cols());
    detail::require_shape(y, x.rows(), w.rows(), fn, "y");
    cu::detail::require_device_rows(fn, x, "x");
    cu::detail::require_device_rows(fn, w, "w");
    cu::detail::require_device_rows(fn, y, "y");
    if (y.size() == 0) return;
    for (index_t d : {x.rows(), w.rows(), x.cols(), x.row_stride(), w.row_stride(), y.row_stride()})
      detail::require(d <= INT_MAX, fn, ": dimension ", d, " exceeds cuBLAS's int range");
    auto& ctx = cu::this_thread_context();
    const float one = 1.0f, zero = 0.0f;
    cu::check(cublasGemmEx(ctx.handle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows()), static_cast<int>(x.rows()),
                           static_cast<int>(x.cols()), &one, w.data(), cu::detail::cuda_type<S>::value,
                           static_cast<int>(w.row_stride()), x.data(), cu::detail::cuda_type<S>::value,
                           static_cast<int>(x.row_stride()), &zero, y.data(), cu::detail::cuda_type<Y>::value,
                           static_cast<int>(y.row_stride()), compute_type<S>(), CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx (awq::backend::cuda::linear)");
    if (bias) {
      cu::detail::add_bias_kernel<Y, S><<<cu::detail::blocks_for(y.rows(), 1, 8192), 256, 0, ctx.stream>>>(y, bias);
      cu::check(cudaGetLastError(), "add_bias_kernel launch");
    }
  }

 public:
  /// out [K, K] = xᵀ · x for x [T, K] in device memory (see backend::cpu::gram), accumulated in
  /// fp32. Under Math::fp16 or bf16 x is rounded to 16 bits first, as linear rounds it (GPTQ's own
  /// Hessian of a 16-bit model's activations: their products are exact in fp32), at the 16-bit
  /// tensor rate; otherwise in true fp32, also under Math::tf32: GPTQ's factor is sensitive to the
  /// Hessian's small eigenvalues, which TF32's 10-bit rounding of fp32 activations would move.
  template <class S>
  static void gram(const MatrixView<const S>& x, const MatrixView<S>& out) {
    namespace cu = ::awq::cuda;
    static_assert(std::is_same_v<S, float>, "backend::cuda::gram: float only");
    constexpr const char* fn = "awq::backend::cuda::gram";
    const index_t k = x.cols();
    detail::require_shape(out, k, k, fn, "out");
    cu::detail::require_device_rows(fn, x, "x");
    cu::detail::require_device_rows(fn, out, "out");
    if (k == 0) return;
    for (index_t d : {x.rows(), k, x.row_stride(), out.row_stride()})
      detail::require(d <= INT_MAX, fn, ": dimension ", d, " exceeds cuBLAS's int range");
    auto& ctx = cu::this_thread_context();
    if (x.rows() == 0) {
      cu::check(cudaMemset2DAsync(out.data(), static_cast<std::size_t>(out.row_stride()) * sizeof(S), 0,
                                  static_cast<std::size_t>(k) * sizeof(S), static_cast<std::size_t>(k), ctx.stream),
                "cudaMemset2DAsync");
      return;
    }
    const Math m = math();
    if (m == Math::fp16) return gram_rounded<__half>(x, out);
    if (m == Math::bf16) return gram_rounded<__nv_bfloat16>(x, out);
    gram_as_stored(x.data(), CUDA_R_32F, x.rows(), k, x.row_stride(), out);
  }

 private:
  template <class L>
  static void gram_rounded(const MatrixView<const float>& x, const MatrixView<float>& out) {
    namespace cu = ::awq::cuda;
    auto& ctx = cu::this_thread_context();
    const auto nx = static_cast<std::size_t>(x.size());
    if (ctx.lowp.size() < nx) ctx.lowp = cu::DeviceBuffer<unsigned short>(nx);  // the old one is freed (synchronizing) first
    L* xl = reinterpret_cast<L*>(ctx.lowp.data());
    cu::detail::round_rows<L>(x, xl, ctx.stream);
    gram_as_stored(xl, cu::detail::cuda_type<L>::value, x.rows(), x.cols(), x.cols(), out);
  }

  // out = xᵀ · x for x [t, k] row-major with row stride ld, of cuBLAS type `type`, fp32 sums.
  static void gram_as_stored(const void* x, cudaDataType type, index_t t, index_t k, index_t ld, const MatrixView<float>& out) {
    namespace cu = ::awq::cuda;
    // Row-major x is column-major xᵀ [K, T]: out = xᵀ · (xᵀ)ᵀ, symmetric, so row- or column-major alike.
    const float one = 1.0f, zero = 0.0f;
    const int ki = static_cast<int>(k), ldi = static_cast<int>(ld);
    cu::check(cublasGemmEx(cu::this_thread_context().handle(), CUBLAS_OP_N, CUBLAS_OP_T, ki, ki, static_cast<int>(t), &one, x, type, ldi, x,
                           type, ldi, &zero, out.data(), CUDA_R_32F, static_cast<int>(out.row_stride()), CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx (awq::backend::cuda::gram)");
  }

 public:
  /// out [M, N] = aᵀ · b for a [T, M] and b [T, N] in device memory (see backend::cpu::cross_gram),
  /// accumulated in fp32, with gram's precision: under Math::fp16 or bf16 both operands rounded
  /// to 16 bits first, at the 16-bit tensor rate (GPTQ's target takes a linear's input and its
  /// difference from the full-precision model's, each of which keeps its own relative precision);
  /// otherwise in true fp32.
  template <class S>
  static void cross_gram(const MatrixView<const S>& a, const MatrixView<const S>& b, const MatrixView<S>& out) {
    namespace cu = ::awq::cuda;
    static_assert(std::is_same_v<S, float>, "backend::cuda::cross_gram: float only");
    constexpr const char* fn = "awq::backend::cuda::cross_gram";
    detail::require(a.rows() == b.rows(), fn, ": a has ", a.rows(), " rows but b has ", b.rows());
    detail::require_shape(out, a.cols(), b.cols(), fn, "out");
    cu::detail::require_device_rows(fn, a, "a");
    cu::detail::require_device_rows(fn, b, "b");
    cu::detail::require_device_rows(fn, out, "out");
    if (a.cols() == 0 || b.cols() == 0) return;
    for (index_t d : {a.rows(), a.cols(), b.cols(), a.row_stride(), b.row_stride(), out.row_stride()})
      detail::require(d <= INT_MAX, fn, ": dimension ", d, " exceeds cuBLAS's int range");
    auto& ctx = cu::this_thread_context();
    if (a.rows() == 0) {
      cu::check(cudaMemset2DAsync(out.data(), static_cast<std::size_t>(out.row_stride()) * sizeof(S), 0,
                                  static_cast<std::size_t>(b.cols()) * sizeof(S), static_cast<std::size_t>(a.cols()), ctx.stream),
                "cudaMemset2DAsync");
      return;
    }
    const Math m = math();
    if (m == Math::fp16) return cross_rounded<__half>(a, b, out);
    if (m == Math::bf16) return cross_rounded<__nv_bfloat16>(a, b, out);
    cross_as_stored(a.data(), b.data(), CUDA_R_32F, a.rows(), a.cols(), b.cols(), a.row_stride(), b.row_stride(), out);
  }

 private:
  template <class L>
  static void cross_rounded(const MatrixView<const float>& a, const MatrixView<const float>& b, const MatrixView<float>& out) {
    namespace cu = ::awq::cuda;
    const auto na = static_cast<std::size_t>(a.size());
    L* al = lowp_space<L>(na + static_cast<std::size_t>(b.size()));
    cu::detail::round_rows<L>(a, al, cu::this_thread_context().stream);
    cu::detail::round_rows<L>(b, al + na, cu::this_thread_context().stream);
    cross_as_stored(al, al + na, cu::detail::cuda_type<L>::value, a.rows(), a.cols(), b.cols(), a.cols(), b.cols(), out);
  }

  // out [m, n] = aᵀ · b for a [t, m] and b [t, n] row-major with row strides lda and ldb, of
  // cuBLAS type `type`, fp32 sums. Row-major out is column-major outᵀ [n, m] = bᵀ · a, with b and a
  // read as column-major bᵀ [n, t] and aᵀ [m, t].
  static void cross_as_stored(const void* a, const void* b, cudaDataType type, index_t t, index_t m, index_t n, index_t lda, index_t ldb,
                              const MatrixView<float>& out) {
    namespace cu = ::awq::cuda;
    const float one = 1.0f, zero = 0.0f;
    cu::check(cublasGemmEx(cu::this_thread_context().handle(), CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(n), static_cast<int>(m),
                           static_cast<int>(t), &one, b, type, static_cast<int>(ldb), a, type, static_cast<int>(lda), &zero, out.data(),
                           CUDA_R_32F, static_cast<int>(out.row_stride()), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx (awq::backend::cuda::cross_gram)");
  }

 public:
  /// out [N, K] = Q(w · diag(s)) · diag(s)⁻¹ with s given as k host values (uploaded here).
  template <class S, class F>
  static void scaled_pseudo_quantize(const QuantSpec& spec, const MatrixView<const S>& w, const F* s,
                                     const MatrixView<S>& out) {
    namespace cu = ::awq::cuda;
    static_assert(std::is_same_v<F, float>, "backend::cuda: scales are float");
    constexpr const char* fn = "awq::backend::cuda::scaled_pseudo_quantize";
    detail::require_shape(out, w.rows(), w.cols(), fn, "out");
    const index_t g = detail::checked_group(fn, spec, w);
    auto& ctx = cu::this_thread_context();
    if (ctx.vec.size() < static_cast<std::size_t>(w.cols())) ctx.vec = cu::DeviceBuffer<float>(static_cast<std::size_t>(w.cols()));
    cu::check(cudaMemcpyAsync(ctx.vec.data(), s, static_cast<std::size_t>(w.cols()) * sizeof(float), cudaMemcpyHostToDevice,
                              ctx.stream),
              "cudaMemcpyAsync");
    const index_t warps = w.rows() * (w.cols() / g);
    if (warps == 0) return;
    dispatch_format(spec, [&](auto fmt) {
      cu::detail::scaled_pseudo_quantize_kernel<decltype(fmt), S>
          <<<cu::detail::blocks_for(warps * 32, 256, INT_MAX), 256, 0, ctx.stream>>>(w, ctx.vec.data(), g, out);
    });
    cu::check(cudaGetLastError(), "scaled_pseudo_quantize_kernel launch");
  }

  /// mean((a − b)²) of two device float matrices, in double, in a fixed order (deterministic).
  static double mse(const MatrixView<const float>& a, const MatrixView<const float>& b) {
    namespace cu = ::awq::cuda;
    detail::require_shape(b, a.rows(), a.cols(), "awq::backend::cuda::mse", "b");
    if (a.size() == 0) return 0.0;
    auto& ctx = cu::this_thread_context();
    const unsigned blocks = cu::detail::blocks_for(a.rows(), 1, 2048);
    if (ctx.partial.size() < blocks) ctx.partial = cu::DeviceBuffer<double>(blocks);
    cu::detail::sq_diff_kernel<><<<blocks, 256, 0, ctx.stream>>>(a, b, ctx.partial.data());
    cu::check(cudaGetLastError(), "sq_diff_kernel launch");
    std::vector<double> h(blocks);
    cu::check(cudaMemcpyAsync(h.data(), ctx.partial.data(), blocks * sizeof(double), cudaMemcpyDeviceToHost, ctx.stream),
              "cudaMemcpyAsync");
    cu::check(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");
    double total = 0.0;
    for (double v : h) total += v;
    return total / static_cast<double>(a.size());
  }

  /// Device bytes the clip search may use for its delta buffers (default 1 GiB).
  static std::size_t& clip_workspace_bytes() noexcept {
    static std::size_t bytes = std::size_t{1} << 30;
    return bytes;
  }

  /// The clip search's choice (same contract as backend::cpu::clip_choose; best and absmax are
  /// host arrays). The errors are computed in double precision through the per-group Gram
  /// matrices of the sampled tokens: mean_t (x_g · d)² = dᵀ G_j d / nt with G_j = X_gᵀ X_g (one
  /// batched DGEMM per linear) and d = Q(W_c) − W. Per chunk of output rows: the deltas of every
  /// shrink (fp32, widened to double), Y = D · G (a strided-batched DGEMM over the groups), then
  /// d · y per (row, group); the first strict minimum is taken on the device and only the choice
  /// and max|w| come back (through page-locked memory). The workspace is kept in the thread's
  /// context between calls. `row_batch` is unused: chunks are sized by clip_workspace_bytes().
  template <class S, class Done>
  static void clip_choose(const QuantSpec& spec, const MatrixView<const S>& xs, const MatrixView<const S>& w, int n_shrink,
                          int n_grid, index_t /*row_batch*/, int* best, acc_t<S>* absmax, Done&& done) {
    namespace cu = ::awq::cuda;
    constexpr const char* fn = "awq::backend::cuda::clip_choose";
    cu::detail::require_device_rows(fn, xs, "xs");
    cu::detail::require_device_rows(fn, w, "w");
    const index_t k = w.cols(), nt = xs.rows(), rows = w.rows();
    const index_t g = detail::checked_group(fn, spec, w);
    const index_t ng = k / g, n = rows * ng;
    if (rows == 0 || nt == 0) return;
    auto& ctx = cu::this_thread_context();
    auto& ws = ctx.clip;
    const std::size_t per_row = static_cast<std::size_t>(n_shrink * k) * 2 * sizeof(double);
    const index_t rc = std::max<index_t>(1, std::min<index_t>(rows, static_cast<index_t>(clip_workspace_bytes() / per_row)));
    const index_t R = n_shrink * rc;
    for (index_t d : {R, nt, g, k}) detail::require(d <= INT_MAX, fn, ": dimension ", d, " exceeds cuBLAS's int range");
    const auto sz = [](index_t v) { return static_cast<std::size_t>(v); };
    cu::grow(ws.x, sz(nt * k));
    cu::grow(ws.gram, sz(ng * g * g));
    cu::grow(ws.absmax, sz(n));
    cu::grow(ws.d, sz(R * k));
    cu::grow(ws.y, sz(R * k));
    cu::grow(ws.err, sz(n_shrink * n));
    cu::grow(ws.best, sz(n));
    cu::grow(ws.best_host, sz(n));
    cu::grow(ws.absmax_host, sz(n));
    // Gram matrices G_j = X_jᵀ X_j [ng][g][g] in double (column-major per group; symmetric).
    cu::detail::to_double_kernel<S><<<cu::detail::blocks_for(nt, 1, 8192), 256, 0, ctx.stream>>>(xs, ws.x.data());
    cu::check(cudaGetLastError(), "to_double_kernel launch");
    const double one = 1.0, zero = 0.0;
    cu::check(cublasDgemmStridedBatched(ctx.handle(), CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(g), static_cast<int>(g),
                                        static_cast<int>(nt), &one, ws.x.data(), static_cast<int>(k), g, ws.x.data(),
                                        static_cast<int>(k), g, &zero, ws.gram.data(), static_cast<int>(g), g * g,
                                        static_cast<int>(ng)),
              "cublasDgemmStridedBatched (clip Gram matrices)");
    cu::detail::group_absmax_kernel<S><<<cu::detail::blocks_for(n * 32, 256, INT_MAX), 256, 0, ctx.stream>>>(
        w, g, ws.absmax.data());
    cu::check(cudaGetLastError(), "group_absmax_kernel launch");
    cudaEvent_t chunk_done = nullptr;  // progress without draining the queue: wait for the previous chunk only
    cu::check(cudaEventCreateWithFlags(&chunk_done, cudaEventDisableTiming), "cudaEventCreate");
    struct EventGuard {
      cudaEvent_t e;
      ~EventGuard() { (void)cudaEventDestroy(e); }
    } guard{chunk_done};
    // The one kernel that depends on the code format, chosen once for every chunk.
    const auto clip_delta = dispatch_format(spec, [](auto fmt) { return &cu::detail::clip_delta_kernel<decltype(fmt), S>; });
    for (index_t r0 = 0; r0 < rows; r0 += rc) {
      const index_t nr = std::min(rc, rows - r0);
      clip_delta<<<cu::detail::blocks_for(nr * ng * 32, 256, INT_MAX), 256, 0, ctx.stream>>>(w, r0, rc, nr, g, ws.absmax.data(),
                                                                                          n_shrink, n_grid, ws.d.data());
      cu::check(cudaGetLastError(), "clip_delta_kernel launch");
      // Per group j (column-major): Y_j [g, R] = G_j [g, g] · D_j [g, R], D_j and Y_j k-strided.
      cu::check(cublasDgemmStridedBatched(ctx.handle(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(g), static_cast<int>(R),
                                          static_cast<int>(g), &one, ws.gram.data(), static_cast<int>(g), g * g,
                                          ws.d.data(), static_cast<int>(k), g, &zero, ws.y.data(), static_cast<int>(k), g,
                                          static_cast<int>(ng)),
                "cublasDgemmStridedBatched (clip errors)");
      cu::detail::clip_quadform_kernel<><<<cu::detail::blocks_for(R * ng * 32, 256, INT_MAX), 256, 0, ctx.stream>>>(
          ws.d.data(), ws.y.data(), k, g, rc, nr, n_shrink, r0, rows, nt, ws.err.data());
      cu::check(cudaGetLastError(), "clip_quadform_kernel launch");
      if (r0 > 0) {
        cu::check(cudaEventSynchronize(chunk_done), "cudaEventSynchronize");
        done(static_cast<long>(r0 * ng));
      }
      cu::check(cudaEventRecord(chunk_done, ctx.stream), "cudaEventRecord");
    }
    cu::detail::clip_choose_kernel<><<<cu::detail::blocks_for(n, 256, 8192), 256, 0, ctx.stream>>>(ws.err.data(), n, n_shrink,
                                                                                                   ws.best.data());
    cu::check(cudaGetLastError(), "clip_choose_kernel launch");
    cu::check(cudaMemcpyAsync(ws.best_host.data(), ws.best.data(), sz(n) * sizeof(int), cudaMemcpyDeviceToHost, ctx.stream),
              "cudaMemcpyAsync");
    cu::check(cudaMemcpyAsync(ws.absmax_host.data(), ws.absmax.data(), sz(n) * sizeof(float), cudaMemcpyDeviceToHost,
                              ctx.stream),
              "cudaMemcpyAsync");
    cu::check(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");
    std::copy(ws.best_host.data(), ws.best_host.data() + n, best);
    std::copy(ws.absmax_host.data(), ws.absmax_host.data() + n, absmax);
    done(static_cast<long>(n));
  }

 private:
  template <class S>
  static void scale(const MatrixView<S>& m, const std::vector<float>& s, bool by_col, bool divide) {
    namespace cu = ::awq::cuda;
    if (m.size() == 0) return;
    const cu::DeviceBuffer<float> d = upload(s.data(), s.size());
    cu::detail::scale_kernel<S><<<cu::detail::blocks_for(m.rows(), 1, 8192), 256, 0, stream()>>>(m, d.data(), by_col, divide);
    cu::check(cudaGetLastError(), "scale_kernel launch");
    cu::check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
  }

  template <class T>
  static std::vector<T> fetch(const ::awq::cuda::DeviceBuffer<T>& b) {
    namespace cu = ::awq::cuda;
    std::vector<T> h(b.size());
    if (!h.empty())
      cu::check(cudaMemcpyAsync(h.data(), b.data(), h.size() * sizeof(T), cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync");
    cu::check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
    return h;
  }

 private:
  static std::atomic<Math>& math_flag() {
    static std::atomic<Math> m{Math::fp32};
    return m;
  }
};

}  // namespace backend
}  // namespace awq
