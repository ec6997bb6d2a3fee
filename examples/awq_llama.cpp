// awq-llama: quantize a Llama-architecture GGUF model with RTN and AWQ and report perplexity.
//
//   awq_llama [quantize] --model FILE.gguf --calib-text FILE --eval-text FILE [options]
//   awq_llama inspect FILE.gguf|FILE.safetensors|HF_DIR
//   awq_llama --help (every option, its default and an example: cli/options.hpp)
//
// Final weights use fp16 scales, exactly as exported: the perplexities are those of the checkpoints.
#include <awq/awq.hpp>
#include <awq/io/gguf.hpp>

#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "cli/inspect.hpp"
#include "cli/options.hpp"
#include "cli/text.hpp"
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

using awq_cli::Args;

struct Row {
  std::string config;
  double ppl_fp, ppl_rtn, ppl_awq, t_rtn, t_awq_search, t_eval;
};

}  // namespace

int main(int argc, char** argv) try {
  const Args a = awq_cli::parse(argc, argv);
  if (a.cmd == "help") return std::fputs(awq_cli::help_text().c_str(), stdout) < 0 ? 2 : 0;
  if (a.cmd == "inspect") return awq_cli::inspect(a.inspect_file);
  awq_cli::check_environment(a);
  const auto t_load = Clock::now();
  const auto g = awq::io::GgufFile::open(a.model);
  awq_cli::check_model(a, g);
  const awq_example::LlamaModel fp = awq_example::load_llama(g, a.layers);
  awq_example::BpeTokenizer tok(g);
  for (const auto& q : a.configs) {  // refuse what this model cannot take before any work
    for (int k : {fp.cfg.hidden, fp.cfg.intermediate, fp.cfg.n_heads * fp.cfg.head_dim}) (void)q.group_for(k);
  }
  std::vector<int> calib = tok.encode(awq_cli::read_text(a.calib_text, "--calib-text")),
                   eval = tok.encode(awq_cli::read_text(a.eval_text, "--eval-text"));
  const double load_s = since(t_load);
  const int n_cal = awq_cli::calibration_sequences(a, calib.size(), eval.size());
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
  std::fprintf(stderr, "awq_llama: %s\n", awq_cli::describe(e).c_str());
  return 2;
}
