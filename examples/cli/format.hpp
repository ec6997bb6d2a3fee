// Which kind of model input a path is: a GGUF file, a safetensors file (awq::io::detect_format),
// a Hugging Face model directory, or none of them (with what was found instead).
#pragma once

#include <awq/io/format.hpp>

#include <filesystem>
#include <string>

namespace awq_cli {

enum class Format { gguf, safetensors, hf_directory, neither };

/// \brief A directory with config.json is an HF directory; a file is what awq::io::detect_format
///        judges it. `why` says what was found when it is neither.
inline Format detect_format(const std::string& path, std::string& why) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (fs::is_regular_file(fs::path(path) / "config.json", ec)) return Format::hf_directory;
    why = "a directory without config.json";
    return Format::neither;
  }
  const awq::io::FormatGuess g = awq::io::detect_format(path);
  if (g.format == awq::io::FileFormat::gguf) return Format::gguf;
  if (g.format == awq::io::FileFormat::safetensors) return Format::safetensors;
  const std::string lead = "neither format: ";  // the callers say so themselves
  why = g.reason.compare(0, lead.size(), lead) == 0 ? g.reason.substr(lead.size()) : g.reason;
  return Format::neither;
}

}  // namespace awq_cli
