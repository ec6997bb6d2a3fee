// The model API (awq/model): the Llama-family forwards against transformers' own on tiny
// random-init checkpoints (tests/golden/arch_*, HF directories read through HfSource), the
// configuration and source errors, and the streaming bound on host memory.
#include <doctest/doctest.h>

#include <awq/io/safetensors.hpp>
#include <awq/model/arch/llama.hpp>
#include <awq/model/finalize.hpp>
#include <awq/model/head.hpp>
#include <awq/model/hf_source.hpp>
#include <awq/model/pipeline.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <spawn.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AWQ_TEST_HAS_ASAN 1
#endif
#endif
#ifndef AWQ_TEST_HAS_ASAN
#define AWQ_TEST_HAS_ASAN 0
#endif
#include "fresh_rng.hpp"
#include "support.hpp"

extern char** environ;

using namespace awq_test;
using Cpu = awq::backend::cpu;
using awq::model::Llama;
namespace fs = std::filesystem;

namespace {

// One fixed AWQ run over a Hugging Face directory through the library's driver, its result hashed
// block by block (FNV-1a over codes, zeros, scales and folded tensors, so nothing accumulates):
// what the streaming test runs both in a measured child process and in the test process.
std::uint64_t quantize_hf_dir(const std::string& dir) {
  const auto src = awq::model::HfSource::open(dir);
  const auto& c = src.config();
  // 128 tokens: with fewer, some of the 768 MLP channels are near zero on every token, and their
  // activation scales, folded into up_proj, overflow its fp16 scales (an error since finalize checks).
  const awq::model::Batch calib{4, 32};
  std::vector<float> h(static_cast<std::size_t>(calib.tokens() * c.hidden));
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<float>(static_cast<int>((i * 2654435761u) % 2001) - 1000) / 500.0f;
  std::vector<awq::model::Stream> none;
  awq::model::PipelineOptions opt;
  opt.block.quant = awq::QuantSpec{4, 128, true};
  std::uint64_t hash = 1469598103934665603ull;
  const auto mix = [&](const void* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) hash = (hash ^ static_cast<const std::uint8_t*>(p)[i]) * 1099511628211ull;
  };
  awq::model::quantize_model<awq::backend::cpu, awq::model::Llama>(src, calib, h, none, opt, [&](const awq::model::QuantizedBlock& b) {
    for (const auto& [n, q] : b.linears) {
      mix(q.codes.data(), q.codes.size());
      mix(q.zeros.data(), q.zeros.size());
      mix(q.scales.data(), q.scales.size() * sizeof(q.scales[0]));
    }
    for (const auto& [n, v] : b.tensors) mix(v.data(), v.size() * sizeof(float));
  });
  return hash;
}

void check_arch(const std::string& name) {
  const std::string dir = golden_dir("arch_" + name);
  std::ifstream mf(dir + "/meta.json");
  const auto meta = nlohmann::json::parse(mf);
  const auto src = awq::model::HfSource::open(dir + "/hf");
  const auto& c = src.config();
  Llama::check(c);
  const int B = meta.at("batch"), T = meta.at("seq_len"), L = meta.at("layers"), H = meta.at("hidden"), V = meta.at("vocab");
  REQUIRE(c.hidden == H);
  REQUIRE(c.layers == L);
  REQUIRE(c.vocab == V);
  const awq::model::Batch b{B, T};
  const std::size_t n = static_cast<std::size_t>(B * T * H);
  const auto lin = read_f32(dir + "/layer_in.f32", n * static_cast<std::size_t>(L)),
             lout = read_f32(dir + "/layer_out.f32", n * static_cast<std::size_t>(L));
  // The embedding gives the first layer's input.
  std::vector<int> ids;
  for (const auto& row : meta.at("input_ids"))
    for (const auto& t : row) ids.push_back(t.get<int>());
  const auto emb = awq::model::embed<Llama>(src, ids);
  CHECK(max_rel_err(emb.data(), lin.data(), n) < 1e-6);
  std::vector<float> out(n);
  for (int l = 0; l < L; ++l) {
    const auto blk = awq::model::load_block<Cpu, Llama>(src, c, l);
    Llama::forward<Cpu>(c, b, blk, awq::make_row_major<const float>(lin.data() + l * n, B * T, H), awq::make_row_major(out.data(), B * T, H),
                        nullptr);
    const double e = max_rel_err(out.data(), lout.data() + l * n, n);
    MESSAGE(name << " layer " << l << ": max |ours - transformers| / max |transformers| = " << e);
    CHECK(e < 1e-5);
  }
  const auto head = awq::model::Head<Llama>::load(src);
  std::vector<float> fin(n), logits(static_cast<std::size_t>(B * T * V));
  Llama::final_norm<Cpu>(c, head.norm.data(), awq::make_row_major<const float>(lout.data() + (L - 1) * n, B * T, H),
                         awq::make_row_major(fin.data(), B * T, H));
  CHECK(max_rel_err(fin.data(), read_f32(dir + "/final.f32", n).data(), n) < 1e-5);
  Cpu::linear<float>(awq::make_row_major<const float>(fin.data(), B * T, H), awq::make_row_major<const float>(head.lm_head.data(), V, H),
                     nullptr, awq::make_row_major(logits.data(), B * T, V));
  CHECK(max_rel_err(logits.data(), read_f32(dir + "/logits.f32", logits.size()).data(), logits.size()) < 1e-5);
}

}  // namespace

TEST_SUITE("model API") {
  TEST_CASE("search scratch: grown_as keeps narrower values in a wider buffer, the CPU's activations are fp32") {
    // Bytes (which may alias any object) in a float buffer: 7 need 2 floats.
    std::vector<float> buf;
    unsigned char* p = awq::model::grown_as<unsigned char>(buf, 7);
    CHECK(buf.size() == 2);
    for (int i = 0; i < 7; ++i) p[i] = static_cast<unsigned char>(100 + i);
    CHECK(awq::model::grown_as<unsigned char>(buf, 8) == p);  // fits: no regrowth, values kept
    CHECK(p[6] == 106);
    CHECK(static_cast<void*>(awq::model::grown_as<float>(buf, 2)) == static_cast<void*>(p));
    awq::model::grown_as<unsigned char>(buf, 9);
    CHECK(buf.size() == 3);
    int calls = 0;
    awq::backend::cpu::with_activation([&](auto tag) {
      CHECK(std::is_same_v<typename decltype(tag)::type, float>);
      ++calls;
    });
    CHECK(calls == 1);
  }

  TEST_CASE("finalize: the quantizer's codes are kept and only the scale is rounded to fp16") {
    // Groups clamped symmetrically to [-c, c] (what the clip search leaves): ±c sits on a
    // rounding tie, c / scale = 3.5 at 3 bits, so re-deriving codes with the fp16 scale would
    // move them to codes the search never judged.
    const awq::QuantSpec q{3, 64, true};
    const awq::index_t rows = 64, cols = 128;
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> w(static_cast<std::size_t>(rows * cols));
    for (awq::index_t r = 0; r < rows; ++r) {
      const float c = 0.5f + 0.01f * static_cast<float>(r);
      for (awq::index_t i = 0; i < cols; ++i) w[static_cast<std::size_t>(r * cols + i)] = std::clamp(nd(rng), -c, c);
      for (awq::index_t i : {0, 64}) {  // both ends present in every group
        w[static_cast<std::size_t>(r * cols + i)] = c;
        w[static_cast<std::size_t>(r * cols + i + 1)] = -c;
      }
    }
    const std::vector<float> w0 = w;
    std::vector<std::uint8_t> codes(w.size());
    std::vector<float> s(static_cast<std::size_t>(rows * 2)), z(s.size());
    awq::quantize(q, awq::make_row_major<const float>(w0.data(), rows, cols), awq::make_row_major(codes.data(), rows, cols),
                  {{}, awq::make_row_major(s.data(), rows, 2), awq::make_row_major(z.data(), rows, 2)});
    const auto f = awq::model::finalize_linear(awq::make_row_major(w.data(), rows, cols), q);
    CHECK(f.codes == codes);
    int rederived_differs = 0;
    for (awq::index_t r = 0; r < rows; ++r)
      for (awq::index_t i = 0; i < cols; ++i) {
        const std::size_t gi = static_cast<std::size_t>(r * 2 + i / 64), ci = static_cast<std::size_t>(r * cols + i);
        const float s16 = static_cast<float>(Eigen::half(s[gi]));
        CHECK(static_cast<float>(f.scales[gi]) == s16);
        CHECK(f.zeros[gi] == static_cast<std::uint8_t>(z[gi]));
        CHECK(w[ci] == (static_cast<float>(codes[ci]) - z[gi]) * s16);
        const float c16 = std::clamp(std::nearbyint(w0[ci] / s16) + z[gi], 0.0f, 7.0f);
        rederived_differs += c16 != static_cast<float>(codes[ci]);
      }
    CHECK(rederived_differs > 0);  // the case exercises the ties it is about
  }

  TEST_CASE("Llama 3 (GQA, untied lm_head) forward matches transformers") { check_arch("llama3_gqa"); }
  TEST_CASE("SmolLM (tied embeddings) forward matches transformers") { check_arch("smollm_tied"); }
  TEST_CASE("Mistral (head_dim given) forward matches transformers") { check_arch("mistral"); }
  TEST_CASE("Qwen2 (q/k/v biases, sharded, rope_parameters) forward matches transformers") {
    check_arch("qwen2_bias");
    const auto c = awq::model::HfSource::open(golden_dir("arch_qwen2_bias") + "/hf").config();
    CHECK(c.qkv_bias);
    CHECK(c.rope_theta == 1e6f);
    CHECK(c.tied_embeddings);
  }

  TEST_CASE("configs and sources: bad input is an awq::Error naming file and tensor") {
    const fs::path tmp = fs::temp_directory_path() / ("awq_model_err_" + std::to_string(::getpid()));
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    CHECK_THROWS_WITH_AS(awq::model::HfSource::open(tmp.string()), doctest::Contains("has no config.json"), awq::Error);
    // OPT is read but not a Llama-family architecture: the policy says which are.
    const auto opt = awq::model::HfSource::open(golden_dir("arch_opt") + "/hf");
    CHECK_THROWS_WITH_AS(Llama::check(opt.config()), doctest::Contains("supported: llama, mistral, qwen2"), awq::Error);
    // A copy of the Llama 3 directory with one tensor of the wrong shape, then missing.
    const std::string src_dir = golden_dir("arch_llama3_gqa") + "/hf";
    fs::copy_file(src_dir + "/config.json", tmp / "config.json");
    const auto orig = awq::io::SafetensorsFile::open(src_dir + "/model.safetensors");
    auto write_without = [&](const std::string& skip, bool reshape) {
      awq::io::SafetensorsWriter w;
      for (const auto& n : orig.names()) {
        auto t = orig.tensor(n);
        if (n == skip && !reshape) continue;
        if (n == skip) t.shape = {t.shape[1], t.shape[0]};
        w.add(n, t.dtype, t.shape, t.data);
      }
      w.write((tmp / "model.safetensors").string());
    };
    const std::string bad = "model.layers.1.self_attn.k_proj.weight";
    const auto load1 = [](const awq::model::HfSource& hs) { return awq::model::load_block<Cpu, Llama>(hs, hs.config(), 1); };
    write_without(bad, true);
    auto s = awq::model::HfSource::open(tmp.string());
    CHECK_THROWS_WITH_AS(load1(s),
                         doctest::Contains("model.safetensors: tensor 'model.layers.1.self_attn.k_proj.weight' has shape [64, 32], expected [32, 64]"),
                         awq::Error);
    write_without(bad, false);
    s = awq::model::HfSource::open(tmp.string());
    CHECK_THROWS_WITH_AS(load1(s),
                         doctest::Contains("tensor 'model.layers.1.self_attn.k_proj.weight' is missing"), awq::Error);
    // A config without a required field.
    std::ofstream(tmp / "config.json") << R"({"model_type": "llama", "hidden_size": 64})";
    CHECK_THROWS_WITH_AS(awq::model::HfSource::open(tmp.string()), doctest::Contains("'intermediate_size' is missing"), awq::Error);
    fs::remove_all(tmp);
  }

  TEST_CASE("configs: config.json fields that change the maths are checked, not ignored or defaulted") {
    const nlohmann::json base = nlohmann::json::parse(std::ifstream(golden_dir("arch_llama3_gqa") + "/hf/config.json"));
    const auto with = [&](const char* key, const nlohmann::json& v) {
      nlohmann::json k = base;
      k[key] = v;
      return awq::model::ModelConfig::from_hf(k, "m/config.json");
    };
    const auto c = awq::model::ModelConfig::from_hf(base, "m/config.json");
    CHECK_NOTHROW(Llama::check(c));
    CHECK(c.max_positions == 128);
    CHECK(c.bos_token == 1);
    CHECK(c.eos_token == 2);
    // Fresh valid values are read as given.
    AWQ_TEST_FRESH_RNG(rng);
    const double theta = std::uniform_real_distribution<double>(1e3, 1e7)(rng);
    const int eos = std::uniform_int_distribution<int>(0, c.vocab - 1)(rng);
    CHECK(with("rope_theta", theta).rope_theta == static_cast<float>(theta));
    CHECK(with("eos_token_id", eos).eos_token == eos);
    CHECK(with("eos_token_id", {eos, 1}).eos_token == eos);
    CHECK(with("rope_scaling", nullptr).rope_theta == 500000.0f);
    // Keys no shipped policy reads stay at hand for an engine's own (here a fresh value).
    const int rotary_dim = std::uniform_int_distribution<int>(1, 64)(rng);
    CHECK(with("rotary_dim", rotary_dim).raw.at("rotary_dim").get<int>() == rotary_dim);
    CHECK(c.raw == base);
    CHECK_NOTHROW(Llama::check(with("hidden_act", "silu")));

    // rope_theta that is not a number: it used to fall back to 10000.
    for (const char* v : {"100000", "abc"})
      CHECK_THROWS_WITH_AS(with("rope_theta", v), doctest::Contains((std::string("m/config.json: 'rope_theta' is \"") + v + "\", not a number").c_str()),
                           awq::Error);
    CHECK_THROWS_WITH_AS(with("rope_parameters", {{"rope_theta", "1e4"}, {"rope_type", "default"}}),
                         doctest::Contains("'rope_parameters.rope_theta' is \"1e4\", not a number"), awq::Error);
    // An activation other than SwiGLU's silu: it used to run as silu.
    for (const char* act : {"gelu", "relu", "gelu_pytorch_tanh"})
      CHECK_THROWS_WITH_AS(Llama::check(with("hidden_act", act)),
                           doctest::Contains((std::string("hidden_act '") + act + "' is not supported (accepted: silu)").c_str()), awq::Error);
    CHECK_THROWS_WITH_AS(with("hidden_act", 3), doctest::Contains("'hidden_act' is 3, not a string"), awq::Error);
    // RoPE scaling (Llama 3.1 / 3.2's "llama3", linear, …): not implemented, so refused.
    const nlohmann::json llama3 = {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                                   {"original_max_position_embeddings", 8192}};
    CHECK_THROWS_WITH_AS(with("rope_scaling", llama3), doctest::Contains("rope scaling (type llama3) is not supported (accepted: none)"), awq::Error);
    CHECK_THROWS_WITH_AS(with("rope_scaling", {{"type", "linear"}, {"factor", 2.0}}), doctest::Contains("rope scaling (type linear)"), awq::Error);
    CHECK_THROWS_WITH_AS(with("rope_parameters", {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0}}),
                         doctest::Contains("'rope_parameters' is"), awq::Error);
    // Context: absent is "not given"; zero or negative is no context at all.
    for (const int n : {0, -5})
      CHECK_THROWS_WITH_AS(with("max_position_embeddings", n),
                           doctest::Contains(("'max_position_embeddings' is " + std::to_string(n) + ", out of range").c_str()), awq::Error);
    CHECK_THROWS_WITH_AS(with("max_position_embeddings", "2048"), doctest::Contains("'max_position_embeddings' is missing or not an integer"),
                         awq::Error);
    // bos/eos ids: integers inside the vocabulary (128 here).
    const int outside = std::uniform_int_distribution<int>(c.vocab, 99999999)(rng);
    CHECK_THROWS_WITH_AS(with("eos_token_id", "x"), doctest::Contains("'eos_token_id' is \"x\", not a token id (accepted: an integer from 0 to 127"),
                         awq::Error);
    CHECK_THROWS_WITH_AS(with("eos_token_id", outside), doctest::Contains(("'eos_token_id' is " + std::to_string(outside) + ", not a token id").c_str()),
                         awq::Error);
    CHECK_THROWS_WITH_AS(with("eos_token_id", {2, outside}), doctest::Contains(("'eos_token_id[1]' is " + std::to_string(outside)).c_str()), awq::Error);
    CHECK_THROWS_WITH_AS(with("eos_token_id", nlohmann::json::array()), doctest::Contains("'eos_token_id' is []"), awq::Error);
    CHECK_THROWS_WITH_AS(with("bos_token_id", -1), doctest::Contains("'bos_token_id' is -1, not a token id"), awq::Error);
    CHECK_THROWS_WITH_AS(with("bos_token_id", 2.0), doctest::Contains("'bos_token_id' is 2.0, not a token id"), awq::Error);
    // Sizes wider than an int: the value as read, not a narrowed one (2^32 + 64 would read as 64).
    CHECK_THROWS_WITH_AS(with("num_hidden_layers", 99999999999LL),
                         doctest::Contains("'num_hidden_layers' is 99999999999, out of range (accepted: an integer from 1 to 2147483647)"),
                         awq::Error);
    CHECK_THROWS_WITH_AS(with("hidden_size", (1LL << 32) + 64), doctest::Contains("'hidden_size' is 4294967360, out of range"), awq::Error);
    CHECK_THROWS_WITH_AS(with("head_dim", -16), doctest::Contains("'head_dim' is -16, out of range"), awq::Error);
    // Switches of the wrong type used to read as their default.
    CHECK_THROWS_WITH_AS(with("tie_word_embeddings", "true"), doctest::Contains("'tie_word_embeddings' is \"true\", not true or false"),
                         awq::Error);
    CHECK_THROWS_WITH_AS(with("model_type", 7), doctest::Contains("'model_type' is missing or not a string (7)"), awq::Error);
  }

  TEST_CASE("HfSource: more layers than stored, and an AWQ output given as the model, are named as such") {
    const fs::path tmp = fs::temp_directory_path() / ("awq_model_src_" + std::to_string(::getpid()));
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    const std::string gold = golden_dir("arch_llama3_gqa") + "/hf";
    fs::copy_file(gold + "/model.safetensors", tmp / "model.safetensors");
    nlohmann::json cfg = nlohmann::json::parse(std::ifstream(gold + "/config.json"));
    const auto write_config = [&] { std::ofstream(tmp / "config.json") << cfg.dump(); };
    write_config();
    CHECK(awq::model::HfSource::open(tmp.string()).config().layers == 2);
    // num_hidden_layers past the two stored blocks: said at open, not as a tensor missing later.
    AWQ_TEST_FRESH_RNG(rng);
    const int layers = std::uniform_int_distribution<int>(3, 100000)(rng);
    cfg["num_hidden_layers"] = layers;
    write_config();
    CHECK_THROWS_WITH_AS(awq::model::HfSource::open(tmp.string()),
                         doctest::Contains(("config.json: num_hidden_layers " + std::to_string(layers) +
                                           " but the checkpoint has 2 layers (layers.0 to layers.1)").c_str()),
                         awq::Error);
    cfg["num_hidden_layers"] = 99999999999LL;
    write_config();
    CHECK_THROWS_WITH_AS(awq::model::HfSource::open(tmp.string()), doctest::Contains("'num_hidden_layers' is 99999999999, out of range"),
                         awq::Error);
    // An AWQ output (q_proj stored as qweight, a quantization_config) given as the model to quantize.
    cfg["num_hidden_layers"] = 2;
    cfg["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 64}, {"zero_point", true}, {"version", "gemm"}};
    write_config();
    {
      const auto orig = awq::io::SafetensorsFile::open(gold + "/model.safetensors");
      awq::io::SafetensorsWriter w;
      for (const auto& n : orig.names()) {
        const auto t = orig.tensor(n);
        const std::string suffix = "q_proj.weight";
        if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
          w.add(n.substr(0, n.size() - 6) + "qweight", "I32", {4}, std::vector<std::uint8_t>(16, 7));
        else
          w.add(n, t.dtype, t.shape, t.data);
      }
      w.write((tmp / "model.safetensors").string());
    }
    const auto q = awq::model::HfSource::open(tmp.string());
    CHECK(q.quantized());
    const auto block0 = [&] { return awq::model::load_block<Cpu, Llama>(q, q.config(), 0); };
    CHECK_THROWS_WITH_AS(block0(),
                         doctest::Contains("is already AWQ-quantized (it has 'model.layers.0.self_attn.q_proj.qweight' and a "
                                           "quantization_config, no 'model.layers.0.self_attn.q_proj.weight'); give the full-precision model"),
                         awq::Error);
    fs::remove_all(tmp);
  }

  TEST_CASE("streaming: a sharded checkpoint quantizes in a child process whose peak RSS stays well below the model") {
    // 24 blocks of hidden 256, MLP 768: 75 MB of fp32 weights, one shard per block.
    const fs::path dir = fs::temp_directory_path() / ("awq_stream_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    awq::model::ModelConfig c;
    c.architecture = "llama";
    c.hidden = 256, c.intermediate = 768, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 64, c.layers = 24, c.vocab = 64;
    nlohmann::json cfg = {{"model_type", "llama"}, {"hidden_size", c.hidden}, {"intermediate_size", c.intermediate},
                          {"num_attention_heads", c.n_heads}, {"num_key_value_heads", c.n_kv_heads}, {"num_hidden_layers", c.layers},
                          {"vocab_size", c.vocab}, {"rms_norm_eps", 1e-5}, {"rope_parameters", {{"rope_theta", 10000.0}}},
                          {"tie_word_embeddings", true}};
    std::ofstream(dir / "config.json") << cfg.dump();
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
    std::size_t model_bytes = 0;
    std::uint64_t seed = 4242;
    for (int l = 0; l <= c.layers; ++l) {
      const std::string shard = "model-" + std::to_string(l + 1) + "-of-" + std::to_string(c.layers + 1) + ".safetensors";
      awq::io::SafetensorsWriter w;
      std::vector<awq::model::TensorSpec> specs = Llama::block_tensors(c);
      std::string prefix = Llama::block_prefix(l);
      if (l == c.layers) specs = {{"model.embed_tokens.weight", {c.vocab, c.hidden}}, {"model.norm.weight", {c.hidden}}}, prefix = "";
      for (const auto& t : specs) {
        const long rows = static_cast<long>(t.shape[0]), cols = t.shape.size() > 1 ? static_cast<long>(t.shape[1]) : 1;
        const auto v = random_weights(rows, cols, Dist::outliers, seed++, t.shape.size() > 1 ? 0.05 : 0.2);
        std::vector<float> f(v.size());
        for (std::size_t i = 0; i < v.size(); ++i) f[i] = t.shape.size() > 1 ? static_cast<float>(v[i]) : 1.0f + static_cast<float>(v[i]);
        w.add_typed(prefix + t.name, "F32", t.shape, f);
        index["weight_map"][prefix + t.name] = shard;
        model_bytes += f.size() * 4;
      }
      w.write((dir / shard).string());
    }
    std::ofstream(dir / "model.safetensors.index.json") << index.dump();

    const std::string out = (dir / "child.bin").string();
    // The child is this binary in its --model-child mode (awq_tests_main.cpp).
    const std::string child = AWQ_TESTS_BINARY;
    char mode[] = "--model-child";
    char* argv[] = {const_cast<char*>(child.c_str()), mode, const_cast<char*>(dir.c_str()), const_cast<char*>(out.c_str()), nullptr};
    pid_t pid = 0;
    REQUIRE(posix_spawn(&pid, child.c_str(), nullptr, nullptr, argv, environ) == 0);
    int status = 0;
    rusage ru{};
    REQUIRE(wait4(pid, &status, 0, &ru) == pid);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    std::ifstream f(out);
    unsigned long long got = 0, hwm_kb = 0;
    f >> got >> hwm_kb;
    // The child's own VmHWM where /proc has it: wait4's figure includes the parent's RSS when the
    // spawn went through vfork (the old address space's high-water mark is kept at exec).
    const double peak_mb = static_cast<double>(hwm_kb > 0 ? hwm_kb : static_cast<unsigned long long>(ru.ru_maxrss)) / 1024.0,
                 model_mb = static_cast<double>(model_bytes) / (1 << 20);
    MESSAGE("model " << model_mb << " MB of fp32 weights; the child's peak RSS " << peak_mb << " MB");
#if defined(__SANITIZE_ADDRESS__) || AWQ_TEST_HAS_ASAN
    // AddressSanitizer's shadow memory and quarantine dominate the child's RSS: only the result counts.
#else
    CHECK(peak_mb < 0.5 * model_mb);
#endif

    CHECK(got == quantize_hf_dir(dir.string()));  // the unconstrained run, in this process
    fs::remove_all(dir);
  }
}

namespace awq_test {

// The streaming test's child: quantizes the Hugging Face directory `dir` and writes the result's
// hash and this process's peak RSS in kB (VmHWM, 0 where /proc is absent) to `out`. Its own
// reading, not wait4's: a child spawned through vfork is charged the parent's RSS at exec.
int model_child_main(const char* dir, const char* out) try {
  const unsigned long long hash = quantize_hf_dir(dir);
  unsigned long long hwm_kb = 0;
  if (std::FILE* st = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, st))
      if (std::strncmp(line, "VmHWM:", 6) == 0) hwm_kb = std::strtoull(line + 6, nullptr, 10);
    std::fclose(st);
  }
  std::FILE* f = std::fopen(out, "w");
  if (!f || std::fprintf(f, "%llu %llu\n", hash, hwm_kb) < 0 || std::fclose(f) != 0) {
    std::fprintf(stderr, "awq_tests --model-child: cannot write %s\n", out);
    return 2;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "awq_tests --model-child: %s\n", e.what());
  return 2;
}

}  // namespace awq_test
