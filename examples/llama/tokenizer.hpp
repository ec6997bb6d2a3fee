// Byte-level BPE tokenizer (GPT-2 family) built from a GGUF file's tokenizer metadata:
// tokenizer.ggml.tokens and tokenizer.ggml.merges. Pre-tokenization follows llama.cpp's
// "smollm" rule: every digit is its own piece, then the GPT-2 pattern
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with letters taken as ASCII letters plus every non-ASCII UTF-8 sequence.
#pragma once

#include <awq/error.hpp>
#include <awq/io/gguf.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace awq_example {

class BpeTokenizer {
 public:
  explicit BpeTokenizer(const awq::io::GgufFile& g) : BpeTokenizer(gguf_tokens(g), g.value("tokenizer.ggml.merges").strs) {}

  /// From the token strings (by id) and the merges ("a b", by rank).
  BpeTokenizer(const std::vector<std::string>& toks, const std::vector<std::string>& merges) {
    for (std::size_t i = 0; i < toks.size(); ++i) vocab_.emplace(toks[i], static_cast<int>(i));
    id_to_token_ = toks;
    for (std::size_t i = 0; i < merges.size(); ++i) ranks_.emplace(merges[i], static_cast<int>(i));
    for (int b = 0; b < 256; ++b) byte_sym_[b] = utf8(byte_to_cp(b));
    for (int b = 0; b < 256; ++b) sym_byte_[byte_sym_[b]] = static_cast<unsigned char>(b);
  }

  /// From a Hugging Face tokenizer.json of a byte-level BPE model (merges as "a b" or ["a", "b"]).
  static BpeTokenizer from_hf_json(const std::string& path) {
    std::ifstream f(path);
    awq::detail::require(static_cast<bool>(f), "BpeTokenizer: cannot open ", path);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(f);
    } catch (const nlohmann::json::exception& e) {
      throw awq::Error(awq::detail::concat("BpeTokenizer: ", path, " is not valid JSON (", e.what(), ")"));
    }
    awq::detail::require(j.contains("model") && j["model"].value("type", std::string()) == "BPE" && j["model"].contains("vocab") &&
                             j["model"].contains("merges"),
                         "BpeTokenizer: ", path, " is not a BPE tokenizer with a vocab and merges");
    std::vector<std::string> toks;
    for (const auto& [tok, id] : j["model"]["vocab"].items()) {
      const auto i = id.get<std::size_t>();
      if (toks.size() <= i) toks.resize(i + 1);
      toks[i] = tok;
    }
    if (j.contains("added_tokens"))
      for (const auto& a : j["added_tokens"]) {
        const auto i = a.at("id").get<std::size_t>();
        if (toks.size() <= i) toks.resize(i + 1);
        toks[i] = a.at("content").get<std::string>();
      }
    std::vector<std::string> merges;
    for (const auto& m : j["model"]["merges"])
      merges.push_back(m.is_string() ? m.get<std::string>() : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
    return BpeTokenizer(toks, merges);
  }

  std::vector<int> encode(const std::string& text) {
    std::vector<int> ids;
    for (const std::string& piece : pretokenize(text)) {
      auto it = cache_.find(piece);
      if (it == cache_.end()) it = cache_.emplace(piece, bpe(piece)).first;
      ids.insert(ids.end(), it->second.begin(), it->second.end());
    }
    return ids;
  }

  std::string decode(const std::vector<int>& ids) const {
    std::string out;
    for (int id : ids) {
      const std::string& t = id_to_token_.at(static_cast<std::size_t>(id));
      for (std::size_t i = 0; i < t.size();) {
        const std::size_t n = utf8_len(static_cast<unsigned char>(t[i]));
        const auto it = sym_byte_.find(t.substr(i, n));
        if (it != sym_byte_.end()) out.push_back(static_cast<char>(it->second));
        else out += t.substr(i, n);
        i += n;
      }
    }
    return out;
  }

  std::size_t vocab_size() const { return id_to_token_.size(); }

  /// The pieces the BPE runs on, exposed for tests.
  static std::vector<std::string> pretokenize(const std::string& s) {
    std::vector<std::string> out;
    const std::size_t n = s.size();
    auto cls = [&](std::size_t i) {  // 0 space, 1 letter, 2 digit, 3 other
      const unsigned char c = static_cast<unsigned char>(s[i]);
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') return 0;
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return 1;
      if (c >= '0' && c <= '9') return 2;
      return 3;
    };
    std::size_t i = 0;
    while (i < n) {
      const int k = cls(i);
      std::size_t j = i;
      if (k == 2) {
        j = i + 1;  // every digit alone
      } else if (s[i] == '\'' && i + 1 < n) {
        static const char* const contr[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
        for (const char* c : contr) {
          const std::string cs(c);
          if (s.compare(i, cs.size(), cs) == 0) {
            j = i + cs.size();
            break;
          }
        }
      }
      if (j == i) {
        const bool lead_space = s[i] == ' ' && i + 1 < n && cls(i + 1) != 0 && cls(i + 1) != 2;
        const std::size_t b = lead_space ? i + 1 : i;
        const int kb = cls(b);
        if (kb == 1 || kb == 3) {
          j = b;
          while (j < n && cls(j) == kb) ++j;
        } else {  // whitespace run; leave the last one for a following non-space
          j = i;
          while (j < n && cls(j) == 0) ++j;
          if (j < n && j - i > 1 && cls(j) != 2) --j;  // digits were split off first: a run before one ends its piece
        }
      }
      out.push_back(s.substr(i, j - i));
      i = j;
    }
    return out;
  }

 private:
  static const std::vector<std::string>& gguf_tokens(const awq::io::GgufFile& g) {
    awq::detail::require(g.get_string("tokenizer.ggml.model") == "gpt2", "BpeTokenizer: tokenizer.ggml.model is '",
                         g.get_string("tokenizer.ggml.model"), "', only gpt2 (byte-level BPE) is supported");
    return g.value("tokenizer.ggml.tokens").strs;
  }

  static int byte_to_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    return 256 + n;
  }
  static std::string utf8(int cp) {
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    return s;
  }
  static std::size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

  std::vector<int> bpe(const std::string& piece) const {
    std::vector<std::string> sym;
    for (unsigned char c : piece) sym.push_back(byte_sym_[c]);
    while (sym.size() > 1) {
      int best = -1;
      std::size_t at = 0;
      for (std::size_t i = 0; i + 1 < sym.size(); ++i) {
        const auto it = ranks_.find(sym[i] + " " + sym[i + 1]);
        if (it != ranks_.end() && (best < 0 || it->second < best)) best = it->second, at = i;
      }
      if (best < 0) break;
      sym[at] += sym[at + 1];
      sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(at) + 1);
    }
    std::vector<int> ids;
    for (const auto& t : sym) {
      const auto it = vocab_.find(t);
      awq::detail::require(it != vocab_.end(), "BpeTokenizer: symbol '", t, "' is not in the vocabulary");
      ids.push_back(it->second);
    }
    return ids;
  }

  std::unordered_map<std::string, int> vocab_;
  std::unordered_map<std::string, int> ranks_;
  std::vector<std::string> id_to_token_;
  std::string byte_sym_[256];
  std::unordered_map<std::string, unsigned char> sym_byte_;
  std::unordered_map<std::string, std::vector<int>> cache_;
};

}  // namespace awq_example
