/// \file
/// \brief W4A16 matrix product on tensor cores over the tiled layout (awq/layout/tiled.hpp):
///        y = x · dequant(W)ᵀ (+ bias) for any M ≥ 1, x and y in fp16 or bf16 (w4a16_act.cuh),
///        fp32 accumulation. The front door: arguments, workspace, dispatch.
///
/// Three kernels (one launch each; deterministic), chosen by M and the device through the plans
/// of tiled/plan.hpp, tuned by a TiledTuning type (tiled/tuning.hpp):
/// - M ≤ 16: a streaming GEMV (tiled/gemv.cuh; sm_80 and later), near the memory floor.
/// - M > 16 on Hopper: warpgroup MMA with the decoded weights as the register operand
///   (tiled/wgmma_sm90.cuh) — in a build with sm_90a device code (__CUDA_ARCH_FEAT_SM90_ALL: no
///   project-specific definition), on a CC 9.0 device whose image holds it, unless its plan
///   would split K more than TiledTuning::wgmma_max_splits ways.
/// - Otherwise: the cp.async + mma.sync pipeline (tiled/mma.cuh).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "awq/backend/cuda_runtime.cuh"
#include "awq/error.hpp"
#include "awq/kernels/cuda/tiled/args.cuh"
#include "awq/kernels/cuda/tiled/gemv.cuh"
#include "awq/kernels/cuda/tiled/mma.cuh"
#include "awq/kernels/cuda/tiled/plan.hpp"
#include "awq/kernels/cuda/tiled/tuning.hpp"
#include "awq/kernels/cuda/tiled/wgmma_sm90.cuh"
#include "awq/kernels/cuda/w4a16_act.cuh"
#include "awq/kernels/cuda/w4a16_gemm.cuh"
#include "awq/layout/tiled.hpp"

namespace awq {
namespace cuda {
namespace detail {

/// The current device's resident slots of the tiled kernels for activations T under tuning Tn
/// (each figure cached per device by its kernel); the GEMV's only when M is the GEMV's.
template <class T, class Tn>
TiledSlots tiled_device_slots(int m) {
  TiledSlots s;
  s.sms = device_sms();
  s.gemv = tgemv_slots<T, Tn>();
  if (m <= Tn::gemv_max_m) {
    s.clusters = Tn::gemv_cluster && tiled_wgmma_available();
    return s;
  }
  s.mma[0] = tiled_slots<1, T, Tn>();
  s.mma[1] = tiled_slots<2, T, Tn>();
  s.mma[2] = tiled_slots<4, T, Tn>();
  s.wgmma = Tn::wgmma && tiled_wgmma_available();
  if (s.wgmma) {
    s.wgmma_narrow[0] = tiled_wgmma_slots<32, 1, T, Tn>();
    s.wgmma_narrow[1] = tiled_wgmma_slots<64, 1, T, Tn>();
    s.wgmma_wide[0] = tiled_wgmma_slots<64, 4, T, Tn>();
    s.wgmma_wide[1] = tiled_wgmma_slots<128, 4, T, Tn>();
  }
  return s;
}

/// The plan of one product on the current device.
template <class T, class Tn>
GemmPlan tiled_device_plan(int m, int k, int n) {
  return tiled_plan<Tn>(m, k, n, tiled_device_slots<T, Tn>(m));
}

}  // namespace detail

/// \brief Workspace bytes the tiled product needs for these sizes on the current device under
///        `Tuning`, with fp16 or bf16 activations (the larger of the two); 0 when none. Allocate
///        once, zero-fill once (cudaMemset), reuse (not by concurrent calls).
template <class Tuning = TiledTuning>
std::size_t w4a16_tiled_workspace_bytes(int m, int k, int n) {
  return std::max(detail::tiled_plan_workspace_bytes(detail::tiled_device_plan<__half, Tuning>(m, k, n), m, n),
                  detail::tiled_plan_workspace_bytes(detail::tiled_device_plan<__nv_bfloat16, Tuning>(m, k, n), m, n));
}

/// \brief y = x · dequant(W)ᵀ (+ bias) over tiled weights, any M ≥ 1, on `stream` (sm_80 or
///        later), x, bias and y in fp16 (W4A16TiledArgs) or bf16 (W4A16TiledArgsBf16).
///        awq::Error for arguments it cannot run, naming them.
/// \tparam Tuning the kernels' tuning, passed as a tag (`w4a16_matmul(a, stream, MyTuning{})`;
///         TiledTuning: the measured defaults)
template <class T, class Tuning = TiledTuning>
void w4a16_matmul(const W4A16TiledArgsT<T>& a, cudaStream_t stream = nullptr, Tuning = {}) {
  a.can_implement();
  const auto p = detail::tiled_device_plan<T, Tuning>(a.m, a.k, a.n);
  const std::size_t need = detail::tiled_plan_workspace_bytes(p, a.m, a.n);
  awq::detail::require(need == 0 || (a.workspace && a.workspace_bytes >= need), "awq::cuda::w4a16_matmul (tiled): workspace_bytes ",
                       a.workspace_bytes, " is less than the ", need, " that M ", a.m, ", K ", a.k, ", N ", a.n,
                       " need (w4a16_tiled_workspace_bytes)");
  if (p.wgmma) {
    if (p.warpgroups == 4)
      p.bm == 64 ? detail::launch_tiled_wgmma<64, 4, T, Tuning>(a, p, stream) : detail::launch_tiled_wgmma<128, 4, T, Tuning>(a, p, stream);
    else
      p.bm == 32 ? detail::launch_tiled_wgmma<32, 1, T, Tuning>(a, p, stream) : detail::launch_tiled_wgmma<64, 1, T, Tuning>(a, p, stream);
    check(cudaGetLastError(), "w4a16_tiled_wgmma_kernel launch");
    return;
  }
  switch (p.bm / 16) {
    case 0: detail::launch_tiled_gemv<T, Tuning>(a, p, stream); break;
    case 1: detail::launch_tiled<1, T, Tuning>(a, p, stream); break;
    case 2: detail::launch_tiled<2, T, Tuning>(a, p, stream); break;
    default: detail::launch_tiled<4, T, Tuning>(a, p, stream); break;
  }
  check(cudaGetLastError(), "w4a16_tiled_kernel launch");
}

/// \brief Tiled W4A16 weights on the device (owning), made from host TiledW4A16.
struct TiledW4A16Device {
  DeviceBuffer<std::uint32_t> qweight;  ///< tiled codes (TiledW4A16::qweight)
  DeviceBuffer<std::uint32_t> qzeros;   ///< tiled zeros; empty: symmetric
  DeviceBuffer<__half> scales;          ///< tiled scales (fp16)
  int k = 0;                            ///< input features
  int n = 0;                            ///< output features
  int group = 128;                      ///< group size

  TiledW4A16Device() = default;
  /// Uploads the host layout `t`.
  explicit TiledW4A16Device(const TiledW4A16& t) : qweight(t.qweight), qzeros(t.qzeros), scales(t.scales.size()), k(t.k), n(t.n), group(t.group) {
    scales.upload(reinterpret_cast<const __half*>(t.scales.data()), t.scales.size());
  }
  /// Arguments for y [m, n] = x [m, k] · dequant(W)ᵀ with these weights; T (fp16 or bf16) from x.
  template <class T>
  W4A16TiledArgsT<T> args(const T* x, T* y, int m, void* workspace, std::size_t workspace_bytes,
                          const typename detail::Act<T>::element* bias = nullptr) const {
    W4A16TiledArgsT<T> a;
    a.x = x;
    a.qweight = qweight.data();
    a.qzeros = qzeros.size() ? qzeros.data() : nullptr;
    a.scales = scales.data();
    a.bias = bias;
    a.y = y;
    a.workspace = workspace;
    a.workspace_bytes = workspace_bytes;
    a.m = m;
    a.k = k;
    a.n = n;
    a.group = group;
    return a;
  }
};

}  // namespace cuda
}  // namespace awq
