// The decode engine of llama/engine.hpp on the GPU (nvcc only): fp16 activations between the
// kernels (fp32 inside them, an fp32 residual stream), the KV cache on the device in fp16, the
// linears through a GPU linear policy — `W4CudaLinear` (awq::cuda::W4A16Linear: AutoAWQ GEMM
// weights repacked once into the tiled layout) or `CublasLinear` (fp16 weights, cuBLAS with fp32
// accumulation, the baseline), loaded on the host (HostAwqLinear, HostFp16Linear) and uploaded
// with q/k/v stacked and gate/up interleaved into one product each; the W4 gate/up product applies
// the MLP's activation in its epilogue. The output projection is fp16 cuBLAS in both (logits in
// fp32).
//
// A decode step (one token for each of `batch` sequences) is captured once into a CUDA graph and
// replayed: the token ids are copied in and the logits out by the graph's own copy nodes (pinned
// host buffers), and each row's position and sequence are read from device memory, advanced by
// the graph's last kernel, so the one graph stays valid for every step. Prompts run eagerly, in
// chunks of rows (each row: a sequence and a position), the attention causal over the cache.
#pragma once

// The CPU engine's Eigen code (llama/engine.hpp) is host code here; without EIGEN_NO_CUDA nvcc
// warns on Eigen's device annotations of defaulted members. Include this header first.
#ifndef EIGEN_NO_CUDA
#define EIGEN_NO_CUDA
#endif

#include <awq/backend/cuda.cuh>
#include <awq/kernels/cuda/w4a16_linear.cuh>

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "llama/engine.hpp"

namespace awq_example {

/// What a GPU linear runs on: the engine's stream and cuBLAS handle (bound to that stream), and
/// whether its kernels may start while the kernel before them ends (programmatic dependent launch).
struct CudaContext {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  bool overlap = true;
  /// gate/up's product applies the MLP's activation where its linear can (Linear::swiglu_epilogue);
  /// like `overlap`, read as a step is captured: set both before the engine's first step
  bool fuse_swiglu = true;
};

namespace kernels {

// x [rows, n] (fp16) += bias [n] (fp32).
__global__ void add_bias(__half* y, const float* bias, int n, long long total) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total; i += static_cast<long long>(gridDim.x) * blockDim.x)
    y[i] = __float2half(__half2float(y[i]) + bias[i % n]);
}

}  // namespace kernels

namespace detail {
// parts' biases side by side (zeros for a part without one); empty when none has one.
template <class Part>
std::vector<float> stacked_bias(std::initializer_list<const Part*> parts) {
  bool any = false;
  for (const Part* p : parts) any = any || !p->bias.empty();
  std::vector<float> b;
  if (!any) return b;
  for (const Part* p : parts) {
    if (p->bias.empty()) b.resize(b.size() + static_cast<std::size_t>(p->n), 0.0f);
    else b.insert(b.end(), p->bias.begin(), p->bias.end());
  }
  return b;
}
// a's and b's biases alternating (zeros for one without); empty when neither has one.
template <class Part>
std::vector<float> interleaved_bias(const Part& a, const Part& b) {
  if (a.bias.empty() && b.bias.empty()) return {};
  std::vector<float> r(2 * static_cast<std::size_t>(a.n), 0.0f);
  for (std::size_t j = 0; j < static_cast<std::size_t>(a.n); ++j) {
    if (!a.bias.empty()) r[2 * j] = a.bias[j];
    if (!b.bias.empty()) r[2 * j + 1] = b.bias[j];
  }
  return r;
}
}  // namespace detail

/// \brief A linear's weights on the host in fp16 [N, K] until the GPU model stacks and uploads
///        them into a CublasLinear (a policy of load_weights: constructible as FpLinear is).
struct HostFp16Linear {
  std::vector<__half> w;   ///< [n, k]
  awq::index_t n = 0, k = 0;
  std::vector<float> bias;  ///< [n] or empty

  HostFp16Linear(const std::vector<float>& w32, awq::index_t out, awq::index_t in, std::vector<float> b = {})
      : w(w32.size()), n(out), k(in), bias(std::move(b)) {
    awq::detail::require(out > 0 && in > 0 && static_cast<awq::index_t>(w32.size()) == out * in, "HostFp16Linear: ", w32.size(),
                         " weights for ", out, " x ", in);
    awq::detail::require(bias.empty() || static_cast<awq::index_t>(bias.size()) == out, "HostFp16Linear: bias of ", bias.size(),
                         " for ", out, " outputs");
    awq::backend::cpu::parallel_for(
        static_cast<awq::index_t>(w.size()),
        [&](awq::index_t i0, awq::index_t i1) {
          for (awq::index_t i = i0; i < i1; ++i) w[static_cast<std::size_t>(i)] = __float2half_rn(w32[static_cast<std::size_t>(i)]);
        },
        1 << 16);
  }
  /// The dequantized weights (q − z)·s of an AutoAWQ GEMM linear: the fp16 forward of a checkpoint.
  HostFp16Linear(const awq::AwqGemmWeights& q, std::vector<float> b = {}) : HostFp16Linear(dequantize_awq_gemm(q), q.n(), q.k(), std::move(b)) {}

  /// One linear whose outputs are those of `parts` in order (same K): one product for q, k, v.
  static HostFp16Linear stack(std::initializer_list<const HostFp16Linear*> parts) {
    HostFp16Linear r;
    r.k = (*parts.begin())->k;
    for (const HostFp16Linear* p : parts) {
      awq::detail::require(p->k == r.k, "HostFp16Linear::stack: K ", p->k, " and ", r.k);
      r.w.insert(r.w.end(), p->w.begin(), p->w.end());
      r.n += p->n;
    }
    r.bias = detail::stacked_bias(parts);
    return r;
  }
  /// One linear whose output features alternate a's and b's (same K): a gated MLP's gate and up,
  /// each feature's pair side by side.
  static HostFp16Linear interleave(const HostFp16Linear& a, const HostFp16Linear& b) {
    awq::detail::require(a.k == b.k && a.n == b.n, "HostFp16Linear::interleave: ", a.n, " x ", a.k, " and ", b.n, " x ", b.k);
    HostFp16Linear r;
    r.k = a.k, r.n = 2 * a.n;
    for (awq::index_t j = 0; j < a.n; ++j)
      for (const HostFp16Linear* p : {&a, &b}) r.w.insert(r.w.end(), p->w.begin() + j * a.k, p->w.begin() + (j + 1) * a.k);
    r.bias = detail::interleaved_bias(a, b);
    return r;
  }

 private:
  HostFp16Linear() = default;
};

/// \brief A linear's AutoAWQ GEMM tensors on the host until the GPU model stacks and uploads them
///        into a W4CudaLinear (a policy of load_weights: constructible as W4Linear is).
struct HostAwqLinear {
  std::vector<std::int32_t> qweight, qzeros;  ///< [k, n/8], [groups, n/8] (empty: symmetric)
  std::vector<Eigen::half> scales;            ///< [groups, n]
  awq::index_t n = 0, k = 0, groups = 0;
  std::vector<float> bias;                    ///< [n] or empty

  HostAwqLinear(const awq::AwqGemmWeights& q, std::vector<float> b = {})
      : qweight(q.qweight.data(), q.qweight.data() + q.qweight.rows() * q.qweight.cols()),
        qzeros(q.qzeros.data(), q.qzeros.data() + q.qzeros.rows() * q.qzeros.cols()),
        scales(q.scales.data(), q.scales.data() + q.scales.rows() * q.scales.cols()), n(q.n()), k(q.k()), groups(q.groups()),
        bias(std::move(b)) {
    awq::detail::require(bias.empty() || static_cast<awq::index_t>(bias.size()) == n, "HostAwqLinear: bias of ", bias.size(), " for ",
                         n, " outputs");
  }
  /// Views of the tensors.
  awq::AwqGemmWeights view() const {
    return {awq::make_row_major<const std::int32_t>(qweight.data(), k, n / 8),
            awq::make_row_major<const std::int32_t>(qzeros.data(), qzeros.empty() ? 0 : groups, qzeros.empty() ? 0 : n / 8),
            awq::make_row_major<const Eigen::half>(scales.data(), groups, n)};
  }

  /// One linear whose outputs are those of `parts` in order (same K and groups): each row of the
  /// three tensors is the parts' rows side by side (eight outputs per word: no word is split).
  static HostAwqLinear stack(std::initializer_list<const HostAwqLinear*> parts) {
    HostAwqLinear r;
    const HostAwqLinear& f = **parts.begin();
    r.k = f.k, r.groups = f.groups;
    for (const HostAwqLinear* p : parts) {
      awq::detail::require(p->k == f.k && p->groups == f.groups && p->qzeros.empty() == f.qzeros.empty(), "HostAwqLinear::stack: K ",
                           p->k, " and ", f.k, ", groups ", p->groups, " and ", f.groups);
      r.n += p->n;
    }
    const auto side_by_side = [&](auto member, awq::index_t rows, auto cols_of, auto& out) {
      for (awq::index_t i = 0; i < rows; ++i)
        for (const HostAwqLinear* p : parts) {
          const auto& v = p->*member;
          const awq::index_t c = cols_of(*p);
          out.insert(out.end(), v.begin() + i * c, v.begin() + (i + 1) * c);
        }
    };
    side_by_side(&HostAwqLinear::qweight, r.k, [](const HostAwqLinear& p) { return p.n / 8; }, r.qweight);
    if (!f.qzeros.empty()) side_by_side(&HostAwqLinear::qzeros, r.groups, [](const HostAwqLinear& p) { return p.n / 8; }, r.qzeros);
    side_by_side(&HostAwqLinear::scales, r.groups, [](const HostAwqLinear& p) { return p.n; }, r.scales);
    r.bias = detail::stacked_bias(parts);
    return r;
  }
  /// One linear whose output features alternate a's and b's (same K and groups): a gated MLP's
  /// gate and up, each feature's pair side by side (the codes and zeros unpacked and re-packed).
  static HostAwqLinear interleave(const HostAwqLinear& a, const HostAwqLinear& b) {
    awq::detail::require(a.k == b.k && a.n == b.n && a.groups == b.groups && a.qzeros.empty() == b.qzeros.empty(),
                         "HostAwqLinear::interleave: ", a.n, " x ", a.k, " (", a.groups, " groups) and ", b.n, " x ", b.k, " (", b.groups,
                         " groups)");
    HostAwqLinear r;
    r.k = a.k, r.n = 2 * a.n, r.groups = a.groups;
    // Packed [rows, n/8] of a and b into [rows, 2n/8]: a's codes unpacked into the even rows of
    // the result's codes [2n, rows], b's into the odd ones, then packed.
    const auto packed = [&](const std::vector<std::int32_t>& pa, const std::vector<std::int32_t>& pb, awq::index_t rows) {
      std::vector<std::uint8_t> codes(static_cast<std::size_t>(r.n * rows));
      for (const auto* src : {&pa, &pb})
        awq::unpack_awq_gemm(awq::make_row_major<const std::int32_t>(src->data(), rows, a.n / 8),
                             awq::MatrixView<std::uint8_t>(codes.data() + (src == &pb ? rows : 0), a.n, rows, 2 * rows, 1));
      std::vector<std::int32_t> out(static_cast<std::size_t>(rows * r.n / 8));
      awq::pack_awq_gemm(awq::make_row_major<const std::uint8_t>(codes.data(), r.n, rows), awq::make_row_major(out.data(), rows, r.n / 8));
      return out;
    };
    r.qweight = packed(a.qweight, b.qweight, a.k);
    if (!a.qzeros.empty()) r.qzeros = packed(a.qzeros, b.qzeros, a.groups);
    r.scales.resize(static_cast<std::size_t>(r.groups * r.n));
    for (awq::index_t g = 0; g < r.groups; ++g)
      for (awq::index_t j = 0; j < a.n; ++j) {
        r.scales[static_cast<std::size_t>(g * r.n + 2 * j)] = a.scales[static_cast<std::size_t>(g * a.n + j)];
        r.scales[static_cast<std::size_t>(g * r.n + 2 * j + 1)] = b.scales[static_cast<std::size_t>(g * a.n + j)];
      }
    r.bias = detail::interleaved_bias(a, b);
    return r;
  }

 private:
  HostAwqLinear() = default;
};

/// \brief y [M, N] = x [M, K] · Wᵀ (+ bias) in fp16 through cublasGemmEx (fp32 accumulation),
///        W [N, K] held on the device in fp16: the baseline linear, and the output projection.
class CublasLinear {
 public:
  using Host = HostFp16Linear;  ///< what the model is loaded as
  static constexpr bool swiglu_epilogue = false;  ///< no swiglu(): the engine runs the activation as a kernel

  /// Uploads `h`.
  explicit CublasLinear(const HostFp16Linear& h) : w_(h.w), n_(h.n), k_(h.k) {
    if (!h.bias.empty()) bias_ = awq::cuda::DeviceBuffer<float>(h.bias);
  }
  /// From fp32 weights [out, in] (rounded to fp16 once).
  CublasLinear(const std::vector<float>& w, awq::index_t out, awq::index_t in) : CublasLinear(HostFp16Linear(w, out, in)) {}

  awq::index_t in_features() const { return k_; }   ///< K
  awq::index_t out_features() const { return n_; }  ///< N
  std::size_t weight_bytes() const { return w_.size() * sizeof(__half); }  ///< what one product reads of W

  /// y [m, N] = x [m, K] · Wᵀ (fp16) on ctx's stream.
  void operator()(const CudaContext& ctx, const __half* x, __half* y, int m) const { gemm(ctx, x, y, m); }

  /// y [m, N] (row stride N) = x [m, K] (row stride ldx ≥ K; 0: K) · Wᵀ; Out: __half or float.
  template <class Out>
  void gemm(const CudaContext& ctx, const __half* x, Out* y, int m, int ldx = 0) const {
    static_assert(std::is_same<Out, __half>::value || std::is_same<Out, float>::value, "CublasLinear: fp16 or fp32 output");
    const float one = 1.0f, zero = 0.0f;
    constexpr cudaDataType_t out_type = std::is_same<Out, float>::value ? CUDA_R_32F : CUDA_R_16F;
    awq::cuda::check(cublasGemmEx(ctx.blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n_), m, static_cast<int>(k_), &one, w_.data(),
                                  CUDA_R_16F, static_cast<int>(k_), x, CUDA_R_16F, ldx ? ldx : static_cast<int>(k_), &zero, y, out_type,
                                  static_cast<int>(n_), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     "cublasGemmEx (CublasLinear)");
    if (bias_.size()) {
      awq::detail::require(std::is_same<Out, __half>::value, "CublasLinear: a bias needs fp16 output");
      const long long total = static_cast<long long>(m) * n_;
      kernels::add_bias<<<static_cast<int>(std::min<long long>((total + 255) / 256, 4096)), 256, 0, ctx.stream>>>(
          reinterpret_cast<__half*>(y), bias_.data(), static_cast<int>(n_), total);
      awq::cuda::check(cudaGetLastError(), "add_bias launch");
    }
  }

 private:
  awq::cuda::DeviceBuffer<__half> w_;
  awq::cuda::DeviceBuffer<float> bias_;
  awq::index_t n_, k_;
};

/// \brief y [M, N] = x [M, K] · dequant(W)ᵀ (+ bias) through awq::cuda::W4A16LinearT: 4-bit
///        weights read at every step. Tuning: the kernels' (awq::cuda::TiledTuning by default).
template <class Tuning = awq::cuda::TiledTuning>
class W4CudaLinearT {
 public:
  using Host = HostAwqLinear;  ///< what the model is loaded as
  static constexpr bool swiglu_epilogue = true;  ///< swiglu() is offered

  /// Repacks and uploads `h`.
  explicit W4CudaLinearT(const HostAwqLinear& h) : lin_(h.view()), bytes_(tiled_bytes(lin_.weights())) {
    if (!h.bias.empty()) {
      std::vector<__half> b(h.bias.size());
      for (std::size_t i = 0; i < b.size(); ++i) b[i] = __float2half_rn(h.bias[i]);
      bias_ = awq::cuda::DeviceBuffer<__half>(b);
    }
  }
  awq::index_t in_features() const { return lin_.in_features(); }   ///< K
  awq::index_t out_features() const { return lin_.out_features(); }  ///< N
  std::size_t weight_bytes() const { return bytes_; }                ///< codes, zeros and scales
  void operator()(const CudaContext& ctx, const __half* x, __half* y, int m) {
    lin_(x, y, m, bias_.size() ? bias_.data() : nullptr, ctx.stream, ctx.overlap);
  }
  /// g [m, N/2] = silu(gate)·up of this product's (gate, up) output pairs (HostAwqLinear::interleave).
  void swiglu(const CudaContext& ctx, const __half* x, __half* g, int m) {
    lin_.swiglu(x, g, m, bias_.size() ? bias_.data() : nullptr, ctx.stream, ctx.overlap);
  }

 private:
  static std::size_t tiled_bytes(const awq::cuda::TiledW4A16Device& w) {
    return w.qweight.size() * 4 + w.qzeros.size() * 4 + w.scales.size() * 2;
  }
  awq::cuda::W4A16LinearT<Tuning> lin_;
  awq::cuda::DeviceBuffer<__half> bias_;
  std::size_t bytes_;
};
/// The engine's W4 linear with the measured tuning.
using W4CudaLinear = W4CudaLinearT<>;

namespace kernels {

// Every kernel of a step is launched with programmatic dependent launch (sm_90; elsewhere the
// attribute and these instructions do nothing): its blocks may start while the kernel before it
// ends, so a step's ~300 small launches do not each pay a launch's latency. Each kernel waits here
// for the one before it before it reads global memory, then lets the next one start.
__device__ __forceinline__ void step_entry() {
  awq::cuda::detail::grid_dependency_wait();
  awq::cuda::detail::grid_launch_dependents();
}

// Keys per attention block (attn_chunk's C). Large: a head's first 256 positions in one block
// (no chunks to combine), for a step with few (sequence, head) pairs (up to kAttnLargePairs);
// small: a step with many keeps every SM busy with short blocks.
constexpr int kAttnChunkLarge = 256, kAttnChunkSmall = 64, kAttnLargePairs = 256;

__device__ inline float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int w = threadIdx.x / 32, lanes = blockDim.x / 32;
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[w] = v;
  __syncthreads();
  float s = 0;
  for (int i = 0; i < lanes; ++i) s += red[i];
  return s;
}

// x [r] = embedding row of token[r] (fp16 table → fp32 residual).
__global__ void embed(const __half* table, const int* tokens, float* x, int hidden) {
  step_entry();
  const __half* e = table + static_cast<long long>(tokens[blockIdx.x]) * hidden;
  float* o = x + static_cast<long long>(blockIdx.x) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) o[i] = __half2float(e[i]);
}

// Row r: x += delta (when given), out = RMSNorm(x) · w in fp16.
// The row stays in registers (kMaxHiddenPerThread each): every load is issued before any is used.
constexpr int kMaxHiddenPerThread = 8;
__global__ void add_rmsnorm(float* x, const __half* delta, const float* w, float eps, __half* out, int hidden) {
  __shared__ float red[32];
  float wv[kMaxHiddenPerThread];  // the norm's weights are no kernel's output: read before the wait
#pragma unroll
  for (int e = 0; e < kMaxHiddenPerThread; ++e) {
    const int i = threadIdx.x + e * blockDim.x;
    wv[e] = i < hidden ? w[i] : 0.0f;
  }
  step_entry();
  float* xr = x + static_cast<long long>(blockIdx.x) * hidden;
  const __half* dr = delta ? delta + static_cast<long long>(blockIdx.x) * hidden : nullptr;
  float v[kMaxHiddenPerThread], d[kMaxHiddenPerThread];
#pragma unroll
  for (int e = 0; e < kMaxHiddenPerThread; ++e) {
    const int i = threadIdx.x + e * blockDim.x;
    v[e] = i < hidden ? xr[i] : 0.0f;
    d[e] = dr && i < hidden ? __half2float(dr[i]) : 0.0f;
  }
  float ss = 0;
#pragma unroll
  for (int e = 0; e < kMaxHiddenPerThread; ++e) {
    v[e] += d[e];
    ss += v[e] * v[e];
  }
  const float inv = rsqrtf(block_sum(ss, red) / static_cast<float>(hidden) + eps);
  __half* o = out + static_cast<long long>(blockIdx.x) * hidden;
#pragma unroll
  for (int e = 0; e < kMaxHiddenPerThread; ++e) {
    const int i = threadIdx.x + e * blockDim.x;
    if (i < hidden) {
      if (dr) xr[i] = v[e];
      o[i] = __float2half(v[e] * inv * wv[e]);
    }
  }
}

// Row r at (seq[r], pos[r]) of qkv [rows, q | k | v]: rotate_half RoPE on q in place and on k,
// then k and v into the cache [seq, capacity, n_kv·d] of this layer.
__global__ void rope_store(__half* qkv, const float* cs, const int* seq, const int* pos, __half* kc, __half* vc, int n_heads, int n_kv,
                           int d, int cap) {
  step_entry();
  const int r = blockIdx.x, half = d / 2, p = pos[r];
  const float* c = cs + static_cast<long long>(p) * d;
  const long long qd = static_cast<long long>(n_heads) * d, kvd = static_cast<long long>(n_kv) * d, stride = qd + 2 * kvd;
  __half* q = qkv + r * stride;
  const __half* k = q + qd;
  const __half* v = k + kvd;
  const long long slot = (static_cast<long long>(seq[r]) * cap + p) * kvd;
  const int t0 = blockIdx.y * blockDim.x + threadIdx.x, step = gridDim.y * blockDim.x;  // a row over several blocks
  for (int i = t0; i < (n_heads + n_kv) * half; i += step) {
    const int h = i / half, j = i % half;
    const float co = c[2 * j], si = c[2 * j + 1];
    if (h < n_heads) {
      __half* row = q + h * d;
      const float x1 = __half2float(row[j]), x2 = __half2float(row[j + half]);
      row[j] = __float2half(x1 * co - x2 * si);
      row[j + half] = __float2half(x2 * co + x1 * si);
    } else {
      const int kh = h - n_heads;
      const __half* row = k + kh * d;
      const float x1 = __half2float(row[j]), x2 = __half2float(row[j + half]);
      kc[slot + kh * d + j] = __float2half(x1 * co - x2 * si);
      kc[slot + kh * d + j + half] = __float2half(x2 * co + x1 * si);
    }
  }
  for (long long i = t0; i < kvd; i += step) vc[slot + i] = v[i];
}

// Attention of row r, head h (q: row r of qkv [rows, q | k | v]) over keys [c·C, min(len,
// (c+1)·C)) of its sequence, len = pos[r] + 1. One chunk: the normalized output into ctx.
// Several: each chunk's max, sum and unnormalized output into part; the block that finishes last
// (a ticket per row and head) rescales them to their common max, in chunk order whichever block
// that is (the same bits every run), writes ctx and resets the ticket for the next launch.
// With `fused` (a decode step: each row its own sequence) q and the row's key are rotated here,
// as rope_store does, and the row's key and value are read from qkv, not the cache: the block of
// the chunk holding the position, for the first q head of each KV head, stores them in the cache
// (no block of this launch reads that slot), so the step needs no rope_store launch.
// D: head_dim; C: keys per block, 2·C threads, each key read as 16-byte pieces by D/8 threads,
// 16·C/D keys at once so that many loads are in flight (a decode step is latency-bound here, not
// bandwidth-bound): every key and value of the chunk is requested before the first is used.
template <int D, int C>
__global__ void __launch_bounds__(2 * C)
    attn_chunk(const __half* __restrict__ qkv, const float* __restrict__ cs, __half* __restrict__ kc, __half* __restrict__ vc, const int* seq,
               const int* pos, int n_heads, int n_kv, int cap, float scale, int chunks, bool fused, __half* ctx, float* part, int* tickets) {
  constexpr int kThreads = 2 * C, kWarps = kThreads / 32, kLanes = D / 8, kKeys = kThreads / kLanes;
  static_assert(D % 32 == 0 && D <= 256, "attn_chunk: head_dim 32, 64 or 128");
  __shared__ float s[C], red[32], acc[kKeys][D + 1];
  __shared__ bool last;
  // Rows, positions and (in a decode step) the cached keys and values below p are no output of the
  // kernel just before this one, and every kernel before that one has completed when this one
  // starts (that one waited for them before it let this one start): they are read before the
  // wait, through L2, while that kernel still runs.
  const int h = blockIdx.x, r = blockIdx.y, c = blockIdx.z, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int p = __ldcg(pos + r), len = p + 1, start = c * C, end = min(len, start + C);
  const int used = (len + C - 1) / C;  // chunks that hold keys: the ticket counts these
  if (start >= end) return;  // past this row's length (the grid covers the capacity)
  const long long qd = static_cast<long long>(n_heads) * D, kvd = static_cast<long long>(n_kv) * D;
  float* const pr0 = part + (static_cast<long long>(r) * n_heads + h) * chunks * (D + 2);
  float* const pr = pr0 + c * (D + 2);
  const int kh = h / (n_heads / n_kv), sub = threadIdx.x % kLanes, kk = threadIdx.x / kLanes;
  const long long base = static_cast<long long>(__ldcg(seq + r)) * cap * kvd + kh * D + sub * 8;
  const bool here = fused && p < end;  // this chunk holds the row's own key (p ≥ start: end ≤ len)
  constexpr int kPasses = (C + kKeys - 1) / kKeys;
  uint4 raw[kPasses], rawv[kPasses];
  // Key and value j of the chunk from the cache (the row's own, slot p, is filled in below when fused).
  const auto load = [&] {
#pragma unroll
    for (int t = 0; t < kPasses; ++t) {
      const int j = start + t * kKeys + kk;
      const bool in = j < end && !(here && j == p);
      raw[t] = in ? __ldcg(reinterpret_cast<const uint4*>(kc + base + j * kvd)) : make_uint4(0, 0, 0, 0);
      rawv[t] = in ? __ldcg(reinterpret_cast<const uint4*>(vc + base + j * kvd)) : make_uint4(0, 0, 0, 0);
    }
  };
  // rotate_half RoPE at position p of this lane's 8 elements 8 sub + e of a head pairs element
  // i with i ± D/2 at frequency i mod D/2: cos, sin of frequencies j0 .. j0 + 7, 16 floats.
  const int j0 = (sub * 8) % (D / 2);
  float4 cv[4];
  if (fused) {
    load();
    const float4* const cp = reinterpret_cast<const float4*>(cs + static_cast<long long>(p) * D + 2 * j0);
#pragma unroll
    for (int i = 0; i < 4; ++i) cv[i] = __ldg(cp + i);
  }
  step_entry();
  if (!fused) load();  // a prompt's keys: rope_store, the kernel before, has just written them
  const __half* const row = qkv + r * (qd + 2 * kvd);
  // The rotation of the lane's 8 elements (cv), rounded to fp16 as rope_store stores them:
  // element i's partner is held by lane sub ± kLanes/2 of the same key slot. Every lane of the
  // block calls it (a shuffle).
  const auto rope = [&](uint4 x) {
    uint4 o;
    o.x = __shfl_xor_sync(0xffffffffu, x.x, kLanes / 2), o.y = __shfl_xor_sync(0xffffffffu, x.y, kLanes / 2);
    o.z = __shfl_xor_sync(0xffffffffu, x.z, kLanes / 2), o.w = __shfl_xor_sync(0xffffffffu, x.w, kLanes / 2);
    const float sign = sub < kLanes / 2 ? -1.0f : 1.0f;
    __half2* const xv = reinterpret_cast<__half2*>(&x);
    const __half2* const ov = reinterpret_cast<const __half2*>(&o);
#pragma unroll
    for (int e = 0; e < 4; ++e) {  // cos, sin of frequencies j0 + 2e and j0 + 2e + 1
      const float2 f = __half22float2(xv[e]), g = __half22float2(ov[e]);
      const float4 t = cv[e];
      xv[e] = __floats2half2_rn(f.x * t.x + sign * g.x * t.y, f.y * t.z + sign * g.y * t.w);
    }
    return x;
  };
  float qv[8];
  {
    uint4 qr = *reinterpret_cast<const uint4*>(row + h * D + sub * 8);
    if (fused) qr = rope(qr);
    const __half2* hv = reinterpret_cast<const __half2*>(&qr);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __half22float2(hv[e]);
      qv[2 * e] = f.x * scale, qv[2 * e + 1] = f.y * scale;
    }
  }
  if (here) {  // the row's own key and value, from qkv; one block per KV head stores them
    const uint4 knew = rope(*reinterpret_cast<const uint4*>(row + qd + kh * D + sub * 8));
    const uint4 vnew = *reinterpret_cast<const uint4*>(row + qd + kvd + kh * D + sub * 8);
    if (h % (n_heads / n_kv) == 0 && kk == 0) {
      *reinterpret_cast<uint4*>(kc + base + p * kvd) = knew;
      *reinterpret_cast<uint4*>(vc + base + p * kvd) = vnew;
    }
#pragma unroll
    for (int t = 0; t < kPasses; ++t)
      if (start + t * kKeys + kk == p) raw[t] = knew, rawv[t] = vnew;
  }
#pragma unroll
  for (int t = 0; t < kPasses; ++t) {
    const __half2* hv = reinterpret_cast<const __half2*>(&raw[t]);
    float dot = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __half22float2(hv[e]);
      dot += f.x * qv[2 * e] + f.y * qv[2 * e + 1];
    }
    for (int o = kLanes / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const int j = start + t * kKeys + kk;
    if (sub == 0 && j < end) s[j - start] = dot;
  }
  __syncthreads();
  float m = -INFINITY;
  for (int j = threadIdx.x; j < end - start; j += kThreads) m = fmaxf(m, s[j]);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) red[warp] = m;
  __syncthreads();
  m = red[0];
  for (int i = 1; i < kWarps; ++i) m = fmaxf(m, red[i]);
  __syncthreads();
  float l = 0;
  for (int j = threadIdx.x; j < end - start; j += kThreads) l += (s[j] = __expf(s[j] - m));
  l = block_sum(l, red);  // synchronizes: every s[j] is written
  float a[8] = {};
#pragma unroll
  for (int t = 0; t < kPasses; ++t) {
    const int j = start + t * kKeys + kk;
    const float w = j < end ? s[j - start] : 0.0f;
    const __half2* hv = reinterpret_cast<const __half2*>(&rawv[t]);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __half22float2(hv[e]);
      a[2 * e] += w * f.x, a[2 * e + 1] += w * f.y;
    }
  }
#pragma unroll
  for (int e = 0; e < 8; ++e) acc[kk][sub * 8 + e] = a[e];
  __syncthreads();
  __half* const out = ctx + r * qd + h * D;
  if (used == 1) {
    for (int i = threadIdx.x; i < D; i += kThreads) {
      float o = 0;
      for (int g = 0; g < kKeys; ++g) o += acc[g][i];
      out[i] = __float2half(o / l);
    }
    return;
  }
  for (int i = threadIdx.x; i < D; i += kThreads) {
    float o = 0;
    for (int g = 0; g < kKeys; ++g) o += acc[g][i];
    pr[2 + i] = o;
  }
  if (threadIdx.x == 0) pr[0] = m, pr[1] = l;
  __threadfence();  // this chunk's part is visible before its ticket is taken
  __syncthreads();
  int* const ticket = tickets + static_cast<long long>(r) * n_heads + h;
  if (threadIdx.x == 0) last = atomicAdd(ticket, 1) == used - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  float mx = -INFINITY;
  for (int cc = 0; cc < used; ++cc) mx = fmaxf(mx, __ldcg(pr0 + cc * (D + 2)));
  for (int i = threadIdx.x; i < D; i += kThreads) {
    float o = 0, sum = 0;
    for (int cc = 0; cc < used; ++cc) {
      const float* pc = pr0 + cc * (D + 2);
      const float f = __expf(__ldcg(pc) - mx);
      o += f * __ldcg(pc + 2 + i);
      sum += f * __ldcg(pc + 1);
    }
    out[i] = __float2half(o / sum);
  }
  if (threadIdx.x == 0) *ticket = 0;
}

// g [n] = silu(gate)·up of gu [n] (gate, up) pairs (the interleaved gate/up product), as the
// W4A16 epilogue computes it.
__global__ void swiglu(const __half2* gu, __half* g, long long n) {
  step_entry();
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n; i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const float2 v = __half22float2(gu[i]);
    g[i] = __float2half(awq::cuda::detail::silu_mul(v.x, v.y));
  }
}

// The decode graph's last node: every row one position further.
__global__ void advance(int* pos, int rows) {
  step_entry();
  if (static_cast<int>(threadIdx.x) < rows) ++pos[threadIdx.x];
}

}  // namespace kernels

/// One block's linears on the device: q, k, v stacked into one product, gate and up interleaved
/// into another (each feature's gate and up side by side: the pair a swiglu epilogue needs).
template <class Linear>
struct CudaLayer {
  Linear qkv, o, gate_up, down;
};

/// \brief A model on the device for LlamaEngineCuda: the embedding (fp16), the norms, the
///        blocks' linears (Linear: W4CudaLinear or CublasLinear) and the output projection (fp16
///        cuBLAS, the embedding's copy when tied).
template <class Linear>
struct CudaLlama {
  /// Uploads `w` (its linears as Linear::Host), stacking q/k/v and gate/up; `threads` blocks at a
  /// time (0: one per hardware thread). \throws awq::Error for a head_dim other than 32, 64, 128.
  explicit CudaLlama(LlamaWeights<typename Linear::Host>&& w, int threads = 0) : cfg(w.cfg), lm_head(w.lm_head->weights(), w.cfg.vocab, w.cfg.hidden) {
    awq::detail::require(cfg.head_dim == 32 || cfg.head_dim == 64 || cfg.head_dim == 128, "LlamaEngineCuda: head_dim ", cfg.head_dim,
                         " (accepted: 32, 64, 128)");
    awq::detail::require(cfg.hidden <= 1024 * kernels::kMaxHiddenPerThread, "LlamaEngineCuda: hidden size ", cfg.hidden, " (accepted: up to ",
                         1024 * kernels::kMaxHiddenPerThread, ")");
    std::vector<__half> e(w.embed->size());
    for (std::size_t i = 0; i < e.size(); ++i) e[i] = __float2half_rn((*w.embed)[i]);
    embed = awq::cuda::DeviceBuffer<__half>(e);
    std::vector<float> n;
    for (const auto& l : w.layers) {
      n.insert(n.end(), l.attn_norm.begin(), l.attn_norm.end());
      n.insert(n.end(), l.mlp_norm.begin(), l.mlp_norm.end());
    }
    n.insert(n.end(), w.norm.begin(), w.norm.end());
    norms = awq::cuda::DeviceBuffer<float>(n);
    using H = typename Linear::Host;
    layers = build_in_parallel(cfg.layers, threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())),
                               [&](int l) {
                                 const auto& L = w.layers[static_cast<std::size_t>(l)];
                                 return CudaLayer<Linear>{Linear(H::stack({&L.q, &L.k, &L.v})), Linear(L.o), Linear(H::interleave(L.gate, L.up)),
                                                          Linear(L.down)};
                               });
  }

  awq::model::ModelConfig cfg;            ///< hyper-parameters
  awq::cuda::DeviceBuffer<__half> embed;  ///< [vocab, hidden]
  awq::cuda::DeviceBuffer<float> norms;   ///< per layer attn, mlp [hidden] each, then the final norm
  CublasLinear lm_head;                   ///< [vocab, hidden]
  std::vector<CudaLayer<Linear>> layers;  ///< blocks

  /// Bytes a decode step reads of weights (the linears, the output projection; norms aside).
  std::size_t weight_bytes() const {
    std::size_t b = lm_head.weight_bytes();
    for (const auto& l : layers) b += l.qkv.weight_bytes() + l.o.weight_bytes() + l.gate_up.weight_bytes() + l.down.weight_bytes();
    return b;
  }
};

/// \brief The GPU decode engine over a CudaLlama<Linear>: `batch` sequences of `capacity`
///        positions each in a KV cache on the device; see the file comment.
template <class Linear>
class LlamaEngineCuda {
 public:
  /// `attn_chunk`: keys per attention block, kernels::kAttnChunkLarge or kAttnChunkSmall; 0 picks
  /// the large one up to kAttnLargePairs (sequence, head) pairs a step (bench/RESULTS.md).
  /// \pre `m` outlives the engine. \throws awq::Error for a capacity or batch below 1, or
  ///      another chunk.
  LlamaEngineCuda(CudaLlama<Linear>& m, int capacity, int batch = 1, int attn_chunk = 0) : m_(&m), cap_(capacity), batch_(batch) {
    const auto& c = m.cfg;
    awq::detail::require(capacity > 0, "LlamaEngineCuda: capacity ", capacity, " must be positive");
    awq::detail::require(batch >= 1 && batch <= 1024, "LlamaEngineCuda: batch ", batch, " (accepted: 1 to 1024)");
    awq::detail::require(attn_chunk == 0 || attn_chunk == kernels::kAttnChunkLarge || attn_chunk == kernels::kAttnChunkSmall,
                         "LlamaEngineCuda: attention chunk ", attn_chunk, " (accepted: 0, ", kernels::kAttnChunkLarge, ", ",
                         kernels::kAttnChunkSmall, ")");
    kvd_ = static_cast<std::size_t>(c.n_kv_heads) * c.head_dim;
    qd_ = static_cast<std::size_t>(c.n_heads) * c.head_dim;
    chunk_ = attn_chunk                                        ? attn_chunk
             : batch_ * c.n_heads <= kernels::kAttnLargePairs ? kernels::kAttnChunkLarge
                                                                : kernels::kAttnChunkSmall;
    chunks_ = (cap_ + chunk_ - 1) / chunk_;
    rows_ = std::max(batch_, kPrefillRows);
    const std::size_t per_layer = static_cast<std::size_t>(batch_) * cap_ * kvd_;
    kc_ = awq::cuda::DeviceBuffer<__half>(per_layer * c.layers);
    vc_ = awq::cuda::DeviceBuffer<__half>(per_layer * c.layers);
    awq::cuda::check(cudaMemset(kc_.data(), 0, kc_.size() * sizeof(__half)), "cudaMemset (key cache)");
    awq::cuda::check(cudaMemset(vc_.data(), 0, vc_.size() * sizeof(__half)), "cudaMemset (value cache)");
    rope_ = awq::cuda::DeviceBuffer<float>(awq::model::rope_cos_sin(cap_, c.head_dim, c.rope_theta));
    const std::size_t R = static_cast<std::size_t>(rows_);
    x_ = awq::cuda::DeviceBuffer<float>(R * c.hidden);
    xn_ = awq::cuda::DeviceBuffer<__half>(R * c.hidden);
    tmp_ = awq::cuda::DeviceBuffer<__half>(R * c.hidden);
    qkv_ = awq::cuda::DeviceBuffer<__half>(R * (qd_ + 2 * kvd_));
    att_ = awq::cuda::DeviceBuffer<__half>(R * qd_);
    gu_ = awq::cuda::DeviceBuffer<__half>(R * 2 * c.intermediate);
    g_ = awq::cuda::DeviceBuffer<__half>(R * c.intermediate);
    part_ = awq::cuda::DeviceBuffer<float>(R * c.n_heads * chunks_ * (c.head_dim + 2));
    tickets_ = awq::cuda::DeviceBuffer<int>(R * c.n_heads);
    awq::cuda::check(cudaMemset(tickets_.data(), 0, tickets_.size() * sizeof(int)), "cudaMemset (attention tickets)");
    logits_ = awq::cuda::DeviceBuffer<float>(R * c.vocab);
    tok_ = awq::cuda::DeviceBuffer<int>(R);
    seq_ = awq::cuda::DeviceBuffer<int>(R);
    pos_ = awq::cuda::DeviceBuffer<int>(R);
    tok_host_ = awq::cuda::PinnedBuffer<int>(3 * R);
    logits_host_ = awq::cuda::PinnedBuffer<float>(R * c.vocab);
    awq::cuda::check(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    awq::cuda::check(cublasCreate(&ctx.blas), "cublasCreate");
    awq::cuda::check(cublasSetStream(ctx.blas, ctx.stream), "cublasSetStream");
    // A workspace of its own: cuBLAS then allocates nothing while the step is captured.
    blas_ws_ = awq::cuda::DeviceBuffer<unsigned char>(32u << 20);
    awq::cuda::check(cublasSetWorkspace(ctx.blas, blas_ws_.data(), blas_ws_.size()), "cublasSetWorkspace");
  }
  LlamaEngineCuda(const LlamaEngineCuda&) = delete;
  LlamaEngineCuda& operator=(const LlamaEngineCuda&) = delete;
  ~LlamaEngineCuda() {
    if (exec_) (void)cudaGraphExecDestroy(exec_);
    if (ctx.blas) (void)cublasDestroy(ctx.blas);
    if (ctx.stream) (void)cudaStreamDestroy(ctx.stream);
  }

  int position() const { return pos_host_; }  ///< tokens in each sequence's cache
  int capacity() const { return cap_; }       ///< positions each sequence's cache holds
  int batch() const { return batch_; }        ///< sequences decoded together
  void reset() { pos_host_ = 0, decoding_ = false; }  ///< forgets the cache

  /// \brief Batch 1: appends `tokens` and returns the logits [vocab] of the last one, or with
  ///        `all` those of every token [tokens, vocab] — as LlamaEngine::forward. One token: the
  ///        captured decode step.
  std::vector<float> forward(const std::vector<int>& tokens, bool all = false) {
    awq::detail::require(batch_ == 1, "LlamaEngineCuda::forward: the engine decodes ", batch_, " sequences (use prefill and step)");
    if (tokens.size() == 1 && !all) {
      const auto l = step(tokens);
      return std::vector<float>(l.data(), l.data() + l.cols());
    }
    return prefill(tokens, all);
  }

  /// \brief Appends `prompt` to every sequence; returns each one's last logits [batch, vocab]
  ///        (with `all` and batch 1: every token's [tokens, vocab]).
  std::vector<float> prefill(const std::vector<int>& prompt, bool all = false) {
    const auto& c = m_->cfg;
    const int T = static_cast<int>(prompt.size());
    check_fits("prefill", T);
    awq::detail::require(!all || batch_ == 1, "LlamaEngineCuda::prefill: all logits need batch 1, not ", batch_);
    check_ids("prefill", prompt);
    decoding_ = false;
    const std::size_t V = static_cast<std::size_t>(c.vocab);
    std::vector<float> out(all ? static_cast<std::size_t>(T) * V : static_cast<std::size_t>(batch_) * V);
    const int total = T * batch_;
    for (int r0 = 0; r0 < total; r0 += kPrefillRows) {
      const int M = std::min(kPrefillRows, total - r0);
      int* th = tok_host_.data();
      for (int i = 0; i < M; ++i) {
        const int s = (r0 + i) / T, t = (r0 + i) % T;
        th[i] = prompt[static_cast<std::size_t>(t)];
        th[rows_ + i] = s;
        th[2 * rows_ + i] = pos_host_ + t;
      }
      upload_rows(M);
      // Logit rows of this chunk: all, or those that end a sequence (t = T − 1).
      int first = 0, count = all ? M : 0;
      if (!all) {
        first = (T - 1 - r0 % T + T) % T;
        count = first < M ? (M - 1 - first) / T + 1 : 0;
      }
      enqueue(M, first, all ? 1 : T, count, false);
      awq::cuda::check(cudaStreamSynchronize(ctx.stream), "LlamaEngineCuda::prefill");
      const std::size_t o = all ? static_cast<std::size_t>(r0) * V : static_cast<std::size_t>((r0 + first) / T) * V;
      std::memcpy(out.data() + o, logits_host_.data(), static_cast<std::size_t>(count) * V * sizeof(float));
    }
    pos_host_ += T;
    return out;
  }

  /// \brief One token for each sequence (tokens.size() == batch) at the current position; returns
  ///        the logits [batch, vocab] (pinned host memory, valid until the next call). The first
  ///        call runs eagerly (it allocates what the kernels need), the second captures the step
  ///        into a CUDA graph, every later one replays it.
  awq::MatrixView<const float> step(const std::vector<int>& tokens) {
    const auto& c = m_->cfg;
    awq::detail::require(static_cast<int>(tokens.size()) == batch_, "LlamaEngineCuda::step: ", tokens.size(), " tokens for ", batch_,
                         " sequences");
    check_fits("step", 1);
    check_ids("step", tokens);
    int* th = tok_host_.data();
    std::copy(tokens.begin(), tokens.end(), th);
    if (!decoding_) {  // rows r = sequence r at the cache's end; the graph advances them from here
      for (int r = 0; r < batch_; ++r) th[rows_ + r] = r, th[2 * rows_ + r] = pos_host_;
      upload_rows(batch_);
      decoding_ = true;
    }
    if (exec_) {
      awq::cuda::check(cudaGraphLaunch(exec_, ctx.stream), "cudaGraphLaunch (decode step)");
    } else if (!warm_) {
      enqueue(batch_, 0, 1, batch_, true);
      warm_ = true;
    } else {
      cudaGraph_t g = nullptr;
      awq::cuda::check(cudaStreamBeginCapture(ctx.stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
      try {
        enqueue(batch_, 0, 1, batch_, true);
      } catch (...) {
        (void)cudaStreamEndCapture(ctx.stream, &g);
        if (g) (void)cudaGraphDestroy(g);
        throw;
      }
      awq::cuda::check(cudaStreamEndCapture(ctx.stream, &g), "cudaStreamEndCapture");
      const cudaError_t e = cudaGraphInstantiate(&exec_, g, 0);
      (void)cudaGraphDestroy(g);
      awq::cuda::check(e, "cudaGraphInstantiate");
      awq::cuda::check(cudaGraphLaunch(exec_, ctx.stream), "cudaGraphLaunch (decode step)");
    }
    awq::cuda::check(cudaStreamSynchronize(ctx.stream), "LlamaEngineCuda::step");
    ++pos_host_;
    return awq::make_row_major<const float>(logits_host_.data(), batch_, c.vocab);
  }

  /// \brief `steps` more decode steps on the captured graph, launched back to back with the
  ///        tokens of the last step() and one synchronization at the end: the step's GPU time
  ///        without the host's round trip (for measurements; the logits are the last step's).
  void replay(int steps) {
    awq::detail::require(exec_ != nullptr, "LlamaEngineCuda::replay: no captured step yet (call step twice first)");
    check_fits("replay", steps);
    for (int i = 0; i < steps; ++i) awq::cuda::check(cudaGraphLaunch(exec_, ctx.stream), "cudaGraphLaunch (decode step)");
    awq::cuda::check(cudaStreamSynchronize(ctx.stream), "LlamaEngineCuda::replay");
    pos_host_ += steps;
  }

  /// Bytes a decode step reads: the weights and every sequence's keys and values so far.
  std::size_t step_bytes() const {
    const auto& c = m_->cfg;
    return m_->weight_bytes() + 2 * static_cast<std::size_t>(c.layers) * batch_ * static_cast<std::size_t>(pos_host_ + 1) * kvd_ * sizeof(__half);
  }

  CudaContext ctx;  ///< the engine's stream and cuBLAS handle

 private:
  static constexpr int kPrefillRows = 256;  // rows of one eager pass: bounds the activations' memory

  void check_fits(const char* fn, int T) const {
    awq::detail::require(T > 0 && pos_host_ + T <= cap_, "LlamaEngineCuda::", fn, ": ", T, " tokens at position ", pos_host_,
                         " exceed the cache of ", cap_, " positions");
  }
  void check_ids(const char* fn, const std::vector<int>& ids) const {
    for (int id : ids)
      awq::detail::require(id >= 0 && id < m_->cfg.vocab, "LlamaEngineCuda::", fn, ": token id ", id, " is outside the vocabulary of ",
                           m_->cfg.vocab);
  }
  void upload_rows(int M) {
    int* th = tok_host_.data();
    awq::cuda::check(cudaMemcpyAsync(seq_.data(), th + rows_, M * sizeof(int), cudaMemcpyHostToDevice, ctx.stream), "cudaMemcpyAsync (rows)");
    awq::cuda::check(cudaMemcpyAsync(pos_.data(), th + 2 * rows_, M * sizeof(int), cudaMemcpyHostToDevice, ctx.stream),
                     "cudaMemcpyAsync (positions)");
  }

  // kernel<<<grid, block, 0, stream>>>(args…), with programmatic dependent launch unless
  // ctx.overlap is off (the kernels call kernels::step_entry() first).
  template <class... Params, class... Args>
  void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args&&... args) {
    awq::cuda::launch_overlapped(kernel, grid, block, 0, ctx.stream, ctx.overlap, "LlamaEngineCuda kernel launch", std::forward<Args>(args)...);
  }

  template <int D, int C>
  void attend(int M, __half* kc, __half* vc, bool fused) {
    const auto& c = m_->cfg;
    const float scale = static_cast<float>(std::pow(static_cast<double>(c.head_dim), -0.5));
    launch(kernels::attn_chunk<D, C>, dim3(c.n_heads, M, chunks_), 2 * C, qkv_.data(), rope_.data(), kc, vc, seq_.data(), pos_.data(),
           c.n_heads, c.n_kv_heads, cap_, scale, chunks_, fused, att_.data(), part_.data(), tickets_.data());
  }
  template <int D>
  void attend(int M, __half* kc, __half* vc, bool fused) {
    chunk_ == kernels::kAttnChunkLarge ? attend<D, kernels::kAttnChunkLarge>(M, kc, vc, fused)
                                       : attend<D, kernels::kAttnChunkSmall>(M, kc, vc, fused);
  }

  // g_ [M, intermediate] = silu(gate)·up of xn_'s gate/up product: in the product's epilogue
  // where Linear offers it (one kernel less a layer), else through gu_ and a kernel.
  void gate_up_swiglu(CudaLayer<Linear>& L, int M) {
    if constexpr (Linear::swiglu_epilogue)
      if (ctx.fuse_swiglu) return L.gate_up.swiglu(ctx, xn_.data(), g_.data(), M);
    L.gate_up(ctx, xn_.data(), gu_.data(), M);
    const long long n = static_cast<long long>(M) * m_->cfg.intermediate;
    launch(kernels::swiglu, static_cast<int>(std::min<long long>((n + 255) / 256, 4096)), 256, reinterpret_cast<const __half2*>(gu_.data()),
           g_.data(), n);
  }

  // One pass over M rows (tokens, sequences and positions on the device): every block, then the
  // logits of `count` rows first, first + step, … into logits_host_; with `advance` the rows'
  // positions move on by one at the end.
  void enqueue(int M, int first, int step, int count, bool advance) {
    const auto& c = m_->cfg;
    const cudaStream_t s = ctx.stream;
    const int H = c.hidden, threads = std::min(1024, ((H + 31) / 32) * 32);
    const std::size_t per_layer = static_cast<std::size_t>(batch_) * cap_ * kvd_;
    awq::cuda::check(cudaMemcpyAsync(tok_.data(), tok_host_.data(), M * sizeof(int), cudaMemcpyHostToDevice, s), "cudaMemcpyAsync (tokens)");
    // After a copy, not a kernel: a plain launch (so are the logits' copy and the advance).
    kernels::embed<<<M, threads, 0, s>>>(m_->embed.data(), tok_.data(), x_.data(), H);
    const __half* delta = nullptr;
    for (std::size_t l = 0; l < m_->layers.size(); ++l) {
      auto& L = m_->layers[l];
      __half* kc = kc_.data() + l * per_layer;
      __half* vc = vc_.data() + l * per_layer;
      launch(kernels::add_rmsnorm, M, threads, x_.data(), delta, m_->norms.data() + 2 * l * H, c.norm_eps, xn_.data(), H);
      L.qkv(ctx, xn_.data(), qkv_.data(), M);
      // A decode step's rows are distinct sequences: the attention rotates and stores their keys
      // itself. A prompt's rows attend to each other's keys, which must be in the cache first.
      const bool fused = advance;
      if (!fused)
        launch(kernels::rope_store, dim3(M, 8), 256, qkv_.data(), rope_.data(), seq_.data(), pos_.data(), kc, vc, c.n_heads, c.n_kv_heads,
               c.head_dim, cap_);
      switch (c.head_dim) {
        case 32: attend<32>(M, kc, vc, fused); break;
        case 64: attend<64>(M, kc, vc, fused); break;
        default: attend<128>(M, kc, vc, fused); break;
      }
      L.o(ctx, att_.data(), tmp_.data(), M);
      launch(kernels::add_rmsnorm, M, threads, x_.data(), tmp_.data(), m_->norms.data() + (2 * l + 1) * H, c.norm_eps, xn_.data(), H);
      gate_up_swiglu(L, M);
      L.down(ctx, g_.data(), tmp_.data(), M);
      delta = tmp_.data();
    }
    launch(kernels::add_rmsnorm, M, threads, x_.data(), delta, m_->norms.data() + 2 * m_->layers.size() * H, c.norm_eps, xn_.data(), H);
    if (count > 0) {
      m_->lm_head.gemm(ctx, xn_.data() + static_cast<std::size_t>(first) * H, logits_.data(), count, step * H);
      awq::cuda::check(cudaMemcpyAsync(logits_host_.data(), logits_.data(), static_cast<std::size_t>(count) * c.vocab * sizeof(float),
                                       cudaMemcpyDeviceToHost, s),
                       "cudaMemcpyAsync (logits)");
    }
    if (advance) kernels::advance<<<1, std::min(1024, ((M + 31) / 32) * 32), 0, s>>>(pos_.data(), M);
    awq::cuda::check(cudaGetLastError(), "LlamaEngineCuda kernel launch");
  }

  CudaLlama<Linear>* m_;
  int cap_, batch_, rows_, chunk_, chunks_, pos_host_ = 0;
  bool decoding_ = false, warm_ = false;
  std::size_t kvd_, qd_;
  awq::cuda::DeviceBuffer<__half> kc_, vc_, xn_, tmp_, qkv_, att_, gu_, g_;
  awq::cuda::DeviceBuffer<float> rope_, x_, part_, logits_;
  awq::cuda::DeviceBuffer<int> tok_, seq_, pos_, tickets_;
  awq::cuda::DeviceBuffer<unsigned char> blas_ws_;
  awq::cuda::PinnedBuffer<int> tok_host_;  // tokens, sequences, positions: rows_ each
  awq::cuda::PinnedBuffer<float> logits_host_;
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace awq_example
