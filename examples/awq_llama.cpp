// awq-llama: quantize a Llama-architecture GGUF model with RTN and AWQ and report perplexity.
//
//   awq_llama [quantize] --model FILE.gguf --calib-text FILE --eval-text FILE [options]
//   awq_llama inspect FILE.gguf|FILE.safetensors
//
// Options: --configs w4g64,w3g64 (bits, group; zero point on)  --duo (AutoAWQ duo scaling)
//          --calib-seqs 64 (mean|x| and clip)  --search-seqs 4 (scale-search loss)
//          --seq-len 512 --eval-tokens 32768 --layers N (first N layers only)  --report FILE.json
//          --export DIR (a Hugging Face AWQ directory per config under DIR)
//          --backend cpu|cuda (where the search runs; cuda needs the awq_llama_cuda build)
//          --checkpoint DIR (per-block results saved as they finish; a rerun resumes from them)
// Final weights use fp16 scales, exactly as exported: the perplexities are those of the checkpoints.
#include <awq/awq.hpp>
#include <awq/io/gguf.hpp>
#include <awq/io/safetensors.hpp>

#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "llama/checkpoint.hpp"
#include "llama/export.hpp"
#include "llama/llama_model.hpp"
#include "llama/tokenizer.hpp"
#ifdef AWQ_LLAMA_CUDA
#include "llama/gpu_block.hpp"
#endif

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

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

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  awq::detail::require(static_cast<bool>(f), "cannot read text file ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
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

struct Row {
  std::string config;
  double ppl_fp, ppl_rtn, ppl_awq, t_rtn, t_awq_search, t_eval;
};

}  // namespace

int main(int argc, char** argv) try {
  const Args a = parse(argc, argv);
  if (a.cmd == "inspect") return inspect(a.inspect_file);
  const auto t_load = Clock::now();
  const auto g = awq::io::GgufFile::open(a.model);
  const awq_example::LlamaModel fp = awq_example::load_llama(g, a.layers);
  awq_example::BpeTokenizer tok(g);
  for (const auto& q : a.configs) {  // refuse what this model cannot take before any work
    for (int k : {fp.cfg.hidden, fp.cfg.intermediate, fp.cfg.n_heads * fp.cfg.head_dim}) (void)q.group_for(k);
  }
  std::vector<int> calib = tok.encode(read_text(a.calib_text)), eval = tok.encode(read_text(a.eval_text));
  const double load_s = since(t_load);
  awq::detail::require(static_cast<int>(calib.size()) >= a.seq_len, "calibration text has only ", calib.size(), " tokens");
  const int n_cal = std::min<int>(a.calib_seqs, static_cast<int>(calib.size()) / a.seq_len);
  calib.resize(static_cast<std::size_t>(n_cal) * a.seq_len);
  if (static_cast<int>(eval.size()) > a.eval_tokens) eval.resize(static_cast<std::size_t>(a.eval_tokens));
  std::fprintf(stderr, "model: %zu layers, hidden %d, mlp %d, heads %d/%d, vocab %d; calib %d x %d tokens, eval %zu tokens; load %.1fs\n",
               fp.layers.size(), fp.cfg.hidden, fp.cfg.intermediate, fp.cfg.n_heads, fp.cfg.n_kv_heads, fp.vocab, n_cal, a.seq_len,
               eval.size(), load_s);

  auto t0 = Clock::now();
  const auto r_fp = awq_example::perplexity(fp, eval, a.seq_len);
  const double t_eval = since(t0);
  std::fprintf(stderr, "FP perplexity %.4f (%.1fs)\n", r_fp.ppl, t_eval);

  std::vector<Row> rows;
  for (const auto& q : a.configs) {
    Row row{q.name() + (a.duo ? "-duo" : ""), r_fp.ppl, 0, 0, 0, 0, t_eval};
    t0 = Clock::now();
    awq_example::LlamaModel rtn = fp;
    for (auto& l : rtn.layers) awq_example::finalize_layer(l, q);
    row.t_rtn = since(t0);
    row.ppl_rtn = awq_example::perplexity(rtn, eval, a.seq_len).ppl;
    std::fprintf(stderr, "%s RTN perplexity %.4f\n", row.config.c_str(), row.ppl_rtn);

    t0 = Clock::now();
    awq_example::LlamaModel m = fp;
    const awq_example::Batch b{n_cal, a.seq_len};
    awq_example::Mat h = awq_example::embed_tokens(m, calib);
    awq::TerminalProgress bar;
    awq::detail::ProgressTracker tracker(bar, "AWQ " + row.config, static_cast<long>(m.layers.size()));
    std::vector<std::vector<awq_example::QuantizedLinear>> packed;
    awq_example::BlockAwqOptions opt;
    opt.quant = q;
    opt.duo_scaling = a.duo;
    opt.search_seqs = a.search_seqs;
    std::unique_ptr<awq_example::BlockCheckpoint> ck;
    if (!a.checkpoint_dir.empty()) {  // everything the per-block results depend on
      const std::string dir = a.checkpoint_dir + "/" + row.config;
      std::filesystem::create_directories(dir);
      const std::string run = a.model + " " + row.config + " layers=" + std::to_string(m.layers.size()) + " calib=" +
                              a.calib_text + ":" + std::to_string(n_cal) + "x" + std::to_string(a.seq_len) +
                              " search_seqs=" + std::to_string(a.search_seqs);
      ck = std::make_unique<awq_example::BlockCheckpoint>(dir, run);
    }
    auto block_fn = [&](const auto& cfg, const auto& batch, auto& l, const auto& hidden, const auto& o) {
#ifdef AWQ_LLAMA_CUDA
      if (a.backend == "cuda") return awq_example::awq_block_cuda(cfg, batch, l, hidden, o);
#endif
      return awq_example::awq_block(cfg, batch, l, hidden, o);
    };
    const int resumed = awq_example::awq_layers(m.cfg, b, m.layers, std::move(h), opt, ck.get(), block_fn,
                                                [&](std::size_t li, awq_example::LlamaLayer& l) {
                                                  packed.push_back(awq_example::finalize_layer(l, q));
                                                  tracker.step(static_cast<long>(li + 1));
                                                });
    if (resumed > 0) std::fprintf(stderr, "%s: %d of %zu blocks resumed from %s\n", row.config.c_str(), resumed, m.layers.size(),
                                  a.checkpoint_dir.c_str());
    row.t_awq_search = since(t0);
    row.ppl_awq = awq_example::perplexity(m, eval, a.seq_len).ppl;
    std::fprintf(stderr, "%s AWQ perplexity %.4f (search %.1fs)\n", row.config.c_str(), row.ppl_awq, row.t_awq_search);
    if (!a.export_dir.empty()) {
      const std::string dir = a.export_dir + "/" + row.config;
      awq_example::export_hf(dir, m, packed, g, q);
      std::fprintf(stderr, "exported %s\n", dir.c_str());
    }
    rows.push_back(row);
  }

  std::printf("\n%-16s %10s %10s %10s %14s %10s %12s\n", "config", "ppl_fp", "ppl_rtn", "ppl_awq", "gap_recovered", "rtn_s", "awq_search_s");
  nlohmann::json rep;
  rep["model"] = a.model;
  rep["backend"] = a.backend;
  rep["layers"] = fp.layers.size();
  rep["calib"] = {{"file", a.calib_text}, {"sequences", n_cal}, {"search_sequences", a.search_seqs}, {"seq_len", a.seq_len}};
  rep["eval"] = {{"file", a.eval_text}, {"tokens", eval.size()}};
  rep["fp"] = {{"ppl", r_fp.ppl}, {"eval_s", t_eval}};
  for (const auto& r : rows) {
    const double rec = (r.ppl_rtn - r.ppl_awq) / (r.ppl_rtn - r.ppl_fp);
    std::printf("%-16s %10.4f %10.4f %10.4f %13.1f%% %10.1f %12.1f\n", r.config.c_str(), r.ppl_fp, r.ppl_rtn, r.ppl_awq, 100 * rec, r.t_rtn,
                r.t_awq_search);
    rep["configs"].push_back({{"config", r.config}, {"ppl_fp", r.ppl_fp}, {"ppl_rtn", r.ppl_rtn}, {"ppl_awq", r.ppl_awq},
                              {"gap_recovered", rec}, {"rtn_s", r.t_rtn}, {"awq_search_s", r.t_awq_search}});
  }
  rep["load_s"] = load_s;
  rep["peak_rss_mb"] = peak_rss_mb();
  std::printf("load %.1fs, FP eval %.1fs, peak RSS %.0f MB\n", load_s, t_eval, peak_rss_mb());
  if (!a.report.empty()) {
    const std::string tmp = a.report + ".tmp";
    {
      std::ofstream f(tmp);
      f << rep.dump(2) << "\n";
      awq::detail::require(static_cast<bool>(f), "cannot write ", tmp);
    }
    awq::detail::require(std::rename(tmp.c_str(), a.report.c_str()) == 0, "cannot rename ", tmp, " to ", a.report);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "awq_llama: %s\n", e.what());
  return 2;
}
