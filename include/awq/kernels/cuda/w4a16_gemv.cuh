/// \file
/// \brief W4A16 GEMV on the GPU for small batches (M = 1..8): y = x · dequant(W)ᵀ (+ bias), reading
///        the AutoAWQ "GEMM" checkpoint layout directly (qweight [K, N/8] int32, qzeros
///        [K/G, N/8] int32, scales [K/G, N] fp16), fp16 or bf16 activations, fp32 accumulation.
///
/// Design (one launch, deterministic):
/// - A thread owns one packed int32 column (8 outputs); a block of 128 threads covers 1024
///   adjacent columns, so every k row is one fully used 512-byte stretch per block. K is split
///   into slices (split-K) so that about eight blocks per SM are resident; each thread keeps 16–32 weight
///   loads in flight (streaming loads, not kept in L1).
/// - Decoding: a nibble masked in place (bits 0..19; nibbles 5..7 after one shift by 20) and
///   OR-ed with the exponent of 2^23 is the float 2^23 + q·16^j (exact: it stays inside the 23
///   mantissa bits), so one LOP3 and one FADD give q·16^j; the 16^-j goes into the group's scale. Per group the thread accumulates Σ x·q and applies
///   y += s·(Σ x·q − z·Σ x) once (the AWQ formula w = (q − z)·s, factorized).
/// - Split-K partial sums go to an fp32 workspace with plain stores; the last block of a column
///   tile (an atomic ticket) adds the slices in a fixed order, adds the bias and writes y (fp16 or bf16),
///   then resets its ticket. The same inputs give the same bits every run.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "awq/backend/cuda_runtime.cuh"
#include "awq/error.hpp"
#include "awq/kernels/cuda/w4a16_act.cuh"
#include "awq/pack.hpp"

namespace awq {
namespace cuda {

/// \brief Device pointers and sizes of one W4A16 product over the AutoAWQ layout, with
///        activations x, bias and y of type T: __half (W4A16Args) or __nv_bfloat16 (W4A16ArgsBf16).
///        The scales are fp16 either way (the checkpoint's).
template <class T>
struct W4A16ArgsT {
  static_assert(is_w4a16_act_v<T>, "W4A16ArgsT: activations are __half or __nv_bfloat16");
  using element_type = T;                 ///< the activation type
  const T* x = nullptr;                   ///< [M, K] row-major
  const std::int32_t* qweight = nullptr;  ///< [K, N/8]
  const std::int32_t* qzeros = nullptr;   ///< [K/G, N/8]
  const __half* scales = nullptr;         ///< [K/G, N] (fp16)
  const T* bias = nullptr;                ///< [N] or null
  T* y = nullptr;                         ///< [M, N] row-major
  void* workspace = nullptr;      ///< w4a16_workspace_bytes(m, k, n) bytes, zero-filled once before the first call
  std::size_t workspace_bytes = 0;  ///< size of `workspace`, checked against what the sizes need
  int m = 1;                             ///< tokens (rows of x and y)
  int k = 0;                             ///< input features
  int n = 0;                             ///< output features
  int group = 128;                       ///< group size

  /// Throws awq::Error naming the argument that cannot be run (by w4a16_matmul; w4a16_gemv
  /// also needs M ≤ 8).
  void can_implement() const {
    constexpr const char* fn = "awq::cuda::w4a16";
    awq::detail::require(m >= 1, fn, ": M ", m, " is not positive");
    awq::detail::require(group == 32 || group == 64 || group == 128, fn, ": group ", group, " is not 32, 64 or 128");
    awq::detail::require(k > 0 && k % group == 0, fn, ": group ", group, " does not divide K ", k);
    awq::detail::require(n > 0 && n % 8 == 0, fn, ": N ", n, " is not a multiple of 8");
    awq::detail::require(x && qweight && qzeros && scales && y, fn, ": a required pointer is null");
  }
};
/// fp16 activations.
using W4A16Args = W4A16ArgsT<__half>;
/// bf16 activations.
using W4A16ArgsBf16 = W4A16ArgsT<__nv_bfloat16>;

namespace detail {

constexpr int kGemvThreads = 128;  // threads per block; one packed word (8 columns) each

/// How K is split: `slice` rows per block (a power of two, 32..2048), `splits` slices.
/// About eight blocks per SM (loads in flight); at least 64 rows per block (a short final sum).
struct GemvPlan {
  int tiles = 0, splits = 0, slice = 0;
};

inline GemvPlan gemv_plan(int m, int k, int n, int sms) {
  GemvPlan p;
  const int words = n / 8;
  p.tiles = (words + kGemvThreads - 1) / kGemvThreads;
  const int want_splits = std::max(1, (8 * sms + p.tiles - 1) / p.tiles);
  int slice = 2048;
  while (slice > 64 && (slice / 2) * want_splits >= k) slice /= 2;
  while (slice > 32 && slice * m > 8192) slice /= 2;  // the x slice lives in shared memory
  p.slice = slice;
  p.splits = (k + slice - 1) / slice;
  return p;
}

/// Bytes of the split-K tickets (one int per output tile) at the head of a workspace, padded so
/// that the fp32 partial sums after them stay aligned. Shared by the GEMV and the tensor-core GEMM.
inline std::size_t split_k_ticket_bytes(std::size_t tiles) { return (tiles * 4 + 255) / 256 * 256; }
inline std::size_t gemv_ticket_bytes(const GemvPlan& p) { return split_k_ticket_bytes(static_cast<std::size_t>(p.tiles)); }
/// Workspace layout: tickets [tiles] int (padded to 256 bytes), then partial sums [splits][M][N] float.
inline std::size_t gemv_workspace_bytes(const GemvPlan& p, int m, int n) {
  return gemv_ticket_bytes(p) + sizeof(float) * static_cast<std::size_t>(p.splits) * m * n;
}

/// Split-K arrival of one block at output tile `ticket` (call after storing its partial sums,
/// with every thread of the block): true in the block that arrives last, which then sees every
/// other block's partial sums, adds them in slice order (the same bits whichever block comes
/// last) and must reset the ticket to 0 for the next call.
__device__ __forceinline__ bool split_k_arrive_last(int* ticket, int splits) {
  __shared__ bool last;
  __threadfence();  // this block's partial sums visible device-wide before its ticket
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(ticket, 1) == splits - 1;
  __syncthreads();
  if (last) __threadfence();
  return last;
}

inline int device_sms() {
  static int cache[64] = {};  // per device id; a race writes the same value
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev >= 0 && dev < 64 && cache[dev] > 0) return cache[dev];
  int sms = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  if (dev >= 0 && dev < 64) cache[dev] = sms;
  return sms;
}

__device__ __forceinline__ float nibble_times_pow16(std::uint32_t masked) {
  return __int_as_float(static_cast<int>(masked | 0x4B000000u)) - 8388608.0f;  // exact
}

template <int M, class T>
__global__ void __launch_bounds__(kGemvThreads) w4a16_gemv_kernel(W4A16ArgsT<T> a, int slice, int splits, int* tickets, float* partial) {
  // Weight loads in flight per thread: 32 for M = 1 (the most bytes in flight per SM for the
  // bandwidth-bound sizes), 16 above (registers). Segments are multiples of 32 rows.
  constexpr int U = M == 1 ? 32 : 16;
  extern __shared__ float xs[];  // [M][slice]
  const int words = a.n / 8;
  const int word = static_cast<int>(blockIdx.x) * kGemvThreads + threadIdx.x;
  const int split = static_cast<int>(blockIdx.y);
  const int k0 = split * slice, k1 = min(k0 + slice, a.k), kn = k1 - k0;
  for (int i = threadIdx.x; i < M * kn; i += kGemvThreads)
    xs[(i / kn) * slice + i % kn] = Act<T>::to_float(a.x[static_cast<long>(i / kn) * a.k + k0 + i % kn]);
  __syncthreads();

  float yacc[M][8];
#pragma unroll
  for (int mm = 0; mm < M; ++mm)
#pragma unroll
    for (int i = 0; i < 8; ++i) yacc[mm][i] = 0.0f;

  if (word < words) {
    const int seg = min(slice, a.group);  // rows that share one group inside this slice
    for (int s0 = k0; s0 < k1; s0 += seg) {
      float acc[M][8], xsum[M];
#pragma unroll
      for (int mm = 0; mm < M; ++mm) {
        xsum[mm] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[mm][i] = 0.0f;
      }
      const std::int32_t* qp = a.qweight + static_cast<long>(s0) * words + word;
      for (int kk = 0; kk < seg; kk += U) {
        std::uint32_t q[U];
#pragma unroll
        for (int u = 0; u < U; ++u) q[u] = static_cast<std::uint32_t>(__ldcs(qp + static_cast<long>(kk + u) * words));
#pragma unroll
        for (int u = 0; u < U; ++u) {
          // Bits 0..22 are the float's mantissa: nibbles 0..4 in place, nibbles 5..7 after >> 20.
          const std::uint32_t hi = q[u] >> 20;
          float v[8];
#pragma unroll
          for (int i = 0; i < 5; ++i) v[i] = nibble_times_pow16(q[u] & (0xFu << (4 * i)));
#pragma unroll
          for (int i = 5; i < 8; ++i) v[i] = nibble_times_pow16(hi & (0xFu << (4 * (i - 5))));
#pragma unroll
          for (int mm = 0; mm < M; ++mm) {
            const float xv = xs[mm * slice + (s0 - k0) + kk + u];
            xsum[mm] += xv;
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[mm][i] = fmaf(xv, v[i], acc[mm][i]);
          }
        }
      }
      const int g = s0 / a.group;
      const uint4 sraw = *reinterpret_cast<const uint4*>(a.scales + static_cast<long>(g) * a.n + 8 * word);
      const __half* sh = reinterpret_cast<const __half*>(&sraw);
      const std::uint32_t zw = static_cast<std::uint32_t>(__ldg(a.qzeros + static_cast<long>(g) * words + word));
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        constexpr float kUnscale[8] = {1.0f, 1.0f / 16, 1.0f / 256, 1.0f / 4096, 1.0f / 65536, 1.0f, 1.0f / 16, 1.0f / 256};
        constexpr int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
        const float sc = __half2float(sh[order[i]]);
        const float z = static_cast<float>((zw >> (4 * i)) & 0xFu);
#pragma unroll
        for (int mm = 0; mm < M; ++mm) yacc[mm][i] = fmaf(sc, fmaf(acc[mm][i], kUnscale[i], -z * xsum[mm]), yacc[mm][i]);
      }
    }
  }

  constexpr int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  if (splits == 1) {
    if (word < words)
#pragma unroll
      for (int mm = 0; mm < M; ++mm)
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const int col = 8 * word + order[i];
          a.y[static_cast<long>(mm) * a.n + col] = Act<T>::from_float(yacc[mm][i] + (a.bias ? Act<T>::to_float(a.bias[col]) : 0.0f));
        }
    return;
  }
  if (word < words)
#pragma unroll
    for (int mm = 0; mm < M; ++mm) {
      float col[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) col[order[i]] = yacc[mm][i];
      float4* dst = reinterpret_cast<float4*>(partial + (static_cast<long>(split) * M + mm) * a.n + 8 * word);
      __stcg(dst, make_float4(col[0], col[1], col[2], col[3]));
      __stcg(dst + 1, make_float4(col[4], col[5], col[6], col[7]));
    }
  if (!split_k_arrive_last(tickets + blockIdx.x, splits)) return;
  if (word < words)
#pragma unroll 1
    for (int mm = 0; mm < M; ++mm) {
      float sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int sp0 = 0; sp0 < splits; sp0 += 8) {
        // Eight slices' loads in flight at once, then added in slice order: deterministic.
        float4 lo[8], hi[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (sp0 + j < splits) {
            const float4* src = reinterpret_cast<const float4*>(partial + (static_cast<long>(sp0 + j) * M + mm) * a.n + 8 * word);
            lo[j] = __ldcg(src);
            hi[j] = __ldcg(src + 1);
          } else {
            lo[j] = hi[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          }
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          sum[0] += lo[j].x, sum[1] += lo[j].y, sum[2] += lo[j].z, sum[3] += lo[j].w;
          sum[4] += hi[j].x, sum[5] += hi[j].y, sum[6] += hi[j].z, sum[7] += hi[j].w;
        }
      }
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        const int colx = 8 * word + c;
        a.y[static_cast<long>(mm) * a.n + colx] = Act<T>::from_float(sum[c] + (a.bias ? Act<T>::to_float(a.bias[colx]) : 0.0f));
      }
    }
  if (threadIdx.x == 0) tickets[blockIdx.x] = 0;  // ready for the next call
}

template <int M, class T>
void launch(const W4A16ArgsT<T>& a, const GemvPlan& p, cudaStream_t stream) {
  auto* base = static_cast<unsigned char*>(a.workspace);
  int* tickets = reinterpret_cast<int*>(base);
  float* partial = reinterpret_cast<float*>(base + gemv_ticket_bytes(p));
  const dim3 grid(static_cast<unsigned>(p.tiles), static_cast<unsigned>(p.splits));
  const std::size_t smem = sizeof(float) * static_cast<std::size_t>(M) * p.slice;
  w4a16_gemv_kernel<M, T><<<grid, kGemvThreads, smem, stream>>>(a, p.slice, p.splits, tickets, partial);
}

}  // namespace detail

/// \brief y = x · dequant(W)ᵀ (+ bias) for M = 1..8 on `stream`. Requires a.workspace of at least
///        w4a16_workspace_bytes(m, k, n) bytes (w4a16_gemm.cuh; a.workspace_bytes says how many; awq::Error when
///        too few), zero-filled before its first use (the kernel leaves it zero-filled again).
///        Calls sharing a workspace must not run concurrently.
template <class T>
void w4a16_gemv(const W4A16ArgsT<T>& a, cudaStream_t stream = nullptr) {
  a.can_implement();
  awq::detail::require(a.m <= 8, "awq::cuda::w4a16_gemv: M ", a.m, " is outside 1..8 (w4a16_matmul takes any M)");
  const auto p = detail::gemv_plan(a.m, a.k, a.n, detail::device_sms());
  const std::size_t need = detail::gemv_workspace_bytes(p, a.m, a.n);
  awq::detail::require(a.workspace && a.workspace_bytes >= need, "awq::cuda::w4a16_gemv: workspace_bytes ", a.workspace_bytes,
                       " is less than the ", need, " that M ", a.m, ", K ", a.k, ", N ", a.n,
                       " need (w4a16_workspace_bytes)");
  switch (a.m) {
    case 1: detail::launch<1, T>(a, p, stream); break;
    case 2: detail::launch<2, T>(a, p, stream); break;
    case 3: detail::launch<3, T>(a, p, stream); break;
    case 4: detail::launch<4, T>(a, p, stream); break;
    case 5: detail::launch<5, T>(a, p, stream); break;
    case 6: detail::launch<6, T>(a, p, stream); break;
    case 7: detail::launch<7, T>(a, p, stream); break;
    default: detail::launch<8, T>(a, p, stream); break;
  }
  check(cudaGetLastError(), "w4a16_gemv_kernel launch");
}

}  // namespace cuda
}  // namespace awq
