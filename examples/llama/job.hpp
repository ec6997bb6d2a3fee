// The awq_llama job over the library's model driver, generic over the backend and the
// architecture: open the model (GGUF file or Hugging Face directory; config.json's model_type picks
// awq::model::Llama or awq::model::Opt), tokenize, embed, run awq::model::quantize_model once per
// config with the evaluation tokens carried along (full precision in the first run, RTN and AWQ
// in every run), then perplexity from the last block's outputs — O(one block) of weights in memory.
#pragma once

#include <awq/io/json_error.hpp>
#include <awq/model/arch/llama.hpp>
#include <awq/model/arch/opt.hpp>
#include <awq/model/head.hpp>
#include <awq/model/hf_source.hpp>
#include <awq/model/pipeline.hpp>
#include <awq/model/source.hpp>

#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli/options.hpp"
#include "cli/text.hpp"
#include "llama/export.hpp"
#include "llama/tokenizer.hpp"

namespace awq_example {

/// What the job needs from the command line.
struct JobArgs {
  std::string model, calib_text, eval_text, report, export_dir, checkpoint_dir, backend = "cpu", mode = "improved";
  std::optional<double> gptq_damp;  ///< unset: SearchMode::default_gptq_damp(bits)
  std::vector<awq::QuantSpec> configs;
  bool duo = false, kernel_eval = false;
  std::string math = "fp32";  // backend::cuda::Math by name
  int calib_seqs = 64, search_seqs = 8, seq_len = 512, eval_tokens = 32768, layers = -1;
  std::uint64_t shard_bytes = kDefaultShardBytes;  ///< export shard size limit
};

inline double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

/// The model-level pieces of an export that depend on the source: base config.json and tokenizer
/// files (JSON ones rewritten, the others copied byte for byte).
struct ExportBase {
  nlohmann::ordered_json config;
  std::map<std::string, nlohmann::ordered_json> files;
  std::map<std::string, std::string> raw_files;
};

/// One config's figures.
struct JobRow {
  std::string config;
  std::map<std::string, double> phases;  ///< the pipeline's seconds per phase
  std::vector<std::map<std::string, double>> alphas;  ///< per block, the α the scale search chose per group
  double ppl_rtn = 0, ppl_awq = 0, mse_rtn = 0, mse_awq = 0, pass_s = 0;
  int resumed = 0;
  std::optional<double> gptq_damp;  ///< the damping the gptq roundings used (unset: nearest rounding)
};

/// Relative squared error ‖a − ref‖² / ‖ref‖².
inline double rel_mse(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(a[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den > 0 ? num / den : 0.0;
}

/// FNV-1a (64 bits) of `n` bytes, continuing from `h`.
inline std::uint64_t fnv1a(const void* data, std::size_t n, std::uint64_t h = 14695981039346656037ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

/// What the model at `path` is, cheaply: each file's name, size and modification time (the file,
/// or every file of the directory), hashed. A model rewritten in place gets another fingerprint.
inline std::string model_fingerprint(const std::string& path) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec))
      if (e.is_regular_file(ec)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  std::uint64_t h = fnv1a(nullptr, 0);
  for (const auto& f : files) {
    const std::string name = f.filename().string();
    const auto size = static_cast<std::uint64_t>(fs::file_size(f, ec));
    const auto time = static_cast<std::int64_t>(fs::last_write_time(f, ec).time_since_epoch().count());
    h = fnv1a(name.data(), name.size(), h);
    h = fnv1a(&size, sizeof size, h);
    h = fnv1a(&time, sizeof time, h);
  }
  char b[24];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(h));
  return b;
}

template <class Backend, class Arch, class Source>
int run_job_on(const JobArgs& a, const Source& src, BpeTokenizer& tok, const ExportBase& xb) {
  using Clock = std::chrono::steady_clock;
  const auto since = [](Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  const auto t_load = Clock::now();
  const awq::model::ModelConfig& c = src.config();
  Arch::check(c);
  awq_cli::check_groups(a.configs, c);  // refuse what this model cannot take before any work
  const bool evaluate = a.eval_tokens > 0;
  std::vector<int> calib = tok.encode(awq_cli::read_text(a.calib_text, "--calib-text")),
                   eval = evaluate ? tok.encode(awq_cli::read_text(a.eval_text, "--eval-text")) : std::vector<int>();
  const int n_cal = awq_cli::calibration_sequences(a, calib.size(), eval.size());
  calib.resize(static_cast<std::size_t>(n_cal) * a.seq_len);
  if (static_cast<int>(eval.size()) > a.eval_tokens) eval.resize(static_cast<std::size_t>(a.eval_tokens));
  const int n_eval = static_cast<int>(eval.size()) / a.seq_len;
  awq::detail::require(!evaluate || n_eval > 0, "evaluation text has ", eval.size(), " tokens, fewer than --seq-len ", a.seq_len);
  eval.resize(static_cast<std::size_t>(n_eval) * a.seq_len);
  const int n_layers = a.layers >= 0 ? std::min(a.layers, c.layers) : c.layers;
  const bool partial = n_layers < c.layers;  // a truncated model: its perplexity means nothing
  const awq::model::Batch cb{n_cal, a.seq_len}, eb{n_eval, a.seq_len};
  const std::vector<float> calib_h = awq::model::embed<Arch>(src, calib, a.seq_len),
                           eval_h = awq::model::embed<Arch>(src, eval, a.seq_len);
  const double load_s = since(t_load);
  std::fprintf(stderr, "model: %s, %d of %d layers, hidden %d, mlp %d, heads %d/%d, vocab %d; calib %d x %d tokens, eval %zu tokens, %s search; load %.1fs\n",
               c.architecture.c_str(), n_layers, c.layers, c.hidden, c.intermediate, c.n_heads, c.n_kv_heads, c.vocab, n_cal,
               a.seq_len, eval.size(), a.mode.c_str(), load_s);
  std::unique_ptr<awq::model::Head<Arch>> head;
  if (!partial && evaluate) head = std::make_unique<awq::model::Head<Arch>>(awq::model::Head<Arch>::load(src));

  std::vector<float> fp_out;
  double ppl_fp = 0, t_eval = 0;
  std::vector<JobRow> rows;
  awq::TerminalProgress bar;
  for (std::size_t ci = 0; ci < a.configs.size(); ++ci) {
    const awq::QuantSpec& q = a.configs[ci];
    JobRow row;
    row.config = q.name() + (a.duo ? "-duo" : "");
    std::vector<awq::model::Stream> streams;
    if (evaluate) {
      if (ci == 0) streams.push_back({awq::model::StreamKind::fp, eb, eval_h});
      streams.push_back({awq::model::StreamKind::rtn, eb, eval_h});
      streams.push_back({awq::model::StreamKind::awq, eb, eval_h});
    }
    awq::model::PipelineOptions opt;
    opt.block.quant = q;
    opt.block.duo_scaling = a.duo;
    opt.block.search_seqs = a.search_seqs;
    opt.block.mode = awq::model::SearchMode::parse(a.mode);
    opt.block.mode.gptq_damp = a.gptq_damp;
    if (opt.block.mode.rounding != awq::model::SearchMode::Rounding::nearest) row.gptq_damp = opt.block.mode.damp_for(q.bits);
    opt.layers = n_layers;
    opt.progress = bar;
    opt.kernel_eval = a.kernel_eval;
    std::unique_ptr<awq::model::BlockCheckpoint> ck;
    if (!a.checkpoint_dir.empty()) {  // everything the per-block results depend on
      const std::string dir = a.checkpoint_dir + "/" + row.config;
      std::filesystem::create_directories(dir);
      const auto real_text = [](double v) {
        char b[32];
        std::snprintf(b, sizeof b, "%.17g", v);
        return std::string(b);
      };
      // The model's files and the calibration tokens themselves, not only their paths: a text or
      // model rewritten in place must not resume another run's blocks.
      char tokens[24];
      std::snprintf(tokens, sizeof tokens, "%016llx", static_cast<unsigned long long>(fnv1a(calib.data(), calib.size() * sizeof(int))));
      const std::string run = a.model + "@" + model_fingerprint(a.model) + " " + row.config + " layers=" + std::to_string(n_layers) +
                              " calib=" + a.calib_text + "@" + tokens + ":" +
                              std::to_string(n_cal) + "x" + std::to_string(a.seq_len) + " search_seqs=" + std::to_string(a.search_seqs) +
                              (opt.block.mode.is_reference() ? std::string() : " mode=" + opt.block.mode.variants()) +
                              (row.gptq_damp ? " gptq_damp=" + real_text(*row.gptq_damp) : std::string());
      ck = std::make_unique<awq::model::BlockCheckpoint>(dir, run);
      opt.checkpoint = ck.get();
    }
    std::unique_ptr<HfExport> ex;  // streamed: each block goes to disk as it finishes
    const std::string export_dir = a.export_dir.empty() ? std::string() : a.export_dir + "/" + row.config;
    if (!export_dir.empty()) ex = std::make_unique<HfExport>(export_dir, q, a.shard_bytes);
    if (ex && partial)
      std::fprintf(stderr, "warning: --layers %d: %s gets a truncated model, %d of %d blocks (its config says num_hidden_layers %d)\n",
                   n_layers, export_dir.c_str(), n_layers, c.layers, n_layers);
    // The model-level tensors (embedding, final norm, lm_head) are read and written first, on a
    // thread of their own while the first block computes; the sink waits for them before the
    // first block, so the file's order stays fixed. The sources are safe to read from two threads.
    std::future<void> outer;
    if (ex)
      outer = std::async(std::launch::async, [&] {
        for (const awq::model::TensorSpec& t : awq::model::model_tensors<Arch>(c)) ex->add_tensor(t.name, t.shape, src.load(t.name, t.shape));
      });
    auto t0 = Clock::now();
    const auto res = [&] {
      try {
        return awq::model::quantize_model<Backend, Arch>(src, cb, calib_h, streams, opt, [&](const awq::model::QuantizedBlock& b) {
          auto& chosen = row.alphas.emplace_back();
          for (const auto& [group, r] : b.result.scales) chosen[group] = r.best_alpha;
          if (!ex) return;
          if (outer.valid()) outer.get();
          ex->add_block(b);
        });
      } catch (const awq::NotPositiveDefinite& e) {  // the damping is the option's (or its default)
        throw awq::Error(awq::detail::concat("--gptq-damp ", row.gptq_damp ? *row.gptq_damp : 0.0, ": ", e.what()));
      }
    }();
    row.pass_s = since(t0);
    row.resumed = res.resumed;
    row.phases = res.seconds;
    std::string ph;
    for (const auto& [k, v] : res.seconds) ph += awq::detail::concat(" ", k, " ", std::round(v * 10) / 10, "s");
    std::fprintf(stderr, "%s: pass %.1fs:%s\n", row.config.c_str(), row.pass_s, ph.c_str());
    if (res.resumed > 0)
      std::fprintf(stderr, "%s: %d of %d blocks resumed from %s\n", row.config.c_str(), res.resumed, res.blocks, a.checkpoint_dir.c_str());
    if (!evaluate) std::fprintf(stderr, "%s: quantized (no evaluation)\n", row.config.c_str());
    if (evaluate) {
      const std::vector<float>& rtn_out = streams[ci == 0 ? 1 : 0].hidden;
      const std::vector<float>& awq_out = streams[ci == 0 ? 2 : 1].hidden;
      if (ci == 0) fp_out = streams[0].hidden;
      row.mse_rtn = rel_mse(rtn_out, fp_out);
      row.mse_awq = rel_mse(awq_out, fp_out);
      if (head) {
        const auto ppl = [&](const std::vector<float>& out, const std::string& phase) {
          return awq::model::HeadEval<Backend>::perplexity(*head, out, eval, a.seq_len, bar, phase).ppl;
        };
        t0 = Clock::now();
        if (ci == 0) ppl_fp = ppl(fp_out, "perplexity FP");
        row.ppl_rtn = ppl(rtn_out, "perplexity RTN " + row.config);
        row.ppl_awq = ppl(awq_out, "perplexity AWQ " + row.config);
        t_eval += since(t0);
        std::fprintf(stderr, "%s: perplexity FP %.4f, RTN %.4f, AWQ %.4f\n", row.config.c_str(), ppl_fp, row.ppl_rtn, row.ppl_awq);
      } else {
        std::fprintf(stderr, "%s: block %d output, relative MSE vs FP: RTN %.3e, AWQ %.3e\n", row.config.c_str(), n_layers - 1,
                     row.mse_rtn, row.mse_awq);
      }
    }
    if (ex) {  // the tensors are written; the last shard, the index and the other files remain
      t0 = Clock::now();
      if (outer.valid()) outer.get();
      ex->finish(xb.config, xb.files, xb.raw_files);
      std::fprintf(stderr, "exported %s: %.1f MB of tensors in %zu shard%s (finished in %.1fs)\n", export_dir.c_str(),
                   static_cast<double>(ex->bytes()) / 1e6, ex->shards(), ex->shards() == 1 ? "" : "s", since(t0));
    }
    rows.push_back(row);
  }

  nlohmann::json rep;
  rep["model"] = a.model;
  rep["backend"] = a.backend;
  rep["math"] = a.math;
  rep["kernel_eval"] = a.kernel_eval;
  rep["layers"] = n_layers;
  rep["calib"] = {{"file", a.calib_text}, {"sequences", n_cal}, {"search_sequences", a.search_seqs}, {"seq_len", a.seq_len}};
  rep["mode"] = a.mode;
  rep["gptq_damp"] = a.gptq_damp ? nlohmann::json(*a.gptq_damp) : nlohmann::json();  // null: by width, per config below
  rep["eval"] = {{"file", a.eval_text}, {"tokens", eval.size()}};
  const auto row_json = [](const JobRow& r) {
    return nlohmann::json{{"config", r.config}, {"pass_s", r.pass_s}, {"phase_s", r.phases}, {"resumed_blocks", r.resumed},
                          {"gptq_damp", r.gptq_damp ? nlohmann::json(*r.gptq_damp) : nlohmann::json()}, {"alphas", r.alphas}};
  };
  if (!evaluate) {
    std::printf("\n%-16s %10s\n", "config", "pass_s");
    for (const auto& r : rows) {
      std::printf("%-16s %10.1f\n", r.config.c_str(), r.pass_s);
      rep["configs"].push_back(row_json(r));
    }
  } else if (partial) {
    std::printf("\n%d of %d layers: perplexity of a truncated model is meaningless; block %d output error vs FP instead\n", n_layers,
                c.layers, n_layers - 1);
    std::printf("%-16s %14s %14s %10s\n", "config", "rel_mse_rtn", "rel_mse_awq", "pass_s");
    for (const auto& r : rows) {
      std::printf("%-16s %14.4e %14.4e %10.1f\n", r.config.c_str(), r.mse_rtn, r.mse_awq, r.pass_s);
      auto j = row_json(r);
      j["block_output_rel_mse_rtn"] = r.mse_rtn;
      j["block_output_rel_mse_awq"] = r.mse_awq;
      rep["configs"].push_back(j);
    }
  } else {
    rep["fp"] = {{"ppl", ppl_fp}};
    std::printf("\n%-16s %10s %10s %10s %14s %10s\n", "config", "ppl_fp", "ppl_rtn", "ppl_awq", "gap_recovered", "pass_s");
    for (const auto& r : rows) {
      const bool gap = r.ppl_rtn > ppl_fp;  // a recovered share only means something when RTN is worse
      const double rec = gap ? (r.ppl_rtn - r.ppl_awq) / (r.ppl_rtn - ppl_fp) : 0.0;
      char recs[32] = "-";
      if (gap) std::snprintf(recs, sizeof recs, "%.1f%%", 100 * rec);
      std::printf("%-16s %10.4f %10.4f %10.4f %14s %10.1f\n", r.config.c_str(), ppl_fp, r.ppl_rtn, r.ppl_awq, recs, r.pass_s);
      auto j = row_json(r);
      j["ppl_fp"] = ppl_fp;
      j["ppl_rtn"] = r.ppl_rtn;
      j["ppl_awq"] = r.ppl_awq;
      j["gap_recovered"] = gap ? nlohmann::json(rec) : nlohmann::json(nullptr);
      j["block_output_rel_mse_rtn"] = r.mse_rtn;
      j["block_output_rel_mse_awq"] = r.mse_awq;
      rep["configs"].push_back(j);
    }
  }
  rep["load_s"] = load_s;
  rep["eval_s"] = t_eval;
  rep["peak_rss_mb"] = peak_rss_mb();
  std::printf("load %.1fs, evaluation heads %.1fs, peak RSS %.0f MB\n", load_s, t_eval, peak_rss_mb());
  if (!a.report.empty())
    awq::io::write_atomically(a.report, [&](awq::io::FileSink& out) { out.write(rep.dump(2) + "\n"); });
  return 0;
}

/// Hugging Face model types the job takes, for messages.
inline const char* supported_model_types() { return "llama, mistral, qwen2, opt"; }

/// Calls f(Arch{}) with the architecture policy of Hugging Face directory `dir`'s model_type;
/// an awq::Error naming it and the supported ones otherwise. A config.json that cannot be read
/// or has no model_type goes to the Llama policy, whose reader reports what is wrong.
template <class F>
int with_hf_arch(const std::string& dir, F&& f) {
  std::ifstream in(std::filesystem::path(dir) / "config.json");
  const nlohmann::json cj = nlohmann::json::parse(in, nullptr, false);
  const std::string type = cj.is_object() && cj.contains("model_type") && cj["model_type"].is_string() ? cj["model_type"].get<std::string>() : "";
  if (type == "opt") return f(awq::model::Opt{});
  awq::detail::require(type.empty() || type == "llama" || type == "mistral" || type == "qwen2", "--model ", dir, ": model_type '", type,
                       "' is not supported (supported: ", supported_model_types(), ")");
  return f(awq::model::Llama{});
}

/// Opens `a.model` (a GGUF file or a Hugging Face directory) and runs the job on Backend.
template <class Backend>
int run_job(const JobArgs& a) {
  namespace fs = std::filesystem;
  if (fs::is_directory(a.model)) {
    return with_hf_arch(a.model, [&](auto arch) {
      using Arch = decltype(arch);
      const auto src = awq::model::HfSource::open(a.model);
      awq::detail::require(!src.quantized(), "--model ", a.model, " is already AWQ-quantized (its config has a quantization_config); "
                           "give the full-precision model");
      Arch::check(src.config());
      awq_cli::check_model(a, src.config().layers, src.config().max_positions);
      BpeTokenizer tok = BpeTokenizer::from_hf_dir(a.model);
      ExportBase xb;
      xb.config = nlohmann::ordered_json::parse(src.config_json().dump());
      for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
        std::ifstream in(fs::path(a.model) / f);
        if (!in) continue;
        try {
          xb.files[f] = nlohmann::ordered_json::parse(in);
        } catch (const nlohmann::json::exception& e) {
          throw awq::Error("--model " + a.model + ": " + f + " is not valid JSON: " + awq::io::json_error_text(e));
        }
      }
      for (const char* f : {"vocab.json", "merges.txt", "special_tokens_map.json"}) {
        std::ifstream in(fs::path(a.model) / f, std::ios::binary);
        if (in) xb.raw_files[f] = std::string(std::istreambuf_iterator<char>(in), {});
      }
      return run_job_on<Backend, Arch>(a, src, tok, xb);
    });
  }
  const auto src = awq::model::GgufSource::open(a.model);
  awq_cli::check_model(a, src.gguf());
  BpeTokenizer tok(src.gguf());
  ExportBase xb;
  xb.config = hf_config_json(src.config(), src.gguf());
  xb.files["tokenizer.json"] = tokenizer_json(src.gguf());
  xb.files["tokenizer_config.json"] = tokenizer_config_json(src.gguf(), xb.config);
  return run_job_on<Backend, awq::model::Llama>(a, src, tok, xb);
}

}  // namespace awq_example
