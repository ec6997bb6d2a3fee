/// \file
/// \brief `awq::model::ModelConfig`: the hyper-parameters of a decoder-only transformer, read from
///        a Hugging Face `config.json` or from GGUF metadata, validated before any work.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "awq/error.hpp"
#include "awq/io/gguf.hpp"

namespace awq::model {

/// \brief Hyper-parameters of a decoder-only transformer (the fields the shipped architectures use).
struct ModelConfig {
  std::string architecture;        ///< model family: "llama", "mistral", "qwen2", "opt", …
  int hidden = 0;                  ///< hidden size
  int intermediate = 0;            ///< MLP inner size
  int n_heads = 0;                 ///< attention heads
  int n_kv_heads = 0;              ///< key/value heads (GQA when fewer than n_heads)
  int head_dim = 0;                ///< per-head size (hidden / n_heads unless the checkpoint says)
  int layers = 0;                  ///< decoder blocks
  int vocab = 0;                   ///< vocabulary size
  float norm_eps = 1e-6f;          ///< RMSNorm / LayerNorm epsilon
  float rope_theta = 10000.0f;     ///< RoPE base
  bool tied_embeddings = false;    ///< the logits use the token embedding (no lm_head)
  bool qkv_bias = false;           ///< q/k/v projections have biases (Qwen2)
  bool o_bias = false;             ///< o_proj has a bias
  bool mlp_bias = false;           ///< gate/up/down have biases
  int max_positions = 0;           ///< max_position_embeddings (0: not given)
  std::string activation;          ///< hidden_act / activation_function ("": not given)
  bool norm_before = true;         ///< pre-norm blocks (OPT's do_layer_norm_before)
  int embed_proj_dim = 0;          ///< OPT's word_embed_proj_dim (0: not given, i.e. hidden)

  /// Throws awq::Error unless every size is positive and the heads divide evenly.
  void validate(const std::string& where) const {
    const auto pos = [&](const char* k, long v) { detail::require(v > 0, where, ": ", k, " is ", v, ", expected > 0"); };
    pos("hidden size", hidden);
    pos("intermediate size", intermediate);
    pos("attention heads", n_heads);
    pos("key/value heads", n_kv_heads);
    pos("head_dim", head_dim);
    pos("layers", layers);
    pos("vocab size", vocab);
    detail::require(n_heads % n_kv_heads == 0, where, ": ", n_heads, " attention heads are not a multiple of ", n_kv_heads,
                    " key/value heads");
    detail::require(head_dim % 2 == 0, where, ": head_dim ", head_dim, " is odd (RoPE rotates pairs)");
    detail::require(norm_eps > 0 && rope_theta > 0, where, ": norm eps ", norm_eps, " / rope theta ", rope_theta,
                    " must be positive");
  }

  /// From a Hugging Face config.json (`where` names the file in messages). rope_theta is read from
  /// `rope_theta` or, as transformers 5 writes it, `rope_parameters.rope_theta`.
  static ModelConfig from_hf(const nlohmann::json& j, const std::string& where) {
    ModelConfig c;
    const auto get_int = [&](const char* k) -> int {
      detail::require(j.contains(k) && j.at(k).is_number_integer(), where, ": '", k, "' is missing or not an integer");
      return j.at(k).get<int>();
    };
    const auto opt_bool = [&](const char* k, bool d) { return j.contains(k) && j.at(k).is_boolean() ? j.at(k).get<bool>() : d; };
    detail::require(j.is_object(), where, ": not a JSON object");
    c.architecture = j.value("model_type", std::string());
    detail::require(!c.architecture.empty(), where, ": 'model_type' is missing");
    c.hidden = get_int("hidden_size");
    c.intermediate = j.contains("ffn_dim") ? get_int("ffn_dim") : get_int("intermediate_size");  // OPT: ffn_dim
    c.n_heads = get_int("num_attention_heads");
    c.n_kv_heads = j.contains("num_key_value_heads") && j.at("num_key_value_heads").is_number_integer()
                       ? j.at("num_key_value_heads").get<int>()
                       : c.n_heads;
    c.head_dim = j.contains("head_dim") && j.at("head_dim").is_number_integer() ? j.at("head_dim").get<int>()
                                                                               : (c.n_heads > 0 ? c.hidden / c.n_heads : 0);
    c.layers = get_int("num_hidden_layers");
    c.vocab = get_int("vocab_size");
    if (j.contains("rms_norm_eps") && j.at("rms_norm_eps").is_number()) c.norm_eps = j.at("rms_norm_eps").get<float>();
    if (j.contains("rope_theta") && j.at("rope_theta").is_number()) c.rope_theta = j.at("rope_theta").get<float>();
    else if (j.contains("rope_parameters") && j.at("rope_parameters").is_object() &&
             j.at("rope_parameters").contains("rope_theta") && j.at("rope_parameters").at("rope_theta").is_number())
      c.rope_theta = j.at("rope_parameters").at("rope_theta").get<float>();
    c.tied_embeddings = opt_bool("tie_word_embeddings", false);
    const bool attn_bias = opt_bool("attention_bias", false);
    c.qkv_bias = c.architecture == "qwen2" || attn_bias;
    c.o_bias = attn_bias;
    c.mlp_bias = opt_bool("mlp_bias", false);
    if (j.contains("max_position_embeddings") && j.at("max_position_embeddings").is_number_integer())
      c.max_positions = j.at("max_position_embeddings").get<int>();
    for (const char* k : {"hidden_act", "activation_function"})
      if (c.activation.empty() && j.contains(k) && j.at(k).is_string()) c.activation = j.at(k).get<std::string>();
    if (c.architecture == "opt") {  // LayerNorm at torch's default eps, one switch for every bias, tied by default
      c.norm_eps = 1e-5f;
      c.tied_embeddings = opt_bool("tie_word_embeddings", true);
      c.qkv_bias = c.o_bias = c.mlp_bias = opt_bool("enable_bias", true);
      c.norm_before = opt_bool("do_layer_norm_before", true);
      if (j.contains("word_embed_proj_dim")) c.embed_proj_dim = get_int("word_embed_proj_dim");
    }
    c.validate(where);
    return c;
  }

  /// From GGUF metadata (`<arch>.embedding_length`, …); the vocabulary from token_embd.weight.
  static ModelConfig from_gguf(const io::GgufFile& g, const std::string& where) {
    detail::require(g.has("general.architecture"), where, ": GGUF metadata has no general.architecture");
    ModelConfig c;
    c.architecture = g.get_string("general.architecture");
    const std::string a = c.architecture + ".";
    const auto get_int = [&](const std::string& k) -> int {
      detail::require(g.has(k), where, ": GGUF metadata key '", k, "' is missing");
      return static_cast<int>(g.get_int(k));
    };
    c.hidden = get_int(a + "embedding_length");
    c.intermediate = get_int(a + "feed_forward_length");
    c.n_heads = get_int(a + "attention.head_count");
    c.n_kv_heads = g.has(a + "attention.head_count_kv") ? get_int(a + "attention.head_count_kv") : c.n_heads;
    c.head_dim = g.has(a + "attention.key_length") ? get_int(a + "attention.key_length") : (c.n_heads > 0 ? c.hidden / c.n_heads : 0);
    c.layers = get_int(a + "block_count");
    if (g.has(a + "attention.layer_norm_rms_epsilon"))
      c.norm_eps = static_cast<float>(g.get_float(a + "attention.layer_norm_rms_epsilon"));
    if (g.has(a + "rope.freq_base")) c.rope_theta = static_cast<float>(g.get_float(a + "rope.freq_base"));
    bool has_output = false, has_q_bias = false;
    for (const auto& t : g.tensors()) {
      has_output = has_output || t.name == "output.weight";
      has_q_bias = has_q_bias || t.name == "blk.0.attn_q.bias";
      if (t.name == "token_embd.weight") {
        detail::require(t.dims.size() == 2, where, ": token_embd.weight is not a matrix");
        c.vocab = static_cast<int>(t.dims[1]);
      }
    }
    c.tied_embeddings = !has_output;
    c.qkv_bias = has_q_bias;
    c.validate(where);
    return c;
  }
};

}  // namespace awq::model
