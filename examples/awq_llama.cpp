// awq-llama: quantize a Llama-family model (a GGUF file or a Hugging Face directory) with RTN and
// AWQ through the library's pipeline (awq/model/) and report perplexity.
//
//   awq_llama [quantize] --model FILE.gguf|HF_DIR --calib-text FILE --eval-text FILE [options]
//   awq_llama generate --model FILE.gguf|HF_DIR|AWQ_DIR --prompt TEXT [options]
//   awq_llama inspect FILE.gguf|FILE.safetensors|HF_DIR
//   awq_llama --help (every option, its default and an example: cli/options.hpp)
//
// Every option is checked before any work (cli/options.hpp); the job is llama/job.hpp (on the CPU
// compiled apart, llama/job_cpu.cpp), generation llama/generate.hpp (a KV-cache decode engine,
// llama/engine.hpp). Final weights use fp16 scales, exactly as exported: the perplexities are
// those of the checkpoints.
#include <awq/awq.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "cli/aligned_heap.hpp"
#include "cli/inspect.hpp"
#include "cli/options.hpp"
#include "llama/generate_cpu.hpp"
#include "llama/generate_cuda.hpp"
#include "llama/job_cpu.hpp"
#include "llama/job_cuda.hpp"

namespace {

// The command's exit code once its output is on stdout: 2, with the reason, when stdout could not
// take all of it (a full disk, /dev/full), which would otherwise pass for success.
int finish_output(int rc) {
  errno = 0;
  const bool failed = std::fflush(stdout) != 0 || std::ferror(stdout);
  if (!failed) return rc;
  int e = errno;  // this flush's reason; an earlier failure (generate flushes as it goes) left none
  if (!e && ::write(STDOUT_FILENO, "", 0) < 0) e = errno;  // a device that refuses writes says why again
  std::fprintf(stderr, "awq_llama: writing the output failed%s%s\n", e ? ": " : "", e ? std::strerror(e) : "");
  return rc ? rc : 2;
}

int run(int argc, char** argv) {
  const awq_cli::Args a = awq_cli::parse(argc, argv);
  // A closed stdout: refused before any work (a file opened later would take descriptor 1 and the
  // output would go into it).
  awq::detail::require(::fcntl(STDOUT_FILENO, F_GETFD) != -1, "writing the output failed: stdout is closed");
  if (a.cmd == "help") return std::fputs(awq_cli::help_text().c_str(), stdout) < 0 ? 2 : 0;
  if (a.cmd == "inspect") return awq_cli::inspect(a.inspect_file);
  awq::detail::require(a.backend == "cpu" || awq_example::tool_has_cuda(), awq_example::kBuiltWithoutCuda);
  awq_cli::check_environment(a);
  for (const auto& w : awq_cli::warnings(a)) std::fprintf(stderr, "awq_llama: %s\n", w.c_str());
  if (a.cmd == "generate" && a.backend == "cuda") return awq_example::run_generate_cuda(a);
  if (a.cmd == "generate") return awq_example::run_generate<awq_example::CpuGeneration>(a);
  awq_example::JobArgs job;
  job.model = a.model;
  job.calib_text = a.calib_text;
  job.eval_text = a.eval_text;
  job.report = a.report;
  job.export_dir = a.export_dir;
  job.checkpoint_dir = a.checkpoint_dir;
  job.backend = a.backend;
  job.configs = a.configs;
  job.duo = a.duo;
  job.math = a.math;
  job.kernel_eval = a.backend == "cuda" && !a.eval_dequantized;
  job.calib_seqs = a.calib_seqs;
  job.search_seqs = a.search_seqs;
  job.seq_len = a.seq_len;
  job.eval_tokens = a.eval_tokens;
  job.layers = a.layers;
  if (a.shard_bytes) job.shard_bytes = a.shard_bytes;
  job.mode = a.mode;
  job.gptq_damp = a.gptq_damp;
  if (a.backend == "cuda") return awq_example::run_job_cuda(job);
  return awq_example::run_job_cpu(job);
}

}  // namespace

int main(int argc, char** argv) try {
  return finish_output(run(argc, argv));
} catch (const std::exception& e) {
  std::fprintf(stderr, "awq_llama: %s\n", awq_cli::describe(e).c_str());
  return 2;
}
