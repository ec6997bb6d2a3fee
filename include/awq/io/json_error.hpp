/// \file
/// \brief `awq::io::json_error_text`: what an nlohmann-json exception says, in plain words, for
///        the library's "FILE is not valid JSON: …" messages (needs nlohmann-json).
///
/// nlohmann's messages begin with an internal id ("[json.exception.parse_error.101] parse error
/// at line 2, column 1: syntax error while parsing value - …"): the id means nothing to the user,
/// so the readers of config.json, the shard index, safetensors headers and tokenizer files pass
/// their exceptions through this function instead of printing `what()` as it is.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <exception>
#include <string>

namespace awq {
namespace io {

/// \brief The message of `e` without nlohmann's "[json.exception.KIND.ID] " id and "parse error"
///        prefix: "at line 2, column 1: syntax error while parsing value - unexpected end of
///        input; expected '[', '{', or a literal". A parse error without a line and column (the
///        SAX parser of a buffer) is given its byte position instead: "at byte 7: …".
inline std::string json_error_text(const std::exception& e) {
  std::string s = e.what();
  if (s.compare(0, 16, "[json.exception.") == 0) {
    const std::size_t close = s.find("] ");
    if (close != std::string::npos) s.erase(0, close + 2);
  }
  for (const char* prefix : {"parse error ", "parse error"}) {
    const std::string p(prefix);
    if (s.compare(0, p.size(), p) == 0) {
      s.erase(0, p.size());
      break;
    }
  }
  if (!s.empty() && s[0] == ':') s.erase(0, 1);
  while (!s.empty() && s[0] == ' ') s.erase(0, 1);
  if (const auto* pe = dynamic_cast<const nlohmann::json::parse_error*>(&e))
    if (s.compare(0, 3, "at ") != 0) s = "at byte " + std::to_string(pe->byte) + ": " + s;
  return s;
}

}  // namespace io
}  // namespace awq
