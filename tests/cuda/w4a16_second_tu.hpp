// The tiled W4A16 kernels seen from two translation units (test_cuda_w4a16.cu and
// test_cuda_w4a16_tu.cu): nvcc gives each translation unit its own copy of a __global__ template's
// instantiations, and the library must set the Hopper kernel's shared-memory limit on the copy it
// launches, whichever translation unit configured the kernel first.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>

#include "awq/kernels/cuda/w4a16_tiled.cuh"

namespace awq_test {

/// A Hopper-kernel instantiation: its host stub (this translation unit's) and its shared memory.
struct WgmmaKernelRef {
  const void* kernel;
  std::size_t smem;
};

namespace {  // internal linkage: each translation unit names its own copies

template <int NTOK, int WGS, class T>
WgmmaKernelRef wgmma_ref() {
  using Tn = awq::cuda::TiledTuning;
  return {reinterpret_cast<const void*>(awq::cuda::detail::w4a16_tiled_wgmma_kernel<NTOK, WGS, T, Tn>),
          awq::cuda::detail::WgmmaShape<NTOK, WGS, Tn>::smem_bytes};
}

/// This translation unit's Hopper kernel of `form` (0..3: 32 and 64 tokens with one warpgroup,
/// 64 and 128 with four) for fp16 or bf16 activations.
template <class T>
WgmmaKernelRef wgmma_kernel_of_this_tu(int form) {
  switch (form) {
    case 0: return wgmma_ref<32, 1, T>();
    case 1: return wgmma_ref<64, 1, T>();
    case 2: return wgmma_ref<64, 4, T>();
    default: return wgmma_ref<128, 4, T>();
  }
}

}  // namespace

/// The same, from test_cuda_w4a16_tu.cu.
WgmmaKernelRef second_tu_wgmma_kernel(int form, bool bf16);
/// awq::cuda::w4a16_matmul called in test_cuda_w4a16_tu.cu.
void second_tu_matmul(const awq::cuda::W4A16TiledArgs& a);
void second_tu_matmul(const awq::cuda::W4A16TiledArgsBf16& a);

}  // namespace awq_test
