/// \file
/// \brief `awq::model::HfSource`: a Hugging Face model directory (config.json, model.safetensors
///        or sharded model-0000x-of-0000y.safetensors with model.safetensors.index.json; F32, F16
///        or BF16) as a weight source (awq/model/source.hpp).
///
/// Tensors are read one at a time: a shard is opened for the tensor asked for and released after,
/// so host memory stays at O(one shard) on top of the driver's block.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "awq/error.hpp"
#include "awq/io/gguf.hpp"
#include "awq/io/safetensors.hpp"
#include "awq/model/config.hpp"

namespace awq::model {

/// \brief A Hugging Face model directory as a weight source.
class HfSource {
 public:
  /// Opens `dir`: reads config.json and the tensor directory (the index, or the single file's header).
  static HfSource open(const std::string& dir) {
    namespace fs = std::filesystem;
    HfSource s;
    s.dir_ = dir;
    const fs::path cfg = fs::path(dir) / "config.json";
    detail::require(fs::is_directory(dir), "awq::model::HfSource: ", dir, " is not a directory");
    detail::require(fs::exists(cfg), "awq::model::HfSource: ", dir, " has no config.json");
    s.json_ = read_json(cfg.string());
    s.cfg_ = ModelConfig::from_hf(s.json_, cfg.string());
    const fs::path index = fs::path(dir) / "model.safetensors.index.json", single = fs::path(dir) / "model.safetensors";
    if (fs::exists(index)) {
      const auto j = read_json(index.string());
      detail::require(j.contains("weight_map") && j["weight_map"].is_object(), "awq::model::HfSource: ", index.string(),
                      " has no weight_map");
      for (const auto& [name, file] : j["weight_map"].items()) {
        detail::require(file.is_string(), "awq::model::HfSource: ", index.string(), ": tensor '", name, "' maps to no file");
        const std::string f = file.get<std::string>();
        detail::require(f.find('/') == std::string::npos && fs::exists(fs::path(dir) / f), "awq::model::HfSource: ",
                        index.string(), ": shard '", f, "' of tensor '", name, "' is missing");
        s.file_of_[name] = (fs::path(dir) / f).string();
      }
    } else {
      detail::require(fs::exists(single), "awq::model::HfSource: ", dir, " has neither model.safetensors nor model.safetensors.index.json");
      for (const auto& n : io::SafetensorsFile::open(single.string()).names()) s.file_of_[n] = single.string();
    }
    return s;
  }

  const ModelConfig& config() const { return cfg_; }          ///< from config.json
  const nlohmann::json& config_json() const { return json_; }  ///< config.json as read
  const std::string& dir() const { return dir_; }              ///< the directory

  /// Whether the checkpoint holds `name`.
  bool contains(const std::string& name) const { return file_of_.count(name) != 0; }

  /// The tensor as fp32, checked against `shape` (see the concept in awq/model/source.hpp).
  std::vector<float> load(const std::string& name, const std::vector<std::int64_t>& shape) const {
    const auto it = file_of_.find(name);
    detail::require(it != file_of_.end(), "awq::model::HfSource: ", dir_, ": tensor '", name, "' is missing");
    const auto f = io::SafetensorsFile::open(it->second);
    detail::require(f.contains(name), "awq::model::HfSource: ", it->second, ": tensor '", name,
                    "' is not in the shard the index names");
    const auto t = f.tensor(name);
    if (t.shape != shape) {
      std::string want, got;
      for (auto d : shape) want += (want.empty() ? "" : "x") + std::to_string(d);
      for (auto d : t.shape) got += (got.empty() ? "" : "x") + std::to_string(d);
      throw Error(detail::concat("awq::model::HfSource: ", it->second, ": tensor '", name, "' has shape ", got, ", expected ", want));
    }
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    std::vector<float> v(n);
    if (t.dtype == "F32") {
      std::memcpy(v.data(), t.data.data(), n * 4);
    } else if (t.dtype == "F16" || t.dtype == "BF16") {
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t h = static_cast<std::uint16_t>(t.data[2 * i] | (t.data[2 * i + 1] << 8));
        if (t.dtype == "F16") {
          v[i] = io::detail::half_to_float(h);
        } else {
          const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
          std::memcpy(&v[i], &bits, 4);
        }
      }
    } else {
      throw Error(detail::concat("awq::model::HfSource: ", it->second, ": tensor '", name, "' is ", t.dtype,
                                 "; expected F32, F16 or BF16"));
    }
    return v;
  }

 private:
  static nlohmann::json read_json(const std::string& path) {
    std::ifstream f(path);
    detail::require(static_cast<bool>(f), "awq::model::HfSource: cannot read ", path);
    try {
      return nlohmann::json::parse(f);
    } catch (const nlohmann::json::exception& e) {
      throw Error(detail::concat("awq::model::HfSource: ", path, " is not valid JSON (", e.what(), ")"));
    }
  }

  std::string dir_;
  nlohmann::json json_;
  ModelConfig cfg_;
  std::map<std::string, std::string> file_of_;
};

}  // namespace awq::model
