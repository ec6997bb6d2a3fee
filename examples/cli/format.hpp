// Which kind of model input a path is: a GGUF file, a safetensors file, a Hugging Face model
// directory, or none of them (with what was found instead). A local stand-in for
// awq::io::detect_format (coming with the readers work); switch to it when it lands.
#pragma once

#include <awq/error.hpp>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace awq_cli {

enum class Format { gguf, safetensors, hf_directory, neither };

/// \brief Tells the format from the first bytes: "GGUF"; or a little-endian u64 header length that
///        fits the file followed by '{' (safetensors); a directory with config.json. `why` says
///        what was found when it is neither.
inline Format detect_format(const std::string& path, std::string& why) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (fs::is_regular_file(fs::path(path) / "config.json", ec)) return Format::hf_directory;
    why = "a directory without config.json";
    return Format::neither;
  }
  std::ifstream f(path, std::ios::binary);
  awq::detail::require(static_cast<bool>(f), path, ": cannot be read: ", std::strerror(errno));
  unsigned char b[9] = {};
  f.read(reinterpret_cast<char*>(b), 9);
  const auto got = static_cast<std::size_t>(f.gcount());
  if (got >= 4 && std::memcmp(b, "GGUF", 4) == 0) return Format::gguf;
  const auto size = fs::file_size(path, ec);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | b[i];
  if (got == 9 && !ec && n >= 2 && n <= size - 8 && b[8] == '{') return Format::safetensors;
  if (got == 0) {
    why = "it is empty";
  } else {
    why = "it starts with bytes";
    for (std::size_t i = 0; i < got; ++i) {
      char h[4];
      std::snprintf(h, sizeof h, " %02x", b[i]);
      why += h;
    }
    why += " (a GGUF file starts with 'GGUF', a safetensors file with an 8-byte header length and '{')";
  }
  return Format::neither;
}

}  // namespace awq_cli
