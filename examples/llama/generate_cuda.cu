// The generate command on the GPU engine: the same driver as on the CPU (llama/generate.hpp) over
// CudaGeneration — W4A16 linears through awq::cuda::W4A16Linear, the baseline through cuBLAS fp16.
#include "llama/engine_cuda.cuh"
#include "llama/generate.hpp"
#include "llama/generate_cuda.hpp"

#include <type_traits>

namespace awq_example {

/// The GPU's generation backend (see CpuGeneration).
struct CudaGeneration {
  using Fp = HostFp16Linear;  // loaded on the host, stacked and uploaded by CudaLlama
  using W4 = HostAwqLinear;
  template <class H>
  using Device = std::conditional_t<std::is_same<H, HostAwqLinear>::value, W4CudaLinear, CublasLinear>;
  template <class H>
  using Model = CudaLlama<Device<H>>;
  template <class H>
  using Engine = LlamaEngineCuda<Device<H>>;
  static constexpr const char* fp = "fp16 cuBLAS";
  static constexpr const char* w4 = "W4A16 (AWQ, GPU tiled kernel)";
};

int run_generate_cuda(const awq_cli::Args& a) {
  awq::detail::require(awq::cuda::device_count() > 0, "--backend cuda: no CUDA device is visible");
  return run_generate<CudaGeneration>(a);
}

}  // namespace awq_example
