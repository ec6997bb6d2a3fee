// The GPU block search as seen from host-only code: awq_llama_cuda compiles the tool with the
// host compiler and only examples/llama/gpu_block.cu with nvcc (the host Eigen code, e.g. the
// perplexity evaluation, runs as fast as in awq_llama).
#pragma once

#include "llama_block.hpp"

namespace awq_example {

/// llama_cuda.cuh's gpu::awq_block_on_gpu (defined in gpu_block.cu): the per-block search on the
/// GPU in fp32, with the same contract as awq_block.
BlockAwqResult awq_block_cuda(const LlamaConfig& c, const Batch& b, LlamaLayer& l, const Mat& hidden,
                              const BlockAwqOptions& opt);

}  // namespace awq_example
