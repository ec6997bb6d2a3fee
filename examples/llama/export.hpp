// Export of a quantized model (any architecture policy: the driver's blocks carry their Hugging
// Face names) as a Hugging Face directory: config.json with quantization_config,
// safetensors shards (model-0000i-of-0000N.safetensors + model.safetensors.index.json, or one
// model.safetensors) with AutoAWQ "GEMM" tensors (4-bit) or the library's plain layout (other
// widths), fp16 embeddings, norms and biases, and the tokenizer files. Streamed: each block is
// packed and written to the open shard as the driver hands it over (the sink), so memory holds
// one linear's packed tensors at a time. Atomic: everything goes to the hidden sibling
// .DIR.awq-tmp, renamed to DIR at the end; an existing DIR is replaced only then.
#pragma once

#include <awq/awq.hpp>
#include <awq/io/atomic_file.hpp>
#include <awq/io/gguf.hpp>
#include <awq/io/safetensors_sharded.hpp>
#include <awq/model/arch/llama.hpp>
#include <awq/model/pipeline.hpp>
#include <awq/model/source.hpp>
#include <awq/model/write.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace awq_example {

/// tokenizer.json of a GGUF file's byte-level BPE tokenizer.
inline nlohmann::ordered_json tokenizer_json(const awq::io::GgufFile& g) {
  const auto& toks = g.value("tokenizer.ggml.tokens").strs;
  using Ints = decltype(g.value("tokenizer.ggml.tokens").ints);
  const Ints types = g.has("tokenizer.ggml.token_type") ? g.value("tokenizer.ggml.token_type").ints : Ints{};  // optional in GGUF
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

/// config.json of a Llama-family model from GGUF metadata (what the HF directory of the same
/// weights has), without quantization_config.
inline nlohmann::ordered_json hf_config_json(const awq::model::ModelConfig& c, const awq::io::GgufFile& g) {
  nlohmann::ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_size"] = c.hidden;
  j["intermediate_size"] = c.intermediate;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["num_hidden_layers"] = c.layers;
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["max_position_embeddings"] = g.has("llama.context_length") ? g.get_int("llama.context_length") : 2048;
  j["vocab_size"] = c.vocab;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tied_embeddings;
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["bos_token_id"] = g.has("tokenizer.ggml.bos_token_id") ? g.get_int("tokenizer.ggml.bos_token_id") : 1;
  j["eos_token_id"] = g.has("tokenizer.ggml.eos_token_id") ? g.get_int("tokenizer.ggml.eos_token_id") : 2;
  return j;
}

/// tokenizer_config.json naming the fast tokenizer and its bos/eos tokens.
inline nlohmann::ordered_json tokenizer_config_json(const awq::io::GgufFile& g, const nlohmann::ordered_json& config) {
  const auto& toks = g.value("tokenizer.ggml.tokens").strs;
  return {{"tokenizer_class", "PreTrainedTokenizerFast"},
          {"model_max_length", config["max_position_embeddings"]},
          {"bos_token", toks.at(static_cast<std::size_t>(config["bos_token_id"].get<std::int64_t>()))},
          {"eos_token", toks.at(static_cast<std::size_t>(config["eos_token_id"].get<std::int64_t>()))}};
}

/// transformers' save_pretrained default shard size (5 GB).
constexpr std::uint64_t kDefaultShardBytes = 5'000'000'000;
/// Bytes kept for each shard's header, so that a shard is completed in place rather than copied
/// behind it: a 7B-shaped model's single-shard header is ~100 KB (~740 tensors).
constexpr std::uint64_t kHeaderReserve = 256 * 1024;

/// \brief A quantized model being exported to `dir`: blocks written to the open shard as they
///        finish (the driver's sink), then the model-level tensors, then finish() puts it in place.
///        Destroyed unfinished, it removes its temporary directory (and the parents it created)
///        and leaves `dir` as it was.
class HfExport {
 public:
  /// Starts the export into the hidden sibling `.NAME.awq-tmp` (a stale one from a killed run is
  /// removed; a name no user file has), shards of at most `shard_bytes`.
  HfExport(const std::string& dir, const awq::QuantSpec& spec, std::uint64_t shard_bytes = kDefaultShardBytes)
      : spec_(spec), dir_(dir), tmp_(sibling(dir, "tmp")) {
    namespace fs = std::filesystem;
    // The parent directories this export creates, removed again if it does not finish.
    for (fs::path p = fs::absolute(fs::path(dir_)).parent_path(); !p.empty() && !fs::exists(p) && p != p.parent_path(); p = p.parent_path())
      created_.push_back(p);
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
    st_ = std::make_unique<awq::io::ShardedSafetensorsWriter>(tmp_, shard_bytes, kHeaderReserve);
  }
  HfExport(const HfExport&) = delete;
  HfExport& operator=(const HfExport&) = delete;
  ~HfExport() {
    if (done_) return;
    st_.reset();  // its temporary files first
    std::error_code ec;
    std::filesystem::remove_all(tmp_, ec);
    for (const auto& p : created_) std::filesystem::remove(p, ec);  // only if still empty, innermost first
  }

  /// The hidden sibling `.NAME.awq-TAG` of directory `dir` (the export's temporary and old copies).
  static std::string sibling(const std::string& dir, const std::string& tag) {
    std::filesystem::path p = std::filesystem::path(dir).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();  // "out/" names "out"
    return (p.parent_path() / ("." + p.filename().string() + ".awq-" + tag)).string();
  }

  /// Packs one block's linears and writes them with its other tensors (fp16).
  void add_block(const awq::model::QuantizedBlock& b) {
    awq::model::write_block(*st_, b);
    ++blocks_;
  }

  /// Writes a model-level fp16 tensor (embedding, final norm, lm_head).
  void add_tensor(const std::string& name, const std::vector<std::int64_t>& shape, const std::vector<float>& v) {
    awq::model::write_fp16(*st_, name, shape, v);
  }

  /// Writes the last shard, the index, `config` (with the layer count and quantization_config),
  /// `files` as given (tokenizer files) and `raw_files` byte for byte (merges.txt), then renames
  /// the temporary directory to `dir`, replacing it.
  void finish(nlohmann::ordered_json config, const std::map<std::string, nlohmann::ordered_json>& files,
              const std::map<std::string, std::string>& raw_files = {}) {
    namespace fs = std::filesystem;
    st_->finish();
    config["num_hidden_layers"] = blocks_;
    config["torch_dtype"] = "float16";
    if (config.contains("dtype")) config["dtype"] = "float16";  // transformers 5's name for torch_dtype
    config["quantization_config"] = {{"quant_method", "awq"}, {"bits", spec_.bits}, {"group_size", spec_.group_size},
                                     {"zero_point", spec_.zero_point}, {"version", spec_.bits == 4 ? "gemm" : "awq_cpp_plain"},
                                     {"modules_to_not_convert", nlohmann::json::array()}};
    auto write_json = [&](const std::string& name, const nlohmann::ordered_json& j) {
      awq::io::write_atomically((fs::path(tmp_) / name).string(), [&](awq::io::FileSink& out) { out.write(j.dump(2) + "\n"); });
    };
    write_json("config.json", config);
    for (const auto& [name, j] : files) write_json(name, j);
    for (const auto& f : raw_files)
      awq::io::write_atomically((fs::path(tmp_) / f.first).string(), [&](awq::io::FileSink& out) { out.write(f.second); });
    const fs::path old_dir(sibling(dir_, "old"));
    fs::remove_all(old_dir);
    if (fs::exists(dir_)) fs::rename(dir_, old_dir);
    fs::rename(tmp_, dir_);
    fs::remove_all(old_dir);
    done_ = true;
  }

  /// Tensor bytes written so far.
  std::uint64_t bytes() const { return st_->total_bytes(); }
  /// Shards written in full so far.
  std::size_t shards() const { return st_->shards_written(); }

 private:
  awq::QuantSpec spec_;
  std::string dir_, tmp_;
  std::vector<std::filesystem::path> created_;
  std::unique_ptr<awq::io::ShardedSafetensorsWriter> st_;
  int blocks_ = 0;
  bool done_ = false;
};

/// Writes the first `layers` blocks of a GGUF Llama model as a Hugging Face directory: fp32
/// safetensors in HF q/k order (GgufSource undoes llama.cpp's permutation), one shard per block
/// plus one for the embedding and final norm (tied embeddings), the index, config.json and
/// tokenizer.json. For checks that the two readers give one model.
inline void write_gguf_as_hf(const awq::model::GgufSource& src, const std::string& dir, int layers) {
  using awq::model::Llama;
  namespace fs = std::filesystem;
  const auto& c = src.config();
  fs::create_directories(dir);
  nlohmann::json index = {{"weight_map", nlohmann::json::object()}};
  for (int l = 0; l <= layers; ++l) {
    const std::string shard = "model-" + std::to_string(100001 + l).substr(1) + "-of-" + std::to_string(100001 + layers).substr(1) +
                              ".safetensors";
    awq::io::SafetensorsWriter w;
    std::vector<awq::model::TensorSpec> specs = Llama::block_tensors(c);
    std::string prefix = Llama::block_prefix(l);
    if (l == layers) specs = {{Llama::embed_name, {c.vocab, c.hidden}}, {Llama::final_norm_name, {c.hidden}}}, prefix = "";
    for (const auto& t : specs) {
      w.add_typed(prefix + t.name, "F32", t.shape, src.load(prefix + t.name, t.shape));
      index["weight_map"][prefix + t.name] = shard;
    }
    w.write((fs::path(dir) / shard).string());
  }
  std::ofstream(fs::path(dir) / "model.safetensors.index.json") << index.dump();
  auto cfg = hf_config_json(c, src.gguf());
  cfg["num_hidden_layers"] = layers;
  std::ofstream(fs::path(dir) / "config.json") << cfg.dump(2);
  std::ofstream(fs::path(dir) / "tokenizer.json") << tokenizer_json(src.gguf()).dump();
}

}  // namespace awq_example
