// Final quantization with fp16 scales (what the checkpoint stores, so the reported perplexity is
// that of the exported weights) and export of a Hugging Face model directory: config.json with
// quantization_config, model.safetensors with AutoAWQ "GEMM" tensors (4-bit) or the library's
// plain layout (other widths), fp16 embeddings and norms, and tokenizer.json. Written atomically.
#pragma once

#include <awq/awq.hpp>
#include <awq/io/gguf.hpp>
#include <awq/io/safetensors.hpp>

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "llama/llama_model.hpp"

namespace awq_example {

struct QuantizedLinear {
  awq::index_t out = 0, in = 0, groups = 0;
  std::vector<std::uint8_t> codes;   // [out, in]
  std::vector<std::uint8_t> zeros;   // [out, groups], stored codes
  std::vector<Eigen::half> scales;   // [out, groups]
};

/// Quantizes w with the reference's rules, keeps those codes and zeros, rounds the scales to fp16,
/// and replaces w by (q - z) * scale16 in float. The codes are the ones the clip search judged:
/// re-deriving them with the fp16 scale (as AutoAWQ's packer does) moves every clamped weight
/// that sits on a rounding tie (±c at c / scale = (2^b - 1) / 2) to a code the search never saw.
inline QuantizedLinear finalize_linear(Mat& w, const awq::QuantSpec& spec) {
  QuantizedLinear q;
  q.out = w.rows();
  q.in = w.cols();
  q.groups = q.in / spec.group_for(q.in);
  const awq::index_t g = q.in / q.groups;
  q.codes.resize(static_cast<std::size_t>(q.out * q.in));
  std::vector<float> s(static_cast<std::size_t>(q.out * q.groups)), z(s.size());
  awq::quantize(spec, awq::as_view(w), awq::make_row_major(q.codes.data(), q.out, q.in),
                {{}, awq::make_row_major(s.data(), q.out, q.groups), awq::make_row_major(z.data(), q.out, q.groups)});
  q.scales.resize(s.size());
  q.zeros.resize(s.size());
  for (awq::index_t r = 0; r < q.out; ++r)
    for (awq::index_t j = 0; j < q.groups; ++j) {
      const std::size_t gi = static_cast<std::size_t>(r * q.groups + j);
      q.scales[gi] = Eigen::half(s[gi]);
      q.zeros[gi] = static_cast<std::uint8_t>(z[gi]);
      const float s16 = static_cast<float>(q.scales[gi]);
      for (awq::index_t i = j * g; i < (j + 1) * g; ++i)
        w(r, i) = (static_cast<float>(q.codes[static_cast<std::size_t>(r * q.in + i)]) - z[gi]) * s16;
    }
  return q;
}

inline std::vector<QuantizedLinear> finalize_layer(LlamaLayer& l, const awq::QuantSpec& spec) {
  std::vector<QuantizedLinear> out;
  for (Mat* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.wg, &l.wu, &l.wd}) out.push_back(finalize_linear(*w, spec));
  return out;
}

inline const char* const kLinearNames[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                            "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

template <class T>
std::vector<Eigen::half> to_half(const T& m) {
  std::vector<Eigen::half> h(static_cast<std::size_t>(m.size()));
  for (Eigen::Index i = 0; i < m.size(); ++i) h[static_cast<std::size_t>(i)] = Eigen::half(m.data()[i]);
  return h;
}

inline void add_linear(awq::io::SafetensorsWriter& w, const std::string& name, const QuantizedLinear& q, int bits) {
  using V = std::vector<std::int64_t>;
  if (bits == 4) {  // AutoAWQ GEMM
    std::vector<std::int32_t> qweight(static_cast<std::size_t>(q.in * q.out / 8)), qzeros(static_cast<std::size_t>(q.groups * q.out / 8));
    awq::pack_awq_gemm(awq::make_row_major(q.codes.data(), q.out, q.in), awq::make_row_major(qweight.data(), q.in, q.out / 8));
    awq::pack_awq_gemm(awq::make_row_major(q.zeros.data(), q.out, q.groups), awq::make_row_major(qzeros.data(), q.groups, q.out / 8));
    std::vector<Eigen::half> sc(q.scales.size());
    awq::transpose_scales(awq::make_row_major(q.scales.data(), q.out, q.groups), awq::make_row_major(sc.data(), q.groups, q.out));
    w.add_typed(name + ".qweight", "I32", V{q.in, q.out / 8}, qweight);
    w.add_typed(name + ".qzeros", "I32", V{q.groups, q.out / 8}, qzeros);
    w.add_typed(name + ".scales", "F16", V{q.groups, q.out}, sc);
  } else {  // awq plain layout: row-major [out, in] bit streams, zeros and scales per (row, group)
    const awq::index_t rb = awq::plain_row_bytes(q.in, bits);
    std::vector<std::uint8_t> packed(static_cast<std::size_t>(q.out * rb));
    awq::pack_plain(bits, awq::make_row_major(q.codes.data(), q.out, q.in), awq::make_row_major(packed.data(), q.out, rb));
    w.add_typed(name + ".qweight", "U8", V{q.out, rb}, packed);
    w.add_typed(name + ".qzeros", "U8", V{q.out, q.groups}, q.zeros);
    w.add_typed(name + ".scales", "F16", V{q.out, q.groups}, q.scales);
  }
}

inline nlohmann::json tokenizer_json(const awq::io::GgufFile& g) {
  const auto& toks = g.value("tokenizer.ggml.tokens").strs;
  const auto& types = g.value("tokenizer.ggml.token_type").ints;
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object(), added = nlohmann::json::array();
  for (std::size_t i = 0; i < toks.size(); ++i) {
    vocab[toks[i]] = i;
    if (i < types.size() && types[i] == 3)
      added.push_back({{"id", i}, {"content", toks[i]}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                       {"normalized", false}, {"special", true}});
  }
  nlohmann::ordered_json j;
  j["version"] = "1.0";
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Digits"}, {"individual_digits", true}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}}}};
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                {"vocab", vocab}, {"merges", g.value("tokenizer.ggml.merges").strs}};
  return j;
}

/// Writes the Hugging Face directory `dir` (replacing it only once everything is written).
inline void export_hf(const std::string& dir, const LlamaModel& m, const std::vector<std::vector<QuantizedLinear>>& q,
                      const awq::io::GgufFile& g, const awq::QuantSpec& spec) {
  namespace fs = std::filesystem;
  awq::detail::require(q.size() == m.layers.size(), "export_hf: ", q.size(), " quantized layers for a model of ", m.layers.size());
  const fs::path final_dir(dir), tmp_dir(dir + ".tmp"), old_dir(dir + ".old");
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  using V = std::vector<std::int64_t>;
  awq::io::SafetensorsWriter st;
  st.metadata("format", "pt");
  st.add_typed("model.embed_tokens.weight", "F16", V{m.vocab, m.cfg.hidden}, to_half(m.embed));
  st.add_typed("model.norm.weight", "F16", V{m.cfg.hidden}, to_half(m.final_norm));
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    st.add_typed(p + "input_layernorm.weight", "F16", V{m.cfg.hidden}, to_half(m.layers[i].ln_in));
    st.add_typed(p + "post_attention_layernorm.weight", "F16", V{m.cfg.hidden}, to_half(m.layers[i].ln_post));
    for (int k = 0; k < 7; ++k) add_linear(st, p + kLinearNames[k], q[i][static_cast<std::size_t>(k)], spec.bits);
  }
  st.write((tmp_dir / "model.safetensors").string());

  nlohmann::ordered_json c;
  c["architectures"] = {"LlamaForCausalLM"};
  c["model_type"] = "llama";
  c["hidden_size"] = m.cfg.hidden;
  c["intermediate_size"] = m.cfg.intermediate;
  c["num_attention_heads"] = m.cfg.n_heads;
  c["num_key_value_heads"] = m.cfg.n_kv_heads;
  c["head_dim"] = m.cfg.head_dim;
  c["num_hidden_layers"] = m.layers.size();
  c["rms_norm_eps"] = m.cfg.rms_eps;
  c["rope_theta"] = m.cfg.rope_theta;
  c["max_position_embeddings"] = g.has("llama.context_length") ? g.get_int("llama.context_length") : 2048;
  c["vocab_size"] = m.vocab;
  c["hidden_act"] = "silu";
  c["tie_word_embeddings"] = true;
  c["attention_bias"] = false;
  c["mlp_bias"] = false;
  c["bos_token_id"] = g.has("tokenizer.ggml.bos_token_id") ? g.get_int("tokenizer.ggml.bos_token_id") : 1;
  c["eos_token_id"] = g.has("tokenizer.ggml.eos_token_id") ? g.get_int("tokenizer.ggml.eos_token_id") : 2;
  c["torch_dtype"] = "float16";
  c["quantization_config"] = {{"quant_method", "awq"}, {"bits", spec.bits}, {"group_size", spec.group_size},
                              {"zero_point", spec.zero_point}, {"version", spec.bits == 4 ? "gemm" : "awq_cpp_plain"},
                              {"modules_to_not_convert", nlohmann::json::array()}};
  auto write_json = [&](const char* name, const nlohmann::ordered_json& j) {
    awq::io::write_atomically((tmp_dir / name).string(), [&](awq::io::FileSink& out) { out.write(j.dump(2) + "\n"); });
  };
  write_json("config.json", c);
  write_json("tokenizer.json", tokenizer_json(g));
  write_json("tokenizer_config.json", nlohmann::ordered_json{{"tokenizer_class", "PreTrainedTokenizerFast"}, {"model_max_length", c["max_position_embeddings"]},
                                                             {"bos_token", g.value("tokenizer.ggml.tokens").strs.at(static_cast<std::size_t>(c["bos_token_id"].get<std::int64_t>()))},
                                                             {"eos_token", g.value("tokenizer.ggml.tokens").strs.at(static_cast<std::size_t>(c["eos_token_id"].get<std::int64_t>()))}});
  fs::remove_all(old_dir);
  if (fs::exists(final_dir)) fs::rename(final_dir, old_dir);
  fs::rename(tmp_dir, final_dir);
  fs::remove_all(old_dir);
}

}  // namespace awq_example
