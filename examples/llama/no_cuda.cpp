// awq_llama's stand-ins for the GPU paths of awq_llama_cuda (llama/job_cuda.cu,
// llama/generate_cuda.cu): main refuses `--backend cuda` before any work (tool_has_cuda).
#include <awq/error.hpp>

#include "llama/generate_cuda.hpp"
#include "llama/job_cuda.hpp"

namespace awq_example {

namespace {
[[noreturn]] void no_cuda() { throw awq::Error(kBuiltWithoutCuda); }
}  // namespace

bool tool_has_cuda() { return false; }
int run_job_cuda(const JobArgs&) { no_cuda(); }
int run_generate_cuda(const awq_cli::Args&) { no_cuda(); }

}  // namespace awq_example
