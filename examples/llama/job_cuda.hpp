// The awq_llama job on backend::cuda, compiled by nvcc in job_cuda.cu (awq_llama_cuda); the tool
// itself is host code, linked with no_cuda.cpp instead in awq_llama.
#pragma once

#include "llama/job.hpp"

namespace awq_example {

/// Whether this build of the tool has the GPU paths (awq_llama_cuda).
bool tool_has_cuda();
/// What `--backend cuda` is told in a build without them.
inline constexpr const char* kBuiltWithoutCuda = "--backend cuda: this awq_llama was built without CUDA (use awq_llama_cuda)";

/// run_job<awq::backend::cuda>(a); awq::Error in a build without them.
int run_job_cuda(const JobArgs& a);

}  // namespace awq_example
