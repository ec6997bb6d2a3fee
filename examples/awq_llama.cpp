// awq-llama: quantize a Llama-architecture GGUF model with RTN and AWQ and report perplexity.
//
//   awq_llama [quantize] --model FILE.gguf|HF_DIR --calib-text FILE --eval-text FILE [options]
//   awq_llama inspect FILE.gguf|FILE.safetensors
//
// Options: --configs w4g64,w3g64 (bits, group; zero point on)  --duo (AutoAWQ duo scaling)
//          --calib-seqs 64 (mean|x| and clip)  --search-seqs 4 (scale-search loss)
//          --seq-len 512 --eval-tokens 32768 --layers N (first N layers only; block output error
//          instead of perplexity)  --report FILE.json
//          --export DIR (a Hugging Face AWQ directory per config under DIR)
//          --backend cpu|cuda (where the search runs; cuda needs the awq_llama_cuda build)
//          --checkpoint DIR (per-block results saved as they finish; a rerun resumes from them)
// Final weights use fp16 scales, exactly as exported: the perplexities are those of the checkpoints.
#include <awq/awq.hpp>
#include <awq/io/gguf.hpp>
#include <awq/io/safetensors.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "llama/job.hpp"
#ifdef AWQ_LLAMA_CUDA
#include "llama/job_cuda.hpp"
#endif

namespace {

struct Args {
  std::string cmd = "quantize", backend = "cpu", checkpoint_dir, model, calib_text, eval_text, report, inspect_file, export_dir;
  std::vector<awq::QuantSpec> configs{{4, 64, true}, {3, 64, true}};
  bool duo = false;
  int calib_seqs = 64, search_seqs = 4, seq_len = 512, eval_tokens = 32768, layers = -1;
};

std::vector<awq::QuantSpec> parse_configs(const std::string& s) {
  std::vector<awq::QuantSpec> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int b = 0, g = 0;
    if (std::sscanf(item.c_str(), "w%dg%d", &b, &g) != 2) throw awq::Error("--configs: cannot parse '" + item + "' (expected e.g. w4g64)");
    awq::QuantSpec q{b, g, true};
    q.validate();
    out.push_back(q);
  }
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
  int i = 1;
  if (i < argc && std::string(argv[i]) == "inspect") {
    a.cmd = "inspect";
    awq::detail::require(i + 1 < argc, "inspect: a file is required");
    a.inspect_file = argv[i + 1];
    return a;
  }
  if (i < argc && std::string(argv[i]) == "quantize") ++i;
  for (; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&]() -> std::string {
      awq::detail::require(i + 1 < argc, k, " needs a value");
      return argv[++i];
    };
    if (k == "--model") a.model = val();
    else if (k == "--calib-text") a.calib_text = val();
    else if (k == "--eval-text") a.eval_text = val();
    else if (k == "--report") a.report = val();
    else if (k == "--export") a.export_dir = val();
    else if (k == "--configs") a.configs = parse_configs(val());
    else if (k == "--duo") a.duo = true;
    else if (k == "--calib-seqs") a.calib_seqs = std::stoi(val());
    else if (k == "--search-seqs") a.search_seqs = std::stoi(val());
    else if (k == "--seq-len") a.seq_len = std::stoi(val());
    else if (k == "--eval-tokens") a.eval_tokens = std::stoi(val());
    else if (k == "--layers") a.layers = std::stoi(val());
    else if (k == "--backend") a.backend = val();
    else if (k == "--checkpoint") a.checkpoint_dir = val();
    else throw awq::Error("unknown option " + k);
  }
  awq::detail::require(!a.model.empty() && !a.calib_text.empty() && !a.eval_text.empty(),
                       "quantize: --model, --calib-text and --eval-text are required");
  awq::detail::require(a.backend == "cpu" || a.backend == "cuda", "--backend: '", a.backend, "' is not cpu or cuda");
#ifndef AWQ_LLAMA_CUDA
  awq::detail::require(a.backend == "cpu", "--backend cuda: this awq_llama was built without CUDA (use awq_llama_cuda)");
#endif
  return a;
}

int inspect_safetensors(const std::string& path) {
  const auto st = awq::io::SafetensorsFile::open(path);
  std::printf("safetensors, %zu tensors, %zu metadata entries\n", st.names().size(), st.metadata().size());
  for (const auto& [k, v] : st.metadata()) std::printf("  %-45s %s\n", k.c_str(), v.substr(0, 80).c_str());
  std::printf("%-56s %6s %-16s %12s\n", "tensor", "dtype", "shape", "bytes");
  for (const auto& n : st.names()) {
    const auto t = st.tensor(n);
    std::string shape;
    for (auto d : t.shape) shape += (shape.empty() ? "" : "x") + std::to_string(d);
    std::printf("%-56s %6s %-16s %12zu\n", n.c_str(), t.dtype.c_str(), shape.c_str(), t.data.size());
  }
  return 0;
}

int inspect(const std::string& path) {
  {
    std::ifstream f(path, std::ios::binary);
    awq::detail::require(static_cast<bool>(f), "inspect: cannot open ", path);
    char magic[4] = {};
    f.read(magic, 4);
    if (std::string(magic, 4) != "GGUF") return inspect_safetensors(path);
  }
  const auto g = awq::io::GgufFile::open(path);
  std::printf("GGUF v%u, alignment %llu, %zu metadata keys, %zu tensors\n", g.version(),
              static_cast<unsigned long long>(g.alignment()), g.metadata().size(), g.tensors().size());
  for (const auto& [k, v] : g.metadata()) {
    std::string shown;
    if (v.type == 8) shown = v.s.substr(0, 80);
    else if (v.type == 9) shown = "array[" + std::to_string(v.strs.size() + v.ints.size() + v.floats.size()) + "]";
    else if (v.type == 6 || v.type == 12) shown = std::to_string(v.f);
    else shown = std::to_string(v.i);
    std::printf("  %-45s %s\n", k.c_str(), shown.c_str());
  }
  std::printf("%-32s %6s %-18s %12s\n", "tensor", "type", "shape", "offset");
  for (const auto& t : g.tensors()) {
    std::string shape;
    for (auto d : t.dims) shape += (shape.empty() ? "" : "x") + std::to_string(d);
    std::printf("%-32s %6u %-18s %12llu\n", t.name.c_str(), t.type, shape.c_str(), static_cast<unsigned long long>(t.offset));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  const Args a = parse(argc, argv);
  if (a.cmd == "inspect") return inspect(a.inspect_file);
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
  job.calib_seqs = a.calib_seqs;
  job.search_seqs = a.search_seqs;
  job.seq_len = a.seq_len;
  job.eval_tokens = a.eval_tokens;
  job.layers = a.layers;
#ifdef AWQ_LLAMA_CUDA
  if (a.backend == "cuda") return awq_example::run_job_cuda(job);
#endif
  return awq_example::run_job<awq::backend::cpu>(job);
} catch (const std::exception& e) {
  std::fprintf(stderr, "awq_llama: %s\n", e.what());
  return 2;
}
