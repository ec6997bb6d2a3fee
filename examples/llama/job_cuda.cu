// The awq_llama job instantiated on backend::cuda: the same driver and architecture policies as
// on the CPU, with the policies' GPU kernels (awq/model/arch/llama.cuh, awq/model/arch/opt.cuh).
#include <awq/model/arch/llama.cuh>
#include <awq/model/arch/opt.cuh>

#include "llama/job_cuda.hpp"

namespace awq_example {

bool tool_has_cuda() { return true; }

int run_job_cuda(const JobArgs& a) {
  using Math = awq::backend::cuda::Math;
  awq::backend::cuda::set_math(a.math == "tf32" ? Math::tf32 : a.math == "fp16" ? Math::fp16 : a.math == "bf16" ? Math::bf16 : Math::fp32);
  return run_job<awq::backend::cuda>(a);
}

}  // namespace awq_example
