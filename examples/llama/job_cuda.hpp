// The awq_llama job on backend::cuda, compiled by nvcc in job_cuda.cu; the tool itself is host code.
#pragma once

#include "llama/job.hpp"

namespace awq_example {

/// run_job<awq::backend::cuda>(a).
int run_job_cuda(const JobArgs& a);

}  // namespace awq_example
