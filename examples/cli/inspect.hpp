// `awq_llama inspect FILE`: what a GGUF file, a safetensors file or a Hugging Face model directory
// holds: metadata with value types, tensors with type names, shapes and sizes; anything else is
// named as neither format.
#pragma once

#include <awq/io/json_error.hpp>
#include <awq/error.hpp>
#include <awq/io/gguf.hpp>
#include <awq/io/safetensors.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "cli/format.hpp"

namespace awq_cli {

using awq::io::gguf_type_name;

/// The name of a GGUF metadata value type ("uint32", "string", "array").
inline std::string gguf_value_type_name(std::uint32_t t) {
  static const char* const names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                      "bool",  "string", "array",  "uint64", "int64",  "float64"};
  return t < sizeof(names) / sizeof(names[0]) ? names[t] : "type " + std::to_string(t);
}

namespace detail {

inline std::string shape_string(const std::vector<std::uint64_t>& dims) {
  std::string s;
  for (auto d : dims) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s.empty() ? "scalar" : s;
}

inline std::string gguf_value_string(const awq::io::GgufValue& v) {
  if (v.type == 8) return v.s.size() > 80 ? v.s.substr(0, 77) + "..." : v.s;
  if (v.type == 6 || v.type == 12) return std::to_string(v.f);
  if (v.type == 7) return v.i ? "true" : "false";
  if (v.type != 9) return std::to_string(v.i);
  std::string s = "[";
  const std::size_t n = v.strs.size() + v.ints.size() + v.floats.size();
  for (std::size_t i = 0; i < std::min<std::size_t>(n, 3); ++i) {
    if (i) s += ", ";
    if (!v.strs.empty()) s += "'" + v.strs[i].substr(0, 20) + "'";
    else if (!v.ints.empty()) s += std::to_string(v.ints[i]);
    else s += std::to_string(v.floats[i]);
  }
  return s + (n > 3 ? ", ...]" : "]");
}

}  // namespace detail

inline int inspect_gguf(const std::string& path) {
  const auto g = awq::io::GgufFile::open(path);
  std::printf("GGUF v%u, alignment %llu, %zu metadata keys, %zu tensors\n", g.version(),
              static_cast<unsigned long long>(g.alignment()), g.metadata().size(), g.tensors().size());
  for (const auto& [k, v] : g.metadata()) {
    std::string type = gguf_value_type_name(v.type);
    if (v.type == 9)
      type = "array<" + gguf_value_type_name(v.array_type) + ">[" + std::to_string(v.strs.size() + v.ints.size() + v.floats.size()) + "]";
    std::printf("  %-45s %-20s %s\n", k.c_str(), type.c_str(), detail::gguf_value_string(v).c_str());
  }
  std::printf("%-32s %-8s %-18s %12s %12s\n", "tensor", "type", "shape", "offset", "bytes");
  for (const auto& t : g.tensors())
    std::printf("%-32s %-8s %-18s %12llu %12llu\n", t.name.c_str(), gguf_type_name(t.type).c_str(), detail::shape_string(t.dims).c_str(),
                static_cast<unsigned long long>(t.offset), static_cast<unsigned long long>(t.n_bytes));
  return 0;
}

inline int inspect_safetensors(const std::string& path) {
  const auto st = awq::io::SafetensorsFile::open(path);
  std::printf("safetensors, %zu tensors, %zu metadata entries\n", st.names().size(), st.metadata().size());
  for (const auto& [k, v] : st.metadata()) std::printf("  %-45s %s\n", k.c_str(), v.substr(0, 80).c_str());
  std::printf("%-56s %6s %-16s %12s\n", "tensor", "dtype", "shape", "bytes");
  for (const auto& n : st.names()) {
    const auto t = st.tensor(n);
    std::vector<std::uint64_t> dims(t.shape.begin(), t.shape.end());
    std::printf("%-56s %6s %-16s %12zu\n", n.c_str(), t.dtype.c_str(), detail::shape_string(dims).c_str(), t.data.size());
  }
  return 0;
}

/// A Hugging Face model directory: config.json's architecture and quantization, and the shards.
inline int inspect_hf_directory(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  nlohmann::json cfg;
  try {
    std::ifstream f(root / "config.json");
    cfg = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw awq::Error("inspect: " + (root / "config.json").string() + " is not valid JSON (" + awq::io::json_error_text(e) + ")");
  }
  awq::detail::require(cfg.is_object(), "inspect: ", (root / "config.json").string(), " is not a JSON object");
  auto field = [&](const char* k) { return cfg.contains(k) ? cfg[k].dump() : std::string("(not given)"); };
  std::printf("Hugging Face model directory %s\n", dir.c_str());
  std::printf("  %-24s %s\n", "architectures", field("architectures").c_str());
  std::printf("  %-24s %s\n", "model_type", field("model_type").c_str());
  for (const char* k : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                        "vocab_size", "torch_dtype"})
    if (cfg.contains(k)) std::printf("  %-24s %s\n", k, cfg[k].dump().c_str());
  if (cfg.contains("quantization_config")) std::printf("  %-24s %s\n", "quantization_config", cfg["quantization_config"].dump().c_str());

  std::map<std::string, long> indexed;  // shard -> tensors listed for it in the index
  const fs::path index = root / "model.safetensors.index.json";
  std::error_code ec;
  if (fs::is_regular_file(index, ec)) {
    try {
      std::ifstream f(index);
      const auto j = nlohmann::json::parse(f);
      for (const auto& [name, shard] : j.at("weight_map").items()) ++indexed[shard.get<std::string>()];
    } catch (const nlohmann::json::exception& e) {
      throw awq::Error("inspect: " + index.string() + " is not a valid index (" + awq::io::json_error_text(e) + ")");
    }
  }
  std::vector<std::string> shards;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_regular_file() && e.path().extension() == ".safetensors") shards.push_back(e.path().filename().string());
  std::sort(shards.begin(), shards.end());
  std::printf("%zu safetensors shards%s\n", shards.size(), indexed.empty() ? "" : " (index: model.safetensors.index.json)");
  for (const auto& s : shards) {
    const auto bytes = fs::file_size(root / s, ec);
    std::printf("  %-40s %14llu bytes", s.c_str(), static_cast<unsigned long long>(ec ? 0 : bytes));
    if (!indexed.empty()) std::printf("  %ld tensors in the index", indexed.count(s) ? indexed[s] : 0L);
    std::printf("\n");
  }
  for (const auto& [s, n] : indexed)
    if (std::find(shards.begin(), shards.end(), s) == shards.end())
      std::printf("  %-40s missing (the index lists %ld tensors in it)\n", s.c_str(), n);
  return 0;
}

/// Prints what path holds; throws awq::Error for a file that is no known format.
inline int inspect(const std::string& path) {
  std::error_code ec;
  awq::detail::require(std::filesystem::exists(path, ec), "inspect: ", path, ": no such file or directory");
  std::string why;
  switch (detect_format(path, why)) {
    case Format::gguf: return inspect_gguf(path);
    case Format::safetensors: return inspect_safetensors(path);
    case Format::hf_directory: return inspect_hf_directory(path);
    case Format::neither: break;
  }
  throw awq::Error(path + " is neither a GGUF nor a safetensors file: " + why);
}

}  // namespace awq_cli
