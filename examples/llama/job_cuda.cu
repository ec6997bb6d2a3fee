// The awq_llama job instantiated on backend::cuda: the same driver and architecture policies as
// on the CPU, with the policies' GPU kernels (awq/model/arch/llama.cuh, awq/model/arch/opt.cuh).
#include <awq/model/arch/llama.cuh>
#include <awq/model/arch/opt.cuh>

#include "llama/job_cuda.hpp"

namespace awq_example {

int run_job_cuda(const JobArgs& a) {
  awq::backend::cuda::set_tf32(a.tf32);
  return run_job<awq::backend::cuda>(a);
}

}  // namespace awq_example
