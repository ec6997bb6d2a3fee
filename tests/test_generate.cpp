// The decode engine of examples/llama (KV cache, prefill and one token at a time) on the tiny
// transformers checkpoints of tests/golden/arch_*: its logits against the library's non-cached
// forward (awq::model::Llama + the head) at every position, the W4 engine's greedy continuation
// (its lm_head fp16, the checkpoint's values) against the dequantized-weight fp32 one on a model
// quantized through the driver and exported, the sampler, and what the engine refuses to load.
#include <doctest/doctest.h>

#include <awq/model/arch/llama.hpp>
#include <awq/model/head.hpp>
#include <awq/model/hf_source.hpp>
#include <awq/model/pipeline.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "llama/awq_dir.hpp"
#include "llama/engine.hpp"
#include "llama/export.hpp"
#include "llama/random_llama.hpp"
#include "llama/w4_linear.hpp"
#include "fresh_rng.hpp"
#include "support.hpp"

using namespace awq_test;
using Cpu = awq::backend::cpu;
using awq::model::Llama;
namespace fs = std::filesystem;

namespace {

std::vector<int> golden_ids(const std::string& arch, std::size_t row) {
  const nlohmann::json meta = golden_meta("arch_" + arch);
  std::vector<int> ids;
  for (const auto& t : meta.at("input_ids").at(row)) ids.push_back(t.get<int>());
  return ids;
}

/// Logits [T, vocab] of `ids` by the library's non-cached forward: every block over the whole
/// sequence (awq::model::Llama::forward), then the final norm and the output projection.
std::vector<float> full_logits(const awq::model::HfSource& src, const std::vector<int>& ids) {
  const auto& c = src.config();
  const awq::model::Batch b{1, static_cast<int>(ids.size())};
  std::vector<float> h = awq::model::embed<Llama>(src, ids), next(h.size());
  for (int l = 0; l < c.layers; ++l) {
    const auto blk = awq::model::load_block<Cpu, Llama>(src, c, l);
    Llama::forward<Cpu>(c, b, blk, awq::make_row_major<const float>(h.data(), b.tokens(), c.hidden),
                        awq::make_row_major(next.data(), b.tokens(), c.hidden), nullptr);
    h.swap(next);
  }
  const auto head = awq::model::Head<Llama>::load(src);
  Llama::final_norm<Cpu>(c, head.norm.data(), awq::make_row_major<const float>(h.data(), b.tokens(), c.hidden),
                         awq::make_row_major(next.data(), b.tokens(), c.hidden));
  std::vector<float> logits(static_cast<std::size_t>(b.tokens() * c.vocab), poison());
  Cpu::linear<float>(awq::make_row_major<const float>(next.data(), b.tokens(), c.hidden),
                     awq::make_row_major<const float>(head.lm_head.data(), c.vocab, c.hidden), nullptr,
                     awq::make_row_major(logits.data(), b.tokens(), c.vocab));
  return logits;
}

/// max |a − b| over max |b| of row r of b (logits are compared per position).
double row_err(const std::vector<float>& a, const std::vector<float>& b, std::size_t r, std::size_t v) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < v; ++i) {
    num = std::max(num, std::fabs(static_cast<double>(a[i]) - b[r * v + i]));
    den = std::max(den, std::fabs(static_cast<double>(b[r * v + i])));
  }
  return num / den;
}

/// The golden model with its embedding and projections scaled up: the random init's near-uniform
/// logits settle into repeating one or two tokens; larger weights give a continuation that varies.
struct ScaledSource {
  awq::model::HfSource src;
  const awq::model::ModelConfig& config() const { return src.config(); }
  bool contains(const std::string& n) const { return src.contains(n); }
  std::vector<float> load(const std::string& n, const std::vector<std::int64_t>& shape) const {
    std::vector<float> v = src.load(n, shape);
    const bool proj = n.size() > 12 && n.compare(n.size() - 12, 12, "_proj.weight") == 0;
    const float f = proj ? 12.0f : n == Llama::embed_name ? 4.0f : 1.0f;
    for (float& x : v) x *= f;
    return v;
  }
};

template <class Linear>
std::vector<int> greedy(const awq_example::LlamaWeights<Linear>& w, const std::vector<int>& prompt, int n) {
  awq_example::LlamaEngine<Linear> e(w, static_cast<int>(prompt.size()) + n);
  awq_example::Sampler pick(awq_example::SamplingOptions{});
  return awq_example::generate(e, prompt, n, pick, -1, [](int) {}).tokens;
}

}  // namespace

TEST_SUITE("generation") {
  // fp32 on both sides, only the summation order differs (the decode GEMV splits columns, the
  // attention runs row by row over the cache): a few ulps of the largest logit.
  constexpr double kFpBound = 2e-5;

  TEST_CASE("engine logits equal the non-cached forward's: prompt at once and one token at a time") {
    for (const std::string arch : {"smollm_tied", "llama3_gqa", "qwen2_bias", "mistral"}) {
      CAPTURE(arch);
      const auto src = awq::model::HfSource::open(golden_dir("arch_" + arch) + "/hf");
      const auto& c = src.config();
      const auto w = awq_example::load_fp_weights(src);
      const std::vector<int> ids = golden_ids(arch, 1);
      const std::size_t T = ids.size(), V = static_cast<std::size_t>(c.vocab);
      const std::vector<float> ref = full_logits(src, ids);
      // transformers' own logits of this row (batch row 1 of the golden file) tie the reference down.
      const std::vector<float> hf = read_f32(golden_dir("arch_" + arch) + "/logits.f32", 2 * T * V);
      CHECK(max_rel_err(ref.data(), hf.data() + T * V, T * V) < 1e-5);

      awq_example::LlamaEngine<awq_example::FpLinear> whole(w, static_cast<int>(T));
      const std::vector<float> all = whole.forward(ids, true);
      REQUIRE(all.size() == T * V);
      double worst = 0;
      for (std::size_t t = 0; t < T; ++t)
        worst = std::max(worst, row_err(std::vector<float>(all.begin() + static_cast<std::ptrdiff_t>(t * V), all.begin() + static_cast<std::ptrdiff_t>((t + 1) * V)), ref, t, V));
      CHECK(worst < kFpBound);
      CHECK(whole.position() == static_cast<int>(T));

      // A prefill of 5, then single steps: each step's logits are those of the full forward at its position.
      awq_example::LlamaEngine<awq_example::FpLinear> step(w, static_cast<int>(T));
      std::vector<float> logits = step.forward(std::vector<int>(ids.begin(), ids.begin() + 5));
      double worst_step = row_err(logits, ref, 4, V);
      for (std::size_t t = 5; t < T; ++t) {
        logits = step.forward({ids[t]});
        worst_step = std::max(worst_step, row_err(logits, ref, t, V));
      }
      MESSAGE(arch << ": engine vs non-cached forward, max |Δ| / max |logit|: prompt " << worst << ", steps " << worst_step);
      CHECK(worst_step < kFpBound);
      CHECK_THROWS_WITH_AS(step.forward({ids[0]}), doctest::Contains("exceed the cache of 16 positions"), awq::Error);
    }
  }

  TEST_CASE("W4 engine: the greedy continuation equals the dequantized-weight fp32 one for 32 tokens") {
    const std::string gdir = golden_dir("arch_smollm_tied");
    const ScaledSource src{awq::model::HfSource::open(gdir + "/hf")};
    const auto& c = src.config();
    // AWQ through the driver (per-channel groups: hidden 48 has no 32-group), exported as AutoAWQ GEMM.
    const awq::QuantSpec q{4, awq::kPerChannel, true};
    std::vector<int> calib = golden_ids("smollm_tied", 0), row1 = golden_ids("smollm_tied", 1);
    calib.insert(calib.end(), row1.begin(), row1.end());
    std::vector<awq::model::Stream> none;
    awq::model::PipelineOptions opt;
    opt.block.quant = q;
    const fs::path dir = fs::temp_directory_path() / ("awq_generate_w4_" + std::to_string(::getpid()));
    awq_example::HfExport ex(dir.string(), q);
    awq::model::quantize_model<Cpu, Llama>(src, awq::model::Batch{2, 16}, awq::model::embed<Llama>(src, calib), none, opt,
                                           [&](const awq::model::QuantizedBlock& b) { ex.add_block(b); });
    ex.add_tensor(Llama::embed_name, {c.vocab, c.hidden}, src.load(Llama::embed_name, {c.vocab, c.hidden}));
    ex.add_tensor(Llama::final_norm_name, {c.hidden}, src.load(Llama::final_norm_name, {c.hidden}));
    std::ifstream cf(gdir + "/hf/config.json");
    ex.finish(nlohmann::ordered_json::parse(cf), {});

    const auto qsrc = awq::model::HfSource::open(dir.string());
    const auto w4 = awq_example::load_awq_weights<awq_example::W4Linear>(qsrc);
    const auto fp = awq_example::load_awq_weights<awq_example::FpLinear>(qsrc);
    // The W4 engine's lm_head is fp16 (F16Linear), the dequantized one's fp32: the checkpoint stores
    // the tied embedding in fp16, so both hold the same values and only the summation order differs.
    const std::vector<Eigen::half>& h16 = w4.lm_head->weights();
    const std::vector<float>& h32 = fp.lm_head->weights();
    REQUIRE(h16.size() == h32.size());
    std::size_t exact = 0;
    for (std::size_t i = 0; i < h16.size(); ++i) exact += static_cast<float>(h16[i]) == h32[i];
    CHECK(exact == h32.size());
    const std::vector<int> prompt(row1.begin(), row1.begin() + 8);
    const std::vector<int> want = greedy(fp, prompt, 32), got = greedy(w4, prompt, 32);
    CHECK(got == want);
    const std::set<int> distinct(want.begin(), want.end());
    MESSAGE("continuation: " << distinct.size() << " distinct tokens of 32");
    CHECK(distinct.size() >= 4);  // a continuation worth comparing, not one token repeated

    // The W4 kernel's logits against the dequantized weights' at every position of prompt + continuation.
    std::vector<int> seq = prompt;
    seq.insert(seq.end(), want.begin(), want.end());
    awq_example::LlamaEngine<awq_example::W4Linear> e4(w4, static_cast<int>(seq.size()));
    awq_example::LlamaEngine<awq_example::FpLinear> ef(fp, static_cast<int>(seq.size()));
    const std::vector<float> l4 = e4.forward(seq, true), lf = ef.forward(seq, true);
    double worst = 0;
    const std::size_t V = static_cast<std::size_t>(c.vocab);
    for (std::size_t t = 0; t < seq.size(); ++t)
      worst = std::max(worst, row_err(std::vector<float>(l4.begin() + static_cast<std::ptrdiff_t>(t * V), l4.begin() + static_cast<std::ptrdiff_t>((t + 1) * V)), lf, t, V));
    double margin = 1e30;  // the smallest lead of the chosen token: how far the comparison is from a tie
    for (std::size_t t = prompt.size() - 1; t + 1 < seq.size(); ++t) {
      std::vector<float> r(lf.begin() + static_cast<std::ptrdiff_t>(t * V), lf.begin() + static_cast<std::ptrdiff_t>((t + 1) * V));
      std::partial_sort(r.begin(), r.begin() + 2, r.end(), std::greater<float>());
      margin = std::min(margin, static_cast<double>(r[0] - r[1]) / std::fabs(r[0]));
    }
    MESSAGE("W4 kernel vs dequantized fp32, max |Δ| / max |logit|: " << worst << "; smallest greedy lead / logit: " << margin);
    CHECK(margin > 10 * worst);
    CHECK(worst < 1e-4);
    fs::remove_all(dir);
  }

  TEST_CASE("sampler: greedy, deterministic for a seed, top-p, frequencies follow softmax(logits / T)") {
    const std::vector<float> logits = {0.5f, 2.0f, 1.0f, -1.0f, 2.0f};
    awq_example::Sampler g(awq_example::SamplingOptions{});
    CHECK(g(logits) == 1);  // the first of two equal maxima
    awq_example::Sampler narrow(awq_example::SamplingOptions{1.0f, 0.01f, 3});
    for (int i = 0; i < 20; ++i) CHECK(narrow(logits) == 1);  // top-p keeps only the most likely token
    auto draw = [&](std::uint64_t seed, int n, float temp) {
      awq_example::Sampler s(awq_example::SamplingOptions{temp, 1.0f, seed});
      std::vector<int> out;
      for (int i = 0; i < n; ++i) out.push_back(s(logits));
      return out;
    };
    CHECK(draw(7, 64, 0.8f) == draw(7, 64, 0.8f));
    CHECK(draw(7, 64, 0.8f) != draw(8, 64, 0.8f));
    const int n = 40000;
    const std::vector<int> d = draw(11, n, 2.0f);
    double z = 0;
    for (float l : logits) z += std::exp(l / 2.0);
    for (int v = 0; v < 5; ++v) {
      const double p = std::exp(logits[static_cast<std::size_t>(v)] / 2.0) / z,
                   f = static_cast<double>(std::count(d.begin(), d.end(), v)) / n;
      CHECK(std::fabs(f - p) < 4 * std::sqrt(p * (1 - p) / n));
    }
    CHECK_THROWS_WITH_AS(awq_example::Sampler(awq_example::SamplingOptions{-1.0f, 1.0f, 0}), doctest::Contains("temperature -1"), awq::Error);
    CHECK_THROWS_WITH_AS(awq_example::Sampler(awq_example::SamplingOptions{1.0f, 0.0f, 0}), doctest::Contains("top_p 0"), awq::Error);
  }

  TEST_CASE("generate: NaN or Inf in the weights stop the generation with an error naming the position") {
    // The golden model with one fresh weight poisoned: NaN or ±Inf in a norm or a projection.
    struct PoisonedSource {
      awq::model::HfSource src;
      std::string name;
      std::size_t at;
      float value;
      const awq::model::ModelConfig& config() const { return src.config(); }
      bool contains(const std::string& n) const { return src.contains(n); }
      std::vector<float> load(const std::string& n, const std::vector<std::int64_t>& shape) const {
        std::vector<float> v = src.load(n, shape);
        if (n == name) v[at % v.size()] = value;
        return v;
      }
    };
    AWQ_TEST_FRESH_RNG(rng);
    const auto src = awq::model::HfSource::open(golden_dir("arch_smollm_tied") + "/hf");
    const std::vector<int> prompt = golden_ids("smollm_tied", 0);
    const auto clean = awq_example::load_fp_weights(src);
    CHECK(greedy(clean, prompt, 4).size() == 4);  // the clean model generates
    const char* names[] = {"model.layers.0.input_layernorm.weight", "model.layers.1.mlp.down_proj.weight", "model.norm.weight",
                           "model.layers.0.self_attn.v_proj.weight"};
    const float values[] = {std::nanf(""), std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()};
    for (int trial = 0; trial < 3; ++trial) {
      const PoisonedSource bad{src, names[rng() % 4], static_cast<std::size_t>(rng()), values[rng() % 3]};
      CAPTURE(bad.name);
      CAPTURE(bad.value);
      const auto w = awq_example::load_fp_weights(bad);
      for (const float temperature : {0.0f, 1.0f}) {
        awq_example::LlamaEngine<awq_example::FpLinear> e(w, static_cast<int>(prompt.size()) + 4);
        awq_example::Sampler pick(awq_example::SamplingOptions{temperature, 0.9f, 1});
        std::vector<int> out;
        CHECK_THROWS_WITH_AS(awq_example::generate(e, prompt, 4, pick, -1, [&](int id) { out.push_back(id); }),
                             doctest::Contains(("the model's logits at position " + std::to_string(prompt.size() - 1) +
                                                " are not finite").c_str()),
                             awq::Error);
        CHECK(out.empty());  // nothing was printed
      }
    }
    // A step's logits, checked alone: the first non-finite value is named with its position.
    std::vector<float> logits(64, 0.5f);
    CHECK_NOTHROW(awq_example::check_finite_logits(logits, 3));
    logits[rng() % 64] = std::numeric_limits<float>::infinity();
    CHECK_THROWS_WITH_AS(awq_example::check_finite_logits(logits, 7),
                         doctest::Contains("the model's logits at position 7 are not finite (+Inf for token"), awq::Error);
  }

  TEST_CASE("AWQ directory: quantization_config's group_size must match the groups of the tensors' scales") {
    // One AutoAWQ GEMM linear [n 64, k 256] of a fresh group, in a directory whose config says a group.
    const fs::path dir = fs::temp_directory_path() / ("awq_generate_group_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    AWQ_TEST_FRESH_RNG(rng);
    const awq::index_t n = 64, k = 256, group = awq::index_t{32} << (rng() % 4);  // 32, 64, 128 or 256
    CAPTURE(group);
    const awq_example::RandomAwqLinear lin(n, k, group, rng());
    awq::io::SafetensorsWriter w;
    const std::string name = "model.layers.0.self_attn.q_proj";
    const auto bytes = [](const auto& v) {
      std::vector<std::uint8_t> b(v.size() * sizeof(v[0]));
      std::memcpy(b.data(), v.data(), b.size());
      return b;
    };
    w.add(name + ".qweight", "I32", {k, n / 8}, bytes(lin.qweight));
    w.add(name + ".qzeros", "I32", {k / group, n / 8}, bytes(lin.qzeros));
    w.add(name + ".scales", "F16", {k / group, n}, bytes(lin.scales));
    w.write((dir / "model.safetensors").string());
    const auto with_group = [&](int g) {
      nlohmann::json c = {{"model_type", "llama"}, {"hidden_size", k}, {"intermediate_size", 512}, {"num_attention_heads", 4},
                          {"num_hidden_layers", 1}, {"vocab_size", 64}};
      c["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", g}, {"zero_point", true}, {"version", "gemm"}};
      std::ofstream(dir / "config.json") << c.dump();
      const auto src = awq::model::HfSource::open(dir.string());
      return awq_example::read_awq_gemm(src, name, {n, k});
    };
    CHECK(with_group(static_cast<int>(group)).groups == k / group);
    for (const int g : {32, 64, 128, 256, -1}) {
      if (g == group || (g == -1 && group == k)) continue;  // -1: one group of all k inputs
      CAPTURE(g);
      CHECK_THROWS_WITH_AS(with_group(g),
                           doctest::Contains(("config.json: quantization_config group_size " + std::to_string(g) + " does not match tensor '" +
                                              name + ".scales' (" + std::to_string(k / group) + " groups over 256 inputs: group size " +
                                              std::to_string(group)).c_str()),
                           awq::Error);
    }
    fs::remove_all(dir);
  }

  TEST_CASE("quantization_config: what the engine cannot run is an error that says what it can") {
    const auto check = [](const char* q) {
      nlohmann::json j;
      j["quantization_config"] = nlohmann::json::parse(q);
      awq_example::check_quantization_config(j, "m/config.json");
    };
    CHECK_NOTHROW(check(R"({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": true, "version": "GEMM"})"));
    CHECK_NOTHROW(check(R"({"quant_method": "awq", "w_bit": 4, "q_group_size": 64, "zero_point": true, "version": "gemm", "modules_to_not_convert": null})"));
    const char* bad[][2] = {
        {R"({"quant_method": "gptq", "bits": 4, "group_size": 128, "version": "gemm"})", "quant_method \"gptq\""},
        {R"({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"})", "version \"gemv\""},
        {R"({"quant_method": "awq", "bits": 3, "group_size": 64, "version": "awq_cpp_plain"})", "version \"awq_cpp_plain\""},
        {R"({"quant_method": "awq", "bits": 8, "group_size": 128, "version": "gemm"})", "bits 8"},
        {R"({"quant_method": "awq", "bits": 4, "group_size": 100, "version": "gemm"})", "group_size 100"},
        {R"({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm", "zero_point": false})", "zero_point false"},
        {R"({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm", "modules_to_not_convert": ["mlp"]})",
         "modules_to_not_convert [\"mlp\"]"},
        {R"("awq")", "not an object"}};
    for (const auto& b : bad) {
      CAPTURE(b[0]);
      std::string msg;
      try {
        check(b[0]);
      } catch (const awq::Error& e) {
        msg = e.what();
      }
      CHECK(msg.find("m/config.json: quantization_config ") == 0);
      CHECK(msg.find(b[1]) != std::string::npos);
      CHECK(msg.find("this engine runs AutoAWQ GEMM checkpoints: quant_method \"awq\", version \"gemm\", bits 4") != std::string::npos);
    }
  }
}
