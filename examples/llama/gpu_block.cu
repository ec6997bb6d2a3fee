// nvcc half of awq_llama_cuda: the GPU block search behind gpu_block.hpp.
#include "gpu_block.hpp"
#include "llama_cuda.cuh"

namespace awq_example {

BlockAwqResult awq_block_cuda(const LlamaConfig& c, const Batch& b, LlamaLayer& l, const Mat& hidden,
                              const BlockAwqOptions& opt) {
  return gpu::awq_block_on_gpu(c, b, l, hidden, opt);
}

}  // namespace awq_example
