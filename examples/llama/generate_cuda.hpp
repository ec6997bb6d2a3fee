// awq_llama generate on the GPU, compiled by nvcc in generate_cuda.cu (awq_llama_cuda); the tool
// itself is host code, linked with no_cuda.cpp instead in awq_llama.
#pragma once

#include "cli/options.hpp"

namespace awq_example {

/// run_generate on the GPU engine (llama/engine_cuda.cuh); awq::Error without a CUDA device or in
/// a build without the GPU paths.
int run_generate_cuda(const awq_cli::Args& a);

}  // namespace awq_example
