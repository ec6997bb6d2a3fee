// The awq_llama job instantiated on backend::cpu (llama/job_cpu.hpp).
#include "llama/job_cpu.hpp"

namespace awq_example {

int run_job_cpu(const JobArgs& a) { return run_job<awq::backend::cpu>(a); }

}  // namespace awq_example
