// The OPT architecture policy (awq/model/arch/opt.hpp) against transformers' own forward on a tiny
// random-init checkpoint (tests/golden/arch_opt, read through HfSource): the embedding with learned
// positions, every block, the final LayerNorm, the logits and the perplexity; the exactness of its
// folds (LayerNorm bias, v → out_proj, fc1 → ReLU → fc2); the whole driver against RTN; bad configs.
#include <doctest/doctest.h>

#include <awq/model/arch/llama.hpp>
#include <awq/model/arch/opt.hpp>
#include <awq/model/head.hpp>
#include <awq/model/hf_source.hpp>
#include <awq/model/pipeline.hpp>

#include <cmath>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "support.hpp"

using namespace awq_test;
using Cpu = awq::backend::cpu;
using awq::model::Opt;

namespace {

struct Golden {
  std::string dir = golden_dir("arch_opt");
  nlohmann::json meta = nlohmann::json::parse(std::ifstream(dir + "/meta.json"));
  awq::model::HfSource src = awq::model::HfSource::open(dir + "/hf");
  int B = meta.at("batch"), T = meta.at("seq_len"), L = meta.at("layers"), H = meta.at("hidden"), V = meta.at("vocab");
  std::size_t n = static_cast<std::size_t>(B * T * H);
  std::vector<int> ids() const {
    std::vector<int> v;
    for (const auto& row : meta.at("input_ids"))
      for (const auto& t : row) v.push_back(t.get<int>());
    return v;
  }
};

// The tiny OPT with a few salient channels planted in every LayerNorm weight (x8), so that the
// activations have the outlier channels AWQ exists for; everything else as read from the directory.
struct PlantedSource {
  awq::model::HfSource src;
  const awq::model::ModelConfig& config() const { return src.config(); }
  bool contains(const std::string& n) const { return src.contains(n); }
  std::vector<float> load(const std::string& n, const std::vector<std::int64_t>& shape) const {
    std::vector<float> v = src.load(n, shape);
    if (n.find("layer_norm.weight") != std::string::npos && n.find("decoder.final") == std::string::npos)
      for (std::size_t c : {3u, 17u, 40u}) v[c] *= 8.0f;
    return v;
  }
};

std::vector<int> random_tokens(std::size_t n, int vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, vocab - 1);
  std::vector<int> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

double rel_mse(const std::vector<float>& y, const std::vector<float>& ref) {
  double e = 0, r = 0;
  for (std::size_t i = 0; i < y.size(); ++i) e += std::pow(double(y[i]) - ref[i], 2), r += std::pow(double(ref[i]), 2);
  return e / r;
}

}  // namespace

TEST_SUITE("model API") {
  // Bound 1e-5 relative to the largest value: our fp32 forward against transformers' float64 one on
  // the same fp32 weights; fp32 rounding through LayerNorm, a 64-wide attention and a 96-wide MLP
  // stays near 1e-6 (the Llama goldens use the same bound).
  TEST_CASE("OPT (LayerNorm with bias, learned positions, ReLU) forward matches transformers") {
    const Golden g;
    const auto& c = g.src.config();
    Opt::check(c);
    REQUIRE(c.hidden == g.H);
    REQUIRE(c.layers == g.L);
    REQUIRE(c.vocab == g.V);
    CHECK(c.norm_eps == 1e-5f);
    CHECK(c.tied_embeddings);
    CHECK(c.qkv_bias);
    CHECK(c.o_bias);
    CHECK(c.mlp_bias);
    CHECK(c.max_positions == 128);
    CHECK(c.intermediate == 96);
    const awq::model::Batch b{g.B, g.T};
    const auto lin = read_f32(g.dir + "/layer_in.f32", g.n * static_cast<std::size_t>(g.L)),
               lout = read_f32(g.dir + "/layer_out.f32", g.n * static_cast<std::size_t>(g.L));
    // Token embedding + positions (restarting in each sequence) gives the first layer's input.
    const std::vector<int> ids = g.ids();
    const auto emb = awq::model::embed<Opt>(g.src, ids, g.T);
    CHECK(max_rel_err(emb.data(), lin.data(), g.n) < 1e-6);
    std::vector<float> out(g.n), chained = emb, next(g.n);
    for (int l = 0; l < g.L; ++l) {
      const auto blk = awq::model::load_block<Cpu, Opt>(g.src, c, l);
      std::fill(out.begin(), out.end(), poison());
      Opt::forward<Cpu>(c, b, blk, awq::make_row_major<const float>(lin.data() + l * g.n, g.B * g.T, g.H),
                        awq::make_row_major(out.data(), g.B * g.T, g.H), nullptr);
      const double e = max_rel_err(out.data(), lout.data() + l * g.n, g.n);
      MESSAGE("opt layer " << l << ": max |ours - transformers| / max |transformers| = " << e);
      CHECK(e < 1e-5);
      Opt::forward<Cpu>(c, b, blk, awq::make_row_major<const float>(chained.data(), g.B * g.T, g.H),
                        awq::make_row_major(next.data(), g.B * g.T, g.H), nullptr);
      std::swap(chained, next);
    }
    CHECK(max_rel_err(chained.data(), lout.data() + (g.L - 1) * g.n, g.n) < 1e-5);

    // The final LayerNorm (with its bias) and the tied output projection.
    const auto head = awq::model::Head<Opt>::load(g.src);
    REQUIRE(head.norm_bias.size() == static_cast<std::size_t>(g.H));
    std::vector<float> fin(g.n, poison()), logits(static_cast<std::size_t>(g.B * g.T * g.V), poison());
    head.final_norm(awq::make_row_major<const float>(lout.data() + (g.L - 1) * g.n, g.B * g.T, g.H), awq::make_row_major(fin.data(), g.B * g.T, g.H));
    CHECK(max_rel_err(fin.data(), read_f32(g.dir + "/final.f32", g.n).data(), g.n) < 1e-5);
    Cpu::linear<float>(awq::make_row_major<const float>(fin.data(), g.B * g.T, g.H),
                       awq::make_row_major<const float>(head.lm_head.data(), g.V, g.H), nullptr,
                       awq::make_row_major(logits.data(), g.B * g.T, g.V));
    const auto ref_logits = read_f32(g.dir + "/logits.f32", logits.size());
    CHECK(max_rel_err(logits.data(), ref_logits.data(), logits.size()) < 1e-5);

    // Perplexity of the inputs through our whole model against the one of transformers' logits.
    double nll = 0;
    long predicted = 0;
    for (int t = 0; t < g.B * g.T; ++t) {
      if (t % g.T == g.T - 1) continue;
      const float* row = ref_logits.data() + static_cast<std::size_t>(t) * g.V;
      double mx = row[0], sum = 0;
      for (int v = 1; v < g.V; ++v) mx = std::max(mx, double(row[v]));
      for (int v = 0; v < g.V; ++v) sum += std::exp(double(row[v]) - mx);
      nll -= double(row[ids[static_cast<std::size_t>(t + 1)]]) - mx - std::log(sum);
      ++predicted;
    }
    const auto p = head.perplexity(chained, ids, g.T);
    CHECK(p.predicted == predicted);
    MESSAGE("opt perplexity: ours " << p.ppl << ", transformers' logits " << std::exp(nll / double(predicted)));
    CHECK(std::fabs(p.nll - nll / double(predicted)) < 1e-5 * (nll / double(predicted)));
  }

  // Folding is exact in real arithmetic: the folded, unquantized block computes the same function.
  // Bound 1e-5 as above (fp32 rounding of the scaled weights and of the forward).
  TEST_CASE("OPT folds (LayerNorm weight and bias, v -> out_proj, fc1 -> ReLU -> fc2) keep the block's function") {
    const PlantedSource src{awq::model::HfSource::open(golden_dir("arch_opt") + "/hf")};
    const auto& c = src.config();
    const awq::model::Batch b{4, 32};
    const auto x = awq::model::embed<Opt>(src, random_tokens(static_cast<std::size_t>(b.tokens()), c.vocab, 11), b.seq_len);
    auto blk = awq::model::load_block<Cpu, Opt>(src, c, 0);
    const auto orig = blk.clone();
    std::vector<float> y0(x.size(), poison()), y1(x.size(), poison());
    std::vector<awq::model::Tensor<Cpu>> in;
    const auto X = awq::make_row_major<const float>(x.data(), b.tokens(), c.hidden);
    Opt::forward<Cpu>(c, b, blk, X, awq::make_row_major(y0.data(), b.tokens(), c.hidden), &in);
    std::vector<awq::model::Tensor<Cpu>> in_only;  // the capture alone: the same inputs, bit for bit
    Opt::capture<Cpu>(c, b, blk, X, in_only);
    REQUIRE(in_only.size() == in.size());
    for (std::size_t s = 0; s < in.size(); ++s) CHECK((in_only[s].rows == in[s].rows && in_only[s].cols == in[s].cols && in_only[s].data == in[s].data));
    awq::model::BlockOptions opt;
    opt.quant = awq::QuantSpec{4, 32, true};
    opt.clip = false;
    // qkv and fc1 searched; out and fc2 given scales far from 1, so that the folds into v_proj's
    // and fc1's rows and biases (through the ReLU) certainly happen.
    awq::model::GivenResults given;
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    for (const auto& [gname, n] : {std::pair<std::string, int>{"out", c.hidden}, {"fc2", c.intermediate}})
      for (int i = 0; i < n; ++i) given.scales[gname].push_back(std::exp2(u(rng)));
    const auto res = awq::model::search_block<Cpu, Opt>(c, b, blk, in, opt, &given);
    for (const std::string gname : {"qkv", "fc1"}) MESSAGE("opt group " << gname << ": best alpha " << res.scales.at(gname).best_alpha);
    CHECK(res.scales.at("qkv").best_alpha > 0);  // the planted channels make scaling pay
    CHECK(res.scales.at("fc1").best_alpha > 0);
    for (const char* t : {"self_attn_layer_norm.bias", "final_layer_norm.bias", "self_attn.v_proj.bias", "fc1.bias"})
      CHECK_MESSAGE(blk.host(t) != orig.host(t), t, " was not folded into");
    Opt::forward<Cpu>(c, b, blk, X, awq::make_row_major(y1.data(), b.tokens(), c.hidden), nullptr);
    const double e = max_rel_err(y1.data(), y0.data(), y0.size());
    MESSAGE("opt folded block vs original: " << e);
    CHECK(e < 1e-5);
  }

  TEST_CASE("OPT through the driver: quantize_model on the HF directory, AWQ's output error below RTN's") {
    for (const bool planted : {false, true}) {
      const auto hf = awq::model::HfSource::open(golden_dir("arch_opt") + "/hf");
      const PlantedSource src{hf};
      const auto& c = src.config();
      const awq::model::Batch calib{8, 32}, eval{4, 32};
      const auto embed = [&](const std::vector<int>& t, int L) {
        return planted ? awq::model::embed<Opt>(src, t, L) : awq::model::embed<Opt>(hf, t, L);
      };
      const auto calib_h = embed(random_tokens(static_cast<std::size_t>(calib.tokens()), c.vocab, 21), calib.seq_len);
      const auto eval_h = embed(random_tokens(static_cast<std::size_t>(eval.tokens()), c.vocab, 22), eval.seq_len);
      std::vector<awq::model::Stream> streams = {{awq::model::StreamKind::fp, eval, eval_h},
                                                 {awq::model::StreamKind::rtn, eval, eval_h},
                                                 {awq::model::StreamKind::awq, eval, eval_h}};
      awq::model::PipelineOptions opt;
      opt.block.quant = awq::QuantSpec{3, 32, true};
      std::vector<awq::model::QuantizedBlock> blocks;
      const auto sink = [&](const awq::model::QuantizedBlock& qb) { blocks.push_back(qb); };
      const auto r = planted ? awq::model::quantize_model<Cpu, Opt>(src, calib, calib_h, streams, opt, sink)
                             : awq::model::quantize_model<Cpu, Opt>(hf, calib, calib_h, streams, opt, sink);
      REQUIRE(r.blocks == c.layers);
      REQUIRE(blocks.size() == static_cast<std::size_t>(c.layers));
      for (const auto& qb : blocks) {
        CHECK(qb.prefix == "model.decoder.layers." + std::to_string(qb.index) + ".");
        CHECK(qb.linears.size() == 6);
        CHECK(qb.linears.count("fc2") == 1);
        CHECK(qb.tensors.count("self_attn_layer_norm.bias") == 1);  // folded, handed to the sink
        CHECK(qb.tensors.count("fc1.bias") == 1);
        CHECK(qb.result.clips.size() == 4);
      }
      // The fp stream is the plain forward of the original blocks.
      std::vector<float> ref = eval_h, next(ref.size());
      for (int l = 0; l < c.layers; ++l) {
        const auto blk = planted ? awq::model::load_block<Cpu, Opt>(src, c, l) : awq::model::load_block<Cpu, Opt>(hf, c, l);
        Opt::forward<Cpu>(c, eval, blk, awq::make_row_major<const float>(ref.data(), eval.tokens(), c.hidden),
                          awq::make_row_major(next.data(), eval.tokens(), c.hidden), nullptr);
        std::swap(ref, next);
      }
      CHECK(max_rel_err(streams[0].hidden.data(), ref.data(), ref.size()) < 1e-6);
      const double rtn = rel_mse(streams[1].hidden, streams[0].hidden), aw = rel_mse(streams[2].hidden, streams[0].hidden);
      MESSAGE("opt " << std::string(planted ? "with planted outlier channels" : "as stored") << ", W3 g32, output of " << c.layers
                     << " blocks on held-out tokens: relative MSE RTN " << rtn << ", AWQ " << aw);
      CHECK(rtn > 0);
      CHECK(aw <= rtn);
      if (planted) CHECK(aw < 0.7 * rtn);
    }
  }

  TEST_CASE("OPT configs: what the policy does not support is an awq::Error naming the value") {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(golden_dir("arch_opt") + "/hf/config.json"));
    const auto cfg = [&](const char* key, const nlohmann::json& v) {
      nlohmann::json k = j;
      k[key] = v;
      return awq::model::ModelConfig::from_hf(k, "opt/config.json");
    };
    CHECK_NOTHROW(Opt::check(awq::model::ModelConfig::from_hf(j, "opt/config.json")));
    CHECK_THROWS_WITH_AS(Opt::check(cfg("do_layer_norm_before", false)), doctest::Contains("do_layer_norm_before is false"), awq::Error);
    CHECK_THROWS_WITH_AS(Opt::check(cfg("word_embed_proj_dim", 32)),
                         doctest::Contains("word_embed_proj_dim 32 differs from hidden_size 64"), awq::Error);
    CHECK_THROWS_WITH_AS(Opt::check(cfg("activation_function", "gelu")), doctest::Contains("activation_function 'gelu'"), awq::Error);
    CHECK_THROWS_WITH_AS(Opt::check(cfg("model_type", "llama")), doctest::Contains("'llama' is not supported (supported: opt)"), awq::Error);
    CHECK_THROWS_WITH_AS(cfg("ffn_dim", "96"), doctest::Contains("'ffn_dim' is missing or not an integer"), awq::Error);
    // No bias anywhere: the block lists none, and the LayerNorms keep theirs.
    const auto nb = awq::model::Opt::block_tensors(cfg("enable_bias", false));
    CHECK(nb.size() == 10);
    CHECK(!cfg("enable_bias", false).mlp_bias);
    // OPT's positions are learned: a sequence longer than the table is refused, and so is a
    // token count that is not a whole number of sequences.
    const auto src = awq::model::HfSource::open(golden_dir("arch_opt") + "/hf");
    CHECK_THROWS_WITH_AS(awq::model::embed<Opt>(src, std::vector<int>(129, 5)),
                         doctest::Contains("sequences of 129 tokens exceed the 128 learned positions"), awq::Error);
    CHECK_THROWS_WITH_AS(awq::model::embed<Opt>(src, std::vector<int>(30, 5), 16), doctest::Contains("30 tokens are not sequences of seq_len 16"),
                         awq::Error);
    // The Llama policy still refuses OPT.
    CHECK_THROWS_WITH_AS(awq::model::Llama::check(src.config()), doctest::Contains("supported: llama, mistral, qwen2"), awq::Error);
  }
}
