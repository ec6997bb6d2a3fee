/// \file
/// \brief Weight sources of the model driver: the concept, and `awq::model::GgufSource` over a
///        llama.cpp GGUF file.
///
/// A weight source is any type with
/// \code
///   const ModelConfig& config() const;                 // the model's hyper-parameters
///   bool contains(const std::string& hf_name) const;    // whether the tensor exists
///   // The tensor `hf_name` (a Hugging Face name, "model.layers.3.self_attn.q_proj.weight") as fp32
///   // in HF layout, checked against `shape`: an awq::Error naming the file and the tensor when it
///   // is missing or its shape or dtype does not fit.
///   std::vector<float> load(const std::string& hf_name, const std::vector<std::int64_t>& shape) const;
/// \endcode
/// The driver asks for one block's tensors at a time, so a source that reads lazily (an mmapped
/// file, an engine's own storage) keeps host memory at O(one block).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "awq/error.hpp"
#include "awq/io/gguf.hpp"
#include "awq/model/config.hpp"

namespace awq::model {

/// \brief A GGUF file as a weight source: Hugging Face names mapped to llama.cpp's, tensors
///        dequantized to fp32, and llama.cpp's q/k row permutation (for its adjacent-pair RoPE)
///        undone to the Hugging Face layout (rotate_half).
class GgufSource {
 public:
  /// Opens and validates `path` and reads the config from its metadata.
  static GgufSource open(const std::string& path) { return GgufSource(io::GgufFile::open(path), path); }

  /// Over a file already read (`name` is used in messages).
  GgufSource(io::GgufFile g, std::string name) : g_(std::move(g)), name_(std::move(name)) {
    cfg_ = ModelConfig::from_gguf(g_, name_);
  }

  const ModelConfig& config() const { return cfg_; }  ///< from the metadata
  const io::GgufFile& gguf() const { return g_; }      ///< the file (tokenizer metadata)

  /// llama.cpp's name of a Hugging Face tensor name; empty when there is none.
  static std::string gguf_name(const std::string& hf) {
    if (hf == "model.embed_tokens.weight") return "token_embd.weight";
    if (hf == "model.norm.weight") return "output_norm.weight";
    if (hf == "lm_head.weight") return "output.weight";
    const std::string pre = "model.layers.";
    if (hf.compare(0, pre.size(), pre) != 0) return {};
    const std::size_t dot = hf.find('.', pre.size());
    if (dot == std::string::npos) return {};
    const std::string layer = hf.substr(pre.size(), dot - pre.size()), rest = hf.substr(dot + 1);
    static const char* const map[][2] = {
        {"input_layernorm", "attn_norm"}, {"post_attention_layernorm", "ffn_norm"}, {"self_attn.q_proj", "attn_q"},
        {"self_attn.k_proj", "attn_k"},   {"self_attn.v_proj", "attn_v"},           {"self_attn.o_proj", "attn_output"},
        {"mlp.gate_proj", "ffn_gate"},    {"mlp.up_proj", "ffn_up"},                {"mlp.down_proj", "ffn_down"}};
    for (const auto& m : map) {
      const std::string k = m[0];
      if (rest == k + ".weight" || rest == k + ".bias")
        return "blk." + layer + "." + m[1] + rest.substr(k.size());
    }
    return {};
  }

  /// Whether the file holds the tensor.
  bool contains(const std::string& hf) const {
    const std::string n = gguf_name(hf);
    if (n.empty()) return false;
    for (const auto& t : g_.tensors())
      if (t.name == n) return true;
    return false;
  }

  /// The tensor, dequantized to fp32 in HF layout (see the concept in this file's comment).
  std::vector<float> load(const std::string& hf, const std::vector<std::int64_t>& shape) const {
    const std::string n = gguf_name(hf);
    detail::require(!n.empty() && contains(hf), name_, ": tensor '", hf, "' (GGUF '", n, "') is missing");
    const auto& t = g_.tensor(n);
    bool ok = t.dims.size() == shape.size();
    for (std::size_t i = 0; ok && i < shape.size(); ++i)  // GGUF lists dims fastest first
      ok = static_cast<std::int64_t>(t.dims[shape.size() - 1 - i]) == shape[i];
    if (!ok) {
      std::string want, got;
      for (auto d : shape) want += (want.empty() ? "" : "x") + std::to_string(d);
      for (std::size_t i = t.dims.size(); i-- > 0;) got += (got.empty() ? "" : "x") + std::to_string(t.dims[i]);
      throw Error(detail::concat(name_, ": tensor '", hf, "' (GGUF '", n, "') has shape ", got, ", expected ", want));
    }
    std::vector<float> v = g_.dequantize(n);
    const bool q = hf.find("self_attn.q_proj.") != std::string::npos, k = hf.find("self_attn.k_proj.") != std::string::npos;
    if (cfg_.architecture == "llama" && (q || k)) unpermute_rows(v, shape[0], shape.size() > 1 ? shape[1] : 1, q ? cfg_.n_heads : cfg_.n_kv_heads);
    return v;
  }

  /// Undoes llama.cpp's convert permutation of q/k rows: per head, GGUF row 2j+i holds HF row i·D/2+j.
  static void unpermute_rows(std::vector<float>& w, std::int64_t rows, std::int64_t cols, int heads) {
    const std::vector<float> src = w;
    const std::int64_t d = rows / heads, half = d / 2;
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < 2; ++i)
        for (std::int64_t j = 0; j < half; ++j)
          std::copy_n(src.begin() + (h * d + 2 * j + i) * cols, cols, w.begin() + (h * d + i * half + j) * cols);
  }

 private:
  io::GgufFile g_;
  std::string name_;
  ModelConfig cfg_;
};

}  // namespace awq::model
