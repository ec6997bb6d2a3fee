// awq_llama generate on the GPU, compiled by nvcc in generate_cuda.cu; the tool itself is host code.
#pragma once

#include "cli/options.hpp"

namespace awq_example {

/// run_generate on the GPU engine (llama/engine_cuda.cuh); awq::Error without a CUDA device.
int run_generate_cuda(const awq_cli::Args& a);

}  // namespace awq_example
