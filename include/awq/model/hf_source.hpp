/// \file
/// \brief `awq::model::HfSource`: a Hugging Face model directory (config.json, model.safetensors
///        or sharded model-0000x-of-0000y.safetensors with model.safetensors.index.json; F32, F16
///        or BF16) as a weight source (awq/model/source.hpp).
///
/// Tensors are read one at a time through io::HfCheckpoint (the index checked against every
/// shard's header at open; each read maps only that tensor's pages), so host memory stays at one
/// tensor on top of the driver's block.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "awq/error.hpp"
#include "awq/io/hf_checkpoint.hpp"
#include "awq/model/config.hpp"

namespace awq::model {

/// \brief A Hugging Face model directory as a weight source.
class HfSource {
 public:
  /// Opens `dir` (io::HfCheckpoint::open validates config.json, the index and the shards) and
  /// reads the model's configuration from config.json.
  static HfSource open(const std::string& dir) {
    HfSource s;
    s.ck_ = std::make_shared<io::HfCheckpoint>(io::HfCheckpoint::open(dir));
    s.cfg_ = ModelConfig::from_hf(s.ck_->config(), dir + "/config.json");
    // num_hidden_layers beyond the blocks stored would fail only at the first missing block, after
    // the work before it, as "tensor … is missing": say what is wrong at open.
    const int stored = stored_layers(*s.ck_);
    detail::require(s.cfg_.layers <= stored, dir, "/config.json: num_hidden_layers ", s.cfg_.layers, " but the checkpoint has ", stored,
                    stored == 1 ? " layer" : " layers",
                    stored > 0 ? detail::concat(" (layers.0 to layers.", stored - 1, ")") : std::string(" (no 'layers.N.' tensor)"));
    return s;
  }

  /// Blocks stored in `ck`: one more than the largest N of a tensor named "…layers.N.…"
  /// (model.layers.N. of the Llama family, model.decoder.layers.N. of OPT); 0 when none is.
  static int stored_layers(const io::HfCheckpoint& ck) {
    long long most = -1;
    for (const std::string& n : ck.names()) {
      for (std::size_t p = n.find("layers."); p != std::string::npos; p = n.find("layers.", p + 1)) {
        if (p != 0 && n[p - 1] != '.') continue;
        std::size_t q = p + 7;
        long long v = 0;
        while (q < n.size() && n[q] >= '0' && n[q] <= '9' && v < (1LL << 40)) v = v * 10 + (n[q++] - '0');
        if (q > p + 7 && q < n.size() && n[q] == '.') most = std::max(most, v);
      }
    }
    return static_cast<int>(std::min<long long>(most + 1, INT_MAX));
  }

  /// Whether config.json has a quantization_config: an AWQ (or other) checkpoint, whose linears
  /// are stored as qweight/qzeros/scales rather than fp weights.
  bool quantized() const { return ck_->config().contains("quantization_config"); }

  const ModelConfig& config() const { return cfg_; }                    ///< from config.json
  const nlohmann::json& config_json() const { return ck_->config(); }  ///< config.json as read
  const std::string& dir() const { return ck_->dir(); }                ///< the directory
  const io::HfCheckpoint& checkpoint() const { return *ck_; }          ///< the underlying reader

  /// Whether the checkpoint holds `name`.
  bool contains(const std::string& name) const { return ck_->contains(name); }

  /// The tensor as fp32, checked against `shape` (see the concept in awq/model/source.hpp).
  std::vector<float> load(const std::string& name, const std::vector<std::int64_t>& shape) const {
    if (!ck_->contains(name)) {
      // An AWQ output given as the model to quantize: say so, not that its fp weights are missing.
      const std::string suffix = ".weight";
      const bool w = name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
      const std::string packed = w ? name.substr(0, name.size() - suffix.size()) + ".qweight" : std::string();
      detail::require(packed.empty() || !ck_->contains(packed), "awq::model::HfSource: ", ck_->dir(), " is already AWQ-quantized (it has '",
                      packed, "'", quantized() ? " and a quantization_config" : " but no quantization_config", ", no '", name,
                      "'); give the full-precision model");
      throw Error(detail::concat("awq::model::HfSource: ", ck_->dir(), ": tensor '", name, "' is missing"));
    }
    return ck_->load_f32(name, shape);
  }

 private:
  std::shared_ptr<io::HfCheckpoint> ck_;  // shared: a source is copied by value, the shards are not
  ModelConfig cfg_;
};

}  // namespace awq::model
