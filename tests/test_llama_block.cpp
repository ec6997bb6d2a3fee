// The library's Llama architecture and per-block flow (awq/model) against llm-awq's run_awq on
// the same layer (golden data): the block output, every group's chosen index, scales and clip
// bounds.
#include <doctest/doctest.h>

#include <awq/model/arch/llama.hpp>
#include <awq/model/head.hpp>
#include <awq/model/pipeline.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <string>

#include "fresh_rng.hpp"
#include "support.hpp"

using namespace awq_test;
using Cpu = awq::backend::cpu;
using awq::model::Llama;

namespace {

// The library's group name for one of run_awq's scale groups.
std::string group_key(const nlohmann::json& g) {
  const auto layers = g.at("layers").dump();
  if (layers.find("q_proj") != std::string::npos) return "qkv";
  if (layers.find("o_proj") != std::string::npos) return "o";
  if (layers.find("gate_proj") != std::string::npos) return "gate_up";
  return "down";
}

struct GoldenBlock {
  awq::model::ModelConfig cfg;
  awq::model::Batch batch;
  awq::model::Block<Cpu> blk;
  std::vector<float> hidden;
};

GoldenBlock golden_block(const std::string& c) {
  const auto meta = golden_meta(c);
  const auto& p = meta.at("params");
  GoldenBlock g;
  g.cfg.architecture = "llama";
  g.cfg.hidden = p.at("hidden_size");
  g.cfg.intermediate = p.at("intermediate_size");
  g.cfg.n_heads = p.at("num_attention_heads");
  g.cfg.n_kv_heads = p.at("num_key_value_heads");
  g.cfg.head_dim = p.at("head_dim");
  g.cfg.norm_eps = p.at("rms_norm_eps");
  g.cfg.rope_theta = p.at("rope_theta");
  g.cfg.layers = 1;
  g.cfg.vocab = 1;
  g.batch = {p.at("n_sequences").get<int>(), p.at("seq_len").get<int>()};
  for (const auto& t : Llama::block_tensors(g.cfg)) {
    const Tensor v = golden_tensor(c, t.name);
    g.blk.put(t.name, t.shape, std::vector<float>(v.data.begin(), v.data.end()));
  }
  const Tensor hin = golden_tensor(c, "hidden_in");
  g.hidden.assign(hin.data.begin(), hin.data.end());
  return g;
}

void check_case(const std::string& c) {
  const auto meta = golden_meta(c);
  const auto& p = meta.at("params");
  GoldenBlock gb = golden_block(c);
  const auto& cfg = gb.cfg;
  const auto b = gb.batch;
  const awq::index_t T = b.tokens(), H = cfg.hidden;

  // The block forward matches transformers' LlamaDecoderLayer.
  std::vector<float> out(gb.hidden.size());
  std::vector<awq::model::Tensor<Cpu>> in;
  Llama::forward<Cpu>(cfg, b, gb.blk, awq::make_row_major<const float>(gb.hidden.data(), T, H), awq::make_row_major(out.data(), T, H), &in);
  const Tensor ref = golden_tensor(c, "out_ref");
  double max_abs = 0;
  for (std::size_t i = 0; i < out.size(); ++i) max_abs = std::max(max_abs, std::fabs(double(out[i]) - ref.data[i]));
  MESSAGE(c << ": max |out - out_ref| = " << max_abs);
  CHECK(max_abs < 1e-4);
  // The capture alone (the driver's sequential mode) gives the same inputs, bit for bit.
  std::vector<awq::model::Tensor<Cpu>> in_only;
  std::vector<float> untouched(out.size(), poison());
  awq::model::capture_inputs<Llama>(cfg, b, gb.blk, awq::make_row_major<const float>(gb.hidden.data(), T, H),
                                    awq::make_row_major(untouched.data(), T, H), in_only);
  static_assert(awq::model::has_capture<Llama, Cpu>::value, "Llama skips the down projection when only capturing");
  static_assert(!awq::model::has_capture<awq::model::LinearGroup, Cpu>::value, "no capture: the driver runs forward");
  REQUIRE(in_only.size() == in.size());
  for (std::size_t s = 0; s < in.size(); ++s) CHECK((in_only[s].rows == in[s].rows && in_only[s].cols == in[s].cols && in_only[s].data == in[s].data));
  CHECK(std::all_of(untouched.begin(), untouched.end(), [](float v) { return std::isnan(v); }));

  // The AWQ flow reproduces run_awq's choices.
  awq::model::BlockOptions opt;
  opt.quant = awq::QuantSpec{p.at("w_bit").get<int>(), p.at("q_config").at("q_group_size").get<int>(), true};
  const GoldenBlock original = golden_block(c);
  const auto res = awq::model::search_block<Cpu, Llama>(cfg, b, gb.blk, in, opt);
  const auto& groups = meta.at("results").at("scale_groups");
  CHECK(groups.size() == res.scales.size());
  for (const auto& g : groups) {
    const std::string key = group_key(g);
    CAPTURE(key);
    REQUIRE(res.scales.count(key) == 1);
    const auto& r = res.scales.at(key);
    const double margin = g.at("rel_margin_second_vs_best").get<double>();
    if (margin > 1e-4) CHECK(r.best_index == g.at("best_ratio_index").get<int>());
    const Tensor losses = golden_tensor(c, g.at("losses").get<std::string>());
    double worst_loss = 0;
    for (std::size_t i = 0; i < 20; ++i) worst_loss = std::max(worst_loss, std::fabs(r.losses[i] - losses.data[i]) / losses.data[i]);
    CHECK(worst_loss < 1e-4);
    if (r.best_index == g.at("best_ratio_index").get<int>()) {
      const Tensor s = golden_tensor(c, g.at("scales").get<std::string>());
      double worst = 0;
      for (std::size_t i = 0; i < s.data.size(); ++i) worst = std::max(worst, std::fabs(double(r.scales[i]) - s.data[i]) / s.data[i]);
      CHECK(worst < 1e-5);
    }
  }
  // Clip bounds. The clip error of a few (row, group) entries is dominated by float32
  // cancellation (activations up to ~240 after the boosted norms), so perturbing the scales by
  // their ~1e-6 float noise moves those choices. Hence two checks:
  //  (a) with the reference's own scales folded in, the bounds match exactly, flips allowed only
  //      where the reference's margin is below 1e-4;
  //  (b) with our own scales, at least 99% of the bounds match.
  GoldenBlock g2 = golden_block(c);
  awq::model::GivenResults given;
  for (const auto& g : groups) given.scales[group_key(g)] = golden_tensor(c, g.at("scales").get<std::string>()).data;
  std::vector<awq::model::Tensor<Cpu>> in2;
  std::vector<float> out2(out.size());
  Llama::forward<Cpu>(cfg, b, g2.blk, awq::make_row_major<const float>(g2.hidden.data(), T, H), awq::make_row_major(out2.data(), T, H), &in2);
  const auto replay = awq::model::search_block<Cpu, Llama>(cfg, b, g2.blk, in2, opt, &given).clips;
  const std::vector<std::pair<std::string, std::string>> clips = {
      {"v", "self_attn_v_proj"}, {"o", "self_attn_o_proj"}, {"gate", "mlp_gate_proj"}, {"up", "mlp_up_proj"}, {"down", "mlp_down_proj"}};
  for (const auto& clip : clips) {
    const std::string& ours = clip.first;
    const std::string& theirs = clip.second;
    CAPTURE(theirs);
    const Tensor ref_clip = golden_tensor(c, "clip_" + theirs), margin = golden_tensor(c, "clip_rel_margin_" + theirs);
    long replay_flips = 0, own_flips = 0;
    for (std::size_t i = 0; i < ref_clip.data.size(); ++i) {
      // Bounds inherit the scales' float noise: compared to 1e-5; grid points are 5% apart.
      const auto same = [&](float v) { return std::fabs(v - ref_clip.data[i]) <= 1e-5f * std::fabs(ref_clip.data[i]); };
      if (!same(replay.at(ours).max_val[i])) {
        CAPTURE(i);
        CHECK(margin.data[i] < 1e-4);
        ++replay_flips;
      }
      own_flips += !same(res.clips.at(ours).max_val[i]);
    }
    MESSAGE(c << " clip " << theirs << ": " << replay_flips << " near-tie flips with the reference's scales, "
              << own_flips << " of " << ref_clip.data.size() << " differ with our own scales");
    CHECK(own_flips * 100 <= static_cast<long>(ref_clip.data.size()));
  }
  // The flow changed the weights; the original block is untouched by it.
  CHECK(gb.blk.host("mlp.down_proj.weight") != original.blk.host("mlp.down_proj.weight"));
}

}  // namespace

TEST_CASE("Llama block (MHA): forward and per-block AWQ match llm-awq run_awq") { check_case("llama_block_mha_h256"); }
TEST_CASE("Llama block (GQA): forward and per-block AWQ match llm-awq run_awq") { check_case("llama_block_gqa_h256"); }

// ---- the driver over a stack: per-block checkpoints resume bit-identically; streams ---------

#include <filesystem>
#include <unistd.h>

namespace {

/// An engine's own in-memory storage as a weight source.
struct MemorySource {
  awq::model::ModelConfig cfg;
  std::map<std::string, std::vector<float>> t;
  const awq::model::ModelConfig& config() const { return cfg; }
  bool contains(const std::string& n) const { return t.count(n) != 0; }
  std::vector<float> load(const std::string& n, const std::vector<std::int64_t>& shape) const {
    const auto it = t.find(n);
    awq::detail::require(it != t.end(), "memory: tensor '", n, "' is missing");
    std::size_t size = 1;
    for (auto d : shape) size *= static_cast<std::size_t>(d);
    awq::detail::require(it->second.size() == size, "memory: tensor '", n, "' has the wrong size");
    return it->second;
  }
};

MemorySource tiny_source() {
  MemorySource s;
  s.cfg.architecture = "llama";
  s.cfg.hidden = 64;
  s.cfg.intermediate = 96;
  s.cfg.n_heads = 4;
  s.cfg.n_kv_heads = 2;
  s.cfg.head_dim = 16;
  s.cfg.layers = 3;
  s.cfg.vocab = 8;
  std::uint64_t seed = 900;
  for (int i = 0; i < 3; ++i)
    for (const auto& t : Llama::block_tensors(s.cfg)) {
      const long r = static_cast<long>(t.shape[0]), c = t.shape.size() > 1 ? static_cast<long>(t.shape[1]) : 1;
      const auto v = random_weights(r, c, Dist::outliers, seed++, t.shape.size() > 1 ? 0.1 : 0.3);
      std::vector<float> f(v.size());
      for (std::size_t k = 0; k < v.size(); ++k) f[k] = t.shape.size() > 1 ? static_cast<float>(v[k]) : 1.0f + std::fabs(static_cast<float>(v[k]));
      s.t[Llama::block_prefix(i) + t.name] = f;
    }
  return s;
}

std::vector<float> tiny_hidden(std::uint64_t seed) {
  const auto v = random_weights(32, 64, Dist::outliers, seed, 1.0);
  return std::vector<float>(v.begin(), v.end());
}

/// Everything a run hands to its sink, flattened for bit-exact comparison.
struct Collected {
  std::vector<std::vector<std::uint8_t>> codes;
  std::vector<std::vector<float>> values;
  int searched = 0;
  bool operator==(const Collected& o) const { return codes == o.codes && values == o.values; }
};

/// Llama as a policy that has no `capture` (a user's policy written before it existed): the driver
/// must fall back to `forward`.
struct LlamaWithoutCapture : Llama {
  template <class Backend>
  static void capture(const awq::model::ModelConfig&, const awq::model::Batch&, const awq::model::Block<Backend>&,
                      const awq::MatrixView<const float>&, std::vector<awq::model::Tensor<Backend>>&) = delete;
};
static_assert(!awq::model::has_capture<LlamaWithoutCapture, Cpu>::value, "a deleted capture is no capture");

/// Llama policies described wrongly, one fault each (the driver's checks name it).
struct LinearInTwoGroups : Llama {
  static constexpr const char* name = "llama-two-groups";
  static std::vector<awq::model::LinearGroup> groups(const awq::model::ModelConfig& c) {
    auto g = Llama::groups(c);
    g.push_back({"up_again", {"mlp.up_proj"}, awq::model::LinearGroup::Prev::norm, "post_attention_layernorm", 2, "mlp"});
    return g;
  }
};
struct SlotOutOfRange : Llama {
  static constexpr const char* name = "llama-slot";
  static std::vector<awq::model::LinearGroup> groups(const awq::model::ModelConfig& c) {
    auto g = Llama::groups(c);
    g.back().input = 7;
    return g;
  }
};
struct FoldIntoWrongRows : Llama {
  static constexpr const char* name = "llama-prev";
  static std::vector<awq::model::LinearGroup> groups(const awq::model::ModelConfig& c) {
    auto g = Llama::groups(c);
    g.back().prev = "self_attn.q_proj";  // 64 output rows for down_proj's 96 input channels
    return g;
  }
};
struct CaptureLeftEmpty : LlamaWithoutCapture {
  static constexpr const char* name = "llama-no-inputs";
  template <class Backend>
  static void forward(const awq::model::ModelConfig& c, const awq::model::Batch& b, const awq::model::Block<Backend>& blk,
                      const awq::MatrixView<const float>& x, const awq::MatrixView<float>& out, std::vector<awq::model::Tensor<Backend>>* cap) {
    Llama::forward<Backend>(c, b, blk, x, out, nullptr);
    if (cap) cap->clear();
  }
};

template <class Arch = Llama>
awq::model::PipelineResult run(const MemorySource& src, const awq::model::BlockCheckpoint* ck, Collected& out, int throw_after = -1,
                               const awq::model::SearchMode& mode = {}) {
  awq::model::PipelineOptions opt;
  opt.block.quant = awq::QuantSpec{4, 32, true};
  opt.block.mode = mode;
  opt.checkpoint = ck;
  std::vector<awq::model::Stream> none;
  return awq::model::quantize_model<Cpu, Arch>(src, awq::model::Batch{2, 16}, tiny_hidden(77), none, opt,
                                               [&](const awq::model::QuantizedBlock& b) {
                                                 out.searched += !b.resumed;
                                                 for (const auto& [n, q] : b.linears) {
                                                   out.codes.push_back(q.codes);
                                                   out.codes.push_back(q.zeros);
                                                   std::vector<float> sc(q.scales.begin(), q.scales.end());
                                                   out.values.push_back(sc);
                                                 }
                                                 for (const auto& [n, v] : b.tensors) out.values.push_back(v);
                                                 if (b.index == throw_after) throw std::runtime_error("killed after block 1");
                                               });
}

}  // namespace

TEST_CASE("model driver: a run stopped after block 1 resumes from its files and ends bit-identical") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("awq_resume_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const MemorySource src = tiny_source();

  Collected ref;
  CHECK(run(src, nullptr, ref).resumed == 0);
  CHECK(ref.searched == 3);
  CHECK(ref.codes.size() == 3 * 7 * 2);

  const awq::model::BlockCheckpoint ck(dir.string(), "tiny w4-g32");
  Collected killed;
  CHECK_THROWS_WITH(run(src, &ck, killed, 1), "killed after block 1");
  CHECK(ck.has(0));
  CHECK(ck.has(1));
  CHECK_FALSE(ck.has(2));

  Collected resumed;
  CHECK(run(src, &ck, resumed).resumed == 2);
  CHECK(resumed.searched == 1);  // only block 2 was searched
  CHECK(resumed == ref);
  CHECK(ck.has(2));

  // GPTQ's feedback follows from the saved scales and clips: its resumed run is bit-identical too.
  const awq::model::SearchMode gptq = awq::model::SearchMode::parse("gptq");
  fs::create_directories(dir / "gptq");
  const awq::model::BlockCheckpoint ck_gptq((dir / "gptq").string(), "tiny w4-g32 gptq");
  Collected gptq_ref, gptq_killed, gptq_resumed;
  run(src, nullptr, gptq_ref, -1, gptq);
  CHECK_FALSE(gptq_ref == ref);
  CHECK_THROWS_WITH(run(src, &ck_gptq, gptq_killed, 1, gptq), "killed after block 1");
  CHECK(run(src, &ck_gptq, gptq_resumed, -1, gptq).resumed == 2);
  CHECK(gptq_resumed == gptq_ref);

  // A file of another run, a truncated file and a missing tensor are errors, never used silently.
  Collected other;
  const awq::model::BlockCheckpoint foreign(dir.string(), "tiny w3-g32");
  CHECK_THROWS_WITH_AS(run(src, &foreign, other), doctest::Contains("belongs to another run ('tiny w4-g32'; this run is 'tiny w3-g32')"),
                       awq::Error);
  fs::resize_file(ck.path(1), fs::file_size(ck.path(1)) - 7);
  Collected cut;
  CHECK_THROWS_AS(run(src, &ck, cut), awq::Error);
  awq::io::SafetensorsWriter w;
  w.metadata("awq_block_checkpoint", "1");
  w.metadata("run", "tiny w4-g32");
  w.metadata("block", "0");
  w.add_typed<float>("scales.qkv", "F32", {64}, std::vector<float>(64, 1.0f));
  w.write(ck.path(0));
  Collected partial;
  CHECK_THROWS_WITH_AS(run(src, &ck, partial), doctest::Contains("tensor 'scales.gate_up' is missing"), awq::Error);
  fs::remove_all(dir);
}

TEST_CASE("model driver: a wrong description, batch, capture or group is an awq::Error naming it, before any search") {
  const MemorySource src = tiny_source();
  Collected out;
  const auto fails = [&](auto arch, const char* fragment) {
    using Arch = decltype(arch);
    CAPTURE(Arch::name);
    CHECK_THROWS_WITH_AS(run<Arch>(src, nullptr, out), doctest::Contains(fragment), awq::Error);
    CHECK(out.searched == 0);  // refused before any block's search
  };
  fails(LinearInTwoGroups{}, "architecture 'llama-two-groups': 'mlp.up_proj' is in groups 'gate_up' and 'up_again'");
  fails(SlotOutOfRange{}, "architecture 'llama-slot': group 'down' reads input slot 7, but the block captures 4 inputs");
  fails(FoldIntoWrongRows{}, "group 'down' folds into rows 0 .. 95 of 'self_attn.q_proj', which has 64 output rows");
  fails(CaptureLeftEmpty{}, "the capture of architecture 'llama-no-inputs' holds 0 inputs, expected 4");
  {  // the same checks where a caller searches blocks itself
    awq::model::Block<Cpu> blk = awq::model::load_block<Cpu, Llama>(src, src.cfg, 0);
    std::vector<awq::model::Tensor<Cpu>> in;
    awq::model::BlockOptions bo;
    bo.quant = awq::QuantSpec{4, 32, true};
    const auto search = [&] { awq::model::search_block<Cpu, LinearInTwoGroups>(src.cfg, {2, 16}, blk, in, bo); };
    CHECK_THROWS_WITH_AS(search(), doctest::Contains("'mlp.up_proj' is in groups 'gate_up' and 'up_again'"), awq::Error);
    const auto search_llama = [&] { awq::model::search_block<Cpu, Llama>(src.cfg, {2, 16}, blk, in, bo); };
    CHECK_THROWS_WITH_AS(search_llama(), doctest::Contains("the capture of architecture 'llama' holds 0 inputs"), awq::Error);
  }

  // The quantizer's group against every linear, named, before block 0 is read.
  std::vector<awq::model::Stream> none;
  awq::model::PipelineOptions opt;
  opt.block.quant = awq::QuantSpec{4, 64, true};
  const auto sink = [](const awq::model::QuantizedBlock&) { FAIL("no block may reach the sink"); };
  const auto quantize = [&](const MemorySource& m, awq::model::Batch b, std::vector<awq::model::Stream>& st) {
    awq::model::quantize_model<Cpu, Llama>(m, b, tiny_hidden(77), st, opt, sink);
  };
  CHECK_THROWS_WITH_AS(quantize(src, {2, 16}, none),
                       doctest::Contains("group_size 64 does not divide the 96 input features of 'mlp.down_proj'"), awq::Error);
  // Batches: negative fields whose product is the right token count are not a batch.
  opt.block.quant = awq::QuantSpec{4, 32, true};
  CHECK_THROWS_WITH_AS(quantize(src, {-2, -16}, none),
                       doctest::Contains("the calibration batch is -2 sequences of -16 tokens"), awq::Error);
  std::vector<awq::model::Stream> streams = {{awq::model::StreamKind::fp, awq::model::Batch{-1, -32}, tiny_hidden(78)}};
  CHECK_THROWS_WITH_AS(quantize(src, {2, 16}, streams),
                       doctest::Contains("stream 0 is -1 sequences of -32 tokens"), awq::Error);
  MemorySource empty = src;
  empty.cfg.layers = 0;
  CHECK_THROWS_WITH_AS(quantize(empty, {2, 16}, none),
                       doctest::Contains("the model has 0 layers"), awq::Error);

  // A block's tensors are vectors or matrices; a checkpoint's directory exists from the start.
  awq::model::Block<Cpu> blk;
  CHECK_THROWS_WITH_AS(blk.put("norm.weight", {}, {1.0f}), doctest::Contains("'norm.weight' has 0 dimensions"), awq::Error);
  const std::string missing = (std::filesystem::temp_directory_path() / ("awq_no_such_dir_" + std::to_string(::getpid()))).string();
  CHECK_THROWS_WITH_AS(awq::model::BlockCheckpoint(missing, "run"), doctest::Contains("is not an existing directory"), awq::Error);
}

TEST_CASE("fold_group: into a fused previous linear's rows from prev_row, the product through it unchanged") {
  // GPT-2's layout: c_attn [3 n, k] computes q, k, v; out_proj [m, n] reads v = rows 2 n .. 3 n − 1.
  const awq::index_t n = 24, k = 16, m = 8, t = 5;
  AWQ_TEST_FRESH_RNG(rng);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.25f, 4.0f);
  const auto fresh = [&](std::size_t size) {
    std::vector<float> v(size);
    for (auto& e : v) e = nd(rng);
    return v;
  };
  awq::model::Block<Cpu> blk;
  blk.put("c_attn.weight", {3 * n, k}, fresh(static_cast<std::size_t>(3 * n * k)));
  blk.put("c_attn.bias", {3 * n}, fresh(static_cast<std::size_t>(3 * n)));
  blk.put("out_proj.weight", {m, n}, fresh(static_cast<std::size_t>(m * n)));
  const std::vector<float> x = fresh(static_cast<std::size_t>(t * k));
  // out_proj(v(x)) in float64, v = rows 2n.. of c_attn
  const auto through = [&](const awq::model::Block<Cpu>& b) {
    const auto w = b.host("c_attn.weight"), bias = b.host("c_attn.bias"), o = b.host("out_proj.weight");
    std::vector<double> y(static_cast<std::size_t>(t * m));
    for (awq::index_t i = 0; i < t; ++i)
      for (awq::index_t r = 0; r < m; ++r)
        for (awq::index_t c = 0; c < n; ++c) {
          double v = bias[static_cast<std::size_t>(2 * n + c)];
          for (awq::index_t j = 0; j < k; ++j) v += double(w[static_cast<std::size_t>((2 * n + c) * k + j)]) * x[static_cast<std::size_t>(i * k + j)];
          y[static_cast<std::size_t>(i * m + r)] += double(o[static_cast<std::size_t>(r * n + c)]) * v;
        }
    return y;
  };
  const auto before = through(blk);
  const auto w0 = blk.host("c_attn.weight"), b0 = blk.host("c_attn.bias");
  std::vector<float> s(static_cast<std::size_t>(n));
  for (auto& e : s) e = ud(rng);
  const awq::model::LinearGroup g{"o", {"out_proj"}, awq::model::LinearGroup::Prev::linear, "c_attn", 1, "", 2 * n};
  awq::model::fold_group(blk, g, s);
  const auto w1 = blk.host("c_attn.weight"), b1 = blk.host("c_attn.bias");
  bool q_k_kept = true, v_divided = true;
  for (awq::index_t r = 0; r < 3 * n; ++r) {
    const float d = r < 2 * n ? 1.0f : s[static_cast<std::size_t>(r - 2 * n)];
    q_k_kept = q_k_kept && (r >= 2 * n || (b1[static_cast<std::size_t>(r)] == b0[static_cast<std::size_t>(r)]));
    v_divided = v_divided && (r < 2 * n || b1[static_cast<std::size_t>(r)] == b0[static_cast<std::size_t>(r)] / d);
    for (awq::index_t j = 0; j < k; ++j) {
      const std::size_t i = static_cast<std::size_t>(r * k + j);
      q_k_kept = q_k_kept && (r >= 2 * n || w1[i] == w0[i]);
      v_divided = v_divided && (r < 2 * n || w1[i] == w0[i] / d);
    }
  }
  CHECK(q_k_kept);   // q and k rows bit for bit
  CHECK(v_divided);  // v rows and their bias ÷ s
  const auto after = through(blk);
  double err = 0, ref = 0;
  for (std::size_t i = 0; i < before.size(); ++i) {
    err = std::max(err, std::fabs(after[i] - before[i]));
    ref = std::max(ref, std::fabs(before[i]));
  }
  CHECK(err <= 1e-5 * ref);  // the fold is exact to float rounding
}

TEST_CASE("model driver: a policy without capture runs forward in the sequential mode, with the same results") {
  const MemorySource src = tiny_source();
  for (const char* name : {"improved", "sequential"}) {
    CAPTURE(name);
    const awq::model::SearchMode mode = awq::model::SearchMode::parse(name);
    REQUIRE(mode.sequential);
    Collected with_capture, without;
    run<Llama>(src, nullptr, with_capture, -1, mode);
    run<LlamaWithoutCapture>(src, nullptr, without, -1, mode);
    CHECK(with_capture.searched == 3);
    CHECK(without.searched == 3);
    CHECK(with_capture.codes.size() == 3 * 7 * 2);
    CHECK(without == with_capture);
  }
}

TEST_CASE("model driver: streams carry activations through the FP, RTN and AWQ blocks") {
  const MemorySource src = tiny_source();
  const awq::model::Batch eb{3, 8};
  const auto x = random_weights(24, 64, Dist::normal, 5, 1.0);
  const std::vector<float> e(x.begin(), x.end());
  std::vector<awq::model::Stream> streams = {{awq::model::StreamKind::fp, eb, e}, {awq::model::StreamKind::rtn, eb, e},
                                             {awq::model::StreamKind::awq, eb, e}};
  awq::model::PipelineOptions opt;
  opt.block.quant = awq::QuantSpec{4, 32, true};
  opt.stream_chunk_tokens = 8;  // one sequence at a time
  std::vector<awq::model::QuantizedBlock> blocks;
  awq::model::quantize_model<Cpu, Llama>(src, awq::model::Batch{2, 16}, tiny_hidden(77), streams, opt,
                                         [&](const awq::model::QuantizedBlock& b) { blocks.push_back(b); });
  // Recompute each stream block by block with Llama::forward over the whole batch at once.
  std::vector<float> fp = e, rtn = e, aw = e, tmp(e.size());
  const auto fwd = [&](awq::model::Block<Cpu>& blk, std::vector<float>& h) {
    Llama::forward<Cpu>(src.cfg, eb, blk, awq::make_row_major<const float>(h.data(), 24, 64), awq::make_row_major(tmp.data(), 24, 64), nullptr);
    h = tmp;
  };
  for (int i = 0; i < 3; ++i) {
    auto blk = awq::model::load_block<Cpu, Llama>(src, src.cfg, i);
    fwd(blk, fp);
    auto r = blk.clone();
    awq::model::finalize_block<Cpu, Llama>(src.cfg, r, opt.block.quant);
    fwd(r, rtn);
    awq::model::Block<Cpu> q;
    for (const auto& [n, v] : blocks[static_cast<std::size_t>(i)].tensors) q.put(n, blocks[static_cast<std::size_t>(i)].shapes.at(n), v);
    for (const auto& [n, ql] : blocks[static_cast<std::size_t>(i)].linears) {
      std::vector<float> w(static_cast<std::size_t>(ql.out * ql.in));
      for (awq::index_t rr = 0; rr < ql.out; ++rr)
        for (awq::index_t c = 0; c < ql.in; ++c) {
          const std::size_t g = static_cast<std::size_t>(rr * ql.groups + c / (ql.in / ql.groups));
          w[static_cast<std::size_t>(rr * ql.in + c)] =
              (static_cast<float>(ql.codes[static_cast<std::size_t>(rr * ql.in + c)]) - ql.zeros[g]) * static_cast<float>(ql.scales[g]);
        }
      q.put(n + ".weight", {ql.out, ql.in}, w);
    }
    fwd(q, aw);
  }
  const auto close = [](const std::vector<float>& a, const std::vector<float>& b) {
    double m = 0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]) / (1.0 + std::fabs(double(b[i]))));
    return m;
  };
  CHECK(close(streams[0].hidden, fp) < 1e-5);
  CHECK(close(streams[1].hidden, rtn) < 1e-5);
  CHECK(close(streams[2].hidden, aw) < 1e-5);
  CHECK(close(streams[1].hidden, fp) > 1e-4);  // quantization did change something
}

namespace {

// The kernels' shapes: GQA, sequences that are not a multiple of the attention block.
awq::model::ModelConfig kernel_config() {
  awq::model::ModelConfig c;
  c.architecture = "llama";
  c.hidden = 96;
  c.intermediate = 160;
  c.n_heads = 6;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.layers = 1;
  c.vocab = 5000;  // two full vocabulary tiles of the head and a partial one
  return c;
}

// The rotate_half RoPE of row t of m [T, heads·d] in double, from the float cos/sin table.
std::vector<double> rope_ref(const std::vector<double>& m, long T, int heads, int d, int L, float theta) {
  const auto cs = awq::model::rope_cos_sin(L, d, theta);
  std::vector<double> o(m);
  const int half = d / 2;
  for (long t = 0; t < T; ++t)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < half; ++i) {
        const std::size_t b = static_cast<std::size_t>(t * heads * d + h * d);
        const double c = cs[static_cast<std::size_t>(((t % L) * half + i) * 2)], s = cs[static_cast<std::size_t>(((t % L) * half + i) * 2 + 1)];
        o[b + static_cast<std::size_t>(i)] = m[b + static_cast<std::size_t>(i)] * c - m[b + static_cast<std::size_t>(i + half)] * s;
        o[b + static_cast<std::size_t>(i + half)] = m[b + static_cast<std::size_t>(i + half)] * c + m[b + static_cast<std::size_t>(i)] * s;
      }
  return o;
}

// max |a − b| / max |b| with a float and b double.
double max_rel(const std::vector<float>& a, const std::vector<double>& b) {
  double d = 0, m = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));  // a NaN (a poisoned value left) fails below
    if (std::isnan(a[i])) d = std::numeric_limits<double>::infinity();
    m = std::max(m, std::fabs(b[i]));
  }
  return d / m;
}

}  // namespace

TEST_CASE("CPU Llama kernels: blocked causal attention, norm, SwiGLU and add against float64") {
  using K = awq::model::LlamaKernels<Cpu>;
  const auto c = kernel_config();
  const int L = 150, S = 2, d = c.head_dim;  // 150 = two full blocks of 64 and a partial one
  const long T = static_cast<long>(S) * L, qc = c.n_heads * d, kc = c.n_kv_heads * d;
  const auto qd = random_weights(T, qc, Dist::normal, 11, 1.0), kd = random_weights(T, kc, Dist::normal, 12, 1.0),
             vd = random_weights(T, kc, Dist::student_t3, 13, 1.0);
  const auto q0 = cast_vec<float>(qd), k0 = cast_vec<float>(kd);  // the kernel rotates q and k in place
  auto q = q0, k = k0;
  const auto v = cast_vec<float>(vd);
  std::vector<float> ctx(static_cast<std::size_t>(T * qc), poison());
  K::attention(c, {S, L}, awq::make_row_major(q.data(), T, qc), awq::make_row_major(k.data(), T, kc),
               awq::make_row_major<const float>(v.data(), T, kc), awq::make_row_major(ctx.data(), T, qc));
  // Reference in double from the float inputs.
  const auto qr = rope_ref(std::vector<double>(q0.begin(), q0.end()), T, c.n_heads, d, L, c.rope_theta);
  const auto kr = rope_ref(std::vector<double>(k0.begin(), k0.end()), T, c.n_kv_heads, d, L, c.rope_theta);
  std::vector<double> ref(ctx.size(), 0.0), p(static_cast<std::size_t>(L));
  for (int s = 0; s < S; ++s)
    for (int h = 0; h < c.n_heads; ++h) {
      const int kh = h / (c.n_heads / c.n_kv_heads);
      for (int i = 0; i < L; ++i) {
        const long ti = static_cast<long>(s) * L + i;
        double mx = -1e300, sum = 0;
        for (int j = 0; j <= i; ++j) {
          const long tj = static_cast<long>(s) * L + j;
          double dot = 0;
          for (int e = 0; e < d; ++e) dot += qr[static_cast<std::size_t>(ti * qc + h * d + e)] * kr[static_cast<std::size_t>(tj * kc + kh * d + e)];
          p[static_cast<std::size_t>(j)] = dot / std::sqrt(static_cast<double>(d));
          mx = std::max(mx, p[static_cast<std::size_t>(j)]);
        }
        for (int j = 0; j <= i; ++j) sum += (p[static_cast<std::size_t>(j)] = std::exp(p[static_cast<std::size_t>(j)] - mx));
        for (int j = 0; j <= i; ++j)
          for (int e = 0; e < d; ++e)
            ref[static_cast<std::size_t>(ti * qc + h * d + e)] +=
                p[static_cast<std::size_t>(j)] / sum * static_cast<double>(v[static_cast<std::size_t>((static_cast<long>(s) * L + j) * kc + kh * d + e)]);
      }
    }
  const double e_att = max_rel(ctx, ref);
  MESSAGE("attention: max |ours - float64| / max |float64| = " << e_att);
  CHECK(e_att < 1e-5);

  // RMSNorm, SwiGLU and add, row by row.
  const long H = c.hidden, I = c.intermediate;
  const auto xd = random_weights(T, H, Dist::outliers, 14, 1.0), wd = random_weights(1, H, Dist::normal, 15, 1.0);
  const auto x = cast_vec<float>(xd), w = cast_vec<float>(wd);
  std::vector<float> xn(static_cast<std::size_t>(T * H), poison());
  K::rmsnorm(awq::make_row_major(x.data(), T, H), w.data(), c.norm_eps, awq::make_row_major(xn.data(), T, H));
  std::vector<double> xn_ref(xn.size());
  for (long t = 0; t < T; ++t) {
    double ss = 0;
    for (long j = 0; j < H; ++j) ss += static_cast<double>(x[static_cast<std::size_t>(t * H + j)]) * x[static_cast<std::size_t>(t * H + j)];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(H) + static_cast<double>(c.norm_eps));
    for (long j = 0; j < H; ++j)
      xn_ref[static_cast<std::size_t>(t * H + j)] = static_cast<double>(w[static_cast<std::size_t>(j)]) * x[static_cast<std::size_t>(t * H + j)] * inv;
  }
  CHECK(max_rel(xn, xn_ref) < 1e-6);

  const auto gd = random_weights(T, I, Dist::student_t3, 16, 2.0), ud = random_weights(T, I, Dist::normal, 17, 1.0);
  const auto g = cast_vec<float>(gd), u = cast_vec<float>(ud);
  std::vector<float> act(static_cast<std::size_t>(T * I), poison()), sum(act.size(), poison());
  K::swiglu(awq::make_row_major(g.data(), T, I), awq::make_row_major(u.data(), T, I), awq::make_row_major(act.data(), T, I));
  K::add(awq::make_row_major(g.data(), T, I), awq::make_row_major(u.data(), T, I), awq::make_row_major(sum.data(), T, I));
  std::vector<double> act_ref(act.size()), sum_ref(act.size());
  for (std::size_t i = 0; i < act.size(); ++i) {
    const double gi = g[i], ui = u[i];
    act_ref[i] = gi / (1.0 + std::exp(-gi)) * ui;
    sum_ref[i] = gi + ui;
  }
  CHECK(max_rel(act, act_ref) < 1e-6);
  CHECK(max_rel(sum, sum_ref) < 1e-6);
}

TEST_CASE("CPU head: tiled log-sum-exp perplexity against float64, with progress events") {
  const auto c = kernel_config();
  const int L = 200, S = 3;  // 600 rows: a full row block of 512 and a partial one
  const long T = static_cast<long>(S) * L, H = c.hidden, V = c.vocab;
  awq::model::Head<Llama> head{c, cast_vec<float>(random_weights(1, H, Dist::normal, 21, 1.0)),
                               cast_vec<float>(random_weights(V, H, Dist::outliers, 22, 0.0005)), {}};
  const auto hidden = cast_vec<float>(random_weights(T, H, Dist::student_t3, 23, 1.0));
  std::vector<int> tokens(static_cast<std::size_t>(T));
  std::mt19937 rng(24);
  for (auto& t : tokens) t = static_cast<int>(rng() % static_cast<unsigned>(V));
  // One thread: two chunks of rows (512 + 88), so the progress has a step between start and end.
  std::vector<awq::Progress> events;
  Cpu::set_threads(1);
  const auto r = head.perplexity(hidden, tokens, L, [&](const awq::Progress& p) { events.push_back(p); }, "perplexity test");
  Cpu::set_threads(0);
  CHECK(head.perplexity(hidden, tokens, L).nll == doctest::Approx(r.nll).epsilon(1e-12));  // all threads
  // Reference in double from the float final norm (checked above as rmsnorm).
  std::vector<float> hn(hidden.size());
  Llama::final_norm<Cpu>(c, head.norm.data(), awq::make_row_major(hidden.data(), T, H), awq::make_row_major(hn.data(), T, H));
  double nll = 0;
  std::vector<double> logit(static_cast<std::size_t>(V));
  for (long t = 0; t < T; ++t) {
    if (t % L == L - 1) continue;
    double mx = -1e300, s = 0;
    for (long vv = 0; vv < V; ++vv) {
      double acc = 0;
      for (long j = 0; j < H; ++j)
        acc += static_cast<double>(hn[static_cast<std::size_t>(t * H + j)]) * head.lm_head[static_cast<std::size_t>(vv * H + j)];
      logit[static_cast<std::size_t>(vv)] = acc;
      mx = std::max(mx, acc);
    }
    for (double l : logit) s += std::exp(l - mx);
    nll -= logit[static_cast<std::size_t>(tokens[static_cast<std::size_t>(t + 1)])] - mx - std::log(s);
  }
  const long predicted = static_cast<long>(S) * (L - 1);
  nll /= static_cast<double>(predicted);
  MESSAGE("head: nll " << r.nll << " against float64 " << nll);
  CHECK(r.predicted == predicted);
  CHECK(rel(r.nll, nll) < 1e-5);
  CHECK(rel(r.ppl, std::exp(nll)) < 1e-5);
  REQUIRE(events.size() == 3);
  CHECK(events.front().done == 0);
  CHECK(events.back().done == T);
  CHECK(events.back().total == T);
  CHECK(events.back().phase == "perplexity test");
  for (std::size_t i = 1; i < events.size(); ++i) CHECK(events[i].done > events[i - 1].done);
}

TEST_CASE("search modes: a damping too small for GPTQ's Hessian is an error naming the linear and the damping") {
  const MemorySource src = tiny_source();
  const awq::model::Batch b{1, 16};  // 16 tokens for 64 channels: a Hessian of rank 16
  const auto v = random_weights(b.tokens(), 64, Dist::normal, 3, 1.0);
  const std::vector<float> calib(v.begin(), v.end());
  std::vector<awq::model::Stream> none;
  awq::model::PipelineOptions opt;
  opt.block.quant = awq::QuantSpec{4, 32, true};
  opt.block.mode = awq::model::SearchMode::improved();
  opt.block.mode.gptq_damp = 1e-300;
  const auto run = [&] { awq::model::quantize_model<Cpu, Llama>(src, b, calib, none, opt, [](const awq::model::QuantizedBlock&) {}); };
  CHECK_THROWS_WITH_AS(run(), doctest::Contains("the Hessian of the input of 'self_attn.q_proj' (64 channels, 16 tokens) is not positive "
                                         "definite at damp 1e-300; a larger damp makes it so"),
                       awq::NotPositiveDefinite);
  opt.block.mode.gptq_damp = 0.05;  // the default at W4 makes it definite
  CHECK_NOTHROW(run());
}

TEST_CASE("search modes: activation scales too extreme for fp16 weights are an error, in every mode") {
  // 4 tokens: some of the 96 SwiGLU channels are near zero on all of them, the down group's scales
  // span 1e-6 to 1e6, and up_proj's rows divided by them overflow fp16 (NaN downstream).
  const MemorySource src = tiny_source();
  const awq::model::Batch b{1, 4};
  const auto v = random_weights(b.tokens(), 64, Dist::normal, 3, 1.0);
  const std::vector<float> calib(v.begin(), v.end());
  for (const char* mode : {"reference", "improved"}) {
    CAPTURE(mode);
    std::vector<awq::model::Stream> none;
    awq::model::PipelineOptions opt;
    opt.block.quant = awq::QuantSpec{4, 32, true};
    opt.block.mode = awq::model::SearchMode::parse(mode);
    const auto run = [&] { awq::model::quantize_model<Cpu, Llama>(src, b, calib, none, opt, [](const awq::model::QuantizedBlock&) {}); };
    CHECK_THROWS_WITH_AS(run(), doctest::Contains("overflows: its weights with the folded activation scales exceed fp16's range"),
                         awq::Error);
  }
}

namespace {

/// Hidden states [b.tokens(), 64] whose channels 5, 20 and 41 are 30x the others (the activation
/// outliers AWQ protects): iid N(0, 1) when rank is 0, else a rank-`rank` latent through a fixed
/// mixing plus 0.3 of that noise (tokens that share directions, as a model's do).
std::vector<float> planted_hidden(const awq::model::Batch& b, std::uint64_t seed, int rank = 0) {
  auto v = random_weights(b.tokens(), 64, Dist::normal, seed, 1.0);
  if (rank > 0) {
    const auto z = random_weights(b.tokens(), rank, Dist::normal, seed + 1000, 1.0);
    const auto mix = random_weights(rank, 64, Dist::normal, 7, 1.0 / std::sqrt(static_cast<double>(rank)));
    for (long t = 0; t < b.tokens(); ++t)
      for (long c = 0; c < 64; ++c) {
        double acc = 0;
        for (int r = 0; r < rank; ++r) acc += z[static_cast<std::size_t>(t * rank + r)] * mix[static_cast<std::size_t>(r * 64 + c)];
        v[static_cast<std::size_t>(t * 64 + c)] = acc + 0.3 * v[static_cast<std::size_t>(t * 64 + c)];
      }
  }
  for (long t = 0; t < b.tokens(); ++t)
    for (long c : {5L, 20L, 41L}) v[static_cast<std::size_t>(t * 64 + c)] *= 30.0;
  return std::vector<float>(v.begin(), v.end());
}

/// Relative squared error of the last block's output of tiny_source's stack, AWQ against full
/// precision, on the calibration tokens (planted_hidden(seed)) and on tokens the search never saw
/// (seed + 1), g32.
std::pair<double, double> planted_error(const awq::model::Batch& b, const awq::model::SearchMode& mode, int bits, std::uint64_t seed,
                                        int rank = 0, int layers = -1) {
  const MemorySource src = tiny_source();
  const std::vector<float> calib = planted_hidden(b, seed, rank), held_out = planted_hidden(b, seed + 1, rank);
  std::vector<awq::model::Stream> streams = {{awq::model::StreamKind::fp, b, calib}, {awq::model::StreamKind::awq, b, calib},
                                             {awq::model::StreamKind::fp, b, held_out}, {awq::model::StreamKind::awq, b, held_out}};
  awq::model::PipelineOptions opt;
  opt.block.quant = awq::QuantSpec{bits, 32, true};
  opt.block.mode = mode;
  opt.layers = layers;
  awq::model::quantize_model<Cpu, Llama>(src, b, calib, streams, opt, [](const awq::model::QuantizedBlock&) {});
  const auto rel = [&](std::size_t fp) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < streams[fp].hidden.size(); ++i) {
      const double d = double(streams[fp + 1].hidden[i]) - streams[fp].hidden[i];
      num += d * d;
      den += double(streams[fp].hidden[i]) * streams[fp].hidden[i];
    }
    return num / den;
  };
  return {rel(0), rel(2)};
}

}  // namespace

TEST_CASE("search modes: with planted outlier channels and correlated tokens, the improved mode's output error is at most the reference's") {
  // 4,096 tokens of a rank-8 latent for 64 channels: enough for GPTQ's H = XᵀX, and directions
  // shared across tokens for its feedback to use. Iid tokens (the case below) leave H nearly
  // diagonal: there the modes converge as tokens grow (bench/RESULTS.md, thirty-eighth session).
  const awq::model::Batch b{128, 32};
  for (std::uint64_t seed : {41, 51})
    for (int bits : {3, 4}) {
      CAPTURE(seed);
      CAPTURE(bits);
      const auto ref = planted_error(b, awq::model::SearchMode::reference(), bits, seed, 8);
      const auto imp = planted_error(b, awq::model::SearchMode::improved(), bits, seed, 8);
      MESSAGE("seed " << seed << " W" << bits << " correlated: improved / reference: calibration tokens " << imp.first / ref.first
                      << ", held-out " << imp.second / ref.second);
      CHECK(imp.first <= ref.first);
      CHECK(imp.second <= ref.second);
    }
}

TEST_CASE("search modes: with planted outlier channels, the improved mode's output error stays within 1.25x the reference's") {
  // Iid hidden states (planted_hidden). 512 tokens for 64 channels: GPTQ's H = XᵀX needs many more
  // tokens than channels (real calibration has ~50x); at 64 tokens its feedback fits the
  // calibration noise (held-out error 5x the reference's at W4).
  const awq::model::Batch b{16, 32};
  const auto error = [&](const awq::model::SearchMode& mode, int bits, std::uint64_t seed, int layers = -1) {
    return planted_error(b, mode, bits, seed, 0, layers);
  };
  CHECK(awq::model::BlockOptions{}.mode.is_reference());
  CHECK_FALSE(awq::model::SearchMode::improved().is_reference());
  std::map<int, double> improved_seed41;  // by bits, for the damping checks below
  for (std::uint64_t seed : {41, 51})
    for (int bits : {3, 4}) {
      CAPTURE(seed);
      CAPTURE(bits);
      const auto ref = error(awq::model::SearchMode::reference(), bits, seed);
      for (const std::string name :
           {"sequential", "refine", "improved", "gptq", "gptq-regroup", "gptq-regroup-within", "sequential+gptq-regroup-within"}) {
        CAPTURE(name);
        const auto e = error(awq::model::SearchMode::parse(name), bits, seed);
        MESSAGE("seed " << seed << " W" << bits << " " << name << ": output error / reference's: calibration tokens "
                        << e.first / ref.first << ", held-out " << e.second / ref.second);
        CHECK(e.first != ref.first);  // the variant did change the result
        // On this random 3-block stack the variants move the error by tens of per cent either
        // way: GPTQ's feedback lowers each linear's own output error (tests/test_gptq.cpp), not
        // necessarily the stack's (up to 1.11x the reference's on the calibration tokens and
        // 1.20x on the held-out ones here; 1.14x / 1.24x without fp-target; with groups recomputed
        // beyond the clip bounds, gptq-regroup, 1.48x and 1.29x: outlier channels dominate those
        // groups' ranges), while on SmolLM2's eval split the improved mode recovers 73.5 % /
        // 81.5 % of RTN's gap at W4 / W3 with the CPU defaults, against the reference's 55.6 % /
        // 63.1 % (bench/RESULTS.md). Choosing, per block, whichever of
        // GPTQ and nearest rounding gives the smaller output error on the calibration tokens puts
        // every case here at or under the reference, but on SmolLM2 it cost 3.4 points of RTN's gap
        // at W4: that error is not what held-out text rewards, so the mode does not select by it.
        // What holds here with outliers: no breakdown (the 64-token version of this case had
        // held-out errors of 5x). On the real model's activations (SmolLM2's first blocks, with
        // channels 37x the median) the improved mode is under the reference at both widths, on
        // calibration and held-out tokens (tests/test_llama_model.cpp), and so it is here with
        // correlated tokens and enough of them (the case above).
        if (name == "improved") {
          CHECK(e.first <= 1.25 * ref.first);
          CHECK(e.second <= 1.25 * ref.second);
          if (seed == 41) improved_seed41[bits] = e.first;
        }
      }
    }
  // fp-target: in the first block both streams hold the same tokens, so the target does not move
  // there (the full-precision capture matches the quantized one, folds included); after it, it does.
  auto plain = awq::model::SearchMode::improved();
  plain.fp_target = 0;
  CHECK(error(awq::model::SearchMode::improved(), 4, 41, 1) == error(plain, 4, 41, 1));
  CHECK(error(awq::model::SearchMode::improved(), 4, 41, 2).first != error(plain, 4, 41, 2).first);
  // The damping reaches the feedback: unset, it is the width's (0.05 at W4, 0.5 at W3); another
  // value gives another result.
  CHECK(awq::model::SearchMode::default_gptq_damp(4) == 0.05);
  CHECK(awq::model::SearchMode::default_gptq_damp(8) == 0.05);
  CHECK(awq::model::SearchMode::default_gptq_damp(3) == 0.5);
  CHECK(awq::model::SearchMode::default_gptq_damp(2) == 0.5);
  auto damped = awq::model::SearchMode::improved();
  CHECK(damped.damp_for(3) == 0.5);
  for (const int bits : {3, 4}) {
    CAPTURE(bits);
    damped.gptq_damp = awq::model::SearchMode::default_gptq_damp(bits);
    CHECK(error(damped, bits, 41).first == improved_seed41.at(bits));
    damped.gptq_damp = 0.1;
    CHECK(damped.damp_for(bits) == 0.1);
    CHECK(error(damped, bits, 41).first != improved_seed41.at(bits));
  }
  CHECK_THROWS_WITH_AS(awq::model::SearchMode::parse("fast"), doctest::Contains("'fast' is not a search mode (accepted: reference, improved"),
                       awq::Error);
  // The presets and their joins.
  const auto imp = awq::model::SearchMode::parse("improved");
  CHECK((imp.sequential && imp.alpha_refine == 0 && imp.rounding == awq::model::SearchMode::Rounding::gptq_regroup_within));
  CHECK(imp.gptq_groups() == awq::GptqOptions::Groups::updated_within);
  CHECK(awq::model::SearchMode::parse("gptq").gptq_groups() == awq::GptqOptions::Groups::fixed);
  CHECK(awq::model::SearchMode::parse("gptq-regroup").gptq_groups() == awq::GptqOptions::Groups::updated);
  const auto joined = awq::model::SearchMode::parse("improved+gptq-regroup-within+refine");
  CHECK((joined.sequential && joined.alpha_refine == awq::model::SearchMode::kRefineSteps &&
         joined.rounding == awq::model::SearchMode::Rounding::gptq_regroup_within));
  CHECK_THROWS_WITH_AS(awq::model::SearchMode::parse("improved+gptq"), doctest::Contains("joins two roundings"), awq::Error);
  // Canonical names: what a checkpoint's run identity records.
  CHECK(imp.variants() == "sequential+gptq-regroup-within+fp-target");
  CHECK(joined.variants() == "sequential+refine+gptq-regroup-within+fp-target");
  CHECK(awq::model::SearchMode::reference().variants() == "reference");
  for (const char* n : {"sequential", "refine", "gptq", "gptq-regroup", "gptq-regroup-within", "sequential+gptq", "sequential+gptq+fp-target"})
    CHECK(awq::model::SearchMode::parse(n).variants() == n);
  // fp-target moves GPTQ's target: it needs both streams (sequential) and a gptq rounding.
  CHECK(imp.fp_target == awq::model::SearchMode::kFpTarget);
  CHECK(imp.retargets());
  CHECK_FALSE(awq::model::SearchMode::parse("sequential+gptq").retargets());
  for (const char* n : {"fp-target", "gptq+fp-target", "sequential+fp-target"})
    CHECK_THROWS_WITH_AS(awq::model::SearchMode::parse(n), doctest::Contains("asks for fp-target without sequential calibration and a gptq rounding"),
                         awq::Error);
  auto half = imp;
  half.fp_target = 0.5;
  CHECK(half.variants() == "sequential+gptq-regroup-within+fp-target0.500000");
}

TEST_CASE("fp-target's cross products per input slot against float64, folded as the inputs are") {
  const auto c = kernel_config();
  const long T = 300;
  const std::vector<long> widths = {c.hidden, static_cast<long>(c.n_heads) * c.head_dim, c.hidden, c.intermediate};  // Llama's four slots
  std::vector<awq::model::Tensor<Cpu>> in, fp_in;  // fp_in whole: for the misuse checks
  std::vector<std::vector<float>> xq, xf;
  for (std::size_t i = 0; i < widths.size(); ++i) {
    const long k = widths[i];
    xq.push_back(cast_vec<float>(random_weights(T, k, Dist::outliers, 60 + i, 1.0)));
    auto d = cast_vec<float>(random_weights(T, k, Dist::normal, 70 + i, 0.05));  // the full-precision input: X̃ plus a small error
    for (std::size_t j = 0; j < d.size(); ++j) d[j] += xq.back()[j];
    xf.push_back(d);
    for (auto* v : {&in, &fp_in}) {
      v->emplace_back();
      v->back().rows = T;
      v->back().cols = k;
      v->back().data = Cpu::upload((v == &in ? xq : xf).back().data(), static_cast<std::size_t>(T * k));
    }
  }
  // Two runs of rows, as the pipeline adds them a few sequences at a time: 0..179, then 180..299.
  const long split = 180;
  std::map<int, Cpu::buffer<float>> cross;
  for (const auto& [r0, n] : {std::pair<long, long>{0, split}, {split, T - split}}) {
    std::vector<awq::model::Tensor<Cpu>> part(widths.size());
    for (std::size_t i = 0; i < widths.size(); ++i) {
      part[i].rows = n;
      part[i].cols = widths[i];
      part[i].data = Cpu::upload(xf[i].data() + r0 * widths[i], static_cast<std::size_t>(n * widths[i]));
    }
    awq::model::add_cross_products<Cpu, Llama>(c, in, r0, part, cross);
  }
  REQUIRE(cross.size() == widths.size());
  // Random fold scales per group, as search_block's result holds them.
  awq::model::BlockResult res;
  std::mt19937 rng(80);
  std::uniform_real_distribution<float> u(0.2f, 5.0f);
  std::map<int, std::vector<float>> scales;
  for (const auto& g : Llama::groups(c)) {
    auto& s = res.scales[g.name].scales;
    for (long j = 0; j < widths[static_cast<std::size_t>(g.input)]; ++j) s.push_back(u(rng));
    scales[g.input] = s;
  }
  std::map<int, std::vector<float>> unfolded;
  for (const auto& [slot, e] : cross) unfolded[slot] = std::vector<float>(e.begin(), e.end());
  awq::model::fold_cross<Cpu, Llama>(c, res, cross);
  for (std::size_t i = 0; i < widths.size(); ++i) {
    CAPTURE(i);
    const long k = widths[i];
    // A slot no group folds (o_proj's input where the kv heads are fewer: the reference skips that group) stays.
    const auto& s = scales.count(static_cast<int>(i)) ? scales.at(static_cast<int>(i)) : std::vector<float>(static_cast<std::size_t>(k), 1.0f);
    std::vector<double> e(static_cast<std::size_t>(k * k)), ef(e.size());
    for (long t = 0; t < T; ++t)
      for (long a = 0; a < k; ++a) {
        const double xa = xq[i][static_cast<std::size_t>(t * k + a)];
        for (long b = 0; b < k; ++b)
          e[static_cast<std::size_t>(a * k + b)] +=
              xa * (static_cast<double>(xf[i][static_cast<std::size_t>(t * k + b)]) - xq[i][static_cast<std::size_t>(t * k + b)]);
      }
    for (long a = 0; a < k; ++a)
      for (long b = 0; b < k; ++b) ef[static_cast<std::size_t>(a * k + b)] = e[static_cast<std::size_t>(a * k + b)] / (double(s[static_cast<std::size_t>(a)]) * s[static_cast<std::size_t>(b)]);
    const double err = max_rel(unfolded.at(static_cast<int>(i)), e), err_f = max_rel(std::vector<float>(cross.at(static_cast<int>(i)).begin(), cross.at(static_cast<int>(i)).end()), ef);
    MESSAGE("slot " << i << ": E against float64 " << err << ", folded " << err_f);
    CHECK(err < 1e-5);  // sums of 300 float products in two runs (5e-7 seen); the fold adds two roundings
    CHECK(err_f < 1e-5);
  }
  // Misuse: a missing full-precision input, rows past the captured ones, scales of another width.
  std::map<int, Cpu::buffer<float>> scratch;
  awq::index_t row0 = 0;
  const auto add = [&] { awq::model::add_cross_products<Cpu, Llama>(c, in, row0, fp_in, scratch); };
  fp_in.pop_back();
  CHECK_THROWS_WITH_AS(add(), doctest::Contains("3 full-precision inputs for 4 captured"), awq::Error);
  fp_in.emplace_back();
  fp_in.back().rows = T - 1;
  fp_in.back().cols = c.intermediate;
  fp_in.back().data = Cpu::upload(xf[3].data(), static_cast<std::size_t>((T - 1) * c.intermediate));
  row0 = 2;
  CHECK_THROWS_WITH_AS(add(), doctest::Contains("the full-precision input of slot 3 is 299x160 from row 2, the captured one 300x160"), awq::Error);
  res.scales.at("down").scales.pop_back();
  const auto fold = [&] { awq::model::fold_cross<Cpu, Llama>(c, res, cross); };
  CHECK_THROWS_WITH_AS(fold(), doctest::Contains("159 scales of group 'down'"), awq::Error);
}
