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
    return s;
  }

  const ModelConfig& config() const { return cfg_; }                    ///< from config.json
  const nlohmann::json& config_json() const { return ck_->config(); }  ///< config.json as read
  const std::string& dir() const { return ck_->dir(); }                ///< the directory
  const io::HfCheckpoint& checkpoint() const { return *ck_; }          ///< the underlying reader

  /// Whether the checkpoint holds `name`.
  bool contains(const std::string& name) const { return ck_->contains(name); }

  /// The tensor as fp32, checked against `shape` (see the concept in awq/model/source.hpp).
  std::vector<float> load(const std::string& name, const std::vector<std::int64_t>& shape) const {
    detail::require(ck_->contains(name), "awq::model::HfSource: ", ck_->dir(), ": tensor '", name, "' is missing");
    return ck_->load_f32(name, shape);
  }

 private:
  std::shared_ptr<io::HfCheckpoint> ck_;  // shared: a source is copied by value, the shards are not
  ModelConfig cfg_;
};

}  // namespace awq::model
