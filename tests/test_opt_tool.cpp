// The awq_llama job (examples/llama/job.hpp) on an OPT Hugging Face directory — the tiny golden
// checkpoint (tests/golden/arch_opt/hf) with a GPT-2 style vocab.json + merges.txt
// (tests/cli/tiny_opt_tokenizer) — through quantize, evaluation and export, then the export read
// back: AutoAWQ's OPT tensor names and layout, the linears exactly those the driver produced, and
// its dequantized forward giving the perplexity the job reported.
#include <doctest/doctest.h>

#include <awq/model/arch/opt.hpp>
#include <awq/model/head.hpp>
#include <awq/model/hf_source.hpp>
#include <awq/model/pipeline.hpp>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llama/awq_dir.hpp"
#include "llama/job.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using Cpu = awq::backend::cpu;
using awq::model::Opt;

namespace {

struct Work {
  fs::path dir = fs::temp_directory_path() / ("awq_opt_tool_" + std::to_string(::getpid()));
  Work() {
    fs::remove_all(dir);
    fs::create_directories(dir / "opt");
    for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(awq_test::golden_dir("arch_opt") + "/hf/" + f, dir / "opt" / f);
    for (const char* f : {"vocab.json", "merges.txt", "tokenizer_config.json"})
      fs::copy_file(awq_test::golden_dir("../cli/tiny_opt_tokenizer") + "/" + f, dir / "opt" / f);
    std::ofstream t(dir / "text.txt");
    for (int i = 0; i < 40; ++i) t << "The quick brown fox jumps over the lazy dog, again and again (" << i << ").\n";
  }
  ~Work() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string path(const char* p) const { return (dir / p).string(); }
};

// The last block's output of `tokens` (sequences of seq_len) through every block of `src`.
template <class Source>
std::vector<float> forward_all(const Source& src, const std::vector<int>& tokens, int seq_len) {
  const auto& c = src.config();
  const awq::model::Batch b{static_cast<int>(tokens.size()) / seq_len, seq_len};
  std::vector<float> h = awq::model::embed<Opt>(src, tokens, seq_len), next(h.size());
  for (int l = 0; l < c.layers; ++l) {
    const auto blk = awq::model::load_block<Cpu, Opt>(src, c, l);
    Opt::forward<Cpu>(c, b, blk, awq::make_row_major<const float>(h.data(), b.tokens(), c.hidden),
                      awq::make_row_major(next.data(), b.tokens(), c.hidden), nullptr);
    std::swap(h, next);
  }
  return h;
}

}  // namespace

TEST_CASE("awq_llama job on an OPT directory: quantize, evaluate, export, the export reads back as AutoAWQ's OPT checkpoint") {
  const Work w;
  awq_example::JobArgs a;
  a.model = w.path("opt");
  a.calib_text = a.eval_text = w.path("text.txt");
  a.report = w.path("report.json");
  a.export_dir = w.path("exp");
  a.configs = {awq::QuantSpec{4, 32, true}};
  a.calib_seqs = 4;
  a.search_seqs = 2;
  a.seq_len = 32;
  a.eval_tokens = 256;
  REQUIRE(awq_example::run_job<Cpu>(a) == 0);
  const nlohmann::json rep = nlohmann::json::parse(std::ifstream(a.report));
  const auto& row = rep.at("configs").at(0);
  const double ppl_fp = row.at("ppl_fp"), ppl_rtn = row.at("ppl_rtn"), ppl_awq = row.at("ppl_awq");
  MESSAGE("tiny OPT, W4 g32, 256 tokens: perplexity FP " << ppl_fp << ", RTN " << ppl_rtn << ", AWQ " << ppl_awq);
  CHECK(std::isfinite(ppl_awq));

  // The job's tokens: </s> first (OPT's BOS), then GPT-2 byte-level BPE; its FP perplexity is the
  // plain forward's with positions restarting in each sequence of --seq-len.
  const auto src = awq::model::HfSource::open(a.model);
  auto tok = awq_example::BpeTokenizer::from_hf_dir(a.model);
  std::vector<int> eval = tok.encode(awq_cli::read_text(a.eval_text, "text"));
  REQUIRE(eval.size() >= 256);
  CHECK(eval[0] == 2);
  CHECK(std::vector<int>(eval.begin(), eval.begin() + 5) == std::vector<int>{2, 114, 119, 124, 127});  // </s> The Ġquick Ġbrown Ġfox
  eval.resize(256);
  const auto head = awq::model::Head<Opt>::load(src);
  const double fp = head.perplexity(forward_all(src, eval, a.seq_len), eval, a.seq_len).ppl;
  CHECK(std::fabs(fp - ppl_fp) <= 1e-6 * ppl_fp);

  // The export: AutoAWQ's OPT names, GEMM layout, fp16 for the rest, no lm_head (tied).
  const std::string x = a.export_dir + "/w4-g32-asym";
  const awq_example::AwqDequantizedSource xs(x);
  const auto xsrc = awq::model::HfSource::open(x);
  const auto& ck = xsrc.checkpoint();
  std::set<std::string> want = {"model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight",
                                "model.decoder.final_layer_norm.weight", "model.decoder.final_layer_norm.bias"};
  const auto& c = src.config();
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = Opt::block_prefix(l);
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"})
      for (const char* s : {".qweight", ".qzeros", ".scales", ".bias"}) want.insert(p + n + s);
    for (const char* n : {"self_attn_layer_norm", "final_layer_norm"})
      for (const char* s : {".weight", ".bias"}) want.insert(p + n + s);
  }
  const auto names = ck.names();
  CHECK(std::set<std::string>(names.begin(), names.end()) == want);
  CHECK(ck.tensor("model.decoder.layers.1.fc1.qweight").shape == std::vector<std::int64_t>{64, 96 / 8});
  CHECK(ck.tensor("model.decoder.layers.1.fc2.scales").shape == std::vector<std::int64_t>{96 / 32, 64});
  CHECK(ck.tensor("model.decoder.layers.1.fc2.scales").dtype == "F16");
  CHECK(ck.tensor("model.decoder.embed_positions.weight").shape == std::vector<std::int64_t>{130, 64});
  CHECK(ck.tensor("model.decoder.embed_positions.weight").dtype == "F16");
  const auto& cfg = ck.config();
  CHECK(cfg.at("model_type") == "opt");
  CHECK(cfg.at("num_hidden_layers") == 2);
  CHECK(cfg.at("quantization_config").at("version") == "gemm");
  CHECK(cfg.at("quantization_config").at("group_size") == 32);
  for (const char* f : {"vocab.json", "merges.txt", "tokenizer_config.json"}) CHECK(fs::exists(fs::path(x) / f));
  CHECK(awq_example::BpeTokenizer::from_hf_dir(x).encode("The quick brown fox") == std::vector<int>{2, 114, 119, 124, 127});

  // The exported linears are exactly the driver's (a deterministic rerun of its calibration), and
  // the folded norms and biases its fp16 roundings.
  std::vector<int> calib = tok.encode(awq_cli::read_text(a.calib_text, "text"));
  calib.resize(static_cast<std::size_t>(a.calib_seqs * a.seq_len));
  awq::model::PipelineOptions opt;
  opt.block.quant = a.configs[0];
  opt.block.search_seqs = a.search_seqs;
  opt.block.mode = awq::model::SearchMode::parse(a.mode);
  int blocks = 0;
  std::vector<awq::model::Stream> none;
  awq::model::quantize_model<Cpu, Opt>(src, awq::model::Batch{a.calib_seqs, a.seq_len}, awq::model::embed<Opt>(src, calib, a.seq_len), none, opt,
                                       [&](const awq::model::QuantizedBlock& b) {
                                         ++blocks;
                                         for (const auto& kv : b.linears) {  // not a structured binding: CAPTURE's lambda reads it
                                           const std::string& name = kv.first;
                                           const auto& q = kv.second;
                                           CAPTURE(name);
                                           std::vector<float> deq(q.codes.size());
                                           for (awq::index_t r = 0; r < q.out; ++r)
                                             for (awq::index_t i = 0; i < q.in; ++i) {
                                               const std::size_t g = static_cast<std::size_t>(r * q.groups + i / (q.in / q.groups));
                                               deq[static_cast<std::size_t>(r * q.in + i)] =
                                                   (float(q.codes[static_cast<std::size_t>(r * q.in + i)]) - float(q.zeros[g])) * float(q.scales[g]);
                                             }
                                           CHECK(xs.load(b.prefix + name + ".weight", {q.out, q.in}) == deq);
                                         }
                                         for (const auto& kv : b.tensors) {
                                           const std::string& name = kv.first;
                                           const auto& v = kv.second;
                                           CAPTURE(name);
                                           std::vector<float> h16(v.size());
                                           for (std::size_t i = 0; i < v.size(); ++i) h16[i] = float(Eigen::half(v[i]));
                                           CHECK(xs.load(b.prefix + name, b.shapes.at(name)) == h16);
                                         }
                                       });
  CHECK(blocks == c.layers);

  // The dequantized export's forward gives the AWQ perplexity the job reported, up to the fp16
  // rounding of the embeddings, norms and biases (relative 2^-11 each; measured 1.1e-4 here).
  const auto xhead = awq::model::Head<Opt>::load(xs);
  const double re = xhead.perplexity(forward_all(xs, eval, a.seq_len), eval, a.seq_len).ppl;
  MESSAGE("export read back and dequantized: perplexity " << re << " (job's AWQ " << ppl_awq << ")");
  CHECK(std::fabs(re - ppl_awq) <= 1e-3 * ppl_awq);
}
