// The awq_llama job on backend::cpu, instantiated in job_cpu.cpp: a translation unit of its own,
// so that it compiles beside the rest of the tool (scripts/main.sh builds one per core).
#pragma once

#include "llama/job.hpp"

namespace awq_example {

/// run_job<awq::backend::cpu>(a).
int run_job_cpu(const JobArgs& a);

}  // namespace awq_example
