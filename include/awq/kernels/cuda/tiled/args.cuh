/// \file
/// \brief The arguments of one tiled W4A16 product (public) and what the kernels that stage
///        them through shared memory share: each thread's copy of a step's group parameters.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

#include "awq/error.hpp"
#include "awq/kernels/cuda/w4a16_act.cuh"

namespace awq {
namespace cuda {

/// \brief Device pointers and sizes of one W4A16 product over tiled weights
///        (the arrays of awq::TiledW4A16, uploaded; TiledW4A16Device does that), with
///        activations x, bias and y of type T: __half (W4A16TiledArgs) or __nv_bfloat16
///        (W4A16TiledArgsBf16). The scales are fp16 either way (the layout's).
template <class T>
struct W4A16TiledArgsT {
  static_assert(is_w4a16_act_v<T>, "W4A16TiledArgsT: activations are __half or __nv_bfloat16");
  using element_type = T;                   ///< the activation type
  const T* x = nullptr;                     ///< [M, K] row-major, 16-byte aligned
  const std::uint32_t* qweight = nullptr;   ///< tiled codes, 16-byte aligned
  const std::uint32_t* qzeros = nullptr;    ///< tiled zeros, 16-byte aligned; null: symmetric (zero 8)
  const __half* scales = nullptr;           ///< tiled scales (fp16), 16-byte aligned
  const T* bias = nullptr;                  ///< [N] or null
  T* y = nullptr;                           ///< [M, N] row-major ([M, N/2] with swiglu_output), 4-byte aligned
  void* workspace = nullptr;                ///< w4a16_tiled_workspace_bytes(m, k, n) bytes, zero-filled once
  std::size_t workspace_bytes = 0;          ///< size of `workspace` (checked)
  int m = 1;                                ///< tokens (rows of x and y)
  int k = 0;                                ///< input features (TiledW4A16::k)
  int n = 0;                                ///< output features (TiledW4A16::n)
  int group = 128;                          ///< group size (TiledW4A16::group)
  /// true: for M ≤ 16 the call is launched with programmatic dependent launch (sm_90): its blocks
  /// may start while the kernel before it in the stream ends, and wait for that kernel's completion
  /// before they read or write global memory (≈ 1 µs a call on an H100; bench/RESULTS.md). Safe
  /// with any kernel before it; pointless before sm_90. Ignored above M = 16 (measured there: from
  /// 2 % faster to 16 % slower — the next grid's waiting blocks take SM slots out of turn).
  bool overlap_previous = false;
  /// true: output features come in (gate, up) pairs — column 2j is gate j, 2j + 1 up j (a gated
  /// MLP's two projections stacked row by row, the bias likewise) — and y [M, N/2] gets
  /// silu(gate)·up, each rounded to T first: the down projection's input with no activation
  /// kernel between (any M).
  bool swiglu_output = false;

  /// Throws awq::Error naming the argument that cannot be run.
  void can_implement() const {
    constexpr const char* fn = "awq::cuda::w4a16_matmul (tiled)";
    using awq::detail::require;
    require(m >= 1, fn, ": M ", m, " is not positive");
    require(group == 32 || group == 64 || group == 128, fn, ": group ", group, " is not 32, 64 or 128");
    require(k > 0 && k % group == 0, fn, ": group ", group, " does not divide K ", k);
    require(n > 0 && n % 8 == 0, fn, ": N ", n, " is not a multiple of 8");
    require(x && qweight && scales && y, fn, ": a required pointer is null");
    auto aligned = [](const void* p, std::uintptr_t b) { return reinterpret_cast<std::uintptr_t>(p) % b == 0; };
    require(aligned(x, 16) && aligned(qweight, 16) && aligned(scales, 16) && aligned(qzeros, 16), fn,
            ": x, qweight, scales and qzeros must be 16-byte aligned");
    require(aligned(y, 4) && aligned(bias, 2), fn, ": y must be 4-byte aligned");
  }
};
/// fp16 activations.
using W4A16TiledArgs = W4A16TiledArgsT<__half>;
/// bf16 activations.
using W4A16TiledArgsBf16 = W4A16TiledArgsT<__nv_bfloat16>;

namespace detail {

/// A thread's 16-byte share of one step's group parameters for a block's four strips: threads
/// 0 .. 32·group_rows − 1 copy scales (group row j = tid / 32: 4 strips × 128 bytes at s_off + 512 j),
/// threads 64 .. 64 + 8·group_rows − 1 zeros (4 strips × 32 bytes at z_off + 128 j); strips past N
/// are skipped. src: null when the thread copies nothing; dst: offset in the stage; row: bytes
/// between group rows in global memory.
struct GroupParamCopy {
  const unsigned char* src = nullptr;
  int dst = 0;
  long row = 0;
};
template <class T>
__host__ __device__ inline GroupParamCopy group_param_copy(const W4A16TiledArgsT<T>& a, int tid, int nt0, int ntiles, int group_rows, int s_off,
                                                         int z_off) {
  GroupParamCopy c;
  if (tid < group_rows * 32) {
    const int j = tid / 32, cc = tid % 32;
    if (nt0 + cc / 8 < ntiles) {
      c.src = reinterpret_cast<const unsigned char*>(a.scales) + (static_cast<long>(j) * ntiles + nt0) * 128 + cc * 16;
      c.dst = s_off + j * 512 + cc * 16;
      c.row = static_cast<long>(ntiles) * 128;
    }
  } else if (a.qzeros && tid >= 64 && tid < 64 + group_rows * 8) {
    const int j = (tid - 64) / 8, cc = (tid - 64) % 8;
    if (nt0 + cc / 2 < ntiles) {
      c.src = reinterpret_cast<const unsigned char*>(a.qzeros) + (static_cast<long>(j) * ntiles + nt0) * 32 + cc * 16;
      c.dst = z_off + j * 128 + cc * 16;
      c.row = static_cast<long>(ntiles) * 32;
    }
  }
  return c;
}

}  // namespace detail
}  // namespace cuda
}  // namespace awq
