/// \file
/// \brief Which model file format a path holds — GGUF, safetensors or neither — judged from its
///        first bytes, with the reason in words (so a tool can say "neither format" plainly).
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "awq/error.hpp"

namespace awq {
namespace io {

/// \brief A model file format.
enum class FileFormat { gguf, safetensors, unknown };

/// "gguf", "safetensors" or "unknown".
inline const char* format_name(FileFormat f) {
  switch (f) {
    case FileFormat::gguf: return "gguf";
    case FileFormat::safetensors: return "safetensors";
    default: return "unknown";
  }
}

/// \brief What detect_format found, and why.
struct FormatGuess {
  FileFormat format = FileFormat::unknown;  ///< the format, or unknown
  std::string reason;                       ///< e.g. "GGUF magic", or why it is neither format
};

/// \brief Judges the format of `path` from its first 9 bytes: GGUF when it begins with the
///        magic "GGUF"; safetensors when its 8-byte header length fits the file and the header
///        begins with '{'; otherwise unknown, with both reasons. Only the format is judged: the
///        readers validate the rest.
///
/// Throws awq::Error when `path` does not exist or cannot be read; a directory or another
/// non-regular file is `unknown`.
inline FormatGuess detect_format(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  awq::detail::require(!ec && fs::exists(st), "awq::io::detect_format: cannot open ", path, ": ", ec ? ec.message() : "no such file");
  if (fs::is_directory(st)) return {FileFormat::unknown, path + " is a directory, not a model file"};
  if (!fs::is_regular_file(st)) return {FileFormat::unknown, path + " is not a regular file"};
  const std::uint64_t size = fs::file_size(path, ec);
  std::ifstream f(path, std::ios::binary);
  awq::detail::require(!ec && static_cast<bool>(f), "awq::io::detect_format: cannot read ", path);
  unsigned char head[9] = {};
  f.read(reinterpret_cast<char*>(head), static_cast<std::streamsize>(size < 9 ? size : 9));
  awq::detail::require(static_cast<bool>(f), "awq::io::detect_format: read error on ", path);
  if (size >= 4 && std::memcmp(head, "GGUF", 4) == 0) return {FileFormat::gguf, "GGUF magic"};
  if (size < 9) return {FileFormat::unknown, awq::detail::concat("neither format: ", size, " bytes are too few for a GGUF or a safetensors file")};
  std::uint64_t n = 0;
  std::memcpy(&n, head, 8);
  if (n <= size - 8 && head[8] == '{') return {FileFormat::safetensors, awq::detail::concat("safetensors header of ", n, " bytes")};
  std::string magic;
  for (int i = 0; i < 4; ++i) magic += head[i] >= 0x20 && head[i] < 0x7F ? static_cast<char>(head[i]) : '.';
  return {FileFormat::unknown,
          awq::detail::concat("neither format: not GGUF (the first bytes are '", magic, "', not 'GGUF') and not safetensors (",
                              n > size - 8 ? awq::detail::concat("a header length of ", n, " bytes does not fit a file of ", size, " bytes")
                                           : awq::detail::concat("the header begins with byte 0x", std::hex, +head[8], ", not '{'"),
                              ")")};
}

}  // namespace io
}  // namespace awq
