// Text inputs of awq_llama: read whole, refused unless they are valid UTF-8 (the tokenizer is
// byte-level BPE over UTF-8; a Latin-1 file would otherwise tokenize into a different text).
#pragma once

#include <awq/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace awq_cli {

namespace detail {
inline std::string hex(std::uint32_t v, int width = 2) {
  char b[16];
  std::snprintf(b, sizeof b, "%0*X", width, static_cast<unsigned>(v));
  return b;
}
}  // namespace detail

/// Where and why a byte string stops being UTF-8.
struct Utf8Error {
  std::size_t offset = 0;  ///< byte offset of the first byte of the bad sequence
  std::string reason;      ///< empty when the text is valid
  explicit operator bool() const { return !reason.empty(); }
};

/// Checks s against RFC 3629: shortest forms only, no surrogates (U+D800..DFFF), nothing above
/// U+10FFFF, no truncated sequence. Returns the first violation (or an empty reason).
inline Utf8Error check_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len = 0;
    std::uint32_t cp = 0, min = 0;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1Fu, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0Fu, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07u, min = 0x10000;
    else if (c >= 0x80 && c <= 0xBF) return {i, "a continuation byte 0x" + detail::hex(c) + " with no lead byte"};
    else return {i, "byte 0x" + detail::hex(c) + " never occurs in UTF-8" + (c == 0xC0 || c == 0xC1 ? " (overlong form)" : "")};
    for (int k = 1; k < len; ++k) {
      if (i + static_cast<std::size_t>(k) >= n) return {i, "a sequence truncated by the end of the text"};
      const unsigned char d = p[i + static_cast<std::size_t>(k)];
      if ((d & 0xC0u) != 0x80u) return {i, "lead byte 0x" + detail::hex(c) + " followed by 0x" + detail::hex(d) + ", not a continuation byte"};
      cp = (cp << 6) | (d & 0x3Fu);
    }
    if (cp < min) return {i, "an overlong encoding of U+" + detail::hex(cp, 4)};
    if (cp >= 0xD800 && cp <= 0xDFFF) return {i, "an encoded surrogate U+" + detail::hex(cp, 4)};
    if (cp > 0x10FFFF) return {i, "a code point above U+10FFFF"};
    i += static_cast<std::size_t>(len);
  }
  return {};
}

/// Reads a text file whole; throws awq::Error naming the file (and the flag that gave it) when it
/// cannot be read or is not valid UTF-8.
inline std::string read_text(const std::string& path, const std::string& flag = "text") {
  std::ifstream f(path, std::ios::binary);
  awq::detail::require(static_cast<bool>(f), flag, " ", path, ": cannot be read");
  std::stringstream ss;
  ss << f.rdbuf();
  awq::detail::require(!f.bad(), flag, " ", path, ": read error");
  std::string s = ss.str();
  const Utf8Error e = check_utf8(s);
  awq::detail::require(!e, flag, " ", path, ": not valid UTF-8 at byte offset ", e.offset, ": ", e.reason,
                       " (convert it first, e.g. iconv -f latin1 -t utf-8)");
  return s;
}

}  // namespace awq_cli
