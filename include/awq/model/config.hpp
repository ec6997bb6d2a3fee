/// \file
/// \brief `awq::model::ModelConfig`: the hyper-parameters of a decoder-only transformer, read from
///        a Hugging Face `config.json` or from GGUF metadata, validated before any work.
#pragma once

#include <nlohmann/json.hpp>

#include <climits>
#include <cmath>
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
  int bos_token = -1;              ///< bos_token_id (-1: not given)
  int eos_token = -1;              ///< eos_token_id, the first of a list (-1: not given)
  /// The configuration as read (config.json; null from GGUF): what an architecture policy of an
  /// engine's own reads beyond the fields above (a rotary fraction, a parallel-block switch).
  nlohmann::json raw;

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
    // An infinite theta or eps passes "> 0" and turns every later value into NaN.
    detail::require(std::isfinite(norm_eps) && std::isfinite(rope_theta) && norm_eps > 0 && rope_theta > 0, where, ": norm eps ",
                    norm_eps, " / rope theta ", rope_theta, " must be positive and finite");
    detail::require(max_positions >= 0, where, ": max positions ", max_positions, " is negative");
    detail::require(bos_token >= -1 && bos_token < vocab && eos_token >= -1 && eos_token < vocab, where, ": bos/eos token ",
                    bos_token, "/", eos_token, " outside the vocabulary of ", vocab);
  }

  /// From a Hugging Face config.json (`where` names the file in messages). rope_theta is read from
  /// `rope_theta` or, as transformers 5 writes it, `rope_parameters.rope_theta`.
  ///
  /// A field that changes the model's maths is checked, never ignored or defaulted when it is
  /// present but unusable: a size that is not an integer from 1 to 2^31 − 1 (stated as read, not
  /// narrowed), a rope_theta / rms_norm_eps that is not a number, an activation or a switch of the
  /// wrong JSON type, RoPE scaling (not implemented: a Llama 3.1 checkpoint's "llama3" would give
  /// wrong positions), and bos/eos ids outside the vocabulary are an awq::Error naming the key
  /// and the value. A key that is absent or null takes transformers' default.
  static ModelConfig from_hf(const nlohmann::json& j, const std::string& where) {
    ModelConfig c;
    detail::require(j.is_object(), where, ": not a JSON object");
    // Present and not null (transformers writes null for "the default").
    const auto given = [&](const char* k) { return j.contains(k) && !j.at(k).is_null(); };
    // Whether v is an integer in [lo, hi], compared without narrowing (an integer parsed from text
    // is unsigned when not negative; one set in code is signed).
    const auto int_in = [](const nlohmann::json& v, std::int64_t lo, std::int64_t hi) {
      if (v.is_number_unsigned()) {
        const std::uint64_t u = v.get<std::uint64_t>();
        return (lo <= 0 || u >= static_cast<std::uint64_t>(lo)) && hi >= 0 && u <= static_cast<std::uint64_t>(hi);
      }
      return v.is_number_integer() && v.get<std::int64_t>() >= lo && v.get<std::int64_t>() <= hi;
    };
    // A size, 1 to INT_MAX as read: a wider value is refused, not narrowed into a wrong (or negative) one.
    const auto size_of = [&](const nlohmann::json& v, const std::string& k) -> int {
      detail::require(int_in(v, 1, INT_MAX), where, ": '", k, "' is ", v.dump(), ", out of range (accepted: an integer from 1 to ",
                      INT_MAX, ")");
      return v.get<int>();
    };
    const auto get_int = [&](const char* k) -> int {
      detail::require(given(k) && j.at(k).is_number_integer(), where, ": '", k, "' is missing or not an integer",
                      given(k) ? " (" + j.at(k).dump() + ")" : std::string());
      return size_of(j.at(k), k);
    };
    const auto opt_int = [&](const char* k, int d) { return given(k) ? get_int(k) : d; };
    // rope_theta, rms_norm_eps: a string ("100000") would otherwise fall back to the default.
    const auto number = [&](const nlohmann::json& v, const std::string& k) -> float {
      detail::require(v.is_number(), where, ": '", k, "' is ", v.dump(), ", not a number");
      return v.get<float>();
    };
    // Switches: "true" (a string) would otherwise read as the default.
    const auto opt_bool = [&](const char* k, bool d) {
      if (!given(k)) return d;
      detail::require(j.at(k).is_boolean(), where, ": '", k, "' is ", j.at(k).dump(), ", not true or false");
      return j.at(k).get<bool>();
    };
    detail::require(given("model_type") && j.at("model_type").is_string(), where, ": 'model_type' is missing or not a string",
                    given("model_type") ? " (" + j.at("model_type").dump() + ")" : std::string());
    c.architecture = j.at("model_type").get<std::string>();
    detail::require(!c.architecture.empty(), where, ": 'model_type' is missing");
    c.hidden = get_int("hidden_size");
    c.intermediate = j.contains("ffn_dim") ? get_int("ffn_dim") : get_int("intermediate_size");  // OPT: ffn_dim
    c.n_heads = get_int("num_attention_heads");
    c.n_kv_heads = opt_int("num_key_value_heads", c.n_heads);
    c.head_dim = opt_int("head_dim", c.hidden / c.n_heads);
    c.layers = get_int("num_hidden_layers");
    c.vocab = get_int("vocab_size");
    if (given("rms_norm_eps")) c.norm_eps = number(j.at("rms_norm_eps"), "rms_norm_eps");
    // RoPE: theta, and no scaling. The engines rotate by θ^(−2i/d) alone; a scaled RoPE (Llama 3.1's
    // "llama3", linear, dynamic, yarn, …) would rotate every position wrongly, without an error.
    const auto check_rope_type = [&](const nlohmann::json& r, const std::string& k) {
      const nlohmann::json none;
      const nlohmann::json& t = !r.is_object() ? none : r.contains("rope_type") ? r.at("rope_type") : r.contains("type") ? r.at("type") : none;
      detail::require(t == "default", where, ": '", k, "' is ", r.dump(), ": rope scaling (type ",
                      t.is_string() ? t.get<std::string>() : t.is_null() ? std::string("not given") : t.dump(),
                      ") is not supported (accepted: none)");
    };
    if (given("rope_scaling")) check_rope_type(j.at("rope_scaling"), "rope_scaling");
    if (given("rope_parameters")) {  // transformers 5: {"rope_type": "default", "rope_theta": …}
      const nlohmann::json& r = j.at("rope_parameters");
      detail::require(r.is_object(), where, ": 'rope_parameters' is ", r.dump(), ", not an object");
      if (r.contains("rope_type") && !r.at("rope_type").is_null()) check_rope_type(r, "rope_parameters");
      if (r.contains("rope_theta") && !r.at("rope_theta").is_null()) c.rope_theta = number(r.at("rope_theta"), "rope_parameters.rope_theta");
    }
    if (given("rope_theta")) c.rope_theta = number(j.at("rope_theta"), "rope_theta");
    c.tied_embeddings = opt_bool("tie_word_embeddings", false);
    const bool attn_bias = opt_bool("attention_bias", false);
    c.qkv_bias = c.architecture == "qwen2" || attn_bias;
    c.o_bias = attn_bias;
    c.mlp_bias = opt_bool("mlp_bias", false);
    c.max_positions = opt_int("max_position_embeddings", 0);  // 0 or negative is no context at all
    // The activation, checked against the architecture by its policy (Llama: silu, OPT: relu).
    for (const char* k : {"hidden_act", "activation_function"})
      if (given(k)) {
        detail::require(j.at(k).is_string(), where, ": '", k, "' is ", j.at(k).dump(), ", not a string");
        if (c.activation.empty()) c.activation = j.at(k).get<std::string>();
      }
    // Token ids index the embedding: outside it, the prompt's BOS reads past the table, and an EOS
    // that cannot be sampled never stops the generation.
    const auto token_id = [&](const nlohmann::json& v, const std::string& k) -> int {
      detail::require(int_in(v, 0, c.vocab - 1), where, ": '", k, "' is ",
                      v.dump(), ", not a token id (accepted: an integer from 0 to ", c.vocab - 1, ", vocab_size ", c.vocab, ")");
      return v.get<int>();
    };
    if (given("bos_token_id")) c.bos_token = token_id(j.at("bos_token_id"), "bos_token_id");
    if (given("eos_token_id")) {  // one id, or a list of them (Llama 3: [128001, 128008, 128009])
      const nlohmann::json& e = j.at("eos_token_id");
      if (e.is_array()) {
        detail::require(!e.empty(), where, ": 'eos_token_id' is [], not a token id or a list of them");
        for (std::size_t i = 0; i < e.size(); ++i) {
          const int id = token_id(e[i], detail::concat("eos_token_id[", i, "]"));
          if (i == 0) c.eos_token = id;
        }
      } else {
        c.eos_token = token_id(e, "eos_token_id");
      }
    }
    if (c.architecture == "opt") {  // LayerNorm at torch's default eps, one switch for every bias, tied by default
      c.norm_eps = 1e-5f;
      c.tied_embeddings = opt_bool("tie_word_embeddings", true);
      c.qkv_bias = c.o_bias = c.mlp_bias = opt_bool("enable_bias", true);
      c.norm_before = opt_bool("do_layer_norm_before", true);
      c.embed_proj_dim = opt_int("word_embed_proj_dim", 0);
    }
    c.raw = j;
    c.validate(where);
    return c;
  }

  /// From GGUF metadata (`<arch>.embedding_length`, …); the vocabulary from token_embd.weight.
  ///
  /// Only general.architecture "llama" is read (Mistral and SmolLM GGUFs are "llama" too): the
  /// architecture is checked before any of its keys. As from_hf, what changes the maths is
  /// checked: sizes are integers from 1 to 2^31 − 1 as stored (not narrowed), context_length is
  /// positive, rope.dimension_count (when given) is the whole head, RoPE scaling (scaling.type,
  /// scale_linear, a rope_freqs.weight tensor) is refused, and bos/eos ids are in the vocabulary.
  static ModelConfig from_gguf(const io::GgufFile& g, const std::string& where) {
    detail::require(g.has("general.architecture"), where, ": GGUF metadata has no general.architecture");
    ModelConfig c;
    c.architecture = g.get_string("general.architecture");
    // First: another architecture's keys ("gpt2.embedding_length") would be reported missing
    // rather than the architecture unsupported. GgufSource maps llama.cpp's llama tensor names
    // and undoes its llama q/k permutation; nothing else is read from GGUF.
    detail::require(c.architecture == "llama", where, ": general.architecture '", c.architecture, "' is not supported (accepted: llama)");
    const std::string a = c.architecture + ".";
    // The value as stored: a u64 above 2^63 is held as a negative int64.
    const auto as_read = [&](const std::string& k, std::int64_t i) {
      return g.value(k).type == 10 && i < 0 ? std::to_string(static_cast<std::uint64_t>(i)) : std::to_string(i);
    };
    // A size, 1 to INT_MAX as stored: block_count 4000000000 is refused, not read as -294967296.
    const auto get_int = [&](const std::string& k) -> int {
      detail::require(g.has(k), where, ": GGUF metadata key '", k, "' is missing");
      const std::int64_t i = g.get_int(k);
      detail::require(i >= 1 && i <= INT_MAX, where, ": GGUF metadata '", k, "' is ", as_read(k, i),
                      ", out of range (accepted: an integer from 1 to ", INT_MAX, ")");
      return static_cast<int>(i);
    };
    c.hidden = get_int(a + "embedding_length");
    c.intermediate = get_int(a + "feed_forward_length");
    c.n_heads = get_int(a + "attention.head_count");
    c.n_kv_heads = g.has(a + "attention.head_count_kv") ? get_int(a + "attention.head_count_kv") : c.n_heads;
    c.head_dim = g.has(a + "attention.key_length") ? get_int(a + "attention.key_length") : c.hidden / c.n_heads;
    c.layers = get_int(a + "block_count");
    if (g.has(a + "context_length")) c.max_positions = get_int(a + "context_length");  // 0 would be no context at all
    if (g.has(a + "attention.layer_norm_rms_epsilon"))
      c.norm_eps = static_cast<float>(g.get_float(a + "attention.layer_norm_rms_epsilon"));
    if (g.has(a + "rope.freq_base")) c.rope_theta = static_cast<float>(g.get_float(a + "rope.freq_base"));
    // The engines rotate every dimension of a head: a partial rotary size would be ignored.
    if (g.has(a + "rope.dimension_count")) {
      const std::string k = a + "rope.dimension_count";
      const std::int64_t d = g.get_int(k);
      detail::require(d == c.head_dim, where, ": GGUF metadata '", k, "' is ", as_read(k, d), ", not the head size ", c.head_dim,
                      " (partial rotary embedding is not supported; accepted: ", c.head_dim, ")");
    }
    // RoPE scaling is not implemented: a scaled model would rotate every position wrongly.
    if (g.has(a + "rope.scaling.type")) {
      const std::string& t = g.get_string(a + "rope.scaling.type");
      detail::require(t == "none", where, ": GGUF metadata '", a, "rope.scaling.type' is '", t, "': rope scaling (type ", t,
                      ") is not supported (accepted: none)");
    }
    for (const std::string& k : {a + "rope.scale_linear", a + "rope.scaling.factor"})
      if (g.has(k) && !(g.has(a + "rope.scaling.type") && g.get_string(a + "rope.scaling.type") == "none")) {
        const double f = g.get_float(k);
        detail::require(f == 0.0 || f == 1.0, where, ": GGUF metadata '", k, "' is ", f, ": rope scaling (factor ", f,
                        ") is not supported (accepted: none)");
      }
    bool has_output = false, has_q_bias = false, has_embd = false;
    for (const auto& t : g.tensors()) {
      has_output = has_output || t.name == "output.weight";
      has_q_bias = has_q_bias || t.name == "blk.0.attn_q.bias";
      detail::require(t.name != "rope_freqs.weight", where, ": tensor 'rope_freqs.weight': rope scaling (per-frequency factors, "
                      "as Llama 3.1's type llama3) is not supported (accepted: none)");
      if (t.name == "token_embd.weight") {
        detail::require(t.dims.size() == 2, where, ": token_embd.weight is not a matrix");
        detail::require(t.dims[1] >= 1 && t.dims[1] <= static_cast<std::uint64_t>(INT_MAX), where, ": token_embd.weight has ", t.dims[1],
                        " rows, out of range (accepted: 1 to ", INT_MAX, ")");
        c.vocab = static_cast<int>(t.dims[1]);
        has_embd = true;
      }
    }
    detail::require(has_embd, where, ": tensor 'token_embd.weight' is missing (the vocabulary size is its row count)");
    c.tied_embeddings = !has_output;
    c.qkv_bias = has_q_bias;
    // Token ids index the embedding (see from_hf).
    const auto token_id = [&](const std::string& k) -> int {
      const std::int64_t i = g.get_int(k);
      detail::require(i >= 0 && i < c.vocab, where, ": GGUF metadata '", k, "' is ", as_read(k, i),
                      ", not a token id (accepted: 0 to ", c.vocab - 1, ", the rows of token_embd.weight)");
      return static_cast<int>(i);
    };
    if (g.has("tokenizer.ggml.bos_token_id")) c.bos_token = token_id("tokenizer.ggml.bos_token_id");
    if (g.has("tokenizer.ggml.eos_token_id")) c.eos_token = token_id("tokenizer.ggml.eos_token_id");
    c.validate(where);
    return c;
  }
};

}  // namespace awq::model
